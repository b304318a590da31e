"""Spark: ``mapInArrow`` on a session DataFrame of the partitions. A DataFrame's partitions
travel as Arrow IPC, one per Spark partition and in input order (no shuffle, no sort, which
``createDataFrame`` plus a range repartition would cost); files travel as one row per
partition. Each Spark task runs the sluice engine over its partition in a PySpark worker
process, and the output comes back to the driver as Arrow (``toLocalIterator``, partition
by partition, in partition order: ``ordered=False`` changes nothing here).

Without a session, a ``local[num_workers]`` session is started on first use and stopped by
``close()``. Spark needs Java 17+ (``JAVA_HOME`` or ``java`` on the PATH).
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any, Iterator, Optional

import pyarrow as pa

from . import Backend, Event, FrameInput, partition_error
from ._task import (
    RECORD_DDL,
    RECORD_SCHEMA,
    Partition,
    PartitionRunner,
    decode_table,
    encode_table,
    from_records,
    piece_of_rows,
    to_records,
)


class _FileTask:
    """The mapInArrow function over rows of pickled file partitions."""

    def __init__(self, runner: PartitionRunner):
        self.runner = runner

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for spec in batch.column(0).to_pylist():
                partition: Partition = pickle.loads(spec)
                yield from to_records(partition.index, self.runner.run(partition))


class SparkBackend(Backend):
    name = "spark"

    def __init__(self, cluster: Any = None, num_workers: Optional[int] = None):
        super().__init__(cluster, num_workers)
        self._session = None
        self._started = False

    @property
    def session(self) -> Any:
        if self._session is None:
            from pyspark.sql import SparkSession

            if self.cluster is None or isinstance(self.cluster, str):
                master = self.cluster or f"local[{self.num_workers or os.cpu_count() or 1}]"
                had_one = SparkSession.getActiveSession() is not None
                self._session = (
                    SparkSession.builder.master(master)
                    .appName("sluice")
                    .config("spark.ui.enabled", "false")
                    .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                    # The workers run the interpreter (and the sluice wheel) the driver runs.
                    .config("spark.pyspark.python", sys.executable)
                    .config("spark.pyspark.driver.python", sys.executable)
                    .getOrCreate()
                )
                self._started = not had_one
            else:
                self._session = self.cluster
        return self._session

    def parallelism(self) -> int:
        return max(1, int(self.session.sparkContext.defaultParallelism))

    def run_frame(self, runner, frame, ordered) -> Iterator[Event]:
        spark = self.session
        # One Spark partition per planned piece, in order: the pieces are Arrow IPC, read
        # back as the partitions' rows by a first mapInArrow (no shuffle, no row sort).
        pieces = frame.pieces()
        rdd = spark.sparkContext.parallelize([(encode_table(p),) for p in pieces], len(pieces))
        rows = spark.createDataFrame(rdd, "piece binary")
        out = rows.mapInArrow(_PieceTask(runner, frame), RECORD_DDL)
        return self._events(out, runner.chunk_format)

    def run_partitions(self, runner, partitions, ordered) -> Iterator[Event]:
        spark = self.session
        specs = [(pickle.dumps(p),) for p in partitions]
        rdd = spark.sparkContext.parallelize(specs, len(specs))
        rows = spark.createDataFrame(rdd, "partition binary")
        out = rows.mapInArrow(_FileTask(runner), RECORD_DDL)
        return self._events(out, runner.chunk_format)

    def accepts(self, data: Any) -> bool:
        return type(data).__module__.startswith("pyspark.sql") and hasattr(data, "mapInArrow")

    def run_native(self, runner, data, ordered) -> Iterator[Event]:
        out = data.mapInArrow(_SparkPartitionTask(runner), RECORD_DDL)
        return self._events(out, runner.chunk_format)

    def _events(self, out: Any, chunk_format: str) -> Iterator[Event]:
        try:
            for row in out.toLocalIterator(prefetchPartitions=True):
                batch = pa.RecordBatch.from_pylist([row.asDict()], schema=RECORD_SCHEMA)
                yield from from_records(batch, chunk_format)
        except Exception as e:
            failed = partition_error(e)
            if failed is None:
                raise
            raise failed from e

    def describe(self) -> str:
        if self._session is None:
            return "spark (not started)"
        return f"spark {self._session.sparkContext.master}"

    def close(self) -> None:
        if self._started and self._session is not None:
            self._session.stop()
        self._session = None
        self._started = False


class _PieceTask:
    """The mapInArrow function over pieces of input rows shipped as Arrow IPC."""

    def __init__(self, runner: PartitionRunner, frame: FrameInput):
        self.runner = runner
        self.range_index = frame.range_index
        self.starts = [a for a, _ in frame.bounds]

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for payload in batch.column(0):
                table = decode_table(payload.as_buffer())
                partition, data = piece_of_rows(table, self.runner.chunk_format, self.range_index, self.starts)
                yield from to_records(partition.index, self.runner.run(partition, data))


class _SparkPartitionTask:
    """The mapInArrow function over a partition of the caller's own Spark DataFrame (e.g.
    ``spark.read.parquet``), named by Spark's partition id (the same on a retry)."""

    def __init__(self, runner: PartitionRunner):
        self.runner = runner

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        batches = list(batches)
        if not batches:
            return
        number = TaskContext.get().partitionId()
        table = pa.Table.from_batches(batches)
        data = table.to_pandas() if self.runner.chunk_format == "pandas" else table
        partition = Partition(index=number, key=f"p{number:05d}", describe=f"Spark partition {number}", rows=table.num_rows)
        yield from to_records(number, self.runner.run(partition, data))


BACKEND = SparkBackend
