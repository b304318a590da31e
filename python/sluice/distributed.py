"""The older way to run sluice on Dask (``DaskStreamingPipeline``), kept importable.

Prefer ``StreamingDataPipeline(enable_distributed=True, distributed_backend='dask' | 'ray' |
'spark')``, which runs ``process_dataframe_stream`` / ``process_file_stream`` on the
cluster itself (see ``sluice.backends``). This module imports the pipeline; the backends
never do.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

from .backends import dask as _dask_backend
from .pipeline import StreamingDataPipeline
from .stats import StreamingStats


def run_partition(
    partition: Any,
    processing_function: Optional[Callable[[Any], Any]],
    settings: Dict[str, Any],
    sql: Optional[str] = None,
) -> Tuple[Any, StreamingStats]:
    """Streams one pandas partition through a sluice pipeline; returns the processed
    partition (chunks concatenated) and the pipeline's statistics."""
    return _dask_backend.run_partition(partition, processing_function, settings, sql, StreamingDataPipeline)


class DaskStreamingPipeline(_dask_backend.DaskStreamingPipeline):
    """The sluice engine inside each task of a Dask DataFrame.

    Args:
        client: a ``dask.distributed.Client``; ``None`` uses Dask's current scheduler.
        **settings: :class:`~sluice.StreamingDataPipeline` settings for every partition.
    """

    def __init__(self, client: Any = None, **settings: Any):
        super().__init__(client, pipeline_factory=StreamingDataPipeline, **settings)


__all__ = ["DaskStreamingPipeline", "run_partition"]
