#!/usr/bin/env python3
"""Generate the seed's benchmark dataset as CSV and Parquet, in bounded memory.

The data is the seed's `create_large_dataset` (seed/streaming_pipeline.md):
feature_1..3 float64 from randn, category in {A, B, C}, target int 0/1. Rows are
produced in blocks (~1M rows) from a seeded generator and appended to a pyarrow CSV
writer and a Parquet writer (row groups of 100k rows), so memory stays at one block
whatever the file size, and the CSV and the Parquet file hold the same rows.

Two modes:

    python bench/gen_data.py --rows 10000000 --out-dir bench/data
        -> bench/data/seed_10000000.csv and .parquet (reused if already complete)
    python bench/gen_data.py --csv-bytes 2200000000 big.csv
        -> big.csv of at least that many bytes, and big.parquet with the same rows

Files are written under a temporary name and renamed when complete, so a file that
exists under its final name is whole.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

SEED = 42
BLOCK_ROWS = 1_000_000
ROW_GROUP_ROWS = 100_000
CATEGORIES = np.array(["A", "B", "C"])

SCHEMA = pa.schema(
    [
        ("feature_1", pa.float64()),
        ("feature_2", pa.float64()),
        ("feature_3", pa.float64()),
        ("category", pa.string()),
        ("target", pa.int64()),
    ]
)


def blocks(seed: int = SEED):
    """Endless stream of BLOCK_ROWS-row tables; block i depends only on (seed, i), so
    any prefix of the stream is the same whichever file is being written."""
    i = 0
    while True:
        rng = np.random.default_rng([seed, i])
        n = BLOCK_ROWS
        yield pa.table(
            {
                "feature_1": rng.standard_normal(n),
                "feature_2": rng.standard_normal(n),
                "feature_3": rng.standard_normal(n),
                "category": CATEGORIES[rng.integers(0, 3, n)],
                "target": rng.integers(0, 2, n, dtype=np.int64),
            },
            schema=SCHEMA,
        )
        i += 1


def csv_rows(path: Path) -> int:
    """Data rows in a CSV (newlines minus the header); a streaming count, ~1 s/GB."""
    lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            lines += chunk.count(b"\n")
    return max(lines - 1, 0)


def parquet_rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


class _Writers:
    """The CSV and/or Parquet writer for one dataset, writing to temporary names."""

    def __init__(self, csv_path: Path | None, parquet_path: Path | None):
        self.targets = [p for p in (csv_path, parquet_path) if p is not None]
        self.tmp = {p: p.with_name(p.name + ".tmp") for p in self.targets}
        self.csv = self.csv_sink = None
        if csv_path:
            # Plain CSV as pandas' to_csv writes it (`B,1`, bare header), not pyarrow's
            # default of quoting every string and header name.
            self.csv_sink = pa.OSFile(str(self.tmp[csv_path]), "wb")
            self.csv_sink.write((",".join(SCHEMA.names) + "\n").encode())
            opts = pacsv.WriteOptions(include_header=False, quoting_style="none")
            self.csv = pacsv.CSVWriter(self.csv_sink, SCHEMA, write_options=opts)
        self.pq = pq.ParquetWriter(str(self.tmp[parquet_path]), SCHEMA) if parquet_path else None
        self.csv_path = csv_path

    def write(self, table: pa.Table) -> None:
        if self.csv:
            self.csv.write_table(table)
        if self.pq:
            self.pq.write_table(table, row_group_size=ROW_GROUP_ROWS)

    def csv_bytes_so_far(self) -> int:
        return self.tmp[self.csv_path].stat().st_size if self.csv_path else 0

    def finish(self) -> None:
        if self.csv:
            self.csv.close()
            self.csv_sink.close()
        if self.pq:
            self.pq.close()
        for p in self.targets:
            os.replace(self.tmp[p], p)


def ensure_rows(rows: int, out_dir: Path, log=print) -> tuple[Path, Path]:
    """Make seed_<rows>.csv/.parquet in out_dir, reusing whichever is already complete."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"seed_{rows}.csv"
    pq_path = out_dir / f"seed_{rows}.parquet"
    need_csv = not (csv_path.exists() and csv_rows(csv_path) == rows)
    need_pq = not (pq_path.exists() and parquet_rows(pq_path) == rows)
    if not (need_csv or need_pq):
        log(f"reusing {csv_path} and {pq_path} ({rows:,} rows)")
        return csv_path, pq_path
    log(f"generating {rows:,} rows -> " + ", ".join(str(p) for p, n in ((csv_path, need_csv), (pq_path, need_pq)) if n))
    w = _Writers(csv_path if need_csv else None, pq_path if need_pq else None)
    left = rows
    for block in blocks():
        if left <= 0:
            break
        part = block.slice(0, min(left, block.num_rows))
        w.write(part)
        left -= part.num_rows
    w.finish()
    return csv_path, pq_path


def ensure_csv_bytes(min_bytes: int, csv_path: Path, log=print) -> tuple[Path, Path, int]:
    """Write csv_path of at least min_bytes (whole blocks) and the same rows as Parquet."""
    pq_path = csv_path.with_suffix(".parquet")
    if csv_path.exists() and pq_path.exists() and csv_path.stat().st_size >= min_bytes:
        rows = parquet_rows(pq_path)
        if csv_rows(csv_path) == rows:
            log(f"reusing {csv_path} ({csv_path.stat().st_size:,} bytes, {rows:,} rows)")
            return csv_path, pq_path, rows
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    log(f"generating >= {min_bytes:,} bytes of CSV -> {csv_path}, {pq_path}")
    w = _Writers(csv_path, pq_path)
    rows = 0
    for block in blocks():
        w.write(block)
        rows += block.num_rows
        if w.csv_bytes_so_far() >= min_bytes:
            break
    w.finish()
    log(f"wrote {rows:,} rows, {csv_path.stat().st_size:,} bytes of CSV")
    return csv_path, pq_path, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, help="rows to generate (CSV + Parquet into --out-dir)")
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "data")
    ap.add_argument("--csv-bytes", type=int, help="generate a CSV of at least this many bytes")
    ap.add_argument("csv_path", nargs="?", type=Path, help="output CSV path for --csv-bytes")
    a = ap.parse_args(argv)
    if a.csv_bytes is not None:
        if a.csv_path is None:
            ap.error("--csv-bytes needs an output CSV path")
        ensure_csv_bytes(a.csv_bytes, a.csv_path)
    elif a.rows is not None:
        ensure_rows(a.rows, a.out_dir)
    else:
        ap.error("give --rows N or --csv-bytes B PATH")
    return 0


if __name__ == "__main__":
    sys.exit(main())
