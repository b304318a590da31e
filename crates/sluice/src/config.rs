//! Pipeline settings: the seed's parameters with its defaults, plus the engine's own, and
//! the checks that reject a bad combination when the pipeline is built.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Result, SluiceError};

const MB: f64 = 1024.0 * 1024.0;

/// What happens when the user's function fails (returns an error or panics) on a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Stop the run and report the chunk, its input rows and the cause.
    #[default]
    Fail,
    /// Drop the chunk and count it (failed chunks and rows in the stats).
    Skip,
    /// Emit the input chunk unchanged, as the seed's best practice does.
    PassThrough,
    /// Write the failed input chunk (Arrow IPC) and its cause to this folder; nothing is lost.
    DeadLetter(PathBuf),
}

impl std::str::FromStr for ErrorPolicy {
    type Err = SluiceError;

    /// `fail`, `skip`, `pass_through` (or `pass-through`), `dead_letter=DIR`.
    fn from_str(s: &str) -> Result<Self> {
        let normalized = s.replace('-', "_");
        match normalized.as_str() {
            "fail" => Ok(ErrorPolicy::Fail),
            "skip" => Ok(ErrorPolicy::Skip),
            "pass_through" => Ok(ErrorPolicy::PassThrough),
            other => match other.split_once('=') {
                Some(("dead_letter", dir)) if !dir.is_empty() => Ok(ErrorPolicy::DeadLetter(
                    PathBuf::from(&s[s.len() - dir.len()..]),
                )),
                _ => Err(SluiceError::InvalidSetting {
                    setting: "on_error",
                    reason: format!(
                        "unknown policy {s:?}; expected fail, skip, pass_through or dead_letter=DIR"
                    ),
                }),
            },
        }
    }
}

/// Hooks a custom backpressure strategy can give the engine (the Python package uses them
/// for subclasses of `BackpressureController`). The engine calls each at most once per chunk.
pub trait ControllerHooks: Send + Sync {
    /// `Some(true)` holds the reader back until an in-flight chunk completes.
    fn should_apply_backpressure(&self) -> Option<bool> {
        None
    }
    /// `Some(rows)` sets the next chunk's rows (clamped to the bounds).
    fn adapt_batch_size(&self) -> Option<usize> {
        None
    }
    /// Called after each chunk with its throughput.
    fn record_performance(&self, _rows_per_second: f64) {}
}

/// Validated settings of a [`crate::StreamingDataPipeline`].
#[derive(Clone)]
pub struct PipelineConfig {
    pub chunk_size: usize,
    pub max_memory_bytes: u64,
    pub enable_parallel: bool,
    pub num_workers: usize,
    pub ordered: bool,
    pub min_chunk_rows: usize,
    pub max_chunk_rows: usize,
    pub adaptive_batching: bool,
    pub max_queue_size: usize,
    pub error_policy: ErrorPolicy,
    pub hooks: Option<Arc<dyn ControllerHooks>>,
}

impl std::fmt::Debug for PipelineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineConfig")
            .field("chunk_size", &self.chunk_size)
            .field("max_memory_bytes", &self.max_memory_bytes)
            .field("enable_parallel", &self.enable_parallel)
            .field("num_workers", &self.num_workers)
            .field("ordered", &self.ordered)
            .field("min_chunk_rows", &self.min_chunk_rows)
            .field("max_chunk_rows", &self.max_chunk_rows)
            .field("adaptive_batching", &self.adaptive_batching)
            .field("max_queue_size", &self.max_queue_size)
            .field("error_policy", &self.error_policy)
            .field("hooks", &self.hooks.is_some())
            .finish()
    }
}

impl PipelineConfig {
    /// Workers that really run: one when parallelism is off.
    pub fn effective_workers(&self) -> usize {
        if self.enable_parallel {
            self.num_workers
        } else {
            1
        }
    }

    pub fn max_memory_mb(&self) -> f64 {
        self.max_memory_bytes as f64 / MB
    }
}

/// Builder with the seed's defaults: chunk_size 1000, max_memory_mb 1000, enable_parallel
/// true, num_workers = the machine's cores; ordered output, adaptive batching, a queue of
/// 100 chunks, and the `fail` error policy.
#[derive(Clone, Default)]
pub struct PipelineBuilder {
    chunk_size: Option<usize>,
    max_memory_bytes: Option<f64>,
    enable_parallel: Option<bool>,
    num_workers: Option<usize>,
    ordered: Option<bool>,
    min_chunk_rows: Option<usize>,
    max_chunk_rows: Option<usize>,
    adaptive_batching: Option<bool>,
    max_queue_size: Option<usize>,
    error_policy: Option<ErrorPolicy>,
    hooks: Option<Arc<dyn ControllerHooks>>,
}

impl PipelineBuilder {
    pub fn chunk_size(mut self, rows: usize) -> Self {
        self.chunk_size = Some(rows);
        self
    }
    pub fn max_memory_mb(mut self, mb: f64) -> Self {
        self.max_memory_bytes = Some(mb * MB);
        self
    }
    pub fn max_memory_bytes(mut self, bytes: u64) -> Self {
        self.max_memory_bytes = Some(bytes as f64);
        self
    }
    pub fn enable_parallel(mut self, on: bool) -> Self {
        self.enable_parallel = Some(on);
        self
    }
    pub fn num_workers(mut self, workers: usize) -> Self {
        self.num_workers = Some(workers);
        self
    }
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.ordered = Some(ordered);
        self
    }
    pub fn min_chunk_rows(mut self, rows: usize) -> Self {
        self.min_chunk_rows = Some(rows);
        self
    }
    pub fn max_chunk_rows(mut self, rows: usize) -> Self {
        self.max_chunk_rows = Some(rows);
        self
    }
    pub fn adaptive_batching(mut self, on: bool) -> Self {
        self.adaptive_batching = Some(on);
        self
    }
    pub fn max_queue_size(mut self, chunks: usize) -> Self {
        self.max_queue_size = Some(chunks);
        self
    }
    pub fn error_policy(mut self, policy: ErrorPolicy) -> Self {
        self.error_policy = Some(policy);
        self
    }
    pub fn controller_hooks(mut self, hooks: Arc<dyn ControllerHooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Checks every setting and returns the config, or an error naming the bad setting.
    pub fn build_config(self) -> Result<PipelineConfig> {
        let invalid =
            |setting, reason: String| Err(SluiceError::InvalidSetting { setting, reason });
        let chunk_size = self.chunk_size.unwrap_or(1000);
        if chunk_size == 0 {
            return invalid("chunk_size", "must be at least 1 row".into());
        }
        let budget = self.max_memory_bytes.unwrap_or(1000.0 * MB);
        if !budget.is_finite() || budget < 1.0 {
            return invalid(
                "max_memory_mb",
                format!(
                    "must be a positive number of megabytes, got {}",
                    budget / MB
                ),
            );
        }
        let num_workers = match self.num_workers {
            Some(0) => return invalid("num_workers", "must be at least 1".into()),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let min_chunk_rows = self.min_chunk_rows.unwrap_or(1);
        if min_chunk_rows == 0 {
            return invalid("min_chunk_rows", "must be at least 1 row".into());
        }
        let max_chunk_rows = self
            .max_chunk_rows
            .unwrap_or_else(|| chunk_size.max(1_000_000));
        if min_chunk_rows > max_chunk_rows {
            return invalid(
                "min_chunk_rows",
                format!("min_chunk_rows ({min_chunk_rows}) is greater than max_chunk_rows ({max_chunk_rows})"),
            );
        }
        let max_queue_size = self.max_queue_size.unwrap_or(100);
        if max_queue_size == 0 {
            return invalid("max_queue_size", "must be at least 1 chunk".into());
        }
        let adaptive_batching = self.adaptive_batching.unwrap_or(true);
        if adaptive_batching && !(min_chunk_rows..=max_chunk_rows).contains(&chunk_size) {
            return invalid(
                "chunk_size",
                format!("{chunk_size} is outside [min_chunk_rows, max_chunk_rows] = [{min_chunk_rows}, {max_chunk_rows}]"),
            );
        }
        Ok(PipelineConfig {
            chunk_size,
            max_memory_bytes: budget as u64,
            enable_parallel: self.enable_parallel.unwrap_or(true),
            num_workers,
            ordered: self.ordered.unwrap_or(true),
            min_chunk_rows,
            max_chunk_rows,
            adaptive_batching,
            max_queue_size,
            error_policy: self.error_policy.unwrap_or_default(),
            hooks: self.hooks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_error_policies() {
        assert_eq!("fail".parse::<ErrorPolicy>().ok(), Some(ErrorPolicy::Fail));
        assert_eq!(
            "pass-through".parse::<ErrorPolicy>().ok(),
            Some(ErrorPolicy::PassThrough)
        );
        assert_eq!(
            "dead-letter=/tmp/x-y".parse::<ErrorPolicy>().ok(),
            Some(ErrorPolicy::DeadLetter("/tmp/x-y".into()))
        );
        assert!("explode".parse::<ErrorPolicy>().is_err());
    }
}
