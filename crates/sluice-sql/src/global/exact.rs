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
    #[inline]
    pub(crate) fn add(&mut self, value: f64) {
        let bits = value.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as usize;
        if exponent == 0x7ff {
            self.special += value;
            return;
        }
        let fraction = bits & ((1 << 52) - 1);
        // A subnormal (exponent field 0) has no hidden bit and the scale of exponent 1.
        let (significand, bucket) = if exponent == 0 {
            (fraction, 1)
        } else {
            (fraction | (1 << 52), exponent)
        };
        let significand = significand as i128;
        self.buckets[bucket] += if bits >> 63 == 1 {
            -significand
        } else {
            significand
        };
    }

    /// Adds everything summed here to `sum`, exactly.
    pub(crate) fn add_to(&self, sum: &mut ExactSum) {
        if self.special != 0.0 || self.special.is_nan() {
            sum.special += self.special;
        }
        for (bucket, &total) in self.buckets.iter().enumerate() {
            if total == 0 {
                continue;
            }
            let negative = total < 0;
            let mut magnitude = total.unsigned_abs();
            // In pieces of 52 bits: each piece times its power of two is a double, exactly
            // (or an overflow, which `ExactSum::add` keeps as an infinity).
            let mut scale = bucket as i32 - 1075;
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
        }
        let mut wide = WideSum::default();
        [1.0, f64::INFINITY].iter().for_each(|&v| wide.add(v));
        let mut sum = ExactSum::default();
        wide.add_to(&mut sum);
        assert!(sum.value().is_infinite());
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
