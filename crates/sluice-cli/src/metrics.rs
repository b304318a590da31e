//! `--metrics-addr`: live statistics in Prometheus text format at `/metrics`, served by a
//! background thread for as long as the run lasts. Each scrape encodes a fresh snapshot of
//! `pipeline.stats()`, so the figures are exactly those of the stats block.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice::{StreamingDataPipeline, StreamingStats};
use tiny_http::{Header, Response, Server};

use crate::error::CliError;

const MIB: f64 = 1024.0 * 1024.0;
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics server of one run; [`MetricsServer::stop`] (or drop) shuts it down.
pub struct MetricsServer {
    server: Arc<Server>,
    stopping: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` now (so a bad address fails before the run starts) and serves from a
    /// background thread.
    pub fn start(addr: SocketAddr, pipeline: Arc<StreamingDataPipeline>) -> Result<Self, CliError> {
        let server = Server::http(addr).map_err(|e| CliError::Metrics {
            addr,
            message: e.to_string(),
        })?;
        let server = Arc::new(server);
        let stopping = Arc::new(AtomicBool::new(false));
        let (thread_server, thread_stopping) = (server.clone(), stopping.clone());
        let handle = std::thread::Builder::new()
            .name("sluice-metrics".into())
            .spawn(move || serve(&thread_server, &thread_stopping, &pipeline))
            .map_err(|e| CliError::Metrics {
                addr,
                message: format!("cannot start its thread: {e}"),
            })?;
        Ok(MetricsServer {
            server,
            stopping,
            handle: Some(handle),
        })
    }

    pub fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(server: &Server, stopping: &AtomicBool, pipeline: &StreamingDataPipeline) {
    while !stopping.load(Ordering::SeqCst) {
        let request = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(_) => break,
        };
        let path = request.url().split('?').next().unwrap_or("");
        let response = if path == "/metrics" {
            match render(&pipeline.stats()) {
                Ok(text) => with_type(Response::from_string(text), CONTENT_TYPE),
                Err(e) => Response::from_string(format!("cannot encode metrics: {e}\n"))
                    .with_status_code(500),
            }
        } else {
            Response::from_string("sluice serves /metrics\n").with_status_code(404)
        };
        // A client that went away is not the run's problem.
        let _ = request.respond(response);
    }
}

fn with_type<R: std::io::Read>(response: Response<R>, content_type: &str) -> Response<R> {
    match Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()) {
        Ok(header) => response.with_header(header),
        Err(()) => response,
    }
}

/// The snapshot in the OpenMetrics text format (which Prometheus reads).
pub fn render(stats: &StreamingStats) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("sluice");
    let counter = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let metric = Counter::<u64>::default();
        metric.inc_by(value);
        registry.register(name, help, metric);
    };
    let counter_f = |registry: &mut Registry, name: &str, help: &str, value: f64| {
        let metric = Counter::<f64, AtomicU64>::default();
        metric.inc_by(value);
        registry.register(name, help, metric);
    };
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: f64| {
        let metric = Gauge::<f64, AtomicU64>::default();
        metric.set(value);
        registry.register(name, help, metric);
    };
    let s = stats;
    counter(
        &mut registry,
        "rows_processed",
        "Rows written or handed over",
        s.total_rows_processed,
    );
    counter(
        &mut registry,
        "chunks_processed",
        "Chunks written or handed over",
        s.total_chunks_processed,
    );
    counter(
        &mut registry,
        "input_bytes_read",
        "Raw input bytes read",
        s.input_bytes_read,
    );
    counter(
        &mut registry,
        "input_bytes_processed",
        "Raw input bytes whose rows went through the transform",
        s.input_bytes_processed,
    );
    counter(
        &mut registry,
        "backpressure_events",
        "Times the reader waited for memory or a queue slot",
        s.backpressure_events,
    );
    counter_f(
        &mut registry,
        "backpressure_wait_seconds",
        "Time the reader spent waiting",
        s.backpressure_wait_seconds,
    );
    counter(
        &mut registry,
        "errors",
        "Failures of the function (errors and panics)",
        s.errors_encountered,
    );
    counter(
        &mut registry,
        "failed_chunks",
        "Chunks the function failed on",
        s.failed_chunks,
    );
    counter(
        &mut registry,
        "failed_rows",
        "Rows of the chunks the function failed on",
        s.failed_rows,
    );
    counter(
        &mut registry,
        "rejected_rows",
        "Malformed input records set aside (skip, pass-through, dead-letter)",
        s.rejected_rows,
    );
    counter(
        &mut registry,
        "passed_through_chunks",
        "Chunks emitted unchanged by the pass-through policy",
        s.passed_through_chunks,
    );
    counter(
        &mut registry,
        "budget_overshoots",
        "Admissions past the budget",
        s.budget_overshoots,
    );
    counter_f(
        &mut registry,
        "processing_seconds",
        "Wall-clock time spent in runs",
        s.total_processing_time,
    );
    gauge(
        &mut registry,
        "throughput_rows_per_second",
        "Rows per second so far",
        s.throughput_rows_per_second,
    );
    gauge(
        &mut registry,
        "tracked_memory_bytes",
        "Bytes the engine holds now",
        s.tracked_memory_mb * MIB,
    );
    gauge(
        &mut registry,
        "memory_budget_bytes",
        "The engine's memory budget",
        s.memory_budget_mb * MIB,
    );
    gauge(
        &mut registry,
        "engine_peak_tracked_bytes",
        "Peak of the bytes the engine held",
        s.engine_peak_tracked_mb * MIB,
    );
    gauge(
        &mut registry,
        "peak_rss_bytes",
        "Peak resident memory of the process",
        s.memory_peak_mb * MIB,
    );
    gauge(
        &mut registry,
        "current_chunk_rows",
        "Rows the next chunk will have",
        s.current_chunk_size as f64,
    );
    let latency = Family::<Vec<(String, String)>, Gauge<f64, AtomicU64>>::default();
    for (quantile, ms) in [
        ("0.5", s.latency_p50_ms),
        ("0.95", s.latency_p95_ms),
        ("0.99", s.latency_p99_ms),
        ("1", s.latency_max_ms),
    ] {
        latency
            .get_or_create(&vec![("quantile".to_string(), quantile.to_string())])
            .set(ms / 1000.0);
    }
    registry.register(
        "chunk_latency_seconds",
        "Per-chunk latency of the function, by quantile",
        latency,
    );
    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_quantiles() -> Result<(), std::fmt::Error> {
        let stats = StreamingStats {
            total_rows_processed: 1234,
            total_chunks_processed: 5,
            memory_budget_mb: 2.0,
            latency_p95_ms: 250.0,
            rejected_rows: 3,
            ..StreamingStats::default()
        };
        let text = render(&stats)?;
        assert!(
            text.contains("sluice_rows_processed_total 1234\n"),
            "{text}"
        );
        assert!(text.contains("sluice_chunks_processed_total 5\n"), "{text}");
        assert!(text.contains("sluice_rejected_rows_total 3\n"), "{text}");
        assert!(
            text.contains("sluice_memory_budget_bytes 2097152.0\n"),
            "{text}"
        );
        assert!(
            text.contains("sluice_chunk_latency_seconds{quantile=\"0.95\"} 0.25\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        Ok(())
    }
}
