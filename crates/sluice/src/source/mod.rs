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
pub mod push;
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
pub use self::push::{push_channel, PushSender, PushSource};
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
    /// Already decoded.
    Ready(RecordBatch),
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
    /// True right after a `next_part` that asks the engine to cut a chunk from the rows it
    /// holds now, even a short one (a live source whose oldest row waited long enough).
    fn flush_requested(&self) -> bool {
        false
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
    fn flush_requested(&self) -> bool {
        (**self).flush_requested()
    }
}
