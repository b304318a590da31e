"""Type stubs of ``sluice._native``, the Rust extension (crates/sluice-python).

The Python package wraps these; use ``sluice.StreamingDataPipeline`` and friends instead.
"""

from typing import Any, Callable, Optional, Tuple

import pyarrow as pa

__version__: str

class SluiceError(RuntimeError):
    """An error of the sluice engine (bad input data, a failed write, a failed chunk)."""

class StoppedError(SluiceError): ...
class ChunkError(SluiceError):
    """A chunk failed in the engine (per-chunk SQL, or a panic) under on_error='fail'."""

class NativeController:
    """Memory permits, queue slots and the adaptive batch sizer."""

    def __init__(
        self,
        max_queue_size: int = 100,
        memory_threshold_mb: float = 1000.0,
        adaptive_batching: bool = True,
        initial_batch_size: int = 1000,
    ) -> None: ...
    def should_apply_backpressure(self) -> bool: ...
    def adapt_batch_size(self) -> int: ...
    current_batch_size: int
    @property
    def used_bytes(self) -> int: ...
    @property
    def peak_bytes(self) -> int: ...
    @property
    def budget_bytes(self) -> int: ...
    @property
    def queued_chunks(self) -> int: ...
    @property
    def max_queue_size(self) -> int: ...
    @property
    def backpressure_events(self) -> int: ...
    @property
    def pressure(self) -> float: ...
    @property
    def adaptive_batching(self) -> bool: ...
    @property
    def attached(self) -> bool: ...

class NativePushSender:
    """The sending end of a push stream."""

    def send(self, data: Any) -> None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...

class NativeRun:
    """One run: iterate for ``(chunk, input_start, input_end, passed_through,
    from_function, data)``; ``data`` is what the function returned when ``from_function``,
    else a ``pyarrow.RecordBatch``."""

    def __iter__(self) -> "NativeRun": ...
    def __next__(self) -> Tuple[int, int, int, bool, bool, Any]: ...
    def drain(self) -> Tuple[int, int]: ...
    def close(self, wait: bool = True, timeout: float = 30.0) -> bool: ...
    def manifest_json(self) -> Optional[str]: ...
    @property
    def running(self) -> bool: ...

class NativePipeline:
    """The engine pipeline behind ``sluice.StreamingDataPipeline``."""

    def __init__(
        self,
        *,
        chunk_size: int,
        max_memory_mb: float,
        enable_parallel: bool,
        num_workers: Optional[int],
        ordered: bool,
        on_error: str,
        adaptive_batching: bool,
        max_queue_size: int,
        min_chunk_size: Optional[int],
        max_chunk_size: Optional[int],
        controller: Optional[NativeController] = None,
        hooks: Optional[Any] = None,
        hook_flags: Tuple[bool, bool, bool] = (False, False, False),
    ) -> None: ...
    def run_table(
        self,
        data: Any,
        function: Optional[Callable[[pa.RecordBatch], Tuple[Any, Any]]] = None,
        sql: Optional[str] = None,
        output_path: Optional[str] = None,
        output_format: str = "parquet",
        rows_per_part: Optional[int] = None,
        overwrite: bool = False,
        sql_windows: Optional[str] = None,
        resume: bool = False,
    ) -> NativeRun: ...
    def open_push(
        self,
        first: Any,
        function: Optional[Callable[[pa.RecordBatch], Tuple[Any, Any]]] = None,
        sql: Optional[str] = None,
        output_path: Optional[str] = None,
        output_format: str = "parquet",
        rows_per_part: Optional[int] = None,
        max_latency: float = 0.1,
    ) -> Tuple[NativePushSender, NativeRun]: ...
    def run_files(
        self,
        paths: list[str],
        file_format: Optional[str] = None,
        function: Optional[Callable[[pa.RecordBatch], Tuple[Any, Any]]] = None,
        sql: Optional[str] = None,
        output_path: Optional[str] = None,
        output_format: str = "parquet",
        rows_per_part: Optional[int] = None,
        overwrite: bool = False,
        sql_windows: Optional[str] = None,
        resume: bool = False,
    ) -> NativeRun: ...
    def stats_json(self) -> str: ...
    def config_json(self) -> str: ...
    def engine_controller(self) -> NativeController: ...
    def stop(self) -> None: ...
    def cleanup(self, timeout: float = 30.0) -> bool: ...
    @property
    def active_runs(self) -> int: ...

class OutputLock:
    """An output folder's one-writer lock (``_sluice.lock``), held until released."""

    @property
    def held(self) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> "OutputLock": ...
    def __exit__(self, *args: object) -> bool: ...

def prepare_output(path: str, overwrite: bool = False) -> OutputLock: ...
