"""sluice: chunked, memory-bounded, parallel processing of tabular data larger than memory.

The seed's API (``StreamingDataPipeline``, ``BackpressureController``, ``StreamingStats``)
on a Rust engine built on Apache Arrow::

    from sluice import StreamingDataPipeline

    pipeline = StreamingDataPipeline(chunk_size=5000, max_memory_mb=500, num_workers=4)
    for chunk in pipeline.process_dataframe_stream(df, preprocess, output_path="out"):
        ...
    print(pipeline.get_stats())
    pipeline.cleanup()

Files are read by the engine itself (``process_file_stream``), and a per-chunk SQL query
(``sql=``) runs without Python at all. With ``enable_distributed=True`` and
``distributed_backend='dask' | 'ray' | 'spark'`` the same calls run on a cluster, the engine
inside each task (``sluice.backends``).
"""

from . import _native
from ._native import ChunkError, SluiceError, StoppedError
from .backends._task import PartitionFailed as PartitionError
from .controller import BackpressureController
from .pipeline import ChunkIterator, ProcessedChunk, StreamingDataPipeline
from .stats import StreamingStats
from .stream import StreamHandle

__version__ = _native.__version__

__all__ = [
    "BackpressureController",
    "ChunkError",
    "ChunkIterator",
    "PartitionError",
    "ProcessedChunk",
    "SluiceError",
    "StoppedError",
    "StreamingDataPipeline",
    "StreamHandle",
    "StreamingStats",
    "__version__",
]
