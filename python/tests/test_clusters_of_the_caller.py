"""The cluster the caller already has: without ``cluster=``, a distributed pipeline runs on
the Dask client, Spark session or Ray the caller made first and leaves it as it was; a
local cluster sluice starts itself runs the driver's interpreter; a script without a main
guard gets one line saying why Dask's worker processes cannot start."""

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import venv

import pandas as pd
import pytest

import sluice
from conftest import SEED_EXAMPLES, small_frame
from sluice import StreamingDataPipeline


def with_pid(chunk):
    return chunk.assign(pid=os.getpid(), doubled=chunk["feature_1"] * 2)


def run_script(path, cwd, executable=sys.executable, env=None, timeout=300):
    return subprocess.run([executable, str(path)], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


# Dask


def _seed_function(name, file):
    """The source of a function the seed defines in one of its examples."""
    with open(os.path.join(SEED_EXAMPLES, file), encoding="utf-8") as f:
        source = f.read()
    (node,) = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name]
    return ast.get_source_segment(source, node)


def test_the_seed_dask_example_as_a_plain_script(tmp_path):
    # The seed's Dask example, unmodified, run as a script. It calls the seed's own
    # create_large_dataset (from the basic example, which is put first) and builds a
    # pipeline with enable_distributed=True next to its Client; what follows is the run a
    # user then makes with that pipeline, at the top level of the script (no main guard).
    # sluice must run it on the example's Client, not start worker processes of its own
    # (which re-run the script and fail: "Nanny failed to start").
    with open(os.path.join(SEED_EXAMPLES, "seed_dask.py"), encoding="utf-8") as f:
        seed = f.read()
    user = textwrap.dedent(
        """
        import os
        dist = DistributedStreamingPipeline()
        df = create_large_dataset(20000)
        chunks = list(dist.pipeline.process_dataframe_stream(df, lambda c: c.assign(pid=os.getpid(), doubled=c["feature_1"] * 2)))
        got = pd.concat(chunks)
        print("Rows:", len(got), "doubled ok:", bool((got["doubled"] == df["feature_1"] * 2).all()))
        print("Worker pids:", sorted(set(got["pid"])), "driver:", os.getpid())
        print("Ran on:", dist.pipeline.get_performance_stats()["distributed"]["cluster"])
        print("Example's client:", dist.client.scheduler.address)
        dist.pipeline.cleanup()
        print("Client still open after cleanup:", dist.client.status)
        dist.cleanup()
        """
    )
    script = tmp_path / "seed_dask_script.py"
    script.write_text(_seed_function("create_large_dataset", "seed_basic.py") + "\n\n" + seed + "\n" + user)
    run = run_script(script, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    out = run.stdout
    # The seed's own part (its main guard runs it): every partition reported.
    assert "Dask client initialized" in out
    assert re.search(r"Distributed processing completed: \d+ partitions", out)
    # The pipeline's run: every row, on the example's Client (threads in this process).
    assert "Rows: 20000 doubled ok: True" in out
    pids, driver = re.search(r"Worker pids: \[([\d, ]+)\] driver: (\d+)", out).groups()
    assert [int(p) for p in pids.split(",")] == [int(driver)]
    ran_on = re.search(r"Ran on: dask (\S+)", out).group(1)
    assert ran_on == re.search(r"Example's client: (\S+)", out).group(1)
    assert "Client still open after cleanup: running" in out
    assert "Nanny" not in run.stderr


def test_dask_runs_on_the_client_made_first_and_leaves_it_open():
    from distributed import Client, LocalCluster, get_task_stream
    from distributed.deploy.spec import SpecCluster

    df = small_frame(20_000)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            workers = set(client.run(os.getpid).values())
            clusters = set(SpecCluster._instances)
            p = StreamingDataPipeline(chunk_size=2_000, enable_distributed=True, distributed_backend="dask")
            with get_task_stream(client) as tasks:
                got = pd.concat(list(p.process_dataframe_stream(df, with_pid)))
            assert len(got) == 20_000
            pd.testing.assert_series_equal(got["doubled"], df["feature_1"] * 2, check_names=False)
            # The tasks ran on the client's workers, and the client's scheduler saw them.
            assert set(got["pid"]) <= workers
            keys = [t["key"] for t in tasks.data]
            assert sum(1 for k in keys if str(k).startswith("sluice-")) == p.get_performance_stats()["distributed"]["partitions"]
            assert p.get_performance_stats()["distributed"]["cluster"] == f"dask {client.scheduler.address}"
            # No second cluster was started.
            assert set(SpecCluster._instances) == clusters
            p.cleanup()
            assert client.status == "running" and cluster.status.name == "running"
            assert client.submit(sum, [1, 2]).result() == 3


def test_dask_follows_the_callers_client_when_they_replace_it():
    from distributed import Client

    df = small_frame(6_000)
    p = StreamingDataPipeline(chunk_size=1_000, enable_distributed=True, distributed_backend="dask")
    try:
        for _ in range(2):
            with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as client:
                got = pd.concat(list(p.process_dataframe_stream(df, with_pid)))
                assert len(got) == 6_000 and set(got["pid"]) == {os.getpid()}  # the client's threads
                assert p.get_performance_stats()["distributed"]["cluster"] == f"dask {client.scheduler.address}"
                p.cleanup()
                assert client.status == "running"
    finally:
        p.cleanup()


def test_a_script_without_a_main_guard_gets_one_line_on_dask(tmp_path):
    # No client: sluice starts worker processes, which re-run the script.
    script = tmp_path / "no_guard.py"
    script.write_text(
        textwrap.dedent(
            """
            import pandas as pd
            from sluice import StreamingDataPipeline
            p = StreamingDataPipeline(chunk_size=1000, num_workers=2, enable_distributed=True, distributed_backend="dask")
            print(len(pd.concat(list(p.process_dataframe_stream(pd.DataFrame({"a": range(5000)}))))))
            """
        )
    )
    run = run_script(script, tmp_path, timeout=120)
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: sluice could not start Dask's local worker processes")
    assert "no_guard.py" in last and '`if __name__ == "__main__":` guard' in last and "Client(processes=False)" in last
    # The worker processes say it in one line each, not multiprocessing's page.
    assert "bootstrapping phase" not in run.stderr


# Spark


@pytest.fixture
def no_spark():
    from pyspark.sql import SparkSession

    assert SparkSession.getActiveSession() is None
    yield
    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


def test_spark_runs_on_the_session_made_first_and_leaves_it_alone(no_spark):
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("the-users-session")
        .config("spark.ui.enabled", "false")
        .config("spark.pyspark.python", sys.executable)
        .getOrCreate()
    )
    try:
        df = small_frame(4_000)
        seen = {}

        def run(where):
            p = StreamingDataPipeline(chunk_size=1_000, num_workers=2, enable_distributed=True, distributed_backend="spark")
            got = pd.concat(list(p.process_dataframe_stream(df, with_pid)))
            seen[where] = (len(got), p._backend.session is spark, p.get_performance_stats()["distributed"]["cluster"])
            p.cleanup()

        run("main thread")
        # From another thread (a server, a thread pool): the caller's session is not
        # "active" there, but it is the one they made, and is still theirs.
        thread = threading.Thread(target=run, args=("other thread",))
        thread.start()
        thread.join()
        assert seen == {w: (4_000, True, "spark local[1]") for w in ("main thread", "other thread")}
        assert spark.sparkContext._jsc is not None, "sluice stopped the caller's session"
        assert spark.conf.get("spark.app.name") == "the-users-session"
        assert spark.range(5).count() == 5
    finally:
        spark.stop()


def test_spark_follows_the_callers_session_when_they_replace_it(no_spark):
    from pyspark.sql import SparkSession

    df = small_frame(2_000)
    p = StreamingDataPipeline(chunk_size=1_000, enable_distributed=True, distributed_backend="spark")
    for name in ("first", "second"):
        spark = (
            SparkSession.builder.master("local[1]")
            .appName(name)
            .config("spark.ui.enabled", "false")
            .config("spark.pyspark.python", sys.executable)
            .getOrCreate()
        )
        try:
            # The same pipeline, no cleanup() between: the second run finds the new session.
            assert len(pd.concat(list(p.process_dataframe_stream(df, with_pid)))) == 2_000
            assert p._backend.session is spark
        finally:
            spark.stop()
    p.cleanup()


def _interpreter_without_sluice(root):
    """A python3 that has every package this one has except sluice (a venv whose .pth
    points at links to them)."""
    other = root / "other"
    venv.EnvBuilder(system_site_packages=False, with_pip=False, symlinks=True).create(other)
    farm = root / "packages-but-sluice"
    farm.mkdir()
    for folder in sys.path:
        if not (folder.endswith("site-packages") and os.path.isdir(folder)):
            continue
        for name in os.listdir(folder):
            if name.startswith("sluice") or name.endswith(".pth") or (farm / name).exists():
                continue
            os.symlink(os.path.join(folder, name), farm / name)
    _pth(other / "bin" / "python", "packages.pth", str(farm))
    return other / "bin"


def _pth(python, name, folder):
    site = subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True)
    with open(os.path.join(site.strip(), name), "w") as f:
        f.write(folder + "\n")


def test_spark_workers_run_the_drivers_interpreter_from_an_unactivated_venv(tmp_path, no_spark):
    # A venv with sluice (this one), run by its python without activating it; first on
    # the PATH, another python3 that has no sluice. The local session sluice starts must
    # give its workers the venv's interpreter, not `python3` from the PATH.
    user = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=True).create(user)
    _pth(user / "bin" / "python", "sluice-under-test.pth", os.path.dirname(os.path.dirname(sluice.__file__)))
    other_bin = _interpreter_without_sluice(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "VIRTUAL_ENV", "PYTHONPATH")}
    java = shutil.which("java")
    env["PATH"] = os.pathsep.join([str(other_bin)] + ([os.path.dirname(java)] if java else []) + ["/usr/bin", "/bin"])
    check = subprocess.run(["python3", "-c", "import sluice"], capture_output=True, text=True, env=env)
    assert "No module named 'sluice'" in check.stderr  # the python3 the PATH finds
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import pandas as pd
            from sluice import StreamingDataPipeline
            p = StreamingDataPipeline(chunk_size=500, num_workers=2, enable_distributed=True, distributed_backend="spark")
            got = pd.concat(list(p.process_dataframe_stream(pd.DataFrame({"a": range(2000)}), lambda c: c.assign(b=c["a"] * 2, exe=sys.executable))))
            print("rows", len(got), int(got["b"].sum()), sorted(set(got["exe"])))
            p.cleanup()
            """
        )
    )
    run = run_script(script, tmp_path, executable=str(user / "bin" / "python"), env=env)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    assert "ModuleNotFoundError" not in run.stderr
    assert f"rows 2000 {2 * sum(range(2000))} [{str(user / 'bin' / 'python')!r}]" in run.stdout


# Ray


def test_ray_runs_on_the_ray_initialized_first_and_leaves_it_as_it_was():
    import ray
    import ray.data

    assert not ray.is_initialized()
    context = ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    try:
        job = ray.get_runtime_context().get_job_id()
        data = ray.data.DataContext.get_current()
        data.enable_progress_bars = True
        data.execution_options.preserve_order = False
        df = small_frame(8_000)
        p = StreamingDataPipeline(chunk_size=1_000, enable_distributed=True, distributed_backend="ray")
        got = pd.concat(list(p.process_dataframe_stream(df, with_pid)))
        assert len(got) == 8_000
        pd.testing.assert_series_equal(got["doubled"].reset_index(drop=True), (df["feature_1"] * 2).reset_index(drop=True), check_names=False)
        assert os.getpid() not in set(got["pid"])
        p.cleanup()
        # Still the caller's Ray, running, with the caller's own Ray Data settings.
        assert ray.is_initialized() and ray.get_runtime_context().get_job_id() == job
        assert ray.get(ray.put(7)) == 7
        data = ray.data.DataContext.get_current()
        assert data.enable_progress_bars is True
        assert data.execution_options.preserve_order is False
        assert context.address_info["address"]
    finally:
        ray.shutdown()


def test_ray_a_ray_the_caller_initializes_after_sluices_is_theirs():
    import ray

    assert not ray.is_initialized()
    df = small_frame(4_000)
    p = StreamingDataPipeline(chunk_size=1_000, num_workers=2, enable_distributed=True, distributed_backend="ray")
    try:
        assert len(pd.concat(list(p.process_dataframe_stream(df, with_pid)))) == 4_000  # sluice's own Ray
        ray.shutdown()  # the caller shuts it down and starts their own
        ray.init(num_cpus=1, include_dashboard=False, logging_level="warning")
        assert len(pd.concat(list(p.process_dataframe_stream(df, with_pid)))) == 4_000
        p.cleanup()
        assert ray.is_initialized(), "sluice shut down the caller's Ray"
        assert ray.get(ray.put(1)) == 1
    finally:
        p.cleanup()
        ray.shutdown()
