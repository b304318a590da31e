//! After a SIGKILL, one restart with `--stop-when-idle` ends with every published message
//! in the output exactly once, without waiting out the broker's ack timeout, on real
//! `redis-server` and `nats-server -js`; and the idle limit does not end a run while the
//! broker still holds messages for the consumer.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use sluice_stream::ledger::LEDGER_FILE;
use sluice_stream::testing::{
    redis_connection, redis_lag, redis_pending, redis_publish, NatsClient, Server,
};

use common::*;

const N: u64 = 30_000;

fn payload(i: u64) -> String {
    format!(r#"{{"id": {i}, "value": {}.5}}"#, i % 1000)
}

fn assert_exactly(out: &Path, n: u64) -> TestResult {
    let ids = int_column(&read_output(out)?, "id")?;
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "{} duplicated rows",
        ids.len() - unique.len()
    );
    assert_eq!(ids.len() as u64, n, "rows missing");
    Ok(())
}

/// Message ids the ledger of `out` records (what the run has handed to the engine).
fn ledger_ids(out: &Path) -> usize {
    let Ok(text) = std::fs::read_to_string(out.join(LEDGER_FILE)) else {
        return 0;
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["ids"].as_array().map(Vec::len))
        .sum()
}

/// Parts commit only at the end (30 s, a million rows): what is read waits unacknowledged.
fn args<'a>(from: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "stream",
        "--from",
        from,
        "--output",
        out,
        "--rows-per-part",
        "1000000",
        "--commit-interval",
        "30s",
        "--chunk-size",
        "500",
    ]
}

/// Waits for `child` at most `limit`; kills it if it is still running then.
fn wait_or_kill(mut child: Child, limit: Duration) -> TestResult<Option<Output>> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait()?.is_some() {
            return Ok(Some(child.wait_with_output()?));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill()?;
    child.wait()?;
    Ok(None)
}

/// Kills a run once it holds every message unacknowledged (the ledger records all of
/// them), then restarts with an idle limit and a deadline well below the ack timeout.
fn kill_then_restart(from: &str, out: &Path, pending: impl Fn() -> (u64, u64)) -> TestResult {
    let out_s = path_str(out).to_string();
    let mut child = spawn(&args(from, &out_s))?;
    let caught = wait_until(Duration::from_secs(60), || {
        ledger_ids(out) as u64 == N && pending() == (0, N)
    });
    child.kill()?; // SIGKILL: nothing committed, nothing acknowledged
    child.wait()?;
    assert!(
        caught,
        "the run did not take every message in time: {:?}",
        pending()
    );
    assert_eq!(listed_parts(out), 0, "killed before any commit");
    let mut restart = args(from, &out_s);
    restart.extend(["--stop-when-idle", "2s"]);
    let child = spawn(&restart)?;
    // The ack timeout is 10 minutes: a restart that must wait it out fails here.
    let output = wait_or_kill(child, Duration::from_secs(90))?
        .ok_or("the restart did not end: it waited for the dead instance's messages")?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_exactly(out, N)?;
    assert_eq!(
        pending(),
        (0, 0),
        "(undelivered, unacknowledged) after the clean exit"
    );
    Ok(())
}

#[test]
fn nats_a_restart_after_sigkill_takes_back_what_the_dead_instance_held() -> TestResult {
    let server = Server::nats();
    let client = NatsClient::connect(server.port)?;
    client.publish("KILL", "kill", (0..N).map(payload));
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let from = format!(
        "nats://127.0.0.1:{}/kill?stream=KILL&durable=etl&ack_wait=600000",
        server.port
    );
    kill_then_restart(&from, &out, || client.pending("KILL", "etl"))
}

#[test]
fn redis_a_restart_after_sigkill_takes_back_what_the_dead_instance_held() -> TestResult {
    let server = Server::redis();
    let mut con = redis_connection(server.port);
    redis_publish(&mut con, "kill", (0..N).map(payload));
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let from = format!(
        "redis://127.0.0.1:{}/kill?group=g&consumer=c1&claim_idle=600000",
        server.port
    );
    let pending = || {
        let mut con = redis_connection(server.port);
        (
            redis_lag(&mut con, "kill", "g"),
            redis_pending(&mut con, "kill", "g"),
        )
    };
    kill_then_restart(&from, &out, pending)
}

#[test]
fn the_idle_limit_waits_while_the_broker_holds_messages_for_the_consumer() -> TestResult {
    // A dead instance's messages the ledger does not know (delivered to another durable
    // member and never recorded): the idle limit must not end the run while they are
    // unacknowledged; they come back after the (short) ack wait and are written.
    let server = Server::nats();
    let client = NatsClient::connect(server.port)?;
    client.publish("HELD", "held", (0..1_000).map(payload));
    // Another member of the durable takes 300 messages and dies without a word.
    let taken = client.take_unacknowledged("HELD", "etl", "held", 300, Duration::from_secs(3));
    assert_eq!(taken, 300);
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let from = format!(
        "nats://127.0.0.1:{}/held?stream=HELD&durable=etl&ack_wait=3000",
        server.port
    );
    let output = sluice()
        .args(["stream", "--quiet", "--from", &from, "--output"])
        .arg(&out)
        .args(["--stop-when-idle", "500ms", "--commit-interval", "100ms"])
        .output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_exactly(&out, 1_000)?;
    Ok(())
}

#[test]
fn a_second_stream_into_the_same_folder_is_refused_naming_the_holder() -> TestResult {
    let server = Server::redis();
    let mut con = redis_connection(server.port);
    redis_publish(&mut con, "two", (0..100).map(payload));
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let out_s = path_str(&out).to_string();
    let from = format!("redis://127.0.0.1:{}/two?group=g&consumer=c1", server.port);
    let mut first = spawn(&args(&from, &out_s))?;
    let reading = wait_until(Duration::from_secs(30), || ledger_ids(&out) == 100);
    let second = sluice()
        .args(["stream", "--quiet", "--from", &from, "--output", &out_s])
        .args(["--stop-when-idle", "1s"])
        .output();
    signal(first.id(), libc::SIGTERM)?;
    let drained = first.wait()?;
    assert!(reading, "the first run did not read in time");
    let second = second?;
    assert_ne!(
        second.status.code(),
        Some(0),
        "the second writer was let in"
    );
    let error = stderr_of(&second);
    assert!(
        error.contains(&format!("is being written by process {}", first.id())),
        "{error}"
    );
    assert_eq!(drained.code(), Some(0));
    assert_exactly(&out, 100)?;
    Ok(())
}
