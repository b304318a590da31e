//! `sluice stream` from a real `redis-server`: every message exactly once at full speed
//! and across a SIGKILL, malformed messages to dead letters, SIGTERM drains.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use sluice_stream::testing::{redis_connection, redis_pending, redis_publish, Server};

use common::*;

fn url(server: &Server, stream: &str) -> String {
    format!(
        "redis://127.0.0.1:{}/{stream}?group=g&consumer=c1",
        server.port
    )
}

fn payload(i: u64) -> String {
    format!(
        r#"{{"id": {i}, "sensor": "s{}", "value": {}.5}}"#,
        i % 7,
        i % 1000
    )
}

/// The `id` column of every listed part.
fn output_ids(out: &Path) -> TestResult<Vec<i64>> {
    int_column(&read_output(out)?, "id")
}

fn assert_exactly(ids: &[i64], n: u64) {
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "{} duplicated rows",
        ids.len() - unique.len()
    );
    assert_eq!(ids.len() as u64, n, "rows missing");
    assert!(ids.iter().all(|&i| (0..n as i64).contains(&i)));
}

#[test]
fn a_million_messages_arrive_exactly_once() -> TestResult {
    const N: u64 = 1_000_000;
    let server = Server::redis();
    let mut con = redis_connection(server.port);
    redis_publish(&mut con, "big", (0..N).map(payload));
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let output = sluice()
        .args([
            "stream",
            "--quiet",
            "--from",
            &url(&server, "big"),
            "--output",
        ])
        .arg(&out)
        .args([
            "--stop-when-idle",
            "2s",
            "--rows-per-part",
            "250000",
            "--chunk-size",
            "20000",
        ])
        .output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_exactly(&output_ids(&out)?, N);
    assert_eq!(
        redis_pending(&mut con, "big", "g"),
        0,
        "every message acknowledged"
    );
    Ok(())
}

#[test]
fn a_consumer_killed_midway_and_restarted_yields_each_message_once() -> TestResult {
    const N: u64 = 200_000;
    let server = Server::redis();
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let from = url(&server, "live");
    let out_s = path_str(&out).to_string();
    let args = [
        "stream",
        "--quiet",
        "--from",
        &from,
        "--output",
        &out_s,
        "--rows-per-part",
        "5000",
        "--commit-interval",
        "200ms",
        "--chunk-size",
        "1000",
    ];
    let mut child = spawn(&args)?;
    // The producer keeps publishing while the consumer runs, is killed and restarts.
    let port = server.port;
    let producer = std::thread::spawn(move || {
        let mut con = redis_connection(port);
        for start in (0..N).step_by(2_000) {
            redis_publish(&mut con, "live", (start..start + 2_000).map(payload));
        }
    });
    let caught = wait_until(Duration::from_secs(60), || listed_parts(&out) >= 3);
    child.kill()?; // SIGKILL: no drain, no final manifest, acknowledgements cut short
    child.wait()?;
    assert!(caught, "no part was committed in time");
    assert_eq!(manifest(&out)?["status"], "running", "killed while running");
    producer.join().map_err(|_| "producer panicked")?;

    let mut restart = args.to_vec();
    restart.extend(["--stop-when-idle", "2s"]);
    let output = sluice().args(&restart).output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_exactly(&output_ids(&out)?, N);
    assert_only_listed_parts(&out, &manifest(&out)?)?;
    let mut con = redis_connection(server.port);
    assert_eq!(redis_pending(&mut con, "live", "g"), 0);
    Ok(())
}

#[test]
fn malformed_messages_go_to_dead_letters_and_the_stream_goes_on() -> TestResult {
    let server = Server::redis();
    let mut con = redis_connection(server.port);
    let bad = |i: u64| i % 100 == 50;
    redis_publish(
        &mut con,
        "mixed",
        (0..5_000u64).map(|i| match (bad(i), i % 200) {
            (true, 50) => "not json at all".to_string(),
            (true, _) => format!(r#"{{"id": "text {i}", "sensor": "s", "value": 1.0}}"#),
            (false, _) => payload(i),
        }),
    );
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let output = sluice()
        .args([
            "stream",
            "--quiet",
            "--from",
            &url(&server, "mixed"),
            "--output",
        ])
        .arg(&out)
        .args(["--stop-when-idle", "1s", "--chunk-size", "700"])
        .output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let mut ids = output_ids(&out)?;
    ids.sort();
    let expected: Vec<i64> = (0..5_000).filter(|&i| !bad(i as u64)).collect();
    assert_eq!(ids, expected);
    // The engine's rejects, listed in the manifest before they were acknowledged.
    let lines = listed_reject_lines(&out)?;
    assert_eq!(lines.len(), 50);
    assert!(lines
        .iter()
        .all(|l| l["id"].as_str().is_some_and(|id| id.contains('-'))));
    assert!(lines.iter().any(|l| l["raw"] == "not json at all"));
    assert_eq!(redis_pending(&mut con, "mixed", "g"), 0);
    Ok(())
}

#[test]
fn sigterm_drains_commits_and_acknowledges_then_exits_0() -> TestResult {
    const N: u64 = 100_000;
    let server = Server::redis();
    let mut con = redis_connection(server.port);
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let from = url(&server, "term");
    let out_s = path_str(&out).to_string();
    let args = [
        "stream",
        "--quiet",
        "--from",
        &from,
        "--output",
        &out_s,
        "--rows-per-part",
        "1000000",
        "--commit-interval",
        "30s",
        "--chunk-size",
        "500",
    ];
    let child = spawn(&args)?;
    redis_publish(&mut con, "term", (0..N).map(payload));
    // Parts commit every 30 s: the rows read so far sit in the open part until the drain.
    let caught = wait_until(Duration::from_secs(60), || {
        redis_pending(&mut con, "term", "g") > 0
    });
    // SAFETY: kill(2) on our own child's pid has no memory-safety requirements.
    let signalled = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let output = child.wait_with_output()?;
    assert!(caught && signalled == 0, "nothing was read in time");
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let m = manifest(&out)?;
    assert_eq!(m["status"], "stopped");
    let first = output_ids(&out)?;
    assert!(!first.is_empty(), "the drain committed what was read");
    assert_eq!(
        redis_pending(&mut con, "term", "g"),
        0,
        "and acknowledged it"
    );

    // The rest comes with the next run, nothing twice.
    let mut again = args.to_vec();
    again.extend(["--stop-when-idle", "1s"]);
    let output = sluice().args(&again).output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_exactly(&output_ids(&out)?, N);
    Ok(())
}
