//! Data already in memory (batches, a table) and any iterator of batches. Batches are
//! handed over as they are; the engine slices them into chunks without copying.

use std::collections::VecDeque;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::{PartHint, Source, SourcePart};
use crate::error::{BoxError, Result, SluiceError};

pub struct MemorySource {
    schema: SchemaRef,
    batches: VecDeque<RecordBatch>,
}

impl MemorySource {
    /// One batch (a whole table); the engine slices it zero-copy.
    pub fn from_batch(batch: RecordBatch) -> Self {
        MemorySource {
            schema: batch.schema(),
            batches: VecDeque::from([batch]),
        }
    }

    /// Batches of one schema; each batch's schema must equal `schema`.
    pub fn try_new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Self> {
        for (i, b) in batches.iter().enumerate() {
            if b.schema().fields() != schema.fields() {
                return Err(SluiceError::Source {
                    source_name: "memory".into(),
                    message: format!(
                        "batch {i} has schema {:?}, expected {:?}",
                        b.schema(),
                        schema
                    ),
                });
            }
        }
        Ok(MemorySource {
            schema,
            batches: batches.into(),
        })
    }
}

impl Source for MemorySource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn name(&self) -> String {
        "memory".into()
    }

    fn next_part(&mut self, _hint: PartHint) -> Result<Option<(SourcePart, u64)>> {
        Ok(self.batches.pop_front().map(|b| (SourcePart::Ready(b), 0)))
    }
}

/// Any iterator of `Result<RecordBatch, E>` with a known schema (a channel, a generator,
/// a network stream). Read by the engine's reader thread, in order.
pub struct IterSource<I> {
    schema: SchemaRef,
    name: String,
    iter: I,
    batches_read: u64,
}

impl<I, E> IterSource<I>
where
    I: Iterator<Item = std::result::Result<RecordBatch, E>> + Send,
    E: Into<BoxError>,
{
    pub fn new(schema: SchemaRef, iter: I) -> Self {
        IterSource {
            schema,
            name: "iterator".into(),
            iter,
            batches_read: 0,
        }
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl<I, E> Source for IterSource<I>
where
    I: Iterator<Item = std::result::Result<RecordBatch, E>> + Send,
    E: Into<BoxError>,
{
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn next_part(&mut self, _hint: PartHint) -> Result<Option<(SourcePart, u64)>> {
        match self.iter.next() {
            None => Ok(None),
            Some(Err(e)) => Err(SluiceError::Source {
                source_name: self.name.clone(),
                message: format!("batch {}: {}", self.batches_read, e.into()),
            }),
            Some(Ok(batch)) => {
                if batch.schema().fields() != self.schema.fields() {
                    return Err(SluiceError::Source {
                        source_name: self.name.clone(),
                        message: format!(
                            "batch {} has schema {:?}, expected {:?}",
                            self.batches_read,
                            batch.schema(),
                            self.schema
                        ),
                    });
                }
                self.batches_read += 1;
                Ok(Some((SourcePart::Owned(batch), 0)))
            }
        }
    }
}
