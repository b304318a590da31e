//! Parquet files: one part per row group, decoded by the workers in parallel, with an
//! optional column projection. The footer is read once; each worker opens the file itself.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;

use super::{column_positions, DecodedPart, PartHint, Source, SourcePart};
use crate::error::{Result, SluiceError};

const DECODE_BATCH_ROWS: usize = 16 * 1024;

#[derive(Debug, Clone, Default)]
pub struct ParquetOptions {
    /// Columns to read, by name; all when `None`.
    pub columns: Option<Vec<String>>,
}

pub struct ParquetSource {
    path: Arc<PathBuf>,
    metadata: ArrowReaderMetadata,
    projection: ProjectionMask,
    schema: SchemaRef,
    next_row_group: usize,
    total_bytes: u64,
}

impl ParquetSource {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, ParquetOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: ParquetOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| SluiceError::Open {
            path: path.clone(),
            source,
        })?;
        let file_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let metadata = load_footer(&file).map_err(|message| SluiceError::BadInput {
            path: path.clone(),
            location: "footer".into(),
            message: format!("not a readable Parquet file: {message}"),
        })?;
        let full_schema = metadata.schema().clone();
        let (projection, schema) = match &options.columns {
            None => (ProjectionMask::all(), full_schema),
            Some(names) => {
                let indices = column_positions(&path, "schema", &full_schema, names)?;
                let projected = full_schema
                    .project(&indices)
                    .map_err(|e| SluiceError::arrow(format!("projecting {}", path.display()), e))?;
                (
                    ProjectionMask::roots(metadata.parquet_schema(), indices),
                    Arc::new(projected),
                )
            }
        };
        let mut source = ParquetSource {
            path: Arc::new(path),
            metadata,
            projection,
            schema,
            next_row_group: 0,
            total_bytes: file_bytes,
        };
        if options.columns.is_some() {
            // Only the projected columns' chunks are read: progress and the bytes-read
            // statistic count those, not the whole file.
            source.total_bytes = (0..source.num_row_groups())
                .map(|index| source.projected_sizes(index).0)
                .sum();
        }
        Ok(source)
    }

    /// Compressed and uncompressed bytes of row group `index`'s projected column chunks.
    fn projected_sizes(&self, index: usize) -> (u64, u64) {
        let row_group = self.metadata.metadata().row_group(index);
        row_group
            .columns()
            .iter()
            .enumerate()
            .filter(|(leaf, _)| self.projection.leaf_included(*leaf))
            .fold((0, 0), |(compressed, uncompressed), (_, column)| {
                (
                    compressed + column.compressed_size().max(0) as u64,
                    uncompressed + column.uncompressed_size().max(0) as u64,
                )
            })
    }

    pub fn num_row_groups(&self) -> usize {
        self.metadata.metadata().num_row_groups()
    }
}

impl Source for ParquetSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn total_bytes(&self) -> Option<u64> {
        Some(self.total_bytes)
    }

    fn skip_whole_parts(&mut self, max_rows: u64) -> Result<(u64, u64)> {
        let (mut rows, mut bytes) = (0u64, 0u64);
        while self.next_row_group < self.num_row_groups() {
            let row_group = self.metadata.metadata().row_group(self.next_row_group);
            let n = row_group.num_rows().max(0) as u64;
            if rows + n > max_rows {
                break;
            }
            rows += n;
            bytes += self.projected_sizes(self.next_row_group).0;
            self.next_row_group += 1;
        }
        Ok((rows, bytes))
    }

    fn next_part(&mut self, _hint: PartHint) -> Result<Option<(SourcePart, u64)>> {
        let index = self.next_row_group;
        if index >= self.num_row_groups() {
            return Ok(None);
        }
        self.next_row_group += 1;
        let (compressed, uncompressed) = self.projected_sizes(index);
        let path = self.path.clone();
        let metadata = self.metadata.clone();
        let projection = self.projection.clone();
        // A Parquet row group has no malformed records, only corrupt pages (or chunks),
        // which lose every row of the group: that is fatal under every policy, named.
        let decode = Box::new(move || {
            decode_row_group(&path, metadata, projection, index).map(DecodedPart::from)
        });
        Ok(Some((
            SourcePart::Deferred {
                estimated_bytes: uncompressed.max(compressed),
                decode,
            },
            compressed,
        )))
    }
}

/// Stack for decoding a footer: a corrupted one can nest Thrift structs as deep as it is
/// long, and on a caller's 2 MB stack that aborted the process (found by `corrupt.rs`).
/// Only the pages a decode touches are ever mapped.
const FOOTER_STACK_BYTES: usize = 512 << 20;

/// Reads and decodes the footer on a thread with room for any nesting it holds.
fn load_footer(file: &File) -> std::result::Result<ArrowReaderMetadata, String> {
    std::thread::scope(|scope| {
        let decoding = std::thread::Builder::new()
            .name("sluice-parquet-footer".into())
            .stack_size(FOOTER_STACK_BYTES)
            .spawn_scoped(scope, || {
                ArrowReaderMetadata::load(file, ArrowReaderOptions::default())
            })
            .map_err(|e| format!("no thread to decode the footer: {e}"))?;
        match decoding.join() {
            Ok(loaded) => loaded.map_err(|e| e.to_string()),
            Err(_) => Err("its footer could not be decoded (the decoder panicked)".to_string()),
        }
    })
}

fn decode_row_group(
    path: &Path,
    metadata: ArrowReaderMetadata,
    projection: ProjectionMask,
    index: usize,
) -> Result<Vec<RecordBatch>> {
    let located = |e: &dyn std::fmt::Display| SluiceError::BadInput {
        path: path.to_path_buf(),
        location: format!("row group {index}"),
        message: e.to_string(),
    };
    let file = File::open(path).map_err(|source| SluiceError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata)
        .with_row_groups(vec![index])
        .with_projection(projection)
        .with_batch_size(DECODE_BATCH_ROWS)
        .build()
        .map_err(|e| located(&e))?;
    // The parquet crate can panic on a corrupt page (e.g. an RLE run length that overflows
    // in a debug build): that is bad input too, and must name its file and row group.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        reader
            .map(|batch| batch.map_err(|e| located(&e)))
            .collect::<Result<Vec<_>>>()
    }))
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown cause".into());
        Err(located(&format!(
            "the Parquet decoder failed ({message}): a corrupt page"
        )))
    })
}
