//! A source adapter that drops the first N rows of another source: how a resumed run skips
//! the input rows the completed parts of an earlier run already cover. Parts inside the
//! skipped prefix are decoded on the reader thread and dropped; the rest pass through as is.
//! Malformed records (rejects) before the skip point were set aside by the earlier run and
//! are dropped with the prefix; those at or after it are handed on.

use std::collections::VecDeque;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::{DecodedPart, PartHint, Reject, Source, SourcePart};
use crate::chunk::batch_memory;
use crate::error::{Result, SluiceError};

/// Yields the rows of `inner` after its first `rows` rows.
///
/// The skipped rows must exist: an input that ends inside the prefix is an error (it is not
/// the input the earlier run read). The raw bytes of skipped parts are reported with the
/// first part handed on, so progress still counts them as read.
pub struct SkipRows<S> {
    inner: S,
    remaining: u64,
    skip: u64,
    /// Decoded rows left over from the part the prefix ended in.
    leftover: VecDeque<RecordBatch>,
    /// Rejects of that part at or after the skip point; `position` counts from it.
    leftover_rejects: Vec<Reject>,
    /// Raw bytes consumed by skipped parts, not yet reported.
    unreported_bytes: u64,
}

impl<S: Source> SkipRows<S> {
    pub fn new(inner: S, rows: u64) -> Self {
        SkipRows {
            inner,
            remaining: rows,
            skip: rows,
            leftover: VecDeque::new(),
            leftover_rejects: Vec::new(),
            unreported_bytes: 0,
        }
    }

    /// Rows still to drop before the first row is handed on.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    fn skip_prefix(&mut self, hint: PartHint) -> Result<()> {
        while self.remaining > 0 {
            let Some((part, raw_bytes)) = self.inner.next_part(hint)? else {
                return Err(SluiceError::Source {
                    source_name: self.inner.name(),
                    message: format!(
                        "the input has only {} rows, fewer than the {} rows to skip; it is not the input the earlier run read",
                        self.skip - self.remaining,
                        self.skip
                    ),
                });
            };
            self.unreported_bytes += raw_bytes;
            let part = match part {
                SourcePart::Ready(batch) => DecodedPart::from(vec![batch]),
                SourcePart::Deferred { decode, .. } => decode()?,
            };
            // A reject's position is the input row of the next good row after it: the
            // earlier run committed it with the rows before the skip point.
            let part_start = self.skip - self.remaining;
            for mut reject in part.rejects {
                let position = part_start + reject.position;
                if position >= self.skip {
                    reject.position = position - self.skip;
                    self.leftover_rejects.push(reject);
                }
            }
            for batch in part.batches {
                let rows = batch.num_rows() as u64;
                if self.remaining >= rows {
                    self.remaining -= rows;
                } else {
                    let start = self.remaining as usize;
                    self.remaining = 0;
                    self.leftover
                        .push_back(batch.slice(start, batch.num_rows() - start));
                }
            }
        }
        Ok(())
    }
}

impl<S: Source> Source for SkipRows<S> {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn name(&self) -> String {
        self.inner.name()
    }

    fn total_bytes(&self) -> Option<u64> {
        self.inner.total_bytes()
    }

    fn next_part(&mut self, hint: PartHint) -> Result<Option<(SourcePart, u64)>> {
        self.skip_prefix(hint)?;
        let reported = std::mem::take(&mut self.unreported_bytes);
        if !self.leftover_rejects.is_empty() {
            // Rejects travel with rows in a decoded part: hand the leftover on as one.
            let part = DecodedPart {
                batches: self.leftover.drain(..).collect(),
                rejects: std::mem::take(&mut self.leftover_rejects),
            };
            let estimated_bytes = part.batches.iter().map(batch_memory).sum();
            let decode = Box::new(move || Ok(part));
            return Ok(Some((
                SourcePart::Deferred {
                    estimated_bytes,
                    decode,
                },
                reported,
            )));
        }
        if let Some(batch) = self.leftover.pop_front() {
            return Ok(Some((SourcePart::Ready(batch), reported)));
        }
        match self.inner.next_part(hint)? {
            Some((part, raw_bytes)) => Ok(Some((part, raw_bytes + reported))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::source::MemorySource;

    fn ids(range: std::ops::Range<i64>, batch_rows: usize) -> Result<MemorySource> {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let values: Vec<i64> = range.collect();
        let batches = values
            .chunks(batch_rows)
            .map(|c| {
                RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(c.to_vec()))])
                    .expect("valid batch")
            })
            .collect::<Vec<_>>();
        MemorySource::try_new(schema, batches)
    }

    fn drain(mut source: impl Source) -> Result<Vec<i64>> {
        let hint = PartHint {
            rows: 7,
            bytes: 1024,
        };
        let mut out = Vec::new();
        while let Some((part, _)) = source.next_part(hint)? {
            let batches = match part {
                SourcePart::Ready(b) => vec![b],
                SourcePart::Deferred { decode, .. } => decode()?.batches,
            };
            for b in batches {
                let col = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("int64");
                out.extend((0..col.len()).map(|i| col.value(i)));
            }
        }
        Ok(out)
    }

    #[test]
    fn skips_exactly_the_prefix_at_any_boundary() -> Result<()> {
        for skip in [0u64, 1, 9, 10, 11, 25, 49, 50] {
            let rest = drain(SkipRows::new(ids(0..50, 10)?, skip))?;
            assert_eq!(rest, (skip as i64..50).collect::<Vec<_>>(), "skip {skip}");
        }
        Ok(())
    }

    /// Parts of 10 rows (ids from 0), each with rejects at the given positions in it.
    struct WithRejects(VecDeque<(i64, Vec<u64>)>);

    impl Source for WithRejects {
        fn schema(&self) -> SchemaRef {
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]))
        }
        fn name(&self) -> String {
            "parts".into()
        }
        fn next_part(&mut self, _: PartHint) -> Result<Option<(SourcePart, u64)>> {
            let Some((first, positions)) = self.0.pop_front() else {
                return Ok(None);
            };
            let ids = Int64Array::from((first..first + 10).collect::<Vec<_>>());
            let batch = RecordBatch::try_new(self.schema(), vec![Arc::new(ids)])
                .map_err(|e| SluiceError::arrow("test batch", e))?;
            let rejects = positions
                .into_iter()
                .map(|p| {
                    let mut r = Reject::new("f".into(), p + 1, 0, b"x", "bad".into());
                    r.position = p;
                    r
                })
                .collect();
            let part = DecodedPart {
                batches: vec![batch],
                rejects,
            };
            Ok(Some((
                SourcePart::Deferred {
                    estimated_bytes: 0,
                    decode: Box::new(move || Ok(part)),
                },
                0,
            )))
        }
    }

    #[test]
    fn rejects_before_the_skip_point_are_dropped_and_the_rest_handed_on() -> Result<()> {
        // Absolute positions: 0, 10 (end of part 0), 13, 20 (start of part 2), 25.
        let parts = || {
            WithRejects(VecDeque::from(vec![
                (0, vec![0, 10]),
                (10, vec![3]),
                (20, vec![0, 5]),
            ]))
        };
        for (skip, kept) in [
            (0u64, vec![0u64, 10, 13, 20, 25]),
            (10, vec![10, 13, 20, 25]),
            (11, vec![13, 20, 25]),
            (20, vec![20, 25]),
            (21, vec![25]),
        ] {
            let mut source = SkipRows::new(parts(), skip);
            let mut got = Vec::new();
            // Rows handed on before each part: positions are relative to their part.
            let mut rows_before = skip;
            while let Some((part, _)) = source.next_part(PartHint { rows: 7, bytes: 1 })? {
                let part = match part {
                    SourcePart::Ready(b) => DecodedPart::from(vec![b]),
                    SourcePart::Deferred { decode, .. } => decode()?,
                };
                got.extend(part.rejects.iter().map(|r| rows_before + r.position));
                rows_before += part.rows() as u64;
            }
            assert_eq!(got, kept, "skip {skip}");
        }
        Ok(())
    }

    #[test]
    fn an_input_shorter_than_the_prefix_is_an_error() -> Result<()> {
        let err = drain(SkipRows::new(ids(0..5, 2)?, 6)).expect_err("too short");
        assert!(err.to_string().contains("only 5 rows"), "{err}");
        Ok(())
    }
}
