//! Shared by the model tests: the sequential model of a run (a plain loop over fixed
//! chunks), whole-row keys for comparing output exactly or as multisets, inputs written as
//! files of every format, and readers for part files and dead letters (whatever their names).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::util::display::array_value_to_string;
use proptest::prelude::*;
use sluice::source::{
    CsvOptions, CsvSource, FileFormat, MemorySource, NdjsonOptions, NdjsonSource,
};
use sluice::{ErrorPolicy, ProcessedChunk, SluiceError, Source};

use super::{ids_of, schema, transform};

/// Rows `start..start+n` like [`super::batch`], but some labels hold quoted newlines
/// (`\n` and `\r\n`), quotes, commas and non-ASCII text, so CSV records span lines.
pub fn rich_batch(start: i64, n: usize) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n as i64).collect();
    let values: Vec<Option<f64>> = ids
        .iter()
        .map(|&i| (i % 17 != 0).then_some(i as f64 * 0.5 - 3.25))
        .collect();
    let labels: Vec<Option<String>> = ids
        .iter()
        .map(|&i| match i % 13 {
            0 => None,
            3 | 8 => Some(format!("row \"{i}\",\nsecond line")),
            5 => Some(format!("ünï {i}\r\n\"x\"\n")),
            // Longer rows, so that files reach several read blocks.
            _ => Some(format!("row {i}, ok {}", "z".repeat((i % 61) as usize))),
        })
        .collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)) as ArrayRef,
            Arc::new(Float64Array::from(values)),
            Arc::new(StringArray::from(labels)),
        ],
    )
    .expect("valid batch")
}

/// Consecutive input batches of the given sizes, ids from 0.
pub fn input_batches(sizes: &[usize]) -> Vec<RecordBatch> {
    let mut start = 0i64;
    sizes
        .iter()
        .map(|&n| {
            let b = rich_batch(start, n);
            start += n as i64;
            b
        })
        .collect()
}

pub fn concat_all(schema: &SchemaRef, batches: &[RecordBatch]) -> RecordBatch {
    arrow::compute::concat_batches(schema, batches).expect("same schema")
}

/// The function a run applies: the plain transform, or one that also adds a string column
/// of `width` bytes per row (its output is many times wider than its input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Transform,
    Widen(usize),
}

pub fn func_strategy() -> impl Strategy<Value = Func> {
    prop_oneof![Just(Func::Transform), (1usize..400).prop_map(Func::Widen)]
}

pub fn apply(func: Func, batch: &RecordBatch) -> RecordBatch {
    let out = transform(batch);
    let Func::Widen(width) = func else {
        return out;
    };
    let pad: StringArray = ids_of(batch)
        .iter()
        .map(|id| Some(format!("{id}:{}", "w".repeat(width))))
        .collect();
    let mut fields: Vec<Field> = out
        .schema()
        .fields()
        .iter()
        .map(|f| (**f).clone())
        .collect();
    fields.push(Field::new("pad", DataType::Utf8, true));
    let mut columns = out.columns().to_vec();
    columns.push(Arc::new(pad));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("valid widened batch")
}

/// Schemas a part file of a run with `func` may hold (output, or passed-through input).
pub fn part_schemas(func: Func) -> Vec<SchemaRef> {
    vec![apply(func, &rich_batch(0, 1)).schema(), schema()]
}

/// A chunk fails when it holds one of these ids (content-based, so the model agrees).
pub fn poisoned(batch: &RecordBatch, poison: &[i64]) -> bool {
    ids_of(batch).iter().any(|id| poison.contains(id))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Fail,
    Skip,
    PassThrough,
    DeadLetter,
}

pub fn policy_strategy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::Fail),
        Just(Policy::Skip),
        Just(Policy::PassThrough),
        Just(Policy::DeadLetter)
    ]
}

impl Policy {
    pub fn error_policy(self, dead_letters: &Path) -> ErrorPolicy {
        match self {
            Policy::Fail => ErrorPolicy::Fail,
            Policy::Skip => ErrorPolicy::Skip,
            Policy::PassThrough => ErrorPolicy::PassThrough,
            Policy::DeadLetter => ErrorPolicy::DeadLetter(dead_letters.to_path_buf()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelChunk {
    /// Position among all chunks, failed ones included (the engine's `seq`).
    pub seq: u64,
    pub rows: Range<u64>,
    pub batch: RecordBatch,
    pub passed_through: bool,
}

/// What the sequential loop gives.
#[derive(Debug, Default)]
pub struct Model {
    /// Chunks handed out, in order (under `fail`, those before the failing one).
    pub delivered: Vec<ModelChunk>,
    /// Inputs of the chunks the function failed on that the policy set aside or passed on.
    pub failed: Vec<(Range<u64>, RecordBatch)>,
    /// Under `fail`: the input rows of the chunk that ended the run.
    pub fatal: Option<Range<u64>>,
}

/// The model: a sequential loop over fixed chunks of `input`, whose first row is input row
/// `first_row`. The function fails on chunks holding a poisoned id.
pub fn model(
    input: &RecordBatch,
    first_row: u64,
    chunk: usize,
    poison: &[i64],
    policy: Policy,
    func: Func,
) -> Model {
    let mut m = Model::default();
    let mut start = 0;
    let mut seq = 0u64;
    while start < input.num_rows() {
        seq += 1;
        let seq = seq - 1;
        let n = chunk.min(input.num_rows() - start);
        let c = input.slice(start, n);
        let rows = first_row + start as u64..first_row + (start + n) as u64;
        start += n;
        if !poisoned(&c, poison) {
            m.delivered.push(ModelChunk {
                seq,
                rows,
                batch: apply(func, &c),
                passed_through: false,
            });
            continue;
        }
        match policy {
            Policy::Fail => {
                m.fatal = Some(rows);
                return m;
            }
            Policy::Skip | Policy::DeadLetter => m.failed.push((rows, c)),
            Policy::PassThrough => {
                m.failed.push((rows.clone(), c.clone()));
                m.delivered.push(ModelChunk {
                    seq,
                    rows,
                    batch: c,
                    passed_through: true,
                });
            }
        }
    }
    m
}

/// One key per row: the column names and types, every value (nulls marked), and whether
/// the row was passed through. Equal keys mean equal rows.
pub fn row_keys(batch: &RecordBatch, passed_through: bool) -> Vec<String> {
    let header: String = batch
        .schema()
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(",");
    let flag = if passed_through { "P" } else { "T" };
    (0..batch.num_rows())
        .map(|row| {
            let values: Vec<String> = batch
                .columns()
                .iter()
                .map(|col| {
                    if col.is_null(row) {
                        "\u{2205}".to_string()
                    } else {
                        format!(
                            "{:?}",
                            array_value_to_string(col, row).expect("displayable")
                        )
                    }
                })
                .collect();
            format!("{flag}[{header}]{}", values.join("\u{1}"))
        })
        .collect()
}

/// Keys of every row of `batches` in order, without the pass-through flag (files do not
/// keep it).
pub fn plain_keys(batches: &[RecordBatch]) -> Vec<String> {
    batches.iter().flat_map(|b| row_keys(b, false)).collect()
}

pub fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort_unstable();
    keys
}

/// The kinds of input a model test reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Csv,
    Parquet,
    Ndjson,
    IpcFile,
    IpcStream,
}

pub fn kind_strategy() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Memory),
        Just(Kind::Csv),
        Just(Kind::Parquet),
        Just(Kind::Ndjson),
        Just(Kind::IpcFile),
        Just(Kind::IpcStream)
    ]
}

/// An input, in memory or written to a file of its kind, that can be opened any number of
/// times with the real sources.
pub struct Input {
    pub kind: Kind,
    pub batches: Vec<RecordBatch>,
    pub path: Option<PathBuf>,
}

impl Input {
    /// Writes `batches` into `dir` as `kind`. Parquet row groups: at most `row_group_rows`
    /// rows, and a group also ends after input batch `i` when `flush[i]` is set.
    pub fn write(
        kind: Kind,
        dir: &Path,
        batches: Vec<RecordBatch>,
        row_group_rows: usize,
        flush: &[bool],
    ) -> Input {
        let path = match kind {
            Kind::Memory => None,
            Kind::Csv => Some(dir.join("input.csv")),
            Kind::Parquet => Some(dir.join("input.parquet")),
            Kind::Ndjson => Some(dir.join("input.ndjson")),
            Kind::IpcFile | Kind::IpcStream => Some(dir.join("input.arrow")),
        };
        if let Some(path) = &path {
            match kind {
                Kind::Memory => {}
                Kind::Csv => super::write_csv(path, &batches),
                Kind::Ndjson => super::write_ndjson(path, &batches),
                Kind::IpcFile => super::write_ipc_file(path, &batches),
                Kind::IpcStream => super::write_ipc_stream(path, &batches),
                Kind::Parquet => write_parquet_groups(path, &batches, row_group_rows, flush),
            }
        }
        Input {
            kind,
            batches,
            path,
        }
    }

    pub fn all_rows(&self) -> RecordBatch {
        concat_all(&schema(), &self.batches)
    }

    /// Opens the input with the source of its kind (files decode on the workers).
    pub fn open(&self) -> Result<Box<dyn Source>, SluiceError> {
        let Some(path) = &self.path else {
            return Ok(Box::new(MemorySource::try_new(
                schema(),
                self.batches.clone(),
            )?));
        };
        Ok(match self.kind {
            // The schema is given: a short file's all-null column would be inferred as text.
            Kind::Csv => Box::new(CsvSource::open_with(
                path,
                CsvOptions::default().with_schema(schema()),
            )?),
            Kind::Ndjson => Box::new(NdjsonSource::open_with(
                path,
                NdjsonOptions {
                    schema: Some(schema()),
                    ..NdjsonOptions::default()
                },
            )?),
            // The format is told by the extension / magic bytes, as the CLI does.
            _ => FileFormat::from_path(path)?.open(path)?,
        })
    }
}

fn write_parquet_groups(path: &Path, batches: &[RecordBatch], rows: usize, flush: &[bool]) {
    let file = std::fs::File::create(path).expect("create parquet");
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(rows.max(1)))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema(), Some(props)).expect("writer");
    for (i, b) in batches.iter().enumerate() {
        w.write(b).expect("write");
        if flush.get(i).copied().unwrap_or(false) {
            w.flush().expect("flush row group");
        }
    }
    w.close().expect("close");
}

/// Reads every part file listed in an output folder's manifest, in manifest order. CSV
/// parts are read with the one of `schemas` whose column names match the header.
pub fn read_parts_any(dir: &Path, schemas: &[SchemaRef]) -> Vec<RecordBatch> {
    let manifest = sluice::Manifest::read_from(dir).expect("manifest");
    let mut out = Vec::new();
    for part in &manifest.parts {
        let path = dir.join(&part.file);
        let file = std::fs::File::open(&path).expect("a listed part exists");
        let batches: Vec<RecordBatch> = match manifest.format {
            sluice::OutputFormat::Parquet => {
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .expect("readable parquet")
                    .build()
                    .expect("reader")
                    .map(|b| b.expect("batch"))
                    .collect()
            }
            sluice::OutputFormat::Ipc => arrow::ipc::reader::FileReader::try_new(file, None)
                .expect("readable ipc")
                .map(|b| b.expect("batch"))
                .collect(),
            sluice::OutputFormat::Csv => {
                let text = std::fs::read_to_string(&path).expect("csv text");
                let header: Vec<&str> = text.lines().next().unwrap_or("").split(',').collect();
                let schema = schemas
                    .iter()
                    .find(|s| {
                        s.fields().len() == header.len()
                            && s.fields().iter().zip(&header).all(|(f, h)| f.name() == h)
                    })
                    .unwrap_or_else(|| panic!("{}: unexpected header {header:?}", part.file));
                arrow::csv::ReaderBuilder::new(schema.clone())
                    .with_header(true)
                    .build(file)
                    .expect("csv reader")
                    .map(|b| b.expect("batch"))
                    .collect()
            }
        };
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(
            rows as u64, part.rows,
            "{}: rows differ from the manifest",
            part.file
        );
        out.extend(batches);
    }
    out
}

/// Files of an output folder that are not the manifest's: parts it does not list and
/// temporaries. A folder a run left must have none.
pub fn stray_files(dir: &Path) -> Vec<String> {
    let listed: Vec<String> = sluice::Manifest::read_from(dir)
        .map(|m| m.parts.into_iter().map(|p| p.file).collect())
        .unwrap_or_default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.ends_with(".tmp") || (name.starts_with("part-") && !listed.contains(name))
        })
        .collect()
}

/// Every Arrow file (IPC file or stream) under a dead-letter folder, whatever its name, as
/// (file name, its rows). Other files (notes, reject logs) are left out.
pub fn read_dead_letters(dir: &Path) -> Vec<(String, RecordBatch)> {
    let mut out = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let name = path.display().to_string();
            if let Some(batch) = read_arrow(&path) {
                out.push((name, batch));
            }
        }
    }
    out
}

fn read_arrow(path: &Path) -> Option<RecordBatch> {
    // Told apart by their first bytes: a reader handed text may try to allocate gigabytes.
    let mut magic = [0u8; 6];
    std::io::Read::read_exact(&mut std::fs::File::open(path).ok()?, &mut magic).ok()?;
    let open = || std::fs::File::open(path).ok();
    let batches: Vec<RecordBatch> = if &magic == b"ARROW1" {
        arrow::ipc::reader::FileReader::try_new(open()?, None)
            .ok()?
            .collect::<Result<_, _>>()
            .ok()?
    } else if magic[..4] == [0xff; 4] {
        arrow::ipc::reader::StreamReader::try_new(open()?, None)
            .ok()?
            .collect::<Result<_, _>>()
            .ok()?
    } else {
        return None;
    };
    let schema = batches.first()?.schema();
    Some(concat_all(&schema, &batches))
}

/// Checks a run's chunks against the model, exactly and in order when `ordered`, else as a
/// multiset of (input rows, whole rows with their pass-through flag). Chunk ranges must
/// agree with the ids they hold (ids are input row numbers), and the delivered ranges plus
/// the set-aside ones must tile the input `first_row..end_row` without gap or overlap.
pub fn check_against_model(
    got: &[ProcessedChunk],
    expected: &Model,
    ordered: bool,
    first_row: u64,
    end_row: u64,
) -> Result<(), TestCaseError> {
    for c in got {
        let ids = ids_of(&c.batch);
        prop_assert_eq!(ids.len() as u64, c.input_rows.end - c.input_rows.start);
        if let Some(&id) = ids.first() {
            prop_assert_eq!(id as u64, c.input_rows.start, "chunk {} rows vs ids", c.seq);
        }
    }
    if ordered {
        prop_assert_eq!(got.len(), expected.delivered.len(), "chunks delivered");
        for (i, (g, e)) in got.iter().zip(&expected.delivered).enumerate() {
            prop_assert_eq!(g.seq, e.seq);
            prop_assert_eq!(&g.input_rows, &e.rows);
            prop_assert_eq!(g.passed_through, e.passed_through, "chunk {}", i);
            prop_assert_eq!(
                row_keys(&g.batch, g.passed_through),
                row_keys(&e.batch, e.passed_through),
                "values of chunk {}",
                i
            );
        }
    } else {
        fn whole(rows: &Range<u64>, b: &RecordBatch, p: bool) -> Vec<String> {
            row_keys(b, p)
                .into_iter()
                .map(|k| format!("{}..{}|{k}", rows.start, rows.end))
                .collect()
        }
        let g = sorted(
            got.iter()
                .flat_map(|c| whole(&c.input_rows, &c.batch, c.passed_through))
                .collect(),
        );
        let e = sorted(
            expected
                .delivered
                .iter()
                .flat_map(|c| whole(&c.rows, &c.batch, c.passed_through))
                .collect(),
        );
        prop_assert_eq!(g, e, "delivered rows as a multiset");
        let mut seqs: Vec<u64> = got.iter().map(|c| c.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        prop_assert_eq!(seqs.len(), got.len(), "sequence numbers are distinct");
    }
    if expected.fatal.is_none() {
        let mut ranges: Vec<Range<u64>> = got.iter().map(|c| c.input_rows.clone()).collect();
        ranges.extend(expected.failed.iter().map(|(r, _)| r.clone()));
        ranges.sort_by_key(|r| (r.start, r.end));
        ranges.dedup();
        let mut next = first_row;
        for r in &ranges {
            prop_assert_eq!(r.start, next, "ranges must be contiguous: {:?}", ranges);
            prop_assert!(r.end > r.start, "empty range {:?}", r);
            next = r.end;
        }
        prop_assert_eq!(next, end_row, "ranges must cover the input");
    }
    Ok(())
}

/// Checks the dead letters in `dir` hold exactly the inputs of the failed chunks: the same
/// rows (whole, as a multiset: nothing lost, nothing twice), each file within one chunk.
pub fn check_dead_letters(
    dir: &Path,
    failed: &[(Range<u64>, RecordBatch)],
) -> Result<(), TestCaseError> {
    let letters = read_dead_letters(dir);
    for (name, batch) in &letters {
        let ids = ids_of(batch);
        let (Some(lo), Some(hi)) = (ids.iter().min(), ids.iter().max()) else {
            continue;
        };
        prop_assert!(
            failed
                .iter()
                .any(|(r, _)| r.start as i64 <= *lo && (*hi as u64) < r.end),
            "{} holds ids {}..={} outside any failed chunk",
            name,
            lo,
            hi
        );
    }
    let got = sorted(
        letters
            .iter()
            .flat_map(|(_, b)| row_keys(b, false))
            .collect(),
    );
    let expected = sorted(
        failed
            .iter()
            .flat_map(|(_, b)| row_keys(b, false))
            .collect(),
    );
    prop_assert_eq!(got, expected, "dead-letter rows");
    Ok(())
}

/// The function a run calls: `func`, failing on poisoned chunks (a panic on chunks of even
/// length, an error on odd ones, so both ways are exercised).
pub fn failing_fn(
    func: Func,
    poison: Vec<i64>,
) -> impl Fn(RecordBatch) -> Result<RecordBatch, SluiceError> + Send + Sync + 'static {
    quiet_poison_panics();
    move |b: RecordBatch| {
        if poisoned(&b, &poison) {
            if b.num_rows().is_multiple_of(2) {
                panic!("{POISON_PANIC}");
            }
            return Err(SluiceError::Source {
                source_name: "test function".into(),
                message: "poisoned chunk".into(),
            });
        }
        Ok(apply(func, &b))
    }
}

const POISON_PANIC: &str = "poisoned chunk (expected)";

/// Keeps the expected panics of poisoned chunks out of the test output; every other panic
/// is still printed.
fn quiet_poison_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let expected = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|s| s == POISON_PANIC);
            if !expected {
                default(info);
            }
        }));
    });
}

/// What a drained run gave.
pub struct Drained {
    pub chunks: Vec<ProcessedChunk>,
    pub error: Option<SluiceError>,
    /// Most chunks the controller held queued, seen each time a chunk came out.
    pub max_queued: usize,
}

/// Reads a run to its end (or first error), watching the queue.
pub fn drain(
    stream: impl Iterator<Item = Result<ProcessedChunk, SluiceError>>,
    controller: &sluice::BackpressureController,
) -> Drained {
    let mut d = Drained {
        chunks: Vec::new(),
        error: None,
        max_queued: controller.queued_chunks(),
    };
    for item in stream {
        d.max_queued = d.max_queued.max(controller.queued_chunks());
        match item {
            Ok(c) => d.chunks.push(c),
            Err(e) => {
                d.error = Some(e);
                break;
            }
        }
    }
    d
}

/// Checks a drained run against the model: the error when the model fails, none otherwise,
/// and the delivered chunks (under `fail`: the prefix before the failing chunk when
/// ordered; when unordered, each delivered chunk is exactly one the model gives for its
/// rows, and the error names a chunk that holds a poisoned id).
pub fn check_run(
    run: &Drained,
    input: &RecordBatch,
    chunk: usize,
    poison: &[i64],
    func: Func,
    expected: &Model,
    ordered: bool,
) -> Result<(), TestCaseError> {
    let rows = input.num_rows() as u64;
    if expected.fatal.is_none() {
        prop_assert!(run.error.is_none(), "unexpected error {:?}", run.error);
        return check_against_model(&run.chunks, expected, ordered, 0, rows);
    }
    let Some(SluiceError::ChunkFailed {
        first_row, end_row, ..
    }) = &run.error
    else {
        return Err(TestCaseError::fail(format!(
            "expected ChunkFailed, got {:?}",
            run.error
        )));
    };
    if ordered {
        return check_against_model(&run.chunks, expected, true, 0, rows);
    }
    // Unordered: chunks after the failing one may come out first.
    let all = model(input, 0, chunk, poison, Policy::Skip, func);
    for c in &run.chunks {
        let m = all.delivered.iter().find(|m| m.rows == c.input_rows);
        prop_assert!(
            m.is_some(),
            "chunk {:?} is not one of the model's",
            c.input_rows
        );
        let m = m.expect("checked");
        prop_assert!(!c.passed_through);
        prop_assert_eq!(row_keys(&c.batch, false), row_keys(&m.batch, false));
    }
    prop_assert!(
        all.failed.iter().any(|(r, _)| *r == (*first_row..*end_row)),
        "the error names rows {}..{}, not a failing chunk",
        first_row,
        end_row
    );
    Ok(())
}
