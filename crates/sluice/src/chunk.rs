//! Chunks: what the engine hands out (a processed batch that knows the input rows it came
//! from) and the chunker that cuts decoded input into chunks of the sizer's row count,
//! zero-copy where a chunk lies inside one decoded batch.

use std::collections::VecDeque;
use std::ops::Range;

use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::backpressure::Reservation;
use crate::error::{Result, SluiceError};
use crate::source::Reject;

/// One processed chunk, in input order unless the pipeline is unordered.
#[derive(Debug, Clone)]
pub struct ProcessedChunk {
    /// Position of the chunk in the input (0, 1, 2, ...).
    pub seq: u64,
    /// The input rows this chunk was made from (0-based, end exclusive).
    pub input_rows: Range<u64>,
    pub batch: RecordBatch,
    /// True when the function failed and the `pass_through` policy emitted the input.
    pub passed_through: bool,
}

/// Schema metadata key by which a function's output declares memory it holds outside its
/// Arrow buffers, in bytes (decimal text): a batch that stands for an object of the caller's
/// language (the Python bindings hand back the user's own DataFrame) is accounted at that
/// object's weight until it is handed out.
pub const HELD_BYTES_METADATA_KEY: &str = "sluice.held_bytes";

/// Memory of a batch's visible rows (a slice counts only its part of shared buffers), plus
/// what it declares under [`HELD_BYTES_METADATA_KEY`].
pub fn batch_memory(batch: &RecordBatch) -> u64 {
    let held = batch
        .schema_ref()
        .metadata()
        .get(HELD_BYTES_METADATA_KEY)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    held + batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size()) as u64
        })
        .sum::<u64>()
}

struct Piece {
    batch: RecordBatch,
    /// Held for decoded input; `None` for borrowed data (in-memory sources).
    reservation: Option<Reservation>,
    bytes_per_row: f64,
    /// Bytes of the source (file bytes) each row stands for: what progress counts.
    source_bytes_per_row: f64,
}

/// In-order decoded input waiting to be cut into chunks.
pub(crate) struct Chunker {
    schema: SchemaRef,
    pieces: VecDeque<Piece>,
    rows: usize,
    /// Rows ever pushed / ever taken: the rejects' positions are counted in pushed rows.
    pushed: u64,
    taken: u64,
    /// Malformed records set aside, in order; `position` is in pushed rows.
    rejects: VecDeque<Reject>,
}

impl Chunker {
    pub fn new(schema: SchemaRef) -> Self {
        Chunker {
            schema,
            pieces: VecDeque::new(),
            rows: 0,
            pushed: 0,
            taken: 0,
            rejects: VecDeque::new(),
        }
    }

    /// Adds the rejects of the part pushed next (positions counted within that part).
    pub fn push_rejects(&mut self, rejects: Vec<Reject>) {
        for mut r in rejects {
            r.position += self.pushed;
            self.rejects.push_back(r);
        }
    }

    /// Takes the rejects that sit before the next `rows` rows to be cut: those a chunk of
    /// `rows` rows carries. Their positions become relative to the chunk's first row.
    fn take_rejects(&mut self, rows: u64) -> Vec<Reject> {
        let mut out = Vec::new();
        while self
            .rejects
            .front()
            .is_some_and(|r| r.position < self.taken + rows)
        {
            let mut r = self.rejects.pop_front().expect("front exists");
            r.position -= self.taken;
            out.push(r);
        }
        out
    }

    /// Takes the rejects after the last row pushed, when no row follows them (the end of
    /// the input); positions relative to the next row that would have been cut.
    pub fn take_trailing_rejects(&mut self) -> Vec<Reject> {
        if self.rows > 0 {
            return Vec::new();
        }
        let taken = self.taken;
        self.rejects
            .drain(..)
            .map(|mut r| {
                r.position -= taken;
                r
            })
            .collect()
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes held (reserved) by decoded input not yet cut.
    pub fn reserved_bytes(&self) -> u64 {
        self.pieces
            .iter()
            .filter_map(|p| p.reservation.as_ref().map(|r| r.bytes()))
            .sum()
    }

    /// Adds decoded batches; `reservation` covers all of them (split by their weight), and
    /// they were decoded from `source_bytes` bytes of the source.
    pub fn push(
        &mut self,
        batches: Vec<RecordBatch>,
        mut reservation: Option<Reservation>,
        source_bytes: u64,
    ) {
        let all_rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        self.pushed += all_rows as u64;
        let source_bytes_per_row = source_bytes as f64 / all_rows.max(1) as f64;
        let weights: Vec<u64> = batches.iter().map(batch_memory).collect();
        let total: u64 = weights.iter().sum();
        let reserved = reservation.as_ref().map_or(0, |r| r.bytes());
        let count = batches.len();
        for (i, (batch, weight)) in batches.into_iter().zip(weights).enumerate() {
            if batch.num_rows() == 0 {
                continue;
            }
            let piece_reservation = reservation.as_mut().map(|r| {
                if i + 1 == count {
                    r.split(r.bytes())
                } else {
                    // Each batch carries its share of the part's reservation, by weight.
                    let share = (reserved as u128 * weight as u128 / total.max(1) as u128) as u64;
                    r.split(share)
                }
            });
            self.rows += batch.num_rows();
            self.pieces.push_back(Piece {
                bytes_per_row: weight as f64 / batch.num_rows() as f64,
                source_bytes_per_row,
                batch,
                reservation: piece_reservation,
            });
        }
    }

    /// Estimated bytes of the next `rows` rows, and how many of them are not yet reserved.
    pub fn peek_bytes(&self, rows: usize) -> (u64, u64) {
        let mut left = rows;
        let (mut total, mut unreserved) = (0f64, 0f64);
        for p in &self.pieces {
            if left == 0 {
                break;
            }
            let take = left.min(p.batch.num_rows());
            let bytes = take as f64 * p.bytes_per_row;
            total += bytes;
            if p.reservation.is_none() {
                unreserved += bytes;
            }
            left -= take;
        }
        (total.ceil() as u64, unreserved.ceil() as u64)
    }

    /// Cuts the next chunk of up to `rows` rows; its input reservations are merged into
    /// `into`. Also gives the source bytes the chunk's rows were decoded from, and the
    /// rejects set aside before its rows (positions relative to its first row).
    pub fn take(
        &mut self,
        rows: usize,
        into: &mut Reservation,
    ) -> Result<(RecordBatch, f64, Vec<Reject>)> {
        let rejects = self.take_rejects(rows.min(self.rows) as u64);
        let mut parts = Vec::new();
        let mut source_bytes = 0.0;
        let mut left = rows.min(self.rows);
        while left > 0 {
            let Some(front) = self.pieces.front_mut() else {
                break;
            };
            let n = front.batch.num_rows();
            if n <= left {
                let piece = self.pieces.pop_front().expect("front exists");
                if let Some(r) = piece.reservation {
                    into.merge(r);
                }
                left -= n;
                self.rows -= n;
                source_bytes += n as f64 * piece.source_bytes_per_row;
                parts.push(piece.batch);
            } else {
                parts.push(front.batch.slice(0, left));
                front.batch = front.batch.slice(left, n - left);
                if let Some(r) = front.reservation.as_mut() {
                    let share = (left as f64 * front.bytes_per_row).round() as u64;
                    into.merge(r.split(share));
                }
                self.rows -= left;
                source_bytes += left as f64 * front.source_bytes_per_row;
                left = 0;
            }
        }
        let batch = match parts.len() {
            0 => RecordBatch::new_empty(self.schema.clone()),
            1 => parts.pop().expect("one part"),
            _ => concat_batches(&self.schema, &parts)
                .map_err(|e| SluiceError::arrow("joining decoded batches into a chunk", e))?,
        };
        self.taken += batch.num_rows() as u64;
        Ok((batch, source_bytes, rejects))
    }
}
