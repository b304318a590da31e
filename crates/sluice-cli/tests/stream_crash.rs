//! `sluice stream` crashed (`SLUICE_FAILPOINT`: the process aborts) at each step of a
//! commit, against a real redis-server and nats-server: after a part's rename, after the
//! manifest's, after a ledger line, between the acknowledgements of one commit. Restarted
//! without the failpoint, every message is in the output exactly once and acknowledged.
//! Also: a folder is refused to another stream than its ledger names.

mod common;

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use sluice_stream::testing::{redis_connection, redis_pending, redis_publish, NatsClient, Server};

use common::*;

const N: u64 = 20_000;
const DURABLE: &str = "etl";

fn payload(i: u64) -> String {
    format!(r#"{{"id": {i}, "value": {}.5}}"#, i % 1000)
}

/// A broker holding `N` messages, and how to ask it what is left.
enum Broker {
    Redis(Server),
    Nats(Server, Box<NatsClient>),
}

impl Broker {
    fn redis() -> Self {
        let server = Server::redis();
        let mut con = redis_connection(server.port);
        redis_publish(&mut con, "crash", (0..N).map(payload));
        Broker::Redis(server)
    }

    fn nats() -> TestResult<Self> {
        let server = Server::nats();
        let client = NatsClient::connect(server.port)?;
        client.create_stream("CRASH", "crash");
        let stored = client.publish("CRASH", "crash", (0..N).map(payload)).len() as u64;
        assert_eq!(stored, N, "every message stored");
        Ok(Broker::Nats(server, Box::new(client)))
    }

    fn url(&self) -> String {
        match self {
            Broker::Redis(server) => format!(
                "redis://127.0.0.1:{}/crash?group=g&consumer=c1",
                server.port
            ),
            // A short ack_wait: what the dead instance held comes again 2 s after its
            // delivery even where the restart's release (-NAK) does not bring it sooner.
            Broker::Nats(server, _) => format!(
                "nats://127.0.0.1:{}/crash?stream=CRASH&durable={DURABLE}&ack_wait=2000",
                server.port
            ),
        }
    }

    /// Messages undelivered or delivered and not acknowledged, read once: after a clean
    /// exit every acknowledgement was confirmed by the broker.
    fn unacknowledged(&self) -> u64 {
        match self {
            Broker::Redis(server) => {
                redis_pending(&mut redis_connection(server.port), "crash", "g")
            }
            Broker::Nats(_, client) => {
                let (undelivered, unacknowledged) = client.pending("CRASH", DURABLE);
                undelivered + unacknowledged
            }
        }
    }
}

fn stream_args<'a>(from: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "stream",
        "--quiet",
        "--from",
        from,
        "--output",
        out,
        "--rows-per-part",
        "2000",
        "--commit-interval",
        "200ms",
        "--chunk-size",
        "1000",
    ]
}

fn assert_exactly_once(out: &Path) -> TestResult {
    let ids = int_column(&read_output(out)?, "id")?;
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "{} duplicated rows",
        ids.len() - unique.len()
    );
    assert_eq!(ids.len() as u64, N, "rows missing");
    assert!(ids.iter().all(|&i| (0..N as i64).contains(&i)));
    Ok(())
}

/// Runs the stream with `failpoint` armed (it must die there, by `abort`), then again
/// without it until idle: every message exactly once, only listed parts, nothing left
/// unacknowledged.
fn crash_then_restart(broker: Broker, failpoint: &str) -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let from = broker.url();
    let out_s = path_str(&out).to_string();
    let mut args = stream_args(&from, &out_s);
    // Bounded in case the failpoint is never reached (then the test fails, not hangs).
    args.extend(["--stop-when-idle", "10s"]);
    let crashed = sluice()
        .args(&args)
        .env("SLUICE_FAILPOINT", failpoint)
        .timeout(Duration::from_secs(120))
        .output()?;
    assert_eq!(
        crashed.status.signal(),
        Some(libc::SIGABRT),
        "{failpoint}: the run should abort there (is the binary built with failpoints?): {:?} {}",
        crashed.status,
        stderr_of(&crashed)
    );
    assert!(
        stderr_of(&crashed).contains(&format!(
            "failpoint {}",
            failpoint.split(':').next().unwrap_or("")
        )),
        "{}",
        stderr_of(&crashed)
    );
    let committed = read_output(&out).map_or(0, |b| b.iter().map(|b| b.num_rows()).sum());
    eprintln!("{failpoint}: crashed with {committed} rows committed");
    assert!((committed as u64) < N, "crashed before the end");

    let mut restart = stream_args(&from, &out_s);
    restart.extend(["--stop-when-idle", "5s"]);
    let output = sluice()
        .args(&restart)
        .env_remove("SLUICE_FAILPOINT")
        .timeout(Duration::from_secs(120))
        .output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_exactly_once(&out)?;
    assert_only_listed_parts(&out, &manifest(&out)?)?;
    assert!(
        !out.join(sluice::sink::folder::LOCK_FILE).exists(),
        "the lock goes with a clean exit"
    );
    assert_eq!(
        broker.unacknowledged(),
        0,
        "{failpoint}: left unacknowledged"
    );
    Ok(())
}

#[test]
fn redis_crash_after_a_part_rename() -> TestResult {
    crash_then_restart(Broker::redis(), "after-part-rename:2")
}

#[test]
fn redis_crash_after_the_manifest_rename() -> TestResult {
    crash_then_restart(Broker::redis(), "after-manifest-rename:2")
}

#[test]
fn redis_crash_after_a_ledger_write() -> TestResult {
    crash_then_restart(Broker::redis(), "after-ledger-write:3")
}

#[test]
fn redis_crash_between_the_acks_of_one_commit() -> TestResult {
    crash_then_restart(Broker::redis(), "between-acks:2")
}

#[test]
fn nats_crash_after_a_part_rename() -> TestResult {
    crash_then_restart(Broker::nats()?, "after-part-rename:2")
}

#[test]
fn nats_crash_after_the_manifest_rename() -> TestResult {
    crash_then_restart(Broker::nats()?, "after-manifest-rename:2")
}

#[test]
fn nats_crash_after_a_ledger_write() -> TestResult {
    crash_then_restart(Broker::nats()?, "after-ledger-write:3")
}

#[test]
fn nats_crash_between_the_acks_of_one_commit() -> TestResult {
    crash_then_restart(Broker::nats()?, "between-acks:2")
}

#[test]
fn a_folder_is_refused_to_another_stream_than_its_ledger_names() -> TestResult {
    let server = Server::redis();
    let mut con = redis_connection(server.port);
    redis_publish(&mut con, "first", (0..100).map(payload));
    redis_publish(&mut con, "second", (0..100).map(payload));
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let out_s = path_str(&out).to_string();
    let first = format!(
        "redis://127.0.0.1:{}/first?group=g&consumer=c1",
        server.port
    );
    let second = format!(
        "redis://127.0.0.1:{}/second?group=g&consumer=c1",
        server.port
    );
    let mut args = stream_args(&first, &out_s);
    args.extend(["--stop-when-idle", "1s"]);
    let output = sluice().args(&args).output()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let mut args = stream_args(&second, &out_s);
    args.extend(["--stop-when-idle", "1s"]);
    let output = sluice().args(&args).output()?;
    let text = stderr_of(&output);
    assert_ne!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("\"first\"") && text.contains("\"second\""),
        "names both streams: {text}"
    );
    assert_eq!(
        int_column(&read_output(&out)?, "id")?.len(),
        100,
        "untouched"
    );
    assert_eq!(
        redis_pending(&mut con, "second", "g"),
        0,
        "nothing of the other stream taken"
    );
    Ok(())
}
