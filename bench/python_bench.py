#!/usr/bin/env python3
"""The seed's basic workload from Python: a plain pandas loop vs sluice.

Runs the seed's `data_preprocessing` (seed/streaming_pipeline.md, "Basic Streaming
Processing") over the seed's `create_large_dataset` data (1,000,000 rows by default) in
chunks of the seed's 5000 rows, four ways:

  plain pandas loop      for each 5000-row slice: data_preprocessing(df.iloc[a:b])
  sluice, Python fn      StreamingDataPipeline(chunk_size=5000, adaptive_batching=False,
                         num_workers=None|1|4).process_dataframe_stream(df, data_preprocessing)
  sluice, sql=           the same chunks through examples/seed_preprocessing.sql, in Rust,
                         yielding pandas chunks (and, as a second row, Arrow tables)
  sluice, adaptive       the Python fn with the default adaptive batching (bigger chunks:
                         fewer per-call costs, but per-chunk statistics on other boundaries)

Every variant keeps its output chunks in a list (as the seed's example does) and is
checked: same rows and columns as the plain loop, and equal values chunk by chunk where
the chunk boundaries are the same (the Python fn: exactly; SQL: to 1e-9).

The seed's `time.sleep(0.01)` per chunk is left out by default (it would only measure
sleep: with it, sluice's 4 workers sleep in parallel and win by ~4x); `--with-sleep`
keeps it. Results: a Markdown table on stdout and in bench/PYTHON_RESULTS.md.

    python bench/python_bench.py                 # 1M rows, 5 rounds of every variant, medians
    python bench/python_bench.py --rows 200000 --runs 1 --no-write
    python bench/python_bench.py --profile       # where the Python-fn path spends its time
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SQL_PATH = os.path.join(ROOT, "examples", "seed_preprocessing.sql")
RESULTS = os.path.join(ROOT, "bench", "PYTHON_RESULTS.md")
CHUNK = 5000
SLEEP = False


def create_large_dataset(num_rows=100000, seed=42):
    """The seed's dataset (with a fixed seed)."""
    np.random.seed(seed)
    return pd.DataFrame(
        {
            "feature_1": np.random.randn(num_rows),
            "feature_2": np.random.randn(num_rows),
            "feature_3": np.random.randn(num_rows),
            "category": np.random.choice(["A", "B", "C"], num_rows),
            "target": np.random.randint(0, 2, num_rows),
        }
    )


def data_preprocessing(chunk: pd.DataFrame) -> pd.DataFrame:
    """The seed's function (its sleep only with --with-sleep)."""
    if SLEEP:
        time.sleep(0.01)
    processed = chunk.copy()
    processed["feature_interaction"] = processed["feature_1"] * processed["feature_2"]
    processed["feature_sum"] = processed["feature_1"] + processed["feature_2"] + processed["feature_3"]
    processed = pd.get_dummies(processed, columns=["category"], prefix="cat")
    numeric_columns = ["feature_1", "feature_2", "feature_3", "feature_interaction", "feature_sum"]
    for col in numeric_columns:
        mean_val = processed[col].mean()
        std_val = processed[col].std()
        if std_val > 0:
            processed[col] = (processed[col] - mean_val) / std_val
    return processed


def plain_loop(df):
    return [data_preprocessing(df.iloc[i : i + CHUNK]) for i in range(0, len(df), CHUNK)]


def sluice_fn(df, adaptive=False, workers=4):
    from sluice import StreamingDataPipeline

    p = StreamingDataPipeline(chunk_size=CHUNK, max_memory_mb=500, num_workers=workers, adaptive_batching=adaptive)
    return list(p.process_dataframe_stream(df, data_preprocessing))


def sluice_sql(df, chunk_format="pandas"):
    from sluice import StreamingDataPipeline

    with open(SQL_PATH, encoding="utf-8") as f:
        sql = f.read()
    p = StreamingDataPipeline(
        chunk_size=CHUNK, max_memory_mb=500, num_workers=4, adaptive_batching=False, chunk_format=chunk_format
    )
    return list(p.process_dataframe_stream(df, sql=sql))


def check(name, reference, got, exact):
    """Same rows and columns; values equal chunk by chunk where boundaries match."""
    rows = sum(len(c) for c in got)
    assert rows == sum(len(c) for c in reference), f"{name}: {rows} rows"
    if not isinstance(got[0], pd.DataFrame):
        got = [c.to_pandas() for c in got]
    assert list(got[0].columns) == list(reference[0].columns), f"{name}: columns {list(got[0].columns)}"
    if exact is None:
        return
    for ref, chunk in zip(reference, got):
        if exact:
            pd.testing.assert_frame_equal(chunk, ref)
        else:
            pd.testing.assert_frame_equal(
                chunk.reset_index(drop=True), ref.reset_index(drop=True), check_exact=False, rtol=1e-9
            )


def profile(df):
    """Where the Python-function path's time goes: the user function itself vs the rest."""
    from sluice import StreamingDataPipeline

    calls = []

    def measured(chunk):
        start = time.perf_counter()
        out = data_preprocessing(chunk)
        calls.append(time.perf_counter() - start)
        return out

    for workers in (1, 2, 4):
        calls.clear()
        p = StreamingDataPipeline(chunk_size=CHUNK, max_memory_mb=500, num_workers=workers, adaptive_batching=False)
        start = time.perf_counter()
        n = sum(1 for _ in p.process_dataframe_stream(df, measured))
        wall = time.perf_counter() - start
        print(
            f"workers={workers}: wall {wall:.2f}s, {n} chunks, function {sum(calls):.2f}s "
            f"(mean {1e3 * statistics.mean(calls):.2f} ms/chunk), outside the function {wall - sum(calls):.2f}s"
        )
    calls.clear()
    start = time.perf_counter()
    for i in range(0, len(df), CHUNK):
        measured(df.iloc[i : i + CHUNK])
    wall = time.perf_counter() - start
    print(f"plain loop: wall {wall:.2f}s, function {sum(calls):.2f}s (mean {1e3 * statistics.mean(calls):.2f} ms/chunk)")


def main(argv=None):
    global SLEEP
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--with-sleep", action="store_true", help="keep the seed's time.sleep(0.01) per chunk")
    ap.add_argument("--no-write", action="store_true", help="do not update bench/PYTHON_RESULTS.md")
    ap.add_argument("--profile", action="store_true", help="time the function vs the rest, by worker count")
    args = ap.parse_args(argv)
    SLEEP = args.with_sleep

    import sluice

    df = create_large_dataset(args.rows)
    if args.profile:
        profile(df)
        return

    variants = [
        ("plain pandas loop (chunks of 5000)", lambda: plain_loop(df), None),
        ("sluice, Python function (default: 1 worker a core, fixed chunks)", lambda: sluice_fn(df, workers=None), True),
        ("sluice, Python function (1 worker, fixed chunks)", lambda: sluice_fn(df, workers=1), True),
        ("sluice, Python function (4 workers, fixed chunks)", lambda: sluice_fn(df), True),
        ("sluice, Python function (4 workers, adaptive batching)", lambda: sluice_fn(df, adaptive=True), None),
        ("sluice, sql= (4 workers, fixed chunks) -> pandas", lambda: sluice_sql(df), False),
        ("sluice, sql= (4 workers, fixed chunks) -> Arrow", lambda: sluice_sql(df, "arrow"), False),
    ]
    # Rounds: each runs every variant once, in turn, so a slow spell of this shared machine
    # falls on all of them rather than on whichever variant it came in.
    times = {name: [] for name, _, _ in variants}
    reference = None
    for _ in range(args.runs):
        for name, fn, exact in variants:
            start = time.perf_counter()
            result = fn()
            times[name].append(time.perf_counter() - start)
            if reference is None:
                reference = result
            elif result is not reference:
                check(name, reference, result, exact)
            result = None
    base_times = times[variants[0][0]]
    rows = []
    for name, _, _ in variants:
        t = times[name]
        median = statistics.median(t)
        paired = statistics.median(a / b for a, b in zip(t, base_times))
        rows.append((name, median, min(t), max(t), paired))
        print(f"{name}: median {median:.3f}s (min {min(t):.3f}, max {max(t):.3f})", file=sys.stderr)

    base = rows[0][1]
    lines = [
        f"Seed's basic workload, {args.rows:,} rows, chunks of {CHUNK} rows, "
        f"{'with' if SLEEP else 'without'} the seed's 10 ms sleep per chunk; median of {args.runs} rounds, "
        f"each running every variant once in turn "
        f"(every output checked against the plain loop). "
        f"Python {platform.python_version()}, pandas {pd.__version__}, pyarrow {__import__('pyarrow').__version__}, "
        f"sluice {sluice.__version__}, {os.cpu_count()} cores.",
        "",
        f"Command: `python bench/python_bench.py --rows {args.rows} --runs {args.runs}{' --with-sleep' if SLEEP else ''}`",
        "",
        "| variant | median (s) | min–max (s) | rows/s | vs plain loop (medians) | vs plain loop (median of the rounds' ratios) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, median, lo, hi, paired in rows:
        lines.append(
            f"| {name} | {median:.3f} | {lo:.3f}–{hi:.3f} | {args.rows / median:,.0f} "
            f"| {median / base:.2f}x time ({base / median:.2f}x speed) | {paired:.2f}x time |"
        )
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        write_section(table, SLEEP)


def write_section(table, sleep):
    """Replaces this script's section (with or without sleep) in PYTHON_RESULTS.md."""
    marker = "with-sleep" if sleep else "no-sleep"
    begin, end = f"<!-- python_bench {marker} begin -->", f"<!-- python_bench {marker} end -->"
    text = open(RESULTS, encoding="utf-8").read() if os.path.exists(RESULTS) else "# Python benchmark\n"
    block = f"{begin}\n{table}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(RESULTS, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
