//! Conversion metrics: rates, lifts with their intervals, and the two-proportion z-test.

use serde::{Deserialize, Serialize};

use super::dist::{normal_two_sided_p, z_critical};
use super::{Interval, Result, StatsError, ALPHA};

/// Exposed users and, among them, converters of one variant (a conversion metric's sufficient
/// statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversions {
    pub users: u64,
    pub converters: u64,
}

impl Conversions {
    /// Checked aggregates: at least one user, no more converters than users.
    pub fn new(users: u64, converters: u64) -> Result<Self> {
        let counts = Self { users, converters };
        counts.check()?;
        Ok(counts)
    }

    pub(super) fn check(&self) -> Result<()> {
        if self.users == 0 {
            return Err(StatsError::NoUsers);
        }
        if self.converters > self.users {
            return Err(StatsError::TooManyConverters {
                users: self.users,
                converters: self.converters,
            });
        }
        Ok(())
    }

    /// Share of users who converted.
    pub fn rate(&self) -> f64 {
        self.converters as f64 / self.users as f64
    }

    /// Variance of the estimated rate, p(1 − p)/n (unpooled).
    pub(super) fn rate_variance(&self) -> f64 {
        let p = self.rate();
        p * (1.0 - p) / self.users as f64
    }
}

/// Variant against control on a conversion metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ConversionTest {
    pub control_rate: f64,
    pub variant_rate: f64,
    /// variant rate − control rate.
    pub absolute_lift: f64,
    /// variant rate / control rate − 1; none when the control has no conversions.
    pub relative_lift: Option<f64>,
    /// Unpooled Wald interval of the absolute lift.
    pub absolute_ci: Interval,
    /// Interval of the relative lift: delta method on the log of the rate ratio, with 0.5 added to
    /// every count (defined with zero conversions).
    pub relative_ci: Interval,
    /// Statistic of the two-proportion z-test with pooled variance.
    pub z: f64,
    /// Two-sided p-value of that test.
    pub p_value: f64,
}

/// Compares a variant's conversions with the control's.
///
/// When both rates are 0 (or both 1) the pooled variance is zero and there is no evidence of a
/// difference: z = 0 and p = 1 (statsmodels gives NaN there).
pub fn compare_conversions(control: Conversions, variant: Conversions) -> Result<ConversionTest> {
    control.check()?;
    variant.check()?;
    let z_crit = z_critical(ALPHA)?;
    let (pc, pv) = (control.rate(), variant.rate());
    let lift = pv - pc;
    let wald_se = (control.rate_variance() + variant.rate_variance()).sqrt();

    let (z, p_value) = {
        let (users_c, users_v) = (control.users as f64, variant.users as f64);
        let pooled = (control.converters as f64 + variant.converters as f64) / (users_c + users_v);
        let variance = pooled * (1.0 - pooled) * (1.0 / users_c + 1.0 / users_v);
        if variance > 0.0 {
            let z = lift / variance.sqrt();
            (z, normal_two_sided_p(z))
        } else {
            (0.0, 1.0)
        }
    };

    Ok(ConversionTest {
        control_rate: pc,
        variant_rate: pv,
        absolute_lift: lift,
        relative_lift: (control.converters > 0).then(|| pv / pc - 1.0),
        absolute_ci: Interval::around(lift, z_crit * wald_se),
        relative_ci: log_ratio_interval(control, variant, z_crit),
        z,
        p_value,
    })
}

/// Interval of variant rate / control rate − 1 (statsmodels' `log-adjusted`): the log of the
/// ratio is about normal with variance Σ (1/c − 1/n); adding 0.5 to counts and users keeps it
/// finite when a variant has no conversions.
fn log_ratio_interval(control: Conversions, variant: Conversions, z_crit: f64) -> Interval {
    let adjusted = |c: Conversions| (c.converters as f64 + 0.5, c.users as f64 + 0.5);
    let (cc, nc) = adjusted(control);
    let (cv, nv) = adjusted(variant);
    let log_ratio = (cv / nv).ln() - (cc / nc).ln();
    let half = z_crit * (1.0 / cv - 1.0 / nv + 1.0 / cc - 1.0 / nc).sqrt();
    Interval {
        lower: (log_ratio - half).exp() - 1.0,
        upper: (log_ratio + half).exp() - 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(users: u64, converters: u64) -> Conversions {
        Conversions { users, converters }
    }

    #[test]
    fn aggregates_without_users_or_with_too_many_converters_are_errors() {
        assert_eq!(Conversions::new(0, 0), Err(StatsError::NoUsers));
        assert_eq!(
            compare_conversions(counts(10, 11), counts(10, 1)),
            Err(StatsError::TooManyConverters {
                users: 10,
                converters: 11
            })
        );
        assert_eq!(
            compare_conversions(counts(10, 1), counts(0, 0)),
            Err(StatsError::NoUsers)
        );
    }

    #[test]
    fn no_conversions_anywhere_is_no_evidence_of_a_difference() {
        let test = compare_conversions(counts(100, 0), counts(120, 0)).unwrap();
        assert_eq!((test.z, test.p_value), (0.0, 1.0));
        assert_eq!(test.relative_lift, None);
        assert_eq!(test.absolute_ci, Interval::around(0.0, 0.0));
        assert!(test.relative_ci.lower.is_finite() && test.relative_ci.upper.is_finite());
        assert!(test.relative_ci.contains(0.0));
    }

    #[test]
    fn everyone_converting_in_both_variants_is_no_evidence_either() {
        let test = compare_conversions(counts(30, 30), counts(1, 1)).unwrap();
        assert_eq!((test.z, test.p_value), (0.0, 1.0));
        assert_eq!(test.relative_lift, Some(0.0));
        assert!(test.relative_ci.contains(0.0));
    }

    #[test]
    fn a_single_user_per_variant_gives_defined_numbers() {
        let test = compare_conversions(counts(1, 1), counts(1, 0)).unwrap();
        assert_eq!(test.absolute_lift, -1.0);
        assert_eq!(test.relative_lift, Some(-1.0));
        assert!(test.p_value > 0.0 && test.p_value < 1.0);
        assert!(test.relative_ci.lower > -1.0 && test.relative_ci.upper.is_finite());
    }
}
