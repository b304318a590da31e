//! One run of the pipeline: the reader (coordinator) thread and the worker pool.
//!
//! The reader pulls parts from the source, sends deferred decodes to the workers, puts the
//! decoded batches back in input order, cuts them into chunks of the sizer's row count,
//! and admits each chunk against the memory budget and the queue before a worker may
//! process it. It is the only thread that waits for admission; while it waits, nothing new
//! enters the engine (backpressure). Workers run decodes and the user's function (catching
//! panics), apply the error policy, and send outcomes to the consumer ([`crate::ChunkStream`]),
//! which restores order. Malformed input records (rejects) come out of decoding with their
//! part, ride with the chunk holding the next good row, and are set aside by the worker
//! that processes it (written by [`crate::sink::dead_letter`] under `dead_letter`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use crossbeam_channel::{Receiver, Sender};

use crate::backpressure::{BackpressureController, Reservation, RunQueue};
use crate::chunk::{batch_memory, Chunker};
use crate::config::{ErrorPolicy, PipelineConfig};
use crate::error::{BoxError, Result, SluiceError};
use crate::sink::dead_letter::{self, DeadLetter};
use crate::sink::{EncodedRowGroup, RowGroupEncoder};
use crate::sizer::{READ_AHEAD_FRACTION, THROUGHPUT_CHUNK_BYTES};
use crate::source::{DecodeFn, DecodedPart, PartHint, Reject, Source, SourcePart};
use crate::stats::StatsCollector;

/// The user's function, shared by the workers.
pub(crate) type ChunkFn =
    Arc<dyn Fn(RecordBatch) -> std::result::Result<RecordBatch, BoxError> + Send + Sync>;

/// Largest raw byte range one text part reads.
const MAX_PART_BYTES: usize = 8 << 20;
const MIN_PART_BYTES: usize = 64 << 10;

/// Stops one run: set by the consumer when it is dropped or fails, or by `stop()`.
#[derive(Default)]
pub(crate) struct RunControl {
    stopped: AtomicBool,
}

impl RunControl {
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// What handling a chunk set aside besides its output: malformed records before its rows
/// (counted), and the dead letters written (listed by the consumer).
#[derive(Debug, Default)]
pub(crate) struct SetAside {
    pub rejected: u64,
    pub letters: Vec<DeadLetter>,
}

/// What a worker or the reader tells the consumer.
pub(crate) enum Outcome {
    Done {
        seq: u64,
        rows: Range<u64>,
        batch: RecordBatch,
        /// `batch` encoded as a Parquet row group of its own, when the run's sink wants it.
        encoded: Option<EncodedRowGroup>,
        reservation: Reservation,
        latency: Duration,
        passed_through: bool,
        aside: SetAside,
    },
    /// The function failed and the policy dropped the chunk (skip, dead letter).
    Dropped {
        seq: u64,
        rows: Range<u64>,
        aside: SetAside,
    },
    /// Rejects after the last row of the input (no chunk to ride with); not a chunk, so
    /// it takes no sequence number.
    Trailing(SetAside),
    /// The run cannot go on (fail policy, bad input, a dead letter that could not be written).
    Fatal { seq: u64, error: SluiceError },
    /// The function failed after the run was stopped (e.g. interrupted): not a failure of
    /// the chunk, and the run ends here.
    Abandoned { seq: u64 },
    /// No chunk after `chunks` (the total count of sequence numbers) will come.
    End { chunks: u64 },
}

impl Outcome {
    pub fn seq(&self) -> u64 {
        match self {
            Outcome::Done { seq, .. }
            | Outcome::Dropped { seq, .. }
            | Outcome::Fatal { seq, .. }
            | Outcome::Abandoned { seq } => *seq,
            Outcome::End { chunks } => *chunks,
            // Handled as it arrives, never ordered.
            Outcome::Trailing(_) => u64::MAX,
        }
    }
}

enum Task {
    Decode {
        index: u64,
        decode: DecodeFn,
        reservation: Reservation,
        source_bytes: u64,
    },
    Process {
        seq: u64,
        rows: Range<u64>,
        batch: RecordBatch,
        reservation: Reservation,
        /// Admitted before any output was weighed: its reservation is a guess.
        guessed: bool,
        /// Bytes of the source its rows were decoded from (for progress).
        source_bytes: f64,
        /// Malformed records before its rows (absolute positions).
        rejects: Vec<Reject>,
    },
}

struct Decoded {
    index: u64,
    result: Result<DecodedPart>,
    reservation: Reservation,
    /// Bytes of the source this part was decoded from.
    source_bytes: u64,
}

pub(crate) struct Shared {
    pub config: PipelineConfig,
    pub controller: BackpressureController,
    pub stats: Arc<StatsCollector>,
    pub control: Arc<RunControl>,
    pub function: ChunkFn,
    /// Chunks admitted on the guess that output weighs what input does, not yet processed.
    pub guessed_in_flight: AtomicUsize,
    /// This run's queue slots (the budget is the pipeline's, the slots are the run's).
    pub queue: Arc<RunQueue>,
    /// Set when the run writes Parquet parts: workers encode each large enough output
    /// into its row group, so the consumer's one thread only appends it.
    pub encoder: Option<Arc<RowGroupEncoder>>,
}

/// Handles of a run's threads, joined when the consumer is done.
pub(crate) struct RunThreads {
    handles: Vec<JoinHandle<()>>,
}

impl RunThreads {
    pub fn join(&mut self) {
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Starts the reader and the workers; outcomes arrive on the returned receiver.
pub(crate) fn start(
    shared: Arc<Shared>,
    source: Box<dyn Source>,
) -> Result<(Receiver<Outcome>, RunThreads)> {
    let workers = shared.config.effective_workers();
    let (task_tx, task_rx) = crossbeam_channel::unbounded::<Task>();
    let (decoded_tx, decoded_rx) = crossbeam_channel::unbounded::<Decoded>();
    let (outcome_tx, outcome_rx) = crossbeam_channel::unbounded::<Outcome>();
    let mut handles = Vec::with_capacity(workers + 1);
    for i in 0..workers {
        let (shared, task_rx, decoded_tx, outcome_tx) = (
            shared.clone(),
            task_rx.clone(),
            decoded_tx.clone(),
            outcome_tx.clone(),
        );
        let handle = std::thread::Builder::new()
            .name(format!("sluice-worker-{i}"))
            .spawn(move || worker_loop(&shared, task_rx, decoded_tx, outcome_tx))
            .map_err(|e| SluiceError::Source {
                source_name: "worker pool".into(),
                message: format!("cannot start a worker thread: {e}"),
            })?;
        handles.push(handle);
    }
    drop(decoded_tx);
    let reader_shared = shared.clone();
    let handle = std::thread::Builder::new()
        .name("sluice-reader".into())
        .spawn(move || {
            let mut reader = Reader::new(
                &reader_shared,
                source,
                task_tx,
                decoded_rx,
                outcome_tx.clone(),
            );
            if let Err((seq, error)) = reader.run() {
                let _ = outcome_tx.send(Outcome::Fatal { seq, error });
                let _ = outcome_tx.send(Outcome::End { chunks: seq + 1 });
            }
        })
        .map_err(|e| SluiceError::Source {
            source_name: "reader".into(),
            message: format!("cannot start the reader thread: {e}"),
        })?;
    handles.push(handle);
    Ok((outcome_rx, RunThreads { handles }))
}

enum ReadAhead {
    Read,
    /// Memory is short: the reader waits (a backpressure event).
    HeldBack,
    NotNeeded,
}

struct Reader<'a> {
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
    fn new(
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

    fn run(&mut self) -> ReaderResult {
        self.start_at_resume_row()?;
        let mut target: Option<usize> = None;
        // Set while a chunk waits for admission, so one wait counts one event.
        let mut waiting_since: Option<Instant> = None;
        loop {
            if self.shared.control.is_stopped() {
                return Ok(());
            }
            let generation = self.controller().generation();
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

fn worker_loop(
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
            let encoded = match &shared.encoder {
                Some(encoder) if RowGroupEncoder::worth_it(&output) => {
                    match encoder.encode(&output) {
                        Ok(group) => Some(group),
                        Err(e) => {
                            return Outcome::Fatal {
                                seq,
                                error: SluiceError::write(
                                    encoder.dir(),
                                    format!(
                                        "encoding the output of chunk {seq} (input rows {}..{}) as Parquet: {e}",
                                        rows.start, rows.end
                                    ),
                                ),
                            }
                        }
                    }
                }
                _ => None,
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
fn set_aside(shared: &Shared, rows: &Range<u64>, rejects: Vec<Reject>) -> Result<SetAside> {
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

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with no message".to_string()
    }
}
