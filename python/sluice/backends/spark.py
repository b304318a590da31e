"""Spark: ``mapInArrow`` on a session DataFrame of the partitions. A DataFrame's partitions
travel as Arrow IPC, one per Spark partition and in input order (no shuffle, no sort, which
``createDataFrame`` plus a range repartition would cost); files travel as one row per
partition. Each Spark task runs the sluice engine over its partition in a PySpark worker
process, and the output comes back to the driver as Arrow (``toLocalIterator``, partition
by partition, in partition order: ``ordered=False`` changes nothing here).

Without ``cluster=``, the session the caller already has is used (the thread's active
session, else the one the builder's ``getOrCreate()`` would give back) and is left as it
was: not stopped, its settings untouched. Only when there is none, a ``local[num_workers]``
session is started on first use and stopped by ``close()``; its Python workers run the
driver's own interpreter (``sys.executable``, so a virtualenv's python works without
activating the venv) unless ``PYSPARK_PYTHON`` says otherwise. Spark needs Java 17+
(``JAVA_HOME`` or ``java`` on the PATH).
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


def _running(session: Any) -> bool:
    sc = getattr(session, "_sc", None)
    return sc is not None and getattr(sc, "_jsc", None) is not None


def _current_session() -> Any:
    """The session the caller already has, or None: this thread's active session, else
    the default one (what ``SparkSession.active()`` gives, Spark 3.5+; a session made in
    another thread is not "active" in this one)."""
    from pyspark.sql import SparkSession

    for session in (SparkSession.getActiveSession(), getattr(SparkSession, "_instantiatedSession", None)):
        if session is not None and _running(session):
            return session
    return None


class SparkBackend(Backend):
    name = "spark"

    def __init__(self, cluster: Any = None, num_workers: Optional[int] = None):
        super().__init__(cluster, num_workers)
        self._session = None
        self._started = False

    @property
    def session(self) -> Any:
        given = self.cluster is not None and not isinstance(self.cluster, str)
        if self._session is not None and not given and not _running(self._session):
            # Stopped under us (the caller's, or ours by someone else): find or start anew.
            self._session = None
            self._started = False
        if self._session is None:
            if given:
                self._session = self.cluster
                return self._session
            master = self.cluster or f"local[{self.num_workers or os.cpu_count() or 1}]"
            found = _current_session()
            if found is None:
                self._session = self._start(master)
                self._started = True
            elif self.cluster is None or found.sparkContext.master == self.cluster:
                self._session = found  # the caller's: never stopped or changed here
            else:
                raise RuntimeError(
                    f"cluster={self.cluster!r}, but this process already runs a Spark session on "
                    f"{found.sparkContext.master!r} (Spark allows one per process): pass that "
                    "session as cluster=, or stop it first"
                )
        return self._session

    def _start(self, master: str) -> Any:
        from pyspark.sql import SparkSession

        builder = (
            SparkSession.builder.master(master)
            .appName("sluice")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        )
        if not master.startswith("local"):
            return builder.getOrCreate()
        # A local session's Python workers run the driver's interpreter (and the sluice
        # it imported). PySpark takes the workers' python from PYSPARK_PYTHON when the
        # SparkContext starts (else `python3` from the PATH, which may be another Python);
        # set for that moment only, unless the caller chose one.
        builder = builder.config("spark.pyspark.python", os.environ.get("PYSPARK_PYTHON") or sys.executable)
        if os.environ.get("PYSPARK_PYTHON"):
            return builder.getOrCreate()
        os.environ["PYSPARK_PYTHON"] = sys.executable
        try:
            return builder.getOrCreate()
        finally:
            os.environ.pop("PYSPARK_PYTHON", None)

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
        # Only a session sluice started; the caller's (cluster= or their own active or
        # default session) is left running.
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
