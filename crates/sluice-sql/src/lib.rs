//! Per-chunk SQL on Apache DataFusion: a query over the table `chunk` is planned once and
//! then run on every chunk, from any number of threads, with no re-parsing or re-planning.
//! It is not a query engine over the whole dataset: aggregates and windows see one chunk.
//!
//! ```text
//!  ChunkSql::new(sql, schema)                    ChunkSql::apply(&chunk)   (any thread)
//!  ──────────────────────────                    ─────────────────────────────────────
//!  parse → logical plan → optimize → physical    template ──bind_chunk──► copy with the
//!  plan, against a placeholder `chunk` leaf ──►  (shared,                 chunk in its leaf
//!  = the template (one partition, no stats)       immutable)              │ execute on this
//!                                                                         ▼ thread, concat
//!                                                                         one RecordBatch
//! ```

mod chunk_aggregates;
mod error;
mod global;
mod plan;
mod scan;
mod stddev;
mod string_eq;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;

pub use error::SqlError;
pub use global::{GlobalPartial, GlobalSql, GlobalValues, Windows};

/// A SQL query planned once for chunks of one schema, ready to run on each chunk.
///
/// Holds only the optimized physical plan and what running it needs; there is no parser,
/// planner or session left in it, so [`apply`](Self::apply) cannot re-plan. `Send + Sync`:
/// share it with `Arc` across worker threads.
pub struct ChunkSql {
    sql: String,
    input_schema: SchemaRef,
    output_schema: SchemaRef,
    /// Never executed itself: each run executes a copy with the chunk bound to its leaves.
    template: Arc<dyn ExecutionPlan>,
    task_ctx: Arc<TaskContext>,
    /// `Some` when copies of the plan share per-run state (scalar subqueries): runs take turns.
    exclusive: Option<Mutex<()>>,
    scans_planned: Arc<AtomicUsize>,
}

impl ChunkSql {
    /// Parse, validate and plan `sql` once against `input_schema`; the table is named `chunk`.
    ///
    /// A query that does not parse, names a missing column, or is not a query (DDL, DML,
    /// `SET`) fails here with DataFusion's message, before any data is read.
    pub fn new(sql: &str, input_schema: SchemaRef) -> Result<Self, SqlError> {
        let scans_planned = Arc::new(AtomicUsize::new(0));
        let planned = plan::plan(sql, &input_schema, Arc::clone(&scans_planned))?;
        Ok(Self::from_planned(
            sql,
            input_schema,
            planned,
            scans_planned,
        ))
    }

    /// A query already planned (by [`GlobalSql`]) from `sql` against `input_schema`.
    pub(crate) fn from_planned(
        sql: &str,
        input_schema: SchemaRef,
        planned: plan::Planned,
        scans_planned: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            sql: sql.to_string(),
            input_schema,
            output_schema: planned.template.schema(),
            template: planned.template,
            task_ctx: planned.task_ctx,
            exclusive: planned.exclusive.then(|| Mutex::new(())),
            scans_planned,
        }
    }

    /// The schema of every batch [`apply`](Self::apply) returns.
    pub fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.output_schema)
    }

    /// The query text as given.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Run the already-planned query on one chunk and return its result as one batch.
    ///
    /// The whole chunk is the table `chunk`, so window functions such as `AVG(x) OVER ()`
    /// and aggregates work over the chunk. An empty result is an empty batch with the
    /// output schema. The chunk's columns must have the names and types it was planned for.
    pub fn apply(&self, chunk: &RecordBatch) -> Result<RecordBatch, SqlError> {
        let chunk = self.conform(chunk)?;
        let rows = chunk.num_rows();
        let failed = |source| SqlError::Execute { rows, source };

        let _turn = self
            .exclusive
            .as_ref()
            .map(|turn| turn.lock().unwrap_or_else(PoisonError::into_inner));
        let plan = scan::bind_chunk(&self.template, &chunk).map_err(failed)?;
        let mut batches = plan::run(plan, Arc::clone(&self.task_ctx)).map_err(failed)?;

        if batches.len() == 1 && batches[0].schema() == self.output_schema {
            return Ok(batches.swap_remove(0));
        }
        concat_batches(&self.output_schema, &batches)
            .map_err(|e| failed(DataFusionError::ArrowError(Box::new(e), None)))
    }

    /// The optimized physical plan, indented one operator per line (as EXPLAIN shows it).
    pub fn physical_plan_text(&self) -> String {
        datafusion::physical_plan::displayable(self.template.as_ref())
            .indent(true)
            .to_string()
    }

    /// How many times a scan of `chunk` was planned: once per table reference in the query,
    /// during [`new`](Self::new), and never again. For the plan-once tests.
    #[doc(hidden)]
    pub fn scans_planned(&self) -> usize {
        self.scans_planned.load(Ordering::Relaxed)
    }

    /// `chunk` with the planned schema, after checking its columns match it.
    fn conform(&self, chunk: &RecordBatch) -> Result<RecordBatch, SqlError> {
        if chunk.schema() == self.input_schema {
            return Ok(chunk.clone());
        }
        let expected = self.input_schema.fields();
        let found = chunk.schema_ref().fields();
        if expected.len() != found.len() {
            let names = |fields: &arrow::datatypes::Fields| {
                let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
                names.join(", ")
            };
            return Err(SqlError::SchemaMismatch {
                detail: format!(
                    "expected {} columns ({}), found {} ({})",
                    expected.len(),
                    names(expected),
                    found.len(),
                    names(found)
                ),
            });
        }
        for (i, (want, got)) in expected.iter().zip(found.iter()).enumerate() {
            if want.name() != got.name() || want.data_type() != got.data_type() {
                return Err(SqlError::SchemaMismatch {
                    detail: format!(
                        "column {i} should be `{}` of type {}, found `{}` of type {}",
                        want.name(),
                        want.data_type(),
                        got.name(),
                        got.data_type()
                    ),
                });
            }
        }
        // Same names and types: differences left are metadata and nullability, and
        // `try_new` rejects nulls in a column planned as non-nullable.
        let options = RecordBatchOptions::new().with_row_count(Some(chunk.num_rows()));
        RecordBatch::try_new_with_options(
            Arc::clone(&self.input_schema),
            chunk.columns().to_vec(),
            &options,
        )
        .map_err(|e| SqlError::SchemaMismatch {
            detail: e.to_string(),
        })
    }
}

impl fmt::Debug for ChunkSql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkSql")
            .field("sql", &self.sql)
            .field("input_schema", &self.input_schema)
            .field("output_schema", &self.output_schema)
            .field("exclusive", &self.exclusive.is_some())
            .finish_non_exhaustive()
    }
}
