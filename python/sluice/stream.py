"""``StreamingDataPipeline.open_stream``: a pipeline fed while it runs.

``send`` hands frames (pandas, Polars, pyarrow) to the engine from any thread and blocks
while the memory budget is full, so a fast producer is slowed to the pipeline's pace;
``results`` yields the processed chunks in send order and ends after ``close``.
"""

import threading
from typing import Any, Iterator, Optional

from . import _convert

# How long waits inside ``results`` last before looking again (Ctrl-C stays responsive).
_POLL = 0.1


class StreamHandle:
    """An open stream. Use it as a context manager (``close`` on exit)::

        with pipeline.open_stream(analyse) as stream:
            threading.Thread(target=lambda: [alert(c) for c in stream.results()]).start()
            for frame in frames:
                stream.send(frame)

    The run starts with the first frame, whose columns every later frame must have.
    Without ``output_path``, read ``results()`` while sending (another thread): unread
    results hold the budget, and ``send`` waits for room. With ``output_path``, the chunks
    are written to part files as they come and ``results()`` is not available.
    """

    def __init__(self, pipeline: Any, processing_function: Any, sql: Any, max_latency: float,
                 output_path: Optional[str], output_format: str, rows_per_part: Optional[int]):
        self._pipeline = pipeline
        self._function = processing_function
        self._sql = sql
        self._max_latency = max_latency
        self._output_path = output_path
        self._output_format = output_format
        self._rows_per_part = rows_per_part
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._sender: Any = None
        self._iterator: Any = None
        self._writer: Optional[threading.Thread] = None
        self._write_error: Optional[BaseException] = None
        self._closed = False
        self._results_taken = False

    def send(self, frame: Any) -> None:
        """Sends one frame (a pandas or Polars DataFrame, a pyarrow Table or RecordBatch).
        Blocks while the pipeline is full; raises after :meth:`close`."""
        if self._closed:
            raise RuntimeError("the stream is closed: send() after close()")
        table, _ = _convert.input_to_arrow(frame, keep_index=False, argument="frame")
        with self._lock:
            if self._closed:
                raise RuntimeError("the stream is closed: send() after close()")
            if self._sender is None:
                self._open(table)
                return
            sender = self._sender
        sender.send(table)

    def _open(self, first: Any) -> None:
        adapter, sql = self._pipeline._function(
            self._function, self._sql, hold_output=self._output_path is None
        )
        sender, run = self._pipeline._native.open_push(
            first, adapter, sql, self._output_path, self._output_format,
            self._rows_per_part, self._max_latency,
        )
        self._sender = sender
        self._iterator = self._pipeline._iterator(run, self._output_path, False)
        if self._output_path is not None:
            self._writer = threading.Thread(target=self._write, name="sluice-stream-writer", daemon=True)
            self._writer.start()
        self._started.set()

    def _write(self) -> None:
        try:
            self._iterator.run_to_end()
        except BaseException as e:  # reported by close()
            self._write_error = e

    def results(self) -> Iterator[Any]:
        """The processed chunks in send order (in the pipeline's ``chunk_format``); ends
        once the stream is closed and everything sent has come out."""
        if self._output_path is not None:
            raise RuntimeError("this stream writes its chunks to output_path; read the part files")
        if self._results_taken:
            raise RuntimeError("results() can be iterated once per stream")
        self._results_taken = True
        return self._results()

    def _results(self) -> Iterator[Any]:
        while not self._started.wait(_POLL):
            if self._closed:
                return
        if self._iterator is None:  # closed before any frame
            return
        yield from self._iterator

    def close(self) -> None:
        """No more input: what was sent is processed (and written), then the stream ends.
        With ``output_path``, waits until the last part is written."""
        with self._lock:
            self._closed = True
            sender = self._sender
        self._started.set()
        if sender is not None:
            sender.close()
        if self._writer is not None:
            while self._writer.is_alive():
                self._writer.join(_POLL)
            if self._write_error is not None:
                error, self._write_error = self._write_error, None
                raise error

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def manifest(self) -> Optional[dict]:
        """With ``output_path``, the folder's manifest once the stream has ended."""
        return None if self._iterator is None else self._iterator.manifest

    def __enter__(self) -> "StreamHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
