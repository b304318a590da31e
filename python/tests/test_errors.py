"""Bad input from Python raises a clear TypeError or ValueError naming the problem, and an
exception in the user's function reaches the caller with its own type and traceback."""

import traceback

import numpy as np
import pandas as pd
import pytest

import sluice
from sluice import BackpressureController, StreamingDataPipeline
from conftest import wait_idle


@pytest.fixture
def df():
    return pd.DataFrame({"x": np.arange(5_000), "s": ["a", "b"] * 2_500})


# Settings.


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"chunk_size": "100"}, TypeError, "chunk_size"),
        ({"chunk_size": 10.5}, TypeError, "chunk_size"),
        ({"chunk_size": True}, TypeError, "chunk_size"),
        ({"max_memory_mb": -1}, ValueError, "max_memory_mb"),
        ({"max_memory_mb": "lots"}, TypeError, "max_memory_mb"),
        ({"max_memory_mb": float("nan")}, ValueError, "max_memory_mb"),
        ({"num_workers": 0}, ValueError, "num_workers"),
        ({"enable_parallel": "yes"}, TypeError, "enable_parallel"),
        ({"distributed_backend": "mpi"}, ValueError, "distributed_backend"),
        ({"chunk_format": "excel"}, ValueError, "chunk_format"),
        ({"on_error": "ignore"}, ValueError, "on_error"),
        ({"on_error": "dead_letter:"}, ValueError, "dead_letter"),
        ({"on_error": 3}, TypeError, "on_error"),
        ({"backpressure_controller": object()}, TypeError, "backpressure_controller"),
        ({"chunk_size": 10, "max_chunk_size": 5}, ValueError, "chunk_size"),
        ({"max_memory_mb": 0.0000001}, ValueError, "max_memory_mb"),
    ],
)
def test_bad_settings(kwargs, error, words):
    with pytest.raises(error, match=words):
        StreamingDataPipeline(**kwargs)


def test_wrong_keyword_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="chunksize"):
        StreamingDataPipeline(chunksize=100)
    with pytest.raises(TypeError, match="max_memory"):
        StreamingDataPipeline(1000, max_memory=5)
    p = StreamingDataPipeline()
    with pytest.raises(TypeError, match="process_function"):
        p.process_dataframe_stream(pd.DataFrame({"x": [1]}), process_function=lambda c: c)


def test_bad_controller_settings():
    with pytest.raises(ValueError, match="max_queue_size"):
        BackpressureController(max_queue_size=0)
    with pytest.raises(TypeError, match="memory_threshold_mb"):
        BackpressureController(memory_threshold_mb=None)
    c = BackpressureController()
    with pytest.raises(ValueError, match="current_batch_size"):
        c.current_batch_size = 0

    class NoSuper(BackpressureController):
        def __init__(self):
            pass

    with pytest.raises(TypeError, match="super"):
        StreamingDataPipeline(backpressure_controller=NoSuper())
    shared = BackpressureController()
    StreamingDataPipeline(backpressure_controller=shared)
    with pytest.raises(ValueError, match="another pipeline"):
        StreamingDataPipeline(backpressure_controller=shared)


# Inputs.


def test_input_that_is_not_a_table(df):
    p = StreamingDataPipeline()
    for bad in ([1, 2, 3], {"x": [1]}, "data.csv", None, np.arange(3)):
        with pytest.raises(TypeError, match="pandas DataFrame, a pyarrow Table"):
            p.process_dataframe_stream(bad, lambda c: c)


def test_unsupported_object_column_is_named():
    bad = pd.DataFrame({"ok": [1, 2, 3], "things": [object(), object(), object()]})
    with pytest.raises(TypeError, match=r"column 'things'.*object.*astype\(str\)"):
        StreamingDataPipeline().process_dataframe_stream(bad, lambda c: c)
    mixed = pd.DataFrame({"mixed": [1, "two", 3.0]})
    with pytest.raises(TypeError, match="column 'mixed'"):
        StreamingDataPipeline().process_dataframe_stream(mixed, lambda c: c)


def test_duplicate_columns_are_named():
    dup = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with pytest.raises(ValueError, match=r"duplicate column names \['a'\]"):
        StreamingDataPipeline().process_dataframe_stream(dup, lambda c: c)


def test_function_that_is_not_callable(df):
    with pytest.raises(TypeError, match="processing_function must be callable"):
        StreamingDataPipeline().process_dataframe_stream(df, "upper")


def test_function_and_sql_together(df):
    with pytest.raises(ValueError, match="not both"):
        StreamingDataPipeline().process_dataframe_stream(df, lambda c: c, sql="SELECT * FROM chunk")


def test_bad_sql_is_a_value_error_before_any_data_is_read(df):
    p = StreamingDataPipeline()
    with pytest.raises(ValueError, match="no_such_column"):
        p.process_dataframe_stream(df, sql="SELECT no_such_column FROM chunk")
    with pytest.raises(ValueError, match="parse"):
        p.process_dataframe_stream(df, sql="SELEKT x FROM chunk")
    with pytest.raises(TypeError, match="sql"):
        p.process_dataframe_stream(df, sql=42)


def test_bad_paths_and_formats(tmp_path):
    p = StreamingDataPipeline()
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        p.process_file_stream(str(tmp_path / "missing.csv"))
    with pytest.raises(FileNotFoundError, match="nothing"):
        p.process_file_stream(str(tmp_path / "nothing*.csv"))
    (tmp_path / "a.csv").write_text("x\n1\n")
    with pytest.raises(ValueError, match="excel"):
        p.process_file_stream(str(tmp_path / "a.csv"), file_format="excel")
    with pytest.raises(TypeError, match="file_path"):
        p.process_file_stream(42)
    with pytest.raises(TypeError, match="file_path"):
        p.process_file_stream([])
    with pytest.raises(TypeError, match="output_path"):
        p.process_file_stream(str(tmp_path / "a.csv"), output_path=3)
    with pytest.raises(ValueError, match="output_format"):
        p.process_file_stream(str(tmp_path / "a.csv"), output_path=tmp_path / "o", output_format="xlsx")


# What the function returns.


@pytest.mark.parametrize(
    "returned, words",
    [
        (None, "returned None.*forget a `return`"),
        ([1, 2], "it returned list"),
        (pd.Series([1.0]), "Series.*to_frame"),
        ("text", "it returned str"),
    ],
)
def test_function_returning_the_wrong_type(df, returned, words):
    p = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False)
    with pytest.raises(TypeError, match=words) as info:
        list(p.process_dataframe_stream(df, lambda c: returned))
    assert "chunk 0 (input rows 0..1000" in "\n".join(getattr(info.value, "__notes__", []))


def test_function_returning_an_unconvertible_column(df):
    p = StreamingDataPipeline(chunk_size=1_000)
    with pytest.raises(TypeError, match="returned by processing_function has column 'bad'"):
        list(p.process_dataframe_stream(df, lambda c: c.assign(bad=[object()] * len(c))))


# Exceptions in the function.


class MyError(Exception):
    pass


def explode_on_chunk_two(chunk):
    if chunk["x"].iloc[0] == 2_000:
        raise MyError(f"boom at {chunk['x'].iloc[0]}")
    return chunk


def test_exception_keeps_its_type_and_traceback_and_names_the_chunk(df):
    p = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False, num_workers=2)
    got = []
    with pytest.raises(MyError, match="boom at 2000") as info:
        for chunk in p.process_dataframe_stream(df, explode_on_chunk_two):
            got.append(chunk)
    # The chunks before it came out, in order.
    assert [c["x"].iloc[0] for c in got] == [0, 1_000]
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "chunk 2 (input rows 2000..3000, 1000 rows)" in notes
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "explode_on_chunk_two" in frames
    stats = p.get_stats()
    assert stats.errors_encountered == 1 and stats.failed_chunks == 1
    # After the error the run's threads end (they may still be winding down when the
    # exception reaches the caller, so this waits for it, with a deadline).
    wait_idle(p)
    assert p.get_performance_stats()["active_runs"] == 0


def test_exception_in_an_sql_chunk_is_a_chunk_error(tmp_path):
    df = pd.DataFrame({"s": ["1", "2", "x"] * 1_000})
    p = StreamingDataPipeline(chunk_size=1_000)
    with pytest.raises(sluice.ChunkError, match="chunk 0"):
        list(p.process_dataframe_stream(df, sql="SELECT CAST(s AS INT) AS i FROM chunk"))
