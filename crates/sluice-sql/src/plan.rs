//! Planning a query once against the placeholder table, checking the plan can be run per
//! chunk, and running a bound copy of it on the calling thread. No tokio runtime is
//! involved: the plan has one partition throughout, so no operator spawns a task.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::analyze::AnalyzeExec;
use datafusion::physical_plan::scalar_subquery::ScalarSubqueryExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};

use crate::chunk_aggregates::InlineChunkAggregates;
use crate::scan::ChunkTable;
use crate::string_eq::StringEqLiteralRule;
use crate::SqlError;

/// The name of the one table a query sees.
pub(crate) const TABLE_NAME: &str = "chunk";

/// A query planned once: the template plan and what is needed to run copies of it.
pub(crate) struct Planned {
    /// The optimized physical plan; its leaves are unbound `ChunkScanExec`s.
    pub(crate) template: Arc<dyn ExecutionPlan>,
    /// Configuration, functions and runtime (memory pool) shared by every run.
    pub(crate) task_ctx: Arc<TaskContext>,
    /// True when copies of the plan share per-run state, so runs must take turns.
    pub(crate) exclusive: bool,
}

/// Parses, validates, optimizes and checks `sql` against a table `chunk` of `input_schema`.
pub(crate) fn plan(
    sql: &str,
    input_schema: &SchemaRef,
    scans_planned: Arc<AtomicUsize>,
) -> Result<Planned, SqlError> {
    let ctx = session(input_schema, scans_planned)?;
    let logical = logical(&ctx, sql)?;
    physical(&ctx, &logical)
}

/// A session with the table `chunk` of `input_schema` and sluice's functions registered.
pub(crate) fn session(
    input_schema: &SchemaRef,
    scans_planned: Arc<AtomicUsize>,
) -> Result<SessionContext, SqlError> {
    let state = SessionStateBuilder::new()
        .with_config(session_config())
        .with_default_features()
        // After DataFusion's own rules: text compared with a literal without a memcmp call
        // per row; then whole-chunk aggregates as values, not columns (that rule folds the
        // projection's expressions, the first one's included).
        .with_physical_optimizer_rule(Arc::new(StringEqLiteralRule))
        .with_physical_optimizer_rule(Arc::new(InlineChunkAggregates))
        .build();
    let ctx = SessionContext::new_with_state(state);
    // Replaces DataFusion's value-by-value `stddev` / `stddev_samp` (see `stddev.rs`).
    ctx.register_udaf(crate::stddev::sample_stddev_udaf());
    let table = ChunkTable::new(Arc::clone(input_schema), scans_planned);
    ctx.register_table(TABLE_NAME, Arc::new(table))
        .map_err(SqlError::from_planning)?;
    Ok(ctx)
}

/// Parses `sql` into its (unoptimized) logical plan; queries only.
pub(crate) fn logical(ctx: &SessionContext, sql: &str) -> Result<LogicalPlan, SqlError> {
    // Queries only: no CREATE, INSERT, COPY ... TO a file, SET or transactions.
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    futures::executor::block_on(async {
        let frame = ctx.sql_with_options(sql, options).await?;
        Ok(frame.into_unoptimized_plan())
    })
    .map_err(SqlError::from_planning)
}

/// Optimizes a logical plan, makes it physical and checks it can run per chunk.
pub(crate) fn physical(ctx: &SessionContext, logical: &LogicalPlan) -> Result<Planned, SqlError> {
    let template = futures::executor::block_on(ctx.state().create_physical_plan(logical))
        .map_err(SqlError::from_planning)?;
    let exclusive = check_plan(&template)?;
    Ok(Planned {
        template,
        task_ctx: ctx.task_ctx(),
        exclusive,
    })
}

/// Runs a bound plan to completion on this thread and returns its batches.
pub(crate) fn run(
    plan: Arc<dyn ExecutionPlan>,
    task_ctx: Arc<TaskContext>,
) -> Result<Vec<RecordBatch>> {
    futures::executor::block_on(datafusion::physical_plan::collect(plan, task_ctx))
}

/// One partition everywhere (so no repartitioning and no spawned tasks), and no dynamic
/// filters or recursive queries, whose state cannot be reset between runs.
fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new().with_target_partitions(1);
    let options = config.options_mut();
    options.optimizer.enable_dynamic_filter_pushdown = false;
    options.optimizer.enable_topk_dynamic_filter_pushdown = false;
    options.optimizer.enable_join_dynamic_filter_pushdown = false;
    options.optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    options.execution.enable_recursive_ctes = false;
    config
}

/// Rejects plans that cannot run per chunk on the calling thread; returns whether runs must
/// take turns (scalar subqueries keep their results in a container every copy shares).
fn check_plan(plan: &Arc<dyn ExecutionPlan>) -> Result<bool, SqlError> {
    let mut exclusive = false;
    let mut problem = None;
    let walk = plan.apply(|node| {
        let partitions = node.output_partitioning().partition_count();
        if node.is::<AnalyzeExec>() {
            problem = Some(SqlError::Unsupported {
                what: "EXPLAIN ANALYZE".to_string(),
                hint: "use EXPLAIN to see the plan; the pipeline's stats time each chunk"
                    .to_string(),
            });
            return Ok(TreeNodeRecursion::Stop);
        }
        if partitions != 1 {
            problem = Some(SqlError::Unsupported {
                what: format!("an operator with {partitions} partitions ({})", node.name()),
                hint: "this is a bug in sluice-sql (plans are built with one partition); \
                       please report the query"
                    .to_string(),
            });
            return Ok(TreeNodeRecursion::Stop);
        }
        exclusive |= node.is::<ScalarSubqueryExec>();
        Ok(TreeNodeRecursion::Continue)
    });
    walk.map_err(SqlError::from_planning)?;
    match problem {
        Some(err) => Err(err),
        None => Ok(exclusive),
    }
}
