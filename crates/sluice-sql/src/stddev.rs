//! `STDDEV_SAMP` / `STDDEV` computed a batch at a time. DataFusion's own accumulator updates
//! its mean and second moment value by value (a division per value), which profiled as the
//! largest single cost of the per-chunk z-score; this one takes two vectorised passes over
//! each batch (mean, then squared deviations) and merges batches with Chan's formula. Same
//! name, aliases, signature, state and results (to rounding) as DataFusion's; grouped
//! aggregation and `DISTINCT` still use DataFusion's.

#[cfg(test)]
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{FieldRef, Float64Type, UInt64Type};
use datafusion::common::{internal_err, Result, ScalarValue};
use datafusion::functions_aggregate::stddev::Stddev;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, GroupsAccumulator, Signature,
};

/// Values summed in independent lanes, so the compiler can use SIMD (a single running sum
/// is a dependency chain it may not reorder).
const LANES: usize = 8;

/// The function to register in place of DataFusion's `stddev` (alias `stddev_samp`).
pub(crate) fn sample_stddev_udaf() -> AggregateUDF {
    AggregateUDF::from(BatchStddev::default())
}

/// DataFusion's `Stddev` with a batch-at-a-time accumulator.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
struct BatchStddev {
    inner: Stddev,
}

impl AggregateUDFImpl for BatchStddev {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(
        &self,
        arg_types: &[arrow::datatypes::DataType],
    ) -> Result<arrow::datatypes::DataType> {
        self.inner.return_type(arg_types)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if args.is_distinct {
            return self.inner.accumulator(args);
        }
        Ok(Box::new(Moments::default()))
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        self.inner.create_groups_accumulator(args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// Count, mean and sum of squared deviations from the mean (DataFusion's state layout).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Moments {
    count: u64,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// The moments of a slice: its mean, then the squared deviations from it.
    fn of(values: &[f64]) -> Moments {
        if values.is_empty() {
            return Moments::default();
        }
        let mean = lane_sum(values, |x| x) / values.len() as f64;
        let m2 = lane_sum(values, |x| (x - mean) * (x - mean));
        Moments {
            count: values.len() as u64,
            mean,
            m2,
        }
    }

    /// Chan et al.'s combination of two sets' moments.
    fn merge(self, other: Moments) -> Moments {
        if other.count == 0 {
            return self;
        }
        if self.count == 0 {
            return other;
        }
        let count = self.count + other.count;
        let (n1, n2, n) = (self.count as f64, other.count as f64, count as f64);
        let delta = other.mean - self.mean;
        Moments {
            count,
            mean: self.mean * (n1 / n) + other.mean * (n2 / n),
            m2: self.m2 + other.m2 + delta * delta * (n1 * n2 / n),
        }
    }

    /// Removes one value (the inverse of adding it), for sliding window frames.
    fn retract(self, value: f64) -> Moments {
        if self.count <= 1 {
            return Moments::default();
        }
        let count = self.count - 1;
        let delta1 = self.mean - value;
        let mean = delta1 / count as f64 + self.mean;
        let delta2 = mean - value;
        Moments {
            count,
            mean,
            m2: self.m2 - delta1 * delta2,
        }
    }
}

fn lane_sum(values: &[f64], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += f(x);
        }
    }
    lanes.iter().sum::<f64>() + rest.iter().map(|&x| f(x)).sum::<f64>()
}

fn float_values(values: &[ArrayRef]) -> Result<&arrow::array::Float64Array> {
    match values
        .first()
        .and_then(|a| a.as_primitive_opt::<Float64Type>())
    {
        Some(array) => Ok(array),
        None => internal_err!("stddev expects one Float64 argument"),
    }
}

impl Accumulator for Moments {
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::from(self.count),
            ScalarValue::from(self.mean),
            ScalarValue::from(self.m2),
        ])
    }

    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let array = float_values(values)?;
        let batch = if array.null_count() == 0 {
            Moments::of(array.values())
        } else {
            let valid: Vec<f64> = array.iter().flatten().collect();
            Moments::of(&valid)
        };
        *self = self.merge(batch);
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for value in float_values(values)?.iter().flatten() {
            *self = self.retract(value);
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [counts, means, m2s] = states else {
            return internal_err!("stddev state has three columns, got {}", states.len());
        };
        let (Some(counts), Some(means), Some(m2s)) = (
            counts.as_primitive_opt::<UInt64Type>(),
            means.as_primitive_opt::<Float64Type>(),
            m2s.as_primitive_opt::<Float64Type>(),
        ) else {
            return internal_err!("stddev state has the wrong types");
        };
        for i in 0..counts.len() {
            *self = self.merge(Moments {
                count: counts.value(i),
                mean: means.value(i),
                m2: m2s.value(i),
            });
        }
        Ok(())
    }

    /// The sample standard deviation; NULL for fewer than two values (as DataFusion).
    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(if self.count < 2 {
            None
        } else {
            Some((self.m2 / (self.count - 1) as f64).sqrt())
        }))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Float64Array;

    /// The textbook sample standard deviation of the valid values.
    fn reference(values: &[f64]) -> Option<f64> {
        let n = values.len() as f64;
        if values.len() < 2 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n;
        Some((values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt())
    }

    fn assert_close(got: ScalarValue, want: Option<f64>) {
        match (got, want) {
            (ScalarValue::Float64(Some(x)), Some(y)) => {
                assert!((x - y).abs() <= 1e-9 * y.abs().max(1.0), "{x} vs {y}")
            }
            (ScalarValue::Float64(None), None) => {}
            (got, want) => panic!("{got:?} vs {want:?}"),
        }
    }

    #[test]
    fn equals_the_textbook_formula_over_batches_with_nulls_and_retractions() {
        let batches: Vec<Vec<Option<f64>>> = vec![
            vec![Some(1.5), None, Some(-2.0), Some(100.0)],
            (0..1000)
                .map(|i| Some((i as f64).sin() * 3.0 + 7.0))
                .collect(),
            vec![],
            vec![None, Some(4.25)],
        ];
        let mut ours = Moments::default();
        let mut seen = Vec::new();
        for batch in &batches {
            let array: ArrayRef = Arc::new(Float64Array::from(batch.clone()));
            ours.update_batch(&[array]).expect("update");
            seen.extend(batch.iter().flatten());
            assert_close(ours.evaluate().expect("evaluate"), reference(&seen));
        }
        let first: ArrayRef = Arc::new(Float64Array::from(batches[0].clone()));
        ours.retract_batch(&[first]).expect("retract");
        let rest: Vec<f64> = batches[1..].iter().flatten().flatten().copied().collect();
        assert_close(ours.evaluate().expect("evaluate"), reference(&rest));
    }

    #[test]
    fn merged_states_equal_one_pass_and_small_counts_are_null() {
        let values: Vec<f64> = (0..999).map(|i| (i % 37) as f64 * 0.25 - 3.0).collect();
        let mut merged = Moments::default();
        for part in values.chunks(100) {
            let mut partial = Moments::default();
            partial
                .update_batch(&[Arc::new(Float64Array::from(part.to_vec())) as ArrayRef])
                .expect("update");
            let state: Vec<ArrayRef> = partial
                .state()
                .expect("state")
                .iter()
                .map(|s| s.to_array().expect("array"))
                .collect();
            merged.merge_batch(&state).expect("merge");
        }
        assert_eq!(merged.count, 999);
        assert_close(merged.evaluate().expect("evaluate"), reference(&values));
        assert_eq!(
            Moments::of(&[3.0]).evaluate().expect("evaluate"),
            ScalarValue::Float64(None)
        );
        assert_eq!(
            Moments::default().evaluate().expect("evaluate"),
            ScalarValue::Float64(None)
        );
    }
}
