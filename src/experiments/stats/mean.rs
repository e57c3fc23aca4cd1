//! Mean metrics (a numeric value per user): moments from sums and Welch's t-test.

use serde::{Deserialize, Serialize};

use super::dist::{t_critical, t_two_sided_p, z_critical};
use super::{finite, Interval, Result, StatsError, ALPHA};

/// Exposed users, and the sum and sum of squares of the per-user value, of one variant (a mean
/// metric's sufficient statistics).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanSums {
    pub users: u64,
    pub sum: f64,
    pub sum_squares: f64,
}

impl MeanSums {
    /// Mean and sample variance (n − 1); a variance needs at least two users.
    pub fn moments(&self) -> Result<Moments> {
        let n = at_least_two(self.users)?;
        let sum = finite("sum", self.sum)?;
        finite("sum of squares", self.sum_squares)?;
        Ok(Moments {
            users: self.users,
            mean: sum / n,
            variance: sample_variance(self.sum_squares, sum, n),
        })
    }
}

/// Users, mean and sample variance of a per-user value in one variant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub users: u64,
    pub mean: f64,
    pub variance: f64,
}

impl Moments {
    fn check(&self) -> Result<()> {
        at_least_two(self.users)?;
        finite("mean", self.mean)?;
        finite("variance", self.variance)?;
        if self.variance < 0.0 {
            return Err(StatsError::OutOfRange {
                name: "variance",
                rule: "at least 0",
                value: self.variance,
            });
        }
        Ok(())
    }

    /// Variance of the estimated mean.
    fn mean_variance(&self) -> f64 {
        self.variance / self.users as f64
    }
}

/// `users` as a float when there are at least two (a sample variance needs n − 1 > 0).
pub(super) fn at_least_two(users: u64) -> Result<f64> {
    if users < 2 {
        return Err(StatsError::TooFewUsers { needed: 2, users });
    }
    Ok(users as f64)
}

/// Σ(a − ā)(b − b̄) from Σab, Σa and Σb over n values.
pub(super) fn co_moment(sum_ab: f64, sum_a: f64, sum_b: f64, n: f64) -> f64 {
    sum_ab - sum_a * sum_b / n
}

/// Sample variance (n − 1) from Σa² and Σa; rounding cannot make it negative.
pub(super) fn sample_variance(sum_squares: f64, sum: f64, n: f64) -> f64 {
    (co_moment(sum_squares, sum, sum, n) / (n - 1.0)).max(0.0)
}

/// The estimated difference of means (variant − control) and its variance.
pub(super) fn difference(control: &Moments, variant: &Moments) -> Result<(f64, f64)> {
    control.check()?;
    variant.check()?;
    let variance = control.mean_variance() + variant.mean_variance();
    if variance <= 0.0 {
        return Err(StatsError::ZeroVariance("the difference of means"));
    }
    Ok((variant.mean - control.mean, variance))
}

/// Variant against control on a mean metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WelchTest {
    pub control_mean: f64,
    pub variant_mean: f64,
    /// variant mean − control mean.
    pub difference: f64,
    /// Standard error of the difference, √(s²_c/n_c + s²_v/n_v).
    pub standard_error: f64,
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Interval of the difference with the t quantile at `df`.
    pub ci: Interval,
    /// variant mean / control mean − 1; none when the control mean is 0.
    pub relative_lift: Option<f64>,
    /// Interval of the relative lift: delta method on the ratio of means (normal quantile).
    pub relative_ci: Option<Interval>,
}

/// Welch's unequal-variance t-test of variant against control (`scipy.stats.ttest_ind(variant,
/// control, equal_var=False)`).
pub fn welch(control: &Moments, variant: &Moments) -> Result<WelchTest> {
    let (diff, variance) = difference(control, variant)?;
    let se = variance.sqrt();
    let (vc, vv) = (control.mean_variance(), variant.mean_variance());
    let df = variance * variance
        / (vc * vc / (control.users as f64 - 1.0) + vv * vv / (variant.users as f64 - 1.0));
    let t = diff / se;

    let (relative_lift, relative_ci) = if control.mean == 0.0 {
        (None, None)
    } else {
        // Var(m_v/m_c) ≈ Var(m_v)/m_c² + m_v²·Var(m_c)/m_c⁴.
        let mc2 = control.mean * control.mean;
        let ratio_variance = vv / mc2 + variant.mean * variant.mean * vc / (mc2 * mc2);
        let lift = variant.mean / control.mean - 1.0;
        let half = z_critical(ALPHA)? * ratio_variance.sqrt();
        (Some(lift), Some(Interval::around(lift, half)))
    };

    Ok(WelchTest {
        control_mean: control.mean,
        variant_mean: variant.mean,
        difference: diff,
        standard_error: se,
        t,
        df,
        p_value: t_two_sided_p(t, df)?,
        ci: Interval::around(diff, t_critical(ALPHA, df)? * se),
        relative_lift,
        relative_ci,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(users: u64, mean: f64, variance: f64) -> Moments {
        Moments {
            users,
            mean,
            variance,
        }
    }

    #[test]
    fn moments_need_two_users_and_finite_sums() {
        let one = MeanSums {
            users: 1,
            sum: 3.0,
            sum_squares: 9.0,
        };
        assert_eq!(
            one.moments(),
            Err(StatsError::TooFewUsers {
                needed: 2,
                users: 1
            })
        );
        let nan = MeanSums {
            users: 3,
            sum: f64::NAN,
            sum_squares: 1.0,
        };
        assert!(matches!(nan.moments(), Err(StatsError::OutOfRange { .. })));
    }

    #[test]
    fn moments_of_equal_values_have_zero_variance_not_a_negative_one() {
        let m = MeanSums {
            users: 3,
            sum: 0.3,
            sum_squares: 0.03,
        }
        .moments()
        .unwrap();
        assert!((m.mean - 0.1).abs() < 1e-15);
        assert!(m.variance >= 0.0 && m.variance < 1e-15);
    }

    #[test]
    fn no_variance_in_either_variant_is_an_error() {
        assert_eq!(
            welch(&moments(10, 1.0, 0.0), &moments(12, 2.0, 0.0)),
            Err(StatsError::ZeroVariance("the difference of means"))
        );
    }

    #[test]
    fn one_constant_variant_still_tests() {
        let test = welch(&moments(10, 1.0, 0.0), &moments(12, 2.0, 1.0)).unwrap();
        assert!((test.df - 11.0).abs() < 1e-12, "df {}", test.df);
        assert!(test.p_value > 0.0 && test.p_value < 0.05);
    }

    #[test]
    fn equal_means_give_p_one_and_a_symmetric_interval() {
        let test = welch(&moments(50, 3.0, 2.0), &moments(60, 3.0, 2.5)).unwrap();
        assert_eq!((test.t, test.p_value), (0.0, 1.0));
        assert!((test.ci.lower + test.ci.upper).abs() < 1e-15);
        assert_eq!(test.relative_lift, Some(0.0));
    }

    #[test]
    fn a_zero_control_mean_has_no_relative_lift() {
        let test = welch(&moments(50, 0.0, 2.0), &moments(60, 0.5, 2.5)).unwrap();
        assert_eq!((test.relative_lift, test.relative_ci), (None, None));
    }
}
