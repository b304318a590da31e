//! How many workers may run the user's Python function at once. A function that holds the
//! GIL gains nothing from a second thread and loses to the hand-offs (measured on 2 cores:
//! the seed's pandas function ran 1.5-1.8x slower with 2-4 workers than with one); one that
//! releases it (I/O, sleeps, numpy on large arrays) gains up to the number of workers.
//!
//! The gate starts with one call at a time (run on the caller's thread when it waits for
//! results: see `lane.rs`) and times a few calls. Calls that mostly wait (their thread's CPU
//! well under their wall time) go side by side at once. Meanwhile an idle worker looks, once
//! a call, whether it can take the GIL: mostly not, the function holds it and stays one at a
//! time; mostly yes, it computes without it and goes side by side. Without such looks (no
//! caller waiting), a short window of calls side by side is timed too, and kept only if it
//! moves rows clearly faster. It measures again every so often, as chunks and data change.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Calls timed one at a time.
const ALONE_CALLS: usize = 4;
/// Calls run side by side in a trial: two at a time tell whether a second thread helps at
/// all (a function holding the GIL gains nothing from the second), and a trial as wide as
/// every worker would cost that many calls slowed by the GIL.
const TRIAL_WIDTH: usize = 2;
/// Calls (times the trial's width) in a measured window of side-by-side calls.
const WINDOW_CALLS_PER_PLACE: usize = 2;
/// Calls whose thread used less CPU than this share of their wall time mostly wait (sleep,
/// I/O, a lock): they go side by side without a trial.
const MOSTLY_WAITING: f64 = 0.5;
/// Looks at the GIL during calls alone that can decide without a trial side by side (when
/// at most a quarter, or at least three quarters, found it free).
const MIN_GIL_PROBES: usize = 2;
/// Side by side must move rows this much faster than one at a time to be kept.
const MIN_SPEEDUP: f64 = 1.1;
/// Calls between two measurements.
const CALLS_BETWEEN_PROBES: u64 = 400;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// The very first call pays imports and caches: not measured.
    WarmUp,
    Alone,
    SideBySide,
    Decided {
        calls: u64,
    },
}

/// Rows, CPU seconds and the wall-clock span of the calls measured so far in a phase.
#[derive(Debug, Default)]
struct Window {
    calls: usize,
    rows: usize,
    cpu: f64,
    wall: f64,
    first_start: Option<Instant>,
    last_end: Option<Instant>,
}

impl Window {
    fn add(&mut self, rows: usize, cost: CallCost) {
        self.calls += 1;
        self.rows += rows;
        self.cpu += cost.cpu;
        self.wall += cost.took.as_secs_f64();
        self.first_start = Some(self.first_start.map_or(cost.start, |s| s.min(cost.start)));
        let end = cost.start + cost.took;
        self.last_end = Some(self.last_end.map_or(end, |e| e.max(end)));
    }

    fn span(&self) -> f64 {
        match (self.first_start, self.last_end) {
            (Some(s), Some(e)) => e.duration_since(s).as_secs_f64().max(1e-9),
            _ => 1e-9,
        }
    }
}

/// What one call cost: when it started, how long it took, its thread's CPU seconds.
#[derive(Debug, Clone, Copy)]
pub struct CallCost {
    pub start: Instant,
    pub took: Duration,
    pub cpu: f64,
}

impl CallCost {
    /// Runs `call` and measures it on the current thread.
    pub fn measure<T>(call: impl FnOnce() -> T) -> (T, CallCost) {
        let (start, cpu_start) = (Instant::now(), thread_cpu_seconds());
        let result = call();
        let cost = CallCost {
            start,
            took: start.elapsed(),
            cpu: thread_cpu_seconds() - cpu_start,
        };
        (result, cost)
    }
}

#[derive(Debug)]
struct State {
    allowed: usize,
    running: usize,
    phase: Phase,
    window: Window,
    /// Rows per second one at a time, while calls side by side are being timed.
    alone_rate: f64,
    /// Looks at the GIL during calls timed alone: how many, and how many found it free.
    gil_probes: usize,
    gil_free: usize,
    /// Counts phase changes: a call is measured only in the phase it started in.
    generation: u64,
}

/// A place taken in the gate: given back when the call ends, or on drop if the call
/// unwound (so a panic never leaves the gate one place short).
pub struct Place<'a> {
    gate: &'a CallGate,
    generation: u64,
    left: bool,
}

impl Place<'_> {
    /// Gives the place back and learns from the call it held.
    pub fn leave(mut self, rows: usize, cost: CallCost) {
        self.left = true;
        self.gate.release(self.generation, Some((rows, cost)));
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.left {
            self.gate.release(self.generation, None);
        }
    }
}

/// Admits at most the decided number of concurrent calls; waits without the GIL.
#[derive(Debug)]
pub struct CallGate {
    workers: usize,
    state: Mutex<State>,
    changed: Condvar,
}

impl CallGate {
    pub fn new(workers: usize) -> Self {
        let workers = workers.max(1);
        CallGate {
            workers,
            state: Mutex::new(State {
                allowed: 1,
                running: 0,
                phase: if workers == 1 {
                    Phase::Decided { calls: 0 }
                } else {
                    Phase::WarmUp
                },
                window: Window::default(),
                alone_rate: 0.0,
                gil_probes: 0,
                gil_free: 0,
                generation: 0,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while calls are to run one at a time: the caller's thread may then run them
    /// (see `lane.rs`).
    pub fn one_at_a_time(&self) -> bool {
        self.lock().allowed == 1
    }

    /// Waits (call it without the GIL) for a free place: the caller's thread takes one for
    /// each call it runs too, so "one at a time" holds across workers and caller.
    pub fn enter(&self) -> Place<'_> {
        let mut state = self.lock();
        while state.running >= state.allowed {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.running += 1;
        Place {
            gate: self,
            generation: state.generation,
            left: false,
        }
    }

    /// Waits for a free place, runs `call` on this thread, and learns from what it cost.
    pub fn run<T>(&self, rows: usize, call: impl FnOnce() -> T) -> T {
        let place = self.enter();
        let (result, cost) = CallCost::measure(call);
        place.leave(rows, cost);
        result
    }

    fn release(&self, generation: u64, learned: Option<(usize, CallCost)>) {
        let mut state = self.lock();
        state.running -= 1;
        if let Some((rows, cost)) = learned {
            self.learn(&mut state, generation, rows, cost);
        }
        drop(state);
        self.changed.notify_all();
    }

    /// True while calls are timed one at a time: a worker waiting for the caller's call then
    /// looks whether the GIL is free during it ([`Self::record_gil_probe`]).
    pub fn wants_gil_probe(&self) -> bool {
        self.lock().phase == Phase::Alone
    }

    /// What a look at the GIL during a call found: free (the function had released it), or
    /// held until the call let go.
    pub fn record_gil_probe(&self, free: bool) {
        let mut state = self.lock();
        if state.phase == Phase::Alone {
            state.gil_probes += 1;
            state.gil_free += usize::from(free);
        }
    }

    /// How many calls may run at once now.
    #[cfg(test)]
    fn allowed(&self) -> usize {
        self.lock().allowed
    }

    fn learn(&self, state: &mut State, generation: u64, rows: usize, cost: CallCost) {
        if generation != state.generation {
            // Started under the previous phase's limit: not a sample of this one.
            return;
        }
        let workers = self.workers;
        let phase = state.phase;
        match phase {
            // Even a first call that mostly waited says enough: a call that waits 200 ms
            // must not keep three other workers idle for four more calls.
            Phase::WarmUp if cost.cpu < MOSTLY_WAITING * cost.took.as_secs_f64() => {
                state.allowed = workers;
                state.phase = Phase::Decided { calls: 0 };
            }
            Phase::WarmUp => state.phase = Phase::Alone,
            Phase::Alone => {
                state.window.add(rows, cost);
                let wall = state.window.wall.max(1e-9);
                if state.window.cpu < MOSTLY_WAITING * wall {
                    state.window = Window::default();
                    state.allowed = workers;
                    state.phase = Phase::Decided { calls: 0 };
                } else if state.window.calls >= ALONE_CALLS {
                    let window = std::mem::take(&mut state.window);
                    let (probes, free) = (state.gil_probes, state.gil_free);
                    (state.gil_probes, state.gil_free) = (0, 0);
                    // Clear looks at the GIL answer without a trial (which cost ~7% of a
                    // 200-chunk run of the seed's function). Mostly held (pandas lets it go
                    // only for numpy's short inner loops): a second thread would queue for it.
                    // Mostly free: calls can overlap.
                    let held_mostly = probes >= MIN_GIL_PROBES && 4 * free <= probes;
                    let free_mostly = probes >= MIN_GIL_PROBES && 4 * free >= 3 * probes;
                    if held_mostly || free_mostly {
                        if free_mostly {
                            state.allowed = workers;
                        }
                        state.phase = Phase::Decided { calls: 0 };
                    } else {
                        state.alone_rate = window.rows as f64 / wall;
                        state.allowed = TRIAL_WIDTH.min(workers);
                        state.phase = Phase::SideBySide;
                    }
                }
            }
            Phase::SideBySide => {
                state.window.add(rows, cost);
                if state.window.calls >= WINDOW_CALLS_PER_PLACE * TRIAL_WIDTH.min(workers) {
                    let window = std::mem::take(&mut state.window);
                    let side_by_side_rate = window.rows as f64 / window.span();
                    let keep = side_by_side_rate >= MIN_SPEEDUP * state.alone_rate;
                    state.allowed = if keep { workers } else { 1 };
                    state.phase = Phase::Decided { calls: 0 };
                }
            }
            Phase::Decided { calls } => {
                state.phase = if workers > 1 && calls + 1 >= CALLS_BETWEEN_PROBES {
                    state.allowed = 1;
                    (state.gil_probes, state.gil_free) = (0, 0);
                    Phase::Alone
                } else {
                    Phase::Decided { calls: calls + 1 }
                };
            }
        }
        if state.phase != phase && !matches!(state.phase, Phase::Decided { .. }) {
            state.generation += 1;
        }
    }
}

/// CPU time this thread has used, in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the call only writes it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if rc != 0 {
        return 0.0;
    }
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call of `ms` milliseconds from `at` whose thread was on the CPU for `cpu_ms`.
    fn call(at: Instant, ms: u64, cpu_ms: f64) -> CallCost {
        CallCost {
            start: at,
            took: Duration::from_millis(ms),
            cpu: cpu_ms / 1000.0,
        }
    }

    #[test]
    fn work_that_serializes_anyway_runs_one_call_at_a_time() {
        // Busy calls that hold one lock for their whole length, like a function that never
        // lets the GIL go: timed alone, then two let in together, the second runs only
        // after the first (its 2 ms start when the first's end). Rows move no faster, so
        // the gate goes back to one call at a time and stays there.
        let gate = CallGate::new(3);
        let t0 = Instant::now();
        for cost in busy_calls(t0, 1 + ALONE_CALLS, 2) {
            assert!(gate.one_at_a_time());
            gate.enter().leave(1000, cost);
        }
        assert_eq!(gate.allowed(), TRIAL_WIDTH);
        let later = t0 + Duration::from_secs(1);
        let serialized = busy_calls(later, TRIAL_WIDTH * WINDOW_CALLS_PER_PLACE, 2);
        for pair in serialized.chunks(TRIAL_WIDTH) {
            let (a, b) = (gate.enter(), gate.enter());
            a.leave(1000, pair[0]);
            b.leave(1000, pair[1]);
        }
        assert_eq!(gate.allowed(), 1);
        assert!(matches!(gate.lock().phase, Phase::Decided { .. }));
        let after = later + Duration::from_secs(1);
        for cost in busy_calls(after, 50, 2) {
            gate.enter().leave(1000, cost);
        }
        assert_eq!(
            gate.allowed(),
            1,
            "decided: no new trial before the next probe"
        );
    }

    #[test]
    fn a_first_call_that_mostly_waits_opens_every_place_at_once() {
        // 20 ms of which 0.1 ms on the CPU (a sleep, I/O).
        let gate = CallGate::new(3);
        gate.enter().leave(1000, call(Instant::now(), 20, 0.1));
        assert_eq!(gate.allowed(), 3);
    }

    /// `calls` back-to-back calls of `ms` milliseconds each from `at`, all on the CPU.
    fn busy_calls(at: Instant, calls: usize, ms: u64) -> Vec<CallCost> {
        (0..calls as u32)
            .map(|i| CallCost {
                start: at + Duration::from_millis(ms) * i,
                took: Duration::from_millis(ms),
                cpu: ms as f64 / 1000.0,
            })
            .collect()
    }

    #[test]
    fn the_trial_side_by_side_is_kept_only_if_it_moves_rows_faster() {
        // GIL-bound calls (as on the caller's thread): one at a time, then a trial two at a
        // time that moves rows no faster, so back to one at a time.
        let gate = CallGate::new(2);
        let t0 = Instant::now();
        for cost in busy_calls(t0, 1 + ALONE_CALLS, 2) {
            assert!(gate.one_at_a_time());
            gate.enter().leave(1000, cost);
        }
        assert_eq!(gate.allowed(), TRIAL_WIDTH, "a trial side by side follows");
        let later = t0 + Duration::from_secs(1);
        for cost in busy_calls(later, TRIAL_WIDTH * WINDOW_CALLS_PER_PLACE, 2) {
            gate.enter().leave(1000, cost);
        }
        assert!(gate.one_at_a_time());
        // A trial where two calls overlapped fully is kept, and opens every worker.
        let gate = CallGate::new(3);
        for cost in busy_calls(t0, 1 + ALONE_CALLS, 2) {
            gate.enter().leave(1000, cost);
        }
        assert_eq!(gate.allowed(), TRIAL_WIDTH);
        for cost in busy_calls(later, WINDOW_CALLS_PER_PLACE, 2) {
            let (a, b) = (gate.enter(), gate.enter());
            a.leave(1000, cost);
            b.leave(1000, cost);
        }
        assert_eq!(gate.allowed(), 3);
    }

    #[test]
    fn looks_at_the_gil_decide_without_a_trial() {
        let t0 = Instant::now();
        for (free, expected) in [(false, 1), (true, 3)] {
            let gate = CallGate::new(3);
            for (i, cost) in busy_calls(t0, 1 + ALONE_CALLS, 2).into_iter().enumerate() {
                if i > 0 {
                    assert!(gate.wants_gil_probe());
                    gate.record_gil_probe(free);
                }
                gate.enter().leave(1000, cost);
            }
            assert!(!gate.wants_gil_probe());
            assert_eq!(gate.allowed(), expected, "GIL free during calls: {free}");
            assert!(matches!(gate.lock().phase, Phase::Decided { .. }));
        }
    }

    #[test]
    fn a_call_that_unwinds_gives_its_place_back() {
        let gate = CallGate::new(1);
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            gate.run(1000, || panic!("the call failed"))
        }));
        assert!(unwound.is_err());
        // One place, and it is free again: this would wait forever otherwise.
        gate.run(1000, || ());
    }

    #[test]
    fn calls_that_mostly_wait_open_every_place_after_a_busy_first_call() {
        // The first call pays for imports (busy, not measured); the calls after it sleep
        // 3 ms each on 0.1 ms of CPU: every worker may run one.
        let gate = CallGate::new(3);
        let t0 = Instant::now();
        gate.enter().leave(1000, call(t0, 50, 50.0));
        assert_eq!(gate.allowed(), 1);
        gate.enter()
            .leave(1000, call(t0 + Duration::from_millis(50), 3, 0.1));
        assert_eq!(gate.allowed(), 3);
        // All three places are free to take at once.
        let places = [gate.enter(), gate.enter(), gate.enter()];
        assert_eq!(gate.lock().running, 3);
        drop(places);
        assert_eq!(gate.lock().running, 0);
    }
}
