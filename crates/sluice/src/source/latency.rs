//! When a live source (a push stream, a broker) should ask the engine to cut a short chunk:
//! once the oldest row not yet in a full chunk has waited `max_latency`. One clock for
//! every live source, so each answers the same way whether input pauses or keeps coming.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LatencyClock {
    max_latency: Duration,
    /// When the oldest row given to the engine and not yet in a full chunk arrived.
    oldest: Option<Instant>,
    /// Rows given since the last cut, modulo the chunk size.
    rows: usize,
}

impl LatencyClock {
    pub fn new(max_latency: Duration) -> Self {
        LatencyClock {
            max_latency,
            oldest: None,
            rows: 0,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.oldest.map(|t| t + self.max_latency)
    }

    /// How long a wait for input may last: until the oldest row is due, at most `tick`.
    pub fn wait(&self, tick: Duration) -> Duration {
        self.deadline().map_or(tick, |d| {
            d.saturating_duration_since(Instant::now()).min(tick)
        })
    }

    /// `rows` arrived (at `at`) toward chunks of `chunk` rows. True when the oldest row
    /// given before them has waited long enough: the engine should cut now, these rows
    /// included (input that keeps coming never lets a wait time out, so this is checked
    /// on arrival too, not only in [`Self::idle`]).
    pub fn arrived(&mut self, rows: usize, chunk: usize, at: Instant) -> bool {
        let due = self.deadline().is_some_and(|d| Instant::now() >= d);
        if rows > 0 {
            let chunk = chunk.max(1);
            if self.oldest.is_none() {
                self.oldest = Some(at);
            }
            self.rows += rows;
            if self.rows >= chunk {
                // Full chunks will be cut; what is left over arrived now.
                self.rows %= chunk;
                self.oldest = (self.rows > 0).then_some(at);
            }
        }
        if due {
            self.restart();
        }
        due
    }

    /// A wait brought no input. True (and the clock restarts) when the oldest row is due.
    pub fn idle(&mut self) -> bool {
        let due = self.deadline().is_some_and(|d| Instant::now() >= d);
        if due {
            self.restart();
        }
        due
    }

    fn restart(&mut self) {
        self.oldest = None;
        self.rows = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_that_keep_coming_are_cut_once_the_oldest_waited() {
        let mut clock = LatencyClock::new(Duration::ZERO);
        let t0 = Instant::now();
        assert!(
            !clock.arrived(1, 1000, t0),
            "nothing waited before the first row"
        );
        assert!(
            clock.arrived(1, 1000, t0),
            "the first row is past its latency"
        );
        assert!(!clock.idle(), "restarted: nothing uncut");
    }

    #[test]
    fn full_chunks_restart_the_clock_and_a_long_limit_never_cuts_early() {
        let mut clock = LatencyClock::new(Duration::from_secs(3600));
        let t0 = Instant::now();
        assert!(!clock.arrived(10, 10, t0));
        assert_eq!(
            clock.wait(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
        assert!(!clock.arrived(5, 10, t0));
        assert!(clock.wait(Duration::from_secs(7200)) <= Duration::from_secs(3600));
        assert!(!clock.idle());
    }
}
