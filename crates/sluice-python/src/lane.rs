//! Calls of the user's function handed from the engine's workers to the caller's thread.
//!
//! Once the gate has found the function GIL-bound (one call at a time is as fast as
//! several), the best thread to run it on is the one iterating the results: it is waiting
//! in `__next__` anyway, and a call made there never fights another thread for the GIL
//! (measured on 2 cores: the seed's pandas function ran 10-20% slower on a worker than in a
//! plain loop, and the result's hand-back forced a GIL switch per chunk). The engine still
//! cuts, admits, orders and accounts every chunk; only the call moves.
//!
//! A worker queues its chunk only while a caller is waiting in `__next__`, and takes it back
//! if the caller leaves before picking it up (the caller's loop body may run long, or the
//! iterator may be dropped): then it calls the function itself, as without the lane.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use sluice::BoxError;

/// How often a worker whose chunk waits in the lane looks whether the caller is still
/// there: rarely while it is (each look wakes a thread: at 1 ms, the looks of two workers
/// cost a tenth of a core), often once it is away (to take the chunk back soon).
const POLL_WHILE_PRESENT: Duration = Duration::from_millis(10);
const POLL_WHILE_AWAY: Duration = Duration::from_millis(1);
/// When the gate wants to know whether the function holds the GIL, the first look comes
/// this soon, so it falls inside the call.
const FIRST_LOOK_TO_PROBE: Duration = Duration::from_millis(1);

pub type CallResult = Result<RecordBatch, BoxError>;

/// One chunk waiting for the caller, and where its result goes.
pub struct LaneCall {
    /// Taken by whoever runs the call: the caller, or the worker withdrawing it.
    batch: Mutex<Option<RecordBatch>>,
    reply: Sender<CallResult>,
}

impl LaneCall {
    /// The chunk, unless its worker took it back, and the promise of a reply: answered
    /// even if the caller's thread unwinds (a Rust panic) before it replies, so the worker
    /// never waits for a reply that cannot come.
    pub fn take(&self) -> Option<(RecordBatch, PendingReply<'_>)> {
        let batch = self.withdraw()?;
        Some((
            batch,
            PendingReply {
                call: self,
                sent: false,
            },
        ))
    }

    /// Taken by the caller and not yet answered.
    fn is_running(&self) -> bool {
        self.batch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
            && self.reply.is_empty()
    }

    fn withdraw(&self) -> Option<RecordBatch> {
        self.batch.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn send(&self, result: CallResult) {
        // The worker waits for this reply once the chunk is taken; it is gone only if the
        // run's threads were torn down, and then nobody needs the result.
        let _ = self.reply.send(result);
    }
}

/// The reply the caller owes for a chunk it took.
pub struct PendingReply<'a> {
    call: &'a LaneCall,
    sent: bool,
}

impl PendingReply<'_> {
    pub fn send(mut self, result: CallResult) {
        self.sent = true;
        self.call.send(result);
    }
}

impl Drop for PendingReply<'_> {
    fn drop(&mut self) {
        if !self.sent {
            self.call.send(Err(
                "the caller's thread failed while running this chunk".into()
            ));
        }
    }
}

/// The queue between the workers and the caller's `__next__`.
pub struct CallerLane {
    /// Callers now waiting in `__next__` (normally 0 or 1).
    present: AtomicUsize,
    /// Counts the caller's entries into `__next__`: a caller that left and came back
    /// between two looks of a worker was only handing a chunk over.
    visits: AtomicU64,
    /// Set when the run's consumer is gone: workers call the function themselves, as they
    /// would without the lane (the run is being stopped; in-flight chunks finish as usual).
    closed: AtomicBool,
    sender: Sender<Arc<LaneCall>>,
    receiver: Receiver<Arc<LaneCall>>,
}

impl Default for CallerLane {
    fn default() -> Self {
        let (sender, receiver) = crossbeam_channel::unbounded();
        CallerLane {
            present: AtomicUsize::new(0),
            visits: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            sender,
            receiver,
        }
    }
}

impl CallerLane {
    pub fn caller_present(&self) -> bool {
        self.present.load(Ordering::Acquire) > 0
    }

    /// The run's consumer is gone (end, error, interrupt, closed iterator): workers stop
    /// waiting for it.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks a caller as waiting until the guard is dropped.
    pub fn enter(&self) -> Presence<'_> {
        self.visits.fetch_add(1, Ordering::AcqRel);
        self.present.fetch_add(1, Ordering::AcqRel);
        Presence { lane: self }
    }

    /// The calls queued for the caller.
    pub fn calls(&self) -> &Receiver<Arc<LaneCall>> {
        &self.receiver
    }

    /// Worker side: has the caller run the function on `batch`. `Err(batch)` when no caller
    /// is there to do it: none has been waiting in `__next__` for a whole poll interval (a
    /// caller is away for microseconds each time it hands a chunk over; one away longer is
    /// doing its own work, and the worker should not wait for it), or `still_wanted` turned
    /// false before the caller took the chunk (the calls may now run side by side).
    /// `probe`, if given, runs once while the caller is running this chunk's call.
    pub fn call(
        &self,
        batch: RecordBatch,
        still_wanted: impl Fn() -> bool,
        mut probe: Option<impl FnMut()>,
    ) -> Result<CallResult, RecordBatch> {
        if self.is_closed() {
            return Err(batch);
        }
        // What the last look saw: the caller's entries so far, and whether it was away.
        let mut visits = self.visits.load(Ordering::Acquire);
        let mut was_away = !self.caller_present();
        let (reply, result) = crossbeam_channel::bounded(1);
        let call = Arc::new(LaneCall {
            batch: Mutex::new(Some(batch)),
            reply,
        });
        // Never fails: the lane holds its own receiver.
        let _ = self.sender.send(call.clone());
        loop {
            let poll = if probe.is_some() {
                FIRST_LOOK_TO_PROBE
            } else if was_away {
                POLL_WHILE_AWAY
            } else {
                POLL_WHILE_PRESENT
            };
            match result.recv_timeout(poll) {
                Ok(result) => return Ok(result),
                Err(RecvTimeoutError::Timeout) => {
                    if call.is_running() {
                        if let Some(mut probe) = probe.take() {
                            probe();
                        }
                    }
                    let closed = self.is_closed();
                    let now = self.visits.load(Ordering::Acquire);
                    let came_back = now != visits;
                    visits = now;
                    let away_now = !self.caller_present();
                    // Away at two looks in a row, without coming back in between.
                    let away = away_now && was_away && !came_back;
                    was_away = away_now;
                    if closed || away || !still_wanted() {
                        if let Some(batch) = call.withdraw() {
                            return Err(batch);
                        }
                        // The caller took it before leaving: its reply is on the way.
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Ok(Err("the caller's thread dropped the chunk".into()))
                }
            }
        }
    }
}

/// A caller waiting in `__next__`; leaves on drop.
pub struct Presence<'a> {
    lane: &'a CallerLane,
}

impl Drop for Presence<'_> {
    fn drop(&mut self) {
        self.lane.present.fetch_sub(1, Ordering::AcqRel);
    }
}
