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
mod csv_plain;
pub mod files;
pub mod ipc;
pub mod latency;
pub mod memory;
pub mod ndjson;
pub mod parquet;
pub mod push;
mod records;
pub mod skip;

use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::error::{Result, SluiceError};

pub use self::csv::{CsvOptions, CsvSource};
pub use self::files::{FileFormat, FilesSource};
pub use self::ipc::{IpcFileSource, IpcStreamSource};
pub use self::latency::LatencyClock;
pub use self::memory::{IterSource, MemorySource};
pub use self::ndjson::{NdjsonOptions, NdjsonSource};
pub use self::parquet::{ParquetOptions, ParquetSource};
pub use self::push::{push_channel, PushSender, PushSource};
pub use self::skip::SkipRows;

/// The positions in `schema` of the columns named, in the file's order and each once (a
/// projection reads columns in file order); an unknown name is an error that lists the
/// file's columns. `location` says where in `path` the names were looked up.
pub(crate) fn column_positions(
    path: &Path,
    location: &str,
    schema: &SchemaRef,
    names: &[String],
) -> Result<Vec<usize>> {
    let mut positions = names
        .iter()
        .map(|name| {
            schema.index_of(name).map_err(|_| SluiceError::BadInput {
                path: path.to_path_buf(),
                location: location.into(),
                message: format!(
                    "no column named {name:?}; the file has {:?}",
                    schema.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
                ),
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    positions.sort_unstable();
    positions.dedup();
    Ok(positions)
}

/// A decode job run by a worker; returns the part's batches in order, and the records of
/// the part that could not become rows.
pub type DecodeFn = Box<dyn FnOnce() -> Result<DecodedPart> + Send>;

/// What decoding one part gave: its good rows, and its malformed records set aside.
#[derive(Debug, Default)]
pub struct DecodedPart {
    pub batches: Vec<RecordBatch>,
    /// In input order; each one's `position` counts the good rows of this part before it.
    pub rejects: Vec<Reject>,
}

impl From<Vec<RecordBatch>> for DecodedPart {
    fn from(batches: Vec<RecordBatch>) -> Self {
        DecodedPart {
            batches,
            rejects: Vec::new(),
        }
    }
}

impl DecodedPart {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// Longest raw text a reject keeps, in bytes (a runaway record, e.g. an unclosed quote,
/// can be most of a file).
pub const REJECT_RAW_LIMIT: usize = 4096;

/// A malformed record: a value that does not parse, a missing or extra field, invalid
/// UTF-8, broken JSON. It has no row number (it never became a row); `position` says where
/// it was among the rows: the number of good input rows before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// The file it was read from.
    pub file: PathBuf,
    /// 1-based line of the file where the record starts.
    pub line: Option<u64>,
    /// Byte offset in the file where the record starts.
    pub byte_offset: Option<u64>,
    /// Good rows before it: within its part as a source yields it; in the whole input once
    /// the engine hands it on (the input row number of the next good row).
    pub position: u64,
    /// The record's text (lossy UTF-8), without its line ending, cut at
    /// [`REJECT_RAW_LIMIT`] bytes.
    pub raw: String,
    pub raw_truncated: bool,
    /// Why it could not be decoded.
    pub cause: String,
    /// The record's own id in its source, where it has one (a broker message's id).
    pub id: Option<String>,
}

impl Reject {
    /// The record `bytes` (line ending included or not) as a reject.
    pub fn new(file: PathBuf, line: u64, byte_offset: u64, bytes: &[u8], cause: String) -> Self {
        let mut reject = Reject::raw(file, bytes, cause);
        reject.line = Some(line);
        reject.byte_offset = Some(byte_offset);
        reject
    }

    /// A message of a stream (`source`, e.g. a broker's stream name) that could not become
    /// a row, with its id, standing after `position` good rows of its part.
    pub fn message(source: &str, id: &str, bytes: &[u8], cause: String, position: u64) -> Self {
        let mut reject = Reject::raw(PathBuf::from(source), bytes, cause);
        reject.id = Some(id.to_string());
        reject.position = position;
        reject
    }

    /// The record `bytes` as a reject: its text kept up to [`REJECT_RAW_LIMIT`].
    fn raw(file: PathBuf, bytes: &[u8], cause: String) -> Self {
        let mut end = bytes.len();
        while end > 0 && matches!(bytes[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        let truncated = end > REJECT_RAW_LIMIT;
        let mut raw = String::from_utf8_lossy(&bytes[..end.min(REJECT_RAW_LIMIT)]).into_owned();
        if truncated {
            // The cut may split a UTF-8 sequence into a replacement character: drop it.
            if raw.ends_with('\u{FFFD}') {
                raw.pop();
            }
        }
        // arrow's messages quote the whole row: keep the cause as short as the raw text.
        let mut cause = cause;
        if cause.len() > REJECT_RAW_LIMIT {
            let mut cut = REJECT_RAW_LIMIT;
            while !cause.is_char_boundary(cut) {
                cut -= 1;
            }
            cause.truncate(cut);
            cause.push_str("...");
        }
        Reject {
            file,
            line: None,
            byte_offset: None,
            position: 0,
            raw,
            raw_truncated: truncated,
            cause,
            id: None,
        }
    }
}

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
    /// input.
    fn resume_row(&self) -> u64 {
        0
    }
    /// Skips whole parts at the front, at most `max_rows` rows in all, whose row counts are
    /// known without decoding (Parquet row groups); returns the rows skipped and the raw
    /// input bytes they took (progress counts them as processed).
    fn skip_whole_parts(&mut self, _max_rows: u64) -> Result<(u64, u64)> {
        Ok((0, 0))
    }
    /// Rows at the front of what this source yields that an earlier run already committed:
    /// the engine drops them (after [`Self::skip_whole_parts`]). [`SkipRows`]: its count; a
    /// source that itself starts past the committed rows (a broker redelivering only what
    /// is not committed, numbered from [`Self::resume_row`]): 0.
    fn committed_rows_ahead(&self) -> u64 {
        0
    }
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
    fn resume_row(&self) -> u64 {
        (**self).resume_row()
    }
    fn skip_whole_parts(&mut self, max_rows: u64) -> Result<(u64, u64)> {
        (**self).skip_whole_parts(max_rows)
    }
    fn committed_rows_ahead(&self) -> u64 {
        (**self).committed_rows_ahead()
    }
    fn flush_requested(&self) -> bool {
        (**self).flush_requested()
    }
}
