"""The distributed checks (distributed_cases.py) on Spark: a local[2] session for the whole
module (PySpark runs the Python side of each task in its own worker process)."""

import sys

import pytest
from pyspark.sql import SparkSession

from distributed_cases import DistributedCases


@pytest.fixture(scope="module")
def cluster():
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("sluice-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.pyspark.driver.python", sys.executable)
        .getOrCreate()
    )
    try:
        yield spark
    finally:
        spark.stop()


class TestSpark(DistributedCases):
    backend = "spark"


def test_a_spark_dataframe_runs_partition_by_partition(cluster, tmp_path):
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
    sdf = cluster.read.parquet(str(tmp_path / "d*.parquet"))
    spark_order = sdf.toPandas()  # rows in Spark's own partition order
    p = StreamingDataPipeline(chunk_size=4_000, enable_distributed=True, distributed_backend="spark", cluster=cluster)
    got = pd.concat(list(p.process_dataframe_stream(sdf, row_wise)))
    assert os.getpid() not in set(got["pid"])
    pd.testing.assert_frame_equal(
        got.drop(columns="pid").reset_index(drop=True),
        row_wise(spark_order).drop(columns="pid").reset_index(drop=True),
        check_dtype=False,
    )
    assert p.get_stats().total_rows_processed == 30_000
    workers = p.get_performance_stats()["distributed"]["workers"]
    assert sum(w["partitions"] for w in workers) == sdf.rdd.getNumPartitions()
    p.cleanup()
