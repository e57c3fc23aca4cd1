//! Sequential testing: the mixture sequential probability ratio test (mSPRT, Johari et al.,
//! "Always valid inference", as Optimizely's stats engine), so results may be read at every look.
//!
//! The estimated difference Δ (variant − control) is taken as normal with variance V (the squared
//! standard error at this look). Against H₀: true difference 0, the alternative mixes true
//! differences over N(0, τ²), which gives the likelihood ratio
//!
//!   Λ = √(V / (V + τ²)) · exp(τ²Δ² / (2V(V + τ²))).
//!
//! Under H₀, Λ over the looks is a martingale with mean 1, so by Ville's inequality the chance
//! that 1/Λ ever falls to α, however often one looks, is at most α: 1/Λ is an always-valid
//! p-value. Inverting the test at every hypothesised difference θ₀ gives the confidence sequence
//! Δ ± √(V(V + τ²)/τ² · (2·ln(1/α) + ln((V + τ²)/V))), which covers the true difference at
//! every look at once with probability 1 − α.
//!
//! τ² is the mixing variance: the scale of differences the test is most sensitive to. By default
//! ([`mixing_variance`]) τ is the absolute minimum detectable effect.

use serde::Serialize;

use super::conversion::Conversions;
use super::mean::{difference, Moments};
use super::{finite, Interval, Result, StatsError, ALPHA};

/// One look of the mSPRT.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Msprt {
    /// Δ, variant − control.
    pub difference: f64,
    /// V, the variance of Δ at this look.
    pub variance: f64,
    /// τ², the variance of the mixture over true differences.
    pub mixing_variance: f64,
    /// ln Λ.
    pub log_likelihood_ratio: f64,
    /// min(1, 1/Λ): rejecting when it is below α at any look keeps the error rate at α.
    pub p_value: f64,
    /// This look's member of the confidence sequence at [`ALPHA`].
    pub ci: Interval,
}

/// τ² = (MDE × baseline)²: the mixture centred on differences of the size the experiment is
/// designed to detect.
pub fn mixing_variance(baseline: f64, mde_relative: f64) -> Result<f64> {
    let tau = finite("baseline", baseline)? * finite("minimum detectable effect", mde_relative)?;
    if tau == 0.0 {
        return Err(StatsError::OutOfRange {
            name: "baseline × minimum detectable effect",
            rule: "non-zero",
            value: tau,
        });
    }
    Ok(tau * tau)
}

/// The mSPRT at one look, from the estimated difference and its variance.
pub fn msprt(difference: f64, variance: f64, mixing_variance: f64) -> Result<Msprt> {
    let diff = finite("difference", difference)?;
    let v = finite("variance", variance)?;
    if v <= 0.0 {
        return Err(StatsError::ZeroVariance("the difference"));
    }
    let tau2 = finite("mixing variance", mixing_variance)?;
    if tau2 <= 0.0 {
        return Err(StatsError::OutOfRange {
            name: "mixing variance",
            rule: "positive",
            value: tau2,
        });
    }
    let spread = v + tau2;
    // Logarithms throughout: Λ overflows f64 long before a strong effect is unusual.
    let log_lr = 0.5 * (v / spread).ln() + tau2 * diff * diff / (2.0 * v * spread);
    let half = (v * spread / tau2 * (2.0 * (1.0 / ALPHA).ln() + (spread / v).ln())).sqrt();
    Ok(Msprt {
        difference: diff,
        variance: v,
        mixing_variance: tau2,
        log_likelihood_ratio: log_lr,
        p_value: (-log_lr).exp().min(1.0),
        ci: Interval::around(diff, half),
    })
}

/// The mSPRT on conversion rates, with the unpooled variance of the difference.
pub fn msprt_conversions(
    control: Conversions,
    variant: Conversions,
    mixing_variance: f64,
) -> Result<Msprt> {
    control.check()?;
    variant.check()?;
    msprt(
        variant.rate() - control.rate(),
        control.rate_variance() + variant.rate_variance(),
        mixing_variance,
    )
}

/// The mSPRT on means, with the variance of the difference as in Welch's test.
pub fn msprt_means(control: &Moments, variant: &Moments, mixing_variance: f64) -> Result<Msprt> {
    let (diff, variance) = difference(control, variant)?;
    msprt(diff, variance, mixing_variance)
}

/// What the looks so far say together: the smallest p-value and the intersection of the
/// intervals. Both stay valid under continuous monitoring; they only need the history the
/// caller keeps (a single look alone is valid too, but may move back).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AlwaysValid {
    pub p_value: f64,
    pub ci: Interval,
    pub looks: u32,
}

impl AlwaysValid {
    /// The state after a first look.
    pub fn first(look: &Msprt) -> Self {
        Self {
            p_value: look.p_value,
            ci: look.ci,
            looks: 1,
        }
    }

    /// Adds a look. Should the intersection come out empty (chance at most α when the model
    /// holds), the newest interval is kept rather than an empty one.
    pub fn update(&mut self, look: &Msprt) {
        self.p_value = self.p_value.min(look.p_value);
        let ci = Interval {
            lower: self.ci.lower.max(look.ci.lower),
            upper: self.ci.upper.min(look.ci.upper),
        };
        self.ci = if ci.lower <= ci.upper { ci } else { look.ci };
        self.looks = self.looks.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_difference_is_no_evidence_and_the_interval_is_centred() {
        let look = msprt(0.0, 1e-4, 1e-4).unwrap();
        assert_eq!(look.p_value, 1.0);
        assert!((look.ci.lower + look.ci.upper).abs() < 1e-18);
    }

    #[test]
    fn a_huge_effect_does_not_overflow() {
        let look = msprt(1.0, 1e-8, 1e-2).unwrap();
        assert!(look.log_likelihood_ratio > 1e6);
        assert_eq!(look.p_value, 0.0);
        assert!(look.ci.contains(1.0) && !look.ci.contains(0.0));
    }

    #[test]
    fn degenerate_inputs_are_errors() {
        assert_eq!(
            msprt(0.1, 0.0, 1.0),
            Err(StatsError::ZeroVariance("the difference"))
        );
        assert!(msprt(0.1, 1.0, 0.0).is_err());
        assert!(mixing_variance(0.0, 0.1).is_err());
        let none = Conversions {
            users: 10,
            converters: 0,
        };
        assert!(msprt_conversions(none, none, 1e-4).is_err());
    }

    #[test]
    fn looks_combine_into_the_minimum_and_the_intersection() {
        let a = msprt(0.02, 1e-4, 1e-4).unwrap();
        let b = msprt(0.01, 4e-5, 1e-4).unwrap();
        let mut state = AlwaysValid::first(&a);
        state.update(&b);
        assert_eq!(state.p_value, a.p_value.min(b.p_value));
        assert_eq!(state.ci.lower, a.ci.lower.max(b.ci.lower));
        assert_eq!(state.ci.upper, a.ci.upper.min(b.ci.upper));
        assert_eq!(state.looks, 2);
    }
}
