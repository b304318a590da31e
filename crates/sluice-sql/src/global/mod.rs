//! Whole-input window aggregates (`--windows global`): every `AGG(x) OVER ()` of a query is
//! computed over all the input's rows in a first pass (exact partial states per chunk,
//! merged), then the query runs per chunk with those values as constants. Both passes are
//! planned once, on DataFusion's logical plan: the window's input becomes pass 1's query,
//! and pass 2 replaces the window operator by a projection of typed literals.

mod checks;
mod exact;
mod state;

use std::fmt;
use std::io::Cursor;
use std::str::FromStr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ScalarValue};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{lit, Expr, LogicalPlan, Projection, Window};

use self::checks::{analyse, refuse_windows_in_subqueries};
use self::state::{ColumnState, Kind, Needs, Numeric};
use crate::plan::{self, Planned};
use crate::{scan, ChunkSql, SqlError};

/// What `AGG(x) OVER ()` means: the chunk's rows (the specification's behaviour) or the
/// whole input's (two passes, [`GlobalSql`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Windows {
    #[default]
    Chunk,
    Global,
}

impl Windows {
    pub fn name(self) -> &'static str {
        match self {
            Windows::Chunk => "chunk",
            Windows::Global => "global",
        }
    }
}

impl FromStr for Windows {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "chunk" => Ok(Windows::Chunk),
            "global" => Ok(Windows::Global),
            other => Err(format!(
                "unknown windows mode {other:?}; expected chunk or global"
            )),
        }
    }
}

/// A query whose whole-input windows are computed in a first pass over the input.
///
/// [`partial`](Self::partial) runs pass 1 on one chunk (any thread, any order; it reads only
/// [`pass1_columns`](Self::pass1_columns), by name); [`GlobalPartial::merge`] combines
/// chunks exactly; [`finish`](Self::finish) gives the values; [`pass2`](Self::pass2) plans
/// the query with them as constants, to run per chunk like any [`ChunkSql`].
pub struct GlobalSql {
    sql: String,
    input_schema: SchemaRef,
    ctx: SessionContext,
    /// The query's unoptimized plan, window operators still in it.
    logical: LogicalPlan,
    sites: Vec<Site>,
    columns: Vec<String>,
    scans_planned: Arc<AtomicUsize>,
}

/// One window operator of the query, all of whose windows are whole-input aggregates.
struct Site {
    /// The window operator as planned; pass 2 finds it by equality (an identical copy
    /// elsewhere in the plan has the same values).
    window: Window,
    /// Evaluates the aggregates' arguments over the window's input rows, per chunk.
    pass1: Planned,
    /// Pass 1's output columns: the distinct arguments.
    args: Vec<Arg>,
    calls: Vec<Call>,
}

struct Arg {
    numeric: Numeric,
    needs: Needs,
}

struct Call {
    kind: Kind,
    arg: usize,
    /// The window's type in the query, which its literal takes.
    data_type: DataType,
    description: String,
}

/// Pass 1's state after some chunks: merge chunks' states in any order.
#[derive(Debug, Clone, Default)]
pub struct GlobalPartial {
    sites: Vec<Vec<ColumnState>>,
    rows: u64,
}

impl GlobalPartial {
    /// Adds `other`'s rows; exact, so the order of merges does not change the result.
    pub fn merge(&mut self, other: &GlobalPartial) {
        if self.sites.is_empty() {
            self.sites = other.sites.clone();
        } else {
            for (mine, theirs) in self.sites.iter_mut().zip(&other.sites) {
                for (a, b) in mine.iter_mut().zip(theirs) {
                    a.merge(b);
                }
            }
        }
        self.rows += other.rows;
    }

    /// Input rows seen by pass 1.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

/// The whole-input value of every window, in the query's order.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalValues {
    values: Vec<ScalarValue>,
}

impl GlobalValues {
    pub fn values(&self) -> &[ScalarValue] {
        &self.values
    }

    /// The values as one Arrow IPC row: exact for every type, for a run record.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SqlError> {
        let failed = |e: &dyn fmt::Display| SqlError::GlobalPass {
            detail: format!("cannot save the values: {e}"),
        };
        let mut fields = Vec::with_capacity(self.values.len());
        let mut columns = Vec::with_capacity(self.values.len());
        for (i, value) in self.values.iter().enumerate() {
            fields.push(Field::new(format!("v{i}"), value.data_type(), true));
            columns.push(value.to_array().map_err(|e| failed(&e))?);
        }
        let schema = Arc::new(Schema::new(fields));
        let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(1));
        let batch = RecordBatch::try_new_with_options(Arc::clone(&schema), columns, &options)
            .map_err(|e| failed(&e))?;
        let mut bytes = Vec::new();
        let mut writer = StreamWriter::try_new(&mut bytes, &schema).map_err(|e| failed(&e))?;
        writer.write(&batch).map_err(|e| failed(&e))?;
        writer.finish().map_err(|e| failed(&e))?;
        drop(writer);
        Ok(bytes)
    }

    /// Values saved by [`to_bytes`](Self::to_bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SqlError> {
        let failed = |e: &dyn fmt::Display| SqlError::GlobalPass {
            detail: format!("the saved values cannot be read: {e}"),
        };
        let mut reader = StreamReader::try_new(Cursor::new(bytes), None).map_err(|e| failed(&e))?;
        let batch = match reader.next() {
            Some(batch) => batch.map_err(|e| failed(&e))?,
            None => return Err(failed(&"no row")),
        };
        let values = batch
            .columns()
            .iter()
            .map(|column| ScalarValue::try_from_array(column, 0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| failed(&e))?;
        Ok(GlobalValues { values })
    }
}

impl GlobalSql {
    /// Plans `sql` against a table `chunk` of `input_schema` for whole-input windows.
    ///
    /// Fails, naming the window and the reason, on any window it cannot compute exactly over
    /// the whole input: PARTITION BY, ORDER BY, frames, ranking functions, DISTINCT or
    /// FILTER, windows inside subqueries, and windows over rows that are not a row-by-row
    /// function of the input (after GROUP BY, a join, LIMIT or another window).
    pub fn new(sql: &str, input_schema: SchemaRef) -> Result<Self, SqlError> {
        let scans_planned = Arc::new(AtomicUsize::new(0));
        let ctx = plan::session(&input_schema, Arc::clone(&scans_planned))?;
        let logical = plan::logical(&ctx, sql)?;
        refuse_windows_in_subqueries(&logical)?;

        // In the order the pass-2 rewrite (`transform_up`) meets them.
        let mut windows = Vec::new();
        logical
            .clone()
            .transform_up(|node| {
                if let LogicalPlan::Window(window) = &node {
                    windows.push(window.clone());
                }
                Ok(Transformed::no(node))
            })
            .map_err(SqlError::from_planning)?;

        let mut sites = Vec::with_capacity(windows.len());
        for window in &windows {
            sites.push(analyse(&ctx, window)?);
        }
        let mut columns: Vec<String> = Vec::new();
        for site in &sites {
            for name in scan::scanned_columns(&site.pass1.template) {
                if !columns.contains(&name) {
                    columns.push(name);
                }
            }
        }
        Ok(GlobalSql {
            sql: sql.to_string(),
            input_schema,
            ctx,
            logical,
            sites,
            columns,
            scans_planned,
        })
    }

    /// True when the query has whole-input windows, so pass 1 is needed.
    pub fn has_windows(&self) -> bool {
        !self.sites.is_empty()
    }

    /// The input columns pass 1 reads (a chunk given to [`partial`](Self::partial) needs
    /// only these, in any order).
    pub fn pass1_columns(&self) -> &[String] {
        &self.columns
    }

    /// The windows computed over the whole input, as DataFusion shows them.
    pub fn windows(&self) -> Vec<String> {
        self.calls().map(|c| c.description.clone()).collect()
    }

    /// The query text as given.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The schema of every batch pass 2 returns (names and types).
    pub fn output_schema(&self) -> SchemaRef {
        Arc::new(self.logical.schema().as_arrow().clone())
    }

    /// The schema of the input table `chunk`.
    pub fn input_schema(&self) -> SchemaRef {
        Arc::clone(&self.input_schema)
    }

    /// Pass 1 on one chunk: the partial states of every window's aggregates.
    pub fn partial(&self, chunk: &RecordBatch) -> Result<GlobalPartial, SqlError> {
        let rows = chunk.num_rows();
        let failed = |source| SqlError::Execute { rows, source };
        let mut partial = GlobalPartial {
            sites: Vec::with_capacity(self.sites.len()),
            rows: rows as u64,
        };
        for site in &self.sites {
            let plan = scan::bind_chunk_by_name(&site.pass1.template, chunk).map_err(failed)?;
            let batches = plan::run(plan, Arc::clone(&site.pass1.task_ctx)).map_err(failed)?;
            let mut states = vec![ColumnState::default(); site.args.len()];
            for batch in &batches {
                for (i, arg) in site.args.iter().enumerate() {
                    states[i]
                        .update(batch.column(i), arg.needs)
                        .map_err(failed)?;
                }
            }
            partial.sites.push(states);
        }
        Ok(partial)
    }

    /// Pass 1 over every chunk of `chunks`, on this thread.
    pub fn compute<I>(&self, chunks: I) -> Result<GlobalValues, SqlError>
    where
        I: IntoIterator<Item = RecordBatch>,
    {
        let mut total = self.empty_partial();
        for chunk in chunks {
            total.merge(&self.partial(&chunk)?);
        }
        self.finish(&total)
    }

    /// The state of no rows.
    pub fn empty_partial(&self) -> GlobalPartial {
        GlobalPartial {
            sites: self
                .sites
                .iter()
                .map(|s| vec![ColumnState::default(); s.args.len()])
                .collect(),
            rows: 0,
        }
    }

    /// The windows' values from the merged states of every chunk.
    pub fn finish(&self, partial: &GlobalPartial) -> Result<GlobalValues, SqlError> {
        let empty = self.empty_partial();
        let partial = if partial.sites.is_empty() {
            &empty
        } else {
            partial
        };
        let mut values = Vec::new();
        for (site, states) in self.sites.iter().zip(&partial.sites) {
            for call in &site.calls {
                let numeric = site.args[call.arg].numeric;
                let value = states[call.arg]
                    .finish(call.kind, numeric)
                    .and_then(|v| v.cast_to(&call.data_type).map_err(|e| e.to_string()))
                    .map_err(|reason| SqlError::GlobalPass {
                        detail: format!("{}: {reason}", call.description),
                    })?;
                values.push(value);
            }
        }
        Ok(GlobalValues { values })
    }

    /// Pass 2: the query planned with every whole-input window replaced by its value.
    pub fn pass2(&self, values: &GlobalValues) -> Result<ChunkSql, SqlError> {
        let calls: Vec<&Call> = self.calls().collect();
        if values.values.len() != calls.len() {
            return Err(SqlError::GlobalPass {
                detail: format!(
                    "{} values for {} windows; were they saved for another query?",
                    values.values.len(),
                    calls.len()
                ),
            });
        }
        // Each window operator becomes a projection of its input and its values, and the
        // node above it reads the values as literals rather than as columns: the optimizer
        // then folds them (`CASE WHEN 1.2 > 0 THEN ...` is just its THEN), where a column
        // of constants is an array built, compared and divided by per chunk.
        let mut offsets = Vec::with_capacity(self.sites.len());
        let mut next = 0;
        for site in &self.sites {
            offsets.push(next);
            next += site.calls.len();
        }
        let replace = |window: &Window| -> datafusion::error::Result<(LogicalPlan, Constants)> {
            let site = self
                .sites
                .iter()
                .position(|s| s.window == *window)
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal(format!(
                        "a window operator pass 1 did not plan: {:?}",
                        window.window_expr
                    ))
                })?;
            literal_projection(window, &values.values[offsets[site]..])
        };
        let rewritten = self
            .logical
            .clone()
            .transform_up(|node| {
                // A window is replaced when the node above it is visited: that node takes
                // its values as literals.
                let mut constants = Constants::new();
                let node = node
                    .map_children(|child| match child {
                        LogicalPlan::Window(window) => {
                            let (projection, values) = replace(&window)?;
                            constants.extend(values);
                            Ok(Transformed::yes(projection))
                        }
                        other => Ok(Transformed::no(other)),
                    })?
                    .data;
                let node = substitute(node, &constants)?;
                Ok(Transformed::yes(node.recompute_schema()?))
            })
            .and_then(|plan| match plan.data {
                // Only a plan made by hand ends in a window; it keeps the columns.
                LogicalPlan::Window(window) => Ok(replace(&window)?.0),
                other => Ok(other),
            })
            .map_err(SqlError::from_planning)?;
        let planned = plan::physical(&self.ctx, &rewritten)?;
        Ok(ChunkSql::from_planned(
            &self.sql,
            Arc::clone(&self.input_schema),
            planned,
            Arc::clone(&self.scans_planned),
        ))
    }

    /// Each window with its value, for reports.
    pub fn describe(&self, values: &GlobalValues) -> Vec<(String, String)> {
        self.calls()
            .zip(&values.values)
            .map(|(c, v)| (c.description.clone(), v.to_string()))
            .collect()
    }

    fn calls(&self) -> impl Iterator<Item = &Call> {
        self.sites.iter().flat_map(|s| s.calls.iter())
    }
}

impl fmt::Debug for GlobalSql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlobalSql")
            .field("sql", &self.sql)
            .field("windows", &self.windows())
            .field("pass1_columns", &self.columns)
            .finish_non_exhaustive()
    }
}

/// A replaced window's output columns and the literals that stand for them.
type Constants = Vec<(Column, Expr)>;

/// `window` as a projection of its input and of `values` (in its windows' order) named
/// as its windows, with each window's column and literal.
fn literal_projection(
    window: &Window,
    values: &[ScalarValue],
) -> datafusion::error::Result<(LogicalPlan, Constants)> {
    let input = Arc::clone(&window.input);
    let input_len = input.schema().fields().len();
    let mut exprs: Vec<Expr> = input
        .schema()
        .iter()
        .map(|(q, f)| Expr::Column(Column::new(q.cloned(), f.name())))
        .collect();
    let mut constants = Constants::with_capacity(window.window_expr.len());
    for j in 0..window.window_expr.len() {
        let (qualifier, field) = window.schema.qualified_field(input_len + j);
        let value = values
            .get(j)
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Internal("too few window values".into())
            })?
            .cast_to(field.data_type())?;
        constants.push((
            Column::new(qualifier.cloned(), field.name()),
            lit(value.clone()),
        ));
        exprs.push(lit(value).alias_qualified(qualifier.cloned(), field.name()));
    }
    let projection = Projection::try_new(exprs, input)?;
    Ok((LogicalPlan::Projection(projection), constants))
}

/// `node` with every reference to a column of `constants` replaced by its literal; the
/// node's output names stay as they were.
fn substitute(node: LogicalPlan, constants: &Constants) -> datafusion::error::Result<LogicalPlan> {
    if constants.is_empty() {
        return Ok(node);
    }
    let names = NamePreserver::new(&node);
    Ok(node
        .map_expressions(|expr| {
            let name = names.save(&expr);
            let replaced = expr.transform(|e| match e {
                Expr::Column(column) => match constants.iter().find(|(c, _)| *c == column) {
                    Some((_, literal)) => Ok(Transformed::yes(literal.clone())),
                    None => Ok(Transformed::no(Expr::Column(column))),
                },
                other => Ok(Transformed::no(other)),
            })?;
            Ok(replaced.update_data(|e| name.restore(e)))
        })?
        .data)
}
