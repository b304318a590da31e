"""The distributed checks (distributed_cases.py) on Ray: a local Ray of 2 CPUs for the
whole module, passed by address."""

import pytest
import ray

from distributed_cases import DistributedCases


@pytest.fixture(scope="module")
def cluster():
    context = ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    try:
        yield context.address_info["address"]
    finally:
        ray.shutdown()


class TestRay(DistributedCases):
    backend = "ray"


def test_a_ray_dataset_runs_block_by_block(cluster, tmp_path):
    import os

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from conftest import small_frame
    from distributed_cases import row_wise
    from sluice import StreamingDataPipeline

    df = small_frame(30_000)
    for i in range(3):
        pq.write_table(pa.Table.from_pandas(df.iloc[i * 10_000 : (i + 1) * 10_000], preserve_index=False), tmp_path / f"d{i}.parquet")
    # The block order compared below is only repeatable with Ray Data's preserve_order, a
    # setting of the caller's (sluice no longer sets it in the caller's DataContext).
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ds = ray.data.read_parquet(str(tmp_path))
    ray_order = ds.to_pandas()  # rows in the Dataset's own block order
    p = StreamingDataPipeline(chunk_size=4_000, enable_distributed=True, distributed_backend="ray", cluster=cluster)
    out = tmp_path / "out"
    run = p.process_dataframe_stream(ds, row_wise, output_path=out)
    got = pd.concat(list(run))
    assert os.getpid() not in set(got["pid"])
    pd.testing.assert_frame_equal(
        got.drop(columns="pid").reset_index(drop=True),
        row_wise(ray_order).drop(columns="pid").reset_index(drop=True),
        check_dtype=False,
    )
    assert p.get_stats().total_rows_processed == 30_000
    blocks = p.get_performance_stats()["distributed"]["partitions"]
    assert [x["file"] for x in run.manifest["parts"]] == [f"part-p{i:05d}-00000.parquet" for i in range(blocks)]
    assert run.manifest["parts"][-1]["input_row_end"] == 30_000
    p.cleanup()
