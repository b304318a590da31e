"""sluice on Dask: the engine runs inside each partition's task and statistics merge."""

import pandas as pd
import pytest

from sluice import StreamingDataPipeline
from conftest import small_frame

dd = pytest.importorskip("dask.dataframe")


def add_sum(chunk):
    return chunk.assign(feature_sum=chunk["feature_1"] + chunk["feature_2"] + chunk["feature_3"])


def test_enable_distributed_is_accepted_and_runs_locally():
    p = StreamingDataPipeline(chunk_size=3000, enable_distributed=True, distributed_backend="dask", num_workers=4)
    df = small_frame(7_000)
    assert sum(map(len, p.process_dataframe_stream(df, add_sum))) == 7_000
    assert p.distributed.settings["chunk_size"] == 3000


def test_process_partitions_and_merge_stats():
    df = small_frame(20_000)
    dist = StreamingDataPipeline(chunk_size=1_000, num_workers=2, enable_distributed=True).distributed
    parts = list(dist.process(df, add_sum, npartitions=4))
    assert len(parts) == 4
    result = pd.concat(parts)
    pd.testing.assert_frame_equal(result, add_sum(df), check_dtype=False)  # Dask makes strings string[pyarrow]
    stats = dist.get_stats()
    assert stats.total_rows_processed == 20_000
    assert stats.runs == 4 and stats.total_chunks_processed >= 4


def test_map_partitions_is_lazy_and_correct():
    df = small_frame(10_000)
    ddf = dd.from_pandas(df, npartitions=3)
    dist = StreamingDataPipeline(chunk_size=1_000).distributed
    out = dist.map_partitions(ddf, add_sum, meta=add_sum(df.iloc[:0]))
    pd.testing.assert_frame_equal(out.compute(), add_sum(df), check_dtype=False)


def test_with_a_distributed_client():
    distributed = pytest.importorskip("dask.distributed")
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        from sluice.distributed import DaskStreamingPipeline

        dist = DaskStreamingPipeline(client=client, chunk_size=500, num_workers=2)
        df = small_frame(6_000)
        parts = list(dist.process(df, add_sum, npartitions=3, ordered=False))
        assert sum(map(len, parts)) == 6_000
        assert dist.get_stats().total_rows_processed == 6_000
