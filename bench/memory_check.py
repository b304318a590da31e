#!/usr/bin/env python3
"""Bounded memory on an input far larger than the budget (issue: engine, "Done when" 4).

Generates the seed's dataset as a CSV of at least 2 GB (and the same rows as Parquet),
runs the seed's preprocessing on each with the compiled Rust example and
`--max-memory-mb 256`, measures peak RSS with `/usr/bin/time -v`, checks that every row was
written (the output manifest), and records the figures in bench/RESULTS.md between the
`memory-check` markers. Exits 1 if a run fails or peaks at or above the limit.

    python3 bench/memory_check.py [--csv-bytes 2200000000] [--limit-mb 320] [--budget-mb 256]
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BEGIN, END = "<!-- memory-check:begin -->", "<!-- memory-check:end -->"
HAND = "### The `sluice` command"


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def ensure_time() -> None:
    if not Path("/usr/bin/time").exists():
        sh(["apt-get", "update", "-qq"])
        sh(["apt-get", "install", "-y", "-qq", "time"])


def measure(binary: Path, data: Path, out: Path, budget_mb: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(binary), "--input", str(data), "--output", str(out), "--max-memory-mb", str(budget_mb)]
    report = out.parent / f"{out.name}.time.txt"
    start = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-v", "-o", str(report), *cmd], capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    text = report.read_text()
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    manifest = json.loads((out / "_manifest.json").read_text())
    stats = manifest.get("stats") or {}
    result = {
        "input": data.name,
        "input_gb": data.stat().st_size / 1e9,
        "rows": manifest["total_rows"],
        "status": manifest["status"],
        "wall_s": wall,
        "peak_rss_mb": rss_kb / 1024,
        "engine_peak_mb": stats.get("engine_peak_tracked_mb", float("nan")),
        "backpressure_events": stats.get("backpressure_events", 0),
        "command": " ".join(cmd),
    }
    shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(result, indent=2), flush=True)
    return result


def record(results: list[dict], limit_mb: int, budget_mb: int) -> None:
    lines = [
        BEGIN,
        "## Bounded memory on a 2 GB input",
        "",
        f"Made by `python3 bench/memory_check.py` on {datetime.date.today()}: the seed's preprocessing "
        f"(compiled Rust example `seed_basic`) with `--max-memory-mb {budget_mb}`; peak RSS from "
        f"`/usr/bin/time -v`; the limit is {limit_mb} MB.",
        "",
        "| input | size | rows written | wall s | rows/s | peak RSS MB | engine peak tracked MB | backpressure events | under limit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['input']} | {r['input_gb']:.2f} GB | {r['rows']:,} | {r['wall_s']:.1f} | "
            f"{r['rows'] / r['wall_s']:,.0f} | {r['peak_rss_mb']:.0f} | {r['engine_peak_mb']:.0f} | "
            f"{r['backpressure_events']} | {'yes' if r['peak_rss_mb'] < limit_mb else 'NO'} |"
        )
    lines += ["", "Commands:", ""] + [f"    {r['command']}" for r in results]
    path = BENCH / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    # Subsections written by hand inside the block (the `sluice` command's figures) stay.
    kept = ""
    if BEGIN in text and END in text:
        old = text[text.index(BEGIN) : text.index(END)]
        if HAND in old:
            kept = old[old.index(HAND) :].rstrip("\n")
    section = "\n".join(lines + ([kept] if kept else []) + [END])
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv-bytes", type=int, default=2_200_000_000)
    ap.add_argument("--limit-mb", type=int, default=320)
    ap.add_argument("--budget-mb", type=int, default=256)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    ensure_time()
    data_dir = BENCH / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    csv = data_dir / f"seed_{args.csv_bytes / 1e9:.1f}GB.csv"
    parquet = csv.with_suffix(".parquet")
    if not (csv.exists() and parquet.exists()):
        sh([sys.executable, str(BENCH / "gen_data.py"), "--csv-bytes", str(args.csv_bytes), str(csv)])
    metadata = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"], capture_output=True,
                              text=True, check=True, cwd=ROOT).stdout
    target = Path(json.loads(metadata)["target_directory"])
    if not args.no_build:
        sh(["cargo", "build", "--release", "-p", "sluice", "--example", "seed_basic"], cwd=ROOT)
    binary = target / "release" / "examples" / "seed_basic"
    out = BENCH / "out"
    out.mkdir(parents=True, exist_ok=True)
    results = [measure(binary, f, out / f"memory_{f.suffix[1:]}", args.budget_mb) for f in (csv, parquet)]
    record(results, args.limit_mb, args.budget_mb)
    bad = [r for r in results if r["peak_rss_mb"] >= args.limit_mb or r["status"] != "complete"]
    if bad:
        sys.exit(f"memory check failed: {bad}")
    print("memory check passed")


if __name__ == "__main__":
    main()
