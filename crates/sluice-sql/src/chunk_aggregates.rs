//! Whole-chunk window aggregates (`AVG(x) OVER ()`) computed once per chunk as values, not
//! columns. DataFusion's window operator concatenates the chunk and repeats every aggregate
//! into a full column that the projection above then reads row by row; this rule replaces
//! that pair by one operator that computes the aggregates, puts their values into the
//! projection's expressions as literals and folds them (`CASE WHEN 1.7 > 0 THEN (x - 0.2)
//! / 1.7 ELSE x END` becomes `(x - 0.2) / 1.7`), so each column is one array-scalar kernel.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::{CaseExpr, Column, Literal};
use datafusion::physical_expr::simplifier::PhysicalExprSimplifier;
use datafusion::physical_expr::window::PlainAggregateWindowExpr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::windows::{WindowAggExec, WindowExpr};
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

/// The optimizer rule: `ProjectionExec` over a `WindowAggExec` whose every function is a
/// plain aggregate over the whole chunk (no PARTITION BY, no ORDER BY, no FILTER) becomes a
/// [`ChunkAggregatesExec`].
#[derive(Debug, Default)]
pub(crate) struct InlineChunkAggregates;

impl PhysicalOptimizerRule for InlineChunkAggregates {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(projection) = node.downcast_ref::<ProjectionExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(window) = projection.input().downcast_ref::<WindowAggExec>() else {
                return Ok(Transformed::no(node));
            };
            if !window.partition_keys().is_empty()
                || !window.window_expr().iter().all(whole_chunk_aggregate)
            {
                return Ok(Transformed::no(node));
            }
            let exec = ChunkAggregatesExec::new(projection, window);
            Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "inline_chunk_aggregates"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// An aggregate whose value is the same for every row of the chunk: a frame unbounded on
/// both sides, no PARTITION BY, no ORDER BY and no FILTER.
fn whole_chunk_aggregate(expr: &Arc<dyn WindowExpr>) -> bool {
    let Some(plain) = expr.as_any().downcast_ref::<PlainAggregateWindowExpr>() else {
        return false;
    };
    let frame = plain.get_window_frame();
    // DataFusion 55 keeps the FILTER clause private (its accessor is on a trait it does
    // not export); its Debug form is the one public view of it.
    let unfiltered = format!("{plain:?}").ends_with("filter: None }");
    frame.start_bound.is_unbounded()
        && frame.end_bound.is_unbounded()
        && plain.partition_by().is_empty()
        && plain.order_by().is_empty()
        && unfiltered
}

/// Computes the chunk's aggregates, then the projection with their values as literals.
#[derive(Debug, Clone)]
pub(crate) struct ChunkAggregatesExec {
    /// The window operator's input.
    input: Arc<dyn ExecutionPlan>,
    /// The whole-chunk aggregates, in the window operator's order: the projection reads
    /// aggregate `i` as column `input columns + i`.
    aggregates: Vec<Arc<dyn WindowExpr>>,
    /// The projection's expressions over (input columns, aggregates).
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// The window operator's output schema, which `exprs` are written against.
    window_schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl ChunkAggregatesExec {
    fn new(projection: &ProjectionExec, window: &WindowAggExec) -> Self {
        let schema = projection.schema();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Self {
            input: Arc::clone(window.input()),
            aggregates: window.window_expr().to_vec(),
            exprs: projection
                .expr()
                .iter()
                .map(|e| Arc::clone(&e.expr))
                .collect(),
            window_schema: window.schema(),
            properties: Arc::new(properties),
        }
    }

    /// The projection of `batches` (the whole chunk) with its aggregates inlined.
    fn project(&self, batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok(Vec::new());
        }
        let values = self.aggregate_values(batches)?;
        let exprs = self.inline(&values)?;
        let schema = self.schema();
        batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|batch| {
                let columns = exprs
                    .iter()
                    .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
                    .collect::<Result<Vec<_>>>()?;
                let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
                Ok(RecordBatch::try_new_with_options(
                    Arc::clone(&schema),
                    columns,
                    &options,
                )?)
            })
            .collect()
    }

    fn aggregate_values(&self, batches: &[RecordBatch]) -> Result<Vec<ScalarValue>> {
        self.aggregates
            .iter()
            .map(|window| {
                let plain = window
                    .as_any()
                    .downcast_ref::<PlainAggregateWindowExpr>()
                    .ok_or_else(|| {
                        DataFusionError::Internal(format!(
                            "ChunkAggregatesExec holds a window function that is not a plain aggregate: {}",
                            window.name()
                        ))
                    })?;
                let mut accumulator = plain.get_aggregate_expr().create_accumulator()?;
                for batch in batches.iter().filter(|b| b.num_rows() > 0) {
                    accumulator.update_batch(&window.evaluate_args(batch)?)?;
                }
                let value = accumulator.evaluate()?;
                let field = window.field()?;
                if value.data_type() == *field.data_type() {
                    Ok(value)
                } else {
                    value.cast_to(field.data_type())
                }
            })
            .collect()
    }

    /// The projection's expressions with aggregate columns replaced by `values`, folded.
    fn inline(&self, values: &[ScalarValue]) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
        let first_aggregate = self.window_schema.fields().len() - values.len();
        let simplifier = PhysicalExprSimplifier::new(&self.window_schema);
        self.exprs
            .iter()
            .map(|expr| {
                let inlined = Arc::clone(expr)
                    .transform_up(|node| {
                        let Some(column) = node.downcast_ref::<Column>() else {
                            return Ok(Transformed::no(node));
                        };
                        match column.index().checked_sub(first_aggregate) {
                            Some(i) => {
                                Ok(Transformed::yes(Arc::new(Literal::new(values[i].clone()))
                                    as Arc<dyn PhysicalExpr>))
                            }
                            None => Ok(Transformed::no(node)),
                        }
                    })?
                    .data;
                let simplified = simplifier.simplify(inlined)?;
                Ok(simplified.transform_up(fold_case)?.data)
            })
            .collect()
    }
}

/// `CASE WHEN <literal> ...` without an operand: branches whose condition is a literal false
/// or NULL are dropped, and a literal true as the first condition left is its result.
fn fold_case(node: Arc<dyn PhysicalExpr>) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    let Some(case) = node.downcast_ref::<CaseExpr>() else {
        return Ok(Transformed::no(node));
    };
    if case.expr().is_some() {
        return Ok(Transformed::no(node));
    }
    for (when, then) in case.when_then_expr() {
        match literal_bool(when) {
            // A false or NULL condition never picks its branch.
            Some(Some(false)) | Some(None) => continue,
            Some(Some(true)) => return Ok(Transformed::yes(Arc::clone(then))),
            // A condition that depends on the row: keep the whole CASE.
            None => return Ok(Transformed::no(node)),
        }
    }
    match case.else_expr() {
        Some(otherwise) => Ok(Transformed::yes(Arc::clone(otherwise))),
        None => Ok(Transformed::no(node)),
    }
}

/// `Some(value)` when `expr` is a boolean literal (`Some(None)` for NULL).
fn literal_bool(expr: &Arc<dyn PhysicalExpr>) -> Option<Option<bool>> {
    match expr.downcast_ref::<Literal>()?.value() {
        ScalarValue::Boolean(b) => Some(*b),
        ScalarValue::Null => Some(None),
        _ => None,
    }
}

impl DisplayAs for ChunkAggregatesExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<String> = self
            .aggregates
            .iter()
            .map(|w| w.name().to_string())
            .collect();
        write!(
            f,
            "ChunkAggregatesExec: aggregates=[{}], exprs=[{}]",
            names.join(", "),
            self.exprs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

impl ExecutionPlan for ChunkAggregatesExec {
    fn name(&self) -> &str {
        "ChunkAggregatesExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for expr in &self.exprs {
            if f(expr)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // The output schema is the projection's whatever the child: properties stay.
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "ChunkAggregatesExec has one child but was given {}",
                children.len()
            )));
        }
        let mut exec = (*self).clone();
        exec.input = children.remove(0);
        Ok(Arc::new(exec))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let this = self.clone();
        // The aggregates need the whole chunk before the first row can be projected.
        let batches = futures::stream::once(async move {
            let batches: Vec<RecordBatch> = input.try_collect().await?;
            this.project(&batches)
        })
        .flat_map(|result| {
            let items: Vec<Result<RecordBatch>> = match result {
                Ok(batches) => batches.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(items)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            batches,
        )))
    }
}

#[cfg(test)]
mod tests {

    use arrow::array::{Array, Float64Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::ChunkSql;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("x", DataType::Float64, true),
            Field::new("k", DataType::Int64, false),
        ]))
    }

    fn chunk(x: &[Option<f64>]) -> RecordBatch {
        let k: Vec<i64> = (0..x.len() as i64).collect();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Float64Array::from(x.to_vec())),
                Arc::new(Int64Array::from(k)),
            ],
        )
        .expect("batch")
    }

    fn plan_text(sql: &str) -> String {
        ChunkSql::new(sql, schema())
            .expect("planned")
            .physical_plan_text()
    }

    fn floats(batch: &RecordBatch, column: usize) -> Vec<Option<f64>> {
        let a = batch
            .column(column)
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("float64");
        (0..a.len())
            .map(|i| (!a.is_null(i)).then(|| a.value(i)))
            .collect()
    }

    const ZSCORE: &str = "SELECT CASE WHEN STDDEV_SAMP(x) OVER () > 0 \
        THEN (x - AVG(x) OVER ()) / STDDEV_SAMP(x) OVER () ELSE x END AS z, \
        k, SUM(k) OVER () AS total FROM chunk";

    #[test]
    fn whole_chunk_aggregates_become_values_and_case_folds() {
        let text = plan_text(ZSCORE);
        assert!(text.contains("ChunkAggregatesExec"), "{text}");
        assert!(!text.contains("WindowAggExec"), "{text}");
    }

    #[test]
    fn inlined_values_give_the_window_results() {
        let sql = ChunkSql::new(ZSCORE, schema()).expect("planned");
        // mean 2, sample std 1
        let out = sql
            .apply(&chunk(&[Some(1.0), Some(2.0), Some(3.0)]))
            .expect("ran");
        assert_eq!(floats(&out, 0), vec![Some(-1.0), Some(0.0), Some(1.0)]);
        let total = out
            .column(2)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("int64");
        assert_eq!(total.values().to_vec(), vec![3, 3, 3]);
        // Constant: std 0 takes the ELSE branch; one row: std NULL takes it too.
        let out = sql.apply(&chunk(&[Some(5.0), Some(5.0)])).expect("ran");
        assert_eq!(floats(&out, 0), vec![Some(5.0), Some(5.0)]);
        let out = sql.apply(&chunk(&[Some(7.0)])).expect("ran");
        assert_eq!(floats(&out, 0), vec![Some(7.0)]);
        // Nulls are skipped by the aggregates and stay null.
        let out = sql
            .apply(&chunk(&[Some(1.0), None, Some(3.0)]))
            .expect("ran");
        let z = floats(&out, 0);
        assert_eq!(z[1], None);
        assert!((z[0].expect("value") + std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        // An empty chunk gives an empty result with the output schema.
        let out = sql.apply(&chunk(&[])).expect("ran");
        assert_eq!(out.num_rows(), 0);
        assert_eq!(out.schema(), sql.output_schema());
    }

    #[test]
    fn filtered_or_ordered_windows_are_left_to_datafusion() {
        let filtered = "SELECT SUM(k) FILTER (WHERE k > 0) OVER () AS s FROM chunk";
        let text = plan_text(filtered);
        assert!(text.contains("WindowAggExec"), "{text}");
        let sql = ChunkSql::new(filtered, schema()).expect("planned");
        let out = sql
            .apply(&chunk(&[Some(1.0), Some(2.0), Some(3.0)]))
            .expect("ran");
        let s = out
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("int64");
        assert_eq!(s.values().to_vec(), vec![3, 3, 3]);
        let running = plan_text("SELECT SUM(k) OVER (ORDER BY k) AS s FROM chunk");
        assert!(!running.contains("ChunkAggregatesExec"), "{running}");
    }
}
