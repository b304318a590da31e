//! Adaptive batching: how many rows the next chunk gets.
//!
//! The rule (AIMD on the chunk's row count), applied once per chunk before it is cut:
//! 1. Learn bytes per row from the chunks seen (exponential moving average of Arrow's own
//!    buffer sizes), and how much larger a chunk's output is than its input.
//! 2. Memory pressure (tracked bytes above 75% of the budget): halve the rows, but not
//!    below the cap of rule 4 (a full budget is also the steady state of a run whose
//!    consumer is slow, or of a small budget held mostly by read-ahead and the sink's
//!    buffer, where smaller chunks would only add overhead; admission keeps the budget).
//! 3. Headroom (tracked bytes below 50% of the budget): grow the rows by a quarter, from
//!    the second chunk on (before the first, an empty budget is no evidence of headroom).
//! 4. Never let one chunk need more than its share of the budget: the budget less the
//!    read-ahead, divided among twice the workers plus two (chunks being processed, plus
//!    as many waiting in the reorder buffer or for the consumer). This cap is what keeps
//!    a chunk's memory inside the budget whatever the rows weigh.
//! 5. Never let one chunk need more than [`THROUGHPUT_CHUNK_BYTES`] (input plus output):
//!    past that size the kernels run out of cache and a chunk only costs memory, so a large
//!    budget is a ceiling the run stays far below, not a level it fills (measured: the
//!    seed's workload ran fastest at 64 MB of budget, whose share is this size, and slower
//!    at every larger budget when chunks grew to fill it; see bench/RESULTS.md).
//! 6. Always stay within `[min_rows, max_rows]`.
//!
//! With adaptive batching off the size never changes: every chunk has exactly `chunk_size`
//! rows (the last one fewer), so per-chunk results are reproducible.

use serde::Serialize;

/// Fraction of the budget that decoded-but-not-yet-chunked input may hold, at most.
pub(crate) const READ_AHEAD_FRACTION: f64 = 0.25;
/// The size (input plus output bytes) at which a chunk is as fast per row as it gets.
pub(crate) const THROUGHPUT_CHUNK_BYTES: f64 = 8.0 * 1024.0 * 1024.0;
const HIGH_WATER: f64 = 0.75;
const LOW_WATER: f64 = 0.50;
const EWMA_ALPHA: f64 = 0.3;
const MAX_HISTORY: usize = 10_000;

/// One decision of the sizer that changed the chunk size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChunkSizeChange {
    /// Sequence number of the first chunk cut with this size.
    pub from_chunk: u64,
    pub rows: usize,
}

#[derive(Debug, Clone)]
pub struct BatchSizer {
    current: usize,
    min_rows: usize,
    max_rows: usize,
    adaptive: bool,
    bytes_per_row: Option<f64>,
    output_ratio: f64,
    /// Whether `output_ratio` was measured (else it is the 1x guess).
    output_measured: bool,
    history: Vec<ChunkSizeChange>,
}

impl BatchSizer {
    pub fn new(initial: usize, min_rows: usize, max_rows: usize, adaptive: bool) -> Self {
        // The bounds are adaptive sizing's: a fixed size is exactly what was asked for.
        let current = if adaptive {
            initial.clamp(min_rows.max(1), max_rows.max(1))
        } else {
            initial.max(1)
        };
        BatchSizer {
            current,
            min_rows: min_rows.max(1),
            max_rows: max_rows.max(1),
            adaptive,
            bytes_per_row: None,
            output_ratio: 1.0,
            output_measured: false,
            history: vec![ChunkSizeChange {
                from_chunk: 0,
                rows: current,
            }],
        }
    }

    pub fn current(&self) -> usize {
        self.current
    }

    pub fn is_adaptive(&self) -> bool {
        self.adaptive
    }

    /// Sets the size by hand (a custom controller did); still clamped to the bounds.
    pub fn set_current(&mut self, rows: usize, next_chunk: u64) {
        let rows = rows.clamp(self.min_rows, self.max_rows);
        self.record(rows, next_chunk);
    }

    pub fn bytes_per_row(&self) -> Option<f64> {
        self.bytes_per_row
    }

    pub fn output_ratio(&self) -> f64 {
        self.output_ratio
    }

    pub fn history(&self) -> &[ChunkSizeChange] {
        &self.history
    }

    /// Learns the weight of a row from a chunk of input.
    pub fn observe_input(&mut self, rows: usize, bytes: u64) {
        if rows == 0 {
            return;
        }
        let sample = bytes as f64 / rows as f64;
        self.bytes_per_row = Some(match self.bytes_per_row {
            None => sample,
            Some(avg) => avg + EWMA_ALPHA * (sample - avg),
        });
    }

    /// Whether a chunk's output has been weighed (else the output estimate is a guess).
    pub fn output_measured(&self) -> bool {
        self.output_measured
    }

    /// A new run (perhaps of another function, over other input): its first output and
    /// its rows are weighed afresh, so a run of wide rows is not sized by narrow ones.
    pub fn forget_run_measures(&mut self) {
        self.output_measured = false;
        self.bytes_per_row = None;
    }

    /// Learns how much larger (or smaller) the function makes a chunk.
    pub fn observe_output(&mut self, input_bytes: u64, output_bytes: u64) {
        if input_bytes == 0 {
            return;
        }
        let sample = output_bytes as f64 / input_bytes as f64;
        if !self.output_measured {
            self.output_measured = true;
            self.output_ratio = sample;
            return;
        }
        // Rise at once, fall slowly: an underestimate costs budget, an overestimate only speed.
        self.output_ratio = if sample > self.output_ratio {
            sample
        } else {
            self.output_ratio + EWMA_ALPHA * (sample - self.output_ratio)
        };
    }

    /// Bytes the engine should reserve for a chunk's output, given its input bytes.
    pub fn output_estimate(&self, input_bytes: u64) -> u64 {
        (input_bytes as f64 * self.output_ratio).ceil() as u64
    }

    /// Most rows one chunk may have so that input plus output fit its share of the budget
    /// and stay at the size that is fastest per row (rules 4 and 5).
    pub fn cap_rows(&self, budget_bytes: u64, workers: usize) -> Option<usize> {
        let per_row = self.bytes_per_row? * (1.0 + self.output_ratio);
        let share = budget_bytes as f64 * (1.0 - READ_AHEAD_FRACTION) / (2 * workers + 2) as f64;
        let bytes = share.min(THROUGHPUT_CHUNK_BYTES);
        Some(((bytes / per_row.max(1.0)).floor() as usize).max(1))
    }

    /// One step of the rule in the module docs; returns the rows for the next chunk.
    pub fn adapt(
        &mut self,
        pressure: f64,
        budget_bytes: u64,
        workers: usize,
        next_chunk: u64,
    ) -> usize {
        if !self.adaptive {
            return self.current;
        }
        let mut rows = self.current;
        let cap = self.cap_rows(budget_bytes, workers);
        if pressure > HIGH_WATER {
            // A full budget is also the steady state of a run whose consumer is the
            // bottleneck, or of a small budget mostly held by read-ahead and the sink's
            // buffer; a chunk already inside its share (the cap) is not what overfills it,
            // and halving it only adds per-chunk cost (measured at 64 MB: 529 chunks of
            // 18k rows instead of 119 of 84k, 5-15% slower). Admission keeps the budget.
            let floor = cap.map_or(1, |c| c.max(1));
            rows = (rows / 2).max(floor.min(rows));
        } else if pressure < LOW_WATER && next_chunk > 0 {
            // Before the first chunk an empty budget says nothing about headroom: the
            // first chunk has the size asked for (or less, if the cap says so).
            rows = rows.saturating_add((rows / 4).max(1));
        }
        if let Some(cap) = cap {
            rows = rows.min(cap);
        }
        let rows = rows.clamp(self.min_rows, self.max_rows);
        self.record(rows, next_chunk);
        rows
    }

    fn record(&mut self, rows: usize, next_chunk: u64) {
        if rows != self.current {
            self.current = rows;
            if self.history.len() < MAX_HISTORY {
                self.history.push(ChunkSizeChange {
                    from_chunk: next_chunk,
                    rows,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_sizer_never_changes() {
        let mut s = BatchSizer::new(1000, 1, 1_000_000, false);
        s.observe_input(1000, 1_000_000_000);
        for i in 0..10 {
            assert_eq!(s.adapt(0.99, 1024, 2, i), 1000);
        }
        assert_eq!(s.history().len(), 1);
    }

    #[test]
    fn fixed_size_is_not_clamped_to_the_adaptive_bounds() {
        assert_eq!(BatchSizer::new(1, 2, 2, false).current(), 1);
        assert_eq!(BatchSizer::new(500, 1, 100, false).current(), 500);
        assert_eq!(BatchSizer::new(1, 2, 2, true).current(), 2);
    }

    #[test]
    fn halves_under_pressure_and_grows_with_headroom() {
        let mut s = BatchSizer::new(1000, 10, 100_000, true);
        assert_eq!(
            s.adapt(0.1, u64::MAX / 4, 2, 0),
            1000,
            "no growth before chunk 0"
        );
        assert_eq!(s.adapt(0.9, u64::MAX / 4, 2, 1), 500);
        assert_eq!(s.adapt(0.9, u64::MAX / 4, 2, 2), 250);
        assert_eq!(s.adapt(0.6, u64::MAX / 4, 2, 3), 250);
        assert_eq!(s.adapt(0.1, u64::MAX / 4, 2, 4), 312);
    }

    #[test]
    fn pressure_does_not_shrink_a_chunk_that_fits_its_share() {
        let mut s = BatchSizer::new(1000, 1, 10_000_000, true);
        s.observe_input(100, 10_000); // 100 bytes per row, output as large as input
        let budget = 48 << 20;
        let cap = s.cap_rows(budget, 2).expect("rows weighed");
        let mut rows = 0;
        for chunk in 1..100 {
            rows = s.adapt(0.0, budget, 2, chunk);
        }
        assert_eq!(rows, cap);
        for chunk in 100..110 {
            assert_eq!(s.adapt(0.99, budget, 2, chunk), cap, "chunk {chunk}");
        }
        // Above the cap (the rows turned out heavier) pressure still halves.
        s.observe_input(100, 100_000);
        s.observe_input(100, 100_000);
        let smaller = s.adapt(0.99, budget, 2, 110);
        assert!(smaller < cap, "{smaller} vs {cap}");
    }

    #[test]
    fn a_large_budget_is_a_ceiling_not_a_chunk_size() {
        let mut s = BatchSizer::new(1000, 1, 100_000_000, true);
        s.observe_input(100, 10_000); // 100 bytes per row, output as large as input
        let mut rows = 0;
        for chunk in 1..200 {
            rows = s.adapt(0.0, 1 << 40, 2, chunk);
        }
        assert_eq!(rows, (THROUGHPUT_CHUNK_BYTES / 200.0) as usize);
    }

    #[test]
    fn cap_keeps_a_chunk_inside_its_share_of_the_budget() {
        let mut s = BatchSizer::new(1_000_000, 1, 10_000_000, true);
        s.observe_input(100, 10_000); // 100 bytes per row
        let budget = 1_000_000;
        let rows = s.adapt(0.0, budget, 2, 1);
        let need = rows as f64 * 100.0 * (1.0 + s.output_ratio());
        assert!(need <= budget as f64 * 0.75 / 6.0 + 1.0, "rows {rows}");
    }
}
