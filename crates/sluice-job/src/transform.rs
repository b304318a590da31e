//! What a job does to every chunk: nothing (a copy), a function, or SQL. This is the one
//! place where a query becomes the engine's per-chunk function; the faces hand their own
//! functions (a Rust closure, a Python adapter) through as they are.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use sluice::BoxError;
use sluice_sql::{ChunkSql, Windows};

use crate::error::{JobError, Result};

/// The function the engine runs on every chunk.
pub type ChunkFunction = Arc<dyn Fn(RecordBatch) -> Result<RecordBatch, BoxError> + Send + Sync>;

/// A job's per-chunk work, described as data.
#[derive(Clone)]
pub enum Transform {
    /// Every chunk as it is read.
    Copy,
    /// A function of the caller's.
    Function(ChunkFunction),
    /// A query over the table `chunk`; `windows` says what `AGG(x) OVER ()` covers.
    Sql { text: String, windows: Windows },
}

impl Transform {
    /// The query of a job, if it has one.
    pub fn sql(&self) -> Option<&str> {
        match self {
            Transform::Sql { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for SQL whose windows cover the whole input (two passes).
    pub fn is_global(&self) -> bool {
        matches!(
            self,
            Transform::Sql {
                windows: Windows::Global,
                ..
            }
        )
    }

    /// The per-chunk function of a one-pass job over chunks of `schema`, with the schema it
    /// writes. A global query is planned in two passes instead (the `two_pass` module).
    pub fn plan_chunk(&self, schema: SchemaRef) -> Result<(ChunkFunction, SchemaRef)> {
        match self {
            Transform::Copy => Ok((copy_function(), schema)),
            Transform::Function(function) => Ok((function.clone(), schema)),
            Transform::Sql { text, windows } => {
                if *windows == Windows::Global {
                    return Err(JobError::Usage(
                        "a query with whole-input windows runs in two passes; plan it with \
                         two_pass"
                            .into(),
                    ));
                }
                let sql = ChunkSql::new(text, schema).map_err(JobError::sql)?;
                let output = sql.output_schema();
                Ok((sql_function(sql), output))
            }
        }
    }
}

/// A planned per-chunk query as the engine's function.
pub fn sql_function(sql: ChunkSql) -> ChunkFunction {
    let sql = Arc::new(sql);
    Arc::new(move |batch: RecordBatch| sql.apply(&batch).map_err(BoxError::from))
}

/// Every chunk unchanged.
pub fn copy_function() -> ChunkFunction {
    Arc::new(|batch: RecordBatch| Ok::<_, BoxError>(batch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let x: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
        RecordBatch::try_new(schema, vec![x]).expect("a valid batch")
    }

    #[test]
    fn sql_runs_per_chunk_and_a_copy_passes_the_chunk_through() {
        let input = batch();
        let sql = Transform::Sql {
            text: "SELECT x * 2 AS y FROM chunk WHERE x > 1".into(),
            windows: Windows::Chunk,
        };
        let (function, schema) = sql.plan_chunk(input.schema()).expect("plans");
        assert_eq!(schema.field(0).name(), "y");
        let out = function(input.clone()).expect("runs");
        let y = out
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("Int64");
        assert_eq!(y.values().to_vec(), vec![4, 6]);

        let (copy, schema) = Transform::Copy.plan_chunk(input.schema()).expect("plans");
        assert_eq!(schema, input.schema());
        assert_eq!(copy(input.clone()).expect("runs"), input);
    }

    #[test]
    fn a_global_query_is_not_planned_per_chunk_and_bad_sql_is_refused() {
        let global = Transform::Sql {
            text: "SELECT x - AVG(x) OVER () FROM chunk".into(),
            windows: Windows::Global,
        };
        assert!(matches!(
            global.plan_chunk(batch().schema()),
            Err(JobError::Usage(_))
        ));
        let bad = Transform::Sql {
            text: "SELECT nope FROM chunk".into(),
            windows: Windows::Chunk,
        };
        assert!(matches!(
            bad.plan_chunk(batch().schema()),
            Err(JobError::Sql { .. })
        ));
    }
}
