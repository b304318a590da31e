"""``StreamingDataPipeline.open_stream``: frames sent from other threads come out once each
in send order, short chunks come after ``max_latency``, a full pipeline blocks ``send``,
statistics are live and the latency is end to end."""

import os
import queue
import runpy
import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sluice
from sluice import StreamingDataPipeline

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples")


def frame(start, n):
    ids = np.arange(start, start + n)
    return pd.DataFrame({"id": ids, "x": ids * 0.5, "device": [f"d{i % 3}" for i in ids]})


def add_y(chunk):
    out = chunk.copy()
    out["y"] = out["x"] * 2
    return out


def collect(iterator, into):
    for chunk in iterator:
        into.append(chunk)


def test_frames_from_a_producer_thread_come_out_once_each_in_send_order():
    pipeline = StreamingDataPipeline(chunk_size=500, num_workers=2)
    chunks = []
    with pipeline.open_stream(add_y) as stream:
        reader = threading.Thread(target=collect, args=(stream.results(), chunks))
        reader.start()
        for f in range(300):
            stream.send(frame(f * 23, 23))
    reader.join(60)
    assert not reader.is_alive(), "results() did not end after close()"
    out = pd.concat(chunks, ignore_index=True)
    assert out["id"].tolist() == list(range(300 * 23))
    assert (out["y"] == out["x"] * 2).all()
    # Small frames were joined into chunks.
    assert len(chunks) < 60
    assert pipeline.get_stats().total_rows_processed == 300 * 23


def test_a_short_chunk_comes_after_max_latency_while_open():
    pipeline = StreamingDataPipeline(chunk_size=100_000, num_workers=2)
    stream = pipeline.open_stream(max_latency=0.2)
    got = queue.Queue()
    stream.send(pa.table({"a": [1, 2, 3]}))
    reader = threading.Thread(target=lambda: [got.put(c) for c in stream.results()])
    reader.start()
    first = got.get(timeout=30)  # before close(): the latency cut
    assert first["a"].tolist() == [1, 2, 3]
    stream.close()
    reader.join(30)
    assert not reader.is_alive()
    stats = pipeline.get_stats()
    assert stats.latency_p50_ms >= 200, "latency is from send() to the hand-over"


def test_send_after_close_raises_and_a_stream_with_no_frame_ends():
    pipeline = StreamingDataPipeline(chunk_size=10)
    stream = pipeline.open_stream()
    results = stream.results()
    stream.close()
    assert list(results) == []
    with pytest.raises(RuntimeError, match="closed"):
        stream.send(frame(0, 3))


def test_sql_and_an_output_folder(tmp_path):
    pipeline = StreamingDataPipeline(chunk_size=1000, num_workers=2)
    out = tmp_path / "out"
    with pipeline.open_stream(sql="SELECT id, x * 10 AS x10 FROM chunk", output_path=out) as stream:
        for f in range(40):
            stream.send(frame(f * 250, 250))
        with pytest.raises(RuntimeError, match="output_path"):
            stream.results()
    table = pq.read_table(out)
    assert sorted(table.column("id").to_pylist()) == list(range(40 * 250))
    assert stream.manifest["total_rows"] == 40 * 250


def test_a_full_pipeline_blocks_send_and_stats_are_live():
    pipeline = StreamingDataPipeline(chunk_size=1000, max_memory_mb=2, num_workers=2)
    sent = [0]
    seen = []

    def produce(stream):
        for f in range(400):
            stream.send(frame(f * 1000, 1000))
            sent[0] += 1
        stream.close()

    stream = pipeline.open_stream()
    producer = threading.Thread(target=produce, args=(stream,))
    producer.start()
    most_ahead = 0
    rows = 0
    for chunk in stream.results():
        rows += len(chunk)
        most_ahead = max(most_ahead, sent[0] - rows // 1000)
        seen.append(pipeline.get_stats().total_rows_processed)
        time.sleep(0.002)  # a slow consumer (the run is made slow, not waited on)
    producer.join(60)
    assert rows == 400_000
    assert most_ahead < 100, f"the producer ran {most_ahead} frames ahead: send did not block"
    assert seen == sorted(seen) and seen[-1] == rows, "cumulative, live statistics"


def test_the_open_stream_example_runs(capsys):
    g = runpy.run_path(os.path.join(EXAMPLES, "realtime_stream.py"), run_name="example")
    stats = g["real_time_example"](seconds=1.0)
    assert stats.total_rows_processed > 0
    assert stats.total_rows_processed % 100 == 0
    assert "Final Statistics" in capsys.readouterr().out
