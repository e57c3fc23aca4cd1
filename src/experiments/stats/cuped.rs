//! CUPED: variance reduction with the pre-exposure value of the same metric.
//!
//! Each user's value y is replaced by y − θ(x − x̄), x the user's value before exposure and x̄ its
//! mean over all users. θ = cov(x, y)/var(x) over all users of all variants minimizes the variance
//! of the adjusted value; x is unaffected by the treatment, so differences of adjusted means
//! estimate the same effect as the raw ones, with less noise. The adjusted means and variances
//! come from sums only, and [`super::welch`] then compares them.

use serde::{Deserialize, Serialize};

use super::mean::{at_least_two, co_moment, sample_variance, Moments};
use super::{finite, Result, StatsError};

/// A mean metric's sufficient statistics with the pre-exposure value x of the same metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CupedSums {
    pub users: u64,
    /// Σy.
    pub sum: f64,
    /// Σy².
    pub sum_squares: f64,
    /// Σx.
    pub pre_sum: f64,
    /// Σx².
    pub pre_sum_squares: f64,
    /// Σx·y.
    pub cross_sum: f64,
}

impl CupedSums {
    fn check(&self) -> Result<f64> {
        for (name, value) in [
            ("sum", self.sum),
            ("sum of squares", self.sum_squares),
            ("pre-exposure sum", self.pre_sum),
            ("pre-exposure sum of squares", self.pre_sum_squares),
            ("sum of products", self.cross_sum),
        ] {
            finite(name, value)?;
        }
        at_least_two(self.users)
    }
}

/// The adjustment and the adjusted moments, one per variant in the order given.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cuped {
    /// cov(x, y)/var(x) over all users.
    pub theta: f64,
    /// x̄ over all users.
    pub pre_mean: f64,
    /// Users, mean and variance of y − θ(x − x̄) per variant.
    pub adjusted: Vec<Moments>,
    /// 1 − adjusted variance / raw variance per variant (0 when the raw variance is 0).
    pub variance_reduction: Vec<f64>,
}

/// Adjusts every variant (control first, though the order does not matter here) with one θ.
pub fn cuped(variants: &[CupedSums]) -> Result<Cuped> {
    if variants.len() < 2 {
        return Err(StatsError::TooFewVariants);
    }
    let mut total = CupedSums {
        users: 0,
        sum: 0.0,
        sum_squares: 0.0,
        pre_sum: 0.0,
        pre_sum_squares: 0.0,
        cross_sum: 0.0,
    };
    for v in variants {
        v.check()?;
        total.users = total.users.saturating_add(v.users);
        total.sum += v.sum;
        total.sum_squares += v.sum_squares;
        total.pre_sum += v.pre_sum;
        total.pre_sum_squares += v.pre_sum_squares;
        total.cross_sum += v.cross_sum;
    }
    let n = total.users as f64;
    let pre_spread = co_moment(total.pre_sum_squares, total.pre_sum, total.pre_sum, n);
    if pre_spread <= 0.0 {
        return Err(StatsError::ZeroVariance("the pre-exposure metric"));
    }
    let theta = co_moment(total.cross_sum, total.pre_sum, total.sum, n) / pre_spread;
    let pre_mean = total.pre_sum / n;

    let mut adjusted = Vec::with_capacity(variants.len());
    let mut variance_reduction = Vec::with_capacity(variants.len());
    for v in variants {
        let n = v.users as f64;
        let var_y = sample_variance(v.sum_squares, v.sum, n);
        let var_x = sample_variance(v.pre_sum_squares, v.pre_sum, n);
        let cov = co_moment(v.cross_sum, v.pre_sum, v.sum, n) / (n - 1.0);
        // Var(y − θx) = Var(y) + θ²Var(x) − 2θ·Cov(x, y); the shift by θx̄ changes no variance.
        let variance = (var_y + theta * theta * var_x - 2.0 * theta * cov).max(0.0);
        adjusted.push(Moments {
            users: v.users,
            mean: (v.sum - theta * (v.pre_sum - n * pre_mean)) / n,
            variance,
        });
        variance_reduction.push(if var_y > 0.0 {
            1.0 - variance / var_y
        } else {
            0.0
        });
    }
    Ok(Cuped {
        theta,
        pre_mean,
        adjusted,
        variance_reduction,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sums of (x, y) pairs.
    fn sums(pairs: &[(f64, f64)]) -> CupedSums {
        let mut s = CupedSums {
            users: pairs.len() as u64,
            sum: 0.0,
            sum_squares: 0.0,
            pre_sum: 0.0,
            pre_sum_squares: 0.0,
            cross_sum: 0.0,
        };
        for &(x, y) in pairs {
            s.sum += y;
            s.sum_squares += y * y;
            s.pre_sum += x;
            s.pre_sum_squares += x * x;
            s.cross_sum += x * y;
        }
        s
    }

    #[test]
    fn a_pre_value_that_explains_y_removes_its_variance() {
        // y = 2x + effect exactly: θ = 2 and nothing is left but the effect.
        let control = sums(&[(1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]);
        let variant = sums(&[(1.0, 3.0), (4.0, 9.0), (2.0, 5.0)]);
        let c = cuped(&[control, variant]).unwrap();
        assert!((c.theta - 2.0).abs() < 0.2, "{}", c.theta);
        assert!(c.variance_reduction.iter().all(|r| *r > 0.9), "{c:?}");
    }

    #[test]
    fn a_constant_pre_value_cannot_adjust() {
        let control = sums(&[(1.0, 2.0), (1.0, 4.0)]);
        let variant = sums(&[(1.0, 3.0), (1.0, 9.0)]);
        assert_eq!(
            cuped(&[control, variant]),
            Err(StatsError::ZeroVariance("the pre-exposure metric"))
        );
    }

    #[test]
    fn one_user_or_one_variant_is_an_error() {
        let one = sums(&[(1.0, 2.0)]);
        let two = sums(&[(1.0, 2.0), (3.0, 1.0)]);
        assert_eq!(
            cuped(&[two, one]),
            Err(StatsError::TooFewUsers {
                needed: 2,
                users: 1
            })
        );
        assert_eq!(cuped(&[two]), Err(StatsError::TooFewVariants));
    }
}
