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
