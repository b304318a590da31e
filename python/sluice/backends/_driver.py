"""The driver's side of a distributed run: cutting the input into partitions, the iterator
that yields the tasks' chunks, the one ``_manifest.json`` listing every partition's parts,
and the statistics merged from every task (per-worker lines included).

Used by ``sluice.pipeline``; knows backends only through :class:`~sluice.backends.Backend`.
"""

from __future__ import annotations

import glob
import json
import os
import re
import resource
import shutil
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .. import _native
from ..stats import StreamingStats
from . import Backend, Event, FrameInput
from ._task import STAGING_DIR, LatencyHistogram, OutputSpec, Partition, PartitionRunner

# Extensions the engine reads (sluice::source::files::FileFormat::from_name).
_DATA_EXTENSIONS = {"csv", "tsv", "parquet", "pq", "ndjson", "json", "jsonl", "ipc", "arrow", "feather", "arrows"}
_MANIFEST_FORMAT = {"parquet": "parquet", "pq": "parquet", "csv": "csv", "ipc": "ipc", "arrow": "ipc", "feather": "ipc"}
_OUR_PART = re.compile(r"^part-(r\d+|p\d+|f\d+(g\d+)?)-\d{5}\.\w+$")


def plan_bounds(rows: int, partitions: int) -> List[Tuple[int, int]]:
    """``partitions`` contiguous row ranges of near-equal size (none empty)."""
    partitions = max(1, min(partitions, rows)) if rows else 1
    step, extra = divmod(rows, partitions)
    bounds, start = [], 0
    for i in range(partitions):
        end = start + step + (1 if i < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


def frame_input(df: Any, backend: Backend, partitions: Optional[int], chunk_size: int) -> FrameInput:
    """``df`` (pandas, Polars, Arrow, or anything with ``__arrow_c_stream__``) cut into
    ``partitions`` row ranges (default: twice the cluster's task slots, none smaller than
    ``chunk_size``)."""
    import pyarrow as pa

    from .. import _convert

    if isinstance(df, pa.RecordBatch):
        df = pa.Table.from_batches([df])
    range_index = None
    if _convert._is_pandas_frame(df):
        _convert.check_frame(df, "the DataFrame given as df")
        if type(df.index) is _convert._pandas().RangeIndex:
            range_index = (df.index.start, df.index.step, df.index.name)
    elif not isinstance(df, pa.Table) and not _convert._is_polars_frame(df):
        df, _ = _convert.input_to_arrow(df, keep_index=False)
    rows = df.num_rows if isinstance(df, pa.Table) else len(df)
    wanted = partitions or min(2 * backend.parallelism(), -(-rows // chunk_size))
    return FrameInput(df, plan_bounds(rows, wanted), range_index)


def expand_paths(paths: List[str]) -> List[str]:
    """Files, globs and folders as the engine expands them (sorted, de-duplicated; a
    folder's hidden and ``_`` files and unknown extensions left out), so that each file
    can be its own partition."""
    out: List[str] = []
    for path in paths:
        if os.path.isdir(path):
            files = sorted(
                os.path.join(path, name)
                for name in os.listdir(path)
                if os.path.isfile(os.path.join(path, name))
                and not name.startswith((".", "_"))
                and name.rsplit(".", 1)[-1].lower() in _DATA_EXTENSIONS
            )
            if not files:
                raise FileNotFoundError(f"{path} is a folder with no data files")
            out.extend(files)
        elif any(c in path for c in "*?["):
            files = sorted(p for p in glob.glob(path) if os.path.isfile(p))
            if not files:
                raise FileNotFoundError(f"no file matches {path!r}")
            out.extend(files)
        else:
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path}: no such file")
            out.append(path)
    seen = set()
    # Absolute: the workers read them from working folders of their own.
    return [os.path.abspath(p) for p in out if not (p in seen or seen.add(p))]


def file_partitions(paths: List[str], wanted: int, file_format: str = "auto") -> List[Partition]:
    """One partition per file; with fewer files than ``wanted``, Parquet files with several
    row groups are cut into runs of whole row groups (``f<file>g<first group>``), so one
    big file still spreads over the cluster."""
    parquet = file_format in ("parquet", "pq") or file_format == "auto"
    pieces_per_file = max(1, -(-wanted // max(1, len(paths))))
    out: List[Partition] = []
    for i, path in enumerate(paths):
        groups = _row_groups(path) if parquet and pieces_per_file > 1 else None
        if not groups or len(groups) < 2:
            out.append(Partition(index=len(out), key=f"f{i:05d}", describe=f"file {path}", paths=[path]))
            continue
        for first, last in _runs(groups, pieces_per_file):
            rows = sum(groups[first:last])
            out.append(
                Partition(
                    index=len(out),
                    key=f"f{i:05d}g{first:05d}",
                    describe=f"file {path} row groups {first}..{last}",
                    rows=rows,
                    paths=[path],
                    row_groups=list(range(first, last)),
                )
            )
    return out


def _row_groups(path: str) -> Optional[List[int]]:
    """Rows of each row group of a Parquet file (``None`` for any other file)."""
    if not path.lower().endswith((".parquet", ".pq")):
        return None
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]


def _runs(groups: List[int], pieces: int) -> List[Tuple[int, int]]:
    """Consecutive row groups in about ``pieces`` runs of similar row counts."""
    target = sum(groups) / min(pieces, len(groups))
    runs, first, rows = [], 0, 0
    for g, n in enumerate(groups):
        rows += n
        if rows >= target * 0.999 and g + 1 < len(groups):
            runs.append((first, g + 1))
            first, rows = g + 1, 0
    runs.append((first, len(groups)))
    return runs


def _driver_peak_mb() -> float:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class DistributedStats:
    """Every distributed run's per-partition statistics, merged on demand."""

    def __init__(self) -> None:
        self.infos: List[Dict[str, Any]] = []
        self.wall_time = 0.0

    def add(self, infos: List[Dict[str, Any]], wall_time: float) -> None:
        self.infos.extend(infos)
        self.wall_time += wall_time

    @staticmethod
    def merge(infos: List[Dict[str, Any]], wall_time: float) -> StreamingStats:
        """Counts add up, peaks take the maximum (each worker's own), latency percentiles
        come from the tasks' merged histograms, and time and throughput are the driver's
        wall time."""
        merged = StreamingStats.merge([StreamingStats.from_dict(i["stats"]) for i in infos], wall_time=wall_time or None)
        merged.total_processing_time = wall_time
        histograms = [i.get("latency_histogram") for i in infos]
        if infos and all(h is not None for h in histograms):
            total = LatencyHistogram()
            for h in histograms:
                total.merge(LatencyHistogram.from_json(h))
            merged.latency_p50_ms = total.quantile_ms(0.50)
            merged.latency_p95_ms = total.quantile_ms(0.95)
            merged.latency_p99_ms = total.quantile_ms(0.99)
            merged.latency_max_ms = total.quantile_ms(1.0)
        # else (sql= runs: no Python call to time) each part's own percentiles, the largest.
        return merged

    def stats(self) -> StreamingStats:
        return self.merge(self.infos, self.wall_time)

    def workers(self) -> List[Dict[str, Any]]:
        """One line per worker process: its partitions, rows, chunks, peak memory."""
        by_worker: Dict[str, Dict[str, Any]] = {}
        for info in self.infos:
            s = info["stats"]
            w = by_worker.setdefault(
                info["worker"],
                {
                    "worker": info["worker"],
                    "partitions": 0,
                    "rows": 0,
                    "chunks": 0,
                    "memory_peak_mb": 0.0,
                    "engine_peak_tracked_mb": 0.0,
                    "backpressure_events": 0,
                    "errors_encountered": 0,
                    "task_seconds": 0.0,
                },
            )
            w["partitions"] += 1
            w["rows"] += s["total_rows_processed"]
            w["chunks"] += s["total_chunks_processed"]
            w["memory_peak_mb"] = max(w["memory_peak_mb"], s["memory_peak_mb"])
            w["engine_peak_tracked_mb"] = max(w["engine_peak_tracked_mb"], s["engine_peak_tracked_mb"])
            w["backpressure_events"] += s["backpressure_events"]
            w["errors_encountered"] += s["errors_encountered"]
            w["task_seconds"] += info["seconds"]
        return sorted(by_worker.values(), key=lambda w: w["worker"])


class DistributedChunkIterator:
    """The processed chunks of a distributed run, in input order (unless ``ordered=False``).

    Nothing runs until the first ``next()`` or :meth:`run_to_end` (which only writes
    ``output_path``: the chunks then stay on the workers).
    """

    def __init__(
        self,
        backend: Backend,
        runner: PartitionRunner,
        *,
        frame: Optional[FrameInput] = None,
        partitions: Optional[List[Partition]] = None,
        native: Any = None,
        ordered: bool,
        with_info: bool,
        wrap: Callable[..., Any],
        stats: DistributedStats,
    ):
        self._backend = backend
        self._runner = runner
        self._frame = frame
        self._partitions = partitions
        self._native = native
        self._ordered = ordered
        self._with_info = with_info
        self._wrap = wrap
        self._stats = stats
        self._events: Optional[Iterator[Event]] = None
        self._infos: List[Dict[str, Any]] = []
        self._started = 0.0
        self._finished = False
        self._manifest: Optional[dict] = None
        self._lock: Any = None  # the output folder's one-writer lock, from _start to _finish
        self._offset = 0  # input rows of the partitions done so far (file inputs, ordered)
        self._handed = 0
        self.last_chunk: Any = None

    def _start(self) -> Iterator[Event]:
        if self._events is None:
            self._started = time.perf_counter()
            out = self._runner.output
            if out is not None:
                # The folder's one owner refuses earlier output (FileExistsError) unless
                # overwrite=True, which removes it, as a run on one machine does; and
                # another writer (BlockingIOError). Its lock is held until _finish.
                self._lock = _native.prepare_output(out.path, out.overwrite)
                os.makedirs(out.path, exist_ok=True)
                self._write_manifest("running")
            if self._frame is not None:
                self._events = self._backend.run_frame(self._runner, self._frame, self._ordered)
            elif self._native is not None:
                self._events = self._backend.run_native(self._runner, self._native, self._ordered)
            else:
                self._events = self._backend.run_partitions(self._runner, self._partitions, self._ordered)
        return self._events

    def __iter__(self) -> "DistributedChunkIterator":
        return self

    def __next__(self) -> Any:
        if self._finished:
            raise StopIteration
        events = self._start()
        while True:
            try:
                kind, index, meta, value = next(events)
            except StopIteration:
                self._finish("complete")
                raise
            except BaseException as e:
                self._finish("failed", f"{type(e).__name__}: {e}")
                raise
            if kind == "done":
                self._infos.append(value)
                if value.get("first_row") is None:
                    self._offset += value["input_rows"]
                continue
            _, start, end, passed = meta
            base = self._base(index)
            # Chunks are numbered as the driver hands them out (tasks number their own).
            info = self._wrap(value, self._handed, (base + start, base + end), passed)
            self._handed += 1
            self.last_chunk = info
            return info if self._with_info else value

    def _base(self, index: int) -> int:
        """Absolute input row of a chunk's partition's first row: planned for DataFrame
        partitions; otherwise counted in order (with ``ordered=False``, 0: the rows are
        then the partition's own)."""
        if self._frame is not None:
            return self._frame.bounds[index][0]
        return self._offset if self._ordered else 0

    def run_to_end(self) -> Optional[dict]:
        """Runs every partition without bringing chunks to the driver; returns the manifest
        (``None`` without ``output_path``)."""
        if self._events is None:
            self._runner.return_chunks = False
        for _ in self:
            pass
        return self.manifest

    @property
    def manifest(self) -> Optional[dict]:
        """The output folder's ``_manifest.json`` once the run has ended."""
        return self._manifest

    def close(self, timeout: float = 30.0) -> None:
        """Stops the run: the backend cancels what has not finished."""
        if self._events is not None and not self._finished:
            close = getattr(self._events, "close", None)
            if close is not None:
                close()
            self._finish("stopped")

    def __enter__(self) -> "DistributedChunkIterator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _finish(self, status: str, error: Optional[str] = None) -> None:
        if self._finished:
            return
        self._finished = True
        wall = time.perf_counter() - self._started
        self._stats.add(self._infos, wall)
        try:
            if self._runner.output is not None:
                self._write_manifest(status, error, wall)
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _write_manifest(self, status: str, error: Optional[str] = None, wall: float = 0.0) -> None:
        """One manifest for the whole run: every partition's parts, in input order, with
        absolute input rows (the engine's manifest format, plus each part's partition)."""
        out: OutputSpec = self._runner.output
        infos = sorted(self._infos, key=lambda i: i["index"])
        parts, schema, offset = [], None, 0
        for info in infos:
            base = info["first_row"] if info.get("first_row") is not None else offset
            for part in info["parts"]:
                parts.append(
                    dict(part, input_row_start=part["input_row_start"] + base, input_row_end=part["input_row_end"] + base)
                )
            schema = schema or info.get("schema")
            offset = base + info["input_rows"]
        manifest = {
            "version": 1,
            "status": status,
            "format": _MANIFEST_FORMAT.get(out.format.lower(), out.format),
            "parts": parts,
            "total_rows": sum(p["rows"] for p in parts),
            "schema": schema or [],
            "error": error,
        }
        if status != "running":
            manifest["stats"] = DistributedStats.merge(infos, wall).to_dict() if infos else None
            manifest["distributed"] = {
                "backend": self._backend.name,
                "partitions": [
                    {k: i[k] for k in ("index", "key", "describe", "worker", "input_rows")} for i in infos
                ],
            }
        tmp = os.path.join(out.path, "._manifest.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
            # Durable before anyone relies on it: the file, then the folder's new name.
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(out.path, "_manifest.json"))
        _sync_dir(out.path)
        if status == "complete":
            # The manifest is the record: our parts it does not list (an earlier run's, cut
            # differently) go, and so does the staging folder.
            listed = {p["file"] for p in parts}
            for name in os.listdir(out.path):
                if _OUR_PART.match(name) and name not in listed:
                    os.remove(os.path.join(out.path, name))
            shutil.rmtree(os.path.join(out.path, STAGING_DIR), ignore_errors=True)
        if status != "running":
            self._manifest = manifest


def _sync_dir(path: str) -> None:
    """Makes a rename into ``path`` durable (POSIX; elsewhere folders cannot be opened)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def driver_memory_mb() -> float:
    return _driver_peak_mb()
