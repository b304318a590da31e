//! Parquet row groups encoded ahead, on the workers' threads: the sink offers this to the
//! engine as an [`EncodeAhead`], and its part writer only appends the encoded bytes (encoding
//! on the consumer's one thread was the serial stage of a Parquet-to-Parquet run).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory,
};
use parquet::arrow::ArrowWriter;
use parquet::errors::ParquetError;

use super::parquet::{writer_properties, MAX_ROW_GROUP_ROWS};
use super::EncodeAhead;
use crate::error::{Result, SluiceError};

/// Fewest rows for which a worker encodes a chunk's output as a row group of its own:
/// smaller chunks (a live stream's, a tiny budget's) are gathered by the part writer into
/// row groups of a useful size instead.
pub(crate) const ENCODE_AHEAD_MIN_ROWS: usize = 16 * 1024;

/// One chunk's output encoded as a complete Parquet row group, ready to append.
pub struct EncodedRowGroup {
    pub(crate) schema: SchemaRef,
    pub(crate) rows: usize,
    pub(super) chunks: Vec<ArrowColumnChunk>,
}

impl EncodedRowGroup {
    /// Bytes the encoded column chunks hold in memory.
    pub fn bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.close().bytes_written).sum()
    }
}

/// Encodes chunks' outputs into row groups on the workers' threads, so that the consumer,
/// which writes every part in order on one thread, only appends bytes (encoding there was
/// the serial stage, and left a core idle, on a Parquet-to-Parquet run).
pub struct RowGroupEncoder {
    /// The folder the parts go to (named in errors).
    dir: PathBuf,
    /// The last schema seen, with the factory of its column encoders.
    prepared: std::sync::Mutex<Option<(SchemaRef, Arc<ArrowRowGroupWriterFactory>)>>,
}

impl RowGroupEncoder {
    pub(crate) fn new(dir: &Path) -> Self {
        RowGroupEncoder {
            dir: dir.to_path_buf(),
            prepared: Default::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a chunk of this output is better encoded ahead than by the part writer.
    pub fn worth_it(batch: &RecordBatch) -> bool {
        (ENCODE_AHEAD_MIN_ROWS..=MAX_ROW_GROUP_ROWS).contains(&batch.num_rows())
    }

    pub fn encode(
        &self,
        batch: &RecordBatch,
    ) -> std::result::Result<EncodedRowGroup, ParquetError> {
        let schema = batch.schema();
        let factory = {
            let mut prepared = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
            match prepared.as_ref() {
                Some((known, factory)) if known.fields() == schema.fields() => factory.clone(),
                _ => {
                    // The factory is what a part's writer uses, made the same way; its
                    // file writer (over nothing) is only how arrow-rs hands one out.
                    let (_, factory) = ArrowWriter::try_new(
                        std::io::sink(),
                        schema.clone(),
                        Some(writer_properties(&schema)),
                    )
                    .and_then(ArrowWriter::into_serialized_writer)?;
                    let factory = Arc::new(factory);
                    *prepared = Some((schema.clone(), factory.clone()));
                    factory
                }
            }
        };
        // The index only matters to encrypted files, which sluice does not write.
        let mut writers = factory.create_column_writers(0)?;
        let mut leaves = Vec::with_capacity(writers.len());
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            leaves.extend(compute_leaves(field, column)?);
        }
        for (writer, leaf) in writers.iter_mut().zip(&leaves) {
            writer.write(leaf)?;
        }
        let chunks = writers
            .into_iter()
            .map(ArrowColumnWriter::close)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(EncodedRowGroup {
            schema,
            rows: batch.num_rows(),
            chunks,
        })
    }
}

impl EncodeAhead for RowGroupEncoder {
    fn encode(
        &self,
        batch: &RecordBatch,
        seq: u64,
        rows: &Range<u64>,
    ) -> Option<Result<EncodedRowGroup>> {
        if !Self::worth_it(batch) {
            return None;
        }
        Some(RowGroupEncoder::encode(self, batch).map_err(|e| {
            SluiceError::write(
                self.dir(),
                format!(
                    "encoding the output of chunk {seq} (input rows {}..{}) as Parquet: {e}",
                    rows.start, rows.end
                ),
            )
        }))
    }
}
