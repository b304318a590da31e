//! The worker threads. Workers run decodes and the user's function (catching panics), apply
//! the error policy, and send outcomes to the consumer ([`crate::ChunkStream`]), which
//! restores order. Malformed input records (rejects) come out of decoding with their part,
//! ride with the chunk holding the next good row, and are set aside by the worker that
//! processes it (written by [`crate::sink::dead_letter`] under `dead_letter`).

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use crossbeam_channel::{Receiver, Sender};

use super::{Decoded, Outcome, SetAside, Shared, Task};
use crate::backpressure::Reservation;
use crate::chunk::batch_memory;
use crate::config::ErrorPolicy;
use crate::error::{Result, SluiceError};
use crate::sink::dead_letter;
use crate::source::Reject;

pub(super) fn worker_loop(
    shared: &Shared,
    tasks: Receiver<Task>,
    decoded: Sender<Decoded>,
    outcomes: Sender<Outcome>,
) {
    for task in tasks {
        if shared.control.is_stopped() {
            // Dropping the task releases its reservation.
            continue;
        }
        match task {
            Task::Decode {
                index,
                decode,
                mut reservation,
                source_bytes,
            } => {
                let result = catch_unwind(AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
                    Err(SluiceError::Source {
                        source_name: "decoder".into(),
                        message: format!("panicked: {}", panic_message(&panic)),
                    })
                });
                if let Ok(part) = &result {
                    reservation.resize(part.batches.iter().map(batch_memory).sum());
                }
                let _ = decoded.send(Decoded {
                    index,
                    result,
                    reservation,
                    source_bytes,
                });
                shared.controller.notify();
            }
            Task::Process {
                seq,
                rows,
                batch,
                reservation,
                guessed,
                source_bytes,
                rejects,
            } => {
                // Counted out even if this thread unwinds: the reader may be waiting for
                // the last guessed chunk to be weighed.
                let _guessed = guessed.then(|| GuessedChunk(shared));
                let outcome = process_chunk(shared, seq, rows, batch, reservation);
                let outcome = with_rejects(shared, outcome, rejects);
                shared.stats.source_bytes_processed(source_bytes);
                let _ = outcomes.send(outcome);
            }
        }
    }
}

/// A chunk admitted on the 1x guess, in a worker's hands.
struct GuessedChunk<'a>(&'a Shared);

impl Drop for GuessedChunk<'_> {
    fn drop(&mut self) {
        self.0.guessed_in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.controller.notify();
    }
}

fn process_chunk(
    shared: &Shared,
    seq: u64,
    rows: Range<u64>,
    batch: RecordBatch,
    mut reservation: Reservation,
) -> Outcome {
    let input_bytes = batch_memory(&batch);
    let keep_input = matches!(
        shared.config.error_policy,
        ErrorPolicy::PassThrough | ErrorPolicy::DeadLetter(_)
    );
    let input = keep_input.then(|| batch.clone());
    let start = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| (shared.function)(batch)));
    let latency = start.elapsed();
    let cause = match result {
        Ok(Ok(output)) => {
            let output_bytes = batch_memory(&output);
            shared.controller.observe_output(input_bytes, output_bytes);
            reservation.resize(output_bytes);
            if let Some(hooks) = &shared.config.hooks {
                let secs = latency.as_secs_f64().max(1e-9);
                let rows_per_second = rows_len(&rows) as f64 / secs;
                // A hook that panics (a Python one at interpreter shutdown) must not take
                // the worker, and with it this chunk, down.
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    hooks.record_performance(rows_per_second)
                }));
            }
            let encoded = shared
                .encoder
                .as_ref()
                .and_then(|encoder| encoder.encode(&output, seq, &rows))
                .transpose();
            let encoded = match encoded {
                Ok(encoded) => encoded,
                Err(error) => return Outcome::Fatal { seq, error },
            };
            if let Some(group) = &encoded {
                // Held with the output until the consumer appends it.
                reservation.resize(output_bytes + group.bytes());
            }
            return Outcome::Done {
                seq,
                rows,
                batch: output,
                encoded,
                reservation,
                latency,
                passed_through: false,
                aside: SetAside::default(),
            };
        }
        Ok(Err(error)) => error.to_string(),
        Err(panic) => format!("panicked: {}", panic_message(&panic)),
    };
    if shared.control.is_stopped() {
        return Outcome::Abandoned { seq };
    }
    match &shared.config.error_policy {
        ErrorPolicy::Fail => Outcome::Fatal {
            seq,
            error: SluiceError::ChunkFailed {
                chunk: seq,
                first_row: rows.start,
                end_row: rows.end,
                cause,
            },
        },
        ErrorPolicy::Skip => Outcome::Dropped {
            seq,
            rows,
            aside: SetAside::default(),
        },
        ErrorPolicy::PassThrough => {
            let batch = input.expect("kept for pass-through");
            reservation.resize(batch_memory(&batch));
            Outcome::Done {
                seq,
                rows,
                batch,
                encoded: None,
                reservation,
                latency,
                passed_through: true,
                aside: SetAside::default(),
            }
        }
        ErrorPolicy::DeadLetter(dir) => {
            let batch = input.expect("kept for dead letter");
            match dead_letter::write_chunk(dir, seq, &rows, &batch, &cause) {
                Ok(letter) => Outcome::Dropped {
                    seq,
                    rows,
                    aside: SetAside {
                        rejected: 0,
                        letters: vec![letter],
                    },
                },
                Err(error) => Outcome::Fatal { seq, error },
            }
        }
    }
}

fn rows_len(rows: &Range<u64>) -> usize {
    (rows.end - rows.start) as usize
}

/// Sets aside the rejects that ride with a delivered or dropped chunk.
fn with_rejects(shared: &Shared, outcome: Outcome, rejects: Vec<Reject>) -> Outcome {
    if rejects.is_empty() {
        return outcome;
    }
    match outcome {
        Outcome::Done { ref rows, .. } | Outcome::Dropped { ref rows, .. } => {
            match set_aside(shared, &rows.clone(), rejects) {
                Ok(more) => attach(outcome, more),
                Err(error) => Outcome::Fatal {
                    seq: outcome.seq(),
                    error,
                },
            }
        }
        // The run ends here: the rejects of this chunk are redone by a resume.
        other => other,
    }
}

fn attach(mut outcome: Outcome, more: SetAside) -> Outcome {
    if let Outcome::Done { aside, .. } | Outcome::Dropped { aside, .. } = &mut outcome {
        aside.rejected += more.rejected;
        aside.letters.extend(more.letters);
    }
    outcome
}

/// Counts rejects and, under `dead_letter`, writes them, named by the input rows `rows`
/// they ride with. (Under `fail` the reader has already stopped the run at the first.)
pub(super) fn set_aside(
    shared: &Shared,
    rows: &Range<u64>,
    rejects: Vec<Reject>,
) -> Result<SetAside> {
    let mut aside = SetAside {
        rejected: rejects.len() as u64,
        letters: Vec::new(),
    };
    if let ErrorPolicy::DeadLetter(dir) = &shared.config.error_policy {
        aside
            .letters
            .push(dead_letter::write_rejects(dir, rows, &rejects)?);
    }
    Ok(aside)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with no message".to_string()
    }
}
