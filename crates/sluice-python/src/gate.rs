//! How many workers may run the user's Python function at once. A function that holds the
//! GIL gains nothing from a second thread and loses to the hand-offs (measured on 2 cores:
//! the seed's pandas function ran 1.5-1.8x slower with 2-4 workers than with one); one that
//! releases it (I/O, sleeps, numpy on large arrays) gains up to the number of workers.
//!
//! The gate starts with every worker and measures a window of calls: the CPU time the calls
//! used against the window's wall time. Well under one core means the GIL sat free (the
//! calls wait on something else: keep them side by side); well over one means they ran in
//! parallel (keep them). About one core is what a GIL-bound function shows, or one that
//! mixes waiting and Python: only then are a few calls run alone, and the faster way in
//! rows per second is kept. It measures again every so often, as chunks and data change.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Calls (times the workers) in a measured window of side-by-side calls.
const WINDOW_CALLS_PER_WORKER: usize = 4;
/// Calls timed alone when side by side is in doubt.
const ALONE_CALLS: usize = 4;
/// Cores' worth of CPU under which the GIL was mostly free, and over which calls ran in
/// parallel: outside this band side by side is kept without trying calls alone.
const CORES_IN_DOUBT: std::ops::Range<f64> = 0.7..1.3;
/// Side by side must move rows this much faster than alone to be kept.
const MIN_SPEEDUP: f64 = 1.1;
/// Calls between two measurements.
const CALLS_BETWEEN_PROBES: u64 = 400;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// The very first call pays imports and caches: not measured.
    WarmUp,
    SideBySide,
    Alone,
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
    fn add(&mut self, rows: usize, start: Instant, took: Duration, cpu: f64) {
        self.calls += 1;
        self.rows += rows;
        self.cpu += cpu;
        self.wall += took.as_secs_f64();
        self.first_start = Some(self.first_start.map_or(start, |s| s.min(start)));
        let end = start + took;
        self.last_end = Some(self.last_end.map_or(end, |e| e.max(end)));
    }

    fn span(&self) -> f64 {
        match (self.first_start, self.last_end) {
            (Some(s), Some(e)) => e.duration_since(s).as_secs_f64().max(1e-9),
            _ => 1e-9,
        }
    }
}

#[derive(Debug)]
struct State {
    allowed: usize,
    running: usize,
    phase: Phase,
    window: Window,
    /// Rows per second side by side, while calls alone are being timed.
    side_by_side_rate: f64,
    /// Counts phase changes: a call is measured only in the phase it started in.
    generation: u64,
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
                allowed: workers,
                running: 0,
                phase: if workers == 1 {
                    Phase::Decided { calls: 0 }
                } else {
                    Phase::WarmUp
                },
                window: Window::default(),
                side_by_side_rate: 0.0,
                generation: 0,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a free place, runs `call`, and learns from what it cost.
    pub fn run<T>(&self, rows: usize, call: impl FnOnce() -> T) -> T {
        let generation = {
            let mut state = self.lock();
            while state.running >= state.allowed {
                state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            state.running += 1;
            state.generation
        };
        let (start, cpu_start) = (Instant::now(), thread_cpu_seconds());
        let result = call();
        let cpu = thread_cpu_seconds() - cpu_start;
        self.finished(generation, rows, start, start.elapsed(), cpu);
        result
    }

    /// How many calls may run at once now.
    #[cfg(test)]
    fn allowed(&self) -> usize {
        self.lock().allowed
    }

    fn finished(&self, generation: u64, rows: usize, start: Instant, took: Duration, cpu: f64) {
        let mut state = self.lock();
        state.running -= 1;
        let workers = self.workers;
        if generation != state.generation {
            // Started under the previous phase's limit: not a sample of this one.
            drop(state);
            self.changed.notify_all();
            return;
        }
        let phase = state.phase;
        match phase {
            Phase::WarmUp => state.phase = Phase::SideBySide,
            Phase::SideBySide => {
                state.window.add(rows, start, took, cpu);
                if state.window.calls >= WINDOW_CALLS_PER_WORKER * workers {
                    let window = std::mem::take(&mut state.window);
                    let cores = window.cpu / window.span();
                    if CORES_IN_DOUBT.contains(&cores) {
                        state.side_by_side_rate = window.rows as f64 / window.span();
                        state.allowed = 1;
                        state.phase = Phase::Alone;
                    } else {
                        state.phase = Phase::Decided { calls: 0 };
                    }
                }
            }
            Phase::Alone => {
                state.window.add(rows, start, took, cpu);
                if state.window.calls >= ALONE_CALLS {
                    let window = std::mem::take(&mut state.window);
                    let alone_rate = window.rows as f64 / window.wall.max(1e-9);
                    let keep_side_by_side = state.side_by_side_rate >= MIN_SPEEDUP * alone_rate;
                    state.allowed = if keep_side_by_side { workers } else { 1 };
                    state.phase = Phase::Decided { calls: 0 };
                }
            }
            Phase::Decided { calls } => {
                state.phase = if workers > 1 && calls + 1 >= CALLS_BETWEEN_PROBES {
                    state.allowed = workers;
                    Phase::SideBySide
                } else {
                    Phase::Decided { calls: calls + 1 }
                };
            }
        }
        if state.phase != phase && !matches!(state.phase, Phase::Decided { .. }) {
            state.generation += 1;
        }
        drop(state);
        self.changed.notify_all();
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex as StdMutex};

    /// Runs `calls` calls of `work` on `workers` threads through one gate.
    fn drive(
        workers: usize,
        calls: usize,
        work: impl Fn() + Send + Sync + 'static,
    ) -> Arc<CallGate> {
        let gate = Arc::new(CallGate::new(workers));
        let next = Arc::new(AtomicUsize::new(0));
        let work = Arc::new(work);
        let threads: Vec<_> = (0..workers)
            .map(|_| {
                let (gate, next, work) = (gate.clone(), next.clone(), work.clone());
                std::thread::spawn(move || {
                    while next.fetch_add(1, Ordering::SeqCst) < calls {
                        gate.run(1000, || work());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("worker");
        }
        gate
    }

    #[test]
    fn work_that_serializes_anyway_runs_one_call_at_a_time() {
        // A lock held for the whole call while burning CPU, like a function that never
        // releases the GIL.
        let gil = Arc::new(StdMutex::new(()));
        let gate = drive(3, 40, move || {
            let _held = gil.lock().expect("lock");
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(3) {
                std::hint::black_box(start.elapsed());
            }
        });
        assert_eq!(gate.allowed(), 1);
    }

    #[test]
    fn work_that_overlaps_runs_on_every_worker() {
        let gate = drive(3, 40, || std::thread::sleep(Duration::from_millis(3)));
        assert_eq!(gate.allowed(), 3);
    }
}
