"""``BackpressureController``: the seed's flow-control class, backed by the engine's.

On its own it has its own memory budget (``memory_threshold_mb``) and queue. Given to a
pipeline (``StreamingDataPipeline(..., backpressure_controller=c)``) it is *attached*: its
methods then read and drive the pipeline's engine, so ``super().should_apply_backpressure()``
in a subclass sees the bytes and queue slots the engine really holds, and
``super().adapt_batch_size()`` runs the engine's adaptive step.

Subclass it as the seed's ``AdaptiveBackpressureController`` does. The engine calls the
methods a subclass overrides -- ``should_apply_backpressure()`` before it admits a chunk,
``adapt_batch_size()`` before it cuts one (then reads ``current_batch_size``), and
``record_performance(rows_per_second)`` after each chunk if the subclass has it -- at most
once per chunk and never per row. Methods that are not overridden cost nothing: the engine
runs its own rule without touching Python.
"""

from __future__ import annotations

import numbers
from typing import Tuple

from . import _native


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_mb(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of megabytes, got {type(value).__name__}")
    value = float(value)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a positive, finite number of megabytes, got {value}")
    return value


class BackpressureController:
    """Controls flow and memory pressure: a memory budget, a queue of at most
    ``max_queue_size`` chunks, and adaptive batching (the chunk size).

    Args:
        max_queue_size: chunks the engine may hold at once (read ahead, in flight, waiting
            to be handed over).
        memory_threshold_mb: the memory budget in MiB. Attached to a pipeline, the smaller
            of this and the pipeline's ``max_memory_mb`` is the budget.
        adaptive_batching: let the engine resize chunks (halve under memory pressure, grow
            with headroom).
    """

    def __init__(self, max_queue_size: int = 100, memory_threshold_mb: float = 1000, adaptive_batching: bool = True):
        self.max_queue_size = _check_int("max_queue_size", max_queue_size)
        self.memory_threshold_mb = _check_mb("memory_threshold_mb", memory_threshold_mb)
        if not isinstance(adaptive_batching, bool):
            raise TypeError(f"adaptive_batching must be True or False, got {type(adaptive_batching).__name__}")
        self.adaptive_batching = adaptive_batching
        self._native = _native.NativeController(self.max_queue_size, self.memory_threshold_mb, adaptive_batching)

    # The seed's interface.

    def should_apply_backpressure(self) -> bool:
        """True when the reader should hold back: the queue is full or the tracked memory is
        above 80% of the budget."""
        return self._native.should_apply_backpressure()

    def adapt_batch_size(self) -> int:
        """One step of adaptive batching (AIMD on the chunk's rows: halve under memory
        pressure, grow by a quarter with headroom, never more than a chunk's share of the
        budget). Returns the new ``current_batch_size``."""
        return self._native.adapt_batch_size()

    @property
    def current_batch_size(self) -> int:
        """Rows the next chunk gets. Writable: a subclass may set it (it is clamped to the
        pipeline's ``min_chunk_size``..``max_chunk_size``)."""
        return self._native.current_batch_size

    @current_batch_size.setter
    def current_batch_size(self, rows: int) -> None:
        self._native.current_batch_size = _check_int("current_batch_size", rows)

    # The engine's state, read-only.

    @property
    def queue_size(self) -> int:
        """Chunks the engine holds now."""
        return self._native.queued_chunks

    @property
    def current_memory_mb(self) -> float:
        """MiB the engine holds now (what the budget counts)."""
        return self._native.used_bytes / (1024 * 1024)

    @property
    def peak_memory_mb(self) -> float:
        return self._native.peak_bytes / (1024 * 1024)

    @property
    def memory_budget_mb(self) -> float:
        return self._native.budget_bytes / (1024 * 1024)

    @property
    def memory_pressure(self) -> float:
        """Fraction of the budget in use (0..1, above 1 only in an overshoot)."""
        return self._native.pressure

    @property
    def backpressure_events(self) -> int:
        """Times the engine's reader had to wait for memory or a queue slot."""
        return self._native.backpressure_events

    @property
    def is_attached(self) -> bool:
        """True once the controller drives a pipeline's engine."""
        return self._native.attached

    def state(self) -> dict:
        """The controller's state as a dict (for ``get_performance_stats``)."""
        return {
            "attached": self.is_attached,
            "max_queue_size": self._native.max_queue_size,
            "queue_size": self.queue_size,
            "current_memory_mb": self.current_memory_mb,
            "peak_memory_mb": self.peak_memory_mb,
            "memory_budget_mb": self.memory_budget_mb,
            "memory_pressure": self.memory_pressure,
            "backpressure_events": self.backpressure_events,
            "current_batch_size": self.current_batch_size,
            "adaptive_batching": self._native.adaptive_batching,
            "should_apply_backpressure": self._native.should_apply_backpressure(),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_queue_size={self.max_queue_size}, "
            f"memory_threshold_mb={self.memory_threshold_mb:g}, adaptive_batching={self.adaptive_batching}, "
            f"attached={self.is_attached})"
        )

    # For the pipeline.

    def _hook_flags(self) -> Tuple[bool, bool, bool]:
        """Which methods the engine must call in Python: those a subclass overrides."""
        cls = type(self)
        return (
            cls.should_apply_backpressure is not BackpressureController.should_apply_backpressure,
            cls.adapt_batch_size is not BackpressureController.adapt_batch_size,
            callable(getattr(self, "record_performance", None)),
        )

    @classmethod
    def _for_engine(cls, native: "_native.NativeController") -> "BackpressureController":
        """A plain controller that shows a pipeline's engine (when none was given)."""
        self = cls.__new__(cls)
        self.max_queue_size = native.max_queue_size
        self.memory_threshold_mb = native.budget_bytes / (1024 * 1024)
        self.adaptive_batching = native.adaptive_batching
        self._native = native
        return self
