//! Sample size: users per variant needed to detect a minimum detectable effect (MDE).
//!
//! Normal approximation, two-sided test at [`ALPHA`], [`POWER`], equal allocation: the power of a
//! standardized effect d with n users per variant is Φ(d·√(n/2) − z) + Φ(−d·√(n/2) − z), z the
//! two-sided critical value, solved for n (as statsmodels `NormalIndPower().solve_power`).

use serde::Serialize;

use super::dist::{normal_cdf, normal_pdf, normal_sf, normal_upper_quantile, z_critical};
use super::{finite, Result, StatsError, ALPHA};

/// Probability of detecting an effect of the MDE's size when it is real.
pub const POWER: f64 = 0.8;

/// How many users per variant an MDE needs, and how many are still missing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SampleSize {
    /// Standardized effect: Cohen's h for conversions, |MDE × baseline| / standard deviation for
    /// means.
    pub effect_size: f64,
    /// Users each variant needs (not rounded, as statsmodels reports it).
    pub users_per_variant: f64,
    /// ⌈users_per_variant⌉ minus the users a variant already has, at least 0.
    pub still_needed: u64,
}

/// Users per variant that detect a standardized effect `effect_size` (either sign) with
/// [`POWER`] at [`ALPHA`].
pub fn users_per_variant(effect_size: f64) -> Result<f64> {
    let d = finite("effect size", effect_size)?.abs();
    if d == 0.0 {
        return Err(StatsError::OutOfRange {
            name: "effect size",
            rule: "non-zero",
            value: effect_size,
        });
    }
    let z = z_critical(ALPHA)?;
    // s = d·√(n/2). The power rises with s, so Newton from the one-tail solution z + z_β (where the
    // power exceeds the target only by the far tail Φ(−s − z)) converges in a few steps.
    let mut s = z + normal_upper_quantile(1.0 - POWER)?;
    for _ in 0..50 {
        let power = normal_cdf(s - z) + normal_sf(s + z);
        let slope = normal_pdf(s - z) - normal_pdf(s + z);
        let step = (power - POWER) / slope;
        s -= step;
        if step.abs() <= 1e-15 * s {
            break;
        }
    }
    Ok(2.0 * (s / d).powi(2))
}

/// Cohen's h between two proportions: 2·asin(√p₂) − 2·asin(√p₁) (statsmodels
/// `proportion_effectsize(p2, p1)`); the arcsine makes the variance independent of the rate.
pub fn cohens_h(p1: f64, p2: f64) -> f64 {
    2.0 * (p2.sqrt().asin() - p1.sqrt().asin())
}

/// Sample size for a relative MDE on a conversion rate: the control rate `baseline` against
/// `baseline × (1 + mde_relative)`, with `exposed` users already in the smallest variant.
pub fn conversion_sample_size(
    baseline: f64,
    mde_relative: f64,
    exposed: u64,
) -> Result<SampleSize> {
    let baseline = finite("baseline rate", baseline)?;
    if baseline <= 0.0 || baseline >= 1.0 {
        return Err(StatsError::OutOfRange {
            name: "baseline rate",
            rule: "between 0 and 1 (exclusive)",
            value: baseline,
        });
    }
    let target = baseline * (1.0 + finite("minimum detectable effect", mde_relative)?);
    if !(0.0..=1.0).contains(&target) {
        return Err(StatsError::OutOfRange {
            name: "baseline rate × (1 + minimum detectable effect)",
            rule: "between 0 and 1",
            value: target,
        });
    }
    sample_size(cohens_h(baseline, target).abs(), exposed)
}

/// Sample size for a relative MDE on a mean: `baseline_mean × mde_relative` as a difference,
/// standardized by `std_dev` (assumed the same in every variant), with `exposed` users already in
/// the smallest variant.
pub fn mean_sample_size(
    baseline_mean: f64,
    std_dev: f64,
    mde_relative: f64,
    exposed: u64,
) -> Result<SampleSize> {
    let difference = finite("baseline mean", baseline_mean)?
        * finite("minimum detectable effect", mde_relative)?;
    let std_dev = finite("standard deviation", std_dev)?;
    if std_dev <= 0.0 {
        return Err(StatsError::ZeroVariance("the metric"));
    }
    sample_size((difference / std_dev).abs(), exposed)
}

fn sample_size(effect_size: f64, exposed: u64) -> Result<SampleSize> {
    let users = users_per_variant(effect_size)?;
    // `as` saturates: an effect too small to ever detect reads as u64::MAX users still needed.
    let needed = users.ceil() as u64;
    Ok(SampleSize {
        effect_size,
        users_per_variant: users,
        still_needed: needed.saturating_sub(exposed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_textbook_number_for_a_quarter_standard_deviation() {
        // 2·(1.96 + 0.8416)²/0.25² ≈ 251.2 users per variant.
        let n = users_per_variant(0.25).unwrap();
        assert!((n - 251.17).abs() < 0.01, "{n}");
        assert_eq!(users_per_variant(-0.25).unwrap(), n);
    }

    #[test]
    fn users_already_exposed_are_subtracted() {
        let size = mean_sample_size(10.0, 4.0, 0.1, 100).unwrap();
        assert_eq!(
            size.still_needed,
            size.users_per_variant.ceil() as u64 - 100
        );
        let done = mean_sample_size(10.0, 4.0, 0.1, 1000).unwrap();
        assert_eq!(done.still_needed, 0);
    }

    #[test]
    fn impossible_designs_are_errors() {
        let out_of_range = |r: Result<SampleSize>| matches!(r, Err(StatsError::OutOfRange { .. }));
        assert!(out_of_range(conversion_sample_size(0.0, 0.1, 0)));
        assert!(out_of_range(conversion_sample_size(1.0, -0.1, 0)));
        assert!(out_of_range(conversion_sample_size(0.6, 1.0, 0)));
        assert!(out_of_range(conversion_sample_size(0.1, 0.0, 0)));
        assert!(out_of_range(mean_sample_size(0.0, 1.0, 0.1, 0)));
        assert!(out_of_range(mean_sample_size(5.0, 1.0, f64::NAN, 0)));
        assert_eq!(
            mean_sample_size(5.0, 0.0, 0.1, 0),
            Err(StatsError::ZeroVariance("the metric"))
        );
    }
}
