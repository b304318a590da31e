//! The contract on the recovery paths of the library: absolute row numbers in a resumed run,
//! one output-folder contract (refuse, overwrite, resume; nothing uncommitted left after a
//! failure; a stop that says so), memory the engine holds counted at its weight, and runs
//! of one pipeline that never wait for each other.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use common::{all_ids, batch, ids_of, read_parts, transform};
use sluice::source::{IterSource, MemorySource, SkipRows};
use sluice::{
    BoxError, ErrorPolicy, Manifest, OutputFormat, OutputOptions, ProcessedChunk, RunStatus,
    SluiceError, StreamingDataPipeline,
};

fn pipeline(chunk: usize) -> StreamingDataPipeline {
    StreamingDataPipeline::builder()
        .chunk_size(chunk)
        .adaptive_batching(false)
        .num_workers(2)
        .build()
        .expect("valid settings")
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs `f` on another thread and fails the test if it does not return within a minute:
/// a guard against a hang, not a synchronization.
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the run hung (no progress within a minute)")
}

#[test]
fn a_resumed_run_numbers_rows_and_failures_from_the_start_of_the_input() {
    let p = pipeline(100);
    let chunks: Vec<ProcessedChunk> = p
        .process(
            SkipRows::new(MemorySource::from_batch(batch(0, 1000)), 250),
            |b: RecordBatch| Ok::<_, SluiceError>(b),
        )
        .expect("started")
        .collect::<Result<_, _>>()
        .expect("no failure");
    assert_eq!(all_ids(&chunks), (250..1000).collect::<Vec<i64>>());
    // Each chunk's input rows are the rows of the whole input its ids say.
    for c in &chunks {
        let ids = ids_of(&c.batch);
        assert_eq!(c.input_rows.start, ids[0] as u64);
        assert_eq!(c.input_rows.end, *ids.last().expect("rows") as u64 + 1);
    }
    // A failure names the rows of the whole input, not of the resumed run.
    let err = p
        .process(
            SkipRows::new(MemorySource::from_batch(batch(0, 1000)), 250),
            |b: RecordBatch| {
                if ids_of(&b).contains(&777) {
                    Err("bad row 777".into())
                } else {
                    Ok::<_, BoxError>(b)
                }
            },
        )
        .expect("started")
        .collect::<Result<Vec<_>, _>>()
        .expect_err("row 777 fails");
    match err {
        SluiceError::ChunkFailed {
            first_row, end_row, ..
        } => assert!(
            (first_row..end_row).contains(&777),
            "the error names rows {first_row}..{end_row}, not the ones holding row 777"
        ),
        other => panic!("expected a chunk failure, got {other}"),
    }
}

#[test]
fn a_resumed_parquet_run_skips_whole_row_groups_without_reading_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("in.parquet");
    common::write_parquet(&path, &[batch(0, 10_000)], 1000);
    // Row groups 0..4 are made unreadable: only a run that skips them whole can succeed.
    let file = std::fs::File::open(&path).expect("open");
    let meta = parquet::file::reader::FileReader::metadata(
        &parquet::file::serialized_reader::SerializedFileReader::new(file).expect("parquet"),
    )
    .clone();
    let rg4 = meta.row_group(4).column(0);
    let rg4_start = rg4
        .dictionary_page_offset()
        .unwrap_or(rg4.data_page_offset()) as usize;
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[4..rg4_start].fill(0xA5);
    std::fs::write(&path, bytes).expect("write");

    let p = pipeline(700);
    let source = sluice::source::ParquetSource::open(&path).expect("open");
    let chunks: Vec<ProcessedChunk> = p
        .process(SkipRows::new(source, 4321), |b: RecordBatch| {
            Ok::<_, SluiceError>(b)
        })
        .expect("started")
        .collect::<Result<_, _>>()
        .expect("the skipped row groups are never read");
    assert_eq!(all_ids(&chunks), (4321..10_000).collect::<Vec<i64>>());
    assert_eq!(chunks[0].input_rows.start, 4321);
    assert_eq!(p.controller().used_bytes(), 0);
    // A run that must read them fails, naming the file.
    let source = sluice::source::ParquetSource::open(&path).expect("open");
    let err = p
        .process(SkipRows::new(source, 3999), |b: RecordBatch| {
            Ok::<_, SluiceError>(b)
        })
        .expect("started")
        .collect::<Result<Vec<_>, _>>()
        .expect_err("row group 3 is corrupt");
    assert!(err.to_string().contains("in.parquet"), "{err}");
}

#[test]
fn a_resume_past_the_end_of_the_input_is_an_error() {
    let p = pipeline(100);
    let err = p
        .process(
            SkipRows::new(MemorySource::from_batch(batch(0, 50)), 60),
            |b: RecordBatch| Ok::<_, SluiceError>(b),
        )
        .expect("started")
        .collect::<Result<Vec<_>, _>>()
        .expect_err("the input is shorter than the prefix");
    assert!(err.to_string().contains("only 50 rows"), "{err}");
}

#[test]
fn a_folder_with_earlier_output_is_refused_unless_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let p = pipeline(100);
    let opts = || {
        OutputOptions::new(&out)
            .format(OutputFormat::Ipc)
            .rows_per_part(300)
    };
    p.run_to(
        MemorySource::from_batch(batch(0, 1000)),
        |b: RecordBatch| Ok::<_, SluiceError>(transform(&b)),
        opts(),
    )
    .expect("first run");
    assert_eq!(Manifest::read_from(&out).expect("manifest").parts.len(), 4);

    let err = p
        .process_to(
            MemorySource::from_batch(batch(0, 200)),
            |b: RecordBatch| Ok::<_, SluiceError>(transform(&b)),
            opts(),
        )
        .err()
        .expect("a folder with output is refused");
    assert!(
        matches!(err, SluiceError::OutputExists { .. }),
        "unexpected error: {err}"
    );
    assert_eq!(Manifest::read_from(&out).expect("kept").parts.len(), 4);

    // Overwritten: only the new run's parts, no stale part of the first run.
    p.run_to(
        MemorySource::from_batch(batch(0, 200)),
        |b: RecordBatch| Ok::<_, SluiceError>(transform(&b)),
        opts().overwrite(true),
    )
    .expect("second run");
    let manifest = Manifest::read_from(&out).expect("manifest");
    assert_eq!(manifest.parts.len(), 1);
    assert_eq!(
        files_in(&out),
        vec!["_manifest.json".to_string(), "part-00000.arrow".to_string()]
    );
    let ids: Vec<i64> = read_parts(&out).iter().flat_map(ids_of).collect();
    assert_eq!(ids, (0..200).collect::<Vec<i64>>());
}

#[test]
fn a_failed_run_commits_nothing_after_the_failure_and_says_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let p = pipeline(100);
    let err = p
        .run_to(
            MemorySource::from_batch(batch(0, 1000)),
            |b: RecordBatch| {
                if ids_of(&b).contains(&750) {
                    Err("bad row 750".into())
                } else {
                    Ok::<_, BoxError>(transform(&b))
                }
            },
            OutputOptions::new(&out)
                .format(OutputFormat::Ipc)
                .rows_per_part(300),
        )
        .expect_err("row 750 fails");
    assert!(err.to_string().contains("bad row 750"), "{err}");
    let manifest = Manifest::read_from(&out).expect("manifest");
    assert_eq!(manifest.status, RunStatus::Failed);
    assert!(manifest
        .error
        .as_deref()
        .is_some_and(|e| e.contains("bad row 750")));
    // Parts 0..300 and 300..600 were committed before the failure; rows 600..700 were in
    // the open part, which is dropped, not committed.
    let ranges: Vec<(u64, u64)> = manifest
        .parts
        .iter()
        .map(|p| (p.input_row_start, p.input_row_end))
        .collect();
    assert_eq!(ranges, vec![(0, 300), (300, 600)]);
    assert_eq!(
        files_in(&out),
        vec![
            "_manifest.json".to_string(),
            "part-00000.arrow".to_string(),
            "part-00001.arrow".to_string()
        ],
        "no part or temporary outside the manifest"
    );
    let ids: Vec<i64> = read_parts(&out).iter().flat_map(ids_of).collect();
    assert_eq!(ids, (0..600).collect::<Vec<i64>>());
}

#[test]
fn a_part_that_cannot_be_committed_leaves_no_temporary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let p = pipeline(100);
    let stream = p
        .process_to(
            MemorySource::from_batch(batch(0, 500)),
            |b: RecordBatch| Ok::<_, SluiceError>(transform(&b)),
            OutputOptions::new(&out).format(OutputFormat::Ipc),
        )
        .expect("started");
    // The part's final name is taken by a folder: the rename that commits it fails.
    std::fs::create_dir(out.join("part-00000.arrow")).expect("mkdir");
    let err = stream.run_to_end().expect_err("the commit fails");
    assert!(err.to_string().contains("part-00000.arrow"), "{err}");
    let temporaries: Vec<String> = files_in(&out)
        .into_iter()
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(temporaries.is_empty(), "left behind: {temporaries:?}");
    assert_eq!(
        Manifest::read_from(&out).expect("manifest").status,
        RunStatus::Failed
    );
}

#[test]
fn a_stopped_run_says_it_was_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let p = pipeline(10);
    let mut stream = p
        .process_to(
            MemorySource::from_batch(batch(0, 100_000)),
            |b: RecordBatch| Ok::<_, SluiceError>(b),
            OutputOptions::new(&out)
                .format(OutputFormat::Ipc)
                .rows_per_part(50),
        )
        .expect("started");
    let first = stream.next().expect("a chunk").expect("ok");
    assert_eq!(first.input_rows, 0..10);
    p.stop();
    let rest: Vec<Result<ProcessedChunk, SluiceError>> = stream.by_ref().collect();
    let (last, delivered) = rest.split_last().expect("at least the stop is reported");
    assert!(
        matches!(last, Err(SluiceError::Stopped)),
        "the iterator must end with Stopped, not like a finished run; got {last:?}"
    );
    // What came before the stop is an exact, in-order prefix, and far from all of it.
    let mut ids = ids_of(&first.batch);
    for c in delivered {
        ids.extend(ids_of(&c.as_ref().expect("no other error").batch));
    }
    assert_eq!(ids, (0..ids.len() as i64).collect::<Vec<i64>>());
    assert!(ids.len() < 100_000, "the stop was ignored");
    assert_eq!(stream.status(), Some(RunStatus::Stopped));
    let manifest = Manifest::read_from(&out).expect("manifest");
    assert_eq!(manifest.status, RunStatus::Stopped);
    let written: Vec<i64> = read_parts(&out).iter().flat_map(ids_of).collect();
    assert_eq!(written, (0..written.len() as i64).collect::<Vec<i64>>());
    assert!(written.len() <= ids.len());
}

#[test]
fn a_stop_after_the_last_chunk_leaves_a_complete_run() {
    let p = pipeline(100);
    let mut stream = p
        .process(MemorySource::from_batch(batch(0, 300)), |b: RecordBatch| {
            Ok::<_, SluiceError>(b)
        })
        .expect("started");
    let mut rows = 0;
    for _ in 0..3 {
        rows += stream.next().expect("chunk").expect("ok").batch.num_rows();
    }
    assert_eq!(rows, 300);
    p.stop();
    assert!(stream.next().is_none(), "nothing after the last chunk");
    assert_eq!(stream.status(), Some(RunStatus::Complete));
}

/// One 1 MiB batch of wide strings per call, counting the batches made.
fn wide_batches(
    count: usize,
    made: Arc<AtomicUsize>,
) -> impl Iterator<Item = Result<RecordBatch, BoxError>> + Send {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    (0..count).map(move |i| {
        made.fetch_add(1, Ordering::SeqCst);
        let rows = 1024;
        let ids: Vec<i64> = (0..rows).map(|r| (i * rows + r) as i64).collect();
        let text: Vec<String> = (0..rows).map(|_| "x".repeat(1024)).collect();
        Ok(RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)) as ArrayRef,
                Arc::new(StringArray::from(text)),
            ],
        )?)
    })
}

#[test]
fn batches_an_iterator_makes_are_held_inside_the_budget() {
    let budget_mb = 8.0;
    let p = StreamingDataPipeline::builder()
        .chunk_size(256)
        .max_memory_mb(budget_mb)
        .num_workers(2)
        .build()
        .expect("valid");
    let made = Arc::new(AtomicUsize::new(0));
    let schema = wide_batches(1, Arc::new(AtomicUsize::new(0)))
        .next()
        .expect("one")
        .expect("ok")
        .schema();
    let source = IterSource::new(schema, wide_batches(40, made.clone()));
    let delivered_rows = Arc::new(AtomicUsize::new(0));
    let counted = delivered_rows.clone();
    let most_ahead = Arc::new(AtomicUsize::new(0));
    let ahead = most_ahead.clone();
    let made_seen = made.clone();
    let stream = p
        .process(source, move |b: RecordBatch| {
            // Batches made but not yet through the function: what the engine holds.
            let through = counted.load(Ordering::SeqCst) / 1024;
            let held = made_seen.load(Ordering::SeqCst).saturating_sub(through);
            ahead.fetch_max(held, Ordering::SeqCst);
            // Some work, so the reader could run far ahead if nothing held it back.
            let mut x = 0u64;
            for i in 0..200_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
            counted.fetch_add(b.num_rows(), Ordering::SeqCst);
            Ok::<_, SluiceError>(b)
        })
        .expect("started");
    let mut rows = 0;
    for chunk in stream {
        rows += chunk.expect("ok").batch.num_rows();
    }
    assert_eq!(rows, 40 * 1024);
    // Tracked share of 8 MB is 6 MB: 6 one-MiB batches, plus one read when nothing else
    // could move, plus the one a chunk is being cut from.
    let held = most_ahead.load(Ordering::SeqCst);
    assert!(
        held <= 8,
        "the engine held {held} one-MiB batches at once under an {budget_mb} MB budget"
    );
    assert!(
        p.stats().engine_peak_tracked_mb > 1.0,
        "the batches were not counted"
    );
}

#[test]
fn a_batch_larger_than_the_budget_is_counted_and_cut_into_chunks_that_fit() {
    let p = StreamingDataPipeline::builder()
        .chunk_size(100_000)
        .max_memory_mb(8.0)
        .num_workers(2)
        .build()
        .expect("valid");
    // One 20 MiB batch from an iterator: the engine holds it all until it is cut.
    let wide: Vec<RecordBatch> = wide_batches(20, Arc::new(AtomicUsize::new(0)))
        .map(|b| b.expect("ok"))
        .collect();
    let big = arrow::compute::concat_batches(&wide[0].schema(), &wide).expect("concat");
    let schema = big.schema();
    let source = IterSource::new(schema, std::iter::once(Ok::<_, BoxError>(big)));
    let chunks: Vec<ProcessedChunk> = p
        .process(source, |b: RecordBatch| Ok::<_, SluiceError>(b))
        .expect("started")
        .collect::<Result<_, _>>()
        .expect("ok");
    assert_eq!(all_ids(&chunks), (0..20 * 1024).collect::<Vec<i64>>());
    let stats = p.stats();
    assert!(
        stats.engine_peak_tracked_mb >= 19.0,
        "the 20 MiB batch the engine held was not counted (peak {:.1} MB tracked)",
        stats.engine_peak_tracked_mb
    );
    // Each chunk cut from it fits its share of the 6 MB tracked budget.
    let largest = chunks.iter().map(|c| c.batch.num_rows()).max().unwrap_or(0);
    assert!(largest * 1032 <= 6 << 20, "a chunk of {largest} rows");
}

#[test]
fn a_later_run_weighs_its_own_rows() {
    let p = StreamingDataPipeline::builder()
        .chunk_size(100_000)
        .max_memory_mb(4.0)
        .num_workers(2)
        .build()
        .expect("valid");
    let narrow = batch(0, 200_000);
    let narrow = narrow.project(&[0]).expect("id column");
    let rows: usize = p
        .process(MemorySource::from_batch(narrow), |b: RecordBatch| {
            Ok::<_, SluiceError>(b)
        })
        .expect("started")
        .map(|c| c.expect("ok").batch.num_rows())
        .sum();
    assert_eq!(rows, 200_000);
    let before = p.controller().overshoot_events();
    let made = Arc::new(AtomicUsize::new(0));
    let wide: Vec<RecordBatch> = wide_batches(4, made).map(|b| b.expect("ok")).collect();
    let source = MemorySource::try_new(wide[0].schema(), wide).expect("source");
    let rows: usize = p
        .process(source, |b: RecordBatch| Ok::<_, SluiceError>(b))
        .expect("started")
        .map(|c| c.expect("ok").batch.num_rows())
        .sum();
    assert_eq!(rows, 4 * 1024);
    assert_eq!(
        p.controller().overshoot_events(),
        before,
        "the wide run's first chunks were sized by the narrow run's row weight"
    );
}

#[test]
fn a_fixed_chunk_larger_than_the_budget_is_an_error() {
    let p = StreamingDataPipeline::builder()
        .chunk_size(4096)
        .adaptive_batching(false)
        .max_memory_mb(2.0)
        .build()
        .expect("valid");
    let made = Arc::new(AtomicUsize::new(0));
    let wide: Vec<RecordBatch> = wide_batches(8, made).map(|b| b.expect("ok")).collect();
    let source = MemorySource::try_new(wide[0].schema(), wide).expect("source");
    let err = p
        .process(source, |b: RecordBatch| Ok::<_, SluiceError>(b))
        .expect("started")
        .collect::<Result<Vec<_>, _>>()
        .expect_err("4096 rows of 1 KiB cannot fit 2 MB");
    match &err {
        SluiceError::InvalidSetting { setting, reason } => {
            assert_eq!(*setting, "chunk_size");
            assert!(reason.contains("4096 rows"), "{reason}");
        }
        other => panic!("expected a chunk_size error, got {other}"),
    }
}

#[test]
fn two_runs_read_side_by_side_never_wait_for_each_other() {
    within_a_minute(|| {
        let p = Arc::new(
            StreamingDataPipeline::builder()
                .chunk_size(10)
                .adaptive_batching(false)
                .max_queue_size(2)
                .num_workers(2)
                .build()
                .expect("valid"),
        );
        let a = p
            .process(
                MemorySource::from_batch(batch(0, 1000)),
                |b: RecordBatch| Ok::<_, SluiceError>(b),
            )
            .expect("run a");
        // Run a fills its queue (its chunks wait for a consumer) before run b starts.
        while p.controller().queued_chunks() < 2 {
            std::thread::yield_now();
        }
        let b = p
            .process(
                MemorySource::from_batch(batch(5000, 1000)),
                |b: RecordBatch| Ok::<_, SluiceError>(b),
            )
            .expect("run b");
        let mut a_ids = Vec::new();
        let mut b_ids = Vec::new();
        // b first: its reader must move although a's chunks hold the pipeline's slots.
        for (cb, ca) in b.zip(a) {
            b_ids.extend(ids_of(&cb.expect("b ok").batch));
            a_ids.extend(ids_of(&ca.expect("a ok").batch));
        }
        assert_eq!(a_ids, (0..1000).collect::<Vec<i64>>());
        assert_eq!(b_ids, (5000..6000).collect::<Vec<i64>>());
    });
}

#[test]
fn dead_letters_name_the_rows_of_the_whole_input_in_a_resumed_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let letters = dir.path().join("dead");
    let p = StreamingDataPipeline::builder()
        .chunk_size(100)
        .adaptive_batching(false)
        .error_policy(ErrorPolicy::DeadLetter(letters.clone()))
        .build()
        .expect("valid");
    let chunks: Vec<ProcessedChunk> = p
        .process(
            SkipRows::new(MemorySource::from_batch(batch(0, 1000)), 500),
            |b: RecordBatch| {
                if ids_of(&b).contains(&777) {
                    Err("bad row 777".into())
                } else {
                    Ok::<_, BoxError>(b)
                }
            },
        )
        .expect("started")
        .collect::<Result<_, _>>()
        .expect("dead letters do not fail the run");
    let ids = all_ids(&chunks);
    assert_eq!(ids.len(), 400);
    assert!(!ids.contains(&777));
    let names = files_in(&letters);
    // The letter is named by the input rows it holds (700..800), not by a chunk number of
    // this run that a later run would reuse.
    assert!(
        names
            .iter()
            .any(|n| n.contains("700") && n.ends_with(".arrow")),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("chunk-000002")),
        "{names:?}"
    );
}
