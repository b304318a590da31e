//! Memory stays inside the budget (asserted from the engine's own accounting) when the
//! consumer is slow, waits are counted as backpressure events, and adaptive batching
//! shrinks chunks under a tight budget and grows them under a loose one.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Float64Array, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use sluice::source::{CsvSource, MemorySource};
use sluice::{PipelineBuilder, ProcessedChunk, SluiceError, StreamingDataPipeline};

use common::*;

/// Fixed chunks of 1000 rows, two workers.
fn thousand_row_chunks_on_two_workers() -> PipelineBuilder {
    StreamingDataPipeline::builder()
        .chunk_size(1000)
        .adaptive_batching(false)
        .num_workers(2)
}

/// Rows 0..rows through the identity function; every id comes out once, in order.
fn identity_run(pipeline: &StreamingDataPipeline, rows: usize) -> Vec<ProcessedChunk> {
    let chunks: Vec<_> = pipeline
        .process(
            MemorySource::from_batch(batch(0, rows)),
            |b: RecordBatch| Ok::<_, SluiceError>(b),
        )
        .expect("started")
        .collect::<Result<_, _>>()
        .expect("every chunk");
    assert_eq!(all_ids(&chunks), (0..rows as i64).collect::<Vec<_>>());
    chunks
}

#[test]
fn a_slow_consumer_never_pushes_tracked_bytes_over_the_budget() {
    let budget: u64 = 256 * 1024;
    let pipeline = StreamingDataPipeline::builder()
        .chunk_size(500)
        .num_workers(2)
        .max_memory_bytes(budget)
        .build()
        .expect("valid");
    let source = MemorySource::try_new(schema(), (0..40).map(|i| batch(i * 1000, 1000)).collect())
        .expect("source");
    let stream = pipeline
        .process(source, |b: RecordBatch| Ok::<_, SluiceError>(transform(&b)))
        .expect("started");
    let mut rows = 0;
    let mut max_seen = 0;
    for chunk in stream {
        rows += chunk.expect("ok").batch.num_rows();
        max_seen = max_seen.max(pipeline.controller().used_bytes());
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(rows, 40_000);
    let stats = pipeline.stats();
    assert!(
        pipeline.controller().peak_bytes() <= budget,
        "peak {} > budget {budget}",
        pipeline.controller().peak_bytes()
    );
    assert!(max_seen <= budget);
    assert_eq!(stats.budget_overshoots, 0);
    assert!(
        stats.backpressure_events > 0,
        "a slow consumer must hold the reader back"
    );
    assert!(stats.backpressure_wait_seconds > 0.0);
}

/// A function whose output weighs many times its input: until the first output is
/// weighed, the engine must not fill its queue on the guess that output = input; nor, in a
/// second run, on what the first run's function made of its input.
#[test]
fn a_function_that_multiplies_its_input_stays_inside_the_budget_from_the_first_chunk() {
    for after_a_run_of_another_function in [false, true] {
        let budget: u64 = 4 * 1024 * 1024;
        let pipeline = thousand_row_chunks_on_two_workers()
            .max_memory_bytes(budget)
            .build()
            .expect("valid");
        let ids: Vec<i64> = (0..100_000).collect();
        let input_schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let input = RecordBatch::try_new(
            input_schema.clone(),
            vec![Arc::new(Int64Array::from(ids)) as ArrayRef],
        )
        .expect("batch");
        if after_a_run_of_another_function {
            let source =
                MemorySource::try_new(input_schema.clone(), vec![input.clone()]).expect("source");
            let identity = |b: RecordBatch| Ok::<_, SluiceError>(b);
            let rows: usize = pipeline
                .process(source, identity)
                .expect("started")
                .map(|c| c.expect("ok").batch.num_rows())
                .sum();
            assert_eq!(rows, 100_000);
        }
        let source = MemorySource::try_new(input_schema, vec![input]).expect("source");
        // 40 float columns from one int column: the output is 40x the input (320 KB a chunk).
        let widen = |b: RecordBatch| {
            let column: ArrayRef = Arc::new(Float64Array::from(vec![1.0; b.num_rows()]));
            let fields: Vec<Field> = (0..40)
                .map(|i| Field::new(format!("f{i}"), DataType::Float64, false))
                .collect();
            RecordBatch::try_new(Arc::new(Schema::new(fields)), vec![column; 40])
        };
        let mut rows = 0;
        for chunk in pipeline.process(source, widen).expect("started") {
            rows += chunk.expect("ok").batch.num_rows();
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(rows, 100_000);
        let peak = pipeline.controller().peak_bytes();
        let tracked_budget = pipeline.controller().budget_bytes();
        assert!(
            peak >= 320_000,
            "the outputs were not accounted: peak {peak}"
        );
        assert!(
            peak <= tracked_budget,
            "peak {peak} > budget {tracked_budget}"
        );
        assert_eq!(
            pipeline.stats().budget_overshoots,
            0,
            "after a run of another function: {after_a_run_of_another_function}"
        );
    }
}

#[test]
fn a_slow_consumer_of_a_csv_file_keeps_read_ahead_inside_the_budget() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("big.csv");
    write_csv(
        &path,
        &(0..20).map(|i| batch(i * 5000, 5000)).collect::<Vec<_>>(),
    );
    let budget: u64 = 2 * 1024 * 1024;
    // Fixed chunks: 100 of them, so the consumer's sleeps (not the sizer) set the pace and
    // the reader is sure to run into the budget.
    let pipeline = thousand_row_chunks_on_two_workers()
        .max_memory_bytes(budget)
        .build()
        .expect("valid");
    let source = CsvSource::open_with(
        &path,
        sluice::source::CsvOptions::default().with_schema(schema()),
    )
    .expect("open");
    let mut ids = Vec::new();
    // (bytes read, bytes processed) after each chunk: what a progress bar would show.
    let mut progress = Vec::new();
    for chunk in pipeline
        .process(source, |b: RecordBatch| Ok::<_, SluiceError>(b))
        .expect("started")
    {
        ids.extend(ids_of(&chunk.expect("ok").batch));
        let stats = pipeline.stats();
        progress.push((stats.input_bytes_read, stats.input_bytes_processed));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(ids, (0..100_000).collect::<Vec<_>>());
    // Progress counts the bytes whose rows went through the function: never more than was
    // read, behind it while the reader runs ahead, and all of the file at the end.
    let file_bytes = std::fs::metadata(&path).expect("size").len();
    assert!(
        progress.iter().all(|(read, done)| done <= read),
        "{progress:?}"
    );
    assert!(
        progress.windows(2).all(|w| w[0].1 <= w[1].1),
        "{progress:?}"
    );
    assert!(
        progress.iter().any(|(read, done)| done < read),
        "the reader never ran ahead: {progress:?}"
    );
    let (first_read, first_done) = progress[0];
    assert!(
        first_done < file_bytes / 2,
        "half the file counted as done at the first chunk: {first_done} of {file_bytes} (read {first_read})"
    );
    let end = pipeline.stats();
    assert_eq!(end.input_bytes_read, file_bytes);
    assert!(
        end.input_bytes_processed.abs_diff(file_bytes) <= 100,
        "{} of {file_bytes}",
        end.input_bytes_processed
    );
    assert!(
        pipeline.controller().peak_bytes() <= budget,
        "peak {}",
        pipeline.controller().peak_bytes()
    );
    assert!(pipeline.stats().backpressure_events > 0);
}

#[test]
fn adaptive_batching_shrinks_under_a_tight_budget() {
    let pipeline = StreamingDataPipeline::builder()
        .chunk_size(20_000)
        .min_chunk_rows(10)
        .num_workers(2)
        .max_memory_bytes(200 * 1024)
        .build()
        .expect("valid");
    let chunks = identity_run(&pipeline, 100_000);
    let last = chunks.last().expect("chunks").batch.num_rows();
    let typical = chunks[chunks.len() / 2].batch.num_rows();
    assert!(
        typical < 20_000 / 4,
        "chunks should shrink well below 20000 rows, got {typical} (last {last})"
    );
    let history = pipeline.stats().chunk_size_history;
    assert!(
        history.len() > 1 && history.last().expect("one").rows < 20_000,
        "{history:?}"
    );
}

#[test]
fn adaptive_batching_grows_under_a_loose_budget() {
    let pipeline = StreamingDataPipeline::builder()
        .chunk_size(100)
        .max_chunk_rows(50_000)
        .num_workers(2)
        .max_memory_mb(512.0)
        .build()
        .expect("valid");
    let chunks = identity_run(&pipeline, 400_000);
    assert_eq!(
        chunks[0].batch.num_rows(),
        100,
        "the first chunk has the size asked for"
    );
    assert_eq!(
        chunks[1].batch.num_rows(),
        125,
        "then each step grows by a quarter"
    );
    let biggest = chunks
        .iter()
        .map(|c| c.batch.num_rows())
        .max()
        .expect("chunks");
    assert_eq!(biggest, 50_000, "grows up to max_chunk_rows");
}

#[test]
fn fixed_chunks_are_exactly_chunk_size() {
    let pipeline = StreamingDataPipeline::builder()
        .chunk_size(777)
        .adaptive_batching(false)
        .max_memory_bytes(64 * 1024)
        .build()
        .expect("valid");
    let sizes: Vec<usize> = pipeline
        .process(
            MemorySource::from_batch(batch(0, 10_000)),
            |b: RecordBatch| Ok::<_, SluiceError>(b),
        )
        .expect("started")
        .map(|c| c.expect("ok").batch.num_rows())
        .collect();
    assert!(sizes[..sizes.len() - 1].iter().all(|&s| s == 777));
    assert_eq!(*sizes.last().expect("one"), 10_000 % 777);
}

#[test]
fn the_controller_reports_pressure() {
    let c = sluice::BackpressureController::new(2, 1.0, true);
    assert!(!c.should_apply_backpressure());
    let a = c.try_admit(900 * 1024).expect("fits");
    assert!(
        c.should_apply_backpressure(),
        "90% of the budget is pressure"
    );
    drop(a);
    let _x = c.try_admit(1).expect("fits");
    let _y = c.try_admit(1).expect("fits");
    assert!(c.should_apply_backpressure(), "a full queue is pressure");
    let before = c.current_batch_size();
    c.set_current_batch_size(before * 2);
    assert_eq!(c.current_batch_size(), before * 2);
}

/// Hooks whose `record_performance` always panics.
struct PanickingHooks;

impl sluice::ControllerHooks for PanickingHooks {
    fn record_performance(&self, _rows_per_second: f64) {
        panic!("a broken hook");
    }
}

#[test]
fn a_panicking_performance_hook_loses_no_chunk() {
    let pipeline = thousand_row_chunks_on_two_workers()
        .controller_hooks(Arc::new(PanickingHooks))
        .build()
        .expect("valid");
    identity_run(&pipeline, 10_000);
}
