//! The consumer side of a run: an iterator of processed chunks, in input order (a reorder
//! buffer keyed by sequence number) or as completed. Chunks leave the memory budget when
//! they are handed to the caller; with an output folder each chunk is written first.

use std::collections::BTreeMap;
use std::sync::Arc;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::chunk::ProcessedChunk;
use crate::engine::{Outcome, RunThreads, SetAside, Shared};
use crate::error::{Result, SluiceError};
use crate::sink::{DeadLetter, Manifest, PartSink, RunStatus};
use crate::stats::StreamingStats;

/// What a finished run leaves: its statistics and, with an output folder, the manifest.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub stats: StreamingStats,
    pub manifest: Option<Manifest>,
    /// Dead-letter files the run wrote (`dead_letter` policy), in the order handled.
    pub dead_letters: Vec<DeadLetter>,
}

/// Iterator of the processed chunks of one run (the seed's generator).
///
/// Dropping it before the end stops the run: workers finish or abandon their chunks, no
/// temporary file is left, and the manifest (if any) records what was written.
pub struct ChunkStream {
    shared: Arc<Shared>,
    outcomes: Receiver<Outcome>,
    threads: RunThreads,
    ordered: bool,
    reorder: BTreeMap<u64, Outcome>,
    handled: u64,
    next_seq: u64,
    total: Option<u64>,
    sink: Option<PartSink>,
    finished: bool,
    /// How the run ended, once it has.
    status: Option<RunStatus>,
    dead_letters: Vec<DeadLetter>,
}

impl ChunkStream {
    pub(crate) fn new(
        shared: Arc<Shared>,
        outcomes: Receiver<Outcome>,
        threads: RunThreads,
        sink: Option<PartSink>,
    ) -> Self {
        ChunkStream {
            ordered: shared.config.ordered,
            shared,
            outcomes,
            threads,
            reorder: BTreeMap::new(),
            handled: 0,
            next_seq: 0,
            total: None,
            sink,
            finished: false,
            status: None,
            dead_letters: Vec::new(),
        }
    }

    /// How the run ended (`None` while it goes on): `Stopped` when `stop()` ended it before
    /// its input did — the iterator then yields one `Err(SluiceError::Stopped)` last.
    pub fn status(&self) -> Option<RunStatus> {
        self.status
    }

    /// Dead-letter files written so far (failed chunks and rejects), as their chunks
    /// were handled: what the manifest should list.
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead_letters
    }

    /// Counts a chunk's rejects and keeps its dead letters.
    fn set_aside(&mut self, aside: SetAside) {
        if aside.rejected > 0 {
            self.shared.stats.rows_rejected(aside.rejected);
        }
        if let Some(sink) = self.sink.as_mut() {
            sink.record_dead_letters(&aside.letters);
        }
        self.dead_letters.extend(aside.letters);
    }

    /// Statistics so far (cumulative over the pipeline).
    pub fn stats(&self) -> StreamingStats {
        self.shared.stats.snapshot(&self.shared.controller)
    }

    /// The output folder's manifest so far, if the run writes one.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.sink.as_ref().map(|s| s.manifest())
    }

    /// Drains the run (writing every chunk if there is an output folder) and returns its
    /// summary, or the first error (`SluiceError::Stopped` if `stop()` ended it early; the
    /// manifest then says `stopped` and lists the parts committed).
    pub fn run_to_end(mut self) -> Result<RunSummary> {
        for chunk in self.by_ref() {
            chunk?;
        }
        Ok(self.summary())
    }

    /// The statistics so far and the manifest as last written.
    pub fn summary(&self) -> RunSummary {
        RunSummary {
            stats: self.stats(),
            manifest: self.sink.as_ref().map(|s| s.manifest().clone()),
            dead_letters: self.dead_letters.clone(),
        }
    }

    fn next_outcome(&mut self) -> Option<Outcome> {
        loop {
            if self.ordered {
                if let Some(o) = self.reorder.remove(&self.next_seq) {
                    return Some(o);
                }
            }
            if self.total.is_some_and(|t| self.handled >= t) {
                return None;
            }
            // A part with a commit interval is closed on time even while no chunk comes
            // (a quiet stream): its rows become output, and the hook acknowledges them.
            let received = match self.sink.as_ref().and_then(PartSink::commit_due) {
                Some(by) => match self.outcomes.recv_deadline(by) {
                    Err(RecvTimeoutError::Timeout) => {
                        if let Some(Err(error)) = self.sink.as_mut().map(PartSink::commit) {
                            return Some(Outcome::Fatal {
                                seq: self.next_seq,
                                error,
                            });
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => Err(crossbeam_channel::RecvError),
                    Ok(outcome) => Ok(outcome),
                },
                None => self.outcomes.recv(),
            };
            match received {
                Ok(Outcome::End { chunks }) => self.total = Some(chunks),
                Ok(Outcome::Trailing(aside)) => self.set_aside(aside),
                Ok(o) if self.ordered && o.seq() != self.next_seq => {
                    self.reorder.insert(o.seq(), o);
                }
                Ok(o) => return Some(o),
                Err(_) => {
                    // Every sender is gone without an end: stopped, or a thread died.
                    return if self.shared.control.is_stopped() {
                        None
                    } else {
                        Some(Outcome::Fatal {
                            seq: self.next_seq,
                            error: SluiceError::Source {
                                source_name: "engine".into(),
                                message: "the reader or a worker stopped unexpectedly".into(),
                            },
                        })
                    };
                }
            }
        }
    }

    fn finish(&mut self, status: RunStatus, error: Option<String>) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.status = Some(status);
        self.shared.control.stop();
        self.shared.controller.notify();
        self.threads.join();
        // Outcomes still queued hold reservations: release them before the final stats.
        self.reorder.clear();
        while self.outcomes.try_recv().is_ok() {}
        self.shared.stats.run_finished();
        let stats = self.shared.stats.snapshot(&self.shared.controller);
        match self.sink.as_mut() {
            Some(sink) => sink.finish(status, Some(stats), error),
            None => Ok(()),
        }
    }

    fn fail(&mut self, error: SluiceError) -> Option<Result<ProcessedChunk>> {
        let message = error.to_string();
        let _ = self.finish(RunStatus::Failed, Some(message));
        Some(Err(error))
    }
}

impl Iterator for ChunkStream {
    type Item = Result<ProcessedChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.finished {
                return None;
            }
            let Some(outcome) = self.next_outcome() else {
                // Every outcome handled: complete, even if a stop came after the last one.
                let complete = self.total.is_some_and(|t| self.handled >= t);
                if complete {
                    return match self.finish(RunStatus::Complete, None) {
                        Ok(()) => None,
                        Err(e) => Some(Err(e)),
                    };
                }
                // Stopped before the end: say so, so a stopped run never looks complete.
                return match self.finish(RunStatus::Stopped, None) {
                    Ok(()) => Some(Err(SluiceError::Stopped)),
                    Err(e) => Some(Err(e)),
                };
            };
            self.handled += 1;
            self.next_seq = self.next_seq.max(outcome.seq() + 1);
            match outcome {
                Outcome::Done {
                    seq,
                    rows,
                    batch,
                    encoded,
                    reservation,
                    latency,
                    passed_through,
                    aside,
                } => {
                    self.set_aside(aside);
                    let n = batch.num_rows() as u64;
                    if passed_through {
                        self.shared.stats.chunk_failed(rows.end - rows.start, true);
                    }
                    self.shared.stats.chunk_delivered(n, latency);
                    if let Some(sink) = self.sink.as_mut() {
                        let input_rows = (rows.start, rows.end);
                        let written = match encoded {
                            Some(group) => sink.write_encoded(group, input_rows),
                            None => sink.write(&batch, input_rows),
                        };
                        if let Err(e) = written {
                            sink.abandon_open_part();
                            return self.fail(e);
                        }
                    }
                    // Handed over: from here the caller's memory, not the engine's.
                    drop(reservation);
                    return Some(Ok(ProcessedChunk {
                        seq,
                        input_rows: rows,
                        batch,
                        passed_through,
                    }));
                }
                Outcome::Dropped { rows, aside, .. } => {
                    self.set_aside(aside);
                    self.shared.stats.chunk_failed(rows.end - rows.start, false);
                    if let Some(sink) = self.sink.as_mut() {
                        sink.skip_input((rows.start, rows.end));
                    }
                }
                Outcome::Fatal { error, .. } => {
                    if matches!(error, SluiceError::ChunkFailed { .. }) {
                        if let SluiceError::ChunkFailed {
                            first_row, end_row, ..
                        } = &error
                        {
                            self.shared.stats.chunk_failed(end_row - first_row, false);
                        }
                    }
                    return self.fail(error);
                }
                Outcome::Trailing(aside) => self.set_aside(aside),
                Outcome::Abandoned { .. } => {
                    // The run was stopped while this chunk's call failed: end here, so no
                    // later chunk comes out past the gap (resume redoes it).
                    return match self.finish(RunStatus::Stopped, None) {
                        Ok(()) => None,
                        Err(e) => Some(Err(e)),
                    };
                }
                Outcome::End { .. } => {}
            }
        }
    }
}

impl Drop for ChunkStream {
    fn drop(&mut self) {
        let _ = self.finish(RunStatus::Stopped, None);
    }
}
