//! Statistics of A/B experiments over per-variant sufficient statistics (counts and sums that
//! ClickHouse aggregates in one pass), so no per-user row reaches the gateway.
//!
//! Every comparison is variant against control (variant − control). Intervals are two-sided at
//! [`ALPHA`]; the formulas, and how to read each number, are in docs/experiments.md. The reference
//! values the tests compare with come from SciPy/statsmodels
//! (tests/fixtures/experiments/make_reference.py).

pub mod bayes;
pub mod conversion;
pub mod cuped;
mod dist;
pub mod mean;
pub mod power;
pub mod sequential;
pub mod srm;

#[cfg(test)]
mod tests;

use serde::Serialize;

pub use bayes::{beta_binomial, normal_difference, Bayesian};
pub use conversion::{compare_conversions, ConversionTest, Conversions};
pub use cuped::{cuped, Cuped, CupedSums};
pub use mean::{welch, MeanSums, Moments, WelchTest};
pub use power::{conversion_sample_size, mean_sample_size, users_per_variant, SampleSize, POWER};
pub use sequential::{mixing_variance, msprt, msprt_conversions, msprt_means, AlwaysValid, Msprt};
pub use srm::{sample_ratio_mismatch, SampleRatio, SRM_THRESHOLD};

/// Two-sided significance level of every test and interval (95 % confidence).
pub const ALPHA: f64 = 0.05;

/// Why a statistic cannot be computed from the given aggregates.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    #[error("a variant has no exposed users")]
    NoUsers,
    #[error("{converters} converters among only {users} users")]
    TooManyConverters { users: u64, converters: u64 },
    #[error("at least {needed} users per variant are needed, a variant has {users}")]
    TooFewUsers { needed: u64, users: u64 },
    #[error("the variance of {0} is zero")]
    ZeroVariance(&'static str),
    #[error("{name} must be {rule}, got {value}")]
    OutOfRange {
        name: &'static str,
        rule: &'static str,
        value: f64,
    },
    #[error("weights must be finite positive numbers")]
    InvalidWeights,
    #[error("{variants} variants but {weights} weights")]
    WeightCount { variants: usize, weights: usize },
    #[error("at least two variants are needed")]
    TooFewVariants,
    #[error("distribution: {0}")]
    Distribution(String),
}

/// Result of the statistics in this module.
pub type Result<T, E = StatsError> = std::result::Result<T, E>;

/// A two-sided interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub lower: f64,
    pub upper: f64,
}

impl Interval {
    /// `center ± half_width`.
    pub fn around(center: f64, half_width: f64) -> Self {
        Self {
            lower: center - half_width,
            upper: center + half_width,
        }
    }

    /// Whether `value` lies inside (bounds included).
    pub fn contains(&self, value: f64) -> bool {
        self.lower <= value && value <= self.upper
    }
}

/// `value` itself when it is finite, else an error naming it.
fn finite(name: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(StatsError::OutOfRange {
            name,
            rule: "a finite number",
            value,
        })
    }
}
