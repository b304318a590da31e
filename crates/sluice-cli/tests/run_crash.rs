//! `sluice run` crashed (`SLUICE_FAILPOINT`: the process aborts) after a part's rename and
//! after the manifest's, then resumed: every input row exactly once, in order. And one
//! writer per folder: a second run into a folder another is writing is refused, naming
//! the holder's pid, and leaves the first run's output alone.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use sluice::sink::folder::LOCK_FILE;

use common::*;

const ROWS: i64 = 50_000;

fn run_args<'a>(input: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "run",
        "--quiet",
        "--fixed-chunks",
        "--chunk-size",
        "2000",
        "--rows-per-part",
        "5000",
        "--input",
        path_str(input),
        "--output",
        path_str(out),
    ]
}

fn crash_then_resume(failpoint: &str) -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("in.parquet");
    write_ids(&input, ROWS)?;
    let out = dir.path().join("out");
    let crashed = sluice()
        .args(run_args(&input, &out))
        .env("SLUICE_FAILPOINT", failpoint)
        .output()?;
    assert_eq!(
        crashed.status.signal(),
        Some(libc::SIGABRT),
        "{failpoint}: should abort there: {:?} {}",
        crashed.status,
        stderr_of(&crashed)
    );
    assert_eq!(manifest(&out)?["status"], "running", "died mid-run");
    assert!(out.join(LOCK_FILE).exists(), "a crash leaves the lock file");
    let mut resume = run_args(&input, &out);
    resume.push("--resume");
    let output = sluice()
        .args(&resume)
        .env_remove("SLUICE_FAILPOINT")
        .output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let m = manifest(&out)?;
    assert_eq!(m["status"], "complete");
    assert_only_listed_parts(&out, &m)?;
    let ids = int_column(&read_output(&out)?, "id")?;
    assert_eq!(
        ids,
        (0..ROWS).collect::<Vec<_>>(),
        "every row once, in order"
    );
    assert!(!out.join(LOCK_FILE).exists(), "released by the clean exit");
    Ok(())
}

#[test]
fn a_run_crashed_after_a_part_rename_resumes_exactly_once() -> TestResult {
    crash_then_resume("after-part-rename:3")
}

#[test]
fn a_run_crashed_after_the_manifest_rename_resumes_exactly_once() -> TestResult {
    crash_then_resume("after-manifest-rename:3")
}

#[test]
fn a_second_writer_is_refused_while_the_first_runs() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("in.parquet");
    let rows = 10 * slow_chunk_rows();
    write_ids(&input, rows)?;
    let out = dir.path().join("out");
    let chunk = SLOW_CHUNK.to_string();
    let first_args = [
        "run",
        "--quiet",
        "--fixed-chunks",
        "--chunk-size",
        &chunk,
        "--rows-per-part",
        &chunk,
        "--workers",
        "1",
        "--input",
        path_str(&input),
        "--output",
        path_str(&out),
        "--sql-text",
        SLOW_SQL,
    ];
    let mut first = spawn(&first_args)?;
    let caught = wait_until(Duration::from_secs(60), || listed_parts(&out) >= 1);
    // A supervisor restarting the job while the first still runs.
    let mut second_args = first_args.to_vec();
    second_args.push("--resume");
    let second = sluice().args(&second_args).output()?;
    let pid = first.id();
    let status = first.wait()?;
    assert!(caught, "no part was committed in time");
    let err = stderr_of(&second);
    assert_ne!(second.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("process {pid}")) && err.contains(LOCK_FILE),
        "names the holder: {err}"
    );
    assert_eq!(status.code(), Some(0), "the first run is left alone");
    let m = manifest(&out)?;
    assert_eq!(m["status"], "complete");
    assert_only_listed_parts(&out, &m)?;
    check_slow_output(&read_output(&out)?, rows)?;
    Ok(())
}
