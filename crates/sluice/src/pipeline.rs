//! `StreamingDataPipeline`: the seed's main class. Holds the settings, the backpressure
//! controller (one memory budget for all its runs) and cumulative statistics; each call to
//! `process` starts a run whose chunks come back as an iterator, optionally also written to
//! an output folder.

use std::sync::{Arc, Mutex, Weak};

use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;

use crate::backpressure::BackpressureController;
use crate::config::{PipelineBuilder, PipelineConfig};
use crate::engine::{self, ChunkFn, RunControl, Shared};
use crate::error::{BoxError, Result, SluiceError};
use crate::sink::{OutputOptions, PartSink};
use crate::source::Source;
use crate::stats::{StatsCollector, StreamingStats};
use crate::stream::{ChunkStream, RunSummary};

/// Smallest budget that can hold a row of anything.
const MIN_BUDGET_BYTES: u64 = 1024;

/// Share of `max_memory_mb` the engine fills with the data it tracks, at most. The rest is
/// headroom for what it cannot see: the process itself, the function's temporaries,
/// decoders' scratch buffers, the allocator's free lists. Measured: with all of the budget
/// tracked, a 256 MB run peaked near 350 MB of RSS; see bench/RESULTS.md.
pub const TRACKED_SHARE: f64 = 0.75;

/// Headroom left untracked where the budget allows it (at most half the budget): what the
/// process held besides the tracked data when a run filled its budget, measured on two
/// cores (release build, 30M CSV rows, two-pass SQL): 43 MiB before any data, then
/// 115-150 MiB at budgets of 128, 256 and 512 MB, about constant, most of it freed memory
/// glibc's per-thread arenas keep resident. A quarter of 256 MB (64) left a filled budget
/// peaking at 323-388 MiB; 128 MiB of headroom keeps it near 300.
pub const UNTRACKED_HEADROOM_BYTES: u64 = 128 << 20;

/// Bytes of `max_memory_bytes` the engine tracks: all but a headroom of the larger of a
/// quarter of the budget and [`UNTRACKED_HEADROOM_BYTES`], the headroom never more than half
/// (64 MB tracks 32, 256 tracks 128, 1000 tracks 750).
pub fn tracked_budget_bytes(max_memory_bytes: u64) -> u64 {
    let quarter = (max_memory_bytes as f64 * (1.0 - TRACKED_SHARE)) as u64;
    let headroom = quarter.max(UNTRACKED_HEADROOM_BYTES.min(max_memory_bytes / 2));
    max_memory_bytes
        .saturating_sub(headroom)
        .max(MIN_BUDGET_BYTES)
}

pub struct StreamingDataPipeline {
    config: PipelineConfig,
    controller: BackpressureController,
    stats: Arc<StatsCollector>,
    runs: Mutex<Vec<Weak<RunControl>>>,
}

impl std::fmt::Debug for StreamingDataPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingDataPipeline")
            .field("config", &self.config)
            .finish()
    }
}

impl PipelineBuilder {
    /// Validates the settings and builds the pipeline.
    pub fn build(self) -> Result<StreamingDataPipeline> {
        StreamingDataPipeline::new(self.build_config()?)
    }
}

impl StreamingDataPipeline {
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    pub fn new(config: PipelineConfig) -> Result<Self> {
        if config.max_memory_bytes < MIN_BUDGET_BYTES {
            return Err(SluiceError::InvalidSetting {
                setting: "max_memory_mb",
                reason: format!(
                    "{} bytes is too small to hold a row; give at least {MIN_BUDGET_BYTES} bytes",
                    config.max_memory_bytes
                ),
            });
        }
        let controller = BackpressureController::with_budget_bytes(
            config.max_queue_size,
            tracked_budget_bytes(config.max_memory_bytes),
            config.adaptive_batching,
            config.chunk_size,
            config.min_chunk_rows,
            config.max_chunk_rows,
        );
        Ok(StreamingDataPipeline {
            config,
            controller,
            stats: Arc::new(StatsCollector::new()),
            runs: Mutex::new(Vec::new()),
        })
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    pub fn controller(&self) -> &BackpressureController {
        &self.controller
    }

    /// Runs `function` on every chunk of `source`; the chunks come back in input order
    /// (unless `ordered(false)`).
    pub fn process<S, F, E>(&self, source: S, function: F) -> Result<ChunkStream>
    where
        S: Source + 'static,
        F: Fn(RecordBatch) -> std::result::Result<RecordBatch, E> + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        self.start(Box::new(source), wrap(function), None)
    }

    /// Like [`Self::process`], and every chunk is also written to the output folder before
    /// it is handed over.
    pub fn process_to<S, F, E>(
        &self,
        source: S,
        function: F,
        output: OutputOptions,
    ) -> Result<ChunkStream>
    where
        S: Source + 'static,
        F: Fn(RecordBatch) -> std::result::Result<RecordBatch, E> + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        self.start(Box::new(source), wrap(function), Some(output))
    }

    /// Runs to the end, writing the output folder, and returns the run's summary.
    pub fn run_to<S, F, E>(
        &self,
        source: S,
        function: F,
        output: OutputOptions,
    ) -> Result<RunSummary>
    where
        S: Source + 'static,
        F: Fn(RecordBatch) -> std::result::Result<RecordBatch, E> + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        self.process_to(source, function, output)?.run_to_end()
    }

    /// Starts a run with an already boxed source and function (for bindings).
    pub fn start_boxed(
        &self,
        source: Box<dyn Source>,
        function: Arc<
            dyn Fn(RecordBatch) -> std::result::Result<RecordBatch, BoxError> + Send + Sync,
        >,
        output: Option<OutputOptions>,
    ) -> Result<ChunkStream> {
        self.start(source, function, output)
    }

    fn start(
        &self,
        source: Box<dyn Source>,
        function: ChunkFn,
        output: Option<OutputOptions>,
    ) -> Result<ChunkStream> {
        let schema = source.schema();
        let row_bytes = min_row_bytes(&schema);
        if row_bytes > self.config.max_memory_bytes {
            return Err(SluiceError::InvalidSetting {
                setting: "max_memory_mb",
                reason: format!(
                    "the budget ({} bytes) is smaller than one row of {} ({row_bytes} bytes)",
                    self.config.max_memory_bytes,
                    source.name()
                ),
            });
        }
        let sink = match output {
            Some(options) => Some(PartSink::create(options, self.controller.clone())?),
            None => None,
        };
        let control = Arc::new(RunControl::default());
        self.register(&control);
        self.stats.run_started();
        self.controller.forget_run_measures();
        let shared = Arc::new(Shared {
            config: self.config.clone(),
            controller: self.controller.clone(),
            stats: self.stats.clone(),
            control,
            function,
            guessed_in_flight: Default::default(),
            queue: Default::default(),
            encoder: sink.as_ref().and_then(PartSink::row_group_encoder),
        });
        let (outcomes, threads) = engine::start(shared.clone(), source)?;
        Ok(ChunkStream::new(shared, outcomes, threads, sink))
    }

    fn register(&self, control: &Arc<RunControl>) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.retain(|r| r.strong_count() > 0);
        runs.push(Arc::downgrade(control));
    }

    pub(crate) fn stats_collector(&self) -> Arc<StatsCollector> {
        self.stats.clone()
    }

    /// Statistics, cumulative over every run of this pipeline.
    pub fn stats(&self) -> StreamingStats {
        self.stats.snapshot(&self.controller)
    }

    /// The seed's name for [`Self::stats`].
    pub fn get_stats(&self) -> StreamingStats {
        self.stats()
    }

    /// Stops every running run: their iterators end, in-flight chunks are abandoned.
    pub fn stop(&self) {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        for run in runs.iter().filter_map(Weak::upgrade) {
            run.stop();
        }
        drop(runs);
        self.controller.notify();
    }

    /// Stops the workers of any run still going; their temporary files are removed when
    /// their iterators are dropped. Safe to call more than once.
    pub fn cleanup(&self) {
        self.stop();
    }
}

impl Drop for StreamingDataPipeline {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn wrap<F, E>(function: F) -> ChunkFn
where
    F: Fn(RecordBatch) -> std::result::Result<RecordBatch, E> + Send + Sync + 'static,
    E: Into<BoxError>,
{
    Arc::new(move |batch| function(batch).map_err(Into::into))
}

/// Smallest possible bytes of one row: fixed-width values, offsets for variable ones.
fn min_row_bytes(schema: &Schema) -> u64 {
    schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Boolean | DataType::Null => 1,
            t => t.primitive_width().unwrap_or(4) as u64,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_engine_leaves_the_measured_headroom_untracked_where_the_budget_allows() {
        // 256 MB (the budget the two-pass benchmark row runs at): a quarter left untracked
        // (64 MiB) was less than the process needed besides the tracked data.
        assert_eq!(tracked_budget_bytes(256 * MIB), 128 * MIB);
        assert_eq!(tracked_budget_bytes(512 * MIB), 384 * MIB);
        // Large budgets keep the quarter, small ones track half.
        assert_eq!(tracked_budget_bytes(1000 * MIB), 750 * MIB);
        assert_eq!(tracked_budget_bytes(64 * MIB), 32 * MIB);
        for mb in [2, 64, 100, 200, 256, 300, 511, 512, 513, 1000, 4000] {
            let (budget, tracked) = (mb * MIB, tracked_budget_bytes(mb * MIB));
            assert!(tracked >= budget / 2, "{mb} MB: {tracked}");
            assert!(tracked <= budget * 3 / 4, "{mb} MB: {tracked}");
            assert!(
                budget - tracked >= UNTRACKED_HEADROOM_BYTES.min(budget / 2),
                "{mb} MB: {tracked}"
            );
        }
        assert_eq!(tracked_budget_bytes(1), MIN_BUDGET_BYTES);
    }
}
