//! The memory budget as the operating system sees it: the `sluice` binary's peak resident
//! memory on a CSV file several times larger than `--max-memory` stays under the budget
//! plus what the same binary needs on a tiny file (its baseline) plus a stated margin.
//! The engine's own counter is checked elsewhere; this bounds everything it does not count.

mod common;

use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

const MIB: u64 = 1 << 20;
/// `--max-memory`.
const BUDGET: u64 = 64 * MIB;
/// Size of the generated CSV: several times the budget, so a run that held its input (or
/// a growing share of it) would be far over the bound.
const INPUT_BYTES: u64 = 300 * MIB;
/// What the budget does not count, on top of the baseline. The budget holds the Arrow
/// buffers of the chunks in the engine (read-ahead, in the function, waiting to be
/// written) and the Parquet writer's buffered column chunks; outside it are the raw CSV
/// blocks while they are parsed, the encoders' scratch space, and the allocator: glibc
/// keeps freed buffers in per-thread arenas (reader, workers, writer) and gives them back
/// late, so the resident set runs ahead of the live bytes. Measured on the 2-core CI
/// machine with 2 workers: peak - baseline - budget = 24-29 MiB at a 64 MiB budget (with
/// or without SQL), ~30 MiB at 32 MiB, about 0 from 256 MiB up (the share the budget
/// leaves to read-ahead absorbs it); `MALLOC_ARENA_MAX=2` cuts ~12 MiB of it, which is
/// the allocator's part. 48 MiB leaves half as much again for another machine's
/// allocator timing, and stays far below what a run that ignored the budget reaches
/// (with `--max-memory 4GB` the same run peaks ~320 MiB over its baseline).
const MARGIN: u64 = 48 * MIB;

/// Writes `id,x,name,category,score` rows until the file holds at least `bytes`; returns
/// the number of rows.
fn write_csv(path: &Path, bytes: u64) -> TestResult<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    out.write_all(b"id,x,name,category,score\n")?;
    let mut written = 25u64;
    let mut rows = 0u64;
    let mut line = String::with_capacity(128);
    while written < bytes {
        line.clear();
        use std::fmt::Write as _;
        let category = ["alpha", "beta", "gamma"][(rows % 3) as usize];
        writeln!(
            line,
            "{rows},{:.6},customer-{rows:010},{category},{}",
            rows as f64 * 0.001,
            rows % 1000
        )?;
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
        rows += 1;
    }
    out.flush()?;
    Ok(rows)
}

/// Runs the binary to the end and returns its peak resident set in bytes. `wait4` hands
/// back the child's resource usage as it is reaped: `ru_maxrss` is the kernel's high-water
/// mark of its resident set (what /proc/PID/status shows as VmHWM, and `time -v` as
/// "Maximum resident set size"), over the whole life of the process, not a sample.
fn peak_rss(args: &[&str]) -> TestResult<u64> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Read stderr to the end first (a full pipe would block the child). Not `wait`: that
    // would reap the child and lose its usage; dropping a `Child` neither waits nor kills.
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr)?;
    }
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 only writes it and `status`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not reaped yet; both pointers are valid and writable.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if reaped != pid {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()).into());
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!("sluice {args:?} failed ({status:#x}): {stderr}").into());
    }
    // Linux reports ru_maxrss in KiB.
    Ok(usage.ru_maxrss as u64 * 1024)
}

fn run_args<'a>(input: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "run",
        "--quiet",
        "--max-memory",
        "64MB",
        // Fixed, so the threads (and their allocator arenas) do not vary with the machine.
        "--workers",
        "2",
        "--input",
        path_str(input),
        "--output",
        path_str(out),
        "--sql-text",
        "SELECT id, x * 2 AS x2, upper(name) AS name, category, score FROM chunk",
    ]
}

#[cfg(target_os = "linux")]
#[test]
fn peak_rss_stays_within_the_budget_plus_the_baseline() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tiny = dir.path().join("tiny.csv");
    write_csv(&tiny, 4096)?;
    let big = dir.path().join("big.csv");
    let rows = write_csv(&big, INPUT_BYTES)?;

    // Same binary, same flags, a file of a few rows: code, DataFusion's start-up, threads.
    let baseline = peak_rss(&run_args(&tiny, &dir.path().join("out-tiny")))?;
    let out = dir.path().join("out-big");
    let peak = peak_rss(&run_args(&big, &out))?;

    let m = manifest(&out)?;
    assert_eq!(m["status"], "complete");
    assert_eq!(m["total_rows"], rows, "every row written");
    let bound = BUDGET + baseline + MARGIN;
    eprintln!(
        "peak RSS {} MiB = baseline {} MiB + {} MiB; bound {} MiB (budget {} + margin {})",
        peak / MIB,
        baseline / MIB,
        peak.saturating_sub(baseline) / MIB,
        bound / MIB,
        BUDGET / MIB,
        MARGIN / MIB
    );
    assert!(
        peak <= bound,
        "peak RSS {peak} bytes over the bound {bound} (baseline {baseline})"
    );
    Ok(())
}

/// The same bound on a `--windows global` run, whose pass 2 reads pass 1's Arrow copy of
/// the CSV. (A release build at 256 MB on 30M rows, where read-ahead over the cheap-to-decode
/// copy fills the budget, peaks over this kind of bound; this test build is too slow to
/// fill it that way, so it does not catch that: it bounds the global path at 64 MB as the
/// test above bounds the per-chunk one.)
#[cfg(target_os = "linux")]
#[test]
fn a_global_run_stays_within_the_budget_plus_the_baseline() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tiny = dir.path().join("tiny.csv");
    write_csv(&tiny, 4096)?;
    let big = dir.path().join("big.csv");
    let rows = write_csv(&big, INPUT_BYTES)?;
    let global = |input: &Path, out: &Path| -> TestResult<u64> {
        let mut args = run_args(input, out);
        let sql = args.len() - 1;
        args[sql] = "SELECT id, (x - AVG(x) OVER ()) / STDDEV_SAMP(x) OVER () AS zx, \
                     upper(name) AS name, category, score FROM chunk";
        args.extend(["--windows", "global"]);
        peak_rss(&args)
    };
    let baseline = global(&tiny, &dir.path().join("out-tiny"))?;
    let out = dir.path().join("out-big");
    let peak = global(&big, &out)?;
    let m = manifest(&out)?;
    assert_eq!(m["status"], "complete");
    assert_eq!(m["total_rows"], rows, "every row written");
    let bound = BUDGET + baseline + MARGIN;
    eprintln!(
        "global: peak RSS {} MiB = baseline {} MiB + {} MiB; bound {} MiB",
        peak / MIB,
        baseline / MIB,
        peak.saturating_sub(baseline) / MIB,
        bound / MIB
    );
    assert!(
        peak <= bound,
        "peak RSS {peak} bytes over the bound {bound} (baseline {baseline})"
    );
    Ok(())
}
