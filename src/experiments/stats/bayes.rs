//! Bayesian read-outs: probability that the variant beats the control and the expected loss of
//! choosing either, in closed form (no sampling).

use serde::Serialize;
use statrs::function::beta::ln_beta;

use super::conversion::Conversions;
use super::dist::{normal_cdf, normal_pdf, normal_sf};
use super::mean::{difference, Moments};
use super::Result;

/// Bayesian comparison of a variant with the control.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bayesian {
    /// P(variant's true value > control's).
    pub probability_to_beat_control: f64,
    /// E[max(control − variant, 0)]: what choosing the variant costs, on average, if it is worse.
    pub expected_loss: f64,
    /// E[max(variant − control, 0)]: what keeping the control costs if the variant is better.
    pub expected_loss_control: f64,
}

/// Beta(1 + converters, 1 + users − converters) posteriors (uniform prior) of both rates.
pub fn beta_binomial(control: Conversions, variant: Conversions) -> Result<Bayesian> {
    control.check()?;
    variant.check()?;
    let c = Beta::posterior(control);
    let v = Beta::posterior(variant);
    // E[max(C − V, 0)] = E[C]·P(C⁺ > V) − E[V]·P(C > V⁺), where X⁺ is X's posterior with one more
    // success: E[X·1{X > Y}] = E[X]·P(X⁺ > Y) because x·Beta(a, b)(x) ∝ Beta(a + 1, b)(x).
    let loss = c.mean() * prob_greater(c.plus_one(), v) - v.mean() * prob_greater(c, v.plus_one());
    let loss = loss.max(0.0);
    Ok(Bayesian {
        probability_to_beat_control: prob_greater(v, c),
        expected_loss: loss,
        // E[max(V − C, 0)] − E[max(C − V, 0)] = E[V − C].
        expected_loss_control: (loss + v.mean() - c.mean()).max(0.0),
    })
}

/// Normal approximation of the difference of means (flat prior): D ~ N(difference, se²).
pub fn normal_difference(control: &Moments, variant: &Moments) -> Result<Bayesian> {
    let (diff, variance) = difference(control, variant)?;
    let se = variance.sqrt();
    let z = diff / se;
    let density = se * normal_pdf(z);
    Ok(Bayesian {
        probability_to_beat_control: normal_cdf(z),
        // E[max(−D, 0)] = se·φ(z) − diff·Φ(−z) and E[max(D, 0)] = se·φ(z) + diff·Φ(z).
        expected_loss: (density - diff * normal_sf(z)).max(0.0),
        expected_loss_control: (density + diff * normal_cdf(z)).max(0.0),
    })
}

/// A Beta posterior with whole-number parameters (counts plus the uniform prior).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Beta {
    a: u64,
    b: u64,
}

impl Beta {
    /// From checked counts (converters ≤ users), so both parameters are at least 1 and the
    /// log-Beta functions below are defined.
    fn posterior(counts: Conversions) -> Self {
        Self {
            a: counts.converters.saturating_add(1),
            b: (counts.users - counts.converters).saturating_add(1),
        }
    }

    fn plus_one(self) -> Self {
        Self {
            a: self.a.saturating_add(1),
            b: self.b,
        }
    }

    fn mean(self) -> f64 {
        self.a as f64 / (self.a as f64 + self.b as f64)
    }
}

/// P(X > Y) for independent Beta variables, exactly (up to rounding).
fn prob_greater(x: Beta, y: Beta) -> f64 {
    sum_greater(x, y).clamp(0.0, 1.0)
}

/// P(X > Y) = Σ_{i < x.a} t_i with t_i = B(y.a + i, y.b + x.b) / ((x.b + i)·B(1 + i, x.b)·B(y.a, y.b)),
/// a finite sum since `x.a` is a whole number (Evan Miller's formula).
///
/// The ratio t_{i+1}/t_i = (y.a + i)(x.b + i) / ((y.a + y.b + x.b + i)(1 + i)) exceeds 1 up to one
/// index and stays below it after, so the terms rise to a single peak and fall. The sum starts at
/// the peak (one term computed from log-Beta functions) and walks both ways by that ratio until
/// terms drop under e⁻⁵⁰ of the peak: the work follows the spread of the terms, not the count, and
/// the logarithms walked stay small, so rounding does not pile up over millions of steps.
fn sum_greater(x: Beta, y: Beta) -> f64 {
    let (xa, xb, ya, yb) = (x.a as f64, x.b as f64, y.a as f64, y.b as f64);
    let ratio = |i: f64| (ya + i) * (xb + i) / ((ya + yb + xb + i) * (1.0 + i));
    // ratio(i) ≥ 1 exactly while i ≤ last_rise, so the largest term is at last_rise + 1.
    let last_rise = (ya * xb - ya - yb - xb) / (yb + 1.0);
    let peak = (last_rise.floor() + 1.0).clamp(0.0, xa - 1.0);
    let log_peak =
        ln_beta(ya + peak, yb + xb) - (xb + peak).ln() - ln_beta(1.0 + peak, xb) - ln_beta(ya, yb);
    const NEGLIGIBLE: f64 = -50.0;

    let mut scaled_sum = 1.0;
    let (mut offset, mut i) = (0.0, peak);
    while i + 1.0 < xa {
        offset += ratio(i).ln();
        i += 1.0;
        if offset < NEGLIGIBLE {
            break;
        }
        scaled_sum += offset.exp();
    }
    let (mut offset, mut i) = (0.0, peak);
    while i >= 1.0 {
        i -= 1.0;
        offset -= ratio(i).ln();
        if offset < NEGLIGIBLE {
            break;
        }
        scaled_sum += offset.exp();
    }
    log_peak.exp() * scaled_sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beta(a: u64, b: u64) -> Beta {
        Beta { a, b }
    }

    /// The distribution of 1 − X.
    fn mirrored(x: Beta) -> Beta {
        beta(x.b, x.a)
    }

    fn counts(users: u64, converters: u64) -> Conversions {
        Conversions { users, converters }
    }

    #[test]
    fn small_cases_match_exact_fractions() {
        // Uniform against uniform: one half; X ~ Beta(2, 1) against a uniform Y: 2/3.
        for (x, y, exact) in [
            (beta(1, 1), beta(1, 1), 0.5),
            (beta(2, 1), beta(1, 1), 2.0 / 3.0),
            (beta(1, 1), beta(2, 1), 1.0 / 3.0),
        ] {
            let p = prob_greater(x, y);
            assert!((p - exact).abs() < 1e-14, "{x:?} > {y:?}: {p}");
        }
    }

    #[test]
    fn the_sum_agrees_with_its_complement_and_its_mirror() {
        // P(X > Y) = 1 − P(Y > X) = P(1 − Y > 1 − X): sums over other parameters, same value.
        let (x, y) = (beta(37, 412), beta(29, 380));
        let direct = sum_greater(x, y);
        for other in [
            1.0 - sum_greater(y, x),
            sum_greater(mirrored(y), mirrored(x)),
            1.0 - sum_greater(mirrored(x), mirrored(y)),
        ] {
            assert!((direct - other).abs() < 1e-11, "{direct} against {other}");
        }
    }

    #[test]
    fn huge_counts_stay_finite_and_fast() {
        let (c, v) = (counts(40_000_000, 4_000_000), counts(40_000_000, 4_004_000));
        let result = beta_binomial(c, v).unwrap();
        assert!(result.probability_to_beat_control > 0.9);
        assert!(result.expected_loss >= 0.0 && result.expected_loss < 1e-5);
    }

    #[test]
    fn losses_differ_by_the_difference_of_posterior_means() {
        let r = beta_binomial(counts(200, 30), counts(180, 20)).unwrap();
        let gap = 21.0 / 182.0 - 31.0 / 202.0;
        assert!((r.expected_loss_control - r.expected_loss - gap).abs() < 1e-15);
        assert!(r.probability_to_beat_control < 0.5);
    }

    #[test]
    fn means_need_some_variance() {
        let m = Moments {
            users: 5,
            mean: 1.0,
            variance: 0.0,
        };
        assert!(normal_difference(&m, &m).is_err());
    }
}
