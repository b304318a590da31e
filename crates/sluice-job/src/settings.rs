//! The engine's settings as one value of optional fields, from which every face (the
//! command's `run` and `stream`, the demo, Python, cluster tasks, pass 1 of a two-pass job)
//! builds its pipeline. A field left `None` keeps the engine's default.

use std::sync::Arc;

use sluice::{ErrorPolicy, PipelineBuilder, PipelineConfig, Result, StreamingDataPipeline};

/// What a job asks of the engine; `None` is the engine's default.
#[derive(Debug, Clone, Default)]
pub struct EngineSettings {
    /// Rows per chunk: the first chunk's size, or every chunk's without adaptive batching.
    pub chunk_size: Option<usize>,
    pub max_memory_bytes: Option<u64>,
    /// The budget in MiB as Python gives it (a float); `max_memory_bytes` wins if both.
    pub max_memory_mb: Option<f64>,
    pub workers: Option<usize>,
    pub enable_parallel: Option<bool>,
    pub ordered: Option<bool>,
    pub adaptive_batching: Option<bool>,
    pub error_policy: Option<ErrorPolicy>,
    pub max_queue_size: Option<usize>,
    pub min_chunk_rows: Option<usize>,
    pub max_chunk_rows: Option<usize>,
}

impl EngineSettings {
    /// The engine's builder with these settings applied (for a caller that adds hooks).
    pub fn builder(&self) -> PipelineBuilder {
        let mut builder = StreamingDataPipeline::builder();
        if let Some(rows) = self.chunk_size {
            builder = builder.chunk_size(rows);
        }
        match (self.max_memory_bytes, self.max_memory_mb) {
            (Some(bytes), _) => builder = builder.max_memory_bytes(bytes),
            (None, Some(mb)) => builder = builder.max_memory_mb(mb),
            (None, None) => {}
        }
        if let Some(workers) = self.workers {
            builder = builder.num_workers(workers);
        }
        if let Some(on) = self.enable_parallel {
            builder = builder.enable_parallel(on);
        }
        if let Some(ordered) = self.ordered {
            builder = builder.ordered(ordered);
        }
        if let Some(on) = self.adaptive_batching {
            builder = builder.adaptive_batching(on);
        }
        if let Some(policy) = &self.error_policy {
            builder = builder.error_policy(policy.clone());
        }
        if let Some(chunks) = self.max_queue_size {
            builder = builder.max_queue_size(chunks);
        }
        if let Some(rows) = self.min_chunk_rows {
            builder = builder.min_chunk_rows(rows);
        }
        if let Some(rows) = self.max_chunk_rows {
            builder = builder.max_chunk_rows(rows);
        }
        builder
    }

    /// The engine, checked (a setting out of range is refused here, before any data).
    pub fn build(&self) -> Result<Arc<StreamingDataPipeline>> {
        self.builder().build().map(Arc::new)
    }
}

/// The settings of an engine that runs beside `config`'s for a job of its own (pass 1 of a
/// two-pass job): the same budget, workers and chunking, without the caller's hooks and
/// with the fail policy (a chunk pass 1 cannot read fails the query).
pub fn sibling_config(config: &PipelineConfig, ordered: bool) -> PipelineConfig {
    let mut config = config.clone();
    config.ordered = ordered;
    config.hooks = None;
    config.error_policy = ErrorPolicy::Fail;
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_fields_keep_the_engines_defaults_and_set_ones_apply() {
        let default = EngineSettings::default().build().map_err(|e| e.to_string());
        let plain = StreamingDataPipeline::builder()
            .build()
            .map_err(|e| e.to_string());
        let (default, plain) = (default.expect("defaults"), plain.expect("defaults"));
        assert_eq!(default.config().chunk_size, plain.config().chunk_size);
        assert_eq!(default.config().ordered, plain.config().ordered);

        let settings = EngineSettings {
            chunk_size: Some(123),
            max_memory_bytes: Some(64 << 20),
            max_memory_mb: Some(1.0),
            workers: Some(3),
            ordered: Some(false),
            adaptive_batching: Some(false),
            error_policy: Some(ErrorPolicy::Skip),
            ..EngineSettings::default()
        };
        let engine = settings.build().expect("valid settings");
        let c = engine.config();
        assert_eq!(c.chunk_size, 123);
        assert_eq!(c.max_memory_mb(), 64.0, "bytes win over MiB");
        assert_eq!(c.num_workers, 3);
        assert!(!c.ordered);
        assert!(!c.adaptive_batching);
        assert_eq!(c.error_policy, ErrorPolicy::Skip);
    }

    #[test]
    fn a_setting_out_of_range_is_refused_when_built() {
        let settings = EngineSettings {
            chunk_size: Some(0),
            ..EngineSettings::default()
        };
        assert!(settings.build().is_err());
    }
}
