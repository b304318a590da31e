//! Parquet part files. Row groups are flushed by size, not only by row count, so the
//! writer's buffer stays inside its share of the memory budget.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::PartFileWriter;
use crate::error::{Result, SluiceError};

pub(crate) struct ParquetPartWriter {
    writer: ArrowWriter<BufWriter<File>>,
    flush_bytes: u64,
    path: std::path::PathBuf,
}

impl ParquetPartWriter {
    pub fn create(path: &Path, file: File, schema: SchemaRef, flush_bytes: u64) -> Result<Self> {
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(1024 * 1024));
        // Measured floats almost never repeat: a dictionary for them is hashed value by
        // value until it overflows and is thrown away, which was a large share of the
        // writer's time. Other types keep the default (dictionary on).
        for field in schema.fields() {
            if field.data_type().is_floating() {
                props = props
                    .set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
            }
        }
        let props = props.build();
        let writer =
            ArrowWriter::try_new(BufWriter::with_capacity(1 << 20, file), schema, Some(props))
                .map_err(|e| SluiceError::write(path, e))?;
        Ok(ParquetPartWriter {
            writer,
            flush_bytes: flush_bytes.max(1 << 20),
            path: path.to_path_buf(),
        })
    }
}

impl PartFileWriter for ParquetPartWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer
            .write(batch)
            .map_err(|e| SluiceError::write(&self.path, e))?;
        if self.writer.in_progress_size() as u64 >= self.flush_bytes {
            self.writer
                .flush()
                .map_err(|e| SluiceError::write(&self.path, e))?;
        }
        Ok(())
    }

    fn buffered_bytes(&self) -> u64 {
        self.writer.memory_size() as u64 + (1 << 20)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let path = self.path.clone();
        let inner = self
            .writer
            .into_inner()
            .map_err(|e| SluiceError::write(&path, e))?;
        let file = inner
            .into_inner()
            .map_err(|e| SluiceError::write(&path, e.error()))?;
        file.sync_all().map_err(|e| SluiceError::write(&path, e))
    }
}
