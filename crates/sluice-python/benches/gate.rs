//! The call gate (`src/gate.rs`) on real threads, real CPU time and real wall time: what it
//! decides for work that serializes anyway, work that waits, and CPU work that overlaps.
//! Its unit tests feed it synthetic costs; this is the end-to-end check they replace, kept
//! out of CI because its outcome depends on how busy the machine is.
//! Run: `cargo bench -p sluice-python --bench gate` (see bench/README.md).

#[allow(dead_code)]
#[path = "../src/gate.rs"]
mod gate;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gate::CallGate;

const WORKERS: usize = 3;
const CALLS: usize = 200;

/// What one workload did through one gate.
struct Outcome {
    one_at_a_time: bool,
    most_at_once: usize,
    wall: Duration,
}

/// Runs `CALLS` calls of `work` on `WORKERS` threads through one gate, counting how many
/// calls were inside `work` at once.
fn drive(work: impl Fn() + Send + Sync + 'static) -> Outcome {
    let gate = Arc::new(CallGate::new(WORKERS));
    let next = Arc::new(AtomicUsize::new(0));
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let start = Instant::now();
    let threads: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (gate, next, work) = (gate.clone(), next.clone(), work.clone());
            let (inside, most) = (inside.clone(), most.clone());
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::SeqCst) < CALLS {
                    gate.run(1000, || {
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        work();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        })
        .collect();
    for t in threads {
        if t.join().is_err() {
            eprintln!("a worker panicked");
            std::process::exit(2);
        }
    }
    Outcome {
        one_at_a_time: gate.one_at_a_time(),
        most_at_once: most.load(Ordering::SeqCst),
        wall: start.elapsed(),
    }
}

fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::black_box(start.elapsed());
    }
}

fn main() {
    // A lock held for the whole call while burning CPU: a function that never releases
    // the GIL. The gate should end at one call at a time.
    let gil = Arc::new(Mutex::new(()));
    let serialized = drive(move || {
        let _held = gil.lock().unwrap_or_else(|p| p.into_inner());
        spin(Duration::from_millis(3));
    });
    // Sleeping calls: every worker.
    let waiting = drive(|| std::thread::sleep(Duration::from_millis(3)));
    // CPU work with no shared lock: every worker if the machine has the cores for it.
    let overlapping = drive(|| spin(Duration::from_millis(3)));

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("gate on real threads: {WORKERS} workers, {CALLS} calls of 3 ms, {cores} cores\n");
    println!("| workload | expected | decided | most calls at once | wall |");
    println!("|---|---|---|---|---|");
    let mut unexpected = 0;
    for (name, outcome, expect_one) in [
        ("holds one lock (like the GIL)", &serialized, true),
        ("sleeps", &waiting, false),
        ("CPU, no lock", &overlapping, cores < 2),
    ] {
        let decided = if outcome.one_at_a_time {
            "one at a time"
        } else {
            "side by side"
        };
        let expected = if expect_one {
            "one at a time"
        } else {
            "side by side"
        };
        if decided != expected {
            unexpected += 1;
        }
        println!(
            "| {name} | {expected} | {decided} | {} | {:.0} ms |",
            outcome.most_at_once,
            outcome.wall.as_secs_f64() * 1000.0
        );
    }
    if unexpected > 0 {
        println!(
            "\n{unexpected} workload(s) decided otherwise than expected (a busy machine \
             blurs CPU and wall time; rerun on an idle one before concluding)"
        );
    }
}
