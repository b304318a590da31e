//! Exact sums of floats (Shewchuk's non-overlapping expansions, as Python's `math.fsum`),
//! so whole-input statistics do not depend on how the input was cut into chunks or in which
//! order the chunks' partial sums were merged: the sum is held exactly and rounded once.

/// The exact sum of the finite values added, as a list of non-overlapping partials, plus the
/// IEEE sum of the non-finite ones (infinities and NaN, which cannot be held exactly).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ExactSum {
    partials: Vec<f64>,
    /// Sum of the infinities and NaNs added (0 when there were none); an overflow of the
    /// partials themselves lands here as an infinity too.
    special: f64,
}

impl ExactSum {
    /// Adds one value exactly.
    pub(crate) fn add(&mut self, value: f64) {
        if !value.is_finite() {
            self.special += value;
            return;
        }
        let mut x = value;
        let mut kept = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        self.partials.truncate(kept);
        if x.is_finite() {
            self.partials.push(x);
        } else {
            // The running sum overflowed: no finite partials can bring it back in range.
            self.special += x;
        }
    }

    /// Adds every partial of `other`: the result is the exact sum of both.
    pub(crate) fn merge(&mut self, other: &ExactSum) {
        self.special += other.special;
        for &p in &other.partials {
            self.add(p);
        }
    }

    /// The partials, smallest magnitude first (for exact products).
    pub(crate) fn partials(&self) -> &[f64] {
        &self.partials
    }

    /// True when a non-finite value or an overflow made the sum non-finite.
    pub(crate) fn is_special(&self) -> bool {
        self.special != 0.0 || self.special.is_nan()
    }

    /// The sum, correctly rounded to the nearest double (ties to even), like `math.fsum`.
    pub(crate) fn value(&self) -> f64 {
        if self.is_special() {
            return self.special;
        }
        let p = &self.partials;
        let mut n = p.len();
        if n == 0 {
            return 0.0;
        }
        n -= 1;
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        // Half-way cases: the rest of the partials decide the rounding direction.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            let yr = x - hi;
            if y == yr {
                hi = x;
            }
        }
        hi
    }
}

/// Many doubles summed exactly at a few nanoseconds each: one integer accumulator per binary
/// exponent (a "superaccumulator"), each value's 53-bit significand added to its exponent's
/// bucket. A chunk's values go through one of these and reach an [`ExactSum`] as a few
/// dozen partials, instead of each value walking the expansion (which made pass 1 of a
/// global run several times slower than reading its input).
pub(crate) struct WideSum {
    /// Bucket `e` holds significands scaled by 2^(e - 1075); an i128 takes 2^74 of them.
    buckets: Box<[i128; 2048]>,
    /// Sum of the infinities and NaNs added.
    special: f64,
}

impl Default for WideSum {
    fn default() -> Self {
        WideSum {
            buckets: Box::new([0; 2048]),
            special: 0.0,
        }
    }
}

impl WideSum {
    /// Adds one value exactly.
    #[inline]
    pub(crate) fn add(&mut self, value: f64) {
        if self.add_to_bucket(value) {
            self.special += value;
        }
    }

    /// Adds every value exactly. The loop has no branch on the values: infinities and NaNs
    /// land in the unused bucket 0 and are summed in a second loop, only when there are any.
    /// (The loop with a branch per value took 70 or 140 ms per 10M values depending only on
    /// where the compiler placed it.)
    pub(crate) fn add_all(&mut self, values: &[f64]) {
        let mut special = false;
        for &v in values {
            special |= self.add_to_bucket(v);
        }
        if special {
            self.special += values.iter().filter(|v| !v.is_finite()).sum::<f64>();
        }
    }

    /// Adds a finite value's significand to its exponent's bucket, or anything to bucket 0
    /// (which no finite value uses) and returns true for an infinity or NaN.
    #[inline(always)]
    fn add_to_bucket(&mut self, value: f64) -> bool {
        let bits = value.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as usize;
        let special = exponent == 0x7ff;
        // A subnormal (exponent field 0) has no hidden bit and the scale of exponent 1.
        let hidden = u64::from(exponent != 0) << 52;
        let significand = ((bits & ((1 << 52) - 1)) | hidden) as i64;
        let bucket = if special { 0 } else { exponent.max(1) };
        // Negated without a branch: the sign is all ones for a negative value.
        let sign = (bits as i64) >> 63;
        self.buckets[bucket] += i128::from((significand ^ sign) - sign);
        special
    }

    /// Adds everything summed here to `sum`, exactly.
    pub(crate) fn add_to(&self, sum: &mut ExactSum) {
        if self.special != 0.0 || self.special.is_nan() {
            sum.special += self.special;
        }
        // Bucket 0 holds what infinities and NaNs added, not a sum.
        for (bucket, &total) in self.buckets.iter().enumerate().skip(1) {
            if total == 0 {
                continue;
            }
            add_scaled(sum, total.unsigned_abs(), total < 0, bucket as i32 - 1075);
        }
    }

    /// Adds the exact square of `v`: the rounded square and, when that is finite, its
    /// rounding error.
    #[inline]
    pub(crate) fn add_square(&mut self, v: f64) {
        let (p, e) = two_product(v, v);
        self.add(p);
        if p.is_finite() {
            self.add(e);
        }
    }
}

/// Adds `±magnitude · 2^scale` to `sum` exactly, in pieces of 52 bits: each piece times its
/// power of two is a double, exactly (or an overflow, which `ExactSum::add` keeps as an
/// infinity).
fn add_scaled(sum: &mut ExactSum, mut magnitude: u128, negative: bool, mut scale: i32) {
    while magnitude != 0 {
        let piece = (magnitude & ((1 << 52) - 1)) as f64;
        magnitude >>= 52;
        if piece != 0.0 {
            let value = times_power_of_two(piece, scale);
            sum.add(if negative { -value } else { value });
        }
        scale += 52;
    }
}

/// Exact sums of squares. A double `v = m · 2^(e-1075)` (53-bit `m`, exponent field `e`) has
/// the square `m² · 2^(2(e-1075))`, and `m²` is a 106-bit integer: it is added to a 128-bit
/// bucket per exponent with one multiply, instead of the square's two halves from a fused
/// multiply-add going to two buckets (twice the adds, and a libm call per value on the
/// baseline x86-64 target). The sums are the same exact numbers, so the result is the same
/// bit for bit.
pub(crate) struct SquareSum {
    /// Bucket `e` holds `m²` of the values of exponent field `e`, in [`FAST_EXPONENTS`].
    buckets: Box<[u128; 2048]>,
    /// Values added to the buckets since they were last emptied into `flushed`.
    in_buckets: usize,
    flushed: ExactSum,
    /// Squares of the other values (tiny, huge, infinite, NaN), as the square's two halves.
    rest: WideSum,
}

/// Exponent fields whose squares the buckets hold exactly and the two halves hold exactly
/// too: the lowest bit of the square, 2^(2(e-1075)), is at least 2^-1074 (no underflow), and
/// the square stays below 2^1022 (its rounded half is finite).
const FAST_EXPONENTS: std::ops::RangeInclusive<usize> = 538..=1533;

/// Values per emptying of the buckets: 2^21 squares below 2^106 each stay under 2^128.
const SQUARES_PER_FLUSH: usize = 1 << 21;

impl Default for SquareSum {
    fn default() -> Self {
        SquareSum {
            buckets: Box::new([0; 2048]),
            in_buckets: 0,
            flushed: ExactSum::default(),
            rest: WideSum::default(),
        }
    }
}

impl SquareSum {
    /// Adds the exact square of every value.
    pub(crate) fn add_all(&mut self, values: &[f64]) {
        let mut values = values;
        while !values.is_empty() {
            if self.in_buckets == SQUARES_PER_FLUSH {
                self.flush();
            }
            let take = values.len().min(SQUARES_PER_FLUSH - self.in_buckets);
            let (now, later) = values.split_at(take);
            for &v in now {
                self.add_one(v);
            }
            self.in_buckets += take;
            values = later;
        }
    }

    #[inline(always)]
    fn add_one(&mut self, v: f64) {
        let bits = v.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as usize;
        if FAST_EXPONENTS.contains(&exponent) {
            let significand = u128::from((bits & ((1 << 52) - 1)) | (1 << 52));
            self.buckets[exponent] += significand * significand;
        } else {
            self.rest.add_square(v);
        }
    }

    fn flush(&mut self) {
        let mut flushed = std::mem::take(&mut self.flushed);
        self.buckets_to(&mut flushed);
        self.flushed = flushed;
        self.buckets.fill(0);
        self.in_buckets = 0;
    }

    fn buckets_to(&self, sum: &mut ExactSum) {
        for (exponent, &total) in self.buckets.iter().enumerate() {
            add_scaled(sum, total, false, 2 * (exponent as i32 - 1075));
        }
    }

    /// Adds every square summed here to `sum`, exactly.
    pub(crate) fn add_to(&self, sum: &mut ExactSum) {
        sum.merge(&self.flushed);
        self.buckets_to(sum);
        self.rest.add_to(sum);
    }
}

/// An exact sum and an exact sum of squares of the same values, in one loop: each value's
/// bits are read and split once for both (AVG and STDDEV of one column, the usual pair,
/// took two loops, and the two were two fifths of pass 1's time). The buckets are the
/// ones [`WideSum`] and [`SquareSum`] keep, so the sums are the same bit for bit.
#[derive(Default)]
pub(crate) struct SumAndSquares {
    sum: WideSum,
    squares: SquareSum,
}

impl SumAndSquares {
    /// Adds every value and its square exactly.
    pub(crate) fn add_all(&mut self, values: &[f64]) {
        let mut values = values;
        while !values.is_empty() {
            if self.squares.in_buckets == SQUARES_PER_FLUSH {
                self.squares.flush();
            }
            let take = values
                .len()
                .min(SQUARES_PER_FLUSH - self.squares.in_buckets);
            let (now, later) = values.split_at(take);
            for &v in now {
                let bits = v.to_bits();
                let exponent = ((bits >> 52) & 0x7ff) as usize;
                if FAST_EXPONENTS.contains(&exponent) {
                    // Normal and finite: the sum's bucket is the exponent, as in `WideSum`.
                    let significand = (bits & ((1 << 52) - 1)) | (1 << 52);
                    let sign = (bits as i64) >> 63;
                    self.sum.buckets[exponent] += i128::from((significand as i64 ^ sign) - sign);
                    let wide = u128::from(significand);
                    self.squares.buckets[exponent] += wide * wide;
                } else {
                    self.sum.add(v);
                    self.squares.rest.add_square(v);
                }
            }
            self.squares.in_buckets += take;
            values = later;
        }
    }

    /// Adds what was summed here to `sum` and `squares`, exactly.
    pub(crate) fn add_to(&self, sum: &mut ExactSum, squares: &mut ExactSum) {
        self.sum.add_to(sum);
        self.squares.add_to(squares);
    }
}

/// `x · 2^scale` for an integer `x < 2^52`, exact whenever the result is a finite double.
fn times_power_of_two(x: f64, scale: i32) -> f64 {
    let power = |e: i32| f64::from_bits(((e + 1023) as u64) << 52);
    if scale < -1022 {
        // 2^scale itself is below the normal range: scale in two exact steps (the result,
        // an integer below 2^52 times 2^-1074 or more, is representable).
        x * power(scale + 52) * power(-52)
    } else if scale > 1023 {
        x * power(1023) * power((scale - 1023).min(1023))
    } else {
        x * power(scale)
    }
}

/// `a * b` as an exact sum of two doubles (Dekker / fused multiply-add), when it does not
/// overflow or underflow.
pub(crate) fn two_product(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    (p, a.mul_add(b, -p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fsum(values: &[f64]) -> f64 {
        let mut s = ExactSum::default();
        values.iter().for_each(|&v| s.add(v));
        s.value()
    }

    #[test]
    fn sums_exactly_where_naive_sums_lose_everything() {
        assert_eq!(fsum(&[1e100, 1.0, -1e100]), 1.0);
        assert_eq!(fsum(&[0.1; 10]), 1.0);
        assert_eq!(fsum(&[1.0, 1e-16, 1e-16]), 1.0000000000000002);
        // Python: math.fsum([1e308, 1e308, -1e308]) overflows; the infinity is kept.
        assert!(fsum(&[f64::INFINITY, 1.0]).is_infinite());
        assert!(fsum(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        assert_eq!(fsum(&[]), 0.0);
    }

    #[test]
    fn merging_in_any_split_gives_the_same_bits() {
        let values: Vec<f64> = (0..5000)
            .map(|i| ((i as f64) * 0.7).sin() * 10f64.powi(i % 17 - 8))
            .collect();
        let whole = fsum(&values);
        for size in [1, 7, 333, 4999] {
            let mut merged = ExactSum::default();
            for part in values.chunks(size).rev() {
                let mut s = ExactSum::default();
                part.iter().for_each(|&v| s.add(v));
                merged.merge(&s);
            }
            assert_eq!(
                merged.value().to_bits(),
                whole.to_bits(),
                "chunks of {size}"
            );
        }
    }

    /// The wide accumulator gives the expansion's exact sum, bit for bit, on values of
    /// every magnitude (subnormals, huge, cancelling) and sign.
    #[test]
    fn the_wide_sum_is_the_exact_sum() {
        let mut cases: Vec<Vec<f64>> = vec![
            vec![1e100, 1.0, -1e100],
            vec![0.1; 10],
            vec![1.0, 1e-16, 1e-16],
            vec![5e-324, 5e-324, -1e-310, 2.2250738585072014e-308],
            vec![1e308, -1e308, 1e-300, 3.0],
            vec![],
            vec![0.0, -0.0],
        ];
        cases.push(
            (0..20_000)
                .map(|i| ((i as f64) * 0.7).sin() * 10f64.powi(i % 41 - 20))
                .collect(),
        );
        cases.push((0..5000).map(|i| (i as f64).sqrt() * 1e-310).collect());
        for values in cases {
            let mut wide = WideSum::default();
            values.iter().for_each(|&v| wide.add(v));
            let mut sum = ExactSum::default();
            wide.add_to(&mut sum);
            assert_eq!(sum.value().to_bits(), fsum(&values).to_bits(), "{values:?}");
            let mut all = WideSum::default();
            all.add_all(&values);
            let mut sum = ExactSum::default();
            all.add_to(&mut sum);
            assert_eq!(sum.value().to_bits(), fsum(&values).to_bits(), "{values:?}");
        }
        let mut wide = WideSum::default();
        [1.0, f64::INFINITY].iter().for_each(|&v| wide.add(v));
        let mut sum = ExactSum::default();
        wide.add_to(&mut sum);
        assert!(sum.value().is_infinite());
    }

    /// The branch-free loops give what one value at a time gives, infinities, NaNs and
    /// squares that overflow included.
    #[test]
    fn slices_sum_as_single_values_do() {
        let finite: Vec<f64> = (0..3000)
            .map(|i| ((i as f64) * 0.37).cos() * 10f64.powi(i % 23 - 11))
            .chain([5e-324, -2.5e-320, 1e-160, 0.0, -0.0])
            .collect();
        let with = |extra: &[f64]| finite.iter().chain(extra).copied().collect::<Vec<_>>();
        let cases = [
            finite.clone(),
            with(&[1e200]),
            with(&[-1e300, 3.0]),
            with(&[f64::INFINITY]),
            with(&[f64::NEG_INFINITY, 1e200]),
            with(&[f64::NAN]),
        ];
        for values in cases {
            let (mut one, mut all) = (WideSum::default(), WideSum::default());
            values.iter().for_each(|&v| one.add(v));
            all.add_all(&values);
            let (mut a, mut b) = (ExactSum::default(), ExactSum::default());
            one.add_to(&mut a);
            all.add_to(&mut b);
            assert_eq!(
                a.value().to_bits(),
                b.value().to_bits(),
                "sums of {values:?}"
            );

            let mut one = WideSum::default();
            values.iter().for_each(|&v| one.add_square(v));
            let mut squares = SquareSum::default();
            squares.add_all(&values);
            let (mut a, mut b) = (ExactSum::default(), ExactSum::default());
            one.add_to(&mut a);
            squares.add_to(&mut b);
            assert_eq!(
                a.value().to_bits(),
                b.value().to_bits(),
                "squares of {values:?}"
            );
        }
    }

    /// More squares than the buckets take between two emptyings, of the largest
    /// significand, and values around both ends of the buckets' exponent range.
    #[test]
    fn square_sums_empty_their_buckets_before_they_overflow() {
        let largest = f64::from_bits(0x3fff_ffff_ffff_ffff); // 2 - 2^-52
        let edges = [
            f64::from_bits(538 << 52),
            f64::from_bits((537 << 52) | 12345),
            f64::from_bits((1533 << 52) | ((1 << 52) - 1)),
            f64::from_bits(1534 << 52),
        ];
        let mut values = vec![largest; 3 * SQUARES_PER_FLUSH + 5];
        values.extend(edges);
        let mut squares = SquareSum::default();
        squares.add_all(&values[..7]);
        squares.add_all(&values[7..]);
        let mut got = ExactSum::default();
        squares.add_to(&mut got);
        let mut halves = WideSum::default();
        values.iter().for_each(|&v| halves.add_square(v));
        let mut want = ExactSum::default();
        halves.add_to(&mut want);
        assert_eq!(got.value().to_bits(), want.value().to_bits());
        assert!(got.value().is_finite());
    }

    /// One loop for both sums gives what the two loops give, bit for bit, on values of every
    /// kind (the fast exponents, subnormals, huge, infinite, NaN) and across a flush.
    #[test]
    fn the_fused_loop_gives_the_two_loops_sums() {
        let finite: Vec<f64> = (0..3000)
            .map(|i| ((i as f64) * 0.37).cos() * 10f64.powi(i % 41 - 20))
            .chain([5e-324, -2.5e-320, 1e-160, 1e200, -1e300, 0.0, -0.0])
            .collect();
        let with = |extra: &[f64]| finite.iter().chain(extra).copied().collect::<Vec<_>>();
        let largest = f64::from_bits(0x3fff_ffff_ffff_ffff);
        let cases = [
            finite.clone(),
            with(&[f64::INFINITY]),
            with(&[f64::NEG_INFINITY, 1e200]),
            with(&[f64::NAN]),
            vec![-largest; SQUARES_PER_FLUSH + 3],
        ];
        for values in cases {
            let (mut sum, mut squares) = (WideSum::default(), SquareSum::default());
            sum.add_all(&values);
            squares.add_all(&values);
            let (mut want_sum, mut want_squares) = (ExactSum::default(), ExactSum::default());
            sum.add_to(&mut want_sum);
            squares.add_to(&mut want_squares);

            let mut both = SumAndSquares::default();
            both.add_all(&values[..values.len() / 3]);
            both.add_all(&values[values.len() / 3..]);
            let (mut got_sum, mut got_squares) = (ExactSum::default(), ExactSum::default());
            both.add_to(&mut got_sum, &mut got_squares);
            let bits = |s: &ExactSum| s.value().to_bits();
            assert_eq!(
                bits(&got_sum),
                bits(&want_sum),
                "sum of {} values",
                values.len()
            );
            assert_eq!(
                bits(&got_squares),
                bits(&want_squares),
                "squares of {}",
                values.len()
            );
        }
    }

    #[test]
    fn two_product_is_exact() {
        let (p, e) = two_product(0.1, 0.1);
        let mut s = ExactSum::default();
        s.add(p);
        s.add(e);
        s.add(-p);
        assert_eq!(s.value(), e);
        assert_ne!(e, 0.0);
    }
}
