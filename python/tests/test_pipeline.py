"""The Python API on the engine: signatures, chunk formats, inputs, order, output files,
error policies, stopping, Ctrl-C, and that the GIL is released while the engine works."""

import _thread
import inspect
import json
import os
import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc  # noqa: F401 (pa.ipc)
import pyarrow.parquet as pq
import pytest

import sluice
from sluice import BackpressureController, StreamingDataPipeline, StreamingStats
from conftest import small_frame, wait_for, wait_idle


def double(chunk):
    out = chunk.copy()
    out["feature_sum"] = out["feature_1"] + out["feature_2"] + out["feature_3"]
    return out


def chunks_with_info(pipeline, df, fn, **kwargs):
    return list(pipeline.process_dataframe_stream(df, fn, with_info=True, **kwargs))


# The seed's signatures.


def test_constructor_names_and_defaults_are_the_seeds():
    params = inspect.signature(StreamingDataPipeline.__init__).parameters
    seed = {
        "chunk_size": 1000,
        "max_memory_mb": 1000,
        "enable_parallel": True,
        "num_workers": None,
        "enable_distributed": False,
        "distributed_backend": "dask",
    }
    positional = [p for p in params.values() if p.kind is p.POSITIONAL_OR_KEYWORD][1:]
    assert [p.name for p in positional] == list(seed)
    assert {p.name: p.default for p in positional} == seed
    keyword_only = {p.name: p.default for p in params.values() if p.kind is p.KEYWORD_ONLY}
    assert keyword_only["ordered"] is True
    assert keyword_only["on_error"] == "fail"
    assert keyword_only["backpressure_controller"] is None
    assert keyword_only["chunk_format"] == "pandas"
    assert keyword_only["adaptive_batching"] is True

    controller = inspect.signature(BackpressureController.__init__).parameters
    assert {k: v.default for k, v in list(controller.items())[1:]} == {
        "max_queue_size": 100,
        "memory_threshold_mb": 1000,
        "adaptive_batching": True,
    }
    fields = list(StreamingStats.__dataclass_fields__)[:6]
    assert fields == [
        "total_chunks_processed",
        "total_rows_processed",
        "total_processing_time",
        "throughput_rows_per_second",
        "memory_peak_mb",
        "backpressure_events",
    ]


# Values, boundaries and order.


def test_fixed_chunks_equal_a_plain_loop_with_input_rows():
    df = small_frame(10_500)
    pipeline = StreamingDataPipeline(chunk_size=1000, adaptive_batching=False, num_workers=3)
    got = chunks_with_info(pipeline, df, double)
    assert [c.input_rows for c in got] == [(i, min(i + 1000, 10_500)) for i in range(0, 10_500, 1000)]
    assert [c.chunk for c in got] == list(range(11))
    for c in got:
        a, b = c.input_rows
        pd.testing.assert_frame_equal(c.data, double(df.iloc[a:b]))
    assert pipeline.last_chunk.input_rows == (10_000, 10_500)


def test_adaptive_chunks_are_in_order_and_cover_every_row_once():
    df = small_frame(50_000)
    pipeline = StreamingDataPipeline(chunk_size=1000)
    got = chunks_with_info(pipeline, df, double)
    starts = [c.input_rows[0] for c in got]
    assert starts == sorted(starts) and starts[0] == 0
    assert all(a.input_rows[1] == b.input_rows[0] for a, b in zip(got, got[1:]))
    assert got[-1].input_rows[1] == 50_000
    assert len({len(c.data) for c in got}) > 1  # the sizer changed the size
    history = pipeline.get_stats().chunk_size_history
    assert history[0] == (0, 1000) and len(history) > 1


def test_unordered_output_has_every_chunk_once():
    df = small_frame(20_000)

    def jittery(chunk):
        time.sleep(0.02 if chunk.index[0] % 3000 == 0 else 0.001)
        return chunk

    pipeline = StreamingDataPipeline(chunk_size=1000, adaptive_batching=False, ordered=False, num_workers=4)
    got = chunks_with_info(pipeline, df, jittery)
    assert sorted(c.chunk for c in got) == list(range(20))
    whole = pd.concat([c.data for c in sorted(got, key=lambda c: c.chunk)])
    pd.testing.assert_frame_equal(whole, df)


def test_the_index_of_each_chunk_is_the_inputs():
    df = small_frame(3_000)
    df.index = pd.date_range("2024-01-01", periods=3_000, freq="s", name="ts")
    pipeline = StreamingDataPipeline(chunk_size=1000, adaptive_batching=False)
    chunks = list(pipeline.process_dataframe_stream(df, lambda c: c))
    pd.testing.assert_frame_equal(pd.concat(chunks), df, check_freq=False)


def test_functions_run_on_worker_threads_in_parallel():
    # The first call runs alone (the gate learns from it that the function waits, with the
    # GIL free). Each later call waits inside the function, up to 10 s, until two calls
    # have been in it at once; run one at a time they never are, and the test fails.
    df = pd.DataFrame({"x": np.arange(9_000)})
    changed = threading.Condition()
    state = {"inside": 0, "most": 0, "calls": []}
    names = set()

    def waits_for_company(chunk):
        with changed:
            alone = not state["calls"]
            state["calls"].append(chunk["x"].iloc[0])
            names.add(threading.current_thread().name)
            state["inside"] += 1
            state["most"] = max(state["most"], state["inside"])
            changed.notify_all()
        try:
            if alone:
                time.sleep(0.05)  # a call that mostly waits: the workload, not a synchronization
            else:
                with changed:
                    changed.wait_for(lambda: state["most"] >= 2, timeout=10)
            return chunk
        finally:
            with changed:
                state["inside"] -= 1

    pipeline = StreamingDataPipeline(chunk_size=1000, adaptive_batching=False, num_workers=4)
    got = list(pipeline.process_dataframe_stream(df, waits_for_company))
    assert pd.concat(got)["x"].tolist() == list(range(9_000))
    assert state["most"] >= 2, "no two calls ever ran at once"
    assert sorted(state["calls"]) == list(range(0, 9_000, 1_000))
    # Which threads take the calls depends on timing (the caller's thread serves some); that
    # calls ran side by side, some on a worker, is the property.
    workers = names - {threading.current_thread().name}
    assert workers, names


def test_enable_parallel_false_uses_one_worker():
    pipeline = StreamingDataPipeline(enable_parallel=False, num_workers=4)
    assert pipeline.get_performance_stats()["config"]["effective_workers"] == 1


# Formats and inputs.


def test_arrow_chunk_format():
    table = pa.table({"x": np.arange(5_000), "s": ["a", "b"] * 2_500})
    seen = []

    def fn(chunk):
        seen.append(type(chunk))
        return chunk.append_column("y", pa.compute.multiply(chunk["x"], 2))

    pipeline = StreamingDataPipeline(chunk_size=1000, chunk_format="arrow")
    out = list(pipeline.process_dataframe_stream(table, fn))
    assert set(seen) == {pa.Table} and all(isinstance(c, pa.Table) for c in out)
    joined = pa.concat_tables(out)
    assert joined.column("y").to_pylist() == [2 * i for i in range(5_000)]
    assert joined.column("s").to_pylist() == table.column("s").to_pylist()


def test_polars_chunk_format_and_polars_input():
    import polars as pl  # in requirements-test.txt: missing fails, never skips
    df = pl.DataFrame({"x": np.arange(5_000), "s": ["a", "b"] * 2_500})
    pipeline = StreamingDataPipeline(chunk_size=1000, chunk_format="polars")
    out = list(pipeline.process_dataframe_stream(df, lambda c: c.with_columns((pl.col("x") * 2).alias("y"))))
    assert all(isinstance(c, pl.DataFrame) for c in out)
    joined = pl.concat(out)
    assert joined["y"].to_list() == [2 * i for i in range(5_000)]
    # Polars data into the pandas format.
    pandas_out = list(StreamingDataPipeline(chunk_size=1000).process_dataframe_stream(df, lambda c: c))
    assert isinstance(pandas_out[0], pd.DataFrame)
    assert pd.concat(pandas_out, ignore_index=True)["x"].tolist() == list(range(5_000))


def test_function_may_return_another_table_type():
    df = small_frame(2_000)
    pipeline = StreamingDataPipeline(chunk_size=1000)
    out = list(pipeline.process_dataframe_stream(df, lambda c: pa.Table.from_pandas(c, preserve_index=False)))
    assert all(isinstance(c, pd.DataFrame) for c in out)
    pd.testing.assert_frame_equal(pd.concat(out, ignore_index=True), df)


def test_no_function_rechunks_and_writes(tmp_path):
    df = small_frame(4_500)
    pipeline = StreamingDataPipeline(chunk_size=1000, adaptive_batching=False)
    it = pipeline.process_dataframe_stream(df, output_path=tmp_path / "out", rows_per_part=2_000, output_format="csv")
    chunks = list(it)
    assert [len(c) for c in chunks] == [1000] * 4 + [500]
    manifest = it.manifest
    assert manifest["status"] == "complete" and manifest["total_rows"] == 4_500
    assert [p["file"] for p in manifest["parts"]] == ["part-00000.csv", "part-00001.csv", "part-00002.csv"]
    back = pd.concat([pd.read_csv(tmp_path / "out" / p["file"]) for p in manifest["parts"]], ignore_index=True)
    np.testing.assert_allclose(back["feature_1"], df["feature_1"])


# SQL and files.

SEED_SQL = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "seed_preprocessing.sql")


def pandas_seed(chunk):
    processed = chunk.copy()
    processed["feature_interaction"] = processed["feature_1"] * processed["feature_2"]
    processed["feature_sum"] = processed["feature_1"] + processed["feature_2"] + processed["feature_3"]
    processed = pd.get_dummies(processed, columns=["category"], prefix="cat")
    for col in ["feature_1", "feature_2", "feature_3", "feature_interaction", "feature_sum"]:
        mean_val, std_val = processed[col].mean(), processed[col].std()
        if std_val > 0:
            processed[col] = (processed[col] - mean_val) / std_val
    return processed


def assert_sql_matches_pandas(df, chunks):
    start = 0
    for chunk in chunks:
        expected = pandas_seed(df.iloc[start : start + len(chunk)]).reset_index(drop=True)
        start += len(chunk)
        pd.testing.assert_frame_equal(chunk.reset_index(drop=True), expected, check_exact=False, rtol=1e-9)
    assert start == len(df)


def test_sql_on_a_dataframe_equals_the_pandas_function():
    df = small_frame(12_345)
    with open(SEED_SQL) as f:
        sql = f.read()
    pipeline = StreamingDataPipeline(chunk_size=2_000, adaptive_batching=False)
    chunks = list(pipeline.process_dataframe_stream(df, sql=sql))
    assert_sql_matches_pandas(df, chunks)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_file_stream_with_function_and_with_sql(tmp_path, fmt):
    df = small_frame(9_000)
    path = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    else:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=2_500)
    pipeline = StreamingDataPipeline(chunk_size=1_500, adaptive_batching=False)
    chunks = list(pipeline.process_file_stream(str(path), pandas_seed))
    assert [len(c) for c in chunks] == [1_500] * 6
    assert_sql_matches_pandas(df, chunks)

    it = pipeline.process_file_stream(path, sql=open(SEED_SQL).read(), output_path=tmp_path / "out")
    sql_chunks = list(it)
    assert_sql_matches_pandas(df, sql_chunks)
    assert it.manifest["total_rows"] == 9_000
    assert pipeline.get_stats().total_rows_processed == 18_000


def test_file_stream_globs_lists_and_run_to_end(tmp_path):
    df = small_frame(6_000)
    for i in range(3):
        df.iloc[i * 2_000 : (i + 1) * 2_000].to_csv(tmp_path / f"part{i}.csv", index=False)
    pipeline = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False)
    by_glob = pd.concat(pipeline.process_file_stream(str(tmp_path / "part*.csv"), lambda c: c), ignore_index=True)
    np.testing.assert_allclose(by_glob["feature_1"], df["feature_1"])
    files = [tmp_path / "part2.csv", tmp_path / "part0.csv"]
    listed = pd.concat(pipeline.process_file_stream(files, file_format="csv"), ignore_index=True)
    assert len(listed) == 4_000 and listed["feature_1"].iloc[0] == pytest.approx(df["feature_1"].iloc[4_000])

    manifest = pipeline.process_file_stream(
        str(tmp_path / "*.csv"), sql=open(SEED_SQL).read(), output_path=tmp_path / "out"
    ).run_to_end()
    assert manifest["status"] == "complete" and manifest["total_rows"] == 6_000
    assert json.loads((tmp_path / "out" / "_manifest.json").read_text())["total_rows"] == 6_000


# Error policies.


def fails_on_third(chunk):
    if chunk["x"].iloc[0] == 2_000:
        raise ValueError("third chunk is bad")
    return chunk.assign(y=1)


def test_skip_policy_drops_and_counts():
    df = pd.DataFrame({"x": np.arange(5_000)})
    pipeline = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False, on_error="skip")
    got = chunks_with_info(pipeline, df, fails_on_third)
    assert [c.input_rows for c in got] == [(0, 1000), (1000, 2000), (3000, 4000), (4000, 5000)]
    stats = pipeline.get_stats()
    assert (stats.failed_chunks, stats.failed_rows, stats.errors_encountered) == (1, 1_000, 1)
    assert stats.total_rows_processed == 4_000


def test_pass_through_policy_emits_the_input():
    df = pd.DataFrame({"x": np.arange(5_000)})
    pipeline = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False, on_error="pass_through")
    got = chunks_with_info(pipeline, df, fails_on_third)
    assert [c.passed_through for c in got] == [False, False, True, False, False]
    pd.testing.assert_frame_equal(got[2].data, df.iloc[2_000:3_000])
    assert list(got[1].data.columns) == ["x", "y"]
    assert pipeline.get_stats().passed_through_chunks == 1


def test_dead_letter_policy_writes_the_failed_chunk(tmp_path):
    df = pd.DataFrame({"x": np.arange(5_000)})
    folder = tmp_path / "dead"
    pipeline = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False, on_error=f"dead_letter:{folder}")
    got = chunks_with_info(pipeline, df, fails_on_third)
    assert len(got) == 4

    with pa.ipc.open_file(folder / "rows-000000002000-000000003000.arrow") as f:
        assert f.read_all().column("x").to_pylist() == list(range(2_000, 3_000))
    note = (folder / "rows-000000002000-000000003000.error.txt").read_text()
    assert "ValueError: third chunk is bad" in note and "fails_on_third" in note  # the traceback


# Stopping.


def slow_chunk(chunk):
    time.sleep(0.05)
    return chunk


def test_stop_processing_from_another_thread_ends_the_iterator_with_stopped_error():
    # Stopped (from another thread) once five chunks came out: the iterator hands out at
    # most the chunks the engine already held (max_queue_size), all of them in order, then
    # raises StoppedError, so a stopped run never looks like a finished one.
    from sluice import StoppedError

    df = pd.DataFrame({"x": np.arange(100_000)})
    pipeline = StreamingDataPipeline(
        chunk_size=1_000, adaptive_batching=False, num_workers=2, max_queue_size=4
    )
    got = []
    after_stop = 0
    run = pipeline.process_dataframe_stream(df, slow_chunk)
    with pytest.raises(StoppedError):
        for chunk in run:
            got.extend(chunk["x"].tolist())
            if len(got) == 5_000:
                stopper = threading.Thread(target=pipeline.stop_processing)
                stopper.start()
                stopper.join()
            elif len(got) > 5_000:
                after_stop += 1
    assert run.stopped
    assert got == list(range(len(got))), "a prefix of the input, in order"
    assert after_stop <= 4, f"{after_stop} chunks came out after the stop"
    wait_idle(pipeline)


def busy_chunk(chunk):
    """Holds the GIL for ~5 ms, like pure-Python work."""
    deadline = time.perf_counter() + 0.005
    while time.perf_counter() < deadline:
        pass
    return chunk


@pytest.mark.parametrize(
    "function, workers, on_error",
    [
        # Waiting in __next__ when Ctrl-C comes.
        (slow_chunk, 2, "fail"),
        # A GIL-bound function runs on the caller's thread, where Ctrl-C lands inside it:
        # the run must stop, not count a failed chunk (skipped) and go on, nor write the
        # interrupted chunk as a dead letter.
        (busy_chunk, 1, "skip"),
        (busy_chunk, 1, "dead_letter"),
    ],
    ids=["waiting", "inside-the-function", "inside-the-function-dead-letter"],
)
def test_ctrl_c_stops_the_run_promptly(function, workers, on_error, tmp_path):
    df = pd.DataFrame({"x": np.arange(200_000)})
    dead = tmp_path / "dead"
    if on_error == "dead_letter":
        on_error = f"dead_letter:{dead}"
    pipeline = StreamingDataPipeline(
        chunk_size=1_000, adaptive_batching=False, num_workers=workers, on_error=on_error, max_queue_size=4
    )
    interrupted = []

    def interrupting(chunk):
        # Ctrl-C once ten chunks are in: from a worker while the caller waits in __next__,
        # or, for a GIL-bound function run on the caller's thread, inside the function.
        on_caller = threading.current_thread() is threading.main_thread()
        if not interrupted and chunk["x"].iloc[0] >= 10_000 and (workers > 1 or on_caller):
            interrupted.append(chunk["x"].iloc[0])
            _thread.interrupt_main()
        return function(chunk)

    seen = 0
    with pytest.raises(KeyboardInterrupt):
        for chunk in pipeline.process_dataframe_stream(df, interrupting):
            seen += len(chunk)
    assert interrupted
    wait_idle(pipeline)
    # Promptly: the run went no further than the chunks it held when Ctrl-C came (the
    # queue's 4, the calls under way and the one interrupted), not on to the end.
    processed = pipeline.get_stats().total_rows_processed
    assert seen <= processed <= interrupted[0] + (4 + workers + 1) * 1_000, (seen, processed)
    assert not dead.exists() or not any(dead.iterdir()), sorted(p.name for p in dead.iterdir())
    assert pipeline.get_stats().failed_chunks == 0
    # The pipeline still works afterwards.
    assert sum(map(len, pipeline.process_dataframe_stream(df.iloc[:3_000], lambda c: c))) == 3_000


def test_a_gil_bound_function_runs_on_the_callers_thread():
    caller = threading.get_ident()
    threads = []
    inside = [0, 0]  # calls inside the function now, most at once
    lock = threading.Lock()

    def record(chunk):
        with lock:
            threads.append(threading.get_ident())
            inside[0] += 1
            inside[1] = max(inside[1], inside[0])
        try:
            return busy_chunk(chunk) * 2
        finally:
            with lock:
                inside[0] -= 1

    df = pd.DataFrame({"x": np.arange(100_000)})
    pipeline = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False, num_workers=1)
    out = list(pipeline.process_dataframe_stream(df, record))
    assert pd.concat(out)["x"].tolist() == list(range(0, 200_000, 2))
    assert len(threads) == 100
    # The caller ran calls while it waited for results. (How many: a worker takes a call
    # back only when the caller was away for a millisecond or more, which depends on the
    # machine's load: bench/python_bench.py reports the share.)
    assert threads.count(caller) > 0, "no call ran on the caller's thread"
    assert inside[1] == 1, "caller and worker ran calls side by side"


def test_a_consumer_busy_between_chunks_still_gets_every_row_in_order():
    # The caller is away (sleeping in its loop body) most of the time: the workers must
    # take their calls back and run them, not wait for it.
    df = pd.DataFrame({"x": np.arange(20_000)})
    pipeline = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False, num_workers=2)
    got = []
    for chunk in pipeline.process_dataframe_stream(df, lambda c: busy_chunk(c) + 1):
        time.sleep(0.02)
        got.extend(chunk["x"].tolist())
    assert got == list(range(1, 20_001))


def test_breaking_out_of_the_loop_stops_the_run():
    df = pd.DataFrame({"x": np.arange(100_000)})
    pipeline = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False, num_workers=2)
    for _ in pipeline.process_dataframe_stream(df, slow_chunk):
        break
    wait_idle(pipeline)
    assert pipeline.get_stats().total_rows_processed < 100_000


def test_context_manager_and_cleanup():
    df = pd.DataFrame({"x": np.arange(100_000)})
    with StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False) as pipeline:
        it = pipeline.process_dataframe_stream(df, slow_chunk)
        next(it)
    assert pipeline.get_performance_stats()["active_runs"] == 0
    assert list(it) == []  # the run was stopped by cleanup


# Statistics.


def test_stats_are_cumulative_and_performance_stats_show_the_controller():
    df = pd.DataFrame({"x": np.arange(3_000)})
    pipeline = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False)
    for _ in range(2):
        list(pipeline.process_dataframe_stream(df, lambda c: c))
    stats = pipeline.get_stats()
    assert (stats.total_chunks_processed, stats.total_rows_processed, stats.runs) == (6, 6_000, 2)
    assert stats.latency_p50_ms >= 0 and stats.latency_max_ms >= stats.latency_p50_ms
    perf = pipeline.get_performance_stats()
    assert perf["total_rows_processed"] == 6_000
    assert perf["controller"]["attached"] is True
    assert perf["controller"]["current_memory_mb"] == 0
    assert perf["config"]["chunk_size"] == 1_000
    assert isinstance(pipeline.backpressure_controller, BackpressureController)


def test_results_kept_as_pandas_count_against_the_budget():
    # Without output files the function's DataFrames are handed back as they are (never
    # converted to Arrow); the engine must still weigh them against the memory budget.
    df = pd.DataFrame({"x": np.arange(100_000, dtype=np.int64)})

    def widen(chunk):  # 40 float64 columns: 320 bytes a row, 40x the input
        return pd.DataFrame(np.ones((len(chunk), 40)), index=chunk.index)

    pipeline = StreamingDataPipeline(chunk_size=2_000, max_memory_mb=4, adaptive_batching=False, num_workers=2)
    kept = []
    for chunk in pipeline.process_dataframe_stream(df, widen):
        time.sleep(0.005)  # a slow consumer: results pile up unless admission waits
        kept.append(chunk)
    assert sum(len(c) for c in kept) == 100_000
    pd.testing.assert_index_equal(pd.concat(kept).index, df.index)
    controller = pipeline.get_performance_stats()["controller"]
    one_result_mb = 2_000 * 40 * 8 / 2**20
    assert controller["peak_memory_mb"] >= one_result_mb
    assert controller["peak_memory_mb"] <= 4 + one_result_mb
    assert controller["backpressure_events"] > 0


def _away_after_the_first_chunk(max_queue_size, until):
    """Takes one chunk of a 20-chunk run, then stays away (like a slow consumer) until
    ``until(pipeline)`` holds, then drains the rest; returns the pipeline and the rows."""
    df = pd.DataFrame({"x": np.arange(20_000)})
    pipeline = StreamingDataPipeline(
        chunk_size=1_000, adaptive_batching=False, num_workers=2, max_queue_size=max_queue_size
    )
    it = pipeline.process_dataframe_stream(df, lambda c: c + 1)
    got = list(next(it)["x"])
    wait_for(lambda: until(pipeline), "the engine to fill up while the consumer is away")
    held = pipeline.backpressure_controller.queue_size
    for chunk in it:
        got.extend(chunk["x"])
    assert got == list(range(1, 20_001))
    return pipeline, held


def test_a_full_queue_makes_the_reader_wait_and_counts_it():
    # Two queue slots: with the consumer away, two finished chunks fill them and the reader
    # must wait for room (a backpressure event) with more input still to read.
    pipeline, held = _away_after_the_first_chunk(
        2, lambda p: p.get_stats().backpressure_events > 0
    )
    assert held <= 2
    assert pipeline.get_stats().backpressure_events > 0


def test_room_for_every_chunk_means_no_backpressure():
    # The same slow consumer with a queue and budget that hold all 19 remaining chunks: the
    # reader reads everything without waiting once.
    def everything_read(p):
        # Every chunk is in the engine or already handed out (the first to the consumer,
        # a couple more to the bindings' hand-over): nothing left to read.
        return p.backpressure_controller.queue_size + p.get_stats().total_chunks_processed == 20

    pipeline, held = _away_after_the_first_chunk(100, everything_read)
    assert held > 2  # more than the two slots that made the other run wait
    assert pipeline.get_stats().backpressure_events == 0


def test_stats_merge():
    a = StreamingStats(total_chunks_processed=2, total_rows_processed=100, total_processing_time=1.0, memory_peak_mb=5)
    b = StreamingStats(total_chunks_processed=3, total_rows_processed=300, total_processing_time=2.0, memory_peak_mb=7)
    m = StreamingStats.merge([a, b], wall_time=2.0)
    assert (m.total_chunks_processed, m.total_rows_processed, m.memory_peak_mb) == (5, 400, 7)
    assert m.throughput_rows_per_second == 200


def test_version():
    assert sluice.__version__


def test_arrow_input_with_misaligned_buffers_is_realigned():
    # Tables that travelled through pickle protocol 5 (Dask ships partitions that way) can
    # have buffers at any address; the engine's Arrow import reads string offsets as
    # aligned integers (and aborted the process on a misaligned one). In a subprocess, so
    # a regression fails this test instead of killing pytest.
    import subprocess
    import sys

    code = """
import pyarrow as pa
from sluice import StreamingDataPipeline
s = pa.array(["a", "bb", "ccc"] * 1000)
raw = pa.py_buffer(b"\\0" + s.buffers()[1].to_pybytes())
arr = pa.Array.from_buffers(pa.string(), len(s), [None, raw.slice(1), s.buffers()[2]])
assert arr.buffers()[1].address % 4 != 0
out = pa.concat_tables(StreamingDataPipeline(chunk_size=1000, chunk_format="arrow").process_dataframe_stream(pa.table({"s": arr}), lambda t: t))
assert out.column("s").to_pylist() == s.to_pylist()
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
