//! The model test over files: inputs written as CSV (quoted newlines), Parquet (random
//! row groups), NDJSON and Arrow IPC file and stream, read by the real file sources
//! (decoded on the workers), optionally written to part files that are read back.

mod common;

use proptest::prelude::*;
use sluice::{OutputFormat, OutputOptions, RunStatus, StreamingDataPipeline};

use common::model_kit::*;

fn format_strategy() -> impl Strategy<Value = OutputFormat> {
    prop_oneof![
        Just(OutputFormat::Parquet),
        Just(OutputFormat::Csv),
        Just(OutputFormat::Ipc)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any file source, fixed or adaptive chunks, any policy, with or without part files:
    /// the chunks are the model's (fixed) or hold exactly the transformed input (adaptive),
    /// and the part files hold exactly the delivered rows, in delivery order, with nothing
    /// in the folder the manifest does not list.
    #[test]
    fn file_sources_and_sinks_match_the_model(
        sizes in prop::collection::vec(0usize..300, 1..5),
        kind in kind_strategy(),
        row_group_rows in 1usize..300,
        flush in prop::collection::vec(any::<bool>(), 5),
        chunk in 1usize..400,
        adaptive in any::<bool>(),
        workers in 1usize..4,
        queue in 1usize..6,
        // From 64 KB: a fixed chunk of up to 399 rows (~52 bytes each) always fits the
        // engine's share; a heavier one is refused by design (contract.rs), which CI drew
        // once at 16 KB.
        budget_kb in 64u64..4096,
        ordered in any::<bool>(),
        poison in prop::collection::vec(0i64..1200, 0..3),
        policy in policy_strategy(),
        func in func_strategy(),
        sink in prop::option::of((format_strategy(), 1u64..600)),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = Input::write(kind, dir.path(), input_batches(&sizes), row_group_rows, &flush);
        let all = input.all_rows();
        let rows = all.num_rows() as u64;
        // Adaptive chunk boundaries are the engine's choice: no poison, compare rows only.
        let poison = if adaptive { Vec::new() } else { poison };
        let dead = dir.path().join("dead");
        let out = dir.path().join("out");
        let pipeline = StreamingDataPipeline::builder()
            .chunk_size(chunk)
            .adaptive_batching(adaptive)
            .max_chunk_rows(chunk.max(1000))
            .num_workers(workers)
            .max_queue_size(queue)
            .max_memory_bytes(budget_kb * 1024)
            .ordered(ordered)
            .error_policy(policy.error_policy(&dead))
            .build()
            .expect("valid settings");
        let source = input.open().expect("source opens");
        let function = failing_fn(func, poison.clone());
        let stream = match sink {
            Some((format, rows_per_part)) => pipeline.process_to(
                source,
                function,
                OutputOptions::new(&out).format(format).rows_per_part(rows_per_part),
            ),
            None => pipeline.process(source, function),
        }
        .expect("started");
        let run = drain(stream, pipeline.controller());
        prop_assert!(run.max_queued <= queue, "{} chunks queued, max {}", run.max_queued, queue);

        if adaptive {
            prop_assert!(run.error.is_none(), "{:?}", run.error);
            let whole = apply(func, &all);
            let got: Vec<_> = run.chunks.iter().map(|c| c.batch.clone()).collect();
            if ordered {
                prop_assert_eq!(plain_keys(&got), plain_keys(&[whole]));
                let mut next = 0;
                for c in &run.chunks {
                    prop_assert_eq!(c.input_rows.start, next);
                    next = c.input_rows.end;
                }
                prop_assert_eq!(next, rows);
            } else {
                prop_assert_eq!(sorted(plain_keys(&got)), sorted(plain_keys(&[whole])));
            }
        } else {
            let expected = model(&all, 0, chunk, &poison, policy, func);
            check_run(&run, &all, chunk, &poison, func, &expected, ordered)?;
            if expected.fatal.is_none() && policy == Policy::DeadLetter {
                check_dead_letters(&dead, &expected.failed)?;
            }
        }

        if sink.is_some() {
            let strays = stray_files(&out);
            prop_assert!(strays.is_empty(), "files outside the manifest: {:?}", strays);
            let manifest = sluice::Manifest::read_from(&out).expect("manifest");
            let parts = plain_keys(&read_parts_any(&out, &part_schemas(func)));
            let delivered: Vec<_> = run.chunks.iter().map(|c| c.batch.clone()).collect();
            let delivered = plain_keys(&delivered);
            if run.error.is_none() {
                prop_assert_eq!(manifest.status, RunStatus::Complete);
                prop_assert_eq!(&parts, &delivered, "part files hold the delivered rows");
            } else {
                prop_assert_eq!(manifest.status, RunStatus::Failed);
                prop_assert!(
                    delivered.starts_with(&parts),
                    "a failed run's parts hold {} rows that are not a prefix of the {} delivered",
                    parts.len(), delivered.len()
                );
            }
            if ordered {
                // Parts follow the input: increasing, non-overlapping ranges holding their ids.
                let mut end = 0;
                for p in &manifest.parts {
                    prop_assert!(p.input_row_start >= end, "{:?} overlaps", p);
                    prop_assert!(p.input_row_end >= p.input_row_start + p.rows);
                    end = p.input_row_end;
                }
                prop_assert!(end <= rows);
            }
        }
        prop_assert_eq!(pipeline.controller().used_bytes(), 0, "every reservation returned");
    }
    /// A CSV file larger than one read block (64 KiB) whose records hold quoted newlines:
    /// the blocks the workers decode must be cut between records, never inside a field.
    #[test]
    fn csv_files_of_several_blocks_keep_every_record(
        rows in 1500usize..4000,
        chunk in 1usize..3000,
        workers in 1usize..4,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = Input::write(Kind::Csv, dir.path(), vec![rich_batch(0, rows)], 1, &[]);
        let bytes = std::fs::metadata(input.path.as_ref().expect("a file")).expect("size").len();
        prop_assert!(bytes > 64 << 10, "only {} bytes: one block", bytes);
        let pipeline = StreamingDataPipeline::builder()
            .chunk_size(chunk)
            .num_workers(workers)
            .max_memory_mb(4.0)
            .build()
            .expect("valid settings");
        let run = drain(
            pipeline.process(input.open().expect("source"), failing_fn(Func::Transform, Vec::new())).expect("started"),
            pipeline.controller(),
        );
        prop_assert!(run.error.is_none(), "{:?}", run.error);
        let got: Vec<_> = run.chunks.iter().map(|c| c.batch.clone()).collect();
        prop_assert_eq!(plain_keys(&got), plain_keys(&[apply(Func::Transform, &input.all_rows())]));
    }
}
