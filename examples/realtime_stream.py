"""The seed's "Real-Time Stream Processing" example on ``open_stream``: no hand-made queue,
buffer or thread to drain it. The producer sends frames as they arrive (``send`` blocks
when the pipeline is full, so it never drops a batch), the engine joins them into chunks
of up to ``chunk_size`` rows or ``max_latency`` seconds, and the alerts come from
``results()`` in send order while statistics are read live.

    python examples/realtime_stream.py
"""

import threading
import time

import numpy as np
import pandas as pd

from sluice import StreamingDataPipeline


def real_time_analytics(chunk: pd.DataFrame) -> pd.DataFrame:
    """Real-time analytics processing (the seed's function)."""
    processed = chunk.copy()
    processed["sensor_sum"] = processed["sensor_1"] + processed["sensor_2"] + processed["sensor_3"]
    processed["sensor_variance"] = processed[["sensor_1", "sensor_2", "sensor_3"]].var(axis=1)
    processed["anomaly_score"] = np.abs(processed["sensor_sum"])
    processed["is_anomaly"] = processed["anomaly_score"] > 2.0
    device_stats = processed.groupby("device_id").agg(
        {"sensor_sum": ["mean", "std"], "anomaly_score": "max"}
    ).round(3)
    for device in processed["device_id"].unique():
        mask = processed["device_id"] == device
        processed.loc[mask, "device_mean"] = device_stats.loc[device, ("sensor_sum", "mean")]
        processed.loc[mask, "device_std"] = device_stats.loc[device, ("sensor_sum", "std")]
    return processed


def handle_processed_data(processed_chunk: pd.DataFrame) -> None:
    anomalies = processed_chunk[processed_chunk["is_anomaly"]]
    if len(anomalies) > 0:
        print(f"ALERT: {len(anomalies)} anomalies detected in chunk")
        print(f"   Max anomaly score: {anomalies['anomaly_score'].max():.3f}")


def real_time_example(seconds: float = 30.0):
    pipeline = StreamingDataPipeline(chunk_size=1000, max_memory_mb=200, enable_parallel=True, num_workers=2)
    with pipeline.open_stream(real_time_analytics, max_latency=0.5) as stream:
        consumer = threading.Thread(
            target=lambda: [handle_processed_data(c) for c in stream.results()]
        )
        consumer.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            stream.send(pd.DataFrame({
                "timestamp": [time.time()] * 100,
                "sensor_1": np.random.randn(100),
                "sensor_2": np.random.randn(100),
                "sensor_3": np.random.randn(100),
                "device_id": np.random.choice(["device_A", "device_B", "device_C"], 100),
            }))
            time.sleep(0.1)  # a new batch every 100 ms, as the seed's sensor feed
    consumer.join()
    stats = pipeline.get_stats()
    print("\nFinal Statistics:")
    print(f"  Chunks processed: {stats.total_chunks_processed}")
    print(f"  Rows processed: {stats.total_rows_processed}")
    print(f"  Throughput: {stats.throughput_rows_per_second:.1f} rows/sec")
    print(f"  Latency p50/p99 (send to result): {stats.latency_p50_ms:.0f}/{stats.latency_p99_ms:.0f} ms")
    return stats


if __name__ == "__main__":
    real_time_example()
