//! Sample-ratio mismatch: do exposed users split as the experiment's weights say?

use serde::Serialize;

use super::dist::chi_square_sf;
use super::{Result, StatsError};

/// p-value under which the split is called a mismatch and the whole result unreliable. A real
/// experiment's split is checked on every look, so the bar is far stricter than 0.05: a false
/// alarm on a healthy experiment stays rare, while genuine assignment bugs (a few percent off on
/// thousands of users) fall far below it.
pub const SRM_THRESHOLD: f64 = 0.001;

/// Chi-square goodness of fit of exposed users against the configured weights.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleRatio {
    /// Users each variant should have had: total × weight / Σ weights.
    pub expected_users: Vec<f64>,
    pub chi_square: f64,
    pub degrees_of_freedom: u32,
    pub p_value: f64,
    /// p < [`SRM_THRESHOLD`]: assignment or exposure logging is broken, do not trust the result.
    pub unreliable: bool,
}

/// Tests exposed users per variant against the weights (`scipy.stats.chisquare`), in the same
/// order; weights need not sum to 1.
pub fn sample_ratio_mismatch(users: &[u64], weights: &[f64]) -> Result<SampleRatio> {
    if users.len() != weights.len() {
        return Err(StatsError::WeightCount {
            variants: users.len(),
            weights: weights.len(),
        });
    }
    if users.len() < 2 {
        return Err(StatsError::TooFewVariants);
    }
    if weights.iter().any(|w| !w.is_finite() || *w <= 0.0) {
        return Err(StatsError::InvalidWeights);
    }
    let weight_sum: f64 = weights.iter().sum();
    if !weight_sum.is_finite() {
        return Err(StatsError::InvalidWeights);
    }
    // A float total: counts near u64::MAX must not overflow the sum.
    let total: f64 = users.iter().map(|&u| u as f64).sum();
    if total == 0.0 {
        return Err(StatsError::NoUsers);
    }
    let expected_users: Vec<f64> = weights.iter().map(|w| total * w / weight_sum).collect();
    let chi_square = users
        .iter()
        .zip(&expected_users)
        .map(|(&observed, &expected)| (observed as f64 - expected).powi(2) / expected)
        .sum();
    let degrees_of_freedom =
        u32::try_from(users.len() - 1).map_err(|_| StatsError::OutOfRange {
            name: "number of variants",
            rule: "representable",
            value: users.len() as f64,
        })?;
    let p_value = chi_square_sf(chi_square, f64::from(degrees_of_freedom))?;
    Ok(SampleRatio {
        expected_users,
        chi_square,
        degrees_of_freedom,
        p_value,
        unreliable: p_value < SRM_THRESHOLD,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_45_55_split_of_a_50_50_design_is_a_mismatch() {
        let srm = sample_ratio_mismatch(&[4500, 5500], &[50.0, 50.0]).unwrap();
        assert!(srm.unreliable && srm.p_value < 1e-20, "{srm:?}");
    }

    #[test]
    fn an_even_split_of_a_50_50_design_is_fine() {
        let srm = sample_ratio_mismatch(&[5000, 5000], &[0.5, 0.5]).unwrap();
        assert_eq!(
            (srm.chi_square, srm.p_value, srm.unreliable),
            (0.0, 1.0, false)
        );
        let srm = sample_ratio_mismatch(&[5040, 4960], &[0.5, 0.5]).unwrap();
        assert!(!srm.unreliable && srm.p_value > 0.4, "{srm:?}");
    }

    #[test]
    fn bad_weights_and_shapes_are_errors() {
        let err =
            |users: &[u64], weights: &[f64]| sample_ratio_mismatch(users, weights).unwrap_err();
        assert_eq!(
            err(&[10, 10], &[1.0]),
            StatsError::WeightCount {
                variants: 2,
                weights: 1
            }
        );
        assert_eq!(err(&[10], &[1.0]), StatsError::TooFewVariants);
        assert_eq!(err(&[10, 10], &[1.0, 0.0]), StatsError::InvalidWeights);
        assert_eq!(err(&[10, 10], &[1.0, -1.0]), StatsError::InvalidWeights);
        assert_eq!(err(&[10, 10], &[1.0, f64::NAN]), StatsError::InvalidWeights);
        assert_eq!(
            err(&[10, 10], &[f64::MAX, f64::MAX]),
            StatsError::InvalidWeights
        );
        assert_eq!(err(&[0, 0], &[1.0, 1.0]), StatsError::NoUsers);
    }
}
