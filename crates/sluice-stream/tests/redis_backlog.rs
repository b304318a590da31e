//! A slow function makes the stream fall behind: the backlog stays in Redis (the source
//! reads only what the engine admits) and the process stays near its memory budget.
//! Alone in its test binary, so the process's resident memory is this test's.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use sluice::{BoxError, StreamingDataPipeline};
use sluice_stream::testing::{redis_connection, redis_lag, redis_pending, redis_publish, Server};
use sluice_stream::{OutputSettings, SourceOptions, StreamControl};

const MB: u64 = 1 << 20;

#[test]
fn a_slow_function_leaves_the_backlog_in_the_broker_and_memory_in_budget() {
    const N: u64 = 150_000;
    let server = Server::redis();
    let mut con = redis_connection(server.port);
    // ~1 KB per message: a 150 MB backlog against a 32 MB budget.
    let filler = "x".repeat(1000);
    redis_publish(
        &mut con,
        "backlog",
        (0..N).map(|i| format!(r#"{{"id": {i}, "pad": "{filler}"}}"#)),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = Arc::new(
        StreamingDataPipeline::builder()
            .chunk_size(500)
            .max_memory_mb(32.0)
            .num_workers(2)
            .build()
            .expect("settings"),
    );
    let settings = OutputSettings {
        dir: dir.path().join("out"),
        format: None,
        rows_per_part: 10_000,
        commit_interval: Duration::from_millis(500),
    };
    let prepared = sluice_stream::prepare(&settings).expect("prepare");
    let control = Arc::new(StreamControl::default());
    let options = SourceOptions {
        max_latency: Duration::from_millis(100),
        stop_when_idle: None,
        schema: None,
    };
    let address = sluice_stream::Address::parse(&format!(
        "redis://127.0.0.1:{}/backlog?group=g&consumer=c",
        server.port
    ))
    .expect("address");
    let opened = sluice_stream::open(
        &address,
        &prepared,
        &settings,
        options.clone(),
        control.clone(),
    )
    .expect("open");
    let source = opened.source.expect("messages are waiting");
    // The slow function: 50 ms a chunk (the run is made slow, nothing waits on it).
    let function = Arc::new(|b: RecordBatch| -> Result<RecordBatch, BoxError> {
        std::thread::sleep(Duration::from_millis(50));
        Ok(b)
    });

    sluice::rss::reset_peak();
    let baseline = sluice::rss::current_bytes();
    // Stop once 20,000 rows came out: an event, watched from another thread.
    let watcher = {
        let (pipeline, control) = (pipeline.clone(), control.clone());
        let port = server.port;
        std::thread::spawn(move || {
            let mut con = redis_connection(port);
            let mut most_pending = 0;
            while pipeline.stats().total_rows_processed < 20_000 {
                most_pending = most_pending.max(redis_pending(&mut con, "backlog", "g"));
                std::thread::sleep(Duration::from_millis(20));
            }
            control.stop();
            most_pending
        })
    };
    let summary = sluice_stream::run(
        &pipeline,
        source,
        opened.ledger,
        &|_schema| Ok(function.clone()),
        prepared,
        &settings,
        &options,
        &control,
    )
    .expect("run");
    let most_pending = watcher.join().expect("watcher");
    let grew = sluice::rss::peak_bytes().saturating_sub(baseline);
    let out_rows: u64 = summary.manifest.parts.iter().map(|p| p.rows).sum();
    eprintln!(
        "rows out {out_rows}, most in hand {most_pending}, resident memory grew {} MB",
        grew / MB
    );
    assert_eq!(out_rows, control.messages.load(Ordering::Relaxed));
    assert!(
        out_rows < N / 2,
        "the slow run read {out_rows} of {N}: not behind"
    );
    // The backlog is the broker's: never read, or read and acknowledged.
    assert_eq!(redis_lag(&mut con, "backlog", "g"), N - out_rows);
    assert_eq!(redis_pending(&mut con, "backlog", "g"), 0);
    // In hand = in the engine (a 24 MB tracked budget: ~22,000 of these rows) plus the
    // open part (at most 10,000 rows): far from the 150,000 of the backlog.
    assert!(
        most_pending < 40_000,
        "{most_pending} messages were in hand at once: the source read ahead of the engine"
    );
    assert!(
        grew < 64 * MB,
        "resident memory grew {} MB for a 32 MB budget (the backlog is 150 MB)",
        grew / MB
    );
}
