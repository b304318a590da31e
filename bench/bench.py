#!/usr/bin/env python3
"""sluice against its peers on the seed's preprocessing; writes RESULTS.md and results.png.

Every tool runs as its own process under `/usr/bin/time -v`, so wall time and peak RSS
are measured the same way for a Rust binary and a Python script. Per tool and input
format: `--runs` runs (output deleted between runs), median wall time, rows/s from it,
peak RSS, min and max; the first run's output is checked (row count from Parquet
metadata, column names, and a streaming sanity check of the values) so a broken tool
cannot look fast. Runs are interleaved: per input format, run i of every tool happens
before run i+1 of any tool (round-robin), so a slow drift of a shared machine hits every
tool alike. The sluice rows run at the defaults users get (no --max-memory, no
--workers), except the whole-input row at the 256 MB budget its issue names; the sweep
varies the budget from 64 MB to 4000 MB.

    bench/run.sh                 # 10M rows, 7 runs, CSV and Parquet -> bench/RESULTS.md
    bench/run.sh --quick         # 1M rows, 1 run -> bench/out/RESULTS-quick.md
    bench/run.sh --csv big.csv   # benchmark an existing file instead

Only the standard library is imported at the top: the driver first installs what is
missing (pip peers, Debian's `time`), then imports the rest.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS_DIR = BENCH / "peers"
TIME = "/usr/bin/time"

# import name -> pip name
PY_DEPS = {"numpy": "numpy", "pandas": "pandas", "pyarrow": "pyarrow", "polars": "polars",
           "duckdb": "duckdb", "matplotlib": "matplotlib", "psutil": "psutil"}

# What every preprocessing result must contain (the seed's get_dummies column names).
PREPROCESS_COLUMNS = {"feature_1", "feature_2", "feature_3", "target", "feature_interaction",
                      "feature_sum", "cat_A", "cat_B", "cat_C"}
INPUT_COLUMNS = {"feature_1", "feature_2", "feature_3", "category", "target"}
NUMERIC = ["feature_1", "feature_2", "feature_3", "feature_interaction", "feature_sum"]


@dataclass
class Tool:
    """One row of the results: a command template and what its output must look like.

    `cmd` items are formatted with {python} {peers} {input} {output} {sluice}
    {seed_basic} and the keys of `params` (the sweep's {mem}). `kind` says which check the output gets:
    "preprocess" (the seed's columns, z-scored), "copy" (the input's columns), "read"
    (nothing written; the tool prints `rows=N`) or "none" (baselines). `needs` are repo-relative files that
    must exist, or the row is reported "not built".
    """
    name: str
    cmd: list[str]
    kind: str
    stats: str  # "per-chunk", "global" or "-" (no normalization)
    notes: str
    needs: tuple[str, ...] = ()
    output_is_dir: bool = False
    group: str = "main"  # "main": the per-format tables; "sweep", "baseline", "scale": their own tables
    params: dict = field(default_factory=dict)
    # Whole-input results: also checked equal (1e-9) to Polars' output of the same run.
    compare_to_polars: bool = False


PEERS = [
    Tool("pandas (chunks of 100k)", ["{python}", "{peers}/pandas_chunked.py", "--input", "{input}", "--output", "{output}"],
         "preprocess", "per-chunk", "the seed's function per chunk; 1 core"),
    Tool("polars streaming", ["{python}", "{peers}/polars_streaming.py", "--input", "{input}", "--output", "{output}"],
         "preprocess", "global", "scan_* -> sink_parquet(engine=streaming); all cores"),
    Tool("duckdb (window OVER ())", ["{python}", "{peers}/duckdb_sql.py", "--variant", "window", "--input", "{input}", "--output", "{output}"],
         "preprocess", "global", "COPY (SELECT ... AVG/STDDEV_SAMP OVER ()) TO parquet; all cores"),
    Tool("duckdb (stats join)", ["{python}", "{peers}/duckdb_sql.py", "--variant", "join", "--input", "{input}", "--output", "{output}"],
         "preprocess", "global", "same result; statistics from an aggregate cross-joined back (2 reads, no buffering)"),
    Tool("pyarrow read-only (ceiling)", ["{python}", "{peers}/pyarrow_read.py", "--input", "{input}"],
         "read", "-", "stream every batch, no transform, nothing written"),
    Tool("pyarrow read+write (ceiling)", ["{python}", "{peers}/pyarrow_copy.py", "--input", "{input}", "--output", "{output}"],
         "copy", "-", "input -> Parquet, no transform"),
]

# What a runtime costs before it reads a row: start-up time and RSS of the interpreter
# with each peer's libraries imported. Measured once, not per input format.
BASELINES = [
    Tool(f"python + {what}", ["{python}", "-c", f"import {mods}"], "none", "-", "", group="baseline")
    for what, mods in (("nothing", "sys"), ("pandas, pyarrow", "pandas, pyarrow.parquet"),
                       ("pyarrow.dataset", "pyarrow.dataset, pyarrow.parquet"),
                       ("polars", "polars"), ("duckdb", "duckdb"))
]

# ---------------------------------------------------------------------------------------
# sluice: the commands the lead provides. Edit here when the CLI or the example changes.
# Each binary: repo-relative path, and the cargo package/target that builds it. A binary
# is built only if its package is in the workspace; a row whose binary (or other `needs`)
# is missing is reported "not built".
SLUICE_BINARIES = {
    "sluice": {"path": "target/release/sluice", "package": "sluice-cli", "target": ["--bin", "sluice"]},
    "seed_basic": {"path": "target/release/examples/seed_basic", "package": None,  # found by `cargo metadata`
                   "target": ["--example", "seed_basic"]},
}
SLUICE_SQL = "examples/seed_preprocessing.sql"
SLUICE_GLOBAL_SQL = "examples/seed_preprocessing_global.sql"
# The whole-input (two-pass) row runs at the budget its issue names: peak RSS must stay
# under 320 MB at every input size.
GLOBAL_BUDGET_MB = 256
GLOBAL_RSS_LIMIT_MB = 320
GLOBAL_NAME = "sluice run --sql, global windows (2 passes)"
GLOBAL_CMD = ["{sluice}", "run", "--windows", "global", "--input", "{input}", "--output", "{output}",
              "--sql", SLUICE_GLOBAL_SQL, "--max-memory", f"{GLOBAL_BUDGET_MB}MB", "--quiet"]
# The other rows run at the defaults, because the defaults are what users run: no
# --max-memory and no --workers. `sluice run`'s budget is then 1000 MB (MB = 2^20 bytes;
# the builder's default in crates/sluice/src/config.rs, "[default: 1000MB]" in
# crates/sluice-cli/src/cli.rs); seed_basic's own default is --max-memory-mb 500
# (crates/sluice/examples/seed_basic.rs). Workers default to the machine's cores.
# Update these two numbers if those defaults change; they are only written in notes.
CLI_DEFAULT_BUDGET_MB = 1000
SEED_BASIC_DEFAULT_BUDGET_MB = 500
# The target for the main row at the default budget (issue 12: memory is a ceiling).
MAIN_RSS_LIMIT_MB = 200
MAIN_NAME = "sluice run --sql"
SLUICE = [
    Tool(MAIN_NAME, ["{sluice}", "run", "--input", "{input}", "--output", "{output}",
                     "--sql", SLUICE_SQL, "--quiet"],
         "preprocess", "per-chunk", f"CLI, seed_preprocessing.sql on DataFusion per chunk; "
         f"defaults ({CLI_DEFAULT_BUDGET_MB} MB budget, workers = cores)",
         needs=(SLUICE_BINARIES["sluice"]["path"], SLUICE_SQL), output_is_dir=True),
    Tool(GLOBAL_NAME, GLOBAL_CMD, "preprocess", "global",
         f"CLI, --windows global: pass 1 exact whole-input mean/std (Parquet: 3 columns read; CSV: parsed once, "
         f"the rows kept in a scratch Arrow file for pass 2), pass 2 per chunk; "
         f"--max-memory {GLOBAL_BUDGET_MB}MB, the budget its issue names (RSS < {GLOBAL_RSS_LIMIT_MB} MB); "
         "output checked equal to Polars' (1e-9)",
         needs=(SLUICE_BINARIES["sluice"]["path"], SLUICE_GLOBAL_SQL), output_is_dir=True, compare_to_polars=True),
    Tool("sluice seed_basic (Rust fn)", ["{seed_basic}", "--input", "{input}", "--output", "{output}"],
         "preprocess", "per-chunk", f"compiled Rust example, the seed's function in Rust; "
         f"defaults ({SEED_BASIC_DEFAULT_BUDGET_MB} MB budget, workers = cores)",
         needs=(SLUICE_BINARIES["seed_basic"]["path"],), output_is_dir=True),
    Tool("sluice run, no SQL (ceiling)", ["{sluice}", "run", "--input", "{input}", "--output", "{output}", "--quiet"],
         "copy", "-", f"read -> write through the engine, no transform; "
         f"defaults ({CLI_DEFAULT_BUDGET_MB} MB budget, workers = cores)",
         needs=(SLUICE_BINARIES["sluice"]["path"],), output_is_dir=True),
]
# The sweep: the main row's command at each budget, default workers (--workers not
# passed). Target: no budget more than SWEEP_SLOWDOWN_LIMIT slower than the fastest.
SWEEP_MEMORY_MB = [64, 128, 256, 512, 1000, 2000, 4000]
SWEEP_SLOWDOWN_LIMIT = 1.10
SWEEP_CMD = ["{sluice}", "run", "--input", "{input}", "--output", "{output}", "--sql", SLUICE_SQL,
             "--max-memory", "{mem}MB", "--quiet"]
# ---------------------------------------------------------------------------------------


# The scale pair: the whole-input z-score at growing sizes, each tool's wall time and RSS.
SCALE_PEERS = ("polars streaming", "duckdb (window OVER ())", "duckdb (stats join)")


def scale_tools(rows: int) -> list[Tool]:
    peers = [t for t in PEERS if t.name in SCALE_PEERS]
    sluice = next(t for t in SLUICE if t.name == GLOBAL_NAME)
    return [Tool(t.name, t.cmd, t.kind, t.stats, t.notes, needs=t.needs, output_is_dir=t.output_is_dir,
                 group="scale", params={"rows": rows}, compare_to_polars=t.compare_to_polars)
            for t in (*peers, sluice)]


def sweep_tools() -> list[Tool]:
    return [
        Tool(f"sluice --sql, {mem} MB{' (default)' if mem == CLI_DEFAULT_BUDGET_MB else ''}", SWEEP_CMD,
             "preprocess", "per-chunk", "", needs=(SLUICE_BINARIES["sluice"]["path"], SLUICE_SQL),
             output_is_dir=True, group="sweep", params={"mem": mem})
        for mem in SWEEP_MEMORY_MB
    ]


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


# --- set-up --------------------------------------------------------------------------

def ensure_tools() -> None:
    """pip-install missing peers; apt-get Debian's `time` if /usr/bin/time is missing."""
    missing = [pip for mod, pip in PY_DEPS.items() if importlib.util.find_spec(mod) is None]
    if missing:
        log(f"pip install {' '.join(missing)}")
        subprocess.run([sys.executable, "-m", "pip", "install", *missing], check=True)
        importlib.invalidate_caches()
    if not os.access(TIME, os.X_OK):
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        log("installing Debian package `time` for /usr/bin/time")
        subprocess.run([*sudo, "apt-get", "update"], check=True)
        subprocess.run([*sudo, "apt-get", "install", "-y", "time"], check=True)


def workspace_packages() -> dict[str, dict] | None:
    """name -> cargo metadata package, or None when there is no usable workspace."""
    if not (REPO / "Cargo.toml").exists() or shutil.which("cargo") is None:
        return None
    r = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"],
                       cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        log(f"cargo metadata failed, not building sluice: {r.stderr.strip().splitlines()[-1:]}")
        return None
    return {p["name"]: p for p in json.loads(r.stdout)["packages"]}


def build_sluice() -> None:
    """`cargo build --release` of every sluice binary whose package exists, in one cargo
    invocation (one feature resolution, so shared crates are compiled once); never fatal."""
    packages = workspace_packages()
    if packages is None:
        return
    selected: list[str] = []
    targets: list[str] = []
    for name, b in SLUICE_BINARIES.items():
        pkg = b["package"]
        if pkg is None:  # an example: whichever package declares it
            kind, target = b["target"][0].lstrip("-"), b["target"][1]
            pkg = next((p for p, meta in packages.items()
                        if any(t["name"] == target and kind in t["kind"] for t in meta["targets"])), None)
        if pkg not in packages:
            log(f"{name}: no package in the workspace builds it yet; its rows will say 'not built'")
            continue
        if pkg not in selected:
            selected.append(pkg)
        targets += b["target"]
    if not selected:
        return
    cmd = ["cargo", "build", "--release", *(a for p in selected for a in ("-p", p)), *targets]
    log(" ".join(cmd))
    if subprocess.run(cmd, cwd=REPO).returncode != 0:
        log("sluice build failed; its rows will say 'not built'")


# --- measuring -----------------------------------------------------------------------

@dataclass
class Result:
    tool: Tool
    fmt: str
    status: str = "ok"  # ok | not built: ... | failed: ... | wrong output: ...
    walls: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    command: str = ""

    @property
    def measured(self) -> bool:
        return bool(self.walls)


def parse_time_v(text: str) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) from GNU time -v output."""
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if not (m and rss):
        raise ValueError("no wall time / max RSS in /usr/bin/time output")
    wall = 0.0
    for part in m.group(1).split(":"):
        wall = wall * 60 + float(part)
    return wall, int(rss.group(1)) / 1024


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def run_once(argv: list[str], timeout: float, logfile: Path) -> tuple[int, float, float, str]:
    """Run under /usr/bin/time -v in its own process group (so a timeout kills the
    whole tree, not just `time`). Returns (exit code, wall s, peak RSS MiB, stdout)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        proc = subprocess.Popen([TIME, "-v", "-o", tf.name, *argv], cwd=REPO, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            logfile.write_text(f"$ {shlex.join(argv)}\nTIMEOUT after {timeout}s\n{out}\n{err}")
            return -1, timeout, 0.0, out
        timing = Path(tf.name).read_text()
    logfile.write_text(f"$ {shlex.join(argv)}\n--- stdout\n{out}\n--- stderr\n{err}\n--- time -v\n{timing}")
    if proc.returncode != 0:
        return proc.returncode, 0.0, 0.0, out
    wall, rss = parse_time_v(timing)
    return 0, wall, rss, out


def parquet_files(path: Path) -> list[Path]:
    return sorted(path.rglob("*.parquet")) if path.is_dir() else [path]


def check_output(tool: Tool, output: Path, stdout: str, rows: int) -> str:
    """'ok', or why the output is wrong. Values are checked in a single streaming pass:
    z-scored columns must have mean ~0 and std ~1 (true for per-chunk statistics too,
    with chunks of more than a few hundred rows), one-hot columns must sum to one per
    row, and feature_sum / feature_interaction must track f1+f2+f3 / f1*f2."""
    import numpy as np
    import pyarrow.parquet as pq

    if tool.kind == "read":
        m = re.search(r"rows=(\d+)", stdout)
        got = int(m.group(1)) if m else None
        return "ok" if got == rows else f"read {got} rows, expected {rows}"
    files = parquet_files(output)
    if not files or not files[0].exists():
        return "no Parquet output"
    got = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if got != rows:
        return f"{got} rows, expected {rows}"
    want = PREPROCESS_COLUMNS if tool.kind == "preprocess" else INPUT_COLUMNS
    for f in files:
        cols = set(pq.ParquetFile(f).schema_arrow.names)
        if cols != want:
            return f"columns {sorted(cols)} in {f.name}, expected {sorted(want)}"
    if tool.kind != "preprocess":
        return "ok"

    acc = {c: [0.0, 0.0] for c in NUMERIC}  # sum, sum of squares
    pairs = {"feature_sum": np.zeros(5), "feature_interaction": np.zeros(5)}  # Σa Σb Σab Σa² Σb²
    onehot = 0
    for f in files:
        pf = pq.ParquetFile(f)
        for batch in (pf.read_row_group(i) for i in range(pf.num_row_groups)):
            d = {c: batch.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in batch.schema.names}
            for c in NUMERIC:
                acc[c][0] += d[c].sum()
                acc[c][1] += (d[c] ** 2).sum()
            for c, b in (("feature_sum", d["feature_1"] + d["feature_2"] + d["feature_3"]),
                         ("feature_interaction", d["feature_1"] * d["feature_2"])):
                a = d[c]
                pairs[c] += [a.sum(), b.sum(), (a * b).sum(), (a * a).sum(), (b * b).sum()]
            onehot += int((d["cat_A"] + d["cat_B"] + d["cat_C"] == 1).sum())
    n = rows
    for c, (s, ss) in acc.items():
        mean = s / n
        std = ((ss - n * mean * mean) / (n - 1)) ** 0.5
        if abs(mean) > 1e-6 or abs(std - 1) > 0.01:
            return f"{c} is not z-scored (mean {mean:.3g}, std {std:.4g})"
    for c, (sa, sb, sab, saa, sbb) in pairs.items():
        corr = (n * sab - sa * sb) / ((n * saa - sa * sa) * (n * sbb - sb * sb)) ** 0.5
        if corr < 0.95:
            return f"{c} does not follow its definition (correlation {corr:.3f})"
    if onehot != rows:
        return f"cat_A/cat_B/cat_C are not one-hot in {rows - onehot} rows"
    return "ok"


def compare_with(output: Path, reference: Path, rtol: float = 1e-9) -> str:
    """'ok' when every column of `output` (part files in manifest order) equals Polars'
    `reference` to `rtol` (relative, with 1e-12 absolute for values near 0), row by row."""
    import numpy as np
    import pyarrow.parquet as pq

    if not reference.exists():
        return "no Polars output of this run to compare with (run the polars streaming row first)"
    manifest = output / "_manifest.json"
    parts = [output / p["file"] for p in json.loads(manifest.read_text())["parts"]] if manifest.exists() \
        else parquet_files(output)
    want_file = pq.ParquetFile(reference)
    for column in sorted(PREPROCESS_COLUMNS):
        got = np.concatenate([pq.read_table(p, columns=[column]).column(0).to_numpy(zero_copy_only=False)
                              for p in parts])
        want = want_file.read(columns=[column]).column(0).to_numpy(zero_copy_only=False)
        if len(got) != len(want):
            return f"{column}: {len(got)} rows, Polars {len(want)}"
        got, want = got.astype(np.float64), want.astype(np.float64)
        bad = ~(np.abs(got - want) <= rtol * np.abs(want) + 1e-12)
        if bad.any():
            i = int(np.argmax(bad))
            return f"{column} differs from Polars at row {i}: {got[i]!r} vs {want[i]!r} ({int(bad.sum())} rows)"
    return "ok"


@dataclass
class Job:
    """One tool on one input between the rounds of `measure_all`; `argv` is None when the
    tool cannot run (not built)."""
    res: Result
    argv: list[str] | None
    output: Path
    logfile: Path
    reference: Path
    rows: int


def prepare(tool: Tool, fmt: str, input_path: Path, rows: int, args, binaries: dict[str, str]) -> Job:
    res = Result(tool, fmt)
    slug = re.sub(r"[^a-z0-9]+", "-", tool.name.lower()).strip("-")
    output = args.out_dir / f"{slug}.{fmt}{'' if tool.output_is_dir else '.parquet'}"
    logfile = args.out_dir / "logs" / f"{slug}.{fmt}.log"
    reference = args.out_dir / f"reference-polars.{fmt}.{rows}.parquet"
    missing = [n for n in tool.needs if not (REPO / n).exists()]
    if missing:
        res.status = "not built (" + ", ".join(missing) + " missing)"
        log(f"  {tool.name:<40} {fmt:<8} {res.status}")
        return Job(res, None, output, logfile, reference, rows)
    values = {"python": sys.executable, "peers": str(PEERS_DIR), "input": str(input_path),
              "output": str(output), **binaries, **{k: str(v) for k, v in tool.params.items()}}
    argv = [part.format(**values) for part in tool.cmd]
    res.command = shlex.join(argv)
    return Job(res, argv, output, logfile, reference, rows)


def run_job(job: Job, i: int, runs: int, args) -> None:
    """Run `i` (0-based) of one tool: output removed before and after, the first run's
    output checked; a failure, timeout or wrong output sets the status (no more runs)."""
    res, tool = job.res, job.res.tool
    remove(job.output)
    # Every run starts with the disk's write-back done, so an earlier tool's output still
    # being flushed is not charged to whichever tool runs next.
    os.sync()
    rc, wall, rss, stdout = run_once(job.argv, args.timeout, job.logfile)
    if rc != 0:
        res.status = "timeout" if rc == -1 else f"failed (exit {rc}, see {os.path.relpath(job.logfile, REPO)})"
    else:
        res.walls.append(wall)
        res.rss_mb.append(rss)
        if i == 0 and tool.kind != "none":
            verdict = check_output(tool, job.output, stdout, job.rows)
            if verdict == "ok" and tool.compare_to_polars:
                verdict = compare_with(job.output, job.reference)
            if verdict != "ok":
                res.status = f"wrong output: {verdict}"
            elif tool.name == "polars streaming":
                # The whole-input reference the two-pass sluice row is checked against.
                remove(job.reference)
                shutil.move(str(job.output), job.reference)
    # Removed now, not before the tool's next run: no tool runs next to another's output.
    remove(job.output)
    remove(Path(str(job.output) + ".tmp"))  # DuckDB's spill directory
    shown = f"{wall:.2f} s, {rss:.0f} MiB" if rc == 0 else ""
    log(f"    run {i + 1}/{runs} {tool.name:<40} {res.fmt:<8} {shown if res.status == 'ok' else res.status}")


def measure_all(tools: list[Tool], fmt: str, input_path: Path, rows: int, args,
                binaries: dict[str, str], runs: int | None = None) -> list[Result]:
    """`runs` (default `args.runs`) runs of every tool on one input, interleaved: run i of
    every tool happens before run i+1 of any, so a slow drift of the machine (other jobs, heat, the
    page cache) hits every tool alike instead of whichever came last. Round 1 runs in list
    order, so Polars writes its reference before the two-pass sluice row is compared with
    it. Every later round runs in a shuffled order (seeded by format and round, so a rerun
    repeats it): this VM's speed drifts by up to 40% for tens of seconds at a time, and
    with a fixed or merely reversed order the same neighbours always shared a slow spell
    (the sweep's four largest budgets, next to each other at the turn of every round, came
    out 10% slower than the three smallest although they run the same code). A tool that
    fails, times out or writes a wrong output gets no further runs; the others go on."""
    jobs = [prepare(t, fmt, input_path, rows, args, binaries) for t in tools]
    runs = runs or args.runs
    for i in range(runs):
        live = [j for j in jobs if j.argv is not None and j.res.status == "ok"]
        if not live:
            break
        log(f"  round {i + 1}/{runs} ({fmt}): {len(live)} tool(s)")
        if i > 0:
            random.Random(f"{fmt}/{rows}/{i}").shuffle(live)
        for job in live:
            run_job(job, i, runs, args)
    for job in jobs:
        res = job.res
        if job.argv is None:
            continue  # "not built", already logged
        shown = f"{statistics.median(res.walls):.2f} s, {statistics.median(res.rss_mb):.0f} MiB" if res.walls else ""
        log(f"  {res.tool.name:<40} {fmt:<8} {res.status} {shown}")
    return [job.res for job in jobs]


# --- reporting -----------------------------------------------------------------------

def machine() -> dict[str, str]:
    import psutil
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cores (nproc)": str(os.cpu_count()), "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
            "CPU": cpu, "OS": f"{platform.system()} {platform.release()}"}


def versions(binaries: dict[str, str]) -> dict[str, str]:
    v = {"python": platform.python_version()}
    for mod in ("pandas", "pyarrow", "polars", "duckdb", "numpy"):
        v[mod] = importlib.metadata.version(mod)

    def first_line(cmd: list[str]) -> str | None:
        try:
            r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None

    sluice = binaries["sluice"]
    v["sluice"] = (first_line([sluice, "--version"]) or "built, --version failed") if Path(sluice).exists() else "not built"
    commit = first_line(["git", "--no-optional-locks", "rev-parse", "--short", "HEAD"])
    if commit:
        dirty = first_line(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"])
        commit += " (with uncommitted changes)" if dirty else ""
    v["sluice commit"] = commit or "no commit yet"
    v["rustc"] = first_line(["rustc", "--version"]) or "not found"
    return v


def fmt_rate(rows: int, wall: float) -> str:
    return f"{rows / wall / 1e6:.2f} M" if wall > 0 else "-"


def cells(r: Result, rows: int) -> list[str]:
    if not r.measured:
        return ["-", "-", "-"]
    w, m = r.walls, r.rss_mb
    return [fmt_rate(rows, statistics.median(w)),
            f"{statistics.median(w):.2f} ({min(w):.2f}–{max(w):.2f})",
            f"{statistics.median(m):.0f} ({min(m):.0f}–{max(m):.0f})"]


def target_checks(results: list[Result], formats: list[str]) -> list[str]:
    """The goals of the benchmark issues, checked on this run's medians: each sluice
    preprocessing row against Polars, DuckDB (its faster variant), 3x pandas, half of
    sluice's own read->write ceiling, and peak RSS below every peer's; the main row
    (defaults) also at least 1.25x Polars and under 200 MiB; and across the sweep, no
    budget more than 10% slower than the fastest."""
    L = ["## Targets, checked on this run", "",
         "| input | sluice row | target | sluice | needed | met |", "|---|---|---|---:|---:|---|"]

    def med(r: Result) -> tuple[float, float]:
        return statistics.median(r.walls), statistics.median(r.rss_mb)

    for fmt in formats:
        main = [r for r in results if r.fmt == fmt and r.tool.group == "main" and r.measured and r.status == "ok"]
        by = {r.tool.name: r for r in main}
        sluice_rows = [r for r in main if r.tool.name.startswith("sluice") and r.tool.kind == "preprocess"]
        ceiling = next((r for r in main if r.tool.name.startswith("sluice") and r.tool.kind == "copy"), None)
        peers = [r for r in main if not r.tool.name.startswith("sluice") and r.tool.kind == "preprocess"]
        duck = [r for r in peers if r.tool.name.startswith("duckdb")]
        for s in sluice_rows:
            wall, rss = med(s)
            checks = []
            if "polars streaming" in by:
                checks.append(("time ≤ Polars streaming", wall, med(by["polars streaming"])[0]))
            if duck:
                checks.append(("time ≤ DuckDB (faster variant)", wall, min(med(d)[0] for d in duck)))
            if "pandas (chunks of 100k)" in by:
                checks.append(("time ≤ pandas / 3", wall, med(by["pandas (chunks of 100k)"])[0] / 3))
            if ceiling is not None:
                checks.append(("time ≤ 2 × own no-SQL ceiling", wall, 2 * med(ceiling)[0]))
            if s.tool.name == MAIN_NAME:
                if "polars streaming" in by:
                    checks.append(("time ≤ Polars streaming / 1.25", wall, med(by["polars streaming"])[0] / 1.25))
                checks.append((f"peak RSS < {MAIN_RSS_LIMIT_MB} MiB at the default budget "
                               f"({CLI_DEFAULT_BUDGET_MB} MB)", rss, MAIN_RSS_LIMIT_MB))
            if s.tool.compare_to_polars:
                checks.append((f"peak RSS < {GLOBAL_RSS_LIMIT_MB} MB at --max-memory {GLOBAL_BUDGET_MB}MB", rss,
                               GLOBAL_RSS_LIMIT_MB))
            for label, got, need in checks:
                unit, digits = ("MiB", 0) if label.startswith("peak RSS") else ("s", 2)
                L.append(f"| {fmt} | {s.tool.name} | {label} | {got:.{digits}f} {unit} | {need:.{digits}f} {unit} | "
                         f"{'yes' if got <= need else f'no, {got / need:.2f}x over'} |")
            if peers:
                leanest = min(peers, key=lambda r: med(r)[1])
                need = med(leanest)[1]
                L.append(f"| {fmt} | {s.tool.name} | peak RSS < every peer's (leanest: {leanest.tool.name}) | "
                         f"{rss:.0f} MiB | {need:.0f} MiB | {'yes' if rss < need else f'no, {rss / need:.2f}x over'} |")
        sweep = [r for r in results if r.fmt == fmt and r.tool.group == "sweep" and r.measured and r.status == "ok"]
        if len(sweep) >= 2:
            fastest = min(sweep, key=lambda r: med(r)[0])
            slowest = max(sweep, key=lambda r: med(r)[0])
            fast, slow = med(fastest)[0], med(slowest)[0]
            ratio = slow / fast
            lo, hi = SWEEP_MEMORY_MB[0], SWEEP_MEMORY_MB[-1]
            counted = "" if len(sweep) == len(SWEEP_MEMORY_MB) else f"; {len(sweep)} of {len(SWEEP_MEMORY_MB)} budgets measured"
            L.append(f"| {fmt} | sweep (sluice --sql, {lo}–{hi} MB) | no budget more than "
                     f"{(SWEEP_SLOWDOWN_LIMIT - 1) * 100:.0f}% slower than the fastest "
                     f"(slowest: {slowest.tool.params['mem']} MB; fastest: {fastest.tool.params['mem']} MB{counted}) | "
                     f"{slow:.2f} s | {SWEEP_SLOWDOWN_LIMIT * fast:.2f} s | "
                     f"{'yes' if ratio <= SWEEP_SLOWDOWN_LIMIT else 'no'}, {ratio:.2f}x the fastest |")
            paired = paired_sweep_ratios(sweep)
            if paired:
                fastest = min(paired, key=paired.get)
                slowest = max(paired, key=paired.get)
                ratio = paired[slowest] / paired[fastest]
                L.append(f"| {fmt} | sweep, paired within rounds (each budget's wall over its round's median "
                         f"of the budgets; median over rounds) | the same, on these ratios (slowest: {slowest} MB; "
                         f"fastest: {fastest} MB) | {paired[slowest]:.3f} | "
                         f"{SWEEP_SLOWDOWN_LIMIT * paired[fastest]:.3f} | "
                         f"{'yes' if ratio <= SWEEP_SLOWDOWN_LIMIT else 'no'}, {ratio:.2f}x the fastest |")
    L.append("")
    return L


def paired_sweep_ratios(sweep: list["Result"]) -> dict[int, float]:
    """Budget -> the median over rounds of its wall time over the median of that round's
    budgets. Interleaving puts every budget's run i in the same round, so a slow spell of the
    machine scales a whole round; dividing by the round's median takes it out, which the
    medians of each row's own runs do not (their spread is mostly which row drew the slow
    spells). Only rounds in which every budget ran are used."""
    rounds = min(len(r.walls) for r in sweep)
    if rounds == 0:
        return {}
    ratios: dict[int, list[float]] = {r.tool.params["mem"]: [] for r in sweep}
    for i in range(rounds):
        middle = statistics.median(r.walls[i] for r in sweep)
        for r in sweep:
            ratios[r.tool.params["mem"]].append(r.walls[i] / middle)
    return {mem: statistics.median(v) for mem, v in ratios.items()}


def write_markdown(path: Path, results: list[Result], ctx: dict) -> None:
    rows = ctx["rows"]
    L = [
        "# sluice vs peers: the seed's preprocessing",
        "",
        "Generated by `bench/bench.py`; do not edit by hand. Rerun with the command below.",
        "",
        f"- **Command:** `{ctx['command']}`",
        f"- **Date:** {ctx['date']}",
        "- **Machine:** " + ", ".join(f"{k} {v}" for k, v in ctx["machine"].items()),
        "- **Versions:** " + ", ".join(f"{k} {v}" for k, v in ctx["versions"].items()),
        f"- **Data:** the seed's `create_large_dataset` at {rows:,} rows (feature_1..3 float64 randn, "
        "category A/B/C, target 0/1), seed 42: " + ", ".join(f"{f} `{p}` {s / 1e6:.0f} MB" for f, p, s in ctx["inputs"]),
        f"- **Method:** each tool is its own process under `/usr/bin/time -v`; {ctx['runs']} run(s) each, "
        "interleaved: per input format, run i of every tool (sweep rows included) happens before run i+1 of any, "
        "so slow drifts of the machine hit every tool alike; "
        "round 1 runs in list order and every later round in a shuffled (seeded) order; "
        "output deleted between runs, warm OS page cache. Wall time and rows/s are the median; "
        "peak memory is the process's maximum resident set size (MiB); ranges are min–max. "
        "Each tool's first output is checked: row count (Parquet metadata), column names, "
        "z-scored columns with mean ≈ 0 and std ≈ 1, one-hot columns, and feature_sum / "
        "feature_interaction following their definitions.",
        "",
    ]
    for fmt in ctx["formats"]:
        L += [f"## {fmt.upper()} in, Parquet out", "",
              "| tool | statistics | rows/s | wall s | peak RSS MiB | status | notes |",
              "|---|---|---:|---:|---:|---|---|"]
        for r in results:
            if r.fmt == fmt and r.tool.group == "main":
                L.append("| " + " | ".join([r.tool.name, r.tool.stats, *cells(r, rows), r.status, r.tool.notes]) + " |")
        L.append("")
    L += target_checks(results, ctx["formats"])
    sweep = [r for r in results if r.tool.group == "sweep"]
    if sweep:
        L += [f"## sluice sweep: memory budget (default {CLI_DEFAULT_BUDGET_MB} MB), default workers (= cores)", "",
              f"`{' '.join(SWEEP_CMD)}` (no `--workers`: the default). The {CLI_DEFAULT_BUDGET_MB} MB row is "
              "the default budget, what `sluice run --sql` uses without `--max-memory`.", "",
              "| input | --max-memory | default? | rows/s | wall s | peak RSS MiB | status |",
              "|---|---:|---|---:|---:|---:|---|"]
        for r in sweep:
            mem = r.tool.params["mem"]
            L.append("| " + " | ".join([r.fmt, f"{mem} MB", "yes (default)" if mem == CLI_DEFAULT_BUDGET_MB else "",
                                        *cells(r, rows), r.status]) + " |")
        L.append("")
    scale = [r for r in results if r.tool.group == "scale"]
    if scale:
        L += ["## Scale: the whole-input z-score as the input grows", "",
              f"Same query (global mean and std) at each size; sluice: `{' '.join(GLOBAL_CMD)}`. "
              f"Target: sluice's peak RSS under {GLOBAL_RSS_LIMIT_MB} MB at every size. "
              f"{ctx.get('scale_runs', ctx['runs'])} run(s) per row, interleaved per size and format.", "",
              "| input | rows | tool | rows/s | wall s | peak RSS MiB | status |",
              "|---|---:|---|---:|---:|---:|---|"]
        for r in scale:
            n = r.tool.params["rows"]
            L.append("| " + " | ".join([r.fmt, f"{n:,}", r.tool.name, *cells(r, n), r.status]) + " |")
        L.append("")
    base = [r for r in results if r.tool.group == "baseline"]
    if base:
        L += ["## Runtime baseline: start-up and imports, no data", "",
              "| process | wall s | peak RSS MiB | status |", "|---|---:|---:|---|"]
        L += ["| " + " | ".join([r.tool.name, *cells(r, rows)[1:], r.status]) + " |" for r in base]
        L.append("")
    L += [
        "## Reading the numbers",
        "",
        "- **Per-chunk vs global statistics.** The seed's `data_preprocessing` computes mean and "
        "std *per chunk*; pandas (chunks of 100k rows) and `sluice run --sql` do the same, so their z-scores "
        "depend on the chunking. Polars and DuckDB normalize with *global* mean and std over the "
        "whole file, because that is what the expression means there: they must see every row "
        "before emitting the first one (DuckDB's window buffers all rows; the stats-join variant "
        "reads the input twice). `sluice run --windows global` computes the *same* global result "
        "in two passes inside its memory budget (on Parquet, pass 1 reads only the three feature columns' "
        "column chunks and pass 2 reads the file again; a CSV is parsed once, by pass 1, which keeps the rows "
        "in a scratch Arrow file in the output folder for pass 2 and deletes it at the end), and its output is "
        "checked equal to Polars' to 1e-9 "
        "in the same run; compare it with the peers' rows, not with the per-chunk rows.",
        "- **The seed's `time.sleep(0.01)`** per chunk is left out everywhere: it would only measure sleep.",
        "- **Ceilings.** pyarrow read-only is how fast the input can be parsed at all; pyarrow "
        "read+write adds writing Parquet. sluice's no-SQL run is the same read→write through the engine.",
        "- **Peak RSS and wall time include each runtime's start-up** (see the baseline table: "
        "a Python interpreter with the peer's libraries imported, before reading a row); a Rust "
        "binary starts in a few MiB and milliseconds. At small row counts start-up dominates. "
        "sluice's `--max-memory` is a budget for the data it holds, not a cap on RSS.",
        f"- **Settings.** The main sluice rows run at the defaults users get: no `--max-memory` "
        f"(`sluice run`: {CLI_DEFAULT_BUDGET_MB} MB; the seed_basic example: {SEED_BASIC_DEFAULT_BUDGET_MB} MB) and "
        f"no `--workers`. The whole-input row runs at `--max-memory {GLOBAL_BUDGET_MB}MB`, the budget its issue "
        "names; the sweep shows the other budgets.",
        "- **Cores.** pandas uses one core; pyarrow, Polars, DuckDB and sluice (`--workers`, default = cores) use all of them.",
        "- **Output.** Every tool writes Parquet with Snappy compression (Polars is told to; its default is zstd); "
        "one-hot columns are booleans in the peers, as pandas' `get_dummies` makes them.",
        "",
        f"![throughput and peak memory]({ctx['png']})",
        "",
    ]
    # Sections written by other hands are kept: bench/memory_check.py's figures,
    # bench/stream_bench.py's table, and the profile that explains a missed target (written
    # after looking at this run).
    previous = path.read_text() if path.exists() else ""
    for name in ("profile", "memory-check", "streams"):
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        if begin in previous and end in previous:
            L += [previous[previous.index(begin):previous.index(end) + len(end)], ""]
    path.write_text("\n".join(L))


def write_plot(path: Path, results: list[Result], ctx: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = ctx["rows"]
    main = [r for r in results if r.tool.group == "main"]
    names = list(dict.fromkeys(r.tool.name for r in main))
    formats = ctx["formats"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.45 * len(names) * len(formats) + 2), sharey=True)
    y = np.arange(len(names))
    h = 0.8 / len(formats)
    for k, fmt in enumerate(formats):
        by_name = {r.tool.name: r for r in main if r.fmt == fmt}
        ok = [by_name.get(n) is not None and by_name[n].measured and by_name[n].status == "ok" for n in names]
        med = [statistics.median(by_name[n].walls) if o else np.nan for n, o in zip(names, ok)]
        rate = [rows / m / 1e6 if o else 0 for m, o in zip(med, ok)]
        err = [[rows / m / 1e6 - rows / max(by_name[n].walls) / 1e6 if o else 0 for n, m, o in zip(names, med, ok)],
               [rows / min(by_name[n].walls) / 1e6 - rows / m / 1e6 if o else 0 for n, m, o in zip(names, med, ok)]]
        rss = [statistics.median(by_name[n].rss_mb) if o else 0 for n, o in zip(names, ok)]
        pos = y + (k - (len(formats) - 1) / 2) * h
        ax1.barh(pos, rate, h, xerr=err, label=f"{fmt} in", capsize=2)
        ax2.barh(pos, rss, h, label=f"{fmt} in")
        for p, o, n in zip(pos, ok, names):
            if not o:
                status = by_name[n].status if n in by_name else "not run"
                for ax in (ax1, ax2):
                    ax.text(0, p, "  " + re.split(r"[:(]", status)[0].strip(), va="center", fontsize=7, color="grey")
    ax1.set_yticks(y, names)
    for label in ax1.get_yticklabels():
        if label.get_text().startswith("sluice"):
            label.set_fontweight("bold")
    ax1.invert_yaxis()
    ax1.set_xlabel("million rows / s (median; bars: min–max)")
    ax2.set_xlabel("peak RSS, MiB (median)")
    ax1.set_title("throughput (higher is better)")
    ax2.set_title("peak memory (lower is better)")
    for ax in (ax1, ax2):
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"seed preprocessing, {rows:,} rows, {ctx['machine']['cores (nproc)']} cores — {ctx['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- main ----------------------------------------------------------------------------

def count_rows(path: Path) -> int:
    sys.path.insert(0, str(BENCH))
    from gen_data import csv_rows, parquet_rows
    return csv_rows(path) if path.suffix == ".csv" else parquet_rows(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, help="dataset rows (default 10M; --quick: 1M)")
    ap.add_argument("--runs", type=int, help="runs per measurement (default 7; --quick: 1)")
    ap.add_argument("--scale-runs", type=int, help="runs per measurement of the scale table (default 3; --quick: 1)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1M rows, 1 run, results in bench/out/")
    ap.add_argument("--formats", default="csv,parquet", help="input formats to run (default csv,parquet)")
    ap.add_argument("--only", help="comma-separated substrings; run only tools whose name contains one")
    ap.add_argument("--csv", type=Path, help="benchmark this existing CSV instead of generating one")
    ap.add_argument("--parquet", type=Path, help="benchmark this existing Parquet file instead of generating one")
    ap.add_argument("--no-sweep", action="store_true", help="skip the sluice memory-budget sweep")
    ap.add_argument("--scale-rows", default="",
                    help="comma-separated row counts (e.g. 10000000,30000000) for the whole-input scale table")
    ap.add_argument("--scale-formats", default="parquet", help="input formats of the scale table (default parquet)")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build for sluice")
    ap.add_argument("--no-install", action="store_true", help="do not pip/apt-get install missing tools")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds before a run is killed")
    ap.add_argument("--data-dir", type=Path, default=BENCH / "data")
    ap.add_argument("--out-dir", type=Path, default=BENCH / "out", help="scratch outputs and logs")
    ap.add_argument("--results-md", type=Path, help="default bench/RESULTS.md (--quick: bench/out/RESULTS-quick.md)")
    ap.add_argument("--results-png", type=Path, help="default bench/results.png (--quick: bench/out/results-quick.png)")
    args = ap.parse_args(argv)
    raw_argv = sys.argv[1:] if argv is None else argv
    args.rows = args.rows or (1_000_000 if args.quick else 10_000_000)
    # Seven runs: on this 2-core VM the same command's runs spread by 15-40% (min to max),
    # and medians of three were seen 12% apart for two rows running identical code, more
    # than the 10% the sweep's verdict resolves. The scale table's long runs keep three.
    args.runs = args.runs or (1 if args.quick else 7)
    args.scale_runs = args.scale_runs or (1 if args.quick else 3)
    # A smoke test never overwrites the published results.
    args.results_md = args.results_md or (args.out_dir / "RESULTS-quick.md" if args.quick else BENCH / "RESULTS.md")
    args.results_png = args.results_png or (args.out_dir / "results-quick.png" if args.quick else BENCH / "results.png")
    args.out_dir = args.out_dir.resolve()
    (args.out_dir / "logs").mkdir(parents=True, exist_ok=True)

    if not args.no_install:
        ensure_tools()
    if not os.access(TIME, os.X_OK):
        sys.exit(f"{TIME} is missing: apt-get install -y time (or drop --no-install)")
    if not args.no_build:
        build_sluice()
    binaries = {name: str(REPO / b["path"]) for name, b in SLUICE_BINARIES.items()}

    # Inputs: given files, or the seed's dataset generated (or reused) in bench/data/.
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if args.csv or args.parquet:
        given = {"csv": args.csv, "parquet": args.parquet}
        inputs = {f: given[f].resolve() for f in formats if given.get(f)}
        counts = {f: count_rows(p) for f, p in inputs.items()}
        if len(set(counts.values())) != 1:
            sys.exit(f"the given inputs have different row counts: {counts}")
        rows = next(iter(counts.values()))
    else:
        sys.path.insert(0, str(BENCH))
        from gen_data import ensure_rows
        csv_path, pq_path = ensure_rows(args.rows, args.data_dir, log=log)
        inputs = {f: p for f, p in (("csv", csv_path), ("parquet", pq_path)) if f in formats}
        rows = args.rows
    formats = list(inputs)

    tools = BASELINES + PEERS + SLUICE + ([] if args.no_sweep else sweep_tools())
    if args.only:
        keys = [k.strip().lower() for k in args.only.split(",")]
        tools = [t for t in tools if any(k in t.name.lower() for k in keys)]

    log(f"{rows:,} rows, {args.runs} run(s) per measurement, interleaved, formats {formats}")
    # Every group is interleaved the same way: the baselines together, then per input
    # format all its tools (peers, sluice rows, sweep), then per scale size and format.
    baselines = [t for t in tools if t.group == "baseline"]
    results = measure_all(baselines, "-", inputs[formats[0]], rows, args, binaries) if baselines else []
    for fmt in formats:
        log(f"{fmt} input: {inputs[fmt]}")
        results += measure_all([t for t in tools if t.group != "baseline"], fmt, inputs[fmt], rows, args, binaries)

    scale_rows = [int(n) for n in args.scale_rows.split(",") if n.strip()]
    if scale_rows:
        sys.path.insert(0, str(BENCH))
        from gen_data import ensure_rows
        for n in scale_rows:
            csv_path, pq_path = ensure_rows(n, args.data_dir, log=log)
            for fmt in [f.strip() for f in args.scale_formats.split(",") if f.strip()]:
                path = {"csv": csv_path, "parquet": pq_path}[fmt]
                log(f"scale: {n:,} rows, {fmt}")
                results += measure_all(scale_tools(n), fmt, path, n, args, binaries, runs=args.scale_runs)

    invoked = os.environ.get("SLUICE_BENCH_INVOKED_AS", f"python {Path(__file__).relative_to(REPO)}")
    ctx = {
        "rows": rows, "runs": args.runs, "scale_runs": args.scale_runs, "formats": formats,
        "command": " ".join([invoked, *map(shlex.quote, raw_argv)]),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(), "versions": versions(binaries),
        "inputs": [(f, os.path.relpath(p, REPO), p.stat().st_size) for f, p in inputs.items()],
        "png": os.path.relpath(args.results_png.resolve(), args.results_md.resolve().parent),
    }
    args.results_md.parent.mkdir(parents=True, exist_ok=True)
    write_markdown(args.results_md, results, ctx)
    (args.out_dir / "results.json").write_text(json.dumps(
        [{"tool": r.tool.name, "format": r.fmt, "status": r.status, "walls_s": r.walls,
          "peak_rss_mib": r.rss_mb, "command": r.command, **r.tool.params} for r in results], indent=1))
    # Measurements are kept whatever happens to the picture (a run with --no-install on a
    # machine without matplotlib ended at the import below, before results.json).
    try:
        write_plot(args.results_png, results, ctx)
        log(f"wrote {args.results_md} and {args.results_png}")
    except ImportError as e:
        log(f"wrote {args.results_md}; {args.results_png} NOT updated ({e}): pip install matplotlib")
        return 1
    broken = [r for r in results if r.status.startswith(("wrong output", "failed", "timeout"))]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
