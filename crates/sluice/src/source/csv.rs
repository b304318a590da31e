//! CSV files: header, delimiter, quote; schema given or inferred from a sample of rows.
//! The file is cut into blocks of whole records that workers decode in parallel; plain
//! blocks (no quotes) take the one-pass decoder of `csv_plain`, the rest arrow-csv's.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::csv::reader::Format;
use arrow::csv::ReaderBuilder;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::blocks::{Block, BlockReader};
use super::csv_plain::PlainPlan;
use super::{column_positions, records, DecodedPart, PartHint, Source, SourcePart};
use crate::error::{Result, SluiceError};

/// Rows per decoded batch inside a block; the engine re-slices them into chunks.
const DECODE_BATCH_ROWS: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct CsvOptions {
    pub has_header: bool,
    pub delimiter: u8,
    pub quote: u8,
    /// The schema of every field of a record (or, with `columns`, of those columns);
    /// inferred from the first `infer_rows` rows when `None`.
    pub schema: Option<SchemaRef>,
    pub infer_rows: usize,
    /// Columns to read, by name (they come out in the file's order); all when `None`. The
    /// others are cut out of each record but never parsed.
    pub columns: Option<Vec<String>>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            has_header: true,
            delimiter: b',',
            quote: b'"',
            schema: None,
            infer_rows: 10_000,
            columns: None,
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

    pub fn with_columns(mut self, columns: Vec<String>) -> Self {
        self.columns = Some(columns);
        self
    }

    pub fn with_infer_rows(mut self, rows: usize) -> Self {
        self.infer_rows = rows;
        self
    }
}

pub struct CsvSource {
    path: Arc<PathBuf>,
    decoding: Arc<Decoding>,
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
        let given = options.schema.clone().filter(|_| options.columns.is_none());
        let file_schema = match given {
            Some(s) => s,
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
        let decoding = Arc::new(Decoding::new(&path, file_schema, &options)?);
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
        let blocks = BlockReader::new(
            &path,
            file,
            Some(options.quote),
            carry,
            first_line,
            header_bytes,
        );
        Ok(CsvSource {
            path: Arc::new(path),
            decoding,
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
        self.decoding.output.clone()
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
        let decoding = self.decoding.clone();
        let path = self.path.clone();
        let decode = Box::new(move || decode_block(&path, &decoding, block));
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

/// How a file's blocks are decoded: the whole record's schema, the columns kept, and the
/// plain-text plan when one applies.
struct Decoding {
    file_schema: SchemaRef,
    /// Field positions of the columns read, when not all are.
    projection: Option<Vec<usize>>,
    output: SchemaRef,
    plain: Option<PlainPlan>,
    delimiter: u8,
    quote: u8,
}

impl Decoding {
    fn new(path: &Path, file_schema: SchemaRef, options: &CsvOptions) -> Result<Self> {
        let Some(names) = &options.columns else {
            let all: Vec<usize> = (0..file_schema.fields().len()).collect();
            return Ok(Decoding {
                plain: PlainPlan::new(
                    &file_schema,
                    &all,
                    file_schema.clone(),
                    options.delimiter,
                    options.quote,
                ),
                output: file_schema.clone(),
                file_schema,
                projection: None,
                delimiter: options.delimiter,
                quote: options.quote,
            });
        };
        let indices = column_positions(path, "header", &file_schema, names)?;
        // A schema given with `columns` sets the types of those columns (a later file of
        // many is decoded with the first file's types).
        let mut fields: Vec<_> = file_schema.fields().iter().cloned().collect();
        for field in options.schema.iter().flat_map(|given| given.fields()) {
            if let Ok(index) = file_schema.index_of(field.name()) {
                fields[index] = field.clone();
            }
        }
        let file_schema = Arc::new(Schema::new_with_metadata(
            fields,
            file_schema.metadata().clone(),
        ));
        let output = Arc::new(
            file_schema
                .project(&indices)
                .map_err(|e| SluiceError::arrow(format!("projecting {}", path.display()), e))?,
        );
        Ok(Decoding {
            plain: PlainPlan::new(
                &file_schema,
                &indices,
                output.clone(),
                options.delimiter,
                options.quote,
            ),
            file_schema,
            projection: Some(indices),
            output,
            delimiter: options.delimiter,
            quote: options.quote,
        })
    }

    /// Decodes whole records (`records` of them, about).
    fn decode(
        &self,
        bytes: &[u8],
        records: usize,
    ) -> std::result::Result<Vec<RecordBatch>, ArrowError> {
        let batch_rows = records.clamp(1, DECODE_BATCH_ROWS);
        if let Some(batches) = self
            .plain
            .as_ref()
            .and_then(|p| p.decode(bytes, batch_rows))
        {
            return Ok(batches);
        }
        self.decode_with_arrow(bytes, batch_rows)
    }

    fn decode_with_arrow(
        &self,
        bytes: &[u8],
        batch_rows: usize,
    ) -> std::result::Result<Vec<RecordBatch>, ArrowError> {
        let mut builder = ReaderBuilder::new(self.file_schema.clone())
            .with_header(false)
            .with_delimiter(self.delimiter)
            .with_quote(self.quote)
            .with_batch_size(batch_rows);
        if let Some(projection) = &self.projection {
            builder = builder.with_projection(projection.clone());
        }
        let mut decoder = builder.build_decoder();
        let mut rest = bytes;
        let mut batches = Vec::new();
        loop {
            let consumed = decoder.decode(rest)?;
            rest = &rest[consumed..];
            if consumed == 0 || decoder.capacity() == 0 {
                match decoder.flush()? {
                    Some(batch) => batches.push(batch),
                    None => break,
                }
            }
        }
        Ok(batches)
    }
}

fn decode_block(path: &Path, decoding: &Decoding, block: Block) -> Result<DecodedPart> {
    Ok(records::decode_block(
        path,
        &block,
        Some(decoding.quote),
        |bytes, records| decoding.decode(bytes, records),
        |line, e| match located_error(path, line, e) {
            SluiceError::BadInput { message, .. } => message,
            other => other.to_string(),
        },
    ))
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

/// Rewrites arrow-csv's block-relative line numbers into the file's own (1-based) lines.
/// Parse errors count records from 0 ("at line N"); record errors count from 1 ("for line
/// N", "at line N" of unequal lengths).
fn located_error(path: &Path, first_line: u64, e: ArrowError) -> SluiceError {
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
                let line = if zero_based {
                    first_line + relative
                } else {
                    first_line + relative.saturating_sub(1)
                };
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

#[cfg(test)]
mod plain_matches_arrow {
    //! The plain-text decoder must give arrow-csv's batches exactly, or step aside.
    use super::*;
    use arrow::datatypes::{DataType, Field};
    use proptest::prelude::*;

    const TYPES: [DataType; 7] = [
        DataType::Int64,
        DataType::Float64,
        DataType::Utf8,
        DataType::Int8,
        DataType::UInt32,
        DataType::Float32,
        DataType::Utf8View,
    ];

    /// Field texts: mostly values every type parses, and the cases where types differ.
    fn field_text() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => (-1000i64..1000).prop_map(|v| v.to_string()),
            4 => any::<f64>().prop_map(|v| v.to_string()),
            2 => Just(String::new()),
            1 => prop::sample::select(vec![
                "abc", " 12", "12 ", "1e400", "-", "NaN", "inf", "-0", "+7", "0x10", "300",
                "4294967296", "1.5e3", "é", "日本", "  ",
            ])
            .prop_map(str::to_string),
        ]
    }

    /// A block of records, sometimes with what only arrow-csv reads: quotes, carriage
    /// returns, blank lines, records of the wrong width, no final newline.
    fn block(width: usize) -> impl Strategy<Value = Vec<u8>> {
        let record = prop::collection::vec(field_text(), width);
        let odd = prop_oneof![
            20 => Just(""),
            1 => Just("\"q\""),
            1 => Just("\r"),
            1 => Just("\n"),
            1 => Just(",extra"),
        ];
        (prop::collection::vec((record, odd), 0..40), any::<bool>()).prop_map(
            |(records, final_newline)| {
                let mut text = String::new();
                for (fields, odd) in &records {
                    text.push_str(&fields.join(","));
                    text.push_str(odd);
                    text.push('\n');
                }
                if !final_newline && text.ends_with('\n') {
                    text.pop();
                }
                text.into_bytes()
            },
        )
    }

    fn case() -> impl Strategy<Value = (Vec<DataType>, Option<Vec<bool>>, Vec<u8>, usize)> {
        (2usize..6).prop_flat_map(|width| {
            (
                prop::collection::vec(prop::sample::select(TYPES.to_vec()), width),
                prop::option::of(prop::collection::vec(any::<bool>(), width)),
                block(width),
                1usize..50,
            )
        })
    }

    fn text_of(batches: &[RecordBatch]) -> String {
        // Debug text keeps NaN equal to NaN and shows nulls.
        batches
            .iter()
            .map(|b| format!("{:?}", b.columns()))
            .collect::<Vec<_>>()
            .join("|")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn plain_blocks_decode_as_arrow_csv_does(
            (types, keep, bytes, batch_rows) in case()
        ) {
            let fields: Vec<Field> = types
                .iter()
                .enumerate()
                .map(|(i, t)| Field::new(format!("c{i}"), t.clone(), true))
                .collect();
            let schema = Arc::new(Schema::new(fields));
            let mut options = CsvOptions::default();
            let columns: Option<Vec<String>> = keep.map(|keep| {
                keep.iter()
                    .enumerate()
                    .filter(|(_, k)| **k)
                    .map(|(i, _)| format!("c{i}"))
                    .collect()
            });
            if let Some(columns) = columns.clone().filter(|c| !c.is_empty()) {
                options = options.with_columns(columns);
            }
            let decoding = Decoding::new(Path::new("t.csv"), schema, &options).unwrap();
            let plan = decoding.plain.as_ref().expect("every type here has a plain plan");
            let arrow = decoding.decode_with_arrow(&bytes, batch_rows);
            match plan.decode(&bytes, batch_rows) {
                Some(plain) => {
                    let arrow = arrow.expect("plain text arrow-csv rejects");
                    prop_assert_eq!(text_of(&plain), text_of(&arrow));
                    prop_assert_eq!(
                        plain.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
                        arrow.iter().map(|b| b.num_rows()).collect::<Vec<_>>()
                    );
                    for batch in &plain {
                        prop_assert_eq!(batch.schema(), decoding.output.clone());
                    }
                }
                None => {
                    // Stepping aside is for text that is not plain or does not parse.
                    let plain_text = !bytes.contains(&b'"')
                        && !bytes.contains(&b'\r')
                        && !bytes.windows(2).any(|w| w == b"\n\n")
                        && !bytes.starts_with(b"\n");
                    prop_assert!(
                        !(plain_text && arrow.is_ok()),
                        "arrow-csv read a plain block the fast path refused: {:?}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
            }
        }
    }
}
