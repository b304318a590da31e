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
