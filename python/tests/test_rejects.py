"""Malformed records of an input file (a value that does not parse, a wrong number of
fields) under ``on_error``: 'skip' sets them aside and counts them, 'dead_letter' also
writes each one (file, line, raw text, cause) to the folder, and 'fail' (the default)
stops naming the file and the line. Every good row comes out once, in order."""

import json

import pytest

from sluice import StreamingDataPipeline

GOOD = 12_000
BAD = {11_000: "x11000,a number that is not", 11_500: "11500,one,field too many", 11_999: "11999"}


@pytest.fixture
def bad_csv(tmp_path):
    """12 000 good rows; three malformed lines after the schema inference sample. Returns
    the path and the (line, raw text, position) of each bad line."""
    lines, bad, line = ["id,name"], [], 2
    for i in range(GOOD):
        if i in BAD:
            lines.append(BAD[i])
            bad.append((line, BAD[i], i))
            line += 1
        lines.append(f"{i},name {i}")
        line += 1
    path = tmp_path / "in.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, bad


def ids_of(pipeline, path):
    ids = []
    for chunk in pipeline.process_file_stream(str(path), lambda df: df):
        ids.extend(int(v) for v in chunk["id"])
    return ids


def test_skip_sets_bad_lines_aside_and_counts_them(bad_csv):
    path, bad = bad_csv
    pipeline = StreamingDataPipeline(chunk_size=1_000, on_error="skip")
    assert ids_of(pipeline, path) == list(range(GOOD))
    stats = pipeline.get_stats()
    assert stats.rejected_rows == len(bad)
    assert stats.failed_rows == 0
    assert stats.total_rows_processed == GOOD


def test_dead_letter_writes_each_bad_line(bad_csv, tmp_path):
    path, bad = bad_csv
    folder = tmp_path / "letters"
    pipeline = StreamingDataPipeline(chunk_size=1_000, on_error=f"dead_letter:{folder}")
    assert ids_of(pipeline, path) == list(range(GOOD))
    assert pipeline.get_stats().rejected_rows == len(bad)
    records = [
        json.loads(line)
        for f in sorted(folder.glob("rejects-*.ndjson"))
        for line in f.read_text().splitlines()
    ]
    assert [(r["line"], r["raw"], r["position"]) for r in records] == bad
    assert all(r["file"].endswith("in.csv") and r["cause"] for r in records)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in folder.glob("rejects-*.ndjson"))


def test_fail_names_the_file_and_the_line(bad_csv):
    path, bad = bad_csv
    pipeline = StreamingDataPipeline(chunk_size=1_000)
    with pytest.raises(ValueError, match=f"in.csv: line {bad[0][0]}"):
        ids_of(pipeline, path)
