//! Every source returns every row and value, in order, across chunk sizes 1, 7, 5000 and
//! larger than the input, with several workers decoding in parallel.

mod common;

use arrow::record_batch::RecordBatch;
use sluice::source::{
    CsvOptions, CsvSource, FileFormat, FilesSource, IpcFileSource, IpcStreamSource, IterSource,
    MemorySource, NdjsonSource, ParquetOptions, ParquetSource, PartHint,
};
use sluice::{SluiceError, Source, StreamingDataPipeline};

use common::*;

const ROWS: usize = 12_345;

fn input() -> Vec<RecordBatch> {
    // Uneven batches so that chunks cross batch and part boundaries.
    let mut out = Vec::new();
    let mut start = 0;
    for n in [1000usize, 1, 4321, 2023, 5000] {
        out.push(batch(start as i64, n));
        start += n;
    }
    assert_eq!(start, ROWS);
    out
}

/// Runs `open()` through the pipeline at each chunk size and compares with the input.
fn check_source(open: impl Fn() -> Box<dyn Source>) {
    let expected = concat(&input());
    for chunk in [1usize, 7, 5000, ROWS + 10] {
        for workers in [1usize, 3] {
            let pipeline = StreamingDataPipeline::builder()
                .chunk_size(chunk)
                .adaptive_batching(false)
                .num_workers(workers)
                .max_memory_mb(64.0)
                .build()
                .expect("valid");
            let chunks: Vec<_> = pipeline
                .process(open(), |b: RecordBatch| Ok::<_, SluiceError>(b))
                .expect("started")
                .collect::<Result<_, _>>()
                .expect("no error");
            let batches: Vec<RecordBatch> = chunks.iter().map(|c| c.batch.clone()).collect();
            let got = concat(&batches);
            assert_same_values(&got, &expected);
            assert!(chunks.iter().all(|c| c.batch.num_rows() <= chunk));
            assert_eq!(chunks.len(), ROWS.div_ceil(chunk), "chunk {chunk}");
            assert_eq!(pipeline.stats().total_rows_processed, ROWS as u64);
        }
    }
}

#[test]
fn memory_source_single_batch_and_many() {
    check_source(|| Box::new(MemorySource::from_batch(concat(&input()))));
    check_source(|| Box::new(MemorySource::try_new(schema(), input()).expect("source")));
}

#[test]
fn iterator_source() {
    check_source(|| {
        Box::new(IterSource::new(
            schema(),
            input().into_iter().map(Ok::<_, SluiceError>),
        ))
    });
}

#[test]
fn csv_source_with_given_and_inferred_schema() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("data.csv");
    write_csv(&path, &input());
    let p = path.clone();
    check_source(move || {
        Box::new(
            CsvSource::open_with(&p, CsvOptions::default().with_schema(schema())).expect("open"),
        )
    });
    // Inferred: ids are Int64, values Float64, labels Utf8, as written.
    let inferred = CsvSource::open(&path).expect("open");
    assert_eq!(
        inferred.schema().field(0).data_type(),
        &arrow::datatypes::DataType::Int64
    );
    assert_eq!(
        inferred.schema().field(2).data_type(),
        &arrow::datatypes::DataType::Utf8
    );
}

#[test]
fn csv_blocks_smaller_than_the_file_keep_quoted_fields_whole() {
    // A small budget makes the reader cut the file into many small blocks.
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("quoted.csv");
    let mut text = String::from("id,text\n");
    for i in 0..20_000 {
        text.push_str(&format!(
            "{i},\"line one of {i}\nline two, with comma \"\"quoted\"\"\"\n"
        ));
    }
    std::fs::write(&path, text).expect("write");
    let pipeline = StreamingDataPipeline::builder()
        .chunk_size(333)
        .adaptive_batching(false)
        .num_workers(2)
        .max_memory_mb(2.0)
        .build()
        .expect("valid");
    let chunks: Vec<_> = pipeline
        .process(CsvSource::open(&path).expect("open"), |b: RecordBatch| {
            Ok::<_, SluiceError>(b)
        })
        .expect("started")
        .collect::<Result<_, _>>()
        .expect("no error");
    let all = concat(&chunks.iter().map(|c| c.batch.clone()).collect::<Vec<_>>());
    assert_eq!(all.num_rows(), 20_000);
    assert_eq!(ids_of(&all), (0..20_000).collect::<Vec<_>>());
    let texts = all
        .column(1)
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .expect("text");
    assert_eq!(
        texts.value(19_999),
        "line one of 19999\nline two, with comma \"quoted\""
    );
}

#[test]
fn tsv_without_trailing_newline() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("data.tsv");
    std::fs::write(&path, "id\tvalue\n1\t0.5\n2\t1.5\n3\t2.5").expect("write");
    let source = FilesSource::open(&[path.to_string_lossy()], None).expect("open");
    let pipeline = StreamingDataPipeline::builder()
        .chunk_size(2)
        .build()
        .expect("valid");
    let rows: usize = pipeline
        .process(source, |b: RecordBatch| Ok::<_, SluiceError>(b))
        .expect("started")
        .map(|c| c.expect("ok").batch.num_rows())
        .sum();
    assert_eq!(rows, 3);
}

fn field_names(schema: &arrow::datatypes::SchemaRef) -> Vec<String> {
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

/// `opened` must be refused for asking for a column `nope`, naming the file's `label`.
fn assert_unknown_column_refused<T>(opened: Result<T, SluiceError>) {
    match opened {
        Err(SluiceError::BadInput { message, .. }) => {
            assert!(message.contains("no column named \"nope\""), "{message}");
            assert!(message.contains("\"label\""), "{message}");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("an unknown column was accepted"),
    }
}

/// Whole files by row group; a projection reads its columns in the file's order, a column
/// named twice once (its schema and its batches agree), and refuses an unknown name.
#[test]
fn parquet_source_by_row_groups_and_projection() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("data.parquet");
    write_parquet(&path, &input(), 1000);
    assert!(ParquetSource::open(&path).expect("open").num_row_groups() > 10);
    let p = path.clone();
    check_source(move || Box::new(ParquetSource::open(&p).expect("open")));
    let open = |names: &[&str]| {
        ParquetSource::open_with(
            &path,
            ParquetOptions {
                columns: Some(names.iter().map(|n| n.to_string()).collect()),
            },
        )
    };
    let projected = open(&["label", "id", "label"]).expect("open");
    assert_eq!(field_names(&projected.schema()), vec!["id", "label"]);
    // Progress and the bytes-read statistic count the projected columns' chunks only.
    let whole_file = ParquetSource::open(&path).expect("open").total_bytes();
    let one_column = open(&["id"]).expect("open");
    let total = one_column.total_bytes().expect("known");
    assert!(
        total > 0 && total * 2 < whole_file.expect("known"),
        "{total} of {whole_file:?}"
    );
    let mut parts = open(&["id"]).expect("open");
    let mut counted = 0;
    while let Some((_, bytes)) = parts
        .next_part(PartHint {
            rows: 1000,
            bytes: 1 << 20,
        })
        .expect("part")
    {
        counted += bytes;
    }
    assert_eq!(counted, total);
    let pipeline = StreamingDataPipeline::builder()
        .chunk_size(777)
        .build()
        .expect("valid");
    let batches: Vec<RecordBatch> = pipeline
        .process(Box::new(projected), |b: RecordBatch| {
            Ok::<_, SluiceError>(b)
        })
        .expect("started")
        .map(|c| c.expect("chunk").batch)
        .collect();
    let got = concat(&batches);
    let whole = concat(&input());
    assert_eq!(got.num_columns(), 2);
    assert_eq!(
        got.column(0).as_ref(),
        whole.column_by_name("id").expect("id").as_ref()
    );
    assert_eq!(
        got.column(1).as_ref(),
        whole.column_by_name("label").expect("label").as_ref()
    );
    assert_unknown_column_refused(open(&["id", "nope"]));
}

#[test]
fn ndjson_source() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("data.ndjson");
    write_ndjson(&path, &input());
    let p = path.clone();
    check_source(move || {
        Box::new(
            NdjsonSource::open_with(
                &p,
                sluice::source::NdjsonOptions {
                    schema: Some(schema()),
                    infer_rows: 100,
                },
            )
            .expect("open"),
        )
    });
}

#[test]
fn ipc_file_and_stream_sources() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("data.arrow");
    let stream = dir.path().join("data.arrows");
    write_ipc_file(&file, &input());
    write_ipc_stream(&stream, &input());
    let f = file.clone();
    check_source(move || Box::new(IpcFileSource::open(&f).expect("open")));
    let s = stream.clone();
    check_source(move || Box::new(IpcStreamSource::open(&s).expect("open")));
    // Format detection tells them apart by their magic bytes.
    let auto = FileFormat::Ipc.open(&stream).expect("open");
    assert_eq!(auto.schema(), schema());
}

#[test]
fn a_glob_of_files_reads_in_name_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let batches = input();
    for (i, b) in batches.iter().enumerate() {
        write_parquet(
            &dir.path().join(format!("part-{i}.parquet")),
            std::slice::from_ref(b),
            700,
        );
    }
    let pattern = format!("{}/*.parquet", dir.path().display());
    check_source(move || Box::new(FilesSource::open(&[pattern.as_str()], None).expect("open")));
    // A folder works too.
    let folder = dir.path().to_string_lossy().to_string();
    check_source(move || Box::new(FilesSource::open(&[folder.as_str()], None).expect("open")));
}

#[test]
fn csv_columns_are_read_alone_across_files_quoted_or_plain() {
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{Float64Type, Int64Type};
    let dir = tempfile::tempdir().expect("tmp");
    // The first file's `value` column is inferred Float64; the second's, Int64: the second is
    // decoded with the first's types. Its label holds a quoted comma and newline, which the
    // plain-text path leaves to arrow-csv.
    std::fs::write(
        dir.path().join("a.csv"),
        "id,label,value\n1,x,1.5\n2,y,20\n3,,30\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("b.csv"),
        "id,label,value\n4,\"q,\nr\",40\n5,z,\n",
    )
    .expect("write");
    let pattern = format!("{}/*.csv", dir.path().display());
    let format =
        FileFormat::Csv(CsvOptions::default().with_columns(vec!["value".into(), "id".into()]));
    let source = FilesSource::open(&[pattern.as_str()], Some(format.clone())).expect("open");
    assert_eq!(field_names(&source.schema()), vec!["id", "value"]);
    for chunk in [1usize, 2, 100] {
        let source = FilesSource::open(&[pattern.as_str()], Some(format.clone())).expect("open");
        let pipeline = StreamingDataPipeline::builder()
            .chunk_size(chunk)
            .adaptive_batching(false)
            .num_workers(2)
            .build()
            .expect("valid");
        let chunks: Vec<_> = pipeline
            .process(Box::new(source), |b: RecordBatch| Ok::<_, SluiceError>(b))
            .expect("started")
            .collect::<Result<_, _>>()
            .expect("no error");
        let batches: Vec<RecordBatch> = chunks.iter().map(|c| c.batch.clone()).collect();
        let got = concat(&batches);
        assert_eq!(got.num_columns(), 2);
        let ids: &Int64Array = got.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values().to_vec(), vec![1, 2, 3, 4, 5]);
        let values: Vec<Option<f64>> = got.column(1).as_primitive::<Float64Type>().iter().collect();
        assert_eq!(
            values,
            vec![Some(1.5), Some(20.0), Some(30.0), Some(40.0), None],
            "chunk {chunk}"
        );
    }
    assert_unknown_column_refused(CsvSource::open_with(
        dir.path().join("a.csv"),
        CsvOptions::default().with_columns(vec!["nope".into()]),
    ));
}
