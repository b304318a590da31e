//! The contract, checked against a plain sequential loop (the model) on random inputs:
//! every input row comes out exactly once, in order when ordered, with the values the
//! function gives, whatever the chunk sizes, workers, budgets and failing chunks.

mod common;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use proptest::prelude::*;
use sluice::source::MemorySource;
use sluice::{ErrorPolicy, SluiceError, StreamingDataPipeline};

use common::*;

/// A chunk fails when it holds one of these ids (content-based, so the model agrees).
fn poisoned(batch: &RecordBatch, poison: &[i64]) -> bool {
    ids_of(batch).iter().any(|id| poison.contains(id))
}

fn input_batches(sizes: &[usize]) -> Vec<RecordBatch> {
    let mut start = 0i64;
    sizes
        .iter()
        .map(|&n| {
            let b = batch(start, n);
            start += n as i64;
            b
        })
        .collect()
}

#[derive(Debug, PartialEq)]
enum ModelResult {
    Rows(Vec<RecordBatch>),
    Failed { rows_before: usize },
}

/// The model: a sequential loop over fixed chunks.
fn model(input: &RecordBatch, chunk: usize, poison: &[i64], policy: &ErrorPolicy) -> ModelResult {
    let mut out = Vec::new();
    let mut start = 0;
    while start < input.num_rows() {
        let n = chunk.min(input.num_rows() - start);
        let c = input.slice(start, n);
        start += n;
        if poisoned(&c, poison) {
            match policy {
                ErrorPolicy::Fail => {
                    return ModelResult::Failed {
                        rows_before: out.iter().map(|b: &RecordBatch| b.num_rows()).sum(),
                    }
                }
                ErrorPolicy::Skip | ErrorPolicy::DeadLetter(_) => continue,
                ErrorPolicy::PassThrough => out.push(c),
            }
        } else {
            out.push(transform(&c));
        }
    }
    ModelResult::Rows(out)
}

fn policy_strategy() -> impl Strategy<Value = u8> {
    0u8..4
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Fixed chunks (adaptive off), with failing chunks under every policy: the engine's
    /// output equals the model's, chunk by chunk when ordered, as a multiset when not.
    #[test]
    fn fixed_chunks_match_the_sequential_model(
        sizes in prop::collection::vec(0usize..400, 1..6),
        chunk in 1usize..300,
        workers in 1usize..5,
        budget_kb in 16u64..4096,
        ordered in any::<bool>(),
        poison in prop::collection::vec(0i64..1500, 0..3),
        policy in policy_strategy(),
    ) {
        let batches = input_batches(&sizes);
        let input = concat(&batches);
        let dead = tempfile::tempdir().expect("tempdir");
        let policy = match policy {
            0 => ErrorPolicy::Fail,
            1 => ErrorPolicy::Skip,
            2 => ErrorPolicy::PassThrough,
            _ => ErrorPolicy::DeadLetter(dead.path().to_path_buf()),
        };
        let pipeline = StreamingDataPipeline::builder()
            .chunk_size(chunk)
            .adaptive_batching(false)
            .num_workers(workers)
            .max_memory_bytes(budget_kb * 1024)
            .ordered(ordered)
            .error_policy(policy.clone())
            .build()
            .expect("valid settings");
        let poison_for_fn = Arc::new(poison.clone());
        let source = MemorySource::try_new(schema(), batches).expect("source");
        let stream = pipeline
            .process(source, move |b: RecordBatch| {
                if poisoned(&b, &poison_for_fn) {
                    if b.num_rows().is_multiple_of(2) {
                        panic!("poisoned chunk");
                    }
                    return Err(SluiceError::Stopped);
                }
                Ok(transform(&b))
            })
            .expect("started");
        let mut got = Vec::new();
        let mut error = None;
        for item in stream {
            match item {
                Ok(c) => got.push(c),
                Err(e) => { error = Some(e); break; }
            }
        }
        match model(&input, chunk, &poison, &policy) {
            ModelResult::Rows(expected) => {
                prop_assert!(error.is_none(), "unexpected error {:?}", error);
                if ordered {
                    prop_assert_eq!(got.len(), expected.len());
                    for (g, e) in got.iter().zip(&expected) {
                        assert_same_values(&g.batch, e);
                    }
                } else {
                    let mut g: Vec<i64> = all_ids(&got);
                    let mut e: Vec<i64> = expected.iter().flat_map(ids_of).collect();
                    g.sort_unstable();
                    e.sort_unstable();
                    prop_assert_eq!(g, e);
                }
                // Input ranges tile the input without gaps or overlaps.
                let mut ranges: Vec<_> = got.iter().map(|c| c.input_rows.clone()).collect();
                ranges.sort_by_key(|r| r.start);
                for r in &ranges { prop_assert!(r.end - r.start <= chunk as u64); }
                let stats = pipeline.stats();
                let delivered: u64 = got.iter().map(|c| c.batch.num_rows() as u64).sum();
                prop_assert_eq!(stats.total_rows_processed, delivered);
                prop_assert_eq!(stats.total_chunks_processed, got.len() as u64);
                let failed_expected = if let ErrorPolicy::Fail = policy { 0 } else {
                    (0..input.num_rows()).step_by(chunk)
                        .filter(|&s| poisoned(&input.slice(s, chunk.min(input.num_rows() - s)), &poison))
                        .count() as u64
                };
                prop_assert_eq!(stats.failed_chunks, failed_expected);
                if let ErrorPolicy::DeadLetter(dir) = &policy {
                    let files = std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok())
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".arrow")).count()).unwrap_or(0);
                    prop_assert_eq!(files as u64, failed_expected);
                }
            }
            ModelResult::Failed { rows_before } => {
                let err = error.expect("the run must fail");
                let is_chunk_failed = matches!(err, SluiceError::ChunkFailed { .. });
                prop_assert!(is_chunk_failed, "{}", err);
                if ordered {
                    let delivered: usize = got.iter().map(|c| c.batch.num_rows()).sum();
                    prop_assert_eq!(delivered, rows_before);
                }
            }
        }
        prop_assert_eq!(pipeline.controller().used_bytes(), 0, "every reservation returned");
    }

    /// Adaptive chunks: whatever sizes the engine picks, every row comes out exactly once,
    /// in order, transformed, and the chunk input ranges tile the input.
    #[test]
    fn adaptive_chunks_keep_every_row_once_in_order(
        sizes in prop::collection::vec(0usize..3000, 1..5),
        chunk in 1usize..2000,
        workers in 1usize..4,
        budget_kb in 8u64..2048,
    ) {
        let batches = input_batches(&sizes);
        let total: usize = sizes.iter().sum();
        let pipeline = StreamingDataPipeline::builder()
            .chunk_size(chunk)
            .max_chunk_rows(chunk.max(4096))
            .num_workers(workers)
            .max_memory_bytes(budget_kb * 1024)
            .build()
            .expect("valid settings");
        let source = MemorySource::try_new(schema(), batches).expect("source");
        let chunks: Vec<_> = pipeline
            .process(source, |b: RecordBatch| Ok::<_, SluiceError>(transform(&b)))
            .expect("started")
            .collect::<Result<_, _>>()
            .expect("no failure");
        prop_assert_eq!(all_ids(&chunks), (0..total as i64).collect::<Vec<_>>());
        let mut next = 0u64;
        for (i, c) in chunks.iter().enumerate() {
            prop_assert_eq!(c.seq, i as u64);
            prop_assert_eq!(c.input_rows.start, next);
            prop_assert_eq!(c.input_rows.end - c.input_rows.start, c.batch.num_rows() as u64);
            next = c.input_rows.end;
            let expected = transform(&batch(c.input_rows.start as i64, c.batch.num_rows()));
            assert_same_values(&c.batch, &expected);
        }
        prop_assert_eq!(pipeline.stats().total_rows_processed, total as u64);
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
