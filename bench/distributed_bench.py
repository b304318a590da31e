#!/usr/bin/env python3
"""The seed's workload on Dask, Ray and Spark: sluice distributed vs each engine's own way.

Reads the seed's `create_large_dataset` data (10,000,000 rows by default) from Parquet,
runs the seed's pandas `data_preprocessing` (without its simulated 10 ms sleep) in chunks
of the seed's 5000 rows, and writes Parquet, each way on a local cluster of 2 worker
processes (`--workers`):

  sluice, one machine        StreamingDataPipeline(chunk_size=5000, num_workers=2)
                             .process_file_stream(data, fn, output_path=...).run_to_end()
  sluice on dask|ray|spark   the same with enable_distributed=True, distributed_backend=...
  sluice sql= (--sql)        examples/seed_preprocessing.sql instead of the pandas function
  dask map_partitions        dd.read_parquet(data).map_partitions(fn).to_parquet(out)
  ray data map_batches       ray.data.read_parquet(data).map_batches(fn, batch_format="pandas",
                             batch_size=5000).write_parquet(out)
  spark mapInPandas          spark.read.parquet(data).mapInPandas(fn per batch of 5000
                             rows).write.parquet(out)

Each variant runs in its own process: the cluster is started and warmed up on a small
file first (start-up is not timed), then the run is timed. A sampler thread reads the
proportional set size (PSS: shared pages split between the processes sharing them) of the
driver and of every process under it (workers, Ray's raylet and object store, Spark's JVM
and Python workers) every 0.25 s; the peaks of the driver's and of the whole tree's are
reported. Each output is checked: the row count, and the seed's columns.

    python bench/distributed_bench.py                      # 10M rows -> bench/DISTRIBUTED_RESULTS.md
    python bench/distributed_bench.py --rows 1000000 --no-write --only sluice-ray,ray
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(ROOT, "bench", "data")
OUT_DIR = os.path.join(ROOT, "bench", "out", "distributed")
SQL_PATH = os.path.join(ROOT, "examples", "seed_preprocessing.sql")
RESULTS = os.path.join(ROOT, "bench", "DISTRIBUTED_RESULTS.md")
CHUNK = 5000
SEED_COLUMNS = {"feature_1", "feature_2", "feature_3", "target", "feature_interaction", "feature_sum", "cat_A", "cat_B", "cat_C"}

VARIANTS = {
    "sluice-local": "sluice, one machine (2 engine threads)",
    "sluice-dask": "sluice on Dask (enable_distributed)",
    "sluice-ray": "sluice on Ray (enable_distributed)",
    "sluice-spark": "sluice on Spark (enable_distributed)",
    "dask": "Dask map_partitions (peer)",
    "ray": "Ray Data map_batches (peer)",
    "spark": "Spark mapInPandas (peer)",
    "sluice-local-sql": "sluice sql=, one machine",
    "sluice-dask-sql": "sluice sql= on Dask",
    "sluice-ray-sql": "sluice sql= on Ray",
    "sluice-spark-sql": "sluice sql= on Spark",
}


def data_preprocessing(chunk):
    """The seed's function, without `time.sleep(0.01)`."""
    import pandas as pd

    processed = chunk.copy()
    processed["feature_interaction"] = processed["feature_1"] * processed["feature_2"]
    processed["feature_sum"] = processed["feature_1"] + processed["feature_2"] + processed["feature_3"]
    processed = pd.get_dummies(processed, columns=["category"], prefix="cat")
    for col in ["feature_1", "feature_2", "feature_3", "feature_interaction", "feature_sum"]:
        mean_val = processed[col].mean()
        std_val = processed[col].std()
        if std_val > 0:
            processed[col] = (processed[col] - mean_val) / std_val
    return processed


def generate(rows: int, path: str, row_group: int = 250_000) -> str:
    """The seed's dataset as one Parquet file (row groups of `row_group` rows), seed 42."""
    if os.path.exists(path):
        import pyarrow.parquet as pq

        if pq.ParquetFile(path).metadata.num_rows == rows:
            return path
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.RandomState(42)
    table = pa.table(
        {
            "feature_1": rng.randn(rows),
            "feature_2": rng.randn(rows),
            "feature_3": rng.randn(rows),
            "category": rng.choice(["A", "B", "C"], rows),
            "target": rng.randint(0, 2, rows),
        }
    )
    pq.write_table(table, path + ".tmp", row_group_size=row_group)
    os.replace(path + ".tmp", path)
    return path


class TreeSampler:
    """Peak PSS of this process and of it plus every descendant, sampled."""

    def __init__(self, every: float = 0.25):
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.every = every
        self.driver_peak = 0
        self.tree_peak = 0
        self.max_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _pss(self, proc) -> int:
        try:
            return proc.memory_full_info().pss
        except (self.psutil.NoSuchProcess, self.psutil.AccessDenied, self.psutil.ZombieProcess):
            return 0

    def sample(self) -> None:
        driver = self._pss(self.me)
        try:
            children = self.me.children(recursive=True)
        except self.psutil.NoSuchProcess:
            children = []
        total = driver + sum(self._pss(c) for c in children)
        self.driver_peak = max(self.driver_peak, driver)
        self.tree_peak = max(self.tree_peak, total)
        self.max_processes = max(self.max_processes, 1 + len(children))

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def __enter__(self) -> "TreeSampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def _spark_session(workers: int):
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master(f"local[{workers}]")
        .appName("sluice-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(CHUNK))
        .config("spark.pyspark.python", sys.executable)
        .config("spark.pyspark.driver.python", sys.executable)
        .getOrCreate()
    )


def run_variant(name: str, data: str, warm: str, out: str, workers: int) -> dict:
    """Runs one variant in this process; returns its figures."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    sql = open(SQL_PATH, encoding="utf-8").read() if name.endswith("-sql") else None
    function = None if sql else data_preprocessing
    teardown = []
    note = ""
    if name.startswith("sluice"):
        from sluice import StreamingDataPipeline

        backend = name.split("-")[1]
        kwargs = dict(chunk_size=CHUNK, num_workers=workers, adaptive_batching=False, max_memory_mb=500)
        if backend != "local":
            kwargs.update(enable_distributed=True, distributed_backend=backend)
        pipeline = StreamingDataPipeline(**kwargs)
        teardown.append(pipeline.cleanup)

        def go(path, dest):
            return pipeline.process_file_stream(path, function, output_path=dest, sql=sql).run_to_end()

        note = "adaptive_batching=False, 500 MB budget per engine"
    elif name == "dask":
        import dask.dataframe as dd
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        teardown += [cluster.close, client.close]

        def go(path, dest):
            ddf = dd.read_parquet(path)
            meta = data_preprocessing(ddf.head(1000)).iloc[:0]
            ddf.map_partitions(data_preprocessing, meta=meta).to_parquet(dest, write_index=False)

        note = "dd.read_parquet partitions (row groups); the function per partition"
    elif name == "ray":
        import ray

        ray.init(num_cpus=workers, include_dashboard=False, logging_level="warning")
        ray.data.DataContext.get_current().enable_progress_bars = False
        teardown.append(ray.shutdown)

        def go(path, dest):
            ray.data.read_parquet(path).map_batches(
                data_preprocessing, batch_format="pandas", batch_size=CHUNK
            ).write_parquet(dest)

        note = f"batch_size={CHUNK}"
    elif name == "spark":
        spark = _spark_session(workers)
        teardown.append(spark.stop)

        def go(path, dest):
            df = spark.read.parquet(path)
            sample = data_preprocessing(df.limit(100).toPandas())
            schema = spark.createDataFrame(sample).schema

            def per_batch(batches):
                for batch in batches:
                    yield data_preprocessing(batch)

            df.mapInPandas(per_batch, schema).write.mode("overwrite").parquet(dest)

        note = f"arrow.maxRecordsPerBatch={CHUNK}"
    else:
        raise SystemExit(f"unknown variant {name}")

    try:
        go(warm, out + "-warm")  # starts the cluster, imports on the workers
        shutil.rmtree(out, ignore_errors=True)
        with TreeSampler() as sampler:
            start = time.perf_counter()
            go(data, out)
            seconds = time.perf_counter() - start
    finally:
        for f in teardown:
            try:
                f()
            except Exception:
                pass
    import pyarrow.parquet as pq

    files = [os.path.join(root, f) for root, _, names in os.walk(out) for f in names if f.endswith(".parquet") and not f.startswith((".", "_"))]
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    columns = set(pq.ParquetFile(files[0]).schema_arrow.names) if files else set()
    ok = rows == pq.ParquetFile(data).metadata.num_rows and SEED_COLUMNS <= columns
    return {
        "variant": name,
        "seconds": seconds,
        "rows": rows,
        "rows_per_s": rows / seconds,
        "driver_peak_mb": sampler.driver_peak / 2**20,
        "tree_peak_mb": sampler.tree_peak / 2**20,
        "processes": sampler.max_processes,
        "ok": ok,
        "note": note,
    }


def versions() -> str:
    out = [f"python {platform.python_version()}"]
    for module in ("sluice", "pandas", "pyarrow", "dask", "distributed", "ray", "pyspark"):
        try:
            out.append(f"{module} {__import__(module).__version__}")
        except Exception:
            pass
    return ", ".join(out)


def machine() -> str:
    import psutil

    load = os.getloadavg()
    return (
        f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.1f} GiB, {platform.system()} {platform.release()}; "
        f"load average at the start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )


def write_results(results: list, args, started: str, load_start: str, load_end: tuple) -> None:
    command = "python bench/distributed_bench.py " + " ".join(sys.argv[1:])
    lines = [
        "# sluice distributed vs Dask, Ray and Spark: the seed's preprocessing",
        "",
        "Generated by `bench/distributed_bench.py`; do not edit by hand.",
        "",
        f"- **Command:** `{command.strip()}`",
        f"- **Date:** {started}",
        f"- **Machine:** {load_start}; at the end {load_end[0]:.1f} / {load_end[1]:.1f} / {load_end[2]:.1f}. "
        "The machine was shared with other jobs (compilers) during the run: the figures are from a busy "
        "machine and only comparable within this table.",
        f"- **Versions:** {versions()}",
        f"- **Data:** the seed's `create_large_dataset`, {args.rows:,} rows, one Parquet file of row groups of "
        f"250,000 rows (`bench/data/seed_{args.rows}_rg.parquet`); output Parquet. Workers: a local cluster of "
        f"{args.workers} worker processes for every engine.",
        "- **Method:** each variant in its own process; the cluster is started and warmed on a 100,000-row file first "
        "(not timed); one timed run. rows/s = input rows / wall seconds of the run. Memory: peak PSS (proportional "
        "set size: shared pages split between the processes sharing them) sampled every 0.25 s, of the driver alone and of "
        "the driver plus every process under it (workers, schedulers, Ray's raylet and object store, Spark's JVM).",
        "",
        "| variant | rows/s | wall s | driver peak MiB | driver+workers peak MiB | processes | check | notes |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {VARIANTS[r['variant']]} | - | - | - | - | - | failed | {r['error'][:200]} |")
            continue
        lines.append(
            f"| {VARIANTS[r['variant']]} | {r['rows_per_s'] / 1e6:.2f} M | {r['seconds']:.1f} | {r['driver_peak_mb']:.0f} | "
            f"{r['tree_peak_mb']:.0f} | {r['processes']} | {'ok' if r['ok'] else 'WRONG'} | {r['note']} |"
        )
    lines.append("")
    with open(RESULTS, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n" + (args.notes or ""))
    print(f"wrote {RESULTS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", default=None, help="comma-separated variants: " + ",".join(VARIANTS))
    parser.add_argument("--sql", action="store_true", help="also the sluice sql= variants")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--notes", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # one variant, in this process
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warm", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.variant:
        out = os.path.join(OUT_DIR, args.variant)
        print(json.dumps(run_variant(args.variant, args.data, args.warm, out, args.workers)))
        return

    data = generate(args.rows, os.path.join(DATA_DIR, f"seed_{args.rows}_rg.parquet"))
    warm = generate(100_000, os.path.join(DATA_DIR, "seed_100000_rg.parquet"), row_group=25_000)
    names = args.only.split(",") if args.only else [n for n in VARIANTS if args.sql or not n.endswith("-sql")]
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_start = machine()
    results = []
    for name in names:
        print(f"== {name}", flush=True)
        run = subprocess.run(
            [sys.executable, __file__, "--variant", name, "--data", data, "--warm", warm, "--workers", str(args.workers)],
            capture_output=True,
            text=True,
        )
        last = run.stdout.strip().splitlines()[-1:] if run.stdout.strip() else []
        try:
            result = json.loads(last[0])
        except (IndexError, json.JSONDecodeError):
            result = {"variant": name, "error": (run.stderr.strip().splitlines() or ["no output"])[-1]}
        print(json.dumps(result), flush=True)
        results.append(result)
        shutil.rmtree(os.path.join(OUT_DIR, name), ignore_errors=True)
        shutil.rmtree(os.path.join(OUT_DIR, name) + "-warm", ignore_errors=True)
    if not args.no_write:
        write_results(results, args, started, load_start, os.getloadavg())


if __name__ == "__main__":
    main()
