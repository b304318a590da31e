"""Running the sluice engine on Dask: one pipeline per partition, statistics merged.

Each Dask task builds a :class:`~sluice.StreamingDataPipeline` with the same settings,
streams its partition through it (chunked, memory-bounded, in parallel inside the task) and
returns the processed partition together with its statistics; the driver merges the
statistics. The processing function (or SQL text) and the settings must be picklable.

Not here: a scheduler. Bring your own ``dask.distributed.Client`` (or none: Dask's default
scheduler is used).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .pipeline import StreamingDataPipeline
from .stats import StreamingStats


def _dask():
    try:
        import dask
        import dask.dataframe as dd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("sluice.distributed needs Dask: pip install 'dask[distributed]'") from e
    return dask, dd


def run_partition(
    partition: Any,
    processing_function: Optional[Callable[[Any], Any]],
    settings: Dict[str, Any],
    sql: Optional[str] = None,
) -> Tuple[Any, StreamingStats]:
    """Streams one pandas partition through a sluice pipeline; returns the processed
    partition (chunks concatenated) and the pipeline's statistics."""
    import pandas as pd

    settings = dict(settings, chunk_format="pandas")
    with StreamingDataPipeline(**settings) as pipeline:
        chunks = list(pipeline.process_dataframe_stream(partition, processing_function, sql=sql))
        stats = pipeline.get_stats()
    if not chunks:
        return partition.iloc[0:0], stats
    return pd.concat(chunks), stats


def _processed_only(partition: Any, processing_function: Any, settings: Dict[str, Any], sql: Optional[str]) -> Any:
    return run_partition(partition, processing_function, settings, sql)[0]


class DaskStreamingPipeline:
    """The sluice engine inside each task of a Dask DataFrame.

    Args:
        client: a ``dask.distributed.Client``; ``None`` uses Dask's current scheduler.
        **settings: :class:`~sluice.StreamingDataPipeline` settings for every partition.
    """

    def __init__(self, client: Any = None, **settings: Any):
        # Build one pipeline here so bad settings fail now, not inside a task.
        StreamingDataPipeline(**settings).cleanup()
        self.client = client
        self.settings = settings
        self._stats: List[StreamingStats] = []
        self._wall_time = 0.0

    def map_partitions(
        self,
        ddf: Any,
        processing_function: Optional[Callable[[Any], Any]] = None,
        *,
        meta: Any = None,
        sql: Optional[str] = None,
    ) -> Any:
        """A lazy Dask DataFrame: ``ddf`` with every partition streamed through sluice.
        ``meta`` is the output's empty frame, as Dask's own ``map_partitions`` takes it
        (inferred by running on Dask's sample partition when omitted)."""
        kwargs = {} if meta is None else {"meta": meta}
        return ddf.map_partitions(_processed_only, processing_function, self.settings, sql, **kwargs)

    def process(
        self,
        data: Any,
        processing_function: Optional[Callable[[Any], Any]] = None,
        *,
        npartitions: int = 8,
        sql: Optional[str] = None,
        ordered: bool = True,
    ) -> Iterator[Any]:
        """Processes a Dask DataFrame (or a pandas DataFrame, split in ``npartitions``)
        partition by partition and yields the processed partitions, in order (or as they
        complete with ``ordered=False`` and a client). Statistics are merged into
        :meth:`get_stats`."""
        dask, dd = _dask()
        if not hasattr(data, "to_delayed"):
            data = dd.from_pandas(data, npartitions=npartitions)
        tasks = [dask.delayed(run_partition)(part, processing_function, self.settings, sql) for part in data.to_delayed()]
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
                from dask.distributed import as_completed

                done = (f.result() for f in as_completed(futures))
            for result, stats in done:
                self._stats.append(stats)
                yield result
        finally:
            self._wall_time += time.perf_counter() - start

    def get_stats(self) -> StreamingStats:
        """Statistics of every partition processed so far, merged (throughput over the wall
        time of the runs)."""
        return StreamingStats.merge(self._stats, wall_time=self._wall_time or None)
