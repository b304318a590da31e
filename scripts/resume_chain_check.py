#!/usr/bin/env python3
"""A chain of runs into one output folder, by hand (issue 11's acceptance check):

  1-3. `sluice run` (then `--resume`) killed with SIGKILL at three different points;
  4.   a `--resume` that fails on a bad row (it must keep every part committed before it);
  5.   a `--resume --on-error dead-letter=DIR` that completes the chain.

Then: output parts (in manifest order) + dead letters hold every input row exactly once, and
the parts are in input order. Usage:

    python3 scripts/resume_chain_check.py [--rows 20000000] [--binary target/release/sluice]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq


def write_input(path, rows):
    """ids 0..rows with a float and a string column, as CSV, written in blocks."""
    block = 1_000_000
    with pacsv.CSVWriter(path, pa.schema([("id", pa.int64()), ("x", pa.float64()), ("name", pa.string())])) as w:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            ids = pa.array(range(start, start + n), pa.int64())
            w.write_table(pa.table({
                "id": ids,
                "x": pa.array([i * 0.5 for i in range(start, start + n)]),
                "name": pa.array([f"n{i}" for i in range(start, start + n)]),
            }))


def manifest(out):
    try:
        with open(os.path.join(out, "_manifest.json"), encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run(binary, args, kill_after_parts=None):
    """Runs the binary; with kill_after_parts, SIGKILLs it once the manifest lists that
    many parts (polling the manifest: the event we wait on)."""
    proc = subprocess.Popen([binary] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_after_parts is None:
        out, err = proc.communicate()
        return proc.returncode, err
    out_dir = args[args.index("--output") + 1]
    while proc.poll() is None:
        m = manifest(out_dir)
        if m and len(m["parts"]) >= kill_after_parts:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return "killed", f"killed with {len(m['parts'])} parts listed"
        time.sleep(0.05)
    return proc.returncode, proc.stderr.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--binary", default="target/release/sluice")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    a = ap.parse_args()
    rows = a.rows
    bad = int(rows * 0.8)  # the bad row: near the end
    work = tempfile.mkdtemp(prefix="sluice-chain-")
    inp = os.path.join(work, "in.csv")
    out = os.path.join(work, "out")
    letters = os.path.join(work, "dead")
    t = time.time()
    write_input(inp, rows)
    print(f"input: {rows} rows, {os.path.getsize(inp) / 1e6:.0f} MB ({time.time() - t:.1f} s)")
    sql = (f"SELECT id, CAST(CASE WHEN id = {bad} THEN 'bad' ELSE CAST(id AS VARCHAR) END AS BIGINT) AS v, "
           f"x * 2 AS y FROM chunk")
    base = ["run", "--quiet", "--input", inp, "--output", out, "--sql-text", sql,
            "--rows-per-part", str(max(rows // 40, 1000)), "--max-memory", "256MB"]
    steps = []
    parts_total = 40
    for i, at in enumerate([2, 5, 9]):
        args = base if i == 0 else [base[0], "--resume"] + base[1:]
        code, err = run(a.binary, args, kill_after_parts=at)
        m = manifest(out)
        steps.append(f"run {i + 1}: {code}; manifest {m['status']}, {len(m['parts'])} parts")
        assert code == "killed", f"run {i + 1} ended before the kill ({code}): {err}"
    before = manifest(out)
    kept = [p["file"] for p in before["parts"]]
    code, err = run(a.binary, [base[0], "--resume"] + base[1:])
    m = manifest(out)
    steps.append(f"run 4 (fails on row {bad}): exit {code}; manifest {m['status']}, {len(m['parts'])} parts; "
                 f"error: {err.strip().splitlines()[-1] if err.strip() else ''}")
    assert code == 1, f"the resume should fail on row {bad}: {code} {err}"
    assert m["status"] == "failed"
    listed = [p["file"] for p in m["parts"]]
    assert listed[: len(kept)] == kept, "the failed resume dropped parts of the earlier runs"
    assert all(os.path.exists(os.path.join(out, f)) for f in listed), "a listed part is missing"
    import re
    named = re.search(r"input rows (\d+)\.\.(\d+)", err)
    assert named and int(named.group(1)) <= bad < int(named.group(2)), f"the error does not name the rows holding {bad}: {err}"
    code, err = run(a.binary, [base[0], "--resume", "--on-error", f"dead-letter={letters}"] + base[1:])
    m = manifest(out)
    steps.append(f"run 5 (dead letters): exit {code}; manifest {m['status']}, {len(m['parts'])} parts, "
                 f"{len(m.get('dead_letters', []))} dead letters listed")
    assert code == 0, err
    assert m["status"] == "complete"
    for s in steps:
        print(s)

    # Every row exactly once: parts in manifest order, in input order; plus dead letters.
    ids = []
    for p in m["parts"]:
        ids.append(pq.read_table(os.path.join(out, p["file"]), columns=["id"]).column("id"))
    out_ids = pa.chunked_array([c for col in ids for c in col.chunks]).to_numpy()
    dead_ids = []
    for name in sorted(os.listdir(letters)):
        if name.endswith(".arrow"):
            with ipc.open_file(os.path.join(letters, name)) as r:
                dead_ids.extend(r.read_all().column("id").to_pylist())
    print(f"output rows: {len(out_ids)}, dead-letter rows: {len(dead_ids)} (ids {min(dead_ids)}..{max(dead_ids)})")
    import numpy as np
    assert (np.diff(out_ids) > 0).all(), "the output is not in input order"
    every = np.sort(np.concatenate([out_ids, np.array(dead_ids, dtype=np.int64)]))
    assert len(every) == rows and (every == np.arange(rows)).all(), "a row is lost or duplicated"
    assert bad in dead_ids
    print(f"OK: output + dead letters hold each of the {rows} rows exactly once; output in order")
    if not a.keep:
        shutil.rmtree(work)
    else:
        print("kept", work)


if __name__ == "__main__":
    sys.exit(main())
