//! The engine runs a pipeline run on threads of its own, in parallel and inside the memory
//! budget: a reader ([`reader`]) cuts the source into chunks and admits each into the budget,
//! and workers ([`worker`]) process them and send the outcomes to [`crate::ChunkStream`].

mod reader;
mod worker;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use crossbeam_channel::Receiver;

use crate::backpressure::{BackpressureController, Reservation, RunQueue};
use crate::config::PipelineConfig;
use crate::error::{BoxError, Result, SluiceError};
use crate::sink::dead_letter::DeadLetter;
use crate::sink::{EncodeAhead, EncodedRowGroup};
use crate::source::{DecodeFn, DecodedPart, Reject, Source};
use crate::stats::StatsCollector;
use reader::Reader;
use worker::worker_loop;

/// The user's function, shared by the workers.
pub(crate) type ChunkFn =
    Arc<dyn Fn(RecordBatch) -> std::result::Result<RecordBatch, BoxError> + Send + Sync>;

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
        /// `batch` encoded ahead by the run's sink ([`Shared::encoder`]), when it takes it.
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
    /// Set when the run's sink encodes outputs ahead: workers encode each output it takes
    /// on their threads, so the consumer's one thread only appends it.
    pub encoder: Option<Arc<dyn EncodeAhead>>,
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
