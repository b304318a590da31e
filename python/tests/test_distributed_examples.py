"""examples/distributed_{dask,ray,spark}.py run as a user runs them: a fresh interpreter
that starts its own local cluster (no cluster= given), processes the seed's workload on
it, and stops it at cleanup()."""

import json
import os
import re
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples")


@pytest.mark.parametrize("backend", ["dask", "ray", "spark"])
def test_distributed_example_runs_on_a_local_cluster(backend, tmp_path):
    out_dir = tmp_path / "out"
    script = os.path.join(EXAMPLES, f"distributed_{backend}.py")
    run = subprocess.run(
        [sys.executable, script, "--rows", "60000", "--workers", "2", "--output", str(out_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "Rows back at the driver: 60000 (input: 60000)" in out
    driver = int(re.search(r"Driver pid (\d+)", out).group(1))
    workers = [int(p) for p in re.findall(r"\d+", re.search(r"worker pids \[([\d, ]+)\]", out).group(1))]
    assert workers and driver not in workers
    assert re.search(r"Merged: 60000 rows in \d+ chunks", out)
    lines = re.findall(r"  worker \S+:(\d+): \d+ partitions, (\d+) rows", out)
    assert sorted(int(pid) for pid, _ in lines) == sorted(workers)
    assert sum(int(rows) for _, rows in lines) == 60000
    manifest = json.loads((out_dir / "_manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["total_rows"] == 60000
    assert sorted(p["file"] for p in manifest["parts"]) == sorted(f for f in os.listdir(out_dir) if f.startswith("part-"))
