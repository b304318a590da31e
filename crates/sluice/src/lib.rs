//! sluice: chunked, memory-bounded, parallel processing of Arrow data.
//!
//! A [`StreamingDataPipeline`] cuts a [`Source`] into Arrow chunks, runs a function on
//! every chunk on a pool of workers, keeps everything it holds inside a memory budget
//! ([`BackpressureController`]: the reader waits when the budget or the queue is full, and
//! adaptive batching resizes chunks), and hands the results back in input order or writes
//! them as part files with a manifest. Every input row comes out exactly once.
//!
//! ```no_run
//! use sluice::{StreamingDataPipeline, source::CsvSource};
//! use arrow::record_batch::RecordBatch;
//!
//! let pipeline = StreamingDataPipeline::builder().chunk_size(5_000).max_memory_mb(500.0).build()?;
//! for chunk in pipeline.process(CsvSource::open("big.csv")?, |b: RecordBatch| Ok::<_, sluice::SluiceError>(b))? {
//!     let chunk = chunk?; // in input order; chunk.input_rows says which rows it came from
//! }
//! println!("{}", pipeline.stats().report());
//! # Ok::<(), sluice::SluiceError>(())
//! ```

pub mod backpressure;
pub mod chunk;
pub mod config;
mod engine;
pub mod error;
pub mod failpoint;
pub mod pipeline;
pub mod push;
pub mod rss;
pub mod sink;
pub mod sizer;
pub mod source;
pub mod stats;
pub mod stream;

pub use backpressure::{BackpressureController, Reservation};
pub use chunk::{batch_memory, ProcessedChunk, HELD_BYTES_METADATA_KEY};
pub use config::{ControllerHooks, ErrorPolicy, PipelineBuilder, PipelineConfig};
pub use error::{BoxError, Result, SluiceError};
pub use pipeline::StreamingDataPipeline;
pub use push::{Deliveries, PushStream, StreamOptions, StreamResults};
pub use sink::{
    DeadLetter, LetterKind, Manifest, OutputFormat, OutputMode, OutputOptions, PartInfo, RunStatus,
};
pub use sizer::ChunkSizeChange;
pub use source::{FileFormat, FilesSource, Reject, Source};
pub use stats::StreamingStats;
pub use stream::{ChunkStream, RunSummary};
