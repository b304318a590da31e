//! Stop mid-run, then resume, against the model: a run into an output folder is stopped
//! after k chunks were consumed; a second run skips the input rows the manifest's parts
//! cover (`SkipRows`) and continues the folder. The folder then holds exactly the model's
//! output, whatever the source, sink format, part size, policy and point of the stop.

mod common;

use arrow::record_batch::RecordBatch;
use proptest::prelude::*;
use sluice::source::SkipRows;
use sluice::{
    Manifest, OutputFormat, OutputOptions, ProcessedChunk, RunStatus, SluiceError,
    StreamingDataPipeline,
};

use common::model_kit::*;
use common::*;

fn format_strategy() -> impl Strategy<Value = OutputFormat> {
    prop_oneof![
        Just(OutputFormat::Parquet),
        Just(OutputFormat::Csv),
        Just(OutputFormat::Ipc)
    ]
}

/// How the first run is stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// The consumer drops the stream.
    Drop,
    /// `StreamingDataPipeline::stop()`, then the stream is read to its end.
    Pipeline,
}

struct Setup {
    chunk: usize,
    workers: usize,
    queue: usize,
    budget_kb: u64,
    policy: Policy,
    func: Func,
}

impl Setup {
    fn pipeline(&self, dead: &std::path::Path) -> StreamingDataPipeline {
        StreamingDataPipeline::builder()
            .chunk_size(self.chunk)
            .adaptive_batching(false)
            .num_workers(self.workers)
            .max_queue_size(self.queue)
            .max_memory_bytes(self.budget_kb * 1024)
            .error_policy(self.policy.error_policy(dead))
            .build()
            .expect("valid settings")
    }
}

/// Runs, stops after `k` chunks, resumes; returns the input, the chunks of each run and
/// the model's output (the first run's chunks before the resume point, then the model of
/// the rest started at that point, as the resumed run chunks it).
#[allow(clippy::too_many_arguments)]
fn stop_and_resume(
    dir: &std::path::Path,
    input: &Input,
    setup: &Setup,
    poison: &[i64],
    format: OutputFormat,
    rows_per_part: u64,
    k: usize,
    stop: Stop,
) -> Result<(), TestCaseError> {
    let all = input.all_rows();
    let rows = all.num_rows() as u64;
    let out = dir.join("out");
    let dead = dir.join("dead");
    let options = || {
        OutputOptions::new(&out)
            .format(format)
            .rows_per_part(rows_per_part)
    };
    let full = model(&all, 0, setup.chunk, poison, setup.policy, setup.func);

    // First run: consume k chunks, then stop.
    let first = setup.pipeline(&dead);
    let mut stream = first
        .process_to(
            input.open().expect("source"),
            failing_fn(setup.func, poison.to_vec()),
            options(),
        )
        .expect("started");
    let mut got: Vec<ProcessedChunk> = Vec::new();
    for _ in 0..k {
        match stream.next() {
            Some(c) => got.push(c.expect("no failure before the stop")),
            None => break,
        }
    }
    match stop {
        Stop::Drop => drop(stream),
        Stop::Pipeline => {
            first.stop();
            for c in stream {
                match c {
                    Ok(c) => got.push(c),
                    // A stopped run may say so at its end.
                    Err(SluiceError::Stopped) => break,
                    Err(e) => return Err(TestCaseError::fail(format!("after the stop: {e}"))),
                }
            }
        }
    }
    // What came out is a prefix of the model's output.
    prop_assert!(got.len() <= full.delivered.len());
    for (g, e) in got.iter().zip(&full.delivered) {
        prop_assert_eq!(&g.input_rows, &e.rows);
        prop_assert_eq!(
            row_keys(&g.batch, g.passed_through),
            row_keys(&e.batch, e.passed_through)
        );
    }
    let strays = stray_files(&out);
    prop_assert!(
        strays.is_empty(),
        "files outside the manifest: {:?}",
        strays
    );
    let manifest = Manifest::read_from(&out).expect("manifest");
    let skip = manifest.parts.last().map_or(0, |p| p.input_row_end);
    // The resume point is a chunk boundary of the first run.
    prop_assert!(
        skip == 0 || skip == rows || skip.is_multiple_of(setup.chunk as u64),
        "resume point {} is not a chunk boundary",
        skip
    );

    if manifest.status != RunStatus::Complete {
        prop_assert_eq!(manifest.status, RunStatus::Stopped);
        // Second run: skip what the parts cover, continue the folder.
        let second = setup.pipeline(&dead);
        let source = SkipRows::new(input.open().expect("source"), skip);
        let resumed = drain(
            second
                .process_to(
                    source,
                    failing_fn(setup.func, poison.to_vec()),
                    options().resume(manifest.parts.clone(), skip),
                )
                .expect("resumed"),
            second.controller(),
        );
        prop_assert!(resumed.error.is_none(), "{:?}", resumed.error);
        let rest = all.slice(skip as usize, (rows - skip) as usize);
        let expected_rest = model(&rest, skip, setup.chunk, poison, setup.policy, setup.func);
        // Rows of the resumed run are numbered from the resume point or from the input's
        // start; either way, consistently with the ids (the input row numbers).
        let offsets: Vec<u64> = resumed
            .chunks
            .iter()
            .filter_map(|c| {
                ids_of(&c.batch)
                    .first()
                    .map(|&id| (id as u64).wrapping_sub(c.input_rows.start))
            })
            .collect();
        prop_assert!(
            offsets.iter().all(|&o| o == offsets[0])
                && offsets.first().is_none_or(|&o| o == 0 || o == skip),
            "resumed chunk rows vs ids: offsets {:?}, skip {}",
            offsets,
            skip
        );
        let got_rest: Vec<RecordBatch> = resumed.chunks.iter().map(|c| c.batch.clone()).collect();
        let want_rest: Vec<RecordBatch> = expected_rest
            .delivered
            .iter()
            .map(|c| c.batch.clone())
            .collect();
        prop_assert_eq!(
            plain_keys(&got_rest),
            plain_keys(&want_rest),
            "resumed run's chunks"
        );
    }

    // The folder holds the model's output: the first run's chunks before the resume point,
    // then the rest as the resumed run chunks it.
    let manifest = Manifest::read_from(&out).expect("manifest");
    prop_assert_eq!(manifest.status, RunStatus::Complete);
    let strays = stray_files(&out);
    prop_assert!(
        strays.is_empty(),
        "files outside the manifest: {:?}",
        strays
    );
    let rest = all.slice(skip as usize, (rows - skip) as usize);
    let expected_rest = model(&rest, skip, setup.chunk, poison, setup.policy, setup.func);
    let mut want: Vec<RecordBatch> = full
        .delivered
        .iter()
        .filter(|c| c.rows.end <= skip)
        .map(|c| c.batch.clone())
        .collect();
    want.extend(expected_rest.delivered.iter().map(|c| c.batch.clone()));
    let parts = read_parts_any(&out, &part_schemas(setup.func));
    prop_assert_eq!(
        plain_keys(&parts),
        plain_keys(&want),
        "the folder after the resume"
    );
    let mut end = 0;
    for p in &manifest.parts {
        prop_assert!(p.input_row_start >= end, "{:?} overlaps the part before", p);
        end = p.input_row_end;
    }
    prop_assert!(end <= rows);
    if setup.policy == Policy::DeadLetter {
        // Output + dead letters = every input row exactly once.
        let mut failed: Vec<_> = full
            .failed
            .iter()
            .filter(|(r, _)| r.end <= skip)
            .cloned()
            .collect();
        failed.extend(expected_rest.failed.iter().cloned());
        check_dead_letters(&dead, &failed)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Stop after k chunks, resume with the input skipping what the manifest's parts cover:
    /// the folder holds exactly the model's output.
    #[test]
    fn stop_then_resume_gives_the_model_output(
        sizes in prop::collection::vec(0usize..300, 1..5),
        kind in kind_strategy(),
        row_group_rows in 1usize..300,
        flush in prop::collection::vec(any::<bool>(), 5),
        chunk in 1usize..120,
        workers in 1usize..4,
        queue in 1usize..6,
        budget_kb in 16u64..2048,
        poison in prop::collection::vec(0i64..1200, 0..3),
        pass_through in any::<bool>(),
        func in func_strategy(),
        format in format_strategy(),
        rows_per_part in 1u64..400,
        k in 0usize..12,
        drop_stream in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = Input::write(kind, dir.path(), input_batches(&sizes), row_group_rows, &flush);
        let setup = Setup {
            chunk,
            workers,
            queue,
            budget_kb,
            policy: if pass_through { Policy::PassThrough } else { Policy::Skip },
            func,
        };
        let stop = if drop_stream { Stop::Drop } else { Stop::Pipeline };
        stop_and_resume(dir.path(), &input, &setup, &poison, format, rows_per_part, k, stop)?;
    }

    /// The same under the dead-letter policy, into one dead-letter folder for both runs:
    /// output + dead letters hold every input row exactly once (none overwritten by the
    /// resumed run, none written twice).
    #[test]
    fn stop_then_resume_with_dead_letters_loses_and_repeats_nothing(
        sizes in prop::collection::vec(0usize..300, 1..5),
        kind in kind_strategy(),
        chunk in 1usize..120,
        workers in 1usize..4,
        queue in 1usize..6,
        poison in prop::collection::vec(0i64..1200, 1..4),
        format in format_strategy(),
        rows_per_part in 1u64..400,
        k in 0usize..12,
        drop_stream in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = Input::write(kind, dir.path(), input_batches(&sizes), 100, &[]);
        let setup = Setup {
            chunk,
            workers,
            queue,
            budget_kb: 1024,
            policy: Policy::DeadLetter,
            func: Func::Transform,
        };
        let stop = if drop_stream { Stop::Drop } else { Stop::Pipeline };
        stop_and_resume(dir.path(), &input, &setup, &poison, format, rows_per_part, k, stop)?;
    }
}
