"""The checks every distributed backend must pass (test_backend_{dask,ray,spark}.py run
them on a module-wide local cluster of 2 worker processes): the same rows, in order, with
the same values as the single-machine pipeline; the function ran in the workers; exact
merged stats; a failing partition raises in the driver naming it; a task run twice
replaces its parts instead of adding copies; files (Parquet, CSV) and SQL too."""

import glob
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import sluice
from sluice import StreamingDataPipeline
from sluice.backends import FrameInput
from conftest import small_frame


def row_wise(chunk):
    """Per row only (so any chunking gives the same values) and it records its process."""
    return chunk.assign(
        feature_sum=chunk["feature_1"] + chunk["feature_2"] + chunk["feature_3"],
        label=chunk["category"] + "-" + chunk["target"].astype(str),
        pid=os.getpid(),
    )


def fails_on_row(row):
    def function(chunk):
        if ((chunk.index == row)).any():
            raise ValueError(f"bad value at row {row}")
        return chunk.assign(y=chunk["feature_1"] * 2)

    return function


def fails_on_rows(*rows):
    def function(chunk):
        if chunk.index.isin(rows).any():
            raise ValueError("bad value")
        return chunk

    return function


def times_two_arrow(table):
    import pyarrow.compute as pc

    return table.append_column("y", pc.multiply(table["feature_1"], 2))


def doubled(chunk):
    return chunk.assign(y=chunk["feature_1"] * 2)


class DistributedCases:
    backend = ""

    def pipeline(self, cluster, **kwargs):
        kwargs.setdefault("chunk_size", 20_000)
        kwargs.setdefault("num_workers", 2)
        return StreamingDataPipeline(enable_distributed=True, distributed_backend=self.backend, cluster=cluster, **kwargs)

    def test_million_rows_match_the_single_machine_pipeline(self, cluster):
        df = small_frame(1_000_000, seed=3)
        local = StreamingDataPipeline(chunk_size=20_000, num_workers=2)
        expected = pd.concat(list(local.process_dataframe_stream(df, row_wise)))
        assert set(expected["pid"]) == {os.getpid()}

        p = self.pipeline(cluster, partitions=6)
        chunks = list(p.process_dataframe_stream(df, row_wise))
        got = pd.concat(chunks)
        # Same rows, in order, same values and index; only the process differs.
        pd.testing.assert_frame_equal(got.drop(columns="pid"), expected.drop(columns="pid"))
        pids = set(got["pid"])
        assert os.getpid() not in pids
        stats = p.get_stats()
        assert stats.total_rows_processed == 1_000_000
        assert stats.total_chunks_processed == len(chunks)
        assert stats.errors_encountered == 0
        assert stats.latency_p50_ms > 0 and stats.latency_p50_ms <= stats.latency_p99_ms <= stats.latency_max_ms
        perf = p.get_performance_stats()["distributed"]
        assert perf["partitions"] == 6
        workers = perf["workers"]
        # One line per worker process that ran a task, and they are the pids the function saw.
        assert {int(w["worker"].rsplit(":", 1)[1]) for w in workers} == pids
        assert sum(w["rows"] for w in workers) == 1_000_000
        assert stats.memory_peak_mb == max(w["memory_peak_mb"] for w in workers) > 0
        p.cleanup()

    def test_failing_partition_raises_in_the_driver_naming_it(self, cluster):
        df = small_frame(100_000)
        p = self.pipeline(cluster, chunk_size=5_000, partitions=4)
        with pytest.raises(sluice.PartitionError) as caught:
            for _ in p.process_dataframe_stream(df, fails_on_row(60_123)):
                pass
        message = str(caught.value)
        assert "bad value at row 60123" in message
        assert "ValueError" in message
        # The third of four partitions of 25,000 rows holds row 60,123.
        assert "partition 2 (rows 50000..75000)" in message
        assert "failed on worker" in message
        p.cleanup()

    def test_on_error_skip_applies_in_the_workers(self, cluster):
        df = small_frame(40_000)
        p = self.pipeline(cluster, chunk_size=5_000, partitions=2, on_error="skip", adaptive_batching=False)
        chunks = list(p.process_dataframe_stream(df, fails_on_row(12_345), with_info=True))
        # with_info: numbered at the driver, input rows absolute; the failed chunk's are gone.
        assert [c.chunk for c in chunks] == list(range(7))
        assert [c.input_rows for c in chunks] == [(a, a + 5_000) for a in range(0, 40_000, 5_000) if a != 10_000]
        got = pd.concat(c.data for c in chunks)
        assert len(got) == 35_000
        assert not ((got.index >= 10_000) & (got.index < 15_000)).any()
        stats = p.get_stats()
        assert stats.failed_chunks == 1 and stats.failed_rows == 5_000 and stats.errors_encountered == 1
        p.cleanup()

    def test_unordered_arrow_chunks(self, cluster):
        df = small_frame(50_000)
        table = pa.Table.from_pandas(df, preserve_index=False)
        p = self.pipeline(cluster, chunk_size=5_000, partitions=5, ordered=False, chunk_format="arrow")
        chunks = list(p.process_dataframe_stream(table, times_two_arrow, with_info=True))
        assert all(isinstance(c.data, pa.Table) for c in chunks)
        # Every row exactly once, whatever order the partitions finished in.
        got = sorted(chunks, key=lambda c: c.input_rows)
        assert [c.input_rows[0] for c in got][0] == 0
        assert all(a.input_rows[1] == b.input_rows[0] for a, b in zip(got, got[1:]))
        assert got[-1].input_rows[1] == 50_000
        joined = pa.concat_tables(c.data for c in got)
        np.testing.assert_array_equal(joined.column("y").to_numpy(), df["feature_1"].to_numpy() * 2)
        assert p.get_stats().total_rows_processed == 50_000
        p.cleanup()

    def test_earlier_output_is_refused_unless_overwrite(self, cluster, tmp_path):
        # As on one machine: a folder holding a run's output is never mixed with or
        # silently replaced by another run's.
        df = small_frame(20_000)
        out = tmp_path / "out"
        p = self.pipeline(cluster, chunk_size=5_000, partitions=2)
        first = p.process_dataframe_stream(df, doubled, output_path=out).run_to_end()
        assert first["status"] == "complete" and first["total_rows"] == 20_000
        before = sorted(os.listdir(out))
        with pytest.raises(FileExistsError, match="overwrite=True"):
            p.process_dataframe_stream(df.iloc[:5_000], doubled, output_path=out).run_to_end()
        assert sorted(os.listdir(out)) == before
        assert json.loads((out / "_manifest.json").read_text())["total_rows"] == 20_000
        second = p.process_dataframe_stream(df.iloc[:5_000], doubled, output_path=out, overwrite=True).run_to_end()
        assert second["status"] == "complete" and second["total_rows"] == 5_000
        files = sorted(f for f in os.listdir(out) if f.startswith("part-"))
        assert files == sorted(part["file"] for part in second["parts"])
        written = pd.concat(pq.read_table(out / f).to_pandas() for f in files)
        pd.testing.assert_frame_equal(written.reset_index(drop=True), doubled(df.iloc[:5_000]).reset_index(drop=True))
        p.cleanup()

    def test_global_windows_are_refused_naming_the_limitation(self, cluster, tmp_path):
        # Each task sees its partition only: per-partition values would be silently wrong.
        df = small_frame(2_000)
        path = tmp_path / "data.parquet"
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
        sql = "SELECT feature_1 - AVG(feature_1) OVER () AS centred FROM chunk"
        p = self.pipeline(cluster, chunk_size=500)
        with pytest.raises(NotImplementedError, match="does not run distributed"):
            p.process_dataframe_stream(df, sql=sql, sql_windows="global")
        with pytest.raises(NotImplementedError, match="whole input"):
            p.process_file_stream(str(path), sql=sql, sql_windows="global", output_path=tmp_path / "out")
        assert not (tmp_path / "out").exists()
        p.cleanup()

    def test_output_files_and_a_task_run_twice_does_not_duplicate(self, cluster, tmp_path):
        df = small_frame(60_000)
        out = tmp_path / "out"
        p = self.pipeline(cluster, chunk_size=5_000, partitions=3, adaptive_batching=False)
        manifest = p.process_dataframe_stream(df, doubled, output_path=out, rows_per_part=10_000).run_to_end()
        assert manifest["status"] == "complete" and manifest["total_rows"] == 60_000
        assert [c["name"] for c in manifest["schema"]][-1] == "y"
        files = sorted(f for f in os.listdir(out) if f.startswith("part-"))
        assert files == sorted(part["file"] for part in manifest["parts"])
        # Named by partition (first row), six parts of 10,000 rows: two per partition.
        assert files[:2] == ["part-r000000000000-00000.parquet", "part-r000000000000-00001.parquet"]
        assert [(pp["input_row_start"], pp["input_row_end"]) for pp in manifest["parts"]] == [
            (i, i + 10_000) for i in range(0, 60_000, 10_000)
        ]
        written = pd.concat(pq.read_table(out / f).to_pandas() for f in files)
        pd.testing.assert_frame_equal(written.reset_index(drop=True), doubled(df).reset_index(drop=True))
        assert json.loads((out / "_manifest.json").read_text()) == manifest

        # The middle partition's task, run again on the cluster: it writes the same names
        # (new files renamed over the old), nothing more.
        second = [f for f in files if f.startswith("part-r000000020000-")]
        before = {f: os.stat(out / f).st_ino for f in second}
        runner = self._runner_of(p, df, out)
        events = list(p._backend.run_frame(runner, FrameInput(df, [(20_000, 40_000)], (0, 1, None)), True))
        (done,) = [e for e in events if e[0] == "done"]
        assert [part["file"] for part in done[3]["parts"]] == second
        assert sorted(f for f in os.listdir(out) if f.startswith("part-")) == files
        assert all(os.stat(out / f).st_ino != before[f] for f in second)
        assert not glob.glob(str(out / ".sluice-staging" / "*"))
        rewritten = pd.concat(pq.read_table(out / f).to_pandas() for f in sorted(os.listdir(out)) if f.startswith("part-"))
        assert len(rewritten) == 60_000
        p.cleanup()

    def _runner_of(self, p, df, out):
        # The runner a run of `p` ships (the same settings, function and output).
        return p._runner(doubled, None, str(out), "parquet", 10_000)

    def test_parquet_and_csv_files(self, cluster, tmp_path):
        df = small_frame(90_000, seed=5)
        for i in range(3):
            piece = pa.Table.from_pandas(df.iloc[i * 30_000 : (i + 1) * 30_000], preserve_index=False)
            pq.write_table(piece, tmp_path / f"data-{i}.parquet", row_group_size=10_000)
            pacsv.write_csv(piece, tmp_path / f"data-{i}.csv")
        local = StreamingDataPipeline(chunk_size=7_000, num_workers=2)
        p = self.pipeline(cluster, chunk_size=7_000, partitions=3)
        for pattern in ("data-*.parquet", "data-*.csv"):
            path = str(tmp_path / pattern)
            expected = pd.concat(list(local.process_file_stream(path, row_wise))).drop(columns="pid")
            got = pd.concat(list(p.process_file_stream(path, row_wise)))
            assert os.getpid() not in set(got["pid"])
            pd.testing.assert_frame_equal(
                got.drop(columns="pid").reset_index(drop=True), expected.reset_index(drop=True)
            )
            assert len(got) == 90_000
        assert p.get_stats().total_rows_processed == 180_000
        assert p.get_performance_stats()["distributed"]["partitions"] == 6  # one per file

        # sql= and output files: one manifest over the three files, absolute input rows.
        out = tmp_path / "out"
        manifest = p.process_file_stream(
            str(tmp_path / "data-*.parquet"), sql="SELECT feature_1 * 2 AS f FROM chunk", output_path=out
        ).run_to_end()
        assert [(x["input_row_start"], x["input_row_end"]) for x in manifest["parts"]] == [
            (0, 30_000),
            (30_000, 60_000),
            (60_000, 90_000),
        ]
        written = pd.concat(pq.read_table(out / x["file"]).to_pandas() for x in manifest["parts"])
        np.testing.assert_allclose(written["f"].to_numpy(), df["feature_1"].to_numpy() * 2)
        p.cleanup()

    def test_one_big_parquet_file_is_cut_by_row_groups(self, cluster, tmp_path):
        df = small_frame(90_000, seed=6)
        path = tmp_path / "big.parquet"
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=10_000)
        p = self.pipeline(cluster, chunk_size=4_000, partitions=3)
        out = tmp_path / "out"
        got = pd.concat(list(p.process_file_stream(str(path), row_wise, output_path=out)))
        expected = pd.concat(list(StreamingDataPipeline(chunk_size=4_000).process_file_stream(str(path), row_wise)))
        pd.testing.assert_frame_equal(
            got.drop(columns="pid").reset_index(drop=True), expected.drop(columns="pid").reset_index(drop=True)
        )
        assert len(set(got["pid"]) - {os.getpid()}) >= 1 and os.getpid() not in set(got["pid"])
        manifest = json.loads((out / "_manifest.json").read_text())
        assert [(x["file"], x["input_row_start"], x["input_row_end"]) for x in manifest["parts"]] == [
            ("part-f00000g00000-00000.parquet", 0, 30_000),
            ("part-f00000g00003-00000.parquet", 30_000, 60_000),
            ("part-f00000g00006-00000.parquet", 60_000, 90_000),
        ]
        assert p.get_stats().total_rows_processed == 90_000
        p.cleanup()

    def test_dead_letters_land_in_one_folder_per_partition(self, cluster, tmp_path):
        df = small_frame(20_000)
        letters = tmp_path / "letters"
        p = self.pipeline(cluster, chunk_size=5_000, partitions=2, adaptive_batching=False, on_error=f"dead_letter:{letters}")
        got = pd.concat(list(p.process_dataframe_stream(df, fails_on_rows(2_000, 12_000))))
        assert len(got) == 10_000
        # Chunk 0 of both partitions failed: each engine names its letters by its own
        # chunk number, so a shared folder would have kept only one of them.
        assert sorted(os.listdir(letters)) == ["r000000000000", "r000000010000"]
        assert os.listdir(letters / "r000000000000") == os.listdir(letters / "r000000010000") != []
        assert p.get_stats().failed_chunks == 2
        p.cleanup()
