//! `text = 'literal'` (and `<>`) on Utf8 columns without a `memcmp` call per row. Arrow's
//! comparison kernel compares two byte slices with `==`, which calls `memcmp` for every row
//! of equal length: one-hot encodings (`category = 'A'`, a column of short labels) spent
//! more time in those calls than in any other part of the query. This rule puts a kernel
//! that checks the length first and compares a short literal inline in their place.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, GenericStringArray, OffsetSizeTrait};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, FieldRef, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::ExecutionPlan;

/// Literals up to this many bytes are compared byte by byte in the loop; longer ones with
/// `==` (a `memcmp` call pays off once there is more to compare than the call costs).
const INLINE_LITERAL_BYTES: usize = 16;

/// The optimizer rule: in every projection, `expr = 'text'`, `'text' = expr`, and the same
/// with `<>`, where `expr` is Utf8 or LargeUtf8, become a [`StringEqLiteral`]. Filters keep
/// DataFusion's kernel (rebuilding a `FilterExec` would drop its settings).
#[derive(Debug, Default)]
pub(crate) struct StringEqLiteralRule;

impl PhysicalOptimizerRule for StringEqLiteralRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(projection) = node.downcast_ref::<ProjectionExec>() else {
                return Ok(Transformed::no(node));
            };
            let input_schema = projection.input().schema();
            let mut changed = false;
            let mut exprs = Vec::with_capacity(projection.expr().len());
            for e in projection.expr() {
                let rewritten =
                    Arc::clone(&e.expr).transform_up(|expr| rewrite(expr, &input_schema))?;
                changed |= rewritten.transformed;
                exprs.push(ProjectionExpr {
                    expr: rewritten.data,
                    alias: e.alias.clone(),
                });
            }
            if !changed {
                return Ok(Transformed::no(node));
            }
            let exec = ProjectionExec::try_new_with_schema_metadata(
                exprs,
                Arc::clone(projection.input()),
                &projection.schema(),
            )?;
            Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "string_eq_literal"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `expr` as a [`StringEqLiteral`] when it is a Utf8 comparison with a non-null literal.
fn rewrite(
    expr: Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    let Some(binary) = expr.downcast_ref::<BinaryExpr>() else {
        return Ok(Transformed::no(expr));
    };
    let negated = match binary.op() {
        Operator::Eq => false,
        Operator::NotEq => true,
        _ => return Ok(Transformed::no(expr)),
    };
    let (input, literal) = match (literal_text(binary.right()), literal_text(binary.left())) {
        (Some(text), _) => (binary.left(), text),
        (None, Some(text)) => (binary.right(), text),
        (None, None) => return Ok(Transformed::no(expr)),
    };
    if !matches!(
        input.data_type(schema)?,
        DataType::Utf8 | DataType::LargeUtf8
    ) {
        return Ok(Transformed::no(expr));
    }
    let fast = StringEqLiteral {
        input: Arc::clone(input),
        literal: literal.into_bytes(),
        negated,
    };
    Ok(Transformed::yes(Arc::new(fast)))
}

fn literal_text(expr: &Arc<dyn PhysicalExpr>) -> Option<String> {
    match expr.downcast_ref::<Literal>()?.value() {
        ScalarValue::Utf8(Some(text)) | ScalarValue::LargeUtf8(Some(text)) => Some(text.clone()),
        _ => None,
    }
}

/// `input = literal` (or `<>` when `negated`) for a Utf8 or LargeUtf8 input; a null input
/// row gives null, as in SQL.
#[derive(Debug, Eq)]
pub(crate) struct StringEqLiteral {
    input: Arc<dyn PhysicalExpr>,
    literal: Vec<u8>,
    negated: bool,
}

impl PartialEq for StringEqLiteral {
    fn eq(&self, other: &Self) -> bool {
        self.input.eq(&other.input)
            && self.literal == other.literal
            && self.negated == other.negated
    }
}

impl Hash for StringEqLiteral {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.input.hash(state);
        self.literal.hash(state);
        self.negated.hash(state);
    }
}

impl fmt::Display for StringEqLiteral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.negated { "<>" } else { "=" };
        let text = String::from_utf8_lossy(&self.literal);
        write!(f, "{} {op} {text} (string_eq_literal)", self.input)
    }
}

impl PhysicalExpr for StringEqLiteral {
    fn return_field(&self, input_schema: &Schema) -> Result<FieldRef> {
        let nullable = self.input.nullable(input_schema)?;
        Ok(Arc::new(arrow::datatypes::Field::new(
            self.to_string(),
            DataType::Boolean,
            nullable,
        )))
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        match self.input.evaluate(batch)? {
            ColumnarValue::Array(array) => {
                let result = match array.data_type() {
                    DataType::Utf8 => compare(array.as_string::<i32>(), &self.literal),
                    DataType::LargeUtf8 => compare(array.as_string::<i64>(), &self.literal),
                    other => {
                        return Err(DataFusionError::Internal(format!(
                            "string_eq_literal was planned for text, got {other}"
                        )))
                    }
                };
                let result = if self.negated {
                    let values = !result.values();
                    BooleanArray::new(values, result.nulls().cloned())
                } else {
                    result
                };
                Ok(ColumnarValue::Array(Arc::new(result)))
            }
            ColumnarValue::Scalar(scalar) => {
                let text = match &scalar {
                    ScalarValue::Utf8(text) | ScalarValue::LargeUtf8(text) => text.as_deref(),
                    ScalarValue::Null => None,
                    other => {
                        return Err(DataFusionError::Internal(format!(
                            "string_eq_literal was planned for text, got {}",
                            other.data_type()
                        )))
                    }
                };
                let value = text.map(|t| (t.as_bytes() == self.literal.as_slice()) != self.negated);
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(value)))
            }
        }
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let [input] = <[_; 1]>::try_from(children).map_err(|c| {
            DataFusionError::Internal(format!("string_eq_literal takes 1 child, got {}", c.len()))
        })?;
        Ok(Arc::new(StringEqLiteral {
            input,
            literal: self.literal.clone(),
            negated: self.negated,
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.input.fmt_sql(f)?;
        let op = if self.negated { "<>" } else { "=" };
        write!(
            f,
            " {op} '{}'",
            String::from_utf8_lossy(&self.literal).replace('\'', "''")
        )
    }
}

/// Which rows of `array` equal `literal`, with the array's nulls.
fn compare<O: OffsetSizeTrait>(array: &GenericStringArray<O>, literal: &[u8]) -> BooleanArray {
    let offsets = array.value_offsets();
    let bytes = array.value_data();
    let len = literal.len();
    let values = if len <= INLINE_LITERAL_BYTES {
        BooleanBuffer::collect_bool(array.len(), |i| {
            let (start, end) = (offsets[i].as_usize(), offsets[i + 1].as_usize());
            end - start == len && bytes[start..end].iter().zip(literal).all(|(a, b)| a == b)
        })
    } else {
        BooleanBuffer::collect_bool(array.len(), |i| {
            let (start, end) = (offsets[i].as_usize(), offsets[i + 1].as_usize());
            end - start == len && &bytes[start..end] == literal
        })
    };
    BooleanArray::new(values, array.nulls().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{LargeStringArray, Scalar, StringArray};
    use arrow::compute::kernels::cmp::{eq, neq};
    use proptest::prelude::*;

    const WORDS: [&str; 7] = [
        "",
        "A",
        "B",
        "AB",
        "é",
        "a much longer label, past 16 bytes",
        "ÅB",
    ];

    fn expected(array: &dyn Array, literal: &str, negated: bool) -> BooleanArray {
        let scalar: Box<dyn arrow::array::Datum> = match array.data_type() {
            DataType::Utf8 => Box::new(Scalar::new(StringArray::from(vec![literal]))),
            _ => Box::new(Scalar::new(LargeStringArray::from(vec![literal]))),
        };
        let kernel = if negated { neq } else { eq };
        kernel(&array, scalar.as_ref()).unwrap()
    }

    fn fast(array: Arc<dyn Array>, literal: &str, negated: bool) -> BooleanArray {
        let schema = Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
            "s",
            array.data_type().clone(),
            true,
        )]));
        let batch = RecordBatch::try_new(schema, vec![array]).unwrap();
        let expr = StringEqLiteral {
            input: Arc::new(datafusion::physical_expr::expressions::Column::new("s", 0)),
            literal: literal.as_bytes().to_vec(),
            negated,
        };
        match expr.evaluate(&batch).unwrap() {
            ColumnarValue::Array(a) => a.as_boolean().clone(),
            ColumnarValue::Scalar(s) => panic!("a scalar for an array: {s:?}"),
        }
    }

    proptest! {
        /// The same values and nulls as arrow's own kernel, on Utf8 and LargeUtf8, sliced
        /// or not, for literals of every length class (empty, 1 byte, multi-byte UTF-8, long).
        #[test]
        fn agrees_with_arrows_kernel(
            rows in proptest::collection::vec(proptest::option::of(0..WORDS.len()), 0..200),
            literal in 0..WORDS.len(),
            offset in 0usize..5,
            negated in any::<bool>(),
            large in any::<bool>(),
        ) {
            let texts: Vec<Option<&str>> = rows.iter().map(|r| r.map(|i| WORDS[i])).collect();
            let whole: Arc<dyn Array> = if large {
                Arc::new(LargeStringArray::from(texts))
            } else {
                Arc::new(StringArray::from(texts))
            };
            let offset = offset.min(whole.len());
            let array = whole.slice(offset, whole.len() - offset);
            let literal = WORDS[literal];
            prop_assert_eq!(fast(Arc::clone(&array), literal, negated), expected(&array, literal, negated));
        }
    }

    #[test]
    fn a_scalar_input_gives_a_scalar() {
        let expr = StringEqLiteral {
            input: Arc::new(Literal::new(ScalarValue::Utf8(Some("A".into())))),
            literal: b"A".to_vec(),
            negated: true,
        };
        let batch = RecordBatch::new_empty(Arc::new(Schema::empty()));
        let ColumnarValue::Scalar(value) = expr.evaluate(&batch).unwrap() else {
            panic!("an array for a scalar");
        };
        assert_eq!(value, ScalarValue::Boolean(Some(false)));
    }
}
