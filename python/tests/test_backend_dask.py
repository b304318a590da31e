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
