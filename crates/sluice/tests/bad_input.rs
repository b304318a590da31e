//! Bad input and bad settings give a clear error naming the file, the line or row, the
//! setting, and the cause; never a panic.

mod common;

use arrow::record_batch::RecordBatch;
use sluice::source::{CsvOptions, CsvSource, FilesSource, NdjsonSource, ParquetSource};
use sluice::{SluiceError, Source, StreamingDataPipeline};

use common::*;

fn run_all(source: impl Source + 'static) -> Result<usize, SluiceError> {
    let pipeline = StreamingDataPipeline::builder()
        .chunk_size(2)
        .num_workers(2)
        .build()
        .expect("valid");
    let mut rows = 0;
    for chunk in pipeline.process(source, |b: RecordBatch| Ok::<_, SluiceError>(b))? {
        rows += chunk?.batch.num_rows();
    }
    Ok(rows)
}

fn csv(dir: &tempfile::TempDir, name: &str, text: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn a_missing_file_names_the_path() {
    let err = CsvSource::open("/nonexistent/data.csv")
        .err()
        .expect("fails");
    assert!(matches!(err, SluiceError::Open { .. }));
    assert!(err.to_string().contains("/nonexistent/data.csv"), "{err}");
    let err = FilesSource::open(&["/nonexistent/*.csv"], None)
        .err()
        .expect("fails");
    assert!(
        err.to_string()
            .contains("no input files match /nonexistent/*.csv"),
        "{err}"
    );
}

#[test]
fn an_unreadable_file_names_the_path() {
    let dir = tempfile::tempdir().expect("tmp");
    // A folder where a file is expected cannot be read as CSV.
    let path = dir.path().join("folder.csv");
    std::fs::create_dir(&path).expect("mkdir");
    let err = CsvSource::open(&path).err().expect("fails");
    assert!(err.to_string().contains("folder.csv"), "{err}");
}

#[test]
fn a_row_with_the_wrong_number_of_fields_names_its_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = csv(&dir, "fields.csv", b"a,b,c\n1,2,3\n4,5,6\n7,8\n9,10,11\n");
    // Found while inferring the schema from the sample...
    let err = CsvSource::open(&path).err().expect("fails");
    assert!(err.to_string().contains("fields.csv: line 4"), "{err}");
    // ...and while decoding, with the schema given.
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(
        ["a", "b", "c"]
            .map(|n| arrow::datatypes::Field::new(n, arrow::datatypes::DataType::Int64, true))
            .to_vec(),
    ));
    let source =
        CsvSource::open_with(&path, CsvOptions::default().with_schema(schema)).expect("open");
    let err = run_all(source).expect_err("fails");
    let text = err.to_string();
    assert!(text.contains("fields.csv"), "{text}");
    assert!(text.contains("line 4"), "{text}");
    assert!(matches!(err, SluiceError::BadInput { .. }), "{err:?}");
}

#[test]
fn an_unparsable_number_names_its_line_and_value() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut text = String::from("id,value\n");
    for i in 0..50 {
        text.push_str(&format!("{i},{}.5\n", i));
    }
    text.push_str("50,abc\n");
    let path = csv(&dir, "numbers.csv", text.as_bytes());
    // The sample says `value` is a float; line 52 (the 51st data row) is not.
    let source =
        CsvSource::open_with(&path, CsvOptions::default().with_infer_rows(10)).expect("open");
    let err = run_all(source).expect_err("fails");
    let text = err.to_string();
    assert!(text.contains("numbers.csv: line 52"), "{text}");
    assert!(text.contains("'abc'"), "{text}");
}

#[test]
fn invalid_utf8_names_its_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = csv(&dir, "utf8.csv", b"id,name\n1,ok\n2,b\xffd\n3,fine\n");
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, true),
        arrow::datatypes::Field::new("name", arrow::datatypes::DataType::Utf8, true),
    ]));
    let source =
        CsvSource::open_with(&path, CsvOptions::default().with_schema(schema)).expect("open");
    let err = run_all(source).expect_err("fails");
    let text = err.to_string();
    assert!(text.contains("utf8.csv: line 3"), "{text}");
    assert!(text.to_lowercase().contains("utf-8"), "{text}");
}

#[test]
fn a_truncated_parquet_file_is_reported_not_panicked() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("data.parquet");
    write_parquet(&path, &[batch(0, 5000)], 1000);
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
    let err = ParquetSource::open(&path).err().expect("fails");
    let text = err.to_string();
    assert!(
        text.contains("data.parquet: footer: not a readable Parquet file"),
        "{text}"
    );
}

#[test]
fn malformed_json_names_its_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = csv(
        &dir,
        "data.ndjson",
        b"{\"a\": 1}\n{\"a\": 2}\n{\"a\": 3\n{\"a\": 4}\n",
    );
    let source = NdjsonSource::open_with(
        &path,
        sluice::source::NdjsonOptions {
            infer_rows: 2,
            schema: None,
        },
    )
    .expect("open");
    let err = run_all(source).expect_err("fails");
    assert!(err.to_string().contains("data.ndjson: line 3"), "{err}");
}

#[test]
fn files_of_a_glob_with_different_schemas_name_both_files() {
    let dir = tempfile::tempdir().expect("tmp");
    write_parquet(&dir.path().join("a.parquet"), &[batch(0, 10)], 100);
    write_parquet(
        &dir.path().join("b.parquet"),
        &[transform(&batch(10, 10))],
        100,
    );
    let pattern = format!("{}/*.parquet", dir.path().display());
    let source = FilesSource::open(&[pattern.as_str()], None).expect("open");
    let err = run_all(source).expect_err("fails");
    let text = err.to_string();
    assert!(matches!(err, SluiceError::SchemaMismatch { .. }), "{err:?}");
    assert!(
        text.contains("b.parquet") && text.contains("a.parquet"),
        "{text}"
    );
    assert!(text.contains("\"doubled\" instead of \"value\""), "{text}");
}

#[test]
fn invalid_settings_are_rejected_when_built_naming_the_setting() {
    let cases: Vec<(sluice::PipelineBuilder, &str)> = vec![
        (
            StreamingDataPipeline::builder().num_workers(0),
            "num_workers",
        ),
        (StreamingDataPipeline::builder().chunk_size(0), "chunk_size"),
        (
            StreamingDataPipeline::builder().max_memory_mb(0.0),
            "max_memory_mb",
        ),
        (
            StreamingDataPipeline::builder().max_memory_bytes(100),
            "max_memory_mb",
        ),
        (
            StreamingDataPipeline::builder()
                .min_chunk_rows(500)
                .max_chunk_rows(10),
            "min_chunk_rows",
        ),
        (
            StreamingDataPipeline::builder().max_queue_size(0),
            "max_queue_size",
        ),
    ];
    for (builder, setting) in cases {
        let err = builder.build().expect_err("invalid");
        assert!(
            matches!(&err, SluiceError::InvalidSetting { setting: s, .. } if *s == setting),
            "{setting}: {err}"
        );
        assert!(err.to_string().contains(setting), "{err}");
    }
}

#[test]
fn a_budget_smaller_than_one_row_is_rejected_naming_the_setting() {
    use arrow::datatypes::{DataType, Field, Schema};
    let wide = std::sync::Arc::new(Schema::new(
        (0..200)
            .map(|i| Field::new(format!("c{i}"), DataType::Float64, false))
            .collect::<Vec<_>>(),
    ));
    let pipeline = StreamingDataPipeline::builder()
        .max_memory_bytes(1024)
        .build()
        .expect("valid");
    let source = sluice::source::MemorySource::try_new(wide, vec![]).expect("source");
    let err = pipeline
        .process(source, |b: RecordBatch| Ok::<_, SluiceError>(b))
        .err()
        .expect("fails");
    assert!(err.to_string().contains("max_memory_mb"), "{err}");
    assert!(err.to_string().contains("1600 bytes"), "{err}");
}
