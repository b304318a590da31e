//! The reader (coordinator) thread. It pulls parts from the source, sends deferred decodes
//! to the workers, puts the decoded batches back in input order, cuts them into chunks of
//! the sizer's row count, and admits each chunk against the memory budget and the queue
//! before a worker may process it. It is the only thread that waits for admission; while it
//! waits, nothing new enters the engine (backpressure).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::worker::set_aside;
use super::{Decoded, Outcome, Shared, Task};
use crate::backpressure::{BackpressureController, Reservation};
use crate::chunk::{batch_memory, Chunker};
use crate::config::ErrorPolicy;
use crate::error::SluiceError;
use crate::sizer::{READ_AHEAD_FRACTION, THROUGHPUT_CHUNK_BYTES};
use crate::source::{DecodedPart, PartHint, Reject, Source, SourcePart};

/// Largest raw byte range one text part reads.
const MAX_PART_BYTES: usize = 8 << 20;
const MIN_PART_BYTES: usize = 64 << 10;

enum ReadAhead {
    Read,
    /// Memory is short: the reader waits (a backpressure event).
    HeldBack,
    NotNeeded,
}

pub(super) struct Reader<'a> {
    shared: &'a Shared,
    source: Box<dyn Source>,
    tasks: Sender<Task>,
    decoded: Receiver<Decoded>,
    outcomes: Sender<Outcome>,
    chunker: Chunker,
    /// Decoded parts that arrived ahead of their turn.
    pending: BTreeMap<u64, Decoded>,
    next_part: u64,
    next_to_chunk: u64,
    decodes_in_flight: usize,
    decode_bytes_in_flight: u64,
    /// Estimated bytes of each decode still running, by part index.
    decode_estimates: BTreeMap<u64, u64>,
    source_done: bool,
    seq: u64,
    /// Absolute input row of the next row to cut (a resumed run starts past its prefix).
    next_row: u64,
    /// Rows still to drop at the front of the decoded input (the committed prefix of a
    /// resumed run that whole-part skipping could not jump over).
    skip_remaining: u64,
    workers: usize,
}

type ReaderResult = std::result::Result<(), (u64, SluiceError)>;

impl<'a> Reader<'a> {
    pub(super) fn new(
        shared: &'a Shared,
        source: Box<dyn Source>,
        tasks: Sender<Task>,
        decoded: Receiver<Decoded>,
        outcomes: Sender<Outcome>,
    ) -> Self {
        Reader {
            chunker: Chunker::new(source.schema()),
            shared,
            source,
            tasks,
            decoded,
            outcomes,
            pending: BTreeMap::new(),
            next_part: 0,
            next_to_chunk: 0,
            decodes_in_flight: 0,
            decode_bytes_in_flight: 0,
            decode_estimates: BTreeMap::new(),
            source_done: false,
            seq: 0,
            next_row: 0,
            skip_remaining: 0,
            workers: shared.config.effective_workers(),
        }
    }

    fn controller(&self) -> &BackpressureController {
        &self.shared.controller
    }

    fn fail<T>(&self, error: SluiceError) -> std::result::Result<T, (u64, SluiceError)> {
        Err((self.seq, error))
    }

    /// A resumed run: jumps over whole parts of the committed prefix where the source can
    /// (no decoding), and leaves the rest of the prefix to be decoded and dropped.
    fn start_at_resume_row(&mut self) -> ReaderResult {
        self.next_row = self.source.resume_row();
        let committed = self.source.committed_rows_ahead();
        if committed == 0 {
            return Ok(());
        }
        let (skipped, bytes) = match self.source.skip_whole_parts(committed) {
            Ok(skipped) => skipped,
            Err(e) => return self.fail(e),
        };
        self.shared.stats.input_bytes(bytes);
        self.shared.stats.source_bytes_processed(bytes as f64);
        self.skip_remaining = committed - skipped.min(committed);
        Ok(())
    }

    fn queued(&self) -> usize {
        self.shared.queue.queued()
    }

    pub(super) fn run(&mut self) -> ReaderResult {
        self.start_at_resume_row()?;
        let mut target: Option<usize> = None;
        // Set while a chunk waits for admission, so one wait counts one event.
        let mut waiting_since: Option<Instant> = None;
        loop {
            // The generation is read before the stop flag: a stop (flag set, then a
            // notify) after this read changes the generation, so the wait below returns;
            // read after the check, a stop in between was missed and the wait never ended.
            let generation = self.controller().generation();
            if self.shared.control.is_stopped() {
                return Ok(());
            }
            self.collect_decoded();
            self.feed_chunker()?;

            let input_drained =
                self.source_done && self.decodes_in_flight == 0 && self.pending.is_empty();
            if target.is_none() && (self.chunker.rows() > 0 || input_drained) {
                target = Some(self.choose_rows());
            }
            // Until data arrives, read as if the chunk were of the current size.
            let rows = target.unwrap_or_else(|| self.controller().current_batch_size());
            let mut blocked = false;
            // A live source may ask for a short chunk once its rows waited long enough.
            let flush = self.source.flush_requested()
                && self.pending.is_empty()
                && self.decodes_in_flight == 0;
            if target.is_some()
                && (self.chunker.rows() >= rows
                    || ((input_drained || flush) && self.chunker.rows() > 0))
            {
                if self.awaiting_weighed_outputs() {
                    // Not backpressure: the guessed chunks are being processed and will wake
                    // us. No read-ahead either: that memory may be their outputs'.
                    self.controller().wait_for_change(generation);
                    continue;
                } else if self.admit_chunk(rows)? {
                    if let Some(since) = waiting_since.take() {
                        self.controller().record_wait(since.elapsed());
                    }
                    target = None;
                    continue;
                }
                blocked = true;
            } else if input_drained {
                if self.skip_remaining > 0 {
                    let resume_row = self.next_row;
                    return self.fail(SluiceError::Source {
                        source_name: self.source.name(),
                        message: format!(
                            "the input has only {} rows, fewer than the {resume_row} rows to skip; it is not the input the earlier run read",
                            resume_row - self.skip_remaining
                        ),
                    });
                }
                self.set_aside_trailing()?;
                let _ = self.outcomes.send(Outcome::End { chunks: self.seq });
                return Ok(());
            }

            match self.read_ahead(blocked, rows)? {
                ReadAhead::Read => continue,
                ReadAhead::HeldBack => blocked = true,
                ReadAhead::NotNeeded => {}
            }
            if blocked && waiting_since.is_none() {
                self.controller().record_backpressure_event();
                waiting_since = Some(Instant::now());
            }
            self.controller().wait_for_change(generation);
        }
    }

    /// Until one chunk's output has been weighed, its estimate is a guess (the size of the
    /// input): admit no more chunks than the workers can run, or a function that makes its
    /// output many times its input would overshoot the budget by a whole queue of chunks.
    /// Once it is weighed, admit nothing until the chunks let in on the guess are done:
    /// their outputs will grow into memory the new estimate would otherwise hand out again.
    fn awaiting_weighed_outputs(&self) -> bool {
        if self.shared.guessed_in_flight.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.controller().output_measured() || self.queued() >= self.workers
    }

    fn choose_rows(&self) -> usize {
        if self.controller().bytes_per_row().is_none() && self.chunker.rows() > 0 {
            // Learn what a row weighs before the first chunk is sized.
            let sample = self.chunker.rows().min(1024);
            self.controller()
                .observe_input(sample, self.chunker.peek_bytes(sample).0);
        }
        if let Some(hooks) = &self.shared.config.hooks {
            if let Some(rows) = hooks.adapt_batch_size() {
                self.controller().set_current_batch_size_at(rows, self.seq);
                return self.controller().current_batch_size();
            }
        }
        self.controller()
            .adapt_batch_size_for(self.workers, self.seq)
    }

    fn collect_decoded(&mut self) {
        while let Ok(decoded) = self.decoded.try_recv() {
            self.decodes_in_flight -= 1;
            if let Some(estimate) = self.decode_estimates.remove(&decoded.index) {
                self.decode_bytes_in_flight -= estimate;
            }
            self.pending.insert(decoded.index, decoded);
        }
    }

    fn feed_chunker(&mut self) -> ReaderResult {
        while let Some(decoded) = self.pending.remove(&self.next_to_chunk) {
            self.next_to_chunk += 1;
            match decoded.result {
                Ok(part) => {
                    if let Some(first) = part.rejects.first() {
                        if matches!(self.shared.config.error_policy, ErrorPolicy::Fail) {
                            return self.fail(reject_error(first));
                        }
                    }
                    let mut part = part;
                    let mut reservation = decoded.reservation;
                    let mut source_bytes = decoded.source_bytes;
                    if self.skip_remaining > 0 {
                        self.drop_committed_rows(&mut part, &mut reservation, &mut source_bytes);
                    }
                    self.chunker.push_rejects(part.rejects);
                    self.chunker
                        .push(part.batches, Some(reservation), source_bytes)
                }
                Err(e) => return self.fail(e),
            }
        }
        Ok(())
    }

    /// Drops the leading rows of a resumed run's committed prefix from decoded `batches`,
    /// with their share of the part's reservation and source bytes (counted as processed).
    /// Its rejects before the first kept row were committed too, and are dropped.
    fn drop_committed_rows(
        &mut self,
        part: &mut DecodedPart,
        reservation: &mut Reservation,
        source_bytes: &mut u64,
    ) {
        let total_rows: usize = part.rows();
        let drop_rows = (self.skip_remaining as usize).min(total_rows);
        self.skip_remaining -= drop_rows as u64;
        let fraction = drop_rows as f64 / total_rows.max(1) as f64;
        drop(reservation.split((reservation.bytes() as f64 * fraction) as u64));
        let dropped_source = (*source_bytes as f64 * fraction) as u64;
        *source_bytes -= dropped_source;
        self.shared
            .stats
            .source_bytes_processed(dropped_source as f64);
        // A reject before the first kept row was committed with the rows before it; when the
        // prefix goes on into the next part, every reject of this one is before it.
        let prefix_ends_here = self.skip_remaining == 0;
        part.rejects
            .retain(|r| prefix_ends_here && r.position >= drop_rows as u64);
        for r in &mut part.rejects {
            r.position -= drop_rows as u64;
        }
        let mut left = drop_rows;
        let mut kept = Vec::with_capacity(part.batches.len());
        for batch in std::mem::take(&mut part.batches) {
            let n = batch.num_rows();
            if left >= n {
                left -= n;
            } else {
                kept.push(batch.slice(left, n - left));
                left = 0;
            }
        }
        part.batches = kept;
    }

    /// Sets aside the rejects after the input's last row: no chunk follows to carry them.
    fn set_aside_trailing(&mut self) -> ReaderResult {
        let mut rejects = self.chunker.take_trailing_rejects();
        if rejects.is_empty() {
            return Ok(());
        }
        for r in &mut rejects {
            r.position += self.next_row;
        }
        let rows = self.next_row..self.next_row;
        match set_aside(self.shared, &rows, rejects) {
            Ok(aside) => {
                let _ = self.outcomes.send(Outcome::Trailing(aside));
                Ok(())
            }
            Err(e) => self.fail(e),
        }
    }

    /// Cuts and dispatches the next chunk if admission allows; false if it must wait.
    fn admit_chunk(&mut self, rows: usize) -> std::result::Result<bool, (u64, SluiceError)> {
        let rows = rows.min(self.chunker.rows());
        let hooks_hold = self
            .shared
            .config
            .hooks
            .as_ref()
            .is_some_and(|h| h.should_apply_backpressure() == Some(true) && self.queued() > 0);
        if hooks_hold {
            return Ok(false);
        }
        let (input_bytes, unreserved) = self.chunker.peek_bytes(rows);
        if !self.controller().adaptive_batching()
            && self.shared.config.hooks.is_none()
            && input_bytes > self.controller().budget_bytes()
        {
            return self.fail(SluiceError::InvalidSetting {
                setting: "chunk_size",
                reason: format!(
                    "a fixed chunk of {rows} rows of {} weighs {input_bytes} bytes, more than the engine's share of the memory budget ({} bytes); give a smaller chunk size or a larger budget, or let chunk sizes adapt",
                    self.source.name(),
                    self.controller().budget_bytes()
                ),
            });
        }
        let need = unreserved + self.controller().output_estimate(input_bytes);
        let queue = &self.shared.queue;
        let admitted = match self.controller().try_admit_in(need, queue) {
            Some(r) => Some(r),
            // Nothing else of this run can free memory: admit, or the run would stall.
            None if self.queued() == 0 => Some(self.controller().reserve_unchecked_in(need, queue)),
            None => None,
        };
        let Some(mut reservation) = admitted else {
            return Ok(false);
        };
        let mut input_reservation = reservation.split(0);
        let (batch, source_bytes, mut rejects) =
            match self.chunker.take(rows, &mut input_reservation) {
                Ok(b) => b,
                Err(e) => return self.fail(e),
            };
        for r in &mut rejects {
            r.position += self.next_row;
        }
        reservation.merge(input_reservation);
        let guessed = !self.controller().output_measured();
        if guessed {
            self.shared.guessed_in_flight.fetch_add(1, Ordering::AcqRel);
        }
        let n = batch.num_rows() as u64;
        self.controller()
            .observe_input(batch.num_rows(), input_bytes);
        let task = Task::Process {
            seq: self.seq,
            rows: self.next_row..self.next_row + n,
            batch,
            reservation,
            guessed,
            source_bytes,
            rejects,
        };
        self.seq += 1;
        self.next_row += n;
        if self.tasks.send(task).is_err() {
            // Workers are gone: the run is being torn down.
            self.shared.control.stop();
        }
        Ok(true)
    }

    /// Decoded input held ahead of the chunker: enough for the input of a chunk per worker
    /// and one more at the size that is fastest (half of its input plus output, or less),
    /// within its share of the budget. More only costs memory.
    fn read_ahead_limit(&self) -> u64 {
        let share = self.controller().budget_bytes() as f64 * READ_AHEAD_FRACTION;
        let busy = (self.workers + 1) as f64 * THROUGHPUT_CHUNK_BYTES / 2.0;
        share.min(busy) as u64
    }

    fn part_hint(&self) -> PartHint {
        let per_part = self.read_ahead_limit() as usize / (2 * self.workers + 2);
        PartHint {
            rows: self.controller().current_batch_size(),
            bytes: per_part.clamp(MIN_PART_BYTES, MAX_PART_BYTES),
        }
    }

    /// Reads the next part if read-ahead allows.
    fn read_ahead(
        &mut self,
        chunk_blocked: bool,
        target_rows: usize,
    ) -> std::result::Result<ReadAhead, (u64, SluiceError)> {
        if self.source_done || chunk_blocked {
            return Ok(ReadAhead::NotNeeded);
        }
        let held = self.chunker.reserved_bytes()
            + self
                .pending
                .values()
                .map(|d| d.reservation.bytes())
                .sum::<u64>()
            + self.decode_bytes_in_flight;
        // Nothing on its way could complete the next chunk: read, whatever else holds.
        let starving = self.chunker.rows() < target_rows
            && self.pending.is_empty()
            && self.decodes_in_flight == 0;
        let hint = self.part_hint();
        // Only when nothing at all is in the engine may a read go past the budget: otherwise
        // the run could not move. Anything queued will be released, so waiting is safe.
        let forced = starving && self.queued() == 0;
        if !forced {
            let enough_queued = self.decodes_in_flight + self.pending.len() >= 2 * self.workers;
            if enough_queued && !starving {
                return Ok(ReadAhead::NotNeeded);
            }
            // Read-ahead must not take memory that processed chunks are waiting for.
            let expected = 2 * hint.bytes as u64;
            let over_budget =
                self.controller().used_bytes() + expected > self.controller().budget_bytes();
            let queue_full = self.queued() >= self.controller().max_queue_size();
            if held >= self.read_ahead_limit()
                || queue_full
                || self.controller().pressure() >= crate::backpressure::PRESSURE_FRACTION
                || over_budget
            {
                return Ok(ReadAhead::HeldBack);
            }
        }
        let part = match self.source.next_part(hint) {
            Ok(Some(part)) => part,
            Ok(None) => {
                self.source_done = true;
                return Ok(ReadAhead::Read);
            }
            Err(e) => return self.fail(e),
        };
        let (part, raw_bytes) = part;
        self.shared.stats.input_bytes(raw_bytes);
        let index = self.next_part;
        self.next_part += 1;
        match part {
            SourcePart::Ready(batch) => {
                // The caller's data, viewed not copied: counted from the moment a chunk is cut.
                self.pending.insert(
                    index,
                    Decoded {
                        index,
                        result: Ok(vec![batch].into()),
                        reservation: self.controller().reserve_unchecked(0, false),
                        source_bytes: raw_bytes,
                    },
                );
            }
            SourcePart::Owned(batch) => {
                // Already in memory, ours: counted at its weight (read-ahead sees it too);
                // the chunker cuts it into chunks that carry their share.
                let reservation = self
                    .controller()
                    .reserve_unchecked(batch_memory(&batch), false);
                self.pending.insert(
                    index,
                    Decoded {
                        index,
                        result: Ok(vec![batch].into()),
                        reservation,
                        source_bytes: raw_bytes,
                    },
                );
            }
            SourcePart::Deferred {
                estimated_bytes,
                decode,
            } => {
                let reservation = self.controller().reserve_unchecked(estimated_bytes, false);
                self.decodes_in_flight += 1;
                self.decode_bytes_in_flight += estimated_bytes;
                self.decode_estimates.insert(index, estimated_bytes);
                let task = Task::Decode {
                    index,
                    decode,
                    reservation,
                    source_bytes: raw_bytes,
                };
                if self.tasks.send(task).is_err() {
                    self.shared.control.stop();
                }
            }
        }
        Ok(ReadAhead::Read)
    }
}

/// The error that stops a run at a malformed record under the `fail` policy.
fn reject_error(reject: &Reject) -> SluiceError {
    let location = match (reject.line, reject.byte_offset) {
        (Some(line), _) => format!("line {line}"),
        (None, Some(offset)) => format!("byte {offset}"),
        (None, None) => "a record".to_string(),
    };
    SluiceError::BadInput {
        path: reject.file.clone(),
        location,
        message: reject.cause.clone(),
    }
}
