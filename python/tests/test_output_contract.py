"""The output-folder contract from Python: a folder holding earlier output is refused unless
``overwrite=True``; a failed run leaves only committed parts, listed, and says ``failed``;
``stop_processing()`` is visible (``StoppedError``, ``ChunkIterator.stopped``, the manifest)."""

import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from sluice import StoppedError, StreamingDataPipeline


def frame(n):
    return pd.DataFrame({"id": np.arange(n, dtype=np.int64), "x": np.arange(n) * 0.5})


def double(chunk):
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
    assert visible_files(out) == ["_manifest.json", "part-00000.parquet"]
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
    assert visible_files(out) == ["_manifest.json", "part-00000.parquet", "part-00001.parquet"]
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
