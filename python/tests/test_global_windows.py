"""sql_windows="global": AGG(x) OVER () over the whole input, in two passes. The seed's
z-score then uses the whole input's mean and sample standard deviation (a math.fsum
reference, to 1e-9), the same for any chunk size, from DataFrames and from files; bad
settings and windows that cannot be computed exactly are refused."""

import math
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluice import StreamingDataPipeline
from conftest import small_frame

ZSCORE = (
    "SELECT feature_1, target, "
    "(feature_1 - AVG(feature_1) OVER ()) / STDDEV_SAMP(feature_1) OVER () AS z1, "
    "(feature_2 - AVG(feature_2) OVER ()) / STDDEV(feature_2) OVER () AS z2, "
    "COUNT(*) OVER () AS n FROM chunk"
)


def fsum_zscore(values):
    values = [float(v) for v in values]
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return [(v - mean) / math.sqrt(var) for v in values]


def check(df, out):
    assert len(out) == len(df)
    assert (out["n"] == len(df)).all()
    np.testing.assert_allclose(out["feature_1"], df["feature_1"], rtol=0, atol=0)
    for z, column in (("z1", "feature_1"), ("z2", "feature_2")):
        want = np.array(fsum_zscore(df[column]))
        np.testing.assert_allclose(out[z].to_numpy(), want, rtol=1e-9, atol=1e-12)


def test_global_windows_on_a_dataframe_use_the_whole_inputs_statistics():
    df = small_frame(7_001, seed=3)
    df["feature_1"] += 1e6  # a large mean: naive sums of squares would cancel
    outputs = []
    for chunk_size in (1, 7, 100_000):
        rows = 500 if chunk_size == 1 else len(df)
        part = df.iloc[:rows]
        pipeline = StreamingDataPipeline(chunk_size=chunk_size, adaptive_batching=False, num_workers=2)
        out = pd.concat(
            pipeline.process_dataframe_stream(part, sql=ZSCORE, sql_windows="global"), ignore_index=True
        )
        check(part, out)
        # The caller's statistics count pass 2 only.
        assert pipeline.get_stats().total_rows_processed == rows
        if rows == len(df):
            outputs.append(out)
    # Chunks of 7 and one chunk: the same bits.
    pd.testing.assert_frame_equal(outputs[0], outputs[1], check_exact=True)

    # Per chunk (the default) the z-score is not the whole input's.
    pipeline = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False)
    per_chunk = pd.concat(pipeline.process_dataframe_stream(df, sql=ZSCORE), ignore_index=True)
    assert not np.allclose(per_chunk["z1"], outputs[0]["z1"], rtol=1e-6)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_global_windows_on_files(tmp_path, fmt):
    df = small_frame(9_000, seed=5)
    path = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False, float_format="%.17g")
    else:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=2_500)
    pipeline = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False, ordered=False)
    it = pipeline.process_file_stream(path, sql=ZSCORE, sql_windows="global", output_path=tmp_path / "out")
    out = pd.concat(list(it), ignore_index=True)
    # Unordered: put the rows back in input order by their exact feature_1.
    order = {v: i for i, v in enumerate(df["feature_1"])}
    out = out.iloc[np.argsort([order[v] for v in out["feature_1"]])].reset_index(drop=True)
    check(df, out)
    assert it.manifest["total_rows"] == 9_000


@pytest.mark.parametrize("with_output", [True, False])
def test_global_windows_on_csv_parse_the_file_once(tmp_path, with_output):
    # Pass 1 keeps the rows it parsed (an Arrow file: in the output folder, or a temporary
    # one) and pass 2 reads them, as `sluice run --windows global` does: the CSV is not
    # parsed a second time.
    df = small_frame(9_000, seed=5)
    path = tmp_path / "data.csv"
    df.to_csv(path, index=False, float_format="%.17g")
    out_dir = tmp_path / "out"
    pipeline = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False)
    it = pipeline.process_file_stream(
        path, sql=ZSCORE, sql_windows="global", output_path=out_dir if with_output else None
    )
    out = pd.concat(list(it), ignore_index=True)
    check(df, out)
    read = pipeline.get_stats().input_bytes_read
    assert read > 0 and read != os.path.getsize(path), "pass 2 read the CSV again"
    if with_output:
        assert it.manifest["total_rows"] == 9_000
        assert sorted(os.listdir(out_dir)) == sorted(
            ["_manifest.json", "_sluice_run.json"] + [p["file"] for p in it.manifest["parts"]]
        ), "the copy is removed"

    # The same bits as a Parquet input, whose pass 2 reads the file itself.
    parquet = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pandas(pd.read_csv(path), preserve_index=False), parquet)
    again = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False)
    same = pd.concat(list(again.process_file_stream(parquet, sql=ZSCORE, sql_windows="global")), ignore_index=True)
    pd.testing.assert_frame_equal(out, same, check_exact=True)


def test_bad_settings_and_unsupported_windows_are_refused(tmp_path):
    df = small_frame(100)
    pipeline = StreamingDataPipeline(chunk_size=10)
    with pytest.raises(ValueError, match="sql_windows must be"):
        pipeline.process_dataframe_stream(df, sql=ZSCORE, sql_windows="all")
    with pytest.raises(ValueError, match="needs sql="):
        pipeline.process_dataframe_stream(df, lambda c: c, sql_windows="global")
    with pytest.raises(ValueError, match="PARTITION BY"):
        pipeline.process_dataframe_stream(
            df, sql="SELECT AVG(feature_1) OVER (PARTITION BY category) FROM chunk", sql_windows="global"
        )
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        pipeline.process_file_stream(fifo, sql=ZSCORE, sql_windows="global")
