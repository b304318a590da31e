//! CSV files: header, delimiter, quote; schema given or inferred from a sample of rows.
//! The file is cut into blocks of whole records that workers decode in parallel.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::csv::reader::Format;
use arrow::csv::ReaderBuilder;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::blocks::{Block, BlockReader};
use super::{PartHint, Source, SourcePart};
use crate::error::{Result, SluiceError};

/// Rows per decoded batch inside a block; the engine re-slices them into chunks.
const DECODE_BATCH_ROWS: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct CsvOptions {
    pub has_header: bool,
    pub delimiter: u8,
    pub quote: u8,
    /// The schema; inferred from the first `infer_rows` rows when `None`.
    pub schema: Option<SchemaRef>,
    pub infer_rows: usize,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            has_header: true,
            delimiter: b',',
            quote: b'"',
            schema: None,
            infer_rows: 10_000,
        }
    }
}

impl CsvOptions {
    pub fn with_header(mut self, has_header: bool) -> Self {
        self.has_header = has_header;
        self
    }
    pub fn with_delimiter(mut self, delimiter: u8) -> Self {
        self.delimiter = delimiter;
        self
    }
    pub fn with_schema(mut self, schema: SchemaRef) -> Self {
        self.schema = Some(schema);
        self
    }
    pub fn with_infer_rows(mut self, rows: usize) -> Self {
        self.infer_rows = rows;
        self
    }
}

pub struct CsvSource {
    path: Arc<PathBuf>,
    options: CsvOptions,
    schema: SchemaRef,
    blocks: BlockReader,
    total_bytes: u64,
    /// The header's bytes, counted as read with the first block so that bytes read ends at the file size.
    header_bytes: u64,
}

impl CsvSource {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, CsvOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: CsvOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let open = |p: &Path| {
            File::open(p).map_err(|source| SluiceError::Open {
                path: p.to_path_buf(),
                source,
            })
        };
        let mut file = open(&path)?;
        let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let schema = match &options.schema {
            Some(s) => s.clone(),
            None => {
                let format = Format::default()
                    .with_header(options.has_header)
                    .with_delimiter(options.delimiter)
                    .with_quote(options.quote);
                let (schema, _) = format
                    .infer_schema(BufReader::new(&mut file), Some(options.infer_rows.max(1)))
                    .map_err(|e| inference_error(&path, e))?;
                if schema.fields().is_empty() {
                    return Err(SluiceError::BadInput {
                        path: path.clone(),
                        location: "line 1".into(),
                        message: "the file is empty: no header and no columns".into(),
                    });
                }
                Arc::new(schema)
            }
        };
        file.seek(SeekFrom::Start(0))
            .map_err(|source| SluiceError::Read {
                path: path.clone(),
                source,
            })?;
        let (carry, header_bytes, first_line) = if options.has_header {
            let (carry, header_bytes) = skip_header(&path, &mut file, options.quote)?;
            (carry, header_bytes, 2)
        } else {
            (Vec::new(), 0, 1)
        };
        let blocks = BlockReader::new(&path, file, Some(options.quote), carry, first_line);
        Ok(CsvSource {
            path: Arc::new(path),
            options,
            schema,
            blocks,
            total_bytes,
            header_bytes,
        })
    }
}

/// Reads past the header record; returns the bytes read after it and the header's length.
fn skip_header(path: &Path, file: &mut File, quote: u8) -> Result<(Vec<u8>, u64)> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut chunk).map_err(|source| SluiceError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        buf.extend_from_slice(&chunk[..n]);
        // The header is the first record: cut at its first unquoted newline.
        let mut in_quotes = false;
        for (i, &b) in buf.iter().enumerate() {
            if b == quote {
                in_quotes = !in_quotes;
            } else if b == b'\n' && !in_quotes {
                let carry = buf.split_off(i + 1);
                return Ok((carry, buf.len() as u64));
            }
        }
        if n == 0 {
            let header_bytes = buf.len() as u64;
            return Ok((Vec::new(), header_bytes));
        }
    }
}

impl Source for CsvSource {
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
        let counted = raw + std::mem::take(&mut self.header_bytes);
        let schema = self.schema.clone();
        let options = self.options.clone();
        let path = self.path.clone();
        let decode = Box::new(move || decode_block(&path, schema, &options, block));
        Ok(Some((
            SourcePart::Deferred {
                // Raw text plus the decoded arrays, until the text is dropped.
                estimated_bytes: raw * 2,
                decode,
            },
            counted,
        )))
    }
}

fn decode_block(
    path: &Path,
    schema: SchemaRef,
    options: &CsvOptions,
    block: Block,
) -> Result<Vec<RecordBatch>> {
    let mut decoder = ReaderBuilder::new(schema)
        .with_header(false)
        .with_delimiter(options.delimiter)
        .with_quote(options.quote)
        .with_batch_size(DECODE_BATCH_ROWS)
        .build_decoder();
    let mut rest: &[u8] = &block.bytes;
    let mut batches = Vec::new();
    loop {
        let consumed = decoder
            .decode(rest)
            .map_err(|e| located_error(path, &block, options.quote, e))?;
        rest = &rest[consumed..];
        if consumed == 0 || decoder.capacity() == 0 {
            match decoder
                .flush()
                .map_err(|e| located_error(path, &block, options.quote, e))?
            {
                Some(batch) => batches.push(batch),
                None => break,
            }
        }
    }
    Ok(batches)
}

/// Schema inference reads the file from its start, so its line numbers are the file's.
fn inference_error(path: &Path, e: ArrowError) -> SluiceError {
    let message = e.to_string();
    let location = message
        .rfind("line ")
        .and_then(|pos| {
            let digits: String = message[pos + 5..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse::<u64>().ok()
        })
        .map_or_else(
            || "schema inference".to_string(),
            |line| format!("line {line}"),
        );
    SluiceError::BadInput {
        path: path.to_path_buf(),
        location,
        message: format!("while inferring the schema: {message}"),
    }
}

/// Rewrites arrow-csv's block-relative record numbers into the file's own (1-based) lines.
/// Parse errors count records from 0 ("at line N"); record errors count from 1 ("for line
/// N", "at line N" of unequal lengths). A record is not a line: quoted fields may hold
/// newlines, so the line is found by counting the newlines before the record.
fn located_error(path: &Path, block: &Block, quote: u8, e: ArrowError) -> SluiceError {
    let first_line = block.first_line;
    let message = e.to_string();
    let zero_based =
        message.contains("Error while parsing value") || message.contains("Error parsing column");
    let mut location = format!("lines from {first_line}");
    let mut rewritten = message.clone();
    for marker in ["at line ", "for line "] {
        if let Some(pos) = message.find(marker) {
            let digits_start = pos + marker.len();
            let digits: String = message[digits_start..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if let Ok(relative) = digits.parse::<u64>() {
                let record = if zero_based {
                    relative
                } else {
                    relative.saturating_sub(1)
                };
                let line = first_line + lines_before_record(&block.bytes, quote, record);
                location = format!("line {line}");
                rewritten = format!(
                    "{}{}{}",
                    &message[..digits_start],
                    line,
                    &message[digits_start + digits.len()..]
                );
                break;
            }
        }
    }
    SluiceError::BadInput {
        path: path.to_path_buf(),
        location,
        message: rewritten,
    }
}

/// Newlines in `bytes` before the start of record `record` (0-based), quoted ones included.
fn lines_before_record(bytes: &[u8], quote: u8, record: u64) -> u64 {
    let (mut records, mut lines, mut in_quotes) = (0, 0, false);
    for &b in bytes {
        if records == record {
            break;
        }
        if b == quote {
            in_quotes = !in_quotes;
        } else if b == b'\n' {
            lines += 1;
            if !in_quotes {
                records += 1;
            }
        }
    }
    lines
}
