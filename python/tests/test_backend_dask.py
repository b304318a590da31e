"""The distributed checks (distributed_cases.py) on Dask: a LocalCluster of 2 worker
processes for the whole module."""

import pytest
from distributed import Client, LocalCluster

from distributed_cases import DistributedCases


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        with Client(local) as client:
            yield client


class TestDask(DistributedCases):
    backend = "dask"


def test_a_dask_dataframe_runs_partition_by_partition(cluster, tmp_path):
    import dask.dataframe as dd
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from conftest import small_frame
    from distributed_cases import doubled
    from sluice import StreamingDataPipeline

    df = small_frame(30_000)
    for i in range(3):
        pq.write_table(pa.Table.from_pandas(df.iloc[i * 10_000 : (i + 1) * 10_000], preserve_index=False), tmp_path / f"d{i}.parquet")
    ddf = dd.read_parquet(str(tmp_path / "d*.parquet"))
    p = StreamingDataPipeline(chunk_size=4_000, enable_distributed=True, distributed_backend="dask", cluster=cluster)
    out = tmp_path / "out"
    got = pd.concat(list(p.process_dataframe_stream(ddf, doubled, output_path=out)))
    pd.testing.assert_frame_equal(got.reset_index(drop=True), doubled(df).reset_index(drop=True), check_dtype=False)
    manifest = p.process_dataframe_stream(ddf, doubled, output_path=out, overwrite=True).run_to_end()
    assert [(x["file"], x["input_row_start"], x["input_row_end"]) for x in manifest["parts"]] == [
        (f"part-p{i:05d}-00000.parquet", i * 10_000, (i + 1) * 10_000) for i in range(3)
    ]
    assert p.get_stats().total_rows_processed == 60_000
    p.cleanup()
