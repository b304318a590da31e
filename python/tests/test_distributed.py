"""Distributed settings (checked at construction) and the older Dask helper
(``sluice.distributed``). The backends' own runs: test_backend_{dask,ray,spark}.py."""

import os
import subprocess
import sys

import dask.dataframe as dd
import pandas as pd
import pytest
from distributed import Client

from sluice import StreamingDataPipeline
from conftest import small_frame


def add_sum(chunk):
    return chunk.assign(feature_sum=chunk["feature_1"] + chunk["feature_2"] + chunk["feature_3"])


def test_unknown_backend_fails_at_construction():
    with pytest.raises(ValueError, match="unknown distributed_backend 'flink'"):
        StreamingDataPipeline(enable_distributed=True, distributed_backend="flink")


def test_cluster_without_enable_distributed_is_an_error():
    with pytest.raises(ValueError, match="enable_distributed=True"):
        StreamingDataPipeline(cluster="tcp://127.0.0.1:8786")


@pytest.mark.parametrize(
    "backend, module, command",
    [("dask", "distributed", "pip install 'dask[distributed]'"), ("ray", "ray", "pip install 'ray[data]'"), ("spark", "pyspark", "pip install pyspark")],
)
def test_missing_package_fails_at_construction_naming_the_pip_install(backend, module, command):
    # A fresh interpreter in which the package really cannot be found (a finder that
    # refuses it comes first on sys.meta_path).
    code = f"""
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r} or name.startswith({module!r} + "."):
            raise ModuleNotFoundError(name)
        return None
sys.meta_path.insert(0, Refuse())
from sluice import StreamingDataPipeline
StreamingDataPipeline(chunk_size=10)  # local pipelines do not need it
try:
    StreamingDataPipeline(enable_distributed=True, distributed_backend={backend!r})
except ImportError as e:
    print("ImportError:", e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ImportError:" in out.stdout and command in out.stdout and repr(module) in out.stdout


def test_legacy_helper_keeps_the_settings():
    p = StreamingDataPipeline(chunk_size=3000, distributed_backend="dask", num_workers=4)
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
    with Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        from sluice.distributed import DaskStreamingPipeline

        dist = DaskStreamingPipeline(client=client, chunk_size=500, num_workers=2)
        df = small_frame(6_000)
        parts = list(dist.process(df, add_sum, npartitions=3, ordered=False))
        assert sum(map(len, parts)) == 6_000
        assert dist.get_stats().total_rows_processed == 6_000


def _stopped(backend, pipeline, workers):
    """Whether the local cluster the pipeline started is gone after cleanup()."""
    import psutil

    if backend == "dask":
        gone, alive = psutil.wait_procs([psutil.Process(pid) for pid in workers if psutil.pid_exists(pid)], timeout=60)
        return not alive
    if backend == "ray":
        import ray

        return not ray.is_initialized()
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession() is None


@pytest.mark.parametrize("backend", ["dask", "ray", "spark"])
def test_without_a_cluster_a_local_one_starts_and_cleanup_stops_it(backend):
    p = StreamingDataPipeline(chunk_size=2_000, num_workers=2, enable_distributed=True, distributed_backend=backend)
    df = small_frame(20_000)
    got = pd.concat(list(p.process_dataframe_stream(df, lambda c: c.assign(pid=os.getpid()))))
    workers = set(got["pid"])
    assert len(got) == 20_000 and os.getpid() not in workers
    assert p.get_stats().total_rows_processed == 20_000
    assert "not started" not in p.get_performance_stats()["distributed"]["cluster"]
    p.cleanup()
    assert _stopped(backend, p, workers)
    assert "not started" in p._backend.describe()
