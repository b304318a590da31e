"""``StreamingStats``: the seed's six statistics plus the engine's own (latency
percentiles, failures, the chunk-size history), as measured by the Rust engine.

Counts are exact (rows and chunks are counted as they leave the engine), times are
measured, and ``memory_peak_mb`` is the process's peak resident memory read from the
kernel, never an estimate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Iterable, List, Optional, Tuple


@dataclass
class StreamingStats:
    """Statistics of a pipeline, cumulative over all its runs."""

    # The seed's fields, in the seed's order.
    total_chunks_processed: int = 0
    total_rows_processed: int = 0
    total_processing_time: float = 0.0
    throughput_rows_per_second: float = 0.0
    memory_peak_mb: float = 0.0
    backpressure_events: int = 0
    # The engine's own.
    engine_peak_tracked_mb: float = 0.0
    """High-water mark of the bytes the engine itself held (its budget's use), MiB."""
    tracked_memory_mb: float = 0.0
    """Bytes the engine holds right now, MiB."""
    memory_budget_mb: float = 0.0
    average_chunk_size: float = 0.0
    current_chunk_size: int = 0
    errors_encountered: int = 0
    """Failures of the processing function (exceptions), whatever ``on_error`` did."""
    failed_chunks: int = 0
    failed_rows: int = 0
    passed_through_chunks: int = 0
    rejected_rows: int = 0
    """Malformed input records (a value that does not parse, a wrong number of fields,
    invalid UTF-8) set aside under ``on_error`` 'skip', 'pass_through' or 'dead_letter'."""
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    latency_p99_ms: float = 0.0
    latency_max_ms: float = 0.0
    backpressure_wait_seconds: float = 0.0
    budget_overshoots: int = 0
    input_bytes_read: int = 0
    """Bytes of the input files read so far (the reader runs ahead, within the budget)."""
    input_bytes_processed: int = 0
    """Bytes of the input files whose rows have been through the function: progress."""
    runs: int = 0
    chunk_size_history: List[Tuple[int, int]] = field(default_factory=list)
    """``(first chunk number, rows)`` for every change of the chunk size."""

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "StreamingStats":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        history = values.get("chunk_size_history") or []
        values["chunk_size_history"] = [
            (int(h["from_chunk"]), int(h["rows"])) if isinstance(h, dict) else (int(h[0]), int(h[1]))
            for h in history
        ]
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "StreamingStats":
        return cls.from_dict(json.loads(text))

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def merge(cls, parts: Iterable["StreamingStats"], wall_time: Optional[float] = None) -> "StreamingStats":
        """Statistics of several pipelines that ran side by side (e.g. one per Dask
        partition): counts add up, peaks take the maximum, and throughput is rows over
        ``wall_time`` (or over the longest part's time when not given)."""
        parts = list(parts)
        out = cls()
        if not parts:
            return out
        for p in parts:
            out.total_chunks_processed += p.total_chunks_processed
            out.total_rows_processed += p.total_rows_processed
            out.backpressure_events += p.backpressure_events
            out.errors_encountered += p.errors_encountered
            out.failed_chunks += p.failed_chunks
            out.failed_rows += p.failed_rows
            out.passed_through_chunks += p.passed_through_chunks
            out.rejected_rows += p.rejected_rows
            out.backpressure_wait_seconds += p.backpressure_wait_seconds
            out.budget_overshoots += p.budget_overshoots
            out.input_bytes_read += p.input_bytes_read
            out.input_bytes_processed += p.input_bytes_processed
            out.runs += p.runs
        out.total_processing_time = sum(p.total_processing_time for p in parts)
        out.memory_peak_mb = max(p.memory_peak_mb for p in parts)
        out.engine_peak_tracked_mb = max(p.engine_peak_tracked_mb for p in parts)
        out.memory_budget_mb = max(p.memory_budget_mb for p in parts)
        for name in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_max_ms"):
            setattr(out, name, max(getattr(p, name) for p in parts))
        elapsed = wall_time if wall_time is not None else max(p.total_processing_time for p in parts)
        out.throughput_rows_per_second = out.total_rows_processed / elapsed if elapsed > 0 else 0.0
        if out.total_chunks_processed:
            out.average_chunk_size = out.total_rows_processed / out.total_chunks_processed
        return out
