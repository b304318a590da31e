//! Live reporting through the real binary: while a run is going, GET /metrics (with
//! `--metrics-addr`) answers in Prometheus text format with the run's counters, and in a
//! pipe the progress is a plain line on stderr every few seconds.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// GET /metrics; `None` while nothing listens.
fn scrape(addr: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

fn value(text: &str, metric: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(metric)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_answer_with_live_counters_during_a_run() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("ids.csv");
    write_ids(&input, 300_000)?;
    let out = dir.path().join("out");
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = spawn(&[
        "run",
        "--quiet",
        "--fixed-chunks",
        "--chunk-size",
        "500",
        "--workers",
        "1",
        "--max-memory",
        "256MB",
        "--metrics-addr",
        &addr,
        "--input",
        path_str(&input),
        "--output",
        path_str(&out),
        "--sql-text",
        "SELECT id, length(repeat(name, 20)) AS l FROM chunk",
    ])?;
    let start = Instant::now();
    let mut seen = None;
    while start.elapsed() < Duration::from_secs(20) && child.try_wait()?.is_none() {
        if let Some(text) = scrape(&addr) {
            if value(&text, "sluice_rows_processed_total").is_some_and(|rows| rows > 0.0) {
                seen = Some(text);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Not found: the server answers 404 for anything but /metrics.
    let mut stream = TcpStream::connect(&addr);
    let not_found = stream.as_mut().ok().map(|s| {
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        r
    });
    child.kill()?;
    child.wait()?;
    let text = seen.ok_or("/metrics never answered with rows while the run was going")?;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("Content-Type: application/openmetrics-text"),
        "{text}"
    );
    let rows = value(&text, "sluice_rows_processed_total").ok_or("rows")?;
    assert!(
        rows > 0.0 && rows < 300_000.0 && rows % 500.0 == 0.0,
        "rows {rows}"
    );
    assert!(
        value(&text, "sluice_chunks_processed_total").is_some_and(|c| c * 500.0 == rows),
        "{text}"
    );
    assert!(
        value(&text, "sluice_input_bytes_read_total").is_some_and(|b| b > 0.0),
        "{text}"
    );
    let budget = 256.0 * 1024.0 * 1024.0 * sluice::pipeline::TRACKED_SHARE;
    assert!(
        value(&text, "sluice_memory_budget_bytes").is_some_and(|b| (b - budget).abs() < 1.0),
        "{text}"
    );
    assert!(
        value(&text, "sluice_peak_rss_bytes").is_some_and(|b| b > 1e6),
        "{text}"
    );
    assert_eq!(
        value(&text, "sluice_current_chunk_rows"),
        Some(500.0),
        "{text}"
    );
    for metric in [
        "sluice_tracked_memory_bytes",
        "sluice_backpressure_events_total",
        "sluice_failed_chunks_total",
        "sluice_errors_total",
        "sluice_chunk_latency_seconds{quantile=\"0.5\"}",
        "sluice_chunk_latency_seconds{quantile=\"0.99\"}",
    ] {
        assert!(value(&text, metric).is_some(), "{metric} missing: {text}");
    }
    assert!(not_found.is_some_and(|r| r.starts_with("HTTP/1.1 404")));
    Ok(())
}

#[test]
fn in_a_pipe_progress_is_a_plain_line_every_few_seconds() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("ids.csv");
    write_ids(&input, 600_000)?;
    let input_bytes = std::fs::metadata(&input)?.len();
    let out = dir.path().join("out");
    // Not --quiet; stderr is a pipe, not a terminal.
    let mut child = spawn(&[
        "run",
        "--fixed-chunks",
        "--chunk-size",
        "3000",
        "--workers",
        "1",
        "--input",
        path_str(&input),
        "--output",
        path_str(&out),
        // Quadratic in the chunk: about 15 s in all, so lines are due every 5 s.
        "--sql-text",
        SLOW_SQL,
    ])?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut progress = None;
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        if line.starts_with("progress: ") {
            progress = Some(line);
            break;
        }
        seen.push(line);
    }
    let elapsed = start.elapsed();
    child.kill()?;
    child.wait()?;
    let line = progress.ok_or_else(|| format!("no progress line within 20 s; stderr: {seen:?}"))?;
    assert!(
        elapsed >= Duration::from_secs(4),
        "a line after {elapsed:?}"
    );
    // Bytes processed of the total, an ETA, rows, rows/s, chunk size, memory, backpressure.
    assert!((1 << 20..1 << 30).contains(&input_bytes));
    let total = format!(
        " of {:.1} MiB processed (",
        input_bytes as f64 / (1 << 20) as f64
    );
    for needle in [
        total.as_str(),
        "%), ETA ",
        " rows, ",
        " rows/s, chunk 3000 rows, memory ",
        " MiB, ",
        " backpressure events",
    ] {
        assert!(line.contains(needle), "{needle:?} not in {line}");
    }
    assert!(!line.contains('\r') && !line.contains('\x1b'), "{line:?}");
    Ok(())
}
