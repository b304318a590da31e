//! Output folders: parts read back equal the input processed, in order; the manifest is
//! right; a run that fails midway leaves no part that looks complete and no temporary file.

mod common;

use arrow::record_batch::RecordBatch;
use sluice::source::MemorySource;
use sluice::{OutputFormat, OutputOptions, RunStatus, SluiceError, StreamingDataPipeline};

use common::*;

fn pipeline(workers: usize) -> StreamingDataPipeline {
    StreamingDataPipeline::builder()
        .chunk_size(700)
        .num_workers(workers)
        .max_memory_mb(32.0)
        .build()
        .expect("valid")
}

#[test]
fn parts_read_back_equal_the_processed_input_in_every_format() {
    for format in [OutputFormat::Parquet, OutputFormat::Csv, OutputFormat::Ipc] {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("out");
        let p = pipeline(3);
        let summary = p
            .run_to(
                MemorySource::from_batch(batch(0, 25_000)),
                |b: RecordBatch| Ok::<_, SluiceError>(transform(&b)),
                OutputOptions::new(&out).format(format).rows_per_part(4000),
            )
            .expect("run");
        let manifest = summary.manifest.expect("manifest");
        assert_eq!(manifest.status, RunStatus::Complete);
        assert_eq!(manifest.parts.iter().map(|p| p.rows).sum::<u64>(), 25_000);
        let (last, full) = manifest.parts.split_last().expect("parts");
        assert!(!full.is_empty(), "rolled over by rows");
        assert!(full.iter().all(|p| p.rows >= 4000) && last.rows > 0);
        // Parts tile the input rows in order.
        let mut next = 0;
        for part in &manifest.parts {
            assert_eq!(part.input_row_start, next);
            next = part.input_row_end;
            assert!(part.file.starts_with("part-") && part.file.ends_with(format.extension()));
        }
        assert_eq!(next, 25_000);
        let got = concat(&read_parts(&out));
        assert_same_values(&got, &transform(&batch(0, 25_000)));
        // The manifest on disk says the same and carries the stats.
        let text = std::fs::read_to_string(out.join("_manifest.json")).expect("manifest file");
        assert!(text.contains("\"status\": \"complete\""), "{text}");
        assert!(text.contains("\"total_rows_processed\": 25000"), "{text}");
        let names: Vec<_> = std::fs::read_dir(&out)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }
}

#[test]
fn iterating_and_writing_at_once_yields_what_is_written() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = pipeline(2);
    let mut yielded = Vec::new();
    for chunk in p
        .process_to(
            MemorySource::from_batch(batch(0, 5000)),
            |b: RecordBatch| Ok::<_, SluiceError>(transform(&b)),
            OutputOptions::new(dir.path()),
        )
        .expect("start")
    {
        yielded.push(chunk.expect("ok").batch);
    }
    assert_same_values(&concat(&read_parts(dir.path())), &concat(&yielded));
}

#[test]
fn a_run_that_fails_midway_leaves_no_part_that_looks_complete() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = StreamingDataPipeline::builder()
        .chunk_size(100)
        .adaptive_batching(false)
        .num_workers(2)
        .build()
        .expect("valid");
    let result = p.run_to(
        MemorySource::from_batch(batch(0, 10_000)),
        |b: RecordBatch| {
            if ids_of(&b)[0] == 5_000 {
                Err("the function broke")
            } else {
                Ok(transform(&b))
            }
        },
        OutputOptions::new(dir.path()).rows_per_part(1_000),
    );
    let err = result.expect_err("the run fails");
    assert!(err.to_string().contains("chunk 50"), "{err}");
    let manifest = sluice::Manifest::read_from(dir.path()).expect("manifest");
    assert_eq!(manifest.status, RunStatus::Failed);
    assert!(manifest
        .error
        .as_deref()
        .unwrap_or("")
        .contains("the function broke"));
    // Every part file present is listed, complete and readable; nothing else is there.
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .filter(|n| n != "_manifest.json")
        .collect();
    files.sort();
    let listed: Vec<String> = manifest.parts.iter().map(|p| p.file.clone()).collect();
    assert_eq!(files, listed, "only listed, complete parts remain");
    let rows: usize = read_parts(dir.path()).iter().map(|b| b.num_rows()).sum();
    assert_eq!(
        rows as u64,
        manifest.parts.iter().map(|p| p.rows).sum::<u64>()
    );
    assert_eq!(rows, 5_000, "exactly the chunks before the failure");
}

#[test]
fn dropping_the_stream_early_stops_and_records_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = pipeline(2);
    let mut stream = p
        .process_to(
            MemorySource::from_batch(batch(0, 50_000)),
            |b: RecordBatch| Ok::<_, SluiceError>(b),
            OutputOptions::new(dir.path()).rows_per_part(1000),
        )
        .expect("start");
    let first = stream.next().expect("one").expect("ok");
    drop(stream);
    let manifest = sluice::Manifest::read_from(dir.path()).expect("manifest");
    assert_eq!(manifest.status, RunStatus::Stopped);
    assert_eq!(
        manifest.parts.iter().map(|p| p.rows).sum::<u64>(),
        first.batch.num_rows() as u64
    );
    assert_eq!(p.controller().used_bytes(), 0);
}

#[test]
fn temporaries_of_a_crashed_run_are_removed_on_the_next_run() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join(".part-00003.parquet.tmp"), b"half a file").expect("write");
    let p = pipeline(1);
    p.run_to(
        MemorySource::from_batch(batch(0, 10)),
        |b: RecordBatch| Ok::<_, SluiceError>(b),
        OutputOptions::new(dir.path()),
    )
    .expect("run");
    assert!(!dir.path().join(".part-00003.parquet.tmp").exists());
}

/// Large outputs are encoded into Parquet row groups by the workers, small ones by the part
/// writer; mixed in one run (a filter that keeps every row of some chunks and a few of
/// others), the parts still hold exactly the sequential loop's rows, in order, and each
/// large chunk's output is one row group of its own.
#[test]
fn parquet_row_groups_encoded_by_workers_keep_every_row_in_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = StreamingDataPipeline::builder()
        .chunk_size(20_000)
        .adaptive_batching(false)
        .num_workers(3)
        .build()
        .expect("valid");
    let thin = |b: &RecordBatch| -> RecordBatch {
        let out = transform(b);
        // Chunks starting at an odd multiple of 20k keep one row in a hundred.
        if (ids_of(b)[0] / 20_000) % 2 == 1 {
            let keep = arrow::array::BooleanArray::from_iter(
                (0..out.num_rows()).map(|i| Some(i % 100 == 0)),
            );
            arrow::compute::filter_record_batch(&out, &keep).expect("filter")
        } else {
            out
        }
    };
    let summary = p
        .run_to(
            MemorySource::from_batch(batch(0, 300_000)),
            move |b: RecordBatch| Ok::<_, SluiceError>(thin(&b)),
            OutputOptions::new(dir.path()).rows_per_part(50_000),
        )
        .expect("run");
    let manifest = summary.manifest.expect("manifest");
    assert_eq!(manifest.status, RunStatus::Complete);
    let expected: Vec<RecordBatch> = (0..15).map(|i| thin(&batch(i * 20_000, 20_000))).collect();
    let expected = concat(&expected);
    assert_eq!(expected.num_rows(), 8 * 20_000 + 7 * 200);
    assert_same_values(&concat(&read_parts(dir.path())), &expected);
    let mut full_groups = 0;
    for part in &manifest.parts {
        let file = std::fs::File::open(dir.path().join(&part.file)).expect("part");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet");
        full_groups += reader
            .metadata()
            .row_groups()
            .iter()
            .filter(|g| g.num_rows() == 20_000)
            .count();
    }
    assert_eq!(
        full_groups, 8,
        "every whole chunk's output is a row group of its own"
    );
}
