//! Row-level rejects: under `skip`, `pass_through` and `dead_letter` a malformed record (a
//! value that does not parse, a missing or extra field, invalid UTF-8, broken JSON) is set
//! aside alone and the rest of its part goes on; under `fail` the run stops naming the file
//! and the line. A resumed run (`SkipRows`) keeps only the rejects at or after its skip point.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use sluice::source::{CsvOptions, CsvSource, NdjsonOptions, NdjsonSource, ParquetSource, SkipRows};
use sluice::{ErrorPolicy, SluiceError, Source, StreamingDataPipeline};

use common::*;

const GOOD_ROWS: u64 = 60_000;

/// One malformed record of a fixture, as the rejects file must report it.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    line: u64,
    byte_offset: u64,
    position: u64,
    raw: String,
}

/// A text file of `GOOD_ROWS` good records with bad ones inserted before the good rows at
/// the given positions; returns the expected rejects in input order.
struct Fixture {
    path: PathBuf,
    rejects: Vec<Expected>,
}

fn csv_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("value", DataType::Float64, true),
        Field::new("label", DataType::Utf8, true),
    ]))
}

/// Builds a file line by line, tracking line numbers and byte offsets of the bad records.
struct Writer {
    bytes: Vec<u8>,
    line: u64,
    rejects: Vec<Expected>,
}

impl Writer {
    fn new(header: &[u8]) -> Self {
        let line = 1 + header.iter().filter(|&&b| b == b'\n').count() as u64;
        Writer {
            bytes: header.to_vec(),
            line,
            rejects: Vec::new(),
        }
    }
    fn good(&mut self, record: &[u8]) {
        self.push(record);
    }
    fn bad(&mut self, position: u64, record: &[u8]) {
        self.rejects.push(Expected {
            line: self.line,
            byte_offset: self.bytes.len() as u64,
            position,
            raw: String::from_utf8_lossy(record).into_owned(),
        });
        self.push(record);
    }
    fn push(&mut self, record: &[u8]) {
        self.bytes.extend_from_slice(record);
        self.bytes.push(b'\n');
        self.line += 1 + record.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    fn finish(self, path: PathBuf) -> Fixture {
        std::fs::write(&path, &self.bytes).expect("write fixture");
        Fixture {
            path,
            rejects: self.rejects,
        }
    }
}

/// Bad records, by the position (good rows before them) they sit at.
fn csv_bad(position: u64) -> Vec<Vec<u8>> {
    match position {
        0 => vec![b"abc,1.5,first line is bad".to_vec()],
        100 => vec![b"100,2.5".to_vec()],
        5_000 => vec![
            b"5000,1.0,an extra field,here".to_vec(),
            b"7,1.0,b\xffd utf-8".to_vec(),
        ],
        30_000 => vec![b"\"x\ny\",1.0,a quoted newline in a bad id".to_vec()],
        GOOD_ROWS => vec![b"zzz,,trailing".to_vec()],
        _ => Vec::new(),
    }
}

fn csv_fixture(dir: &Path) -> Fixture {
    let mut w = Writer::new(b"id,value,label\n");
    for i in 0..=GOOD_ROWS {
        for record in csv_bad(i) {
            w.bad(i, &record);
        }
        if i == GOOD_ROWS {
            break;
        }
        let label = if i % 1000 == 7 {
            format!("\"multi\nline, {i}\"")
        } else {
            format!("\"label, {i}\"")
        };
        w.good(format!("{i},{i}.5,{label}").as_bytes());
    }
    w.finish(dir.join("data.csv"))
}

fn ndjson_fixture(dir: &Path) -> Fixture {
    let mut w = Writer::new(b"");
    for i in 0..=GOOD_ROWS {
        let bad: Vec<&[u8]> = match i {
            0 => vec![br#"{"id": "abc", "value": 1.5, "label": "a string id"}"#],
            100 => vec![br#"{"id": 100, "value": 2.5, "label": "unclosed""#],
            5_000 => vec![
                br#"{"value": 1.0, "label": "no id"}"#,
                b"{\"id\": 7, \"value\": 1.0, \"label\": \"b\xffd utf-8\"}",
            ],
            30_000 => vec![b"not json at all"],
            GOOD_ROWS => vec![br#"{"id": 1, "value": "one", "label": "trailing"}"#],
            _ => Vec::new(),
        };
        for record in bad {
            w.bad(i, record);
        }
        if i == GOOD_ROWS {
            break;
        }
        w.good(format!(r#"{{"id": {i}, "value": {i}.5, "label": "label, {i}"}}"#).as_bytes());
    }
    w.finish(dir.join("data.ndjson"))
}

fn csv_source(path: &Path) -> CsvSource {
    CsvSource::open_with(path, CsvOptions::default().with_schema(csv_schema())).expect("open")
}

fn ndjson_source(path: &Path) -> NdjsonSource {
    NdjsonSource::open_with(
        path,
        NdjsonOptions {
            schema: Some(csv_schema()),
            infer_rows: 10,
        },
    )
    .expect("open")
}

fn pipeline(policy: ErrorPolicy) -> StreamingDataPipeline {
    StreamingDataPipeline::builder()
        .chunk_size(7_000)
        .num_workers(3)
        // A small budget: parts of 64 KiB, so the bad records fall in different parts.
        .max_memory_mb(4.0)
        .error_policy(policy)
        .build()
        .expect("valid")
}

struct Run {
    ids: Vec<i64>,
    ranges: Vec<std::ops::Range<u64>>,
    rejected: u64,
}

fn run(
    pipeline: &StreamingDataPipeline,
    source: impl Source + 'static,
) -> Result<Run, SluiceError> {
    let mut ids = Vec::new();
    let mut ranges = Vec::new();
    for chunk in pipeline.process(source, |b: RecordBatch| Ok::<_, SluiceError>(b))? {
        let chunk = chunk?;
        ids.extend(ids_of(&chunk.batch));
        ranges.push(chunk.input_rows.clone());
    }
    Ok(Run {
        ids,
        ranges,
        rejected: pipeline.stats().rejected_rows,
    })
}

/// The first input row number of a run that skipped `from` rows.
// TODO(lead): once resumed runs number rows absolutely, this is always `from`.
fn first_row(run: &Run, from: u64) -> u64 {
    let base = run.ranges.first().map_or(0, |r| r.start);
    assert!(base == 0 || base == from, "rows start at {base}");
    base
}

fn assert_exact_good_rows(run: &Run, from: u64) {
    assert_eq!(
        run.ids,
        (from as i64..GOOD_ROWS as i64).collect::<Vec<_>>(),
        "every good row once, in order"
    );
    let base = first_row(run, from);
    let mut next = base;
    for r in &run.ranges {
        assert_eq!(r.start, next, "chunk ranges tile the good rows");
        next = r.end;
    }
    assert_eq!(next - base, GOOD_ROWS - from);
}

/// Every reject of the dead-letter folder, in file-name order (which is input order).
fn read_rejects(dir: &Path) -> Vec<(String, serde_json::Value)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dead-letter folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.iter().all(|n| !n.ends_with(".tmp")),
        "no temporary file left: {names:?}"
    );
    let mut out = Vec::new();
    for name in names.iter().filter(|n| n.starts_with("rejects-")) {
        let text = std::fs::read_to_string(dir.join(name)).expect("read rejects file");
        for line in text.lines() {
            out.push((
                name.clone(),
                serde_json::from_str(line).expect("one JSON object a line"),
            ));
        }
    }
    out
}

fn check_rejects_file(dir: &Path, fixture: &Fixture, skip: u64, base: u64) {
    let got = read_rejects(dir);
    let expected: Vec<&Expected> = fixture
        .rejects
        .iter()
        .filter(|e| e.position >= skip)
        .collect();
    assert_eq!(got.len(), expected.len(), "{got:?}");
    for ((name, value), e) in got.iter().zip(expected) {
        let file = value["file"].as_str().expect("file");
        assert!(
            file.ends_with(
                fixture
                    .path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .expect("name")
            ),
            "{value}"
        );
        assert_eq!(value["line"].as_u64(), Some(e.line), "{value}");
        assert_eq!(
            value["byte_offset"].as_u64(),
            Some(e.byte_offset),
            "{value}"
        );
        assert_eq!(value["raw"].as_str(), Some(e.raw.as_str()), "{value}");
        assert!(
            !value["cause"].as_str().expect("cause").is_empty(),
            "{value}"
        );
        // Positions count the good rows before the reject, numbered as the run numbers rows.
        let position = value["position"].as_u64().expect("position");
        assert_eq!(position, e.position - skip + base, "{value}");
        // The file is named by the input rows of the chunk it was attached to.
        let range = name
            .trim_start_matches("rejects-")
            .trim_end_matches(".ndjson")
            .split_once('-')
            .map(|(a, b)| {
                (
                    a.parse::<u64>().expect("start"),
                    b.parse::<u64>().expect("end"),
                )
            })
            .expect("rejects-START-END.ndjson");
        assert!(
            (range.0 <= position && position < range.1) || range == (position, position),
            "{name} holds position {position}"
        );
    }
}

#[test]
fn csv_fail_names_the_file_and_the_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let fixture = csv_fixture(dir.path());
    let err = run(&pipeline(ErrorPolicy::Fail), csv_source(&fixture.path))
        .err()
        .expect("fails");
    assert!(matches!(err, SluiceError::BadInput { .. }), "{err:?}");
    let text = err.to_string();
    let first = &fixture.rejects[0];
    assert!(
        text.contains(&format!("data.csv: line {}", first.line)),
        "{text}"
    );
}

#[test]
fn csv_fail_names_a_line_deep_in_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let fixture = csv_fixture(dir.path());
    // The bad record with a quoted newline, after 20 000 good records of two lines each:
    // the line number must count every newline of the parts before it.
    let text = std::fs::read(&fixture.path).expect("read");
    let e = &fixture.rejects[4];
    assert_eq!(e.position, 30_000);
    let mut long = b"id,value,label\n".to_vec();
    for i in 0..20_000 {
        long.extend_from_slice(format!("{i},1.0,\"l\nx\"\n").as_bytes());
    }
    long.extend_from_slice(&text[e.byte_offset as usize..]);
    let path = dir.path().join("deep.csv");
    std::fs::write(&path, &long).expect("write");
    let err = run(&pipeline(ErrorPolicy::Fail), csv_source(&path))
        .err()
        .expect("fails");
    assert!(err.to_string().contains("deep.csv: line 40002"), "{err}");
}

#[test]
fn csv_skip_keeps_every_good_row_in_order_and_counts_the_rejects() {
    let dir = tempfile::tempdir().expect("tmp");
    let fixture = csv_fixture(dir.path());
    let pipeline = pipeline(ErrorPolicy::Skip);
    let run = run(&pipeline, csv_source(&fixture.path)).expect("skip gets through");
    assert_exact_good_rows(&run, 0);
    assert_eq!(run.rejected, fixture.rejects.len() as u64);
    assert_eq!(
        pipeline.stats().failed_chunks,
        0,
        "a reject is not a failed chunk"
    );
}

#[test]
fn csv_pass_through_sets_rejects_aside_like_skip() {
    let dir = tempfile::tempdir().expect("tmp");
    let fixture = csv_fixture(dir.path());
    let pipeline = pipeline(ErrorPolicy::PassThrough);
    let run = run(&pipeline, csv_source(&fixture.path)).expect("pass-through gets through");
    assert_exact_good_rows(&run, 0);
    assert_eq!(run.rejected, fixture.rejects.len() as u64);
}

#[test]
fn csv_dead_letter_writes_each_reject_with_its_line_and_raw_text() {
    let dir = tempfile::tempdir().expect("tmp");
    let letters = dir.path().join("letters");
    let fixture = csv_fixture(dir.path());
    let pipeline = pipeline(ErrorPolicy::DeadLetter(letters.clone()));
    let run = run(&pipeline, csv_source(&fixture.path)).expect("dead letter gets through");
    assert_exact_good_rows(&run, 0);
    assert_eq!(run.rejected, fixture.rejects.len() as u64);
    check_rejects_file(&letters, &fixture, 0, 0);
}

#[test]
fn ndjson_skip_and_dead_letter_set_each_bad_line_aside() {
    let dir = tempfile::tempdir().expect("tmp");
    let fixture = ndjson_fixture(dir.path());
    let pipeline_skip = pipeline(ErrorPolicy::Skip);
    let skipped = run(&pipeline_skip, ndjson_source(&fixture.path)).expect("skip");
    assert_exact_good_rows(&skipped, 0);
    assert_eq!(skipped.rejected, fixture.rejects.len() as u64);

    let letters = dir.path().join("letters");
    let pipeline_dead = pipeline(ErrorPolicy::DeadLetter(letters.clone()));
    let dead = run(&pipeline_dead, ndjson_source(&fixture.path)).expect("dead letter");
    assert_exact_good_rows(&dead, 0);
    check_rejects_file(&letters, &fixture, 0, 0);

    let err = run(&pipeline(ErrorPolicy::Fail), ndjson_source(&fixture.path))
        .err()
        .expect("fail stops");
    assert!(err.to_string().contains("data.ndjson: line 1"), "{err}");
}

#[test]
fn a_resumed_run_keeps_only_the_rejects_at_or_after_its_skip_point() {
    let dir = tempfile::tempdir().expect("tmp");
    let fixture = csv_fixture(dir.path());
    // 5 000 is a reject's position (kept: it sits before row 5 000); 5 001 is not.
    for skip in [100u64, 5_000, 5_001, 59_999] {
        let pipeline = pipeline(ErrorPolicy::Skip);
        let got = run(&pipeline, SkipRows::new(csv_source(&fixture.path), skip)).expect("skip");
        assert_exact_good_rows(&got, skip);
        let kept = fixture
            .rejects
            .iter()
            .filter(|e| e.position >= skip)
            .count() as u64;
        assert_eq!(got.rejected, kept, "skip {skip}");

        let letters = dir.path().join(format!("letters-{skip}"));
        let pipeline = pipeline_dead(&letters);
        let got = run(&pipeline, SkipRows::new(csv_source(&fixture.path), skip)).expect("dl");
        assert_exact_good_rows(&got, skip);
        check_rejects_file(&letters, &fixture, skip, first_row(&got, skip));
    }
}

fn pipeline_dead(dir: &Path) -> StreamingDataPipeline {
    pipeline(ErrorPolicy::DeadLetter(dir.to_path_buf()))
}

#[test]
fn an_input_of_only_bad_records_delivers_nothing_and_sets_all_aside() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, b"id,value,label\nx,1,a\ny,2,b\n").expect("write");
    let letters = dir.path().join("letters");
    let pipeline = pipeline_dead(&letters);
    let got = run(&pipeline, csv_source(&path)).expect("runs");
    assert!(got.ids.is_empty());
    assert_eq!(got.rejected, 2);
    let rejects = read_rejects(&letters);
    let lines: Vec<_> = rejects.iter().map(|(_, v)| v["line"].as_u64()).collect();
    assert_eq!(lines, vec![Some(2), Some(3)]);
    let raws: Vec<_> = rejects
        .iter()
        .map(|(_, v)| v["raw"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        raws,
        vec![Some("x,1,a".to_owned()), Some("y,2,b".to_owned())]
    );
}

#[test]
fn a_long_bad_record_is_kept_capped() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("long.csv");
    let long = "9".repeat(100_000);
    std::fs::write(&path, format!("id,value,label\n1,1,a\nx,1,{long}\n2,2,b\n")).expect("write");
    let letters = dir.path().join("letters");
    let pipeline = pipeline_dead(&letters);
    let got = run(&pipeline, csv_source(&path)).expect("runs");
    assert_eq!(got.ids, vec![1, 2]);
    let rejects = read_rejects(&letters);
    assert_eq!(rejects.len(), 1);
    let raw = rejects[0].1["raw"].as_str().expect("raw");
    assert!(raw.starts_with("x,1,999"), "{raw}");
    assert!(raw.len() < 10_000, "capped: {} bytes", raw.len());
    assert_eq!(rejects[0].1["raw_truncated"].as_bool(), Some(true));
}

/// Parquet has no per-record failure: its values are typed and its pages are checked as a
/// whole, so a corrupt page loses every row of its row group. That cannot be set aside
/// row by row without losing rows silently, so it stays fatal under every policy, naming
/// the file and the row group.
#[test]
fn a_corrupt_parquet_page_is_fatal_under_skip_naming_the_row_group() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("data.parquet");
    write_parquet(&path, &[batch(0, 3000)], 1000);
    let file = std::fs::File::open(&path).expect("open");
    let reader =
        parquet::file::reader::SerializedFileReader::new(file).expect("valid parquet file");
    let meta = parquet::file::reader::FileReader::metadata(&reader);
    let column = meta.row_group(1).column(0);
    let offset = column.data_page_offset() as usize;
    let mut bytes = std::fs::read(&path).expect("read");
    for b in &mut bytes[offset..offset + 12] {
        *b = 0xff;
    }
    std::fs::write(&path, &bytes).expect("corrupt");
    for policy in [
        ErrorPolicy::Skip,
        ErrorPolicy::DeadLetter(dir.path().join("letters")),
    ] {
        let err = run(
            &pipeline(policy),
            ParquetSource::open(&path).expect("footer intact"),
        )
        .err()
        .expect("fatal");
        assert!(
            err.to_string().contains("data.parquet: row group 1"),
            "{err}"
        );
    }
}
