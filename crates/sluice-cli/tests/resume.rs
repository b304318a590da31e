//! Stopping and resuming through the real binary: a run killed with SIGKILL midway, then
//! rerun with --resume, holds every input row exactly once and in order; SIGINT stops a run
//! cleanly (exit 130, manifest "stopped", no temporary file); a complete run is left alone.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// Chunks of the input: the tests catch a run after one or two, so the rest of them,
/// each made slow by its query rather than by the input's size, is still to come.
const CHUNKS: i64 = 10;

fn rows() -> i64 {
    CHUNKS * slow_chunk_rows()
}

/// A run that can be caught midway whatever the machine: fixed chunks through the
/// quadratic [`SLOW_SQL`], one worker, one part per chunk.
fn slow_run_args<'a>(input: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "run",
        "--quiet",
        "--fixed-chunks",
        "--chunk-size",
        SLOW_CHUNK,
        "--rows-per-part",
        SLOW_CHUNK,
        "--workers",
        "1",
        "--input",
        path_str(input),
        "--output",
        path_str(out),
        "--sql-text",
        SLOW_SQL,
    ]
}

fn check_complete(out: &Path) -> TestResult {
    let m = manifest(out)?;
    assert_eq!(m["status"], "complete");
    check_slow_output(&read_output(out)?, rows())?;
    // Input ranges in the manifest are absolute and follow each other.
    let parts = m["parts"].as_array().ok_or("parts")?;
    let mut end = 0;
    for p in parts {
        assert_eq!(p["input_row_start"], end, "{p}");
        end = p["input_row_end"].as_u64().ok_or("end")?;
    }
    assert_eq!(end, rows() as u64);
    assert!(part_files(out)?.1.is_empty(), "temporaries left");
    Ok(())
}

#[test]
fn a_killed_run_resumes_with_every_row_exactly_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("ids.csv");
    write_ids(&input, rows())?;
    let out = dir.path().join("out");
    let mut child = spawn(&slow_run_args(&input, &out))?;
    // Two of ten chunks are written: eight slow ones are still to come.
    let caught = wait_until(Duration::from_secs(120), || listed_parts(&out) >= 2);
    child.kill()?; // SIGKILL: no chance to clean up
    child.wait()?;
    assert!(caught, "no part was listed in time");
    let m = manifest(&out)?;
    assert_eq!(
        m["status"], "running",
        "the run finished before it was killed"
    );
    let kept = listed_parts(&out);

    let mut args = slow_run_args(&input, &out);
    args[1] = "--resume";
    let output = sluice().args(&args).output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    check_complete(&out)?;
    assert!(manifest_parts(&out)?.len() > kept);

    // Resuming a complete run does nothing.
    let before = std::fs::read_to_string(out.join("_manifest.json"))?;
    let output = sluice().args(&args).output()?;
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stdout_of(&output).contains("already complete"),
        "{}",
        stdout_of(&output)
    );
    assert_eq!(std::fs::read_to_string(out.join("_manifest.json"))?, before);
    Ok(())
}

#[test]
fn sigint_stops_cleanly_and_the_run_can_be_resumed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("ids.parquet");
    write_ids(&input, rows())?;
    let out = dir.path().join("out");
    let mut args = slow_run_args(&input, &out);
    args[1] = "--verbose";
    let child = spawn(&args)?;
    let caught = wait_until(Duration::from_secs(120), || listed_parts(&out) >= 1);
    let signalled = signal(child.id(), libc::SIGINT);
    let output = child.wait_with_output()?;
    assert!(caught, "no part was listed in time");
    signalled?;
    assert_eq!(output.status.code(), Some(130), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains("--resume"),
        "{}",
        stderr_of(&output)
    );
    let m = manifest(&out)?;
    assert_eq!(m["status"], "stopped");
    assert_only_listed_parts(&out, &m)?;

    args[1] = "--resume";
    let output = sluice().args(&args).output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    check_complete(&out)
}

#[test]
fn resume_refuses_a_different_input() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("ids.csv");
    write_ids(&input, 2_000)?;
    let out = dir.path().join("out");
    let output = sluice()
        .args([
            "run",
            "--quiet",
            "--rows-per-part",
            "500",
            "--input",
            path_str(&input),
            "--output",
            path_str(&out),
        ])
        .output()?;
    assert_eq!(output.status.code(), Some(0));
    // Make it look interrupted, then change the input.
    let text =
        std::fs::read_to_string(out.join("_manifest.json"))?.replace("\"complete\"", "\"stopped\"");
    std::fs::write(out.join("_manifest.json"), text)?;
    write_ids(&input, 3_000)?;
    let output = sluice()
        .args([
            "run",
            "--resume",
            "--input",
            path_str(&input),
            "--output",
            path_str(&out),
        ])
        .output()?;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("input differs"),
        "{}",
        stderr_of(&output)
    );
    Ok(())
}
