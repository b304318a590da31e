//! Newline-delimited JSON files: one object per line, schema given or inferred from a
//! sample. Cut into blocks of whole lines that workers decode in parallel.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::json::reader::infer_json_schema;
use arrow::json::ReaderBuilder;
use arrow::record_batch::RecordBatch;

use super::blocks::{Block, BlockReader};
use super::{records, DecodedPart, PartHint, Source, SourcePart};
use crate::error::{Result, SluiceError};

const DECODE_BATCH_ROWS: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct NdjsonOptions {
    pub schema: Option<SchemaRef>,
    pub infer_rows: usize,
}

impl Default for NdjsonOptions {
    fn default() -> Self {
        NdjsonOptions {
            schema: None,
            infer_rows: 10_000,
        }
    }
}

pub struct NdjsonSource {
    path: Arc<PathBuf>,
    schema: SchemaRef,
    blocks: BlockReader,
    total_bytes: u64,
}

impl NdjsonSource {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, NdjsonOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: NdjsonOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut file = File::open(&path).map_err(|source| SluiceError::Open {
            path: path.clone(),
            source,
        })?;
        let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let schema = match options.schema {
            Some(s) => s,
            None => {
                let (schema, _) =
                    infer_json_schema(BufReader::new(&mut file), Some(options.infer_rows.max(1)))
                        .map_err(|e| inference_error(&path, options.infer_rows, e))?;
                file.seek(SeekFrom::Start(0))
                    .map_err(|source| SluiceError::Read {
                        path: path.clone(),
                        source,
                    })?;
                Arc::new(schema)
            }
        };
        // JSON strings cannot hold a raw newline, so every newline ends a record.
        let blocks = BlockReader::new(&path, file, None, Vec::new(), 1, 0);
        Ok(NdjsonSource {
            path: Arc::new(path),
            schema,
            blocks,
            total_bytes,
        })
    }
}

impl Source for NdjsonSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn total_bytes(&self) -> Option<u64> {
        Some(self.total_bytes)
    }

    fn next_part(&mut self, hint: PartHint) -> Result<Option<(SourcePart, u64)>> {
        let Some(block) = self.blocks.next_block(hint.bytes)? else {
            return Ok(None);
        };
        let raw = block.bytes.len() as u64;
        let schema = self.schema.clone();
        let path = self.path.clone();
        Ok(Some((
            SourcePart::Deferred {
                estimated_bytes: raw * 2,
                decode: Box::new(move || decode_block(&path, schema, block)),
            },
            raw,
        )))
    }
}

fn decode_block(path: &Path, schema: SchemaRef, block: Block) -> Result<DecodedPart> {
    // JSON strings cannot hold a raw newline: every line is one record.
    Ok(records::decode_block(
        path,
        &block,
        None,
        |bytes, records| decode_bytes(schema.clone(), bytes, records),
        |_, message| message,
    ))
}

fn decode_bytes(
    schema: SchemaRef,
    bytes: &[u8],
    records: usize,
) -> std::result::Result<Vec<RecordBatch>, String> {
    let mut decoder = ReaderBuilder::new(schema)
        .with_batch_size(records.clamp(1, DECODE_BATCH_ROWS))
        .build_decoder()
        .map_err(|e| e.to_string())?;
    let mut rest = bytes;
    let mut batches = Vec::new();
    loop {
        let consumed = decoder.decode(rest).map_err(|e| e.to_string())?;
        rest = &rest[consumed..];
        if consumed == 0 || rest.is_empty() {
            match decoder.flush().map_err(|e| e.to_string())? {
                Some(batch) => batches.push(batch),
                None => break,
            }
        }
    }
    Ok(batches)
}

/// arrow-json numbers lines within one record ("line 1 column 1"): find the file's line by
/// parsing the sampled lines one by one.
fn inference_error(path: &Path, infer_rows: usize, e: arrow::error::ArrowError) -> SluiceError {
    use std::io::BufRead;
    let line = File::open(path).ok().and_then(|file| {
        BufReader::new(file)
            .split(b'\n')
            .take(infer_rows.max(1))
            .position(|line| match line {
                Ok(bytes) => {
                    let text = bytes.trim_ascii();
                    !text.is_empty()
                        && !serde_json::from_slice::<serde_json::Value>(text)
                            .is_ok_and(|v| v.is_object())
                }
                Err(_) => true,
            })
    });
    SluiceError::BadInput {
        path: path.to_path_buf(),
        location: line.map_or_else(
            || format!("the first {infer_rows} lines"),
            |i| format!("line {}", i + 1),
        ),
        message: format!("while inferring the schema: {e}"),
    }
}
