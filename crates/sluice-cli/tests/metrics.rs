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
    // Ten slow chunks: /metrics is read once the first is done, nine are still to come.
    let chunk = slow_chunk_rows();
    let rows_in = 10 * chunk;
    write_ids(&input, rows_in)?;
    let out = dir.path().join("out");
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = spawn(&[
        "run",
        "--quiet",
        "--fixed-chunks",
        "--chunk-size",
        SLOW_CHUNK,
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
        SLOW_SQL,
    ])?;
    let start = Instant::now();
    let mut seen = None;
    while start.elapsed() < Duration::from_secs(120) && child.try_wait()?.is_none() {
        if let Some(text) = scrape(&addr) {
            if value(&text, "sluice_rows_processed_total").is_some_and(|rows| rows > 0.0) {
                seen = Some(text);
                break;
            }
        }
        // Polling for the event (the first chunk counted), not a synchronization.
        std::thread::sleep(Duration::from_millis(10));
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
    let chunk = chunk as f64;
    assert!(
        rows > 0.0 && rows < rows_in as f64 && rows % chunk == 0.0,
        "rows {rows}"
    );
    assert!(
        value(&text, "sluice_chunks_processed_total").is_some_and(|c| c * chunk == rows),
        "{text}"
    );
    assert!(
        value(&text, "sluice_input_bytes_read_total").is_some_and(|b| b > 0.0),
        "{text}"
    );
    let budget = sluice::pipeline::tracked_budget_bytes(256 << 20) as f64;
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
        Some(chunk),
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

#[cfg(target_os = "linux")]
#[test]
fn in_a_pipe_progress_is_a_plain_line_every_few_seconds() -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("ids.csv");
    // 60 slow chunks: far more than the few that run before the test has its line.
    write_ids(&input, 60 * slow_chunk_rows())?;
    let input_bytes = std::fs::metadata(&input)?.len();
    let out = dir.path().join("out");
    // Not --quiet; stderr is a pipe, not a terminal.
    let mut child = spawn(&[
        "run",
        "--fixed-chunks",
        "--chunk-size",
        SLOW_CHUNK,
        "--workers",
        "1",
        "--input",
        path_str(&input),
        "--output",
        path_str(&out),
        "--sql-text",
        SLOW_SQL,
    ])?;
    let pid = child.id();
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Once the progress thread runs, freeze the whole process for longer than a line's
    // period: the time passes, the run does no work meanwhile, so when it goes on the
    // line is due at once and most of the run is still ahead.
    let started = wait_until(Duration::from_secs(60), || {
        thread_names(pid).iter().any(|n| n == "sluice-progress")
    });
    if !started {
        child.kill()?;
        child.wait()?;
        return Err("the progress thread never started".into());
    }
    freeze(pid)?;
    let early: Vec<String> = rx.try_iter().collect();
    std::thread::sleep(Duration::from_secs(6)); // the period under test (5 s) passing
    thaw(pid)?;
    let mut progress = None;
    let mut seen = early.clone();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        if line.starts_with("progress: ") {
            progress = Some(line);
            break;
        }
        seen.push(line);
    }
    let still_running = child.try_wait()?.is_none();
    child.kill()?;
    child.wait()?;
    assert!(
        !early.iter().any(|l| l.starts_with("progress: ")),
        "a progress line before its period: {early:?}"
    );
    let line = progress.ok_or_else(|| format!("no progress line; stderr: {seen:?}"))?;
    assert!(still_running, "the run ended before the test could stop it");
    // Bytes processed of the total, an ETA, rows, rows/s, chunk size, memory, backpressure.
    let total = format!(" of {} processed (", human_size(input_bytes));
    let chunk = format!(" rows/s, chunk {SLOW_CHUNK} rows, memory ");
    for needle in [
        total.as_str(),
        "%), ETA ",
        " rows, ",
        chunk.as_str(),
        " MiB, ",
        " backpressure events",
    ] {
        assert!(line.contains(needle), "{needle:?} not in {line}");
    }
    assert!(!line.contains('\r') && !line.contains('\x1b'), "{line:?}");
    Ok(())
}

/// The CLI's way of writing a size: one decimal in the largest unit under 1024.
fn human_size(bytes: u64) -> String {
    let mut value = bytes as f64;
    let mut unit = 0;
    let units = ["B", "KiB", "MiB", "GiB"];
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}
