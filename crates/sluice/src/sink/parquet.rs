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

use super::encode_ahead::EncodedRowGroup;
use super::PartFileWriter;
use crate::error::{Result, SluiceError};

pub(super) const MAX_ROW_GROUP_ROWS: usize = 1024 * 1024;
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

/// The writer's settings for `schema`; a part's own row groups and the ones workers
/// encode ahead ([`RowGroupEncoder`]) must be written alike.
pub(super) fn writer_properties(schema: &SchemaRef) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS));
    // Measured floats almost never repeat: a dictionary for them is hashed value by
    // value until it overflows and is thrown away, which was a large share of the
    // writer's time. Other types keep the default (dictionary on).
    for field in schema.fields() {
        if field.data_type().is_floating() {
            props =
                props.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
        }
    }
    props.build()
}

impl ParquetPartWriter {
    pub fn create(path: &Path, file: File, schema: SchemaRef, flush_bytes: u64) -> Result<Self> {
        let props = writer_properties(&schema);
        // ArrowWriter embeds the Arrow schema in the file's metadata; its lower-level parts
        // let the columns be encoded on several threads.
        let (file, row_groups) = ArrowWriter::try_new(
            BufWriter::with_capacity(1 << 20, file),
            schema.clone(),
            Some(props),
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
        // Shares of equal weight, not of equal count: a row of floats beside a row of
        // booleans took the calling thread, on the consumer's critical path, twice as long.
        let mut leaves: Vec<ArrowLeafColumn> = Vec::with_capacity(batch.num_columns());
        let mut weights: Vec<u64> = Vec::with_capacity(batch.num_columns());
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            let field_leaves = compute_leaves(field, column).map_err(|e| self.error(e))?;
            let weight = column.get_buffer_memory_size() as u64 / field_leaves.len().max(1) as u64;
            weights.extend(std::iter::repeat_n(weight.max(1), field_leaves.len()));
            leaves.extend(field_leaves);
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
        if leaves.len() != columns.len() {
            return Err(SluiceError::write(
                &self.path,
                format!(
                    "{} leaf columns for {} encoders",
                    leaves.len(),
                    columns.len()
                ),
            ));
        }
        let shares = balanced_shares(&weights, threads);
        let path = &self.path;
        in_parallel(columns, &shares, |range, writers| {
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
        let weights: Vec<u64> = pairs
            .iter()
            .map(|(writer, _)| {
                writer
                    .as_ref()
                    .map_or(1, |w| w.get_estimated_total_bytes().max(1) as u64)
            })
            .collect();
        let shares = balanced_shares(&weights, self.encode_threads);
        in_parallel(&mut pairs, &shares, |_, pairs| {
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
        super::writeback::start(self.file.inner().get_ref());
        Ok(())
    }

    /// Appends a row group encoded ahead, after the one being built (order is kept).
    fn append_encoded(&mut self, group: EncodedRowGroup) -> Result<()> {
        if group.schema.fields() != self.schema.fields() {
            return Err(SluiceError::write(
                &self.path,
                "a row group encoded ahead has another schema than its part",
            ));
        }
        self.flush()?;
        let path = &self.path;
        let mut row_group = self
            .file
            .next_row_group()
            .map_err(|e| SluiceError::write(path, e))?;
        for chunk in group.chunks {
            chunk
                .append_to_row_group(&mut row_group)
                .map_err(|e| SluiceError::write(path, e))?;
        }
        row_group.close().map_err(|e| SluiceError::write(path, e))?;
        super::writeback::start(self.file.inner().get_ref());
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

/// Cuts `0..weights.len()` into at most `threads` contiguous shares whose weights are as
/// even as the cut points allow (each cut at the prefix sum nearest its target).
fn balanced_shares(weights: &[u64], threads: usize) -> Vec<Range<usize>> {
    let threads = threads.clamp(1, weights.len().max(1));
    let total: u128 = weights.iter().map(|&w| w as u128).sum();
    let mut shares = Vec::with_capacity(threads);
    let (mut start, mut index, mut sum) = (0usize, 0usize, 0u128);
    for k in 1..threads {
        let target = total * k as u128 / threads as u128;
        // Take items while that brings the prefix sum nearer the target.
        while index < weights.len() {
            let next = sum + weights[index] as u128;
            if next.abs_diff(target) > sum.abs_diff(target) && index > start {
                break;
            }
            sum = next;
            index += 1;
        }
        if index > start && index < weights.len() {
            shares.push(start..index);
            start = index;
        }
    }
    if start < weights.len() || shares.is_empty() {
        shares.push(start..weights.len());
    }
    shares
}

/// Runs `work` on the given contiguous `shares` of `items`, one share per thread (the
/// first on the calling thread); `work` is given each share's index range and its items.
fn in_parallel<T: Send>(
    items: &mut [T],
    shares: &[Range<usize>],
    work: impl Fn(Range<usize>, &mut [T]) -> std::result::Result<(), ParquetError> + Sync,
) -> std::result::Result<(), ParquetError> {
    if shares.len() <= 1 {
        let len = items.len();
        return work(0..len, items);
    }
    std::thread::scope(|scope| {
        let work = &work;
        let mut rest: &mut [T] = items;
        let mut parts = Vec::with_capacity(shares.len());
        for share in shares {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(share.len());
            parts.push((share.clone(), part));
            rest = tail;
        }
        let mut parts = parts.into_iter();
        let first = parts.next();
        let handles: Vec<_> = parts
            .map(|(range, part)| scope.spawn(move || work(range, part)))
            .collect();
        let mut result = match first {
            Some((range, part)) => work(range, part),
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

    fn write_encoded(&mut self, group: EncodedRowGroup) -> Result<()> {
        self.append_encoded(group)
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
    use crate::sink::encode_ahead::RowGroupEncoder;
    #[test]
    fn shares_are_contiguous_cover_everything_and_balance_weight() {
        // Four floats, an int, a float, three booleans (the seed query's output).
        let weights = [800, 800, 800, 800, 800, 800, 100, 100, 100];
        let shares = super::balanced_shares(&weights, 2);
        assert_eq!(shares, vec![0..3, 3..9]);
        assert_eq!(super::balanced_shares(&weights, 1), vec![0..9]);
        assert_eq!(super::balanced_shares(&[5], 4), vec![0..1]);
        assert_eq!(super::balanced_shares(&[], 2), vec![0..0]);
        // One heavy column: it gets a share of its own.
        assert_eq!(
            super::balanced_shares(&[1, 1000, 1], 3),
            vec![0..1, 1..2, 2..3]
        );
        for threads in 1..6 {
            let shares = super::balanced_shares(&weights, threads);
            assert_eq!(shares.first().map(|r| r.start), Some(0));
            assert_eq!(shares.last().map(|r| r.end), Some(weights.len()));
            assert!(shares
                .windows(2)
                .all(|w| w[0].end == w[1].start && !w[0].is_empty()));
            assert!(shares.len() <= threads);
        }
    }

    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array, Int64Array, ListArray, StringArray};
    use arrow::datatypes::Int64Type;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    /// The rows of each row group of a Parquet file, and its rows as one batch.
    fn read_back(path: &Path) -> (Vec<i64>, RecordBatch) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).expect("open"))
            .expect("reader");
        let groups = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        let schema = reader.schema().clone();
        let batches: Vec<RecordBatch> = reader
            .build()
            .expect("build")
            .collect::<std::result::Result<_, _>>()
            .expect("read");
        let all = arrow::compute::concat_batches(&schema, &batches).expect("concat");
        (groups, all)
    }

    /// Row groups encoded ahead (on other threads) between batches the writer encodes
    /// itself: the file reads back as the batches in order, each encoded-ahead chunk one
    /// row group, the writer's own batches gathered into theirs.
    #[test]
    fn row_groups_encoded_ahead_interleave_with_written_batches_in_order() {
        let rows = 100_000usize;
        let floats: ArrayRef = Arc::new(Float64Array::from_iter(
            (0..rows).map(|i| (i % 7 != 0).then_some(i as f64 * 0.25)),
        ));
        let names: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..rows).map(|i| ["A", "B", "C"][i % 3]),
        ));
        let lists: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
            (0..rows).map(|i| (i % 4 != 0).then(|| vec![Some(i as i64); i % 3])),
        ));
        let batch =
            RecordBatch::try_from_iter([("x", floats), ("category", names), ("list", lists)])
                .expect("batch");
        // 20k rows encoded ahead, 1k written, 30k ahead, 9k written, 40k ahead.
        let cuts = [
            (0, 20_000, true),
            (20_000, 1_000, false),
            (21_000, 30_000, true),
            (51_000, 9_000, false),
            (60_000, 40_000, true),
        ];
        let encoder = RowGroupEncoder::new(Path::new("out"));
        let encoded: Vec<Option<EncodedRowGroup>> = std::thread::scope(|scope| {
            let handles: Vec<_> = cuts
                .iter()
                .map(|&(start, len, ahead)| {
                    let slice = batch.slice(start, len);
                    let encoder = &encoder;
                    scope.spawn(move || {
                        assert_eq!(RowGroupEncoder::worth_it(&slice), ahead);
                        ahead.then(|| encoder.encode(&slice).expect("encode"))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("join"))
                .collect()
        });

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("part.parquet");
        let file = File::create(&path).expect("create");
        let mut writer: Box<dyn PartFileWriter> = Box::new(
            ParquetPartWriter::create(&path, file, batch.schema(), 64 << 20).expect("writer"),
        );
        for (&(start, len, _), group) in cuts.iter().zip(encoded) {
            match group {
                Some(group) => {
                    assert!(group.bytes() > 0);
                    writer.write_encoded(group).expect("append");
                }
                None => writer.write(&batch.slice(start, len)).expect("write"),
            }
        }
        writer.finish().expect("finish");

        let (groups, got) = read_back(&path);
        assert_eq!(groups, vec![20_000, 1_000, 30_000, 9_000, 40_000]);
        assert_eq!(got, batch);
    }

    #[test]
    fn a_group_of_another_schema_is_refused_with_the_part_named() {
        let ints: ArrayRef = Arc::new(Int64Array::from_iter_values(0..20_000));
        let a = RecordBatch::try_from_iter([("a", ints.clone())]).expect("a");
        let b = RecordBatch::try_from_iter([("b", ints)]).expect("b");
        let group = RowGroupEncoder::new(Path::new("out"))
            .encode(&b)
            .expect("encode");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("part.parquet");
        let file = File::create(&path).expect("create");
        let mut writer =
            ParquetPartWriter::create(&path, file, a.schema(), 1 << 20).expect("writer");
        let error = writer.append_encoded(group).expect_err("another schema");
        assert!(error.to_string().contains("part.parquet"), "{error}");
    }

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

        let (groups, got) = read_back(&path);
        assert_eq!(got.schema(), batch.schema(), "the Arrow schema is embedded");
        // flush_bytes is raised to 1 MiB; each 50k-row write encodes to more than that.
        assert!(groups.len() >= 2, "flushed by size: {groups:?}");
        assert_eq!(got, batch);
    }
}
