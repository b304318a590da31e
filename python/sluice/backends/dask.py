"""Dask: one future per partition on a ``dask.distributed`` client; results come back with
``as_completed`` and are put back in input order unless ``ordered=False``.

Without ``cluster=``, the client the caller already has is used, as every Dask API does
(``distributed.get_client()``: the default client, e.g. the last ``Client(...)`` made, or the
worker's own inside a task), and is left open. Only when there is none, a
``LocalCluster(processes=True)`` of ``num_workers`` single-threaded worker processes is
started on first use and closed by ``close()``. Also here, for code written before
``enable_distributed`` ran anything: :class:`DaskStreamingPipeline`.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import Backend, Event
from ._task import Partition


def _slice(data: Any, start: int, end: int) -> Any:
    if hasattr(data, "iloc"):
        return data.iloc[start:end]
    return data.slice(start, end - start)  # pyarrow Table, Polars DataFrame


# Set while sluice starts a local cluster: the file a worker process writes when it finds
# itself re-running the caller's script (see _refuse_in_a_spawning_child).
_SPAWN_PROBE = "SLUICE_DASK_SPAWN_PROBE"

NO_MAIN_GUARD = (
    "sluice could not start Dask's local worker processes: each one re-runs this script "
    "({script}), which reaches the pipeline again because it has no "
    "`if __name__ == \"__main__\":` guard; put the script's code under that guard, or create "
    "a dask.distributed Client before the pipeline runs (sluice uses it; "
    "Client(processes=False) keeps the workers in this process)"
)


def _script() -> str:
    # In a spawned child, the script being re-run is __mp_main__ until it finishes.
    main = sys.modules.get("__mp_main__") or sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return os.path.basename(path) if path else "the main module"


def _refuse_in_a_spawning_child() -> None:
    """In a process still importing its parent's main module (multiprocessing's spawn
    re-runs the script in every worker it starts), starting workers cannot work: say so in
    one line and end this process (its parent reports it) instead of multiprocessing's
    error in every worker."""
    if not getattr(multiprocessing.current_process(), "_inheriting", False):
        return
    probe = os.environ.get(_SPAWN_PROBE)
    if probe:
        try:
            with open(probe, "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            pass
    raise SystemExit(NO_MAIN_GUARD.format(script=_script()))


def _current_client() -> Any:
    """The client the caller already has (``distributed.get_client()``), or None."""
    from distributed import get_client

    try:
        client = get_client()
    except ValueError:  # no client, and no address to make one for
        return None
    return client if client.status in ("running", "connecting", "newly-created") else None


class DaskBackend(Backend):
    name = "dask"

    def __init__(self, cluster: Any = None, num_workers: Optional[int] = None):
        super().__init__(cluster, num_workers)
        self._client = None
        self._own_client = False
        self._local = None

    @property
    def client(self) -> Any:
        if self._client is not None and not self._own_client and self.cluster is None:
            # The caller's client, borrowed: follow it if they closed it and made another.
            if self._client.status not in ("running", "connecting", "newly-created"):
                self._client = None
        if self._client is None:
            from distributed import Client

            if self.cluster is None:
                found = _current_client()
                if found is not None:
                    self._client = found  # the caller's: never closed here
                else:
                    self._start_local()
            elif isinstance(self.cluster, str):
                self._client = Client(self.cluster, set_as_default=False)
                self._own_client = True
            else:
                self._client = self.cluster
        return self._client

    def _start_local(self) -> None:
        from distributed import Client, LocalCluster

        _refuse_in_a_spawning_child()
        workers = self.num_workers or os.cpu_count() or 1
        with tempfile.TemporaryDirectory(prefix="sluice-dask-") as folder:
            probe = os.path.join(folder, "reran-main")
            before = os.environ.get(_SPAWN_PROBE)
            os.environ[_SPAWN_PROBE] = probe
            try:
                local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
            except Exception:
                if os.path.exists(probe):
                    raise RuntimeError(NO_MAIN_GUARD.format(script=_script())) from None
                raise
            finally:
                if before is None:
                    os.environ.pop(_SPAWN_PROBE, None)
                else:
                    os.environ[_SPAWN_PROBE] = before
        self._local = local
        self._client = Client(local, set_as_default=False)
        self._own_client = True

    def parallelism(self) -> int:
        info = self.client.scheduler_info()
        threads = sum(w.get("nthreads", 1) for w in info.get("workers", {}).values())
        return max(1, threads)

    def run_frame(self, runner, frame, ordered) -> Iterator[Event]:
        client = self.client
        data, bounds = frame.data, frame.bounds
        partitions = [
            Partition(index=i, key=f"r{a:012d}", describe=f"rows {a}..{b}", first_row=a, rows=b - a)
            for i, (a, b) in enumerate(bounds)
        ]
        # Scattered straight to the workers instead of riding along in the task graph.
        # hash=False: slices of one Arrow table share buffers, and Dask's content hash
        # could give two of them one key.
        pieces = client.scatter([_slice(data, a, b) for a, b in bounds], hash=False)
        futures = [
            client.submit(runner.collect, p, piece, pure=False, key=f"sluice-{p.key}-{os.urandom(4).hex()}")
            for p, piece in zip(partitions, pieces)
        ]
        del pieces
        return self._results(futures, ordered)

    def run_partitions(self, runner, partitions, ordered) -> Iterator[Event]:
        client = self.client
        futures = [
            client.submit(runner.collect, p, pure=False, key=f"sluice-{p.key}-{os.urandom(4).hex()}")
            for p in partitions
        ]
        return self._results(futures, ordered)

    def accepts(self, data: Any) -> bool:
        return type(data).__module__.startswith("dask") and hasattr(data, "to_delayed")

    def run_native(self, runner, data, ordered) -> Iterator[Event]:
        import dask

        parts = data.to_delayed()
        tasks = [
            dask.delayed(runner.collect, pure=False)(
                Partition(index=i, key=f"p{i:05d}", describe=f"Dask partition {i}"), part
            )
            for i, part in enumerate(parts)
        ]
        return self._results(self.client.compute(tasks), ordered)

    def _results(self, futures: List[Any], ordered: bool) -> Iterator[Event]:
        from distributed import as_completed

        # Every task runs at once; a result is dropped (and freed on its worker) once
        # handed on, so the driver holds one partition's output at a time.
        pending = {f.key: f for f in futures}
        order = [f.key for f in futures]
        done = (pending[k] for k in order) if ordered else as_completed(futures)
        del futures
        try:
            for future in done:
                result = future.result()
                pending.pop(future.key, None)
                del future
                for meta, chunk in result.chunks:
                    yield "chunk", result.index, meta, chunk
                yield "done", result.index, None, result.info
                del result
        finally:
            for f in pending.values():
                if not f.done():
                    f.cancel()

    def describe(self) -> str:
        if self._client is None:
            return "dask (not started)"
        return f"dask {self._client.scheduler.address}"

    def close(self) -> None:
        # Only what sluice started; a client the caller made (cluster= or their default
        # client) stays open.
        if self._own_client and self._client is not None:
            self._client.close()
        if self._local is not None:
            self._local.close()
        self._client = self._local = None
        self._own_client = False


BACKEND = DaskBackend


# Before enable_distributed ran anything, this was how to run sluice on Dask; kept working.


def run_partition(
    partition: Any,
    processing_function: Optional[Callable[[Any], Any]],
    settings: Dict[str, Any],
    sql: Optional[str],
    pipeline_factory: Callable[..., Any],
) -> Tuple[Any, Any]:
    """Streams one pandas partition through a sluice pipeline (``pipeline_factory(**settings)``);
    returns the processed partition (chunks concatenated) and the pipeline's statistics."""
    import pandas as pd

    settings = dict(settings, chunk_format="pandas")
    with pipeline_factory(**settings) as pipeline:
        chunks = list(pipeline.process_dataframe_stream(partition, processing_function, sql=sql))
        stats = pipeline.get_stats()
    if not chunks:
        return partition.iloc[0:0], stats
    return pd.concat(chunks), stats


def _processed_only(partition: Any, processing_function: Any, settings: Dict[str, Any], sql: Optional[str], factory: Any) -> Any:
    return run_partition(partition, processing_function, settings, sql, factory)[0]


class DaskStreamingPipeline:
    """The sluice engine inside each task of a Dask DataFrame (the older interface; prefer
    ``StreamingDataPipeline(enable_distributed=True, distributed_backend='dask')``).

    Args:
        client: a ``dask.distributed.Client``; ``None`` uses Dask's current scheduler.
        pipeline_factory: the pipeline class each partition runs in (``sluice.distributed``
            passes ``StreamingDataPipeline``).
        **settings: its settings for every partition.
    """

    def __init__(self, client: Any = None, *, pipeline_factory: Callable[..., Any], **settings: Any):
        # Build one pipeline here so bad settings fail now, not inside a task.
        pipeline_factory(**settings).cleanup()
        self.pipeline_factory = pipeline_factory
        self.client = client
        self.settings = settings
        self._stats: List[Any] = []
        self._wall_time = 0.0

    def map_partitions(self, ddf: Any, processing_function: Any = None, *, meta: Any = None, sql: Optional[str] = None) -> Any:
        """A lazy Dask DataFrame: ``ddf`` with every partition streamed through sluice."""
        kwargs = {} if meta is None else {"meta": meta}
        return ddf.map_partitions(
            _processed_only, processing_function, self.settings, sql, self.pipeline_factory, **kwargs
        )

    def process(
        self, data: Any, processing_function: Any = None, *, npartitions: int = 8, sql: Optional[str] = None, ordered: bool = True
    ) -> Iterator[Any]:
        """Processes a Dask DataFrame (or a pandas DataFrame, split in ``npartitions``)
        partition by partition and yields the processed partitions; statistics are merged
        into :meth:`get_stats`."""
        import dask
        import dask.dataframe as dd

        if not hasattr(data, "to_delayed"):
            data = dd.from_pandas(data, npartitions=npartitions)
        tasks = [
            dask.delayed(run_partition)(part, processing_function, self.settings, sql, self.pipeline_factory)
            for part in data.to_delayed()
        ]
        start = time.perf_counter()
        try:
            if self.client is None:
                for result, stats in dask.compute(*tasks):
                    self._stats.append(stats)
                    yield result
                return
            futures = self.client.compute(tasks)
            if ordered:
                done = (f.result() for f in futures)
            else:
                from distributed import as_completed

                done = (f.result() for f in as_completed(futures))
            for result, stats in done:
                self._stats.append(stats)
                yield result
        finally:
            self._wall_time += time.perf_counter() - start

    def get_stats(self) -> Any:
        from ..stats import StreamingStats

        return StreamingStats.merge(self._stats, wall_time=self._wall_time or None)
