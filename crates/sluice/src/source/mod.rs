//! Sources: where chunks come from. One file per kind; every file source streams (it never
//! reads a whole file into memory).
//!
//! A source yields [`SourcePart`]s in input order. A part is either a batch that is already
//! decoded (in-memory data, an iterator, a sequential stream format) or a *deferred* decode
//! (a CSV/NDJSON byte range cut at a record boundary, a Parquet row group, an IPC file
//! batch) that the engine hands to its worker pool, so decoding runs on all cores while one
//! thread only reads bytes or metadata. The engine restores input order after decoding.

mod blocks;
pub mod csv;
pub mod files;
pub mod ipc;
pub mod memory;
pub mod ndjson;
pub mod parquet;
pub mod skip;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::error::Result;

pub use self::csv::{CsvOptions, CsvSource};
pub use self::files::{FileFormat, FilesSource};
pub use self::ipc::{IpcFileSource, IpcStreamSource};
pub use self::memory::{IterSource, MemorySource};
pub use self::ndjson::{NdjsonOptions, NdjsonSource};
pub use self::parquet::{ParquetOptions, ParquetSource};
pub use self::skip::SkipRows;

/// A decode job run by a worker; returns the part's batches in order.
pub type DecodeFn = Box<dyn FnOnce() -> Result<Vec<RecordBatch>> + Send>;

/// How much the engine would like the next part to weigh (sources may ignore it).
#[derive(Debug, Clone, Copy)]
pub struct PartHint {
    /// Rows the engine will put in its next chunk.
    pub rows: usize,
    /// Raw bytes a byte-range source should read for one part.
    pub bytes: usize,
}

pub enum SourcePart {
    /// The caller's data, already in memory (a table being sliced): the engine holds a
    /// view of it, not a copy, so it is counted only once a chunk is cut from it.
    Ready(RecordBatch),
    /// Decoded by the source itself (a sequential stream format, an iterator's batches):
    /// memory the engine holds, reserved at its real weight from the moment it is read.
    Owned(RecordBatch),
    /// To be decoded by a worker. `estimated_bytes` is what the decoded batches will weigh,
    /// as best the source knows (the engine corrects it as it learns).
    Deferred {
        estimated_bytes: u64,
        decode: DecodeFn,
    },
}

/// Anything that yields Arrow record batches of one schema, in order.
pub trait Source: Send {
    fn schema(&self) -> SchemaRef;
    /// Names the source in errors and progress (a path, "memory", ...).
    fn name(&self) -> String;
    /// Total input bytes, when known (files), for progress.
    fn total_bytes(&self) -> Option<u64> {
        None
    }
    /// The next part in input order, or `None` at the end. The second value is the raw
    /// input bytes this part consumed (for progress).
    fn next_part(&mut self, hint: PartHint) -> Result<Option<(SourcePart, u64)>>;
    /// Absolute input row of the first row to hand on: rows before it were committed by an
    /// earlier run (see [`SkipRows`]). The engine numbers rows from the start of the whole
    /// input, and drops the rows the source yields before this one.
    fn resume_row(&self) -> u64 {
        0
    }
    /// Skips whole parts at the front, at most `max_rows` rows in all, whose row counts are
    /// known without decoding (Parquet row groups); returns the rows skipped and the raw
    /// input bytes they took (progress counts them as processed).
    fn skip_whole_parts(&mut self, _max_rows: u64) -> Result<(u64, u64)> {
        Ok((0, 0))
    }
}

impl<S: Source + ?Sized> Source for Box<S> {
    fn schema(&self) -> SchemaRef {
        (**self).schema()
    }
    fn name(&self) -> String {
        (**self).name()
    }
    fn total_bytes(&self) -> Option<u64> {
        (**self).total_bytes()
    }
    fn next_part(&mut self, hint: PartHint) -> Result<Option<(SourcePart, u64)>> {
        (**self).next_part(hint)
    }
    fn resume_row(&self) -> u64 {
        (**self).resume_row()
    }
    fn skip_whole_parts(&mut self, max_rows: u64) -> Result<(u64, u64)> {
        (**self).skip_whole_parts(max_rows)
    }
}
