//! Parquet part files. The columns of a chunk are encoded in parallel (the sink runs on
//! the consumer's one thread, and encoding was the serial stage of a Parquet-to-Parquet
//! run), and row groups are flushed by size, not only by row count, so the writer's buffer
//! stays inside its share of the memory budget.

use std::fs::File;
use std::io::BufWriter;
use std::ops::Range;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn,
    ArrowRowGroupWriterFactory,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use super::PartFileWriter;
use crate::error::{Result, SluiceError};

const MAX_ROW_GROUP_ROWS: usize = 1024 * 1024;
/// Below this many rows a chunk is encoded on the calling thread: a thread costs more.
const PARALLEL_MIN_ROWS: usize = 4096;

pub(crate) struct ParquetPartWriter {
    file: SerializedFileWriter<BufWriter<File>>,
    row_groups: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// Encoders of the row group being built, one per leaf column; `None` between groups.
    columns: Option<Vec<ArrowColumnWriter>>,
    rows_in_group: usize,
    flush_bytes: u64,
    encode_threads: usize,
    path: PathBuf,
}

impl ParquetPartWriter {
    pub fn create(path: &Path, file: File, schema: SchemaRef, flush_bytes: u64) -> Result<Self> {
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS));
        // Measured floats almost never repeat: a dictionary for them is hashed value by
        // value until it overflows and is thrown away, which was a large share of the
        // writer's time. Other types keep the default (dictionary on).
        for field in schema.fields() {
            if field.data_type().is_floating() {
                props = props
                    .set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
            }
        }
        // ArrowWriter embeds the Arrow schema in the file's metadata; its lower-level parts
        // let the columns be encoded on several threads.
        let (file, row_groups) = ArrowWriter::try_new(
            BufWriter::with_capacity(1 << 20, file),
            schema.clone(),
            Some(props.build()),
        )
        .and_then(ArrowWriter::into_serialized_writer)
        .map_err(|e| SluiceError::write(path, e))?;
        let encode_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(ParquetPartWriter {
            file,
            row_groups,
            schema,
            columns: None,
            rows_in_group: 0,
            flush_bytes: flush_bytes.max(1 << 20),
            encode_threads,
            path: path.to_path_buf(),
        })
    }

    fn encode(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut leaves: Vec<ArrowLeafColumn> = Vec::with_capacity(batch.num_columns());
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            leaves.extend(compute_leaves(field, column).map_err(|e| self.error(e))?);
        }
        let columns = match &mut self.columns {
            Some(columns) => columns,
            none => none.insert(
                self.row_groups
                    .create_column_writers(self.file.flushed_row_groups().len())
                    .map_err(|e| SluiceError::write(&self.path, e))?,
            ),
        };
        let threads = if batch.num_rows() >= PARALLEL_MIN_ROWS {
            self.encode_threads
        } else {
            1
        };
        let path = &self.path;
        in_parallel(columns, threads, |range, writers| {
            for (writer, leaf) in writers.iter_mut().zip(&leaves[range]) {
                writer.write(leaf)?;
            }
            Ok(())
        })
        .map_err(|e| SluiceError::write(path, e))?;
        self.rows_in_group += batch.num_rows();
        Ok(())
    }

    /// Closes the row group being built (compressing its last pages in parallel) and
    /// appends it to the file.
    fn flush(&mut self) -> Result<()> {
        let Some(columns) = self.columns.take() else {
            return Ok(());
        };
        self.rows_in_group = 0;
        let mut pairs: Vec<(Option<ArrowColumnWriter>, Option<ArrowColumnChunk>)> = columns
            .into_iter()
            .map(|writer| (Some(writer), None))
            .collect();
        in_parallel(&mut pairs, self.encode_threads, |_, pairs| {
            for (writer, chunk) in pairs.iter_mut() {
                if let Some(writer) = writer.take() {
                    *chunk = Some(writer.close()?);
                }
            }
            Ok(())
        })
        .map_err(|e| SluiceError::write(&self.path, e))?;
        let chunks = pairs.into_iter().filter_map(|(_, chunk)| chunk);
        let path = &self.path;
        let mut row_group = self
            .file
            .next_row_group()
            .map_err(|e| SluiceError::write(path, e))?;
        for chunk in chunks {
            chunk
                .append_to_row_group(&mut row_group)
                .map_err(|e| SluiceError::write(path, e))?;
        }
        row_group.close().map_err(|e| SluiceError::write(path, e))?;
        Ok(())
    }

    fn in_progress_bytes(&self) -> u64 {
        self.columns.as_ref().map_or(0, |columns| {
            columns
                .iter()
                .map(|c| c.get_estimated_total_bytes() as u64)
                .sum()
        })
    }

    fn error(&self, e: ParquetError) -> SluiceError {
        SluiceError::write(&self.path, e)
    }
}

/// Runs `work` on contiguous shares of `items`, one share per thread (the first on the
/// calling thread); `work` is given each share's index range and its items.
fn in_parallel<T: Send>(
    items: &mut [T],
    threads: usize,
    work: impl Fn(Range<usize>, &mut [T]) -> std::result::Result<(), ParquetError> + Sync,
) -> std::result::Result<(), ParquetError> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        let len = items.len();
        return work(0..len, items);
    }
    let share = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let work = &work;
        let mut shares = items.chunks_mut(share).enumerate();
        let first = shares.next();
        let handles: Vec<_> = shares
            .map(|(i, part)| {
                let range = i * share..i * share + part.len();
                scope.spawn(move || work(range, part))
            })
            .collect();
        let mut result = match first {
            Some((_, part)) => work(0..part.len(), part),
            None => Ok(()),
        };
        for handle in handles {
            let joined = handle.join().unwrap_or_else(|_| {
                Err(ParquetError::General(
                    "a Parquet encoding thread panicked".to_string(),
                ))
            });
            if result.is_ok() {
                result = joined;
            }
        }
        result
    })
}

impl PartFileWriter for ParquetPartWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut rest = batch.clone();
        while rest.num_rows() > 0 {
            let room = MAX_ROW_GROUP_ROWS - self.rows_in_group;
            let now = rest.slice(0, rest.num_rows().min(room));
            rest = rest.slice(now.num_rows(), rest.num_rows() - now.num_rows());
            self.encode(&now)?;
            if self.rows_in_group >= MAX_ROW_GROUP_ROWS
                || self.in_progress_bytes() >= self.flush_bytes
            {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn buffered_bytes(&self) -> u64 {
        let encoders: u64 = self.columns.as_ref().map_or(0, |columns| {
            columns.iter().map(|c| c.memory_size() as u64).sum()
        });
        encoders + (1 << 20)
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.flush()?;
        let path = self.path.clone();
        let inner = self
            .file
            .into_inner()
            .map_err(|e| SluiceError::write(&path, e))?;
        let file = inner
            .into_inner()
            .map_err(|e| SluiceError::write(&path, e.error()))?;
        file.sync_all().map_err(|e| SluiceError::write(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array, Int64Array, ListArray, StringArray};
    use arrow::datatypes::Int64Type;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    /// Chunks big enough for the parallel path, a nested column (two levels of leaves),
    /// and a small flush size so one file gets several row groups.
    #[test]
    fn columns_encoded_in_parallel_read_back_equal_in_several_row_groups() {
        let rows = 200_000usize;
        let floats: ArrayRef = Arc::new(Float64Array::from_iter_values(
            (0..rows).map(|i| i as f64 * 0.5),
        ));
        let ints: ArrayRef = Arc::new(Int64Array::from_iter_values((0..rows as i64).rev()));
        let names: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..rows).map(|i| ["A", "B", "C"][i % 3]),
        ));
        let lists: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
            (0..rows).map(|i| (i % 4 != 0).then(|| vec![Some(i as i64); i % 3])),
        ));
        let batch = RecordBatch::try_from_iter([
            ("x", floats),
            ("n", ints),
            ("category", names),
            ("list", lists),
        ])
        .expect("batch");

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("part.parquet");
        let file = File::create(&path).expect("create");
        let mut writer: Box<dyn PartFileWriter> =
            Box::new(ParquetPartWriter::create(&path, file, batch.schema(), 1).expect("writer"));
        for start in (0..rows).step_by(50_000) {
            writer.write(&batch.slice(start, 50_000)).expect("write");
        }
        writer.finish().expect("finish");

        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).expect("open"))
            .expect("reader");
        assert_eq!(
            reader.schema(),
            &batch.schema(),
            "the Arrow schema is embedded"
        );
        // flush_bytes is raised to 1 MiB; each 50k-row write encodes to more than that.
        assert!(
            reader.metadata().num_row_groups() >= 2,
            "flushed by size: {} row group(s)",
            reader.metadata().num_row_groups()
        );
        let got: Vec<RecordBatch> = reader
            .build()
            .expect("build")
            .collect::<std::result::Result<_, _>>()
            .expect("read");
        let got = arrow::compute::concat_batches(&batch.schema(), &got).expect("concat");
        assert_eq!(got, batch);
    }
}
