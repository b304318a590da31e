"""The output-folder contract from Python: a folder holding earlier output is refused unless
``overwrite=True``; a failed run leaves only committed parts, listed, and says ``failed``;
``stop_processing()`` is visible (``StoppedError``, ``ChunkIterator.stopped``, the manifest)."""

import json
import os
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from sluice import StoppedError, StreamingDataPipeline


def frame(n):
    return pd.DataFrame({"id": np.arange(n, dtype=np.int64), "x": np.arange(n) * 0.5})


# Set by `stopped_run`: chunks from row 10,000 on are made slow (50 ms each), so the run is
# still going when the consumer asks it to stop after 5,000 rows, however busy the
# machine (before, a loaded machine could let the workers finish all 60 chunks first).
SLOW_LATE_ROWS = {"on": False}


def double(chunk):
    if SLOW_LATE_ROWS["on"] and len(chunk) and chunk["id"].iloc[0] >= 10_000:
        time.sleep(0.05)
    out = chunk.copy()
    out["y"] = out["x"] * 2
    return out


def manifest(folder):
    with open(os.path.join(folder, "_manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def listed_ids(folder):
    m = manifest(folder)
    ids = []
    for part in m["parts"]:
        ids.extend(pq.read_table(os.path.join(folder, part["file"])).column("id").to_pylist())
    return ids


def visible_files(folder):
    return sorted(os.listdir(folder))


def test_a_folder_with_earlier_output_is_refused_unless_overwrite(tmp_path):
    out = str(tmp_path / "out")
    pipeline = StreamingDataPipeline(chunk_size=100, adaptive_batching=False, num_workers=2)
    pipeline.process_dataframe_stream(frame(1000), double, output_path=out, rows_per_part=300).run_to_end()
    assert len(manifest(out)["parts"]) == 4

    with pytest.raises(FileExistsError, match="overwrite=True"):
        pipeline.process_dataframe_stream(frame(200), double, output_path=out)
    assert len(manifest(out)["parts"]) == 4, "the refused run touched the folder"

    pipeline.process_dataframe_stream(frame(200), double, output_path=out, overwrite=True).run_to_end()
    # `_sluice_run.json` records the run's input and query, for resume=True to check.
    assert visible_files(out) == ["_manifest.json", "_sluice_run.json", "part-00000.parquet"]
    assert listed_ids(out) == list(range(200))


def test_a_failed_run_leaves_only_committed_parts_and_says_failed(tmp_path):
    out = str(tmp_path / "out")

    def fails_at_650(chunk):
        if 650 in set(chunk["id"]):
            raise ValueError("bad row 650")
        return double(chunk)

    pipeline = StreamingDataPipeline(chunk_size=100, adaptive_batching=False, num_workers=2)
    with pytest.raises(ValueError, match="bad row 650"):
        for _ in pipeline.process_dataframe_stream(frame(1000), fails_at_650, output_path=out, rows_per_part=300):
            pass
    m = manifest(out)
    assert m["status"] == "failed"
    assert [(p["input_row_start"], p["input_row_end"]) for p in m["parts"]] == [(0, 300), (300, 600)]
    assert visible_files(out) == ["_manifest.json", "_sluice_run.json", "part-00000.parquet", "part-00001.parquet"]
    assert listed_ids(out) == list(range(600))


def test_stop_processing_raises_stopped_error_after_an_exact_prefix(tmp_path):
    out = str(tmp_path / "out")
    pipeline = StreamingDataPipeline(chunk_size=1000, adaptive_batching=False, num_workers=2)
    run = pipeline.process_dataframe_stream(frame(200_000), double, output_path=out, rows_per_part=2000)
    ids = []
    with pytest.raises(StoppedError):
        for chunk in run:
            ids.extend(chunk["id"].tolist())
            if len(ids) == 3000:
                pipeline.stop_processing()
    assert ids == list(range(len(ids))), "an exact prefix, in order"
    assert 3000 <= len(ids) < 200_000
    assert run.stopped
    m = manifest(out)
    assert m["status"] == "stopped"
    written = listed_ids(out)
    assert written == list(range(len(written)))
    assert len(written) <= len(ids)
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_a_run_that_ends_is_not_stopped(tmp_path):
    pipeline = StreamingDataPipeline(chunk_size=100, adaptive_batching=False)
    run = pipeline.process_dataframe_stream(frame(1000), double)
    assert sum(len(c) for c in run) == 1000
    pipeline.stop_processing()
    assert not run.stopped


def stopped_run(out, start, n=60_000):
    """A run of ``double`` over ``frame(n)`` (through ``start``) stopped after 5,000 rows;
    the ids its manifest lists as committed (a prefix)."""
    pipeline = StreamingDataPipeline(chunk_size=1000, adaptive_batching=False, num_workers=2)
    SLOW_LATE_ROWS["on"] = True
    try:
        run = start(pipeline, out)
        seen = 0
        with pytest.raises(StoppedError):
            for chunk in run:
                seen += len(chunk)
                if seen == 5_000:
                    pipeline.stop_processing()
    finally:
        SLOW_LATE_ROWS["on"] = False
    assert manifest(out)["status"] == "stopped"
    committed = listed_ids(out)
    assert committed == list(range(len(committed)))
    assert 0 < len(committed) < n, "the stop must leave some, not all, rows committed"
    return committed


@pytest.mark.parametrize("input_kind", ["dataframe", "csv"])
def test_resume_after_a_stop_continues_exactly(tmp_path, input_kind):
    n = 60_000
    df = frame(n)
    csv = tmp_path / "data.csv"
    df.to_csv(csv, index=False)
    out = str(tmp_path / "out")

    def start(pipeline, out, **kwargs):
        if input_kind == "csv":
            return pipeline.process_file_stream(str(csv), double, output_path=out, rows_per_part=2000, **kwargs)
        return pipeline.process_dataframe_stream(df, double, output_path=out, rows_per_part=2000, **kwargs)

    committed = stopped_run(out, start, n)
    # Without resume=True (or overwrite=True) the folder is refused, untouched.
    with pytest.raises(FileExistsError, match="resume=True"):
        start(StreamingDataPipeline(chunk_size=700), out)
    assert listed_ids(out) == committed

    # Resumed with other chunk sizes: only the rows after the committed ones run, in order.
    pipeline = StreamingDataPipeline(chunk_size=777, num_workers=2)
    rest = pd.concat(list(start(pipeline, out, resume=True)))
    assert rest["id"].tolist() == list(range(len(committed), n))
    assert pipeline.get_stats().total_rows_processed == n - len(committed)
    m = manifest(out)
    assert m["status"] == "complete" and m["total_rows"] == n
    assert listed_ids(out) == list(range(n)), "every id once, in order"
    parts = [p["file"] for p in m["parts"]]
    assert sorted(f for f in os.listdir(out) if f.startswith("part-")) == sorted(parts)
    written = pd.concat(pq.read_table(os.path.join(out, f)).to_pandas() for f in parts)
    np.testing.assert_array_equal(written["y"].to_numpy(), df["x"].to_numpy() * 2)

    # A complete run resumed again has nothing to do.
    again = StreamingDataPipeline(chunk_size=1000)
    run = start(again, out, resume=True)
    assert list(run) == []
    assert run.manifest["status"] == "complete" and run.manifest["total_rows"] == n
    assert again.get_stats().total_rows_processed == 0


def test_resume_refuses_another_input_and_bad_combinations(tmp_path):
    out = str(tmp_path / "out")

    def start(pipeline, out, **kwargs):
        return pipeline.process_dataframe_stream(frame(60_000), double, output_path=out, rows_per_part=2000, **kwargs)

    committed = stopped_run(out, start)
    pipeline = StreamingDataPipeline(chunk_size=1000)
    with pytest.raises(ValueError, match="input differs"):
        pipeline.process_dataframe_stream(frame(50_000), double, output_path=out, resume=True)
    assert listed_ids(out) == committed
    with pytest.raises(ValueError, match="not both"):
        pipeline.process_dataframe_stream(frame(10), double, output_path=out, resume=True, overwrite=True)
    with pytest.raises(ValueError, match="needs output_path"):
        pipeline.process_dataframe_stream(frame(10), double, resume=True)
    unordered = StreamingDataPipeline(chunk_size=1000, ordered=False)
    with pytest.raises(ValueError, match="ordered"):
        unordered.process_dataframe_stream(frame(60_000), double, output_path=out, resume=True)


def test_one_writer_per_folder(tmp_path):
    # A second run into a folder another run is writing is refused (BlockingIOError, naming
    # the holder); the lock goes with the run, so the folder is free again right after it,
    # even after a failure, and no lock file stays behind.
    out = str(tmp_path / "out")
    pipeline = StreamingDataPipeline(chunk_size=100, adaptive_batching=False, num_workers=2)
    first = pipeline.process_dataframe_stream(frame(1000), double, output_path=out, rows_per_part=300)
    next(first)
    with pytest.raises(BlockingIOError, match=f"pid {os.getpid()}"):
        pipeline.process_dataframe_stream(frame(10), double, output_path=str(tmp_path / "out"), overwrite=True)
    for _ in first:
        pass
    assert listed_ids(out) == list(range(1000))
    assert "_sluice.lock" not in visible_files(out)

    def fails(chunk):
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        for _ in pipeline.process_dataframe_stream(frame(1000), fails, output_path=out, overwrite=True):
            pass
    assert "_sluice.lock" not in visible_files(out)
    pipeline.process_dataframe_stream(frame(1000), double, output_path=out, overwrite=True).run_to_end()
    assert listed_ids(out) == list(range(1000))
