//! Admission: the memory budget and queue slots every chunk must hold to be in the engine.
//!
//! Memory is held as a [`Reservation`] that gives its bytes (and its queue slot, if it has
//! one) back on `Drop`, so a forgotten release is impossible: a chunk carries its
//! reservation from the moment it is read until it is written or handed to the caller.
//! Only the engine's reader waits for admission; workers never block on memory, they only
//! resize the reservation of the chunk they hold to what it really weighs. Every wait is one
//! backpressure event. The controller also owns the [`BatchSizer`] (adaptive batching).
//!
//! ```text
//!  reader ──try_admit(bytes)──► [ used ≤ budget, slots ≤ max_queue_size ] ◄── Drop(Reservation)
//!    │ refused: wait (one backpressure event)           ▲ resize(actual)
//!    └──────────── chunk + Reservation ──► worker ──────┘──► reorder ──► sink / caller
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::sizer::{BatchSizer, ChunkSizeChange};

const MB: f64 = 1024.0 * 1024.0;
pub(crate) const PRESSURE_FRACTION: f64 = 0.8;

/// The queue slots of one run. Every run of a pipeline has `max_queue_size` slots of its
/// own (the memory budget is shared): a run whose finished chunks wait for a consumer that
/// is busy with another run (two runs zipped, one nested in the other) holds only its own
/// slots, never the ones the other run needs to move.
#[derive(Debug, Default)]
pub struct RunQueue {
    used: AtomicUsize,
}

impl RunQueue {
    /// Chunks of this run admitted and not yet written or handed to the caller.
    pub fn queued(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// Flow control for one pipeline: memory permits in bytes plus queue slots, and the sizer.
///
/// Cheap to clone; clones share the same budget.
#[derive(Clone)]
pub struct BackpressureController {
    shared: Arc<Shared>,
}

struct Shared {
    max_queue_size: usize,
    budget_bytes: u64,
    state: Mutex<State>,
    changed: Condvar,
    sizer: Mutex<BatchSizer>,
}

#[derive(Default)]
struct State {
    used_bytes: u64,
    peak_bytes: u64,
    slots_used: usize,
    /// Bumped on every release or external event, so a waiter never misses a wake-up.
    generation: u64,
    backpressure_events: u64,
    wait_time: Duration,
    overshoot_events: u64,
}

impl std::fmt::Debug for BackpressureController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackpressureController")
            .field("max_queue_size", &self.shared.max_queue_size)
            .field("budget_bytes", &self.shared.budget_bytes)
            .field("used_bytes", &self.used_bytes())
            .field("queued_chunks", &self.queued_chunks())
            .finish()
    }
}

impl BackpressureController {
    /// The seed's constructor: `memory_threshold_mb` is the budget, in MiB.
    pub fn new(max_queue_size: usize, memory_threshold_mb: f64, adaptive_batching: bool) -> Self {
        let budget = (memory_threshold_mb.max(0.0) * MB) as u64;
        Self::with_budget_bytes(
            max_queue_size,
            budget,
            adaptive_batching,
            1000,
            1,
            1_000_000,
        )
    }

    /// Full constructor used by the pipeline builder.
    pub fn with_budget_bytes(
        max_queue_size: usize,
        budget_bytes: u64,
        adaptive_batching: bool,
        initial_rows: usize,
        min_rows: usize,
        max_rows: usize,
    ) -> Self {
        BackpressureController {
            shared: Arc::new(Shared {
                max_queue_size: max_queue_size.max(1),
                budget_bytes: budget_bytes.max(1),
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                sizer: Mutex::new(BatchSizer::new(
                    initial_rows,
                    min_rows,
                    max_rows,
                    adaptive_batching,
                )),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a thread panicked while holding it; the counters are
        // still consistent because every update is a single assignment.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sizer(&self) -> MutexGuard<'_, BatchSizer> {
        self.shared
            .sizer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn budget_bytes(&self) -> u64 {
        self.shared.budget_bytes
    }

    pub fn max_queue_size(&self) -> usize {
        self.shared.max_queue_size
    }

    /// Bytes currently held by the engine (read-ahead, in flight, reorder buffer, sink).
    pub fn used_bytes(&self) -> u64 {
        self.state().used_bytes
    }

    /// Most bytes ever held at once.
    pub fn peak_bytes(&self) -> u64 {
        self.state().peak_bytes
    }

    /// Chunks admitted and not yet written or handed to the caller.
    pub fn queued_chunks(&self) -> usize {
        self.state().slots_used
    }

    pub fn backpressure_events(&self) -> u64 {
        self.state().backpressure_events
    }

    pub fn backpressure_wait(&self) -> Duration {
        self.state().wait_time
    }

    /// Times a chunk was admitted or grew past the budget because nothing else could free
    /// memory (a single chunk larger than its share); zero in a well-sized run.
    pub fn overshoot_events(&self) -> u64 {
        self.state().overshoot_events
    }

    /// True when the reader should hold back: the queue is full or tracked memory is above
    /// 80% of the budget.
    pub fn should_apply_backpressure(&self) -> bool {
        let s = self.state();
        s.slots_used >= self.shared.max_queue_size
            || s.used_bytes as f64 >= self.shared.budget_bytes as f64 * PRESSURE_FRACTION
    }

    /// Fraction of the budget in use.
    pub fn pressure(&self) -> f64 {
        self.used_bytes() as f64 / self.shared.budget_bytes as f64
    }

    /// One step of adaptive batching (see [`crate::sizer`]); returns the new chunk rows.
    pub fn adapt_batch_size(&self) -> usize {
        self.adapt_batch_size_for(1, 0)
    }

    /// One step of adaptive batching for a pipeline of `workers` workers, whose next chunk is
    /// number `next_chunk` (recorded in the chunk-size history).
    pub fn adapt_batch_size_for(&self, workers: usize, next_chunk: u64) -> usize {
        let pressure = self.pressure();
        self.sizer()
            .adapt(pressure, self.shared.budget_bytes, workers, next_chunk)
    }

    pub fn current_batch_size(&self) -> usize {
        self.sizer().current()
    }

    /// Sets the chunk rows by hand, clamped to the sizer's bounds.
    pub fn set_current_batch_size(&self, rows: usize) {
        self.set_current_batch_size_at(rows, 0)
    }

    /// Sets the chunk rows by hand from chunk `next_chunk` on, clamped to the sizer's bounds.
    pub fn set_current_batch_size_at(&self, rows: usize, next_chunk: u64) {
        self.sizer().set_current(rows, next_chunk)
    }

    pub fn adaptive_batching(&self) -> bool {
        self.sizer().is_adaptive()
    }

    pub fn chunk_size_history(&self) -> Vec<ChunkSizeChange> {
        self.sizer().history().to_vec()
    }

    pub(crate) fn observe_input(&self, rows: usize, bytes: u64) {
        self.sizer().observe_input(rows, bytes)
    }

    pub(crate) fn observe_output(&self, input_bytes: u64, output_bytes: u64) {
        let mut sizer = self.sizer();
        let first = !sizer.output_measured();
        sizer.observe_output(input_bytes, output_bytes);
        drop(sizer);
        if first {
            // The reader may be holding chunks back until this first measure.
            self.notify();
        }
    }

    /// A run starts: what the last run learned (its function's output ratio, its rows'
    /// weight) may not hold for this one, so this run weighs its own first rows and output.
    pub(crate) fn forget_run_measures(&self) {
        self.sizer().forget_run_measures()
    }

    /// Whether a chunk's output has been weighed yet.
    pub(crate) fn output_measured(&self) -> bool {
        self.sizer().output_measured()
    }

    pub(crate) fn output_estimate(&self, input_bytes: u64) -> u64 {
        self.sizer().output_estimate(input_bytes)
    }

    pub(crate) fn bytes_per_row(&self) -> Option<f64> {
        self.sizer().bytes_per_row()
    }

    /// Reserves `bytes` if they fit in the budget now; never waits.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        self.try_acquire(bytes, false)
    }

    /// Reserves `bytes` plus a queue slot if both are free now; never waits.
    pub fn try_admit(&self, bytes: u64) -> Option<Reservation> {
        self.try_acquire(bytes, true)
    }

    fn try_acquire(&self, bytes: u64, slot: bool) -> Option<Reservation> {
        let mut s = self.state();
        if slot && s.slots_used >= self.shared.max_queue_size {
            return None;
        }
        if s.used_bytes.saturating_add(bytes) > self.shared.budget_bytes {
            return None;
        }
        Some(self.grant(&mut s, bytes, slot))
    }

    /// Reserves `bytes` plus one of `queue`'s slots if both are free now; never waits.
    pub fn try_admit_in(&self, bytes: u64, queue: &Arc<RunQueue>) -> Option<Reservation> {
        let mut s = self.state();
        if queue.queued() >= self.shared.max_queue_size
            || s.used_bytes.saturating_add(bytes) > self.shared.budget_bytes
        {
            return None;
        }
        let mut r = self.grant(&mut s, bytes, true);
        queue.used.fetch_add(1, Ordering::AcqRel);
        r.queue = Some(queue.clone());
        Some(r)
    }

    /// Like [`Self::reserve_unchecked`] with one of `queue`'s slots.
    pub fn reserve_unchecked_in(&self, bytes: u64, queue: &Arc<RunQueue>) -> Reservation {
        let mut s = self.state();
        let mut r = self.grant(&mut s, bytes, true);
        queue.used.fetch_add(1, Ordering::AcqRel);
        r.queue = Some(queue.clone());
        r
    }

    /// Reserves without checking the budget: for memory that already exists (a decoded
    /// batch larger than its estimate) or a chunk admitted because nothing else could free
    /// memory. Counted as an overshoot when it crosses the budget.
    pub fn reserve_unchecked(&self, bytes: u64, slot: bool) -> Reservation {
        let mut s = self.state();
        self.grant(&mut s, bytes, slot)
    }

    fn grant(&self, s: &mut State, bytes: u64, slot: bool) -> Reservation {
        s.used_bytes += bytes;
        if s.used_bytes > self.shared.budget_bytes && bytes > 0 {
            s.overshoot_events += 1;
        }
        s.peak_bytes = s.peak_bytes.max(s.used_bytes);
        if slot {
            s.slots_used += 1;
        }
        Reservation {
            controller: self.clone(),
            bytes,
            slot,
            queue: None,
        }
    }

    /// Reserves `bytes` plus a slot, waiting while the budget or queue is full (for use of
    /// the controller on its own). Waiting counts one backpressure event.
    pub fn admit_blocking(&self, bytes: u64) -> Reservation {
        let mut waited = false;
        loop {
            let generation = self.generation();
            if let Some(r) = self.try_admit(bytes) {
                return r;
            }
            if !waited {
                self.record_backpressure_event();
                waited = true;
            }
            let start = Instant::now();
            self.wait_for_change(generation);
            self.record_wait(start.elapsed());
        }
    }

    pub(crate) fn record_backpressure_event(&self) {
        self.state().backpressure_events += 1;
    }

    pub(crate) fn record_wait(&self, waited: Duration) {
        self.state().wait_time += waited;
    }

    pub(crate) fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Wakes every waiter (an event other than a release happened, e.g. a decoded part).
    pub(crate) fn notify(&self) {
        let mut s = self.state();
        s.generation += 1;
        drop(s);
        self.shared.changed.notify_all();
    }

    /// Blocks until something changed since `generation` was read (or a stop).
    pub(crate) fn wait_for_change(&self, generation: u64) {
        let s = self.state();
        let _s = self
            .shared
            .changed
            .wait_while(s, |s| s.generation == generation)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
    }

    fn release(&self, bytes: u64, slot: bool) {
        let mut s = self.state();
        s.used_bytes = s.used_bytes.saturating_sub(bytes);
        if slot {
            s.slots_used = s.slots_used.saturating_sub(1);
        }
        s.generation += 1;
        drop(s);
        self.shared.changed.notify_all();
    }

    fn resize(&self, from: u64, to: u64) {
        let mut s = self.state();
        if to > from {
            s.used_bytes += to - from;
            if s.used_bytes > self.shared.budget_bytes {
                s.overshoot_events += 1;
            }
            s.peak_bytes = s.peak_bytes.max(s.used_bytes);
        } else {
            s.used_bytes = s.used_bytes.saturating_sub(from - to);
            s.generation += 1;
            drop(s);
            self.shared.changed.notify_all();
        }
    }
}

/// Bytes (and perhaps a queue slot) held in the budget; released on drop.
#[must_use = "dropping a reservation releases its memory at once"]
pub struct Reservation {
    controller: BackpressureController,
    bytes: u64,
    slot: bool,
    /// The run whose slot this is, if it was admitted for a run.
    queue: Option<Arc<RunQueue>>,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("bytes", &self.bytes)
            .field("slot", &self.slot)
            .finish()
    }
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Changes the bytes held to `bytes` (what the data really weighs). Growing never
    /// waits: the memory already exists.
    pub fn resize(&mut self, bytes: u64) {
        if bytes != self.bytes {
            self.controller.resize(self.bytes, bytes);
            self.bytes = bytes;
        }
    }

    /// Moves `bytes` (at most all of them) into a new reservation without a slot.
    pub fn split(&mut self, bytes: u64) -> Reservation {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        Reservation {
            controller: self.controller.clone(),
            bytes,
            slot: false,
            queue: None,
        }
    }

    /// Takes over `other`'s bytes and slot.
    pub fn merge(&mut self, mut other: Reservation) {
        self.bytes += other.bytes;
        other.bytes = 0;
        if other.slot {
            if self.slot {
                // Two slots for one chunk: give one back.
                self.controller.release(0, true);
                if let Some(queue) = other.queue.take() {
                    queue.used.fetch_sub(1, Ordering::AcqRel);
                }
            } else {
                self.queue = other.queue.take();
            }
            self.slot = true;
            other.slot = false;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            // Before the release wakes the reader, so it sees the slot free.
            queue.used.fetch_sub(1, Ordering::AcqRel);
        }
        if self.bytes > 0 || self.slot {
            self.controller.release(self.bytes, self.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_return_their_bytes_and_slots_on_drop() {
        let c = BackpressureController::with_budget_bytes(2, 100, true, 10, 1, 100);
        let a = c.try_admit(60).expect("fits");
        assert!(c.try_admit(50).is_none(), "over budget");
        let b = c.try_admit(40).expect("fits");
        assert!(c.try_admit(0).is_none(), "queue full");
        assert_eq!(c.used_bytes(), 100);
        drop(a);
        assert_eq!(c.used_bytes(), 40);
        assert_eq!(c.queued_chunks(), 1);
        drop(b);
        assert_eq!(c.used_bytes(), 0);
        assert_eq!(c.peak_bytes(), 100);
    }

    #[test]
    fn split_merge_and_resize_keep_the_total() {
        let c = BackpressureController::with_budget_bytes(4, 1000, true, 10, 1, 100);
        let mut a = c.try_reserve(500).expect("fits");
        let b = a.split(200);
        assert_eq!((a.bytes(), b.bytes(), c.used_bytes()), (300, 200, 500));
        let mut slot = c.try_admit(10).expect("fits");
        slot.merge(b);
        assert_eq!(c.used_bytes(), 510);
        slot.resize(50);
        assert_eq!(c.used_bytes(), 350);
        drop(slot);
        assert_eq!(c.queued_chunks(), 0);
        drop(a);
        assert_eq!(c.used_bytes(), 0);
    }

    #[test]
    fn a_blocked_admission_waits_for_a_release_and_counts_one_event() {
        let c = BackpressureController::with_budget_bytes(10, 100, true, 10, 1, 100);
        let held = c.try_admit(100).expect("fits");
        let c2 = c.clone();
        let waiter = std::thread::spawn(move || c2.admit_blocking(50).bytes());
        // The waiter counts its event before it waits: once it shows, the waiter has found
        // the budget full, and must still be waiting (nothing was released).
        let deadline = Instant::now() + Duration::from_secs(60);
        while c.backpressure_events() == 0 {
            assert!(
                Instant::now() < deadline,
                "the waiter never found the budget full"
            );
            std::thread::yield_now();
        }
        assert!(!waiter.is_finished(), "admitted while the budget was full");
        assert_eq!(c.used_bytes(), 100);
        drop(held);
        assert_eq!(waiter.join().expect("no panic"), 50);
        assert_eq!(c.backpressure_events(), 1, "one wait, one event");
        assert_eq!(c.used_bytes(), 0);
    }
}
