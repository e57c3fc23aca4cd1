//! Distribution functions used by the tests, from statrs, with the tails computed directly (not
//! as `1 − cdf`) so that small p-values keep their relative precision.

use statrs::distribution::{ChiSquared, Continuous, ContinuousCDF, Normal, StudentsT};

use super::{Result, StatsError};

fn standard_normal() -> Normal {
    Normal::standard()
}

/// Φ(x).
pub(super) fn normal_cdf(x: f64) -> f64 {
    standard_normal().cdf(x)
}

/// 1 − Φ(x).
pub(super) fn normal_sf(x: f64) -> f64 {
    standard_normal().sf(x)
}

/// φ(x).
pub(super) fn normal_pdf(x: f64) -> f64 {
    standard_normal().pdf(x)
}

/// Two-sided p-value of a standard normal statistic.
pub(super) fn normal_two_sided_p(z: f64) -> f64 {
    2.0 * normal_sf(z.abs())
}

/// Upper `p` quantile of the standard normal (`norm.isf(p)`), for `p` in (0, 1).
pub(super) fn normal_upper_quantile(p: f64) -> Result<f64> {
    if p.is_nan() || p <= 0.0 || p >= 1.0 {
        return Err(StatsError::OutOfRange {
            name: "probability",
            rule: "between 0 and 1 (exclusive)",
            value: p,
        });
    }
    Ok(-standard_normal().inverse_cdf(p))
}

/// Critical value of a two-sided normal test at `alpha`.
pub(super) fn z_critical(alpha: f64) -> Result<f64> {
    normal_upper_quantile(alpha / 2.0)
}

fn students_t(df: f64) -> Result<StudentsT> {
    StudentsT::new(0.0, 1.0, df).map_err(|e| StatsError::Distribution(e.to_string()))
}

/// Two-sided p-value of a Student's t statistic with `df` degrees of freedom.
pub(super) fn t_two_sided_p(t: f64, df: f64) -> Result<f64> {
    Ok(2.0 * students_t(df)?.sf(t.abs()))
}

/// Critical value of a two-sided t test at `alpha`.
///
/// statrs inverts the t distribution through an approximate inverse beta that loses digits at
/// large df (about 1e-4 relative at df = 10⁶), so the root is polished by Newton steps on the
/// survival function, which is accurate there.
pub(super) fn t_critical(alpha: f64, df: f64) -> Result<f64> {
    let dist = students_t(df)?;
    let tail = alpha / 2.0;
    let mut q = dist.inverse_cdf(1.0 - tail);
    if !q.is_finite() {
        q = normal_upper_quantile(tail)?;
    }
    for _ in 0..4 {
        let density = dist.pdf(q);
        if density.is_nan() || density <= 0.0 {
            break;
        }
        let step = (dist.sf(q) - tail) / density;
        q += step;
        if step.abs() <= 1e-15 * q.abs() {
            break;
        }
    }
    Ok(q)
}

/// Upper tail of the chi-square distribution with `k` degrees of freedom.
pub(super) fn chi_square_sf(x: f64, k: f64) -> Result<f64> {
    if x <= 0.0 {
        return Ok(1.0);
    }
    let dist = ChiSquared::new(k).map_err(|e| StatsError::Distribution(e.to_string()))?;
    Ok(dist.sf(x))
}
