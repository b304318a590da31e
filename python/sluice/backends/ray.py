"""Ray: Ray Data. A DataFrame becomes ``ray.data.from_arrow`` blocks (one per partition),
files become one item per partition, and ``map_batches(..., batch_format="pyarrow")``
runs the sluice engine per block in Ray's worker processes; the output comes back as
Arrow through the object store, in input order unless ``ordered=False``. A Dataset of
the caller's (``ray.data.read_parquet``...) runs one Ray task per block.

A Ray the caller already initialized (``ray.is_initialized()``) is used and left as it was:
not shut down, its Ray Data settings (``DataContext``) untouched (sluice's settings go into
its own Datasets only). Otherwise, without an address, sluice connects to the Ray cluster
``ray.init()`` finds (``RAY_ADDRESS``, a ``ray start`` on this machine) or starts a local
Ray with ``num_workers`` CPUs, on first use; ``close()`` disconnects from it or shuts it down.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from typing import Any, Iterator, List, Optional

import pyarrow as pa

from . import Backend, Event, FrameInput, partition_error
from ._task import Partition, PartitionRunner, from_records, piece_of_rows, to_records


class _FrameBlocks:
    """The map_batches function over blocks of input rows (carrying ROW_COLUMN)."""

    def __init__(self, runner: PartitionRunner, frame: FrameInput):
        self.runner = runner
        self.range_index = frame.range_index
        self.starts = [a for a, _ in frame.bounds]

    def __call__(self, block: pa.Table) -> Iterator[pa.Table]:
        partition, data = piece_of_rows(block, self.runner.chunk_format, self.range_index, self.starts)
        for batch in to_records(partition.index, self.runner.run(partition, data)):
            yield pa.Table.from_batches([batch])


class _FileItems:
    """The map_batches function over pickled file partitions (one per batch)."""

    def __init__(self, runner: PartitionRunner):
        self.runner = runner

    def __call__(self, items: pa.Table) -> Iterator[pa.Table]:
        for spec in items.column("partition").to_pylist():
            partition: Partition = pickle.loads(spec)
            for batch in to_records(partition.index, self.runner.run(partition)):
                yield pa.Table.from_batches([batch])


def _run_block(runner: PartitionRunner, partition: Partition, block: Any) -> pa.Table:
    """A Ray task over one block of the caller's Dataset: its events as one Arrow table."""
    if isinstance(block, pa.Table) and runner.chunk_format == "pandas":
        block = block.to_pandas()
    batches = list(to_records(partition.index, runner.run(partition, block)))
    return pa.Table.from_batches(batches)


def _connection(ray: Any) -> Any:
    """Which Ray this process is connected to: the driver's job on its node (a new local
    Ray numbers its jobs from 1 again; its node is new)."""
    context = ray.get_runtime_context()
    try:
        node = context.get_node_id()
    except Exception:
        node = None
    return (context.get_job_id(), node)


class RayBackend(Backend):
    name = "ray"

    def __init__(self, cluster: Any = None, num_workers: Optional[int] = None):
        super().__init__(cluster, num_workers)
        self._started = None  # the identity (_connection) of the Ray sluice initialized, if any

    def _ray(self) -> Any:
        import ray

        if self._started is not None and not self._ours(ray):
            self._started = None  # shut down by someone else; a Ray now running is theirs

        # A Ray the caller initialized is theirs: used, never shut down here.
        if not ray.is_initialized():
            if self.cluster is not None:
                ray.init(address=self.cluster, logging_level="warning")
            else:
                try:
                    ray.init(
                        num_cpus=self.num_workers or os.cpu_count() or 1,
                        include_dashboard=False,
                        logging_level="warning",
                    )
                except ValueError as e:
                    # ray.init() found a running cluster (RAY_ADDRESS, `ray start`): join
                    # it as it is (it refuses num_cpus); close() only disconnects.
                    if "existing cluster" not in str(e):
                        raise
                    ray.init(logging_level="warning")
            self._started = _connection(ray)
        return ray

    def _ours(self, ray: Any) -> bool:
        return ray.is_initialized() and _connection(ray) == self._started

    def parallelism(self) -> int:
        return max(1, int(self._ray().cluster_resources().get("CPU", 1)))

    @contextlib.contextmanager
    def _dataset_context(self, ordered: bool) -> Iterator[None]:
        """sluice's Ray Data settings, for the Datasets made inside (each keeps a copy of
        the context it was made with); the caller's own settings are put back after."""
        import ray.data

        ctx = ray.data.DataContext.get_current()
        before = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
        ctx.execution_options.preserve_order = ordered
        # sluice shows its own progress and errors; Ray's bars would interleave with them.
        ctx.enable_progress_bars = False
        try:
            yield
        finally:
            ctx.execution_options.preserve_order, ctx.enable_progress_bars = before

    def run_frame(self, runner, frame, ordered) -> Iterator[Event]:
        self._ray()
        import ray.data

        with self._dataset_context(ordered):
            ds = ray.data.from_arrow(frame.pieces())
            out = ds.map_batches(
                _FrameBlocks(runner, frame), batch_format="pyarrow", batch_size=None, zero_copy_batch=True
            )
        return self._events(out, runner.chunk_format)

    def run_partitions(self, runner, partitions, ordered) -> Iterator[Event]:
        self._ray()
        import ray.data

        items = [{"partition": pickle.dumps(p)} for p in partitions]
        with self._dataset_context(ordered):
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            out = ds.map_batches(_FileItems(runner), batch_format="pyarrow", batch_size=1)
        return self._events(out, runner.chunk_format)

    def accepts(self, data: Any) -> bool:
        return type(data).__module__.startswith("ray.data") and hasattr(data, "to_arrow_refs")

    def run_native(self, runner, data, ordered) -> Iterator[Event]:
        ray = self._ray()
        task = ray.remote(_run_block)
        # One task per block of the caller's Dataset (e.g. ray.data.read_parquet), named by
        # its position; the blocks stay in the object store, the tasks run beside them.
        refs = [
            task.remote(runner, Partition(index=i, key=f"p{i:05d}", describe=f"Ray block {i}"), block)
            for i, block in enumerate(data.to_arrow_refs())
        ]
        return self._task_events(ray, refs, ordered, runner.chunk_format)

    def _task_events(self, ray: Any, refs: List[Any], ordered: bool, chunk_format: str) -> Iterator[Event]:
        pending = list(refs)
        try:
            while pending:
                if ordered:
                    ref = pending.pop(0)
                else:
                    (ref,), pending = ray.wait(pending, num_returns=1)
                yield from from_records(ray.get(ref), chunk_format)
        except Exception as e:
            failed = partition_error(e)
            if failed is None:
                raise
            raise failed from e
        finally:
            for ref in pending:
                ray.cancel(ref)

    def _events(self, out: Any, chunk_format: str) -> Iterator[Event]:
        try:
            for batch in out.iter_batches(batch_format="pyarrow", batch_size=None):
                yield from from_records(batch, chunk_format)
        except Exception as e:
            failed = partition_error(e)
            if failed is None:
                raise
            raise failed from e

    def describe(self) -> str:
        import ray

        if not ray.is_initialized():
            return "ray (not started)"
        return f"ray {self.cluster or 'local'} ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"

    def close(self) -> None:
        # Only a Ray sluice initialized (shut down, or disconnected from a cluster it joined),
        # and only while it is still that one.
        if self._started is not None:
            import ray

            if self._ours(ray):
                ray.shutdown()
            self._started = None


BACKEND = RayBackend
