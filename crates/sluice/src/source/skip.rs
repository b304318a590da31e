//! A source adapter that drops the first N rows of another source: how a resumed run skips
//! the input rows the completed parts of an earlier run already cover. Parts inside the
//! skipped prefix are decoded on the reader thread and dropped; the rest pass through as is.

use std::collections::VecDeque;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::{PartHint, Source, SourcePart};
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
            let batches = match part {
                SourcePart::Ready(batch) => vec![batch],
                SourcePart::Deferred { decode, .. } => decode()?,
            };
            for batch in batches {
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
                SourcePart::Deferred { decode, .. } => decode()?,
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

    #[test]
    fn an_input_shorter_than_the_prefix_is_an_error() -> Result<()> {
        let err = drain(SkipRows::new(ids(0..5, 2)?, 6)).expect_err("too short");
        assert!(err.to_string().contains("only 5 rows"), "{err}");
        Ok(())
    }
}
