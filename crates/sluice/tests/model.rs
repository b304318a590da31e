//! The contract, checked against a plain sequential loop (the model) on random inputs:
//! every input row comes out exactly once, in order when ordered, with the values the
//! function gives, whatever the chunk sizes, workers, budgets, queue sizes and failing
//! chunks. Files, sinks and resume: model_sources.rs and model_resume.rs.

mod common;

use arrow::record_batch::RecordBatch;
use proptest::prelude::*;
use sluice::source::MemorySource;
use sluice::{SluiceError, StreamingDataPipeline};

use common::model_kit::*;
use common::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Fixed chunks (adaptive off), with failing chunks under every policy: the engine's
    /// output equals the model's, chunk by chunk when ordered, as a multiset of whole rows
    /// when not; under `fail` the delivered prefix is the model's; dead letters hold the
    /// failed chunks' inputs; the queue never holds more than `max_queue_size` chunks.
    #[test]
    fn fixed_chunks_match_the_sequential_model(
        sizes in prop::collection::vec(0usize..300, 1..6),
        chunk in 1usize..200,
        min_rows in 1usize..300,
        max_extra in 0usize..300,
        workers in 1usize..5,
        queue in 1usize..8,
        // From 32 KB: a fixed chunk (up to 199 rows over up to 5 batches) always fits the
        // engine's share; a fixed chunk heavier than that is refused (contract.rs).
        budget_kb in 32u64..2048,
        ordered in any::<bool>(),
        poison in prop::collection::vec(0i64..1200, 0..3),
        policy in policy_strategy(),
        func in func_strategy(),
    ) {
        let batches = input_batches(&sizes);
        let input = concat_all(&schema(), &batches);
        let dead = tempfile::tempdir().expect("tempdir");
        let pipeline = StreamingDataPipeline::builder()
            .chunk_size(chunk)
            .adaptive_batching(false)
            // Bounds of adaptive sizing: with adaptive batching off they must not matter.
            .min_chunk_rows(min_rows)
            .max_chunk_rows(min_rows + max_extra)
            .num_workers(workers)
            .max_queue_size(queue)
            .max_memory_bytes(budget_kb * 1024)
            .ordered(ordered)
            .error_policy(policy.error_policy(dead.path()))
            .build()
            .expect("valid settings");
        let source = MemorySource::try_new(schema(), batches).expect("source");
        let stream = pipeline
            .process(source, failing_fn(func, poison.clone()))
            .expect("started");
        let run = drain(stream, pipeline.controller());
        let expected = model(&input, 0, chunk, &poison, policy, func);
        prop_assert!(run.max_queued <= queue, "{} chunks queued, max {}", run.max_queued, queue);
        check_run(&run, &input, chunk, &poison, func, &expected, ordered)?;
        if let Some(fatal) = &expected.fatal {
            if ordered {
                let Some(SluiceError::ChunkFailed { chunk: seq, first_row, end_row, .. }) = &run.error
                else {
                    return Err(TestCaseError::fail(format!("expected ChunkFailed, got {:?}", run.error)));
                };
                prop_assert_eq!(*seq, expected.delivered.len() as u64);
                prop_assert_eq!(*first_row..*end_row, fatal.clone());
            }
        } else {
            let stats = pipeline.stats();
            let delivered: u64 = run.chunks.iter().map(|c| c.batch.num_rows() as u64).sum();
            prop_assert_eq!(stats.total_rows_processed, delivered);
            prop_assert_eq!(stats.total_chunks_processed, run.chunks.len() as u64);
            prop_assert_eq!(stats.failed_chunks, expected.failed.len() as u64);
            if policy == Policy::DeadLetter {
                check_dead_letters(dead.path(), &expected.failed)?;
            }
        }
        prop_assert_eq!(pipeline.controller().used_bytes(), 0, "every reservation returned");
    }

    /// Adaptive chunks: whatever sizes the engine picks, every row comes out exactly once,
    /// in order, transformed, and the chunk input ranges tile the input. Where the setup
    /// forces a change, the size really changes: a budget far too small for `chunk_size`
    /// rows shrinks the chunks; an ample budget with room above `chunk_size` grows them.
    #[test]
    fn adaptive_chunks_keep_every_row_once_in_order(
        sizes in prop::collection::vec(0usize..3000, 1..5),
        small in 1usize..500,
        large in 3000usize..6000,
        squeeze in any::<bool>(),
        workers in 1usize..4,
        queue in 1usize..8,
        budget_kb in 16u64..64,
        func in func_strategy(),
    ) {
        let (chunk, budget) = if squeeze {
            (large, budget_kb * 1024)
        } else {
            (small, 1u64 << 30)
        };
        let mut batches = input_batches(&sizes);
        let mut total: usize = sizes.iter().sum();
        if !squeeze && total <= 2 * chunk {
            // Room for a second chunk larger than the first.
            batches.push(rich_batch(total as i64, 2 * chunk + 1 - total));
            total = 2 * chunk + 1;
        }
        let pipeline = StreamingDataPipeline::builder()
            .chunk_size(chunk)
            .max_chunk_rows(4 * chunk + 4)
            .num_workers(workers)
            .max_queue_size(queue)
            .max_memory_bytes(budget)
            .build()
            .expect("valid settings");
        let source = MemorySource::try_new(schema(), batches).expect("source");
        let run = drain(
            pipeline.process(source, failing_fn(func, Vec::new())).expect("started"),
            pipeline.controller(),
        );
        prop_assert!(run.error.is_none(), "{:?}", run.error);
        let chunks = run.chunks;
        prop_assert_eq!(all_ids(&chunks), (0..total as i64).collect::<Vec<_>>());
        let mut next = 0u64;
        for (i, c) in chunks.iter().enumerate() {
            prop_assert_eq!(c.seq, i as u64);
            prop_assert_eq!(c.input_rows.start, next);
            prop_assert_eq!(c.input_rows.end - c.input_rows.start, c.batch.num_rows() as u64);
            next = c.input_rows.end;
            let expected = apply(func, &rich_batch(c.input_rows.start as i64, c.batch.num_rows()));
            prop_assert_eq!(row_keys(&c.batch, false), row_keys(&expected, false));
        }
        prop_assert_eq!(next, total as u64);
        prop_assert_eq!(pipeline.stats().total_rows_processed, total as u64);
        let history = pipeline.controller().chunk_size_history();
        if squeeze && total > 0 {
            prop_assert!(history.len() >= 2, "the size never changed: {:?}", history);
            prop_assert!(history[1].rows < chunk, "{:?}", history);
            let biggest = chunks.iter().map(|c| c.batch.num_rows()).max().unwrap_or(0);
            prop_assert!(biggest < chunk, "a chunk of {} rows in a {} byte budget", biggest, budget);
        }
        if !squeeze {
            prop_assert!(
                chunks.iter().any(|c| c.batch.num_rows() > chunk),
                "no chunk grew above {}: {:?}", chunk, history
            );
        }
        prop_assert!(run.max_queued <= queue);
        prop_assert_eq!(pipeline.controller().used_bytes(), 0, "every reservation returned");
    }
}

/// A hand-written case: one row per chunk on many workers, unordered.
#[test]
fn one_row_chunks_unordered_hold_every_row() {
    let pipeline = StreamingDataPipeline::builder()
        .chunk_size(1)
        .adaptive_batching(false)
        .num_workers(4)
        .ordered(false)
        .build()
        .expect("valid");
    let source = MemorySource::from_batch(batch(0, 500));
    let chunks: Vec<_> = pipeline
        .process(source, |b: RecordBatch| Ok::<_, SluiceError>(b))
        .expect("started")
        .collect::<Result<_, _>>()
        .expect("ok");
    let mut ids = all_ids(&chunks);
    ids.sort_unstable();
    assert_eq!(ids, (0..500).collect::<Vec<_>>());
    assert_eq!(chunks.len(), 500);
}
