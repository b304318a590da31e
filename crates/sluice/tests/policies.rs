//! Each error policy, with a function that returns an error and one that panics.

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use sluice::source::MemorySource;
use sluice::{ErrorPolicy, SluiceError, StreamingDataPipeline};

use common::*;

/// Fails on chunks 2 and 5 (of 10 chunks of 100 rows): an error and a panic.
fn flaky(b: RecordBatch) -> Result<RecordBatch, String> {
    let first = ids_of(&b)[0];
    match first {
        200 => Err("bad chunk".to_string()),
        500 => panic!("boom in chunk 5"),
        _ => Ok(transform(&b)),
    }
}

fn run(
    policy: ErrorPolicy,
) -> (
    StreamingDataPipeline,
    Vec<Result<sluice::ProcessedChunk, SluiceError>>,
) {
    let pipeline = StreamingDataPipeline::builder()
        .chunk_size(100)
        .adaptive_batching(false)
        .num_workers(3)
        .error_policy(policy)
        .build()
        .expect("valid");
    let results: Vec<_> = pipeline
        .process(MemorySource::from_batch(batch(0, 1000)), flaky)
        .expect("started")
        .collect();
    (pipeline, results)
}

#[test]
fn fail_stops_at_the_first_failed_chunk_and_names_it() {
    let (pipeline, results) = run(ErrorPolicy::Fail);
    assert_eq!(results.len(), 3, "two chunks then the error");
    assert!(results[0].is_ok() && results[1].is_ok());
    match &results[2] {
        Err(SluiceError::ChunkFailed {
            chunk,
            first_row,
            end_row,
            cause,
        }) => {
            assert_eq!((*chunk, *first_row, *end_row), (2, 200, 300));
            assert!(cause.contains("bad chunk"), "{cause}");
        }
        other => panic!("expected ChunkFailed, got {other:?}"),
    }
    assert_eq!(pipeline.controller().used_bytes(), 0);
}

#[test]
fn a_panic_is_caught_and_reported_like_an_error() {
    let pipeline = StreamingDataPipeline::builder()
        .chunk_size(100)
        .adaptive_batching(false)
        .build()
        .expect("valid");
    let results: Vec<_> = pipeline
        .process(MemorySource::from_batch(batch(300, 400)), flaky)
        .expect("started")
        .collect();
    let err = results.last().expect("some").as_ref().expect_err("fails");
    assert!(err.to_string().contains("boom in chunk 5"), "{err}");
    assert!(err.to_string().contains("panicked"), "{err}");
    assert_eq!(results.len(), 3);
}

#[test]
fn skip_drops_failed_chunks_and_counts_them() {
    let (pipeline, results) = run(ErrorPolicy::Skip);
    let chunks: Vec<_> = results.into_iter().map(|r| r.expect("no error")).collect();
    let ids = all_ids(&chunks);
    let expected: Vec<i64> = (0..1000)
        .filter(|i| !(200..300).contains(i) && !(500..600).contains(i))
        .collect();
    assert_eq!(ids, expected);
    let stats = pipeline.stats();
    assert_eq!(stats.failed_chunks, 2);
    assert_eq!(stats.failed_rows, 200);
    assert_eq!(stats.errors_encountered, 2);
    assert_eq!(stats.total_rows_processed, 800);
}

#[test]
fn pass_through_emits_the_input_chunk_unchanged() {
    let (pipeline, results) = run(ErrorPolicy::PassThrough);
    let chunks: Vec<_> = results.into_iter().map(|r| r.expect("no error")).collect();
    assert_eq!(chunks.len(), 10);
    assert_eq!(all_ids(&chunks), (0..1000).collect::<Vec<_>>());
    for c in &chunks {
        let failed = c.seq == 2 || c.seq == 5;
        assert_eq!(c.passed_through, failed);
        if failed {
            assert_same_values(&c.batch, &batch(c.input_rows.start as i64, 100));
        } else {
            assert_same_values(&c.batch, &transform(&batch(c.input_rows.start as i64, 100)));
        }
    }
    let stats = pipeline.stats();
    assert_eq!((stats.failed_chunks, stats.passed_through_chunks), (2, 2));
    assert_eq!(stats.total_rows_processed, 1000);
}

#[test]
fn dead_letter_writes_the_failed_input_so_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("tmp");
    let (pipeline, results) = run(ErrorPolicy::DeadLetter(dir.path().to_path_buf()));
    let chunks: Vec<_> = results.into_iter().map(|r| r.expect("no error")).collect();
    let mut ids = all_ids(&chunks);
    for seq in [2u64, 5] {
        // Named by the input rows the chunk holds, so runs of a resume chain never collide.
        let (start, end) = (seq * 100, seq * 100 + 100);
        let path = dir.path().join(format!("rows-{start:012}-{end:012}.arrow"));
        let reader = arrow::ipc::reader::FileReader::try_new(
            std::fs::File::open(&path).expect("dead letter"),
            None,
        )
        .expect("readable");
        for b in reader {
            let b = b.expect("batch");
            assert_same_values(&b, &batch(seq as i64 * 100, 100));
            ids.extend(ids_of(&b));
        }
        let note = std::fs::read_to_string(
            dir.path()
                .join(format!("rows-{start:012}-{end:012}.error.txt")),
        )
        .expect("note");
        assert!(
            note.contains(&format!("input rows {}..{}", seq * 100, seq * 100 + 100)),
            "{note}"
        );
    }
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..1000).collect::<Vec<_>>(),
        "output plus dead letters hold every row"
    );
    assert_eq!(pipeline.stats().failed_chunks, 2);
}

/// Calls held inside the function until the test opens the gate, so a stop lands at a
/// known point. Opens on drop too, so a failed assertion cannot leave a worker held (and
/// the run's threads unjoinable).
#[derive(Default)]
struct HeldCalls {
    state: Mutex<(usize, bool)>, // (calls that entered the function, gate open)
    changed: Condvar,
}

impl HeldCalls {
    fn hold(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 += 1;
        self.changed.notify_all();
        let _open = self.changed.wait_while(s, |s| !s.1);
    }

    fn open(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.changed.notify_all();
    }

    fn entered(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

struct OpenOnDrop(Arc<HeldCalls>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// Waits until `ready` holds, with a deadline so a hang fails the test instead of stalling.
fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn cleanup_is_idempotent_and_stops_a_run() {
    // Stopped with the worker inside chunk 1's call and the queue full behind it (chunks
    // 2..4): that call finishes and comes out; none of the queued chunks is called; the
    // stream ends and every reservation is back.
    const QUEUE: usize = 4;
    let held = Arc::new(HeldCalls::default());
    let pipeline = StreamingDataPipeline::builder()
        .chunk_size(10)
        .adaptive_batching(false)
        .num_workers(1)
        .max_queue_size(QUEUE)
        .build()
        .expect("valid");
    let calls = held.clone();
    let mut stream = pipeline
        .process(
            MemorySource::from_batch(batch(0, 100_000)),
            move |b: RecordBatch| {
                if ids_of(&b)[0] != 0 {
                    calls.hold();
                }
                Ok::<_, SluiceError>(b)
            },
        )
        .expect("started");
    let _open = OpenOnDrop(held.clone());
    let first = stream.next().expect("a chunk").expect("ok");
    assert_eq!(first.input_rows, 0..10);
    wait_until("chunk 1's call and a full queue", || {
        held.entered() == 1 && pipeline.controller().queued_chunks() == QUEUE
    });
    pipeline.cleanup();
    pipeline.cleanup();
    held.open();
    let mut rest: Vec<_> = stream.collect();
    // A stopped run says so last, so it never looks like a finished one.
    assert!(
        matches!(rest.pop(), Some(Err(SluiceError::Stopped))),
        "the stream must end with Stopped"
    );
    let rest: Vec<_> = rest
        .into_iter()
        .map(|c| c.expect("the call under way ends normally"))
        .map(|c| (c.seq, c.input_rows))
        .collect();
    assert_eq!(
        rest,
        vec![(1, 10..20)],
        "after the stop exactly the call under way comes out"
    );
    assert_eq!(held.entered(), 1, "no call started after the stop");
    assert_eq!(pipeline.stats().total_rows_processed, 20);
    assert_eq!(pipeline.controller().used_bytes(), 0);
    assert_eq!(pipeline.controller().queued_chunks(), 0);
}
