"""What one distributed task runs in its worker process: the sluice engine (a local
``StreamingDataPipeline`` from the installed wheel) over one partition, its output parts
renamed into place under names taken from the partition, and a summary for the driver.

Shared by every backend; the pipeline class is handed in (``pipeline_factory``), so nothing
here imports ``sluice.pipeline``. Not here: scheduling (the backend modules), planning and
merging (``sluice.backends._driver``).
"""

from __future__ import annotations

import bisect
import json
import math
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pyarrow as pa

from .._native import SluiceError

# The column that carries each row's absolute input position through a backend's own
# DataFrame (Ray Data blocks, Spark partitions): a piece of the input is named by its first
# row, however the backend cut it.
ROW_COLUMN = "__sluice_row__"
# Hidden folder (inside output_path) where a task's engine writes before the rename.
STAGING_DIR = ".sluice-staging"
# Latency histogram: log buckets 2% wide, so merged percentiles are within 2%.
_BUCKET_RATIO = math.log(1.02)


class PartitionFailed(SluiceError):
    """A distributed task failed: the message names the partition, the worker and the
    worker's exception (``sluice.PartitionError``)."""

    MARKER = "sluice partition "


@dataclass
class Partition:
    """One piece of the input, as the driver planned it."""

    index: int
    """Position in the input (partitions come back in this order)."""
    key: str
    """Stable name: ``r<first row>`` for rows, ``f<file number>`` for files; parts are
    named ``part-<key>-<n>``, so a retried task writes the same names."""
    describe: str
    first_row: Optional[int] = None
    rows: Optional[int] = None
    paths: Optional[List[str]] = None
    row_groups: Optional[List[int]] = None
    """With one Parquet file in ``paths``: only these row groups (a big file in pieces)."""


@dataclass
class OutputSpec:
    path: str
    format: str = "parquet"
    rows_per_part: Optional[int] = None
    overwrite: bool = False
    """Replace what an earlier run left in ``path`` (the driver does, before any task)."""

    @property
    def extension(self) -> str:
        return {"parquet": "parquet", "pq": "parquet", "csv": "csv"}.get(self.format.lower(), "arrow")


@dataclass
class PartitionResult:
    """What the driver gets back for a partition: its chunks (when asked for) and ``info``
    (stats, worker, parts written)."""

    index: int
    chunks: List[Tuple[Any, Any]] = field(default_factory=list)
    """``((seq, start, end, passed_through), chunk)`` per processed chunk."""
    info: Dict[str, Any] = field(default_factory=dict)


class LatencyHistogram:
    """Per-chunk call times (µs) in log buckets: mergeable across workers by adding."""

    def __init__(self, counts: Optional[Dict[int, int]] = None):
        self.counts: Dict[int, int] = dict(counts or {})

    def record(self, seconds: float) -> None:
        us = max(1.0, seconds * 1e6)
        bucket = int(math.log(us) / _BUCKET_RATIO)
        self.counts[bucket] = self.counts.get(bucket, 0) + 1

    def merge(self, other: "LatencyHistogram") -> None:
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v

    def quantile_ms(self, q: float) -> float:
        total = sum(self.counts.values())
        if not total:
            return 0.0
        rank = max(1, math.ceil(q * total))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return math.exp((bucket + 1) * _BUCKET_RATIO) / 1000.0
        return 0.0  # pragma: no cover - rank <= total

    def to_json(self) -> Dict[str, int]:
        return {str(k): v for k, v in self.counts.items()}

    @classmethod
    def from_json(cls, data: Dict[str, int]) -> "LatencyHistogram":
        return cls({int(k): int(v) for k, v in (data or {}).items()})


def _timed(user: Callable[[Any], Any], histogram: LatencyHistogram) -> Callable[[Any], Any]:
    """``user`` with each call's time recorded: the engine's chunk latency is the
    function's call time, and these histograms merge across workers (the engine's own
    percentiles do not)."""

    def function(chunk: Any) -> Any:
        t = time.perf_counter()
        try:
            return user(chunk)
        finally:
            histogram.record(time.perf_counter() - t)

    return function


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def part_prefix(key: str) -> str:
    return f"part-{key}-"


class PartitionRunner:
    """The picklable task body: settings, function (or SQL) and output; ``run`` runs one
    partition in the process it is called in."""

    def __init__(
        self,
        pipeline_factory: Callable[..., Any],
        settings: Dict[str, Any],
        function: Optional[Callable[[Any], Any]],
        sql: Optional[str],
        chunk_format: str,
        file_format: str = "auto",
        output: Optional[OutputSpec] = None,
        return_chunks: bool = True,
    ):
        self.pipeline_factory = pipeline_factory
        self.settings = settings
        self.function = function
        self.sql = sql
        self.chunk_format = chunk_format
        self.file_format = file_format
        self.output = output
        self.return_chunks = return_chunks

    def run(self, partition: Partition, data: Any = None) -> Iterator[Tuple[str, Any, Any]]:
        """Yields ``("chunk", (seq, start, end, passed_through), chunk)`` for each processed
        chunk (if ``return_chunks``), then ``("done", None, info)``. Any failure raises
        :class:`PartitionFailed`."""
        started = time.perf_counter()
        histogram = LatencyHistogram()
        function = None if self.function is None else _timed(self.function, histogram)

        staging = None
        if self.output is not None:
            staging = os.path.join(self.output.path, STAGING_DIR, f"{partition.key}-{uuid.uuid4().hex}")
            os.makedirs(staging, exist_ok=True)
        settings = self.settings
        policy = settings.get("on_error", "")
        if policy.startswith("dead_letter:"):
            # Each engine names its dead letters by its own chunk numbers: one folder per
            # partition keeps them apart (and a retry writes over its own).
            settings = dict(settings, on_error="dead_letter:" + os.path.join(policy[len("dead_letter:") :], partition.key))
        pipeline = self.pipeline_factory(**settings)
        input_end = 0
        try:
            try:
                run = self._start(pipeline, partition, data, function, staging)
                if self.return_chunks:
                    for info in run:
                        input_end = max(input_end, info.input_rows[1])
                        yield "chunk", (info.chunk, *info.input_rows, info.passed_through), info.data
                else:
                    run.run_to_end()
                stats = pipeline.get_stats()
            except PartitionFailed:
                raise
            except Exception as e:
                raise PartitionFailed(
                    f"{PartitionFailed.MARKER}{partition.index} ({partition.describe}) failed on worker "
                    f"{worker_name()}: {type(e).__name__}: {e}"
                ) from e
        finally:
            pipeline.cleanup()
        parts, schema = ([], None)
        if staging is not None:
            parts, schema = self._commit(partition, staging)
            input_end = max([input_end] + [p["input_row_end"] for p in parts])
        if partition.rows is not None:
            input_end = partition.rows
        info = {
            "index": partition.index,
            "key": partition.key,
            "first_row": partition.first_row,
            "describe": partition.describe,
            "worker": worker_name(),
            "pid": os.getpid(),
            "stats": stats.to_dict(),
            "latency_histogram": histogram.to_json() if function is not None else None,
            "input_rows": input_end,
            "parts": parts,
            "schema": schema,
            "seconds": time.perf_counter() - started,
        }
        yield "done", None, info

    def collect(self, partition: Partition, data: Any = None) -> PartitionResult:
        """``run`` to the end, as one result (for backends whose tasks return a value)."""
        result = PartitionResult(partition.index)
        for kind, meta, value in self.run(partition, data):
            if kind == "chunk":
                result.chunks.append((meta, value))
            else:
                result.info = value
        return result

    def _start(self, pipeline: Any, partition: Partition, data: Any, function: Any, staging: Optional[str]) -> Any:
        out = self.output
        kwargs = dict(
            sql=self.sql,
            output_format=out.format if out else "parquet",
            rows_per_part=out.rows_per_part if out else None,
            with_info=True,
        )
        if partition.row_groups is not None:
            import pyarrow.parquet as pq

            # A piece of a big Parquet file: its row groups, read here, in the worker.
            data = pq.ParquetFile(partition.paths[0]).read_row_groups(partition.row_groups)
            return pipeline.process_dataframe_stream(data, function, staging, **kwargs)
        if partition.paths is not None:
            return pipeline.process_file_stream(partition.paths, function, self.file_format, staging, **kwargs)
        return pipeline.process_dataframe_stream(data, function, staging, **kwargs)

    def _commit(self, partition: Partition, staging: str) -> Tuple[List[Dict[str, Any]], Any]:
        """Renames the engine's parts from the staging folder to their final names (over
        any a previous attempt of this partition wrote), drops parts of earlier attempts
        beyond these, and returns the parts as manifest entries."""
        with open(os.path.join(staging, "_manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        out_dir = self.output.path
        prefix = part_prefix(partition.key)
        parts, names = [], set()
        for n, part in enumerate(manifest.get("parts", [])):
            ext = part["file"].rsplit(".", 1)[-1]
            name = f"{prefix}{n:05d}.{ext}"
            os.replace(os.path.join(staging, part["file"]), os.path.join(out_dir, name))
            names.add(name)
            parts.append(dict(part, file=name, partition=partition.index))
        if parts and os.name == "posix":
            # The parts' data was synced by the engine; their new names are durable once the
            # folder is, before the driver's manifest lists them.
            fd = os.open(out_dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for name in os.listdir(out_dir):
            if name.startswith(prefix) and name not in names:
                try:
                    os.remove(os.path.join(out_dir, name))
                except FileNotFoundError:  # another attempt removed it first
                    pass
        shutil.rmtree(staging, ignore_errors=True)
        return parts, manifest.get("schema") or None


# Arrow records: how Ray Data and Spark carry a task's output (one row per chunk, then one
# "done" row with the info). The chunk travels as an Arrow IPC stream, so its schema can be
# anything without declaring it to the backend up front.
RECORD_SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("seq", pa.int64()),
        ("row_start", pa.int64()),
        ("row_end", pa.int64()),
        ("passed_through", pa.bool_()),
        ("payload", pa.binary()),
        ("info", pa.string()),
    ]
)
RECORD_DDL = "index long, seq long, row_start long, row_end long, passed_through boolean, payload binary, info string"


def chunk_to_arrow(chunk: Any) -> pa.Table:
    if isinstance(chunk, pa.Table):
        return chunk
    if isinstance(chunk, pa.RecordBatch):
        return pa.Table.from_batches([chunk])
    if type(chunk).__module__.startswith("polars"):
        return chunk.to_arrow()
    # pandas: keep the index (a RangeIndex as metadata), as the local pipeline hands it.
    return pa.Table.from_pandas(chunk, preserve_index=None)


def arrow_to_chunk(table: pa.Table, chunk_format: str) -> Any:
    if chunk_format == "arrow":
        return table
    if chunk_format == "polars":
        import polars as pl

        return pl.from_arrow(table)
    return table.to_pandas()


def encode_table(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_table(payload: Any) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(payload)).read_all()


def to_records(index: int, events: Iterator[Tuple[str, Any, Any]]) -> Iterator[pa.RecordBatch]:
    """A task's events as RECORD_SCHEMA batches, one per event (streamed as produced)."""
    for kind, meta, value in events:
        if kind == "chunk":
            seq, start, end, passed = meta
            row = [index, seq, start, end, passed, encode_table(chunk_to_arrow(value)), None]
        else:
            row = [index, -1, 0, 0, False, None, json.dumps(value)]
        arrays = [pa.array([v], type=f.type) for v, f in zip(row, RECORD_SCHEMA)]
        yield pa.RecordBatch.from_arrays(arrays, schema=RECORD_SCHEMA)


def from_records(batch: Any, chunk_format: str) -> Iterator[Tuple[str, int, Any, Any]]:
    """Events back from RECORD_SCHEMA rows: ``("chunk", index, meta, chunk)`` and
    ``("done", index, None, info)``."""
    columns = {name: batch.column(name).to_pylist() for name in ("index", "seq", "row_start", "row_end", "passed_through", "info")}
    payloads = batch.column("payload")
    for i in range(batch.num_rows):
        index = columns["index"][i]
        info = columns["info"][i]
        if info is not None:
            yield "done", index, None, json.loads(info)
        else:
            meta = (columns["seq"][i], columns["row_start"][i], columns["row_end"][i], columns["passed_through"][i])
            payload = payloads[i].as_buffer()
            yield "chunk", index, meta, arrow_to_chunk(decode_table(payload), chunk_format)


def piece_of_rows(
    table: pa.Table, chunk_format: str, range_index: Optional[Tuple[int, int, Any]], starts: List[int]
) -> Tuple[Partition, Any]:
    """A backend's piece of the input rows (carrying ROW_COLUMN) as the Partition it stands
    for (named by its first row, however the backend cut the input; numbered by the
    planned partition ``starts`` it falls in) and the data to run: pandas with the input's
    RangeIndex back when ``range_index`` is ``(start, step, name)``."""
    first = int(table.column(ROW_COLUMN)[0].as_py()) if table.num_rows else 0
    data = table.drop_columns([ROW_COLUMN])
    rows = data.num_rows
    partition = Partition(
        index=max(0, bisect.bisect_right(starts, first) - 1),
        key=f"r{first:012d}",
        describe=f"rows {first}..{first + rows}",
        first_row=first,
        rows=rows,
    )
    if chunk_format == "pandas":
        import pandas as pd

        frame = data.to_pandas()
        if range_index is not None:
            start, step, name = range_index
            frame.index = pd.RangeIndex(start + first * step, start + (first + rows) * step, step, name=name)
        return partition, frame
    return partition, data
