//! The NATS JetStream source against a real `nats-server -js`: every message exactly once
//! at full speed, and across a SIGKILL of the consumer while the producer keeps publishing
//! (the test runs its own binary again as the consumer process); malformed messages go to
//! dead letters with their stream sequences and the stream goes on.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::Int64Array;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice::{BoxError, ErrorPolicy, Manifest, StreamingDataPipeline};
use sluice_stream::testing::{NatsClient, Server};
use sluice_stream::{Address, OutputSettings, SourceOptions, StreamControl, StreamSummary};

const CHILD_URL: &str = "SLUICE_TEST_NATS_CHILD_URL";
const CHILD_OUT: &str = "SLUICE_TEST_NATS_CHILD_OUT";

fn payload(i: u64) -> String {
    format!(
        r#"{{"id": {i}, "sensor": "s{}", "value": {}.5}}"#,
        i % 7,
        i % 1000
    )
}

fn url(server_port: u16, subject: &str, stream: &str, ack_wait_ms: u64) -> String {
    format!("nats://127.0.0.1:{server_port}/{subject}?stream={stream}&durable=etl&ack_wait={ack_wait_ms}")
}

fn settings(out: &Path, rows_per_part: u64) -> OutputSettings {
    OutputSettings {
        dir: out.to_path_buf(),
        format: None,
        rows_per_part,
        commit_interval: Duration::from_millis(200),
    }
}

/// Runs the stream at `url` into `settings.dir` until `done(rows committed by earlier
/// runs, messages this run turned into rows, malformed ones)` holds, or `limit` passes
/// (then the caller's exact counts fail).
fn run_until(
    url: &str,
    settings: &OutputSettings,
    policy: ErrorPolicy,
    limit: Duration,
    done: impl Fn(u64, u64, u64) -> bool + Send + 'static,
) -> StreamSummary {
    let pipeline = Arc::new(
        StreamingDataPipeline::builder()
            .chunk_size(10_000)
            .max_memory_mb(256.0)
            .num_workers(2)
            .error_policy(policy)
            .build()
            .expect("settings"),
    );
    let prepared = sluice_stream::prepare(settings).expect("prepare");
    let before = prepared.committed_rows;
    let control = Arc::new(StreamControl::default());
    let options = SourceOptions {
        max_latency: Duration::from_millis(100),
        stop_when_idle: None,
        schema: None,
    };
    let address = Address::parse(url).expect("address");
    let opened = sluice_stream::open(
        &address,
        &prepared,
        settings,
        options.clone(),
        control.clone(),
    )
    .expect("open");
    let source = opened.source.expect("a message came");
    let watcher = {
        let control = control.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            loop {
                let messages = control.messages.load(std::sync::atomic::Ordering::Relaxed);
                let bad = control.malformed.load(std::sync::atomic::Ordering::Relaxed);
                if done(before, messages, bad) || started.elapsed() > limit {
                    break;
                }
                // Polling counters the source keeps (an event), with a deadline.
                std::thread::sleep(Duration::from_millis(20));
            }
            control.stop();
        })
    };
    let function = Arc::new(|b: RecordBatch| -> Result<RecordBatch, BoxError> { Ok(b) });
    let summary = sluice_stream::run(
        &pipeline,
        source,
        opened.ledger,
        &|_schema| Ok(function.clone()),
        prepared,
        settings,
        &options,
        &control,
    )
    .expect("run");
    watcher.join().expect("watcher");
    summary
}

/// The `id` column of every part the manifest lists.
fn output_ids(out: &Path) -> Vec<i64> {
    let manifest = Manifest::read_from(out).expect("manifest");
    let mut ids = Vec::new();
    for part in manifest.parts {
        let file = std::fs::File::open(out.join(&part.file)).expect("part file");
        for batch in ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader")
        {
            let batch = batch.expect("batch");
            let col = batch
                .column_by_name("id")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
                .expect("an Int64 id column");
            ids.extend(col.values().iter().copied());
        }
    }
    ids
}

/// The consumer's (undelivered, unacknowledged) counts once they are both zero, or after
/// 10 s: the server applies acknowledgements a moment after it received them.
fn settled_pending(client: &NatsClient, stream: &str) -> (u64, u64) {
    let started = Instant::now();
    loop {
        let pending = client.pending(stream, "etl");
        if pending == (0, 0) || started.elapsed() > Duration::from_secs(10) {
            return pending;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_exactly_once(ids: &[i64], expected: impl IntoIterator<Item = i64>) {
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "{} duplicated rows",
        ids.len() - unique.len()
    );
    let expected: HashSet<i64> = expected.into_iter().collect();
    let missing = expected.difference(&unique).count();
    let extra = unique.difference(&expected).count();
    assert_eq!((missing, extra), (0, 0), "rows missing, rows not published");
}

#[test]
fn a_million_messages_published_at_full_speed_arrive_exactly_once() {
    const N: u64 = 1_000_000;
    let server = Server::nats();
    let client = NatsClient::connect(server.port).expect("client");
    client.create_stream("BIG", "big");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let started = Instant::now();
    // Published while the stream reads it.
    let port = server.port;
    let producer = std::thread::spawn(move || {
        let client = NatsClient::connect(port).expect("client");
        let sequences = client.publish("BIG", "big", (0..N).map(payload));
        (sequences.len() as u64, started.elapsed())
    });
    let summary = run_until(
        &url(server.port, "big", "BIG", 30_000),
        &settings(&out, 200_000),
        ErrorPolicy::Fail,
        Duration::from_secs(600),
        |_, messages, _| messages >= N,
    );
    let (published, publish_time) = producer.join().expect("producer");
    let elapsed = started.elapsed();
    eprintln!(
        "{published} published in {publish_time:.1?}, {} read and committed in {elapsed:.1?} \
         ({:.0} messages/s), {} duplicate deliveries dropped",
        summary.messages,
        summary.messages as f64 / elapsed.as_secs_f64(),
        summary.duplicates
    );
    assert_eq!(published, N);
    assert_exactly_once(&output_ids(&out), 0..N as i64);
    assert_eq!(summary.acked, N);
    assert_eq!(
        settled_pending(&client, "BIG"),
        (0, 0),
        "(undelivered, unacked)"
    );
}

/// The consumer process of the SIGKILL test: runs the stream until killed (or for five
/// minutes, should the parent be gone).
#[test]
#[ignore = "run (and killed) by nats_consumer_killed_midway_then_restarted_yields_each_message_once"]
fn nats_consumer_child() {
    let (Ok(url), Ok(out)) = (std::env::var(CHILD_URL), std::env::var(CHILD_OUT)) else {
        return;
    };
    run_until(
        &url,
        &settings(Path::new(&out), 10_000),
        ErrorPolicy::Fail,
        Duration::from_secs(300),
        |_, _, _| false,
    );
}

fn committed_parts(out: &Path) -> usize {
    // Written by rename, so a read sees a whole manifest or none.
    Manifest::read_from(out).map_or(0, |m| m.parts.len())
}

#[test]
fn nats_consumer_killed_midway_then_restarted_yields_each_message_once() {
    const N: u64 = 200_000;
    let server = Server::nats();
    let client = NatsClient::connect(server.port).expect("client");
    client.create_stream("CRASH", "crash");
    let dir = tempfile::tempdir().expect("tempdir");
    let out: PathBuf = dir.path().join("out");
    // A short ack_wait: what the killed consumer held comes again 2 s after it was
    // delivered, not 30 s.
    let url = url(server.port, "crash", "CRASH", 2_000);
    let port = server.port;
    let producer = std::thread::spawn(move || {
        let client = NatsClient::connect(port).expect("client");
        let mut published = 0;
        for start in (0..N).step_by(10_000) {
            published += client
                .publish("CRASH", "crash", (start..start + 10_000).map(payload))
                .len() as u64;
        }
        published
    });

    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "nats_consumer_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_URL, &url)
        .env(CHILD_OUT, &out)
        .stdout(Stdio::null())
        .spawn()
        .expect("the consumer process");
    let started = Instant::now();
    // Killed once it committed a few parts, while it holds more.
    while committed_parts(&out) < 3 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the consumer ended before it was killed: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the consumer committed no 3 parts in 120 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let at_kill = Manifest::read_from(&out).expect("manifest");
    let committed: u64 = at_kill.parts.iter().map(|p| p.rows).sum();
    let (_, unacked) = client.pending("CRASH", "etl");
    eprintln!("killed after {committed} rows committed, {unacked} delivered and unacknowledged");
    assert!(
        committed > 0 && committed < N,
        "killed midway: {committed} committed"
    );
    assert!(
        unacked > 0,
        "the kill left nothing to redeliver: the test tests nothing"
    );

    let published = producer.join().expect("producer");
    assert_eq!(published, N);
    let summary = run_until(
        &url,
        &settings(&out, 10_000),
        ErrorPolicy::Fail,
        Duration::from_secs(300),
        |before, messages, _| before + messages >= N,
    );
    eprintln!(
        "restart: {} messages, {} duplicate deliveries dropped, {} acknowledged",
        summary.messages, summary.duplicates, summary.acked
    );
    assert_exactly_once(&output_ids(&out), 0..N as i64);
    assert_eq!(
        settled_pending(&client, "CRASH"),
        (0, 0),
        "(undelivered, unacked)"
    );
}

#[test]
fn malformed_messages_go_to_dead_letters_with_their_sequences_and_the_stream_goes_on() {
    let server = Server::nats();
    let client = NatsClient::connect(server.port).expect("client");
    let good = |range: std::ops::Range<u64>| range.map(payload).collect::<Vec<_>>();
    client.publish("MIXED", "mixed", good(0..1_000));
    let bad = client.publish(
        "MIXED",
        "mixed",
        [
            "not json".to_string(),
            "[1, 2]".to_string(),
            r#"{"id": "text", "sensor": "s", "value": 1.5}"#.to_string(),
        ],
    );
    client.publish("MIXED", "mixed", good(1_000..2_000));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let letters = dir.path().join("dead");
    let summary = run_until(
        &url(server.port, "mixed", "MIXED", 30_000),
        &settings(&out, 500),
        ErrorPolicy::DeadLetter(letters.clone()),
        Duration::from_secs(60),
        |_, messages, bad| messages + bad >= 2_003,
    );
    assert_eq!((summary.messages, summary.malformed), (2_000, 3));
    assert_exactly_once(&output_ids(&out), 0..2_000);
    // The engine's rejects, listed in the manifest (and acknowledged after it).
    let manifest = Manifest::read_from(&out).expect("manifest");
    let listed: Vec<_> = manifest
        .dead_letters
        .iter()
        .filter(|l| l.kind == sluice::LetterKind::Rejects)
        .collect();
    assert_eq!(
        listed.iter().map(|l| l.count).sum::<u64>(),
        3,
        "listed: {listed:?}"
    );
    let mut text = String::new();
    for letter in &listed {
        assert!(letter.path.starts_with(&letters), "{:?}", letter.path);
        text.push_str(&std::fs::read_to_string(&letter.path).expect("dead letters"));
    }
    let mut ids: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["id"].as_str().expect("an id").to_string()
        })
        .collect();
    ids.sort();
    let mut expected: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(ids, expected, "the malformed messages' stream sequences");
    assert_eq!(
        settled_pending(&client, "MIXED"),
        (0, 0),
        "(undelivered, unacked)"
    );
}

/// What the ledger relies on across a crash: a message delivered again keeps its id (the
/// stream sequence), and the reply subject of its first delivery, recorded before the
/// crash, still acknowledges it after the redelivery.
#[test]
fn a_redelivery_keeps_the_id_and_the_first_reply_subject_still_acknowledges() {
    use sluice_stream::{Acker, Broker};
    let server = Server::nats();
    let client = NatsClient::connect(server.port).expect("client");
    let sequences = client.publish("RE", "re", (0..100).map(payload));
    let expected: HashSet<String> = sequences.iter().map(|s| s.to_string()).collect();
    let Address::Nats(address) = Address::parse(&url(server.port, "re", "RE", 300)).expect("url")
    else {
        panic!("not a NATS address");
    };
    let fetch_all = |broker: &mut dyn Broker| {
        let started = Instant::now();
        let mut got = Vec::new();
        while got.len() < 100 && started.elapsed() < Duration::from_secs(10) {
            got.extend(
                broker
                    .fetch(100, Duration::from_millis(100))
                    .expect("fetch"),
            );
        }
        got
    };
    let (mut broker, acker) = sluice_stream::nats::open(address.clone()).expect("open");
    let first = fetch_all(&mut broker);
    drop((broker, acker)); // a crash: nothing acknowledged
    let (mut broker, mut acker) = sluice_stream::nats::open(address).expect("reopen");
    let again = fetch_all(&mut broker);
    let ids = |m: &[sluice_stream::Message]| m.iter().map(|m| m.id.clone()).collect::<HashSet<_>>();
    assert_eq!((first.len(), again.len()), (100, 100));
    assert_eq!(ids(&first), expected, "ids are the stream sequences");
    assert_eq!(ids(&again), expected, "the same ids when delivered again");
    assert!(
        first.iter().zip(&again).all(|(a, b)| a.ack != b.ack),
        "a redelivery has a reply subject of its own"
    );
    let old: Vec<(String, Option<String>)> = first.into_iter().map(|m| (m.id, m.ack)).collect();
    acker.ack(&old).expect("ack");
    assert_eq!(
        settled_pending(&client, "RE"),
        (0, 0),
        "(undelivered, unacked)"
    );
}
