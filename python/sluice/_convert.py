"""Conversions between the chunk formats (pandas, pyarrow, Polars) and Arrow.

Everything crosses into the Rust engine as Arrow through the Arrow C data interface, so
numeric columns are never copied on the way in or out; pandas conversions go through
pyarrow (``to_pandas(split_blocks=True)``: one block per column, zero-copy where the type
allows). This module also turns what users pass in or return into clear ``TypeError`` /
``ValueError`` messages that name the offending column or type.

Not here: running anything (see ``sluice.pipeline``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Tuple

import numpy as np
import pyarrow as pa

logger = logging.getLogger("sluice")

CHUNK_FORMATS = ("pandas", "arrow", "polars")

_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


def _pandas():
    import pandas as pd

    return pd


def _polars():
    try:
        import polars as pl
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "chunk_format='polars' needs Polars: pip install polars"
        ) from e
    return pl


def _is_pandas_frame(obj: Any) -> bool:
    pd = _pandas()
    return isinstance(obj, pd.DataFrame)


def _is_polars_frame(obj: Any) -> bool:
    module = type(obj).__module__
    if not module.startswith("polars"):
        return False
    return type(obj).__name__ == "DataFrame"


def _type_name(obj: Any) -> str:
    t = type(obj)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


# numpy kinds converted column by column without pyarrow's pandas machinery: float, int,
# unsigned, bool, datetime, timedelta. Floats and times map NaN/NaT to null, as pandas does.
_FAST_KINDS = {"f": True, "i": False, "u": False, "b": False, "M": True, "m": True}


def _fast_frame_to_arrow(df: Any) -> Optional[pa.Table]:
    """A DataFrame with a RangeIndex and only numpy numeric/bool/time columns (or pandas'
    own extension types, which convert themselves) as Arrow, column by column: a third of
    the cost of ``Table.from_pandas`` for a chunk-sized frame. ``None`` if it does not
    apply (the caller then uses ``Table.from_pandas``)."""
    pd = _pandas()
    if type(df.index) is not pd.RangeIndex:
        return None
    arrays, names = [], []
    for name, series in df.items():
        dtype = series.dtype
        if isinstance(dtype, np.dtype):
            nan_is_null = _FAST_KINDS.get(dtype.kind)
            if nan_is_null is None:
                return None  # object columns: pyarrow's inference and its errors
            arrays.append(pa.array(series.to_numpy(), from_pandas=nan_is_null))
        else:
            arrays.append(pa.array(series, from_pandas=True))
        names.append(name if isinstance(name, str) else str(name))
    return pa.Table.from_arrays(arrays, names=names)


def pandas_to_arrow(df: Any, *, preserve_index: Optional[bool], what: str, fast: bool = False) -> pa.Table:
    """A pandas DataFrame as a pyarrow Table; a column Arrow cannot hold is named in a
    ``TypeError`` (``what`` says whose DataFrame it is, for the message). ``fast``: skip
    pyarrow's pandas metadata when the frame allows (see ``_fast_frame_to_arrow``)."""
    columns = df.columns
    _check_unique_columns(df, what)
    try:
        if fast:
            table = _fast_frame_to_arrow(df)
            if table is not None:
                return table
        # One thread: for chunk-sized frames a thread pool costs more than it saves.
        return pa.Table.from_pandas(df, preserve_index=preserve_index, nthreads=1)
    except _ARROW_ERRORS as e:
        for name in columns:
            try:
                pa.array(df[name], from_pandas=True)
            except _ARROW_ERRORS as column_error:
                raise _column_type_error(df, name, column_error, what) from e
        raise TypeError(f"{what} cannot be converted to Arrow: {e}") from e


def _check_unique_columns(df: Any, what: str) -> None:
    columns = df.columns
    if columns.has_duplicates:
        dupes = sorted({str(c) for c in columns[columns.duplicated()]})
        raise ValueError(
            f"{what} has duplicate column names {dupes}; Arrow columns need unique names"
        )


def _column_type_error(df: Any, name: Any, error: Exception, what: str) -> TypeError:
    series = df[name]
    kinds = sorted({type(v).__name__ for v in series.head(1000)})
    return TypeError(
        f"{what} has column {name!r} (dtype {series.dtype}, Python values of type "
        f"{', '.join(kinds)}) that cannot be converted to Arrow: {error}. "
        f"Convert it first, e.g. df[{name!r}] = df[{name!r}].astype(str)"
    )


# The column that carries a RangeIndex through the engine (pandas chunks get it back as
# their index, as `df.iloc[a:b]` would have it).
INDEX_COLUMN = "__sluice_index__"


class IndexInfo:
    """How the chunks of a pandas input get their index back: the RangeIndex's step and
    name (its values travel as ``INDEX_COLUMN``)."""

    __slots__ = ("step", "name")

    def __init__(self, step: int, name: Any):
        self.step = step
        self.name = name


def aligned(table: pa.Table) -> pa.Table:
    """``table``, copied once into fresh buffers if any of its buffers is not 8-byte
    aligned. Tables that came through pickle protocol 5 (Dask ships partitions so) can
    have buffers at any address, and the engine's Arrow import reads offsets as aligned
    integers (arrow-rs ``ffi.rs``; a debug build aborts the process on a misaligned one)."""
    for column in table.columns:
        for chunk in column.chunks:
            for buffer in chunk.buffers():
                if buffer is not None and buffer.address % 8:
                    # IPC pads every buffer to 8 bytes in an aligned allocation.
                    sink = pa.BufferOutputStream()
                    with pa.ipc.new_stream(sink, table.schema) as writer:
                        writer.write_table(table)
                    return pa.ipc.open_stream(sink.getvalue()).read_all()
    return table


def input_to_arrow(data: Any, *, keep_index: bool, argument: str = "df") -> Tuple[pa.Table, Optional[IndexInfo]]:
    """The data given to ``process_dataframe_stream`` as a pyarrow Table (zero-copy for
    Arrow and Polars data and for pandas' numeric columns, unless a buffer is misaligned),
    and, with ``keep_index`` for a pandas DataFrame, how its chunks get their index back."""
    table, index = _input_to_arrow(data, keep_index=keep_index, argument=argument)
    return aligned(table), index


def _input_to_arrow(data: Any, *, keep_index: bool, argument: str) -> Tuple[pa.Table, Optional[IndexInfo]]:
    if isinstance(data, pa.Table):
        return data, None
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data]), None
    if _is_pandas_frame(data):
        what = f"the DataFrame given as {argument}"
        pd = _pandas()
        if not keep_index:
            return pandas_to_arrow(data, preserve_index=None, what=what), None
        if type(data.index) is not pd.RangeIndex:
            # Any other index travels as pyarrow's index column and comes back with it.
            return pandas_to_arrow(data, preserve_index=True, what=what), None
        if INDEX_COLUMN in data.columns:
            raise ValueError(f"{what} has a column named {INDEX_COLUMN!r}, which sluice uses itself")
        table = pandas_to_arrow(data, preserve_index=False, what=what)
        index = data.index
        rows = np.arange(index.start, index.stop, index.step, dtype=np.int64)
        return table.append_column(INDEX_COLUMN, pa.array(rows)), IndexInfo(index.step, index.name)
    if _is_polars_frame(data):
        return data.to_arrow(), None
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data), None
    raise TypeError(
        f"{argument} must be a pandas DataFrame, a pyarrow Table or RecordBatch, or a Polars "
        f"DataFrame; got {_type_name(data)}"
    )


def _to_pandas(batch: pa.RecordBatch, index: Optional[IndexInfo], owned: bool) -> Any:
    first = None
    if index is not None and batch.schema.names[-1] == INDEX_COLUMN:
        if batch.num_rows:
            first = batch.column(batch.num_columns - 1)[0].as_py()
        batch = batch.select(range(batch.num_columns - 1))
    if owned:
        frame = pa.Table.from_batches([batch]).to_pandas(split_blocks=True, self_destruct=True)
    else:
        frame = batch.to_pandas(split_blocks=True)
    if first is not None:
        pd = _pandas()
        frame.index = pd.RangeIndex(first, first + index.step * len(frame), index.step, name=index.name)
    return frame


def batch_to_format(
    batch: pa.RecordBatch, chunk_format: str, *, owned: bool = False, index: Optional[IndexInfo] = None
) -> Any:
    """A chunk in the user's format. ``owned``: nothing else uses the batch afterwards, so
    pandas may release Arrow buffers as it converts. ``index``: the input's RangeIndex,
    carried in ``INDEX_COLUMN``."""
    if chunk_format == "pandas":
        return _to_pandas(batch, index, owned)
    if chunk_format == "arrow":
        return pa.Table.from_batches([batch])
    if chunk_format == "polars":
        return _polars().from_arrow(batch)
    raise ValueError(f"unknown chunk_format {chunk_format!r}; expected one of {CHUNK_FORMATS}")


def result_to_arrow(result: Any) -> Any:
    """What the user's function returned, as a pyarrow Table or RecordBatch."""
    if isinstance(result, (pa.Table, pa.RecordBatch)):
        return result
    if _is_pandas_frame(result):
        return pandas_to_arrow(
            result, preserve_index=None, what="the DataFrame returned by processing_function", fast=True
        )
    if _is_polars_frame(result):
        return result.to_arrow()
    if result is None:
        raise TypeError(
            "processing_function returned None; it must return the processed chunk (a pandas "
            "DataFrame, a pyarrow Table or RecordBatch, or a Polars DataFrame). Did you forget "
            "a `return`?"
        )
    hint = ""
    pd = _pandas()
    if isinstance(result, pd.Series):
        hint = " (a Series: return series.to_frame() for one column)"
    raise TypeError(
        "processing_function must return a pandas DataFrame, a pyarrow Table or RecordBatch, "
        f"or a Polars DataFrame; it returned {_type_name(result)}{hint}"
    )


def _returned_type_matches(chunk_format: str) -> Callable[[Any], bool]:
    """Whether a returned object can be handed back as is in ``chunk_format``."""
    if chunk_format == "pandas":
        return _is_pandas_frame
    if chunk_format == "arrow":
        return lambda obj: isinstance(obj, pa.Table)
    return _is_polars_frame


# The one column of the engine's input when a pandas DataFrame is processed by a pandas
# function: each row's position, from which the adapter slices the DataFrame itself.
POSITION_COLUMN = "__sluice_position__"


def positions_table(rows: int) -> pa.Table:
    """The engine's input for a pandas DataFrame sliced by position (see ``make_adapter``)."""
    return pa.table({POSITION_COLUMN: pa.array(np.arange(rows, dtype=np.int64))})


def _frame_bytes(frame: Any) -> int:
    """Memory held by a pandas DataFrame's columns (object columns count their pointers, as
    ``memory_usage(deep=False)`` does). Read from its blocks: ``memory_usage`` costs ~0.4 ms
    for a chunk-sized frame, a tenth of the seed's whole per-chunk function."""
    try:
        return int(sum(block.values.nbytes for block in frame._mgr.blocks))
    except AttributeError:  # pragma: no cover - a pandas without block managers
        return int(frame.memory_usage(index=False, deep=False).sum())


def check_frame(df: Any, what: str) -> None:
    """Raises the error ``pandas_to_arrow`` would for ``df`` (duplicate names, a column Arrow
    cannot hold) without converting it: only its object and extension columns are tried."""
    _check_unique_columns(df, what)
    try:
        # Numeric, bool and time blocks always convert; reading the blocks' dtypes costs a
        # microsecond, `df.dtypes` (a Series) fifteen.
        if all(isinstance(b.dtype, np.dtype) and b.dtype.kind != "O" for b in df._mgr.blocks):
            return
    except AttributeError:  # pragma: no cover - a pandas without block managers
        pass
    for position, dtype in enumerate(df.dtypes):
        if isinstance(dtype, np.dtype) and dtype.kind != "O":
            continue
        series = df.iloc[:, position]
        try:
            pa.array(series, from_pandas=True)
        except _ARROW_ERRORS as e:
            raise _column_type_error(df, df.columns[position], e, what) from e


def make_adapter(
    function: Callable[[Any], Any],
    chunk_format: str,
    on_error: str,
    index: Optional[IndexInfo] = None,
    *,
    frame: Any = None,
    hold_output: bool = False,
) -> Callable[[pa.RecordBatch], Tuple[Any, Any, int]]:
    """The callable the engine's workers run on each chunk: Arrow in, the user's function
    in ``chunk_format``, ``(object to hand back or None, Arrow result or None, held bytes)``
    out.

    ``frame``: a pandas DataFrame the engine's input stands for as ``positions_table``; the
    function gets ``frame.iloc[a:b]`` (what a plain loop hands it: no conversion, the
    frame's own index). ``hold_output``: nothing needs the result as Arrow (no output
    files), so a returned DataFrame of ``chunk_format`` is handed back as it is, and
    only its weight goes to the engine."""
    if chunk_format not in CHUNK_FORMATS:
        raise ValueError(f"unknown chunk_format {chunk_format!r}; expected one of {CHUNK_FORMATS}")
    keep = _returned_type_matches(chunk_format)
    log_failures = on_error != "fail"
    # Only pandas results are worth holding: Arrow and Polars results are Arrow already.
    hold_output = hold_output and chunk_format == "pandas"

    def adapter(batch: pa.RecordBatch) -> Tuple[Any, Any, int]:
        try:
            if frame is not None:
                start = batch.column(0)[0].as_py() if batch.num_rows else 0
                chunk = frame.iloc[start : start + batch.num_rows]
            else:
                chunk = batch_to_format(batch, chunk_format, index=index)
            result = function(chunk)
            if hold_output and keep(result):
                check_frame(result, "the DataFrame returned by processing_function")
                return result, None, _frame_bytes(result)
            arrow = result_to_arrow(result)
        except Exception:
            if log_failures:
                logger.warning(
                    "processing_function failed on a chunk of %d rows; on_error=%r handles it",
                    batch.num_rows,
                    on_error,
                    exc_info=True,
                )
            raise
        return (result if keep(result) else None), arrow, 0

    return adapter
