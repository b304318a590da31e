"""What a run hands back: :class:`ProcessedChunk` (a chunk with its input rows) and
:class:`ChunkIterator`, the iterator of a run's chunks in the pipeline's ``chunk_format``
(with the output folder's manifest once the run has ended)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from . import _convert
from ._native import StoppedError


@dataclass(frozen=True)
class ProcessedChunk:
    """A processed chunk and where it came from (``with_info=True``)."""

    data: Any
    """The chunk in the pipeline's ``chunk_format``."""
    chunk: int
    """Position of the chunk in the input (0, 1, 2, ...)."""
    input_rows: Tuple[int, int]
    """The input rows it was made from: ``[start, end)``, 0-based."""
    passed_through: bool
    """True when the function failed and ``on_error='pass_through'`` emitted the input."""


class ChunkIterator:
    """The processed chunks of one run, in input order (unless ``ordered=False``).

    Iterate it, or call :meth:`run_to_end` to only write the output. Breaking out of the
    loop, :meth:`close` or leaving a ``with`` block stops the run. A run stopped by
    :meth:`StreamingDataPipeline.stop_processing` (or ``cleanup()``) before its input ended
    raises :class:`sluice.StoppedError` from the loop, so a stopped run never looks like a
    finished one; :attr:`stopped` says so too, and the output folder's manifest says
    ``"stopped"``.
    """

    def __init__(
        self,
        native_run: Any,
        chunk_format: str,
        with_info: bool,
        output_path: Optional[str],
        index: Optional[_convert.IndexInfo] = None,
        pipeline: Any = None,  # the StreamingDataPipeline, told of the last chunk
    ):
        self._pipeline = pipeline
        self._native = native_run
        self._format = chunk_format
        self._index = index
        self._with_info = with_info
        self._output_path = output_path
        self._stopped = False
        self.last_chunk: Optional[ProcessedChunk] = None

    def __iter__(self) -> "ChunkIterator":
        return self

    def __next__(self) -> Any:
        try:
            seq, start, end, passed_through, from_function, data = next(self._native)
        except StoppedError:
            self._stopped = True
            raise
        if not from_function:
            data = _convert.batch_to_format(data, self._format, owned=True, index=self._index)
        info = ProcessedChunk(data, seq, (start, end), passed_through)
        self.last_chunk = info
        if self._pipeline is not None:
            self._pipeline._last_chunk = info
        return info if self._with_info else data

    @property
    def stopped(self) -> bool:
        """True once the run has ended because it was stopped before its input ended."""
        manifest = self.manifest
        if manifest is not None:
            return manifest.get("status") == "stopped"
        return bool(self._stopped)

    def run_to_end(self) -> Optional[dict]:
        """Consumes the run without converting chunks to Python objects and returns the
        output folder's manifest (``None`` without ``output_path``)."""
        try:
            self._native.drain()
        except StoppedError:
            self._stopped = True
            raise
        return self.manifest

    @property
    def manifest(self) -> Optional[dict]:
        """The output folder's ``_manifest.json`` once the run has ended (parts, rows,
        schema, statistics), else ``None``."""
        text = self._native.manifest_json()
        if text is None and self._output_path and not self._native.running:
            path = os.path.join(self._output_path, "_manifest.json")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    return json.load(f)
        return json.loads(text) if text else None

    def close(self, timeout: float = 30.0) -> None:
        """Stops the run and waits (GIL released) for its threads to finish."""
        self._native.close(True, timeout)

    def __enter__(self) -> "ChunkIterator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
