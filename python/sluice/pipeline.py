"""``StreamingDataPipeline``: the seed's API on the Rust engine.

The engine (``sluice._native``) cuts the data into chunks, admits each against the memory
budget (backpressure), resizes chunks (adaptive batching), runs the processing function on
its worker threads (or, when the function holds the GIL, one call at a time on the thread
iterating the results) and hands the results back in input order, optionally also writing them
as part files with a ``_manifest.json``. Python code runs only for the user's function and
the pandas/Polars conversions; reading, decoding, per-chunk SQL, writing and waiting all
run in Rust with the GIL released.

With ``enable_distributed=True`` the same calls run on Dask, Ray or Spark: each task runs
this engine over its partition in a worker process (``sluice.backends``).

Not here: conversions (``sluice._convert``), the controller (``sluice.controller``), the
distributed backends (``sluice.backends``).
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import weakref
from typing import Any, Callable, Optional, Sequence, Tuple, Union

from . import _convert, _native
from ._arguments import (
    _check_output_mode,
    _check_sql_windows,
    _normalize_on_error,
    _output_path,
    _paths,
    _refuse_distributed,
    _sql_text,
)
from ._results import ChunkIterator, ProcessedChunk
from .backends import BACKENDS, open_backend
from .backends._driver import (
    DistributedChunkIterator,
    DistributedStats,
    driver_memory_mb,
    expand_paths,
    file_partitions,
    frame_input,
)
from .backends._task import OutputSpec, PartitionRunner
from .stream import StreamHandle
from .controller import BackpressureController, _check_int, _check_mb
from .stats import StreamingStats

PathLike = Union[str, "os.PathLike[str]"]

DISTRIBUTED_BACKENDS = BACKENDS

_live_pipelines: "weakref.WeakSet[StreamingDataPipeline]" = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:  # pragma: no cover - runs at interpreter exit
    for pipeline in list(_live_pipelines):
        try:
            pipeline._native.cleanup(5.0)
            if pipeline._backend is not None:
                pipeline._backend.close()
        except Exception:
            pass


class StreamingDataPipeline:
    """Chunked, memory-bounded, parallel processing of data larger than memory.

    Args:
        chunk_size: rows per chunk to start with (adaptive batching resizes it).
        max_memory_mb: memory budget in MiB for everything the engine holds (read-ahead,
            chunks in flight, the reorder buffer, writers). The reader waits when it is full.
        enable_parallel: run the function on ``num_workers`` threads (else one).
        num_workers: worker threads; default: the machine's cores.
        enable_distributed: run ``process_dataframe_stream`` and ``process_file_stream`` on
            ``distributed_backend``: the input is cut into partitions (row ranges of a
            DataFrame, or one per file), each task runs this engine over its partition in a
            worker process with these settings (``max_memory_mb`` is per task), and the
            chunks come back here in input order. The function (or SQL) must pickle.
        distributed_backend: ``'dask'``, ``'ray'`` or ``'spark'``; its package must be
            installed (the error says what to ``pip install``).

    Keyword-only:
        ordered: chunks come back in input order (default) or as completed.
        on_error: what a failing function does: ``'fail'`` (raise the original exception in
            the caller, naming the chunk), ``'skip'`` (drop and count the chunk),
            ``'pass_through'`` (emit the input chunk unchanged) or ``'dead_letter:DIR'``
            (write the failed input chunk and its traceback to DIR).
        backpressure_controller: a :class:`BackpressureController` (or subclass) to use;
            the engine calls the methods a subclass overrides.
        chunk_format: what the function receives and the iterator yields: ``'pandas'``,
            ``'arrow'`` (pyarrow Table) or ``'polars'``.
        adaptive_batching: let the engine resize chunks; ``False`` keeps every chunk at
            ``chunk_size`` rows (the last one fewer), so per-chunk results are reproducible.
        min_chunk_size, max_chunk_size: bounds for adaptive batching.
        max_queue_size: chunks the engine may hold at once (default 100, or the
            controller's).
        cluster: with ``enable_distributed``, the caller's own cluster: a
            ``dask.distributed.Client`` or scheduler address (``'tcp://host:8786'``), a Ray
            address (``'auto'``, ``'ray://host:10001'``), or a ``SparkSession`` or Spark master
            URL (``'spark://host:7077'``). ``None``: the one the caller already has in this
            process (Dask's current client, Spark's active or default session, an
            initialized Ray), never stopped by sluice; if there is none, a local cluster of
            ``num_workers`` worker processes, started on the first run and stopped by
            :meth:`cleanup` (or at exit).
        partitions: with ``enable_distributed``, how many partitions a DataFrame is cut into
            (default: twice the cluster's task slots, none smaller than ``chunk_size``).
            Files are one partition each; with fewer files than that, Parquet files are
            cut into runs of whole row groups.
    """

    def __init__(
        self,
        chunk_size: int = 1000,
        max_memory_mb: float = 1000,
        enable_parallel: bool = True,
        num_workers: Optional[int] = None,
        enable_distributed: bool = False,
        distributed_backend: str = "dask",
        *,
        ordered: bool = True,
        on_error: str = "fail",
        backpressure_controller: Optional[BackpressureController] = None,
        chunk_format: str = "pandas",
        adaptive_batching: bool = True,
        min_chunk_size: Optional[int] = None,
        max_chunk_size: Optional[int] = None,
        max_queue_size: Optional[int] = None,
        cluster: Any = None,
        partitions: Optional[int] = None,
    ):
        self._backend = None
        self.chunk_size = _check_int("chunk_size", chunk_size)
        self.max_memory_mb = _check_mb("max_memory_mb", max_memory_mb)
        for name, value in (
            ("enable_parallel", enable_parallel),
            ("enable_distributed", enable_distributed),
            ("ordered", ordered),
            ("adaptive_batching", adaptive_batching),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
        self.enable_parallel = enable_parallel
        self.num_workers = None if num_workers is None else _check_int("num_workers", num_workers)
        self.enable_distributed = enable_distributed
        if not isinstance(distributed_backend, str):
            raise TypeError(f"distributed_backend must be a string, got {type(distributed_backend).__name__}")
        if distributed_backend not in DISTRIBUTED_BACKENDS:
            raise ValueError(
                f"unknown distributed_backend {distributed_backend!r}; expected one of {DISTRIBUTED_BACKENDS}"
            )
        self.distributed_backend = distributed_backend
        if cluster is not None and not enable_distributed:
            raise ValueError("cluster= is for distributed runs; pass enable_distributed=True too")
        if enable_distributed and backpressure_controller is not None:
            raise ValueError(
                "backpressure_controller cannot drive a distributed run: each task's engine has its "
                "own controller in its worker process (max_memory_mb and max_queue_size apply per task)"
            )
        self.partitions = None if partitions is None else _check_int("partitions", partitions)
        self.cluster = cluster
        if chunk_format not in _convert.CHUNK_FORMATS:
            raise ValueError(f"unknown chunk_format {chunk_format!r}; expected one of {_convert.CHUNK_FORMATS}")
        self.chunk_format = chunk_format
        self.ordered = ordered
        self.on_error = _normalize_on_error(on_error)
        min_rows = None if min_chunk_size is None else _check_int("min_chunk_size", min_chunk_size)
        max_rows = None if max_chunk_size is None else _check_int("max_chunk_size", max_chunk_size)
        queue_rows = None if max_queue_size is None else _check_int("max_queue_size", max_queue_size)
        self._chunk_bounds = (min_rows, max_rows, queue_rows)  # for the tasks' pipelines

        controller = backpressure_controller
        budget_mb = self.max_memory_mb
        queue = None if max_queue_size is None else _check_int("max_queue_size", max_queue_size)
        flags = (False, False, False)
        if controller is not None:
            if not isinstance(controller, BackpressureController):
                raise TypeError(
                    "backpressure_controller must be a sluice.BackpressureController (or a subclass), "
                    f"got {type(controller).__name__}"
                )
            if not hasattr(controller, "_native"):
                raise TypeError(
                    f"{type(controller).__name__}.__init__ must call super().__init__(...)"
                )
            if controller.is_attached:
                raise ValueError("this backpressure_controller already drives another pipeline; create one per pipeline")
            budget_mb = min(budget_mb, controller.memory_threshold_mb)
            queue = queue or controller.max_queue_size
            adaptive_batching = adaptive_batching and controller.adaptive_batching
            flags = controller._hook_flags()
        self.adaptive_batching = adaptive_batching

        self._native = _native.NativePipeline(
            chunk_size=self.chunk_size,
            max_memory_mb=budget_mb,
            enable_parallel=enable_parallel,
            num_workers=self.num_workers,
            ordered=ordered,
            on_error=self.on_error,
            adaptive_batching=adaptive_batching,
            max_queue_size=queue or 100,
            min_chunk_size=min_rows,
            max_chunk_size=max_rows,
            controller=None if controller is None else controller._native,
            hooks=controller,
            hook_flags=flags,
        )
        if controller is None:
            controller = BackpressureController._for_engine(self._native.engine_controller())
        self.backpressure_controller = controller
        self._last_chunk: Optional[ProcessedChunk] = None
        self._distributed = None
        self._distributed_stats = DistributedStats()
        if enable_distributed:
            # A missing package fails here, naming the pip install; nothing starts yet.
            self._backend = open_backend(distributed_backend, cluster, self.num_workers)
        _live_pipelines.add(self)

    # Runs.

    def _function(
        self,
        processing_function: Any,
        sql: Any,
        index: Optional[_convert.IndexInfo] = None,
        *,
        frame: Any = None,
        hold_output: bool = False,
    ) -> Tuple[Any, Optional[str]]:
        sql = _sql_text(sql)
        if processing_function is not None and sql is not None:
            raise ValueError("give either processing_function or sql=, not both")
        if processing_function is None:
            return None, sql
        if not callable(processing_function):
            raise TypeError(
                f"processing_function must be callable (chunk -> processed chunk), got {type(processing_function).__name__}"
            )
        adapter = _convert.make_adapter(
            processing_function, self.chunk_format, self.on_error, index, frame=frame, hold_output=hold_output
        )
        return adapter, None

    def _iterator(
        self,
        native_run: Any,
        output_path: Optional[str],
        with_info: bool,
        index: Optional[_convert.IndexInfo] = None,
    ) -> ChunkIterator:
        return ChunkIterator(native_run, self.chunk_format, with_info, output_path, index, self)

    def process_dataframe_stream(
        self,
        df: Any,
        processing_function: Optional[Callable[[Any], Any]] = None,
        output_path: Optional[PathLike] = None,
        *,
        sql: Optional[str] = None,
        output_format: str = "parquet",
        rows_per_part: Optional[int] = None,
        with_info: bool = False,
        overwrite: bool = False,
        sql_windows: str = "chunk",
        resume: bool = False,
    ) -> ChunkIterator:
        """Processes ``df`` (pandas DataFrame, pyarrow Table or Polars DataFrame) chunk by
        chunk and yields the processed chunks in input order, in ``chunk_format``.

        ``processing_function`` takes a chunk and returns the processed chunk. With
        ``sql=`` instead, each chunk runs through that query (the table is ``chunk``)
        entirely in Rust. With ``output_path``, every chunk is also written to part files
        (``output_format``: parquet, csv or ipc) with a ``_manifest.json``. With
        ``with_info=True`` it yields :class:`ProcessedChunk` (data plus input rows).
        A folder that already holds output (a manifest or part files) is refused with
        ``FileExistsError`` unless ``overwrite=True`` (replace it) or ``resume=True``
        (continue the run that wrote it: its committed parts are kept and their input rows
        skipped; the same ``df``, query and settings are expected, and a different input or
        query is refused).

        Distributed, ``df`` may also be the backend's own DataFrame (a Dask DataFrame, a
        Ray Dataset, a Spark DataFrame such as ``spark.read.parquet(...)``): each of its
        partitions (blocks) is one task.

        ``sql_windows="global"`` makes ``AGG(x) OVER ()`` in ``sql`` cover the whole input
        instead of each chunk: a first pass computes those values exactly, then the query
        runs per chunk with them (see the README, "Two meanings of OVER ()").
        """
        _check_sql_windows(sql_windows, sql)
        self._function(processing_function, sql)  # checks the arguments before converting
        out = _output_path(output_path)
        _check_output_mode(out, overwrite, resume)
        rows = None if rows_per_part is None else _check_int("rows_per_part", rows_per_part)
        if self.enable_distributed:
            _refuse_distributed(sql_windows, resume)
            return self._distributed_frame(df, processing_function, sql, out, output_format, rows, with_info, overwrite)
        if self._slices_frame(df, processing_function, sql):
            # The function gets `df.iloc[a:b]`, as in a plain loop: the engine chunks row
            # positions (it never needs the data itself), so nothing is converted on the way
            # in, and, without output files, nothing on the way out either.
            _convert.check_frame(df, "the DataFrame given as df")
            adapter, _ = self._function(processing_function, None, frame=df, hold_output=out is None)
            run = self._native.run_table(
                _convert.positions_table(len(df)), adapter, None, out, output_format, rows, overwrite, None, resume
            )
            return self._iterator(run, out, with_info)
        # pandas chunks keep the input's index (as `df.iloc[a:b]` would), unless SQL runs or
        # the input chunks themselves are written out.
        keep_index = (
            self.chunk_format == "pandas"
            and sql is None
            and (processing_function is not None or out is None)
        )
        table, index = _convert.input_to_arrow(df, keep_index=keep_index)
        adapter, sql = self._function(processing_function, sql, index)
        run = self._native.run_table(table, adapter, sql, out, output_format, rows, overwrite, sql_windows, resume)
        return self._iterator(run, out, with_info, index)

    def _slices_frame(self, df: Any, processing_function: Any, sql: Any) -> bool:
        """Whether the function can be handed slices of ``df`` itself: a pandas function on
        a pandas DataFrame, under a policy that never emits or writes the input chunk."""
        return (
            processing_function is not None
            and sql is None
            and self.chunk_format == "pandas"
            and self.on_error in ("fail", "skip")
            and _convert._is_pandas_frame(df)
        )

    def process_file_stream(
        self,
        file_path: Union[PathLike, Sequence[PathLike]],
        processing_function: Optional[Callable[[Any], Any]] = None,
        file_format: str = "auto",
        output_path: Optional[PathLike] = None,
        *,
        sql: Optional[str] = None,
        output_format: str = "parquet",
        rows_per_part: Optional[int] = None,
        with_info: bool = False,
        overwrite: bool = False,
        sql_windows: str = "chunk",
        resume: bool = False,
    ) -> ChunkIterator:
        """Processes files (a path, a glob, a folder, or a list of them; CSV, TSV, Parquet,
        NDJSON or Arrow IPC) read and decoded in parallel by the Rust engine, and yields the
        processed chunks in order. ``file_format='auto'`` goes by each file's extension.

        With ``sql=`` the whole run stays in Rust; use ``.run_to_end()`` on the result to
        only write ``output_path``. A folder that already holds output is refused with
        ``FileExistsError`` unless ``overwrite=True`` (replace it) or ``resume=True``
        (continue the run that wrote it, as ``sluice run --resume``: its committed parts are
        kept and the input rows they cover skipped; other inputs or another query are
        refused). ``sql_windows="global"``: ``AGG(x) OVER ()`` covers every file's rows (two
        passes; the files must be regular files, unchanged between the passes; a CSV or
        NDJSON input is parsed once, its rows kept for pass 2 in a scratch Arrow file in
        ``output_path``, or in a temporary folder without one).
        """
        _check_sql_windows(sql_windows, sql)
        paths = _paths(file_path)
        if not isinstance(file_format, str):
            raise TypeError(f"file_format must be a string, got {type(file_format).__name__}")
        out = _output_path(output_path)
        _check_output_mode(out, overwrite, resume)
        adapter, sql = self._function(processing_function, sql, hold_output=out is None)
        rows = None if rows_per_part is None else _check_int("rows_per_part", rows_per_part)
        if self.enable_distributed:
            _refuse_distributed(sql_windows, resume)
            runner = self._runner(processing_function, sql, out, output_format, rows, file_format, overwrite)
            wanted = self.partitions or 2 * self._backend.parallelism()
            partitions = file_partitions(expand_paths(paths), wanted, file_format)
            return self._distributed_iterator(runner, with_info, partitions=partitions)
        fmt = None if file_format == "auto" else file_format
        run = self._native.run_files(paths, fmt, adapter, sql, out, output_format, rows, overwrite, sql_windows, resume)
        return self._iterator(run, out, with_info)

    # Distributed runs (enable_distributed=True).

    def _runner(
        self,
        function: Any,
        sql: Any,
        out: Optional[str],
        output_format: str,
        rows: Optional[int],
        file_format: str = "auto",
        overwrite: bool = False,
    ) -> PartitionRunner:
        """The task body every worker runs: a local pipeline with these settings."""
        output = None
        if out is not None:
            # Tasks write where the driver lists: the same absolute folder on every machine.
            output = OutputSpec(os.path.abspath(out), output_format, rows, overwrite)
        settings = self._settings()
        if self.on_error.startswith("dead_letter="):
            # Workers have their own working folders: the driver's folder, absolute.
            settings["on_error"] = "dead_letter:" + os.path.abspath(self.on_error[len("dead_letter=") :])
        return PartitionRunner(
            StreamingDataPipeline,
            settings,
            function,
            _sql_text(sql),
            self.chunk_format,
            file_format,
            output,
        )

    def _distributed_frame(
        self,
        df: Any,
        function: Any,
        sql: Any,
        out: Optional[str],
        output_format: str,
        rows: Optional[int],
        with_info: bool,
        overwrite: bool = False,
    ) -> "DistributedChunkIterator":
        runner = self._runner(function, sql, out, output_format, rows, overwrite=overwrite)
        if self._backend.accepts(df):
            # The engine's own DataFrame (dd.read_parquet, spark.read...): its partitions.
            return self._distributed_iterator(runner, with_info, native=df)
        frame = frame_input(df, self._backend, self.partitions, self.chunk_size)
        return self._distributed_iterator(runner, with_info, frame=frame)

    def _distributed_iterator(self, runner: PartitionRunner, with_info: bool, **input: Any) -> "DistributedChunkIterator":
        def wrap(data: Any, seq: int, rows: Tuple[int, int], passed: bool) -> ProcessedChunk:
            info = ProcessedChunk(data, seq, rows, passed)
            self._last_chunk = info
            return info

        return DistributedChunkIterator(
            self._backend,
            runner,
            ordered=self.ordered,
            with_info=with_info,
            wrap=wrap,
            stats=self._distributed_stats,
            **input,
        )

    def open_stream(
        self,
        processing_function: Optional[Callable[[Any], Any]] = None,
        *,
        sql: Optional[str] = None,
        max_latency: float = 0.1,
        output_path: Optional[PathLike] = None,
        output_format: str = "parquet",
        rows_per_part: Optional[int] = None,
    ) -> "StreamHandle":
        """Opens a stream fed while it runs: ``handle.send(frame)`` from any thread (blocks
        while the budget is full), ``handle.results()`` for the processed chunks in send
        order, ``handle.close()`` (or leaving a ``with`` block) to finish. Small frames are
        joined into chunks of up to ``chunk_size`` rows or ``max_latency`` seconds,
        whichever comes first; large ones are split. Latency statistics are per row, from
        ``send`` to the hand-over (or the write, with ``output_path``).
        """
        self._function(processing_function, sql)  # checks the arguments now
        if isinstance(max_latency, bool) or not isinstance(max_latency, (int, float)) or not max_latency >= 0:
            raise ValueError(f"max_latency must be a number of seconds >= 0, got {max_latency!r}")
        rows = None if rows_per_part is None else _check_int("rows_per_part", rows_per_part)
        return StreamHandle(
            self, processing_function, sql, float(max_latency), _output_path(output_path), output_format, rows
        )

    # Statistics and control.

    def get_stats(self) -> StreamingStats:
        """Statistics, cumulative over every run of this pipeline. Distributed: every
        task's statistics merged (counts added, peaks the largest worker's, latency
        percentiles from the tasks' merged histograms of function call times, time and
        throughput over the driver's wall time)."""
        if self.enable_distributed:
            return self._distributed_stats.stats()
        return StreamingStats.from_json(self._native.stats_json())

    def get_performance_stats(self) -> dict:
        """The statistics as a dict, plus the controller's state and the settings;
        distributed, also one line per worker process under ``'distributed'``."""
        stats = self.get_stats().to_dict()
        stats["controller"] = self.backpressure_controller.state()
        stats["config"] = json.loads(self._native.config_json())
        stats["active_runs"] = self._native.active_runs
        if self.enable_distributed:
            stats["distributed"] = {
                "backend": self.distributed_backend,
                "cluster": self._backend.describe(),
                "partitions": len(self._distributed_stats.infos),
                "workers": self._distributed_stats.workers(),
                "driver_memory_peak_mb": driver_memory_mb(),
            }
        return stats

    @property
    def last_chunk(self) -> Optional[ProcessedChunk]:
        """The last chunk a run of this pipeline handed out, with its input rows."""
        return self._last_chunk

    def stop_processing(self) -> None:
        """Stops every run of this pipeline (safe from another thread): each iterator
        hands out the chunks already processed in order, then raises
        :class:`sluice.StoppedError`; output folders keep their committed parts and their
        manifests say ``"stopped"``."""
        self._native.stop()

    def cleanup(self, timeout: float = 30.0) -> None:
        """Stops every run, waits for their threads (GIL released), stops the local cluster
        a distributed pipeline started, and collects garbage. The pipeline can still be used
        afterwards (a new local cluster starts on the next distributed run)."""
        self._native.cleanup(timeout)
        if self._backend is not None:
            # A local cluster this pipeline started stops here; the caller's is left alone.
            self._backend.close()
        gc.collect()

    def __enter__(self) -> "StreamingDataPipeline":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()

    @property
    def distributed(self):
        """The older Dask helper (``sluice.distributed.DaskStreamingPipeline``) with this
        pipeline's settings; ``enable_distributed=True`` runs the pipeline's own calls on
        the cluster instead."""
        if self.distributed_backend != "dask":
            raise NotImplementedError(
                f"the .distributed helper is Dask's; with distributed_backend={self.distributed_backend!r} "
                "use enable_distributed=True and the pipeline's own process_* calls"
            )
        if self._distributed is None:
            from .backends.dask import DaskStreamingPipeline

            self._distributed = DaskStreamingPipeline(pipeline_factory=StreamingDataPipeline, **self._settings())
        return self._distributed

    def _settings(self) -> dict:
        """Keyword arguments that build a pipeline like this one (for workers elsewhere)."""
        return dict(
            chunk_size=self.chunk_size,
            max_memory_mb=self.max_memory_mb,
            enable_parallel=self.enable_parallel,
            num_workers=self.num_workers,
            ordered=self.ordered,
            on_error=self.on_error.replace("dead_letter=", "dead_letter:"),
            chunk_format=self.chunk_format,
            adaptive_batching=self.adaptive_batching,
            min_chunk_size=self._chunk_bounds[0],
            max_chunk_size=self._chunk_bounds[1],
            max_queue_size=self._chunk_bounds[2],
        )

    def __repr__(self) -> str:
        return (
            f"StreamingDataPipeline(chunk_size={self.chunk_size}, max_memory_mb={self.max_memory_mb:g}, "
            f"enable_parallel={self.enable_parallel}, num_workers={self.num_workers}, "
            f"chunk_format={self.chunk_format!r}, on_error={self.on_error!r})"
        )


__all__ = ["StreamingDataPipeline", "ChunkIterator", "ProcessedChunk"]
