//! Partial states of whole-input aggregates, one per chunk, merged exactly: counts, float
//! sums and sums of squares as exact expansions, integer sums in 128 bits, minimum and
//! maximum. Merging is exact and commutative, so the final values do not depend on chunk
//! sizes, worker counts or the order chunks finish in.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
use datafusion::logical_expr::Accumulator;

use super::exact::{two_product, ExactSum, SquareSum, SumAndSquares, WideSum};

/// The aggregates computed over the whole input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    StddevSamp,
    StddevPop,
    VarSamp,
    VarPop,
}

impl Kind {
    /// The kind of DataFusion's aggregate of this (canonical) name.
    pub(crate) fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "count" => Kind::Count,
            "sum" => Kind::Sum,
            "avg" | "mean" => Kind::Avg,
            "min" => Kind::Min,
            "max" => Kind::Max,
            "stddev" | "stddev_samp" => Kind::StddevSamp,
            "stddev_pop" => Kind::StddevPop,
            "var" | "var_samp" | "var_sample" | "variance" => Kind::VarSamp,
            "var_pop" | "var_population" => Kind::VarPop,
            _ => return None,
        })
    }

    fn needs_sum(self) -> bool {
        matches!(
            self,
            Kind::Sum
                | Kind::Avg
                | Kind::StddevSamp
                | Kind::StddevPop
                | Kind::VarSamp
                | Kind::VarPop
        )
    }

    fn needs_squares(self) -> bool {
        matches!(
            self,
            Kind::StddevSamp | Kind::StddevPop | Kind::VarSamp | Kind::VarPop
        )
    }
}

/// How an argument column's values are summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Numeric {
    Signed,
    Unsigned,
    Float,
    /// Not summable here (strings, dates, decimals): COUNT, MIN and MAX only.
    Other,
}

impl Numeric {
    pub(crate) fn of(data_type: &DataType) -> Numeric {
        use DataType::*;
        match data_type {
            Int8 | Int16 | Int32 | Int64 => Numeric::Signed,
            UInt8 | UInt16 | UInt32 | UInt64 => Numeric::Unsigned,
            Float16 | Float32 | Float64 => Numeric::Float,
            _ => Numeric::Other,
        }
    }
}

/// What pass 1 keeps for one argument column (the union of what its aggregates need).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Needs {
    pub(crate) sum: bool,
    pub(crate) squares: bool,
    pub(crate) min: bool,
    pub(crate) max: bool,
}

impl Needs {
    pub(crate) fn add(&mut self, kind: Kind) {
        self.sum |= kind.needs_sum();
        self.squares |= kind.needs_squares();
        self.min |= kind == Kind::Min;
        self.max |= kind == Kind::Max;
    }
}

/// One argument column's state over the rows seen so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct ColumnState {
    /// Non-null values.
    count: u64,
    float_sum: ExactSum,
    int_sum: i128,
    /// The sum of the squares, each square added exactly as two doubles.
    squares: ExactSum,
    min: Option<ScalarValue>,
    max: Option<ScalarValue>,
}

impl ColumnState {
    /// Adds one batch of the argument's values.
    pub(crate) fn update(
        &mut self,
        values: &ArrayRef,
        needs: Needs,
    ) -> datafusion::error::Result<()> {
        self.count += (values.len() - values.null_count()) as u64;
        let numeric = Numeric::of(values.data_type());
        if needs.sum || needs.squares {
            match numeric {
                Numeric::Signed => {
                    let ints = cast(values, &DataType::Int64)?;
                    let ints = ints.as_primitive::<Int64Type>();
                    self.add_ints(ints.iter().flatten().map(i128::from), needs);
                }
                Numeric::Unsigned => {
                    let ints = cast(values, &DataType::UInt64)?;
                    let ints = ints.as_primitive::<UInt64Type>();
                    self.add_ints(ints.iter().flatten().map(i128::from), needs);
                }
                Numeric::Float => {
                    let floats = cast(values, &DataType::Float64)?;
                    let floats = floats.as_primitive::<Float64Type>();
                    if floats.null_count() == 0 {
                        self.add_floats(floats.values(), needs);
                    } else {
                        let present: Vec<f64> = floats.iter().flatten().collect();
                        self.add_floats(&present, needs);
                    }
                }
                Numeric::Other => {}
            }
        }
        if needs.min {
            let mut acc = MinAccumulator::try_new(values.data_type())?;
            acc.update_batch(std::slice::from_ref(values))?;
            merge_extreme(&mut self.min, acc.evaluate()?, std::cmp::Ordering::Less);
        }
        if needs.max {
            let mut acc = MaxAccumulator::try_new(values.data_type())?;
            acc.update_batch(std::slice::from_ref(values))?;
            merge_extreme(&mut self.max, acc.evaluate()?, std::cmp::Ordering::Greater);
        }
        Ok(())
    }

    fn add_ints(&mut self, values: impl Iterator<Item = i128>, needs: Needs) {
        let mut squares = needs.squares.then(WideSum::default);
        for v in values {
            self.int_sum += v;
            if let Some(squares) = &mut squares {
                squares.add_square(v as f64);
            }
        }
        if let Some(squares) = squares {
            squares.add_to(&mut self.squares);
        }
    }

    fn add_floats(&mut self, values: &[f64], needs: Needs) {
        if needs.sum && needs.squares {
            let mut both = SumAndSquares::default();
            both.add_all(values);
            both.add_to(&mut self.float_sum, &mut self.squares);
            return;
        }
        if needs.sum {
            let mut sum = WideSum::default();
            sum.add_all(values);
            sum.add_to(&mut self.float_sum);
        }
        if needs.squares {
            let mut squares = SquareSum::default();
            squares.add_all(values);
            squares.add_to(&mut self.squares);
        }
    }

    /// Adds `other`'s rows: exact, so merge order does not matter.
    pub(crate) fn merge(&mut self, other: &ColumnState) {
        self.count += other.count;
        self.float_sum.merge(&other.float_sum);
        self.int_sum += other.int_sum;
        self.squares.merge(&other.squares);
        if let Some(min) = &other.min {
            merge_extreme(&mut self.min, min.clone(), std::cmp::Ordering::Less);
        }
        if let Some(max) = &other.max {
            merge_extreme(&mut self.max, max.clone(), std::cmp::Ordering::Greater);
        }
    }

    /// The aggregate's value over every row merged, before the cast to its SQL type.
    pub(crate) fn finish(&self, kind: Kind, numeric: Numeric) -> Result<ScalarValue, String> {
        let n = self.count;
        let null_f64 = ScalarValue::Float64(None);
        Ok(match kind {
            Kind::Count => ScalarValue::Int64(Some(n as i64)),
            Kind::Min => self.min.clone().unwrap_or(ScalarValue::Null),
            Kind::Max => self.max.clone().unwrap_or(ScalarValue::Null),
            Kind::Sum if n == 0 => ScalarValue::Null,
            Kind::Sum => match numeric {
                Numeric::Signed => ScalarValue::Int64(Some(
                    i64::try_from(self.int_sum)
                        .map_err(|_| format!("the sum {} does not fit in BIGINT", self.int_sum))?,
                )),
                Numeric::Unsigned => {
                    ScalarValue::UInt64(Some(u64::try_from(self.int_sum).map_err(|_| {
                        format!("the sum {} does not fit in BIGINT UNSIGNED", self.int_sum)
                    })?))
                }
                _ => ScalarValue::Float64(Some(self.float_sum.value())),
            },
            Kind::Avg if n == 0 => null_f64,
            Kind::Avg => ScalarValue::Float64(Some(self.sum_f64(numeric) / n as f64)),
            Kind::StddevSamp | Kind::VarSamp if n < 2 => null_f64,
            Kind::StddevPop | Kind::VarPop if n < 1 => null_f64,
            Kind::StddevSamp | Kind::StddevPop | Kind::VarSamp | Kind::VarPop => {
                let sample = matches!(kind, Kind::StddevSamp | Kind::VarSamp);
                let var = self.variance(numeric, sample);
                let is_stddev = matches!(kind, Kind::StddevSamp | Kind::StddevPop);
                ScalarValue::Float64(Some(if is_stddev { var.sqrt() } else { var }))
            }
        })
    }

    /// The sum as a double, correctly rounded.
    fn sum_f64(&self, numeric: Numeric) -> f64 {
        match numeric {
            Numeric::Signed | Numeric::Unsigned => self.int_sum as f64,
            _ => self.float_sum.value(),
        }
    }

    /// `(n Σx² − (Σx)²) / (n (n − d))`, with the numerator computed exactly from the exact
    /// sums and rounded once: no cancellation, and the same bits however rows were split.
    fn variance(&self, numeric: Numeric, sample: bool) -> f64 {
        let n = self.count;
        let sum = match numeric {
            Numeric::Signed | Numeric::Unsigned => {
                let mut s = ExactSum::default();
                add_i128(&mut s, self.int_sum);
                s
            }
            _ => self.float_sum.clone(),
        };
        if sum.is_special() || self.squares.is_special() {
            return f64::NAN;
        }
        let nf = n as f64;
        let mut numerator = ExactSum::default();
        for &d in self.squares.partials() {
            let (p, e) = two_product(nf, d);
            numerator.add(p);
            numerator.add(e);
        }
        let partials = sum.partials();
        for &a in partials {
            for &b in partials {
                let (p, e) = two_product(a, b);
                numerator.add(-p);
                numerator.add(-e);
            }
        }
        if numerator.is_special() {
            return f64::NAN;
        }
        let numerator = numerator.value().max(0.0);
        let denominator = n as u128 * if sample { n as u128 - 1 } else { n as u128 };
        numerator / denominator as f64
    }
}

/// Adds an i128 to an exact sum in pieces that are each exact doubles.
fn add_i128(sum: &mut ExactSum, value: i128) {
    let high = (value >> 64) as i64;
    let low = value as u64;
    // value = high * 2^64 + low; each piece splits into doubles exactly.
    let two64 = 18446744073709551616.0_f64;
    sum.add(((high >> 32) as f64) * 4294967296.0 * two64);
    sum.add(((high & 0xffff_ffff) as f64) * two64);
    sum.add((low >> 32) as f64 * 4294967296.0);
    sum.add((low & 0xffff_ffff) as f64);
}

/// Keeps the smaller (`Less`) or larger (`Greater`) of `current` and `candidate`; NULLs
/// (no value) never win.
fn merge_extreme(
    current: &mut Option<ScalarValue>,
    candidate: ScalarValue,
    keep: std::cmp::Ordering,
) {
    if candidate.is_null() {
        return;
    }
    match current {
        Some(value) if !value.is_null() => {
            if candidate.partial_cmp(value) == Some(keep) {
                *value = candidate;
            }
        }
        _ => *current = Some(candidate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array};
    use std::sync::Arc;

    fn all() -> Needs {
        let mut needs = Needs::default();
        for kind in [Kind::Sum, Kind::StddevSamp, Kind::Min, Kind::Max] {
            needs.add(kind);
        }
        needs
    }

    #[test]
    fn integer_variance_is_exact() {
        let values: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(1_000_000_001),
            None,
            Some(1_000_000_002),
            Some(1_000_000_003),
        ]));
        let mut state = ColumnState::default();
        state.update(&values, all()).unwrap();
        assert_eq!(
            state.finish(Kind::VarSamp, Numeric::Signed).unwrap(),
            ScalarValue::Float64(Some(1.0))
        );
        assert_eq!(
            state.finish(Kind::Sum, Numeric::Signed).unwrap(),
            ScalarValue::Int64(Some(3_000_000_006))
        );
        assert_eq!(
            state.finish(Kind::Count, Numeric::Signed).unwrap(),
            ScalarValue::Int64(Some(3))
        );
        assert_eq!(
            state.finish(Kind::Min, Numeric::Signed).unwrap(),
            ScalarValue::Int64(Some(1_000_000_001))
        );
    }

    #[test]
    fn float_variance_has_no_cancellation_and_small_counts_are_null() {
        let values: ArrayRef = Arc::new(Float64Array::from(vec![1e9 + 0.5, 1e9 + 1.5, 1e9 + 2.5]));
        let mut state = ColumnState::default();
        state.update(&values, all()).unwrap();
        assert_eq!(
            state.finish(Kind::VarSamp, Numeric::Float).unwrap(),
            ScalarValue::Float64(Some(1.0))
        );
        assert_eq!(
            state.finish(Kind::VarPop, Numeric::Float).unwrap(),
            ScalarValue::Float64(Some(2.0 / 3.0))
        );
        let one: ArrayRef = Arc::new(Float64Array::from(vec![Some(4.0), None]));
        let mut state = ColumnState::default();
        state.update(&one, all()).unwrap();
        assert_eq!(
            state.finish(Kind::StddevSamp, Numeric::Float).unwrap(),
            ScalarValue::Float64(None)
        );
        assert_eq!(
            state.finish(Kind::StddevPop, Numeric::Float).unwrap(),
            ScalarValue::Float64(Some(0.0))
        );
        let empty = ColumnState::default();
        assert_eq!(
            empty.finish(Kind::Avg, Numeric::Float).unwrap(),
            ScalarValue::Float64(None)
        );
        assert_eq!(
            empty.finish(Kind::Count, Numeric::Float).unwrap(),
            ScalarValue::Int64(Some(0))
        );
        assert!(empty.finish(Kind::Sum, Numeric::Float).unwrap().is_null());
        assert!(empty.finish(Kind::Max, Numeric::Float).unwrap().is_null());
    }
}
