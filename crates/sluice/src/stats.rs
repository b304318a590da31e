//! Exact statistics of a pipeline: the seed's six figures plus latencies, failures and the
//! sizer's decisions. Rows and chunks are counted when they leave the engine; times are
//! measured; peak memory is the process's resident set, read from the kernel.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::sizer::ChunkSizeChange;

const MB: f64 = 1024.0 * 1024.0;

/// A snapshot of a pipeline's statistics, cumulative over its life (all runs).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StreamingStats {
    // The seed's fields.
    pub total_chunks_processed: u64,
    pub total_rows_processed: u64,
    /// Wall-clock seconds spent in runs.
    pub total_processing_time: f64,
    pub throughput_rows_per_second: f64,
    /// Peak resident memory of the process during the runs, in MiB.
    pub memory_peak_mb: f64,
    /// Times the reader had to wait for memory or a queue slot.
    pub backpressure_events: u64,
    // The engine's own.
    /// Peak of the bytes the engine itself tracked (its budget's high-water mark), in MiB.
    pub engine_peak_tracked_mb: f64,
    /// Bytes the engine holds right now, in MiB.
    pub tracked_memory_mb: f64,
    pub memory_budget_mb: f64,
    pub average_chunk_size: f64,
    pub current_chunk_size: usize,
    /// Failures of the user function (errors and panics), whatever the policy did.
    pub errors_encountered: u64,
    pub failed_chunks: u64,
    pub failed_rows: u64,
    /// Chunks emitted unchanged by the `pass_through` policy (also counted as failed).
    pub passed_through_chunks: u64,
    /// Malformed input records (a value that does not parse, a wrong field count, invalid
    /// UTF-8) set aside under `skip`, `pass_through` or `dead_letter`: never rows, so not
    /// in the rows or failed rows.
    pub rejected_rows: u64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub backpressure_wait_seconds: f64,
    /// Admissions past the budget because nothing else could free memory.
    pub budget_overshoots: u64,
    /// Bytes of the source read (ahead of processing, within the budget).
    pub input_bytes_read: u64,
    /// Bytes of the source whose rows have been through the function: what progress and
    /// its ETA count.
    pub input_bytes_processed: u64,
    pub runs: u64,
    pub chunk_size_history: Vec<ChunkSizeChange>,
}

/// Counters a run updates as it goes; `snapshot` turns them into [`StreamingStats`].
pub(crate) struct StatsCollector {
    inner: Mutex<Inner>,
}

struct Inner {
    chunks: u64,
    rows: u64,
    failed_chunks: u64,
    failed_rows: u64,
    errors: u64,
    passed_through: u64,
    rejected: u64,
    input_bytes: u64,
    /// Source bytes whose rows went through the function (fractions: a chunk may cut a
    /// part's rows anywhere).
    input_bytes_processed: f64,
    finished_time: Duration,
    run_started: Option<Instant>,
    runs: u64,
    rss_peak_bytes: u64,
    latency_us: Histogram<u64>,
    /// Per-row latency from a push stream's `send` to the hand-over; when any was
    /// recorded, the latency figures are these (a stream's latency is end to end).
    end_to_end_us: Histogram<u64>,
}

impl StatsCollector {
    pub fn new() -> Self {
        StatsCollector {
            inner: Mutex::new(Inner {
                chunks: 0,
                rows: 0,
                failed_chunks: 0,
                failed_rows: 0,
                errors: 0,
                passed_through: 0,
                rejected: 0,
                input_bytes: 0,
                input_bytes_processed: 0.0,
                finished_time: Duration::ZERO,
                run_started: None,
                runs: 0,
                rss_peak_bytes: 0,
                latency_us: latency_histogram(),
                end_to_end_us: latency_histogram(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn run_started(&self) {
        crate::rss::reset_peak();
        let mut s = self.lock();
        s.runs += 1;
        s.run_started = Some(Instant::now());
        s.rss_peak_bytes = s.rss_peak_bytes.max(crate::rss::current_bytes());
    }

    pub fn run_finished(&self) {
        let peak = crate::rss::peak_bytes();
        let mut s = self.lock();
        if let Some(start) = s.run_started.take() {
            s.finished_time += start.elapsed();
        }
        s.rss_peak_bytes = s.rss_peak_bytes.max(peak);
    }

    pub fn chunk_delivered(&self, rows: u64, latency: Duration) {
        let rss = crate::rss::current_bytes();
        let mut s = self.lock();
        s.chunks += 1;
        s.rows += rows;
        s.rss_peak_bytes = s.rss_peak_bytes.max(rss);
        let us = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        let _ = s.latency_us.record(us);
    }

    /// `rows` rows were handed over `latency` after they were sent.
    pub fn rows_delivered_after(&self, rows: u64, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        let _ = self.lock().end_to_end_us.record_n(us, rows);
    }

    pub fn chunk_failed(&self, rows: u64, passed_through: bool) {
        let mut s = self.lock();
        s.errors += 1;
        s.failed_chunks += 1;
        s.failed_rows += rows;
        if passed_through {
            s.passed_through += 1;
        }
    }

    pub fn rows_rejected(&self, records: u64) {
        self.lock().rejected += records;
    }

    pub fn input_bytes(&self, bytes: u64) {
        self.lock().input_bytes += bytes;
    }

    pub fn source_bytes_processed(&self, bytes: f64) {
        self.lock().input_bytes_processed += bytes;
    }

    pub fn snapshot(&self, controller: &crate::BackpressureController) -> StreamingStats {
        let live_peak = crate::rss::peak_bytes();
        let s = self.lock();
        let running = s.run_started.map_or(Duration::ZERO, |t| t.elapsed());
        let time = (s.finished_time + running).as_secs_f64();
        let rss_peak = if s.run_started.is_some() {
            s.rss_peak_bytes.max(live_peak)
        } else {
            s.rss_peak_bytes
        };
        let latency = if s.end_to_end_us.is_empty() {
            &s.latency_us
        } else {
            &s.end_to_end_us
        };
        let q = |p: f64| latency.value_at_quantile(p) as f64 / 1000.0;
        let has_latency = !latency.is_empty();
        StreamingStats {
            total_chunks_processed: s.chunks,
            total_rows_processed: s.rows,
            total_processing_time: time,
            throughput_rows_per_second: if time > 0.0 {
                s.rows as f64 / time
            } else {
                0.0
            },
            memory_peak_mb: rss_peak as f64 / MB,
            backpressure_events: controller.backpressure_events(),
            engine_peak_tracked_mb: controller.peak_bytes() as f64 / MB,
            tracked_memory_mb: controller.used_bytes() as f64 / MB,
            memory_budget_mb: controller.budget_bytes() as f64 / MB,
            average_chunk_size: if s.chunks > 0 {
                s.rows as f64 / s.chunks as f64
            } else {
                0.0
            },
            current_chunk_size: controller.current_batch_size(),
            errors_encountered: s.errors,
            failed_chunks: s.failed_chunks,
            failed_rows: s.failed_rows,
            passed_through_chunks: s.passed_through,
            rejected_rows: s.rejected,
            latency_p50_ms: if has_latency { q(0.50) } else { 0.0 },
            latency_p95_ms: if has_latency { q(0.95) } else { 0.0 },
            latency_p99_ms: if has_latency { q(0.99) } else { 0.0 },
            latency_max_ms: if has_latency {
                latency.max() as f64 / 1000.0
            } else {
                0.0
            },
            backpressure_wait_seconds: controller.backpressure_wait().as_secs_f64(),
            budget_overshoots: controller.overshoot_events(),
            input_bytes_read: s.input_bytes,
            input_bytes_processed: (s.input_bytes_processed.round() as u64).min(s.input_bytes),
            runs: s.runs,
            chunk_size_history: controller.chunk_size_history(),
        }
    }
}

/// 1 µs to 1 hour at 3 significant digits: a few tens of KiB.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits is valid"))
}

impl StreamingStats {
    /// The seed's statistics block, plus latency and errors, as the CLI and examples print it.
    pub fn report(&self) -> String {
        format!(
            "Performance Statistics:\n  Total processing time: {:.2}s\n  Chunks processed: {}\n  Rows processed: {}\n  Throughput: {:.1} rows/sec\n  Peak memory usage: {:.1} MB\n  Backpressure events: {}\n  Chunk latency p50/p95/p99: {:.2}/{:.2}/{:.2} ms\n  Engine peak tracked memory: {:.1} MB of {:.1} MB budget\n  Errors: {} ({} chunks, {} rows failed)\n  Rejected rows (malformed input): {}\n",
            self.total_processing_time,
            self.total_chunks_processed,
            self.total_rows_processed,
            self.throughput_rows_per_second,
            self.memory_peak_mb,
            self.backpressure_events,
            self.latency_p50_ms,
            self.latency_p95_ms,
            self.latency_p99_ms,
            self.engine_peak_tracked_mb,
            self.memory_budget_mb,
            self.errors_encountered,
            self.failed_chunks,
            self.failed_rows,
            self.rejected_rows,
        )
    }
}
