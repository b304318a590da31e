"""Where ``enable_distributed=True`` runs: one module per engine (Dask, Ray, Spark) behind
the small :class:`Backend` interface that ``sluice.pipeline`` chooses from.

A backend only schedules: it ships a :class:`~sluice.backends._task.PartitionRunner` and the
partitions to its workers, each task runs the sluice engine over its partition there, and
the backend streams the tasks' events back. Planning, stats merging and the manifest are
``sluice.backends._driver``'s; nothing here imports ``sluice.pipeline``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Iterator, List, Optional, Tuple

import re

import numpy as np
import pyarrow as pa

from ._task import ROW_COLUMN, Partition, PartitionFailed, PartitionRunner

# Event from a backend: ("chunk", partition index, (seq, start, end, passed_through), chunk)
# or ("done", partition index, None, info). For each partition, its chunks in order, then
# its "done"; with ordered=True, partitions in input order.
Event = Tuple[str, int, Any, Any]

BACKENDS = ("dask", "ray", "spark")

# What each backend needs, and the command that installs it.
_REQUIRES = {
    "dask": (("dask", "distributed"), "pip install 'dask[distributed]'"),
    "ray": (("ray",), "pip install 'ray[data]'"),
    "spark": (("pyspark",), "pip install pyspark  (and a Java 17+ runtime)"),
}


class FrameInput:
    """A DataFrame to run, cut into row ranges (``bounds``). Dask ships ``data`` itself;
    Ray and Spark take :meth:`arrow` (the rows as Arrow plus ROW_COLUMN, each row's
    position) into their own DataFrames."""

    def __init__(self, data: Any, bounds: List[Tuple[int, int]], range_index: Optional[Tuple[int, int, Any]]):
        self.data = data
        self.bounds = bounds
        self.range_index = range_index
        """``(start, step, name)`` of a pandas RangeIndex, given back to pandas chunks."""

    def arrow(self) -> pa.Table:
        data = self.data
        if isinstance(data, pa.Table):
            table = data
        elif hasattr(data, "iloc"):
            # The RangeIndex is put back from the row positions; any other index travels
            # as pyarrow's index column.
            table = pa.Table.from_pandas(data, preserve_index=False if self.range_index else True)
        else:
            table = data.to_arrow()
        return table.append_column(ROW_COLUMN, pa.array(np.arange(table.num_rows, dtype=np.int64)))

    def pieces(self) -> List[pa.Table]:
        table = self.arrow()
        return [table.slice(a, b - a) for a, b in self.bounds]


def partition_error(error: BaseException) -> Optional[PartitionFailed]:
    """The PartitionFailed a backend's own exception carries (as text, from Ray or Spark)."""
    if isinstance(error, PartitionFailed):
        return error
    text = str(error)
    # The traceback's last line names the exception ("...PartitionFailed: sluice partition
    # ..."); source lines quoted above it may hold the marker too.
    match = re.search(r"PartitionFailed: (" + re.escape(PartitionFailed.MARKER) + r"[^\n]*)", text)
    if match is None:
        return None
    return PartitionFailed(match.group(1).strip())


class Backend:
    """The interface: where tasks run and how their events come back.

    ``cluster`` is the caller's own (a Dask ``Client`` or scheduler address, a Ray address,
    a ``SparkSession`` or master URL); ``None`` uses the one the caller already has in this
    process (Dask's current client, Spark's session, an initialized Ray), else starts a
    local cluster of ``num_workers`` worker processes on first use, stopped by
    :meth:`close`. What the caller made is never closed.
    """

    name = ""

    def __init__(self, cluster: Any = None, num_workers: Optional[int] = None):
        self.cluster = cluster
        self.num_workers = num_workers

    def parallelism(self) -> int:
        """How many tasks the cluster runs at once (to choose a partition count)."""
        raise NotImplementedError

    def run_frame(self, runner: PartitionRunner, frame: FrameInput, ordered: bool) -> Iterator[Event]:
        """Runs a DataFrame (pandas, Polars or a pyarrow Table) on the cluster."""
        raise NotImplementedError

    def run_partitions(self, runner: PartitionRunner, partitions: List[Partition], ordered: bool) -> Iterator[Event]:
        """Runs partitions that carry their own input (files) on the cluster."""
        raise NotImplementedError

    def accepts(self, data: Any) -> bool:
        """Whether ``data`` is this engine's own DataFrame (run by :meth:`run_native`)."""
        return False

    def run_native(self, runner: PartitionRunner, data: Any, ordered: bool) -> Iterator[Event]:
        """Runs the engine's own DataFrame, partition by partition as the engine cut it
        (partitions ``p<number>``; their rows' absolute positions are counted in order)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Stops the local cluster this backend started (the caller's is left alone)."""


def check_available(name: str) -> None:
    """Raises a clear ImportError naming the ``pip install`` when ``name``'s packages are
    missing (so a pipeline fails at construction, not in its first run)."""
    modules, command = _REQUIRES[name]
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ImportError(
                f"distributed_backend={name!r} needs the {module!r} package, which is not installed: {command}"
            )


def open_backend(name: str, cluster: Any = None, num_workers: Optional[int] = None) -> Backend:
    """The backend called ``name`` (nothing starts until its first run)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown distributed_backend {name!r}; expected one of {BACKENDS}")
    check_available(name)
    module = importlib.import_module(f"{__name__}.{name}")
    return module.BACKEND(cluster, num_workers)


__all__ = [
    "BACKENDS",
    "Backend",
    "Event",
    "FrameInput",
    "PartitionFailed",
    "check_available",
    "open_backend",
    "partition_error",
]
