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
