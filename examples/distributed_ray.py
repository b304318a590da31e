#!/usr/bin/env python3
"""sluice on Ray: the seed's preprocessing ("Basic Streaming Processing") over a
generated dataset, with the sluice engine running inside Ray's worker processes (Ray Data map_batches, Arrow blocks).

    python examples/distributed_ray.py                          # a local Ray started with 2 CPUs
    python examples/distributed_ray.py --cluster ray://head:10001   # your cluster

The only change from a single-machine run is ``enable_distributed=True``,
``distributed_backend='ray'`` and, for a cluster of your own, ``cluster=``. On a real
cluster, ``--output`` must be a folder every worker and the driver see (a shared mount).
"""

import argparse
import os

import numpy as np
import pandas as pd

from sluice import StreamingDataPipeline


def create_large_dataset(num_rows=100000):
    """The seed's dataset."""
    return pd.DataFrame(
        {
            "feature_1": np.random.randn(num_rows),
            "feature_2": np.random.randn(num_rows),
            "feature_3": np.random.randn(num_rows),
            "category": np.random.choice(["A", "B", "C"], num_rows),
            "target": np.random.randint(0, 2, num_rows),
        }
    )


def data_preprocessing(chunk: pd.DataFrame) -> pd.DataFrame:
    """The seed's per-chunk function (without its simulated 10 ms of work)."""
    processed = chunk.copy()
    processed["feature_interaction"] = processed["feature_1"] * processed["feature_2"]
    processed["feature_sum"] = processed["feature_1"] + processed["feature_2"] + processed["feature_3"]
    processed = pd.get_dummies(processed, columns=["category"], prefix="cat")
    for col in ["feature_1", "feature_2", "feature_3", "feature_interaction", "feature_sum"]:
        mean_val = processed[col].mean()
        std_val = processed[col].std()
        if std_val > 0:
            processed[col] = (processed[col] - mean_val) / std_val
    processed["worker_pid"] = os.getpid()  # to show where it ran
    return processed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the local cluster")
    parser.add_argument("--cluster", default=None, help="a Ray address ('auto' or ray://host:10001)")
    parser.add_argument("--output", default=None, help="also write Parquet parts and a _manifest.json here")
    args = parser.parse_args()

    df = create_large_dataset(args.rows)
    pipeline = StreamingDataPipeline(
        chunk_size=5000,
        max_memory_mb=500,  # per task, in each worker process
        num_workers=args.workers,
        enable_distributed=True,
        distributed_backend="ray",
        cluster=args.cluster,
    )
    try:
        rows, pids = 0, set()
        for i, chunk in enumerate(pipeline.process_dataframe_stream(df, data_preprocessing, output_path=args.output)):
            rows += len(chunk)
            pids.update(chunk["worker_pid"].unique().tolist())
            if (i + 1) % 10 == 0:
                print(f"Processed chunk {i + 1}, shape: {chunk.shape}")
        stats = pipeline.get_stats()
        perf = pipeline.get_performance_stats()["distributed"]
        print(f"Rows back at the driver: {rows} (input: {len(df)})")
        print(f"Driver pid {os.getpid()}; the function ran in worker pids {sorted(pids)}")
        print(f"Merged: {stats.total_rows_processed} rows in {stats.total_chunks_processed} chunks, "
              f"{stats.throughput_rows_per_second:,.0f} rows/s, latency p50/p99 "
              f"{stats.latency_p50_ms:.2f}/{stats.latency_p99_ms:.2f} ms, peak worker memory {stats.memory_peak_mb:.0f} MB")
        for w in perf["workers"]:
            print(f"  worker {w['worker']}: {w['partitions']} partitions, {w['rows']} rows, "
                  f"{w['chunks']} chunks, peak {w['memory_peak_mb']:.0f} MB")
        if args.output:
            print(f"Manifest: {os.path.join(args.output, '_manifest.json')}")
    finally:
        pipeline.cleanup()  # stops the local cluster it started


if __name__ == "__main__":
    main()
