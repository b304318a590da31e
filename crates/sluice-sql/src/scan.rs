//! The table `chunk`: a placeholder leaf the query is planned against once, and the swap
//! that puts one chunk's data into a copy of the plan before each run. It is not a data
//! source in the usual sense: it never reads anything, it is handed the chunk.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};

/// The `TableProvider` registered as `chunk` while the query is planned.
///
/// It reports no statistics, so the optimizer cannot fold anything that depends on the data
/// (an empty in-memory table would let it turn `COUNT(*)` into the constant 0), and it
/// accepts no filter pushdown, so every filter stays in the plan where it sees each chunk.
#[derive(Debug)]
pub(crate) struct ChunkTable {
    schema: SchemaRef,
    /// How many times a scan was planned; the plan-once tests read it.
    scans_planned: Arc<AtomicUsize>,
}

impl ChunkTable {
    pub(crate) fn new(schema: SchemaRef, scans_planned: Arc<AtomicUsize>) -> Self {
        Self {
            schema,
            scans_planned,
        }
    }
}

#[async_trait]
impl TableProvider for ChunkTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // `_limit` is only a hint: the limit operator stays above the scan.
        self.scans_planned.fetch_add(1, Ordering::Relaxed);
        let scan = ChunkScanExec::try_new(&self.schema, projection.cloned())?;
        Ok(Arc::new(scan))
    }
}

/// The leaf of every planned query: emits the bound chunk (projected) as one batch.
///
/// The planned template holds no chunk; [`bind_chunk`] makes a copy that does. Executing
/// the template itself is an internal error.
#[derive(Debug, Clone)]
pub(crate) struct ChunkScanExec {
    /// Input columns this scan emits, in order; `None` means all.
    projection: Option<Vec<usize>>,
    /// The whole input chunk; projected when executed.
    chunk: Option<RecordBatch>,
    /// Shared by every copy, so operators above can keep their cached properties.
    properties: Arc<PlanProperties>,
}

impl ChunkScanExec {
    fn try_new(input_schema: &SchemaRef, projection: Option<Vec<usize>>) -> Result<Self> {
        let schema = match &projection {
            Some(indices) => Arc::new(input_schema.project(indices)?),
            None => Arc::clone(input_schema),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            projection,
            chunk: None,
            properties: Arc::new(properties),
        })
    }

    fn with_chunk(&self, chunk: RecordBatch) -> Self {
        Self {
            chunk: Some(chunk),
            ..self.clone()
        }
    }
}

impl DisplayAs for ChunkScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.projection {
            Some(indices) => write!(f, "ChunkScanExec: projection={indices:?}"),
            None => write!(f, "ChunkScanExec"),
        }
    }
}

impl ExecutionPlan for ChunkScanExec {
    fn name(&self) -> &str {
        "ChunkScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(format!(
                "ChunkScanExec is a leaf but was given {} children",
                children.len()
            )))
        }
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
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "ChunkScanExec has one partition, asked for partition {partition}"
            )));
        }
        let Some(chunk) = &self.chunk else {
            return Err(DataFusionError::Internal(
                "ChunkScanExec executed without a chunk bound to it".to_string(),
            ));
        };
        let batch = match &self.projection {
            Some(indices) => chunk.project(indices)?,
            None => chunk.clone(),
        };
        let stream = futures::stream::iter([Ok(batch)]);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }
}

/// A copy of the planned `template` that reads `chunk` and is ready to execute.
///
/// This is no re-planning: every scan leaf gets the chunk, every other operator is cloned
/// with [`ExecutionPlan::reset_state`] (fresh metrics and per-run caches such as a hash
/// join's build side), keeping its cached properties, expressions and children as planned.
pub(crate) fn bind_chunk(
    template: &Arc<dyn ExecutionPlan>,
    chunk: &RecordBatch,
) -> Result<Arc<dyn ExecutionPlan>> {
    Arc::clone(template)
        .transform_up(|node| {
            let bound = match node.downcast_ref::<ChunkScanExec>() {
                Some(scan) => Arc::new(scan.with_chunk(chunk.clone())) as Arc<dyn ExecutionPlan>,
                None => node.reset_state()?,
            };
            Ok(Transformed::yes(bound))
        })
        .map(|t| t.data)
}

/// Like [`bind_chunk`], for a chunk that may hold only some of the input's columns (a
/// projected read): every scan takes its columns from `chunk` by name.
pub(crate) fn bind_chunk_by_name(
    template: &Arc<dyn ExecutionPlan>,
    chunk: &RecordBatch,
) -> Result<Arc<dyn ExecutionPlan>> {
    Arc::clone(template)
        .transform_up(|node| {
            let bound = match node.downcast_ref::<ChunkScanExec>() {
                Some(scan) => {
                    let schema = scan.schema();
                    let mut columns = Vec::with_capacity(schema.fields().len());
                    for field in schema.fields() {
                        let index = chunk.schema_ref().index_of(field.name()).map_err(|_| {
                            DataFusionError::Plan(format!(
                                "the chunk has no column `{}` (it has {:?})",
                                field.name(),
                                chunk
                                    .schema_ref()
                                    .fields()
                                    .iter()
                                    .map(|f| f.name())
                                    .collect::<Vec<_>>()
                            ))
                        })?;
                        columns.push(Arc::clone(chunk.column(index)));
                    }
                    let options = arrow::record_batch::RecordBatchOptions::new()
                        .with_row_count(Some(chunk.num_rows()));
                    let projected = RecordBatch::try_new_with_options(schema, columns, &options)?;
                    Arc::new(ChunkScanExec {
                        projection: None,
                        chunk: Some(projected),
                        properties: Arc::clone(&scan.properties),
                    }) as Arc<dyn ExecutionPlan>
                }
                None => node.reset_state()?,
            };
            Ok(Transformed::yes(bound))
        })
        .map(|t| t.data)
}

/// The input columns the scans of `plan` read, by name, in first-seen order.
pub(crate) fn scanned_columns(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    // The closure never fails.
    let _ = plan.apply(|node| {
        if let Some(scan) = node.downcast_ref::<ChunkScanExec>() {
            for field in scan.schema().fields() {
                if !names.contains(field.name()) {
                    names.push(field.name().clone());
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    names
}
