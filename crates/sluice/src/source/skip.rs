//! A source adapter that marks the first N rows of another source as already committed: how
//! a resumed run skips the input rows the parts of an earlier run cover. Whole parts whose
//! row counts are known (Parquet row groups) are skipped without reading them; the rest of
//! the prefix is decoded by the engine like any other input (on the workers, in parallel,
//! inside the budget) and dropped before chunking, so row numbers stay those of the whole
//! input.

use arrow::datatypes::SchemaRef;

use super::{PartHint, Source, SourcePart};
use crate::error::Result;

/// Yields the rows of `inner` after its first `rows` rows (see the module doc).
///
/// The skipped rows must exist: the engine fails a run whose input ends inside the prefix
/// (it is not the input the earlier run read).
pub struct SkipRows<S> {
    inner: S,
    skip: u64,
}

impl<S: Source> SkipRows<S> {
    pub fn new(inner: S, rows: u64) -> Self {
        SkipRows { inner, skip: rows }
    }

    /// The input row the run resumes at.
    pub fn rows(&self) -> u64 {
        self.skip
    }
}

impl<S: Source> Source for SkipRows<S> {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn name(&self) -> String {
        self.inner.name()
    }

    fn total_bytes(&self) -> Option<u64> {
        self.inner.total_bytes()
    }

    fn next_part(&mut self, hint: PartHint) -> Result<Option<(SourcePart, u64)>> {
        self.inner.next_part(hint)
    }

    fn resume_row(&self) -> u64 {
        self.inner.resume_row() + self.skip
    }

    fn skip_whole_parts(&mut self, max_rows: u64) -> Result<(u64, u64)> {
        self.inner.skip_whole_parts(max_rows)
    }

    fn committed_rows_ahead(&self) -> u64 {
        self.inner.committed_rows_ahead() + self.skip
    }
}
