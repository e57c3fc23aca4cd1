//! Anomalies in a series: which points lie outside the band the series' own trend and seasonal
//! cycle expect, by a robust decomposition (docs/predictions.md).
//!
//! 1. Trend: a centred rolling median over one season (narrower at the ends).
//!    Every median that estimates a point leaves the point itself out, so that an anomaly cannot
//!    pull its own expected value, and the residuals measure the noise.
//! 2. Seasonal component: for each point, the median of the detrended values at its phase of the
//!    cycle over the nearest cycles (three on each side); then the trend again, over the series
//!    without it.
//! 3. Residuals: value − trend − seasonal; their scale is 1.4826 × their median absolute deviation
//!    (the standard deviation, for normal noise, without being swayed by the anomalies).
//! 4. A point is an anomaly when its residual is at least `sensitivity` scales and `min_deviation`
//!    away from the expected value (trend + seasonal).
//!
//! Medians everywhere: a few anomalies move neither the trend, nor the cycle, nor the scale.

use serde::Serialize;

/// MAD to standard deviation, for normal noise.
const MAD_TO_SD: f64 = 1.4826;

/// What a series needs and how sensitive the test is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Points per seasonal cycle (7 for days of a week, 24 for hours of a day; 1: no season).
    pub season: usize,
    /// How many robust standard deviations from the expected value make an anomaly.
    pub sensitivity: f64,
    /// The least absolute deviation from the expected value that counts.
    pub min_deviation: f64,
}

/// One point of the series, judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub value: f64,
    /// Trend + seasonal component.
    pub expected: f64,
    /// The band: expected ± sensitivity × scale.
    pub lower: f64,
    pub upper: f64,
    /// (value − expected) / scale: robust standard deviations; 0 when the scale is 0 and the value
    /// is the expected one.
    pub deviation: f64,
    pub anomaly: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnomalyError {
    #[error("a series of {points} points is too short: at least {needed} (two seasons and one more) are needed")]
    TooShort { points: usize, needed: usize },
    #[error("season must be 1 to 366 points per cycle")]
    Season,
    #[error("sensitivity must be a positive number of robust standard deviations (3.5 is usual)")]
    Sensitivity,
    #[error("min_deviation must be 0 or more")]
    MinDeviation,
    #[error("the series has a value that is not a finite number")]
    NotFinite,
}

/// The points a series needs for `season`.
fn needed(season: usize) -> usize {
    2 * season + 1
}

impl Settings {
    /// The bounds of each setting, whatever the series.
    pub fn check(&self) -> Result<(), AnomalyError> {
        if !(1..=366).contains(&self.season) {
            return Err(AnomalyError::Season);
        }
        if !(self.sensitivity.is_finite() && self.sensitivity > 0.0) {
            return Err(AnomalyError::Sensitivity);
        }
        if !(self.min_deviation.is_finite() && self.min_deviation >= 0.0) {
            return Err(AnomalyError::MinDeviation);
        }
        Ok(())
    }
}

/// Judges every point of `values` (in time order, evenly spaced).
pub fn detect(values: &[f64], settings: Settings) -> Result<Vec<Point>, AnomalyError> {
    settings.check()?;
    let Settings {
        season,
        sensitivity,
        min_deviation,
    } = settings;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(AnomalyError::NotFinite);
    }
    let n = values.len();
    if n < needed(season).max(3) {
        return Err(AnomalyError::TooShort {
            points: n,
            needed: needed(season).max(3),
        });
    }
    let window = season.max(3);
    let first_trend = rolling_median(values, window);
    let seasonal = seasonal_component(values, &first_trend, season);
    let deseasonalized: Vec<f64> = values.iter().zip(&seasonal).map(|(v, s)| v - s).collect();
    let trend = rolling_median(&deseasonalized, window);
    let expected: Vec<f64> = trend.iter().zip(&seasonal).map(|(t, s)| t + s).collect();
    let residuals: Vec<f64> = values.iter().zip(&expected).map(|(v, e)| v - e).collect();
    let center = median(&residuals);
    let scale = MAD_TO_SD
        * median(
            &residuals
                .iter()
                .map(|r| (r - center).abs())
                .collect::<Vec<_>>(),
        );
    Ok(values
        .iter()
        .zip(&expected)
        .zip(&residuals)
        .map(|((&value, &expected), &residual)| {
            let deviation = if scale > 0.0 {
                residual / scale
            } else if residual == 0.0 {
                0.0
            } else {
                residual.signum() * f64::INFINITY
            };
            Point {
                value,
                expected,
                lower: expected - sensitivity * scale,
                upper: expected + sensitivity * scale,
                deviation,
                anomaly: deviation.abs() >= sensitivity && residual.abs() >= min_deviation,
            }
        })
        .collect())
}

/// For each point, the median of the other points of its centred window of `window` points
/// (fewer at the ends). Leaving the point out keeps it from explaining itself: with it, a rolling
/// median passes through many points exactly, and the residuals' scale comes out too small.
fn rolling_median(values: &[f64], window: usize) -> Vec<f64> {
    let half = window / 2;
    (0..values.len())
        .map(|i| {
            let start = i.saturating_sub(half);
            let end = (i + half + 1).min(values.len());
            let others: Vec<f64> = (start..end)
                .filter(|&j| j != i)
                .map(|j| values[j])
                .collect();
            median(&others)
        })
        .collect()
}

/// Cycles on each side of a point whose same-phase values make its seasonal component.
const SEASON_CYCLES: usize = 3;

/// For each point, the median of the detrended values at its phase over the nearest cycles (up
/// to [`SEASON_CYCLES`] on each side, fewer at the ends; the point itself left out): a cycle whose
/// amplitude changes (a weekend dip that deepens as the series grows) is followed, not averaged
/// away.
fn seasonal_component(values: &[f64], trend: &[f64], season: usize) -> Vec<f64> {
    if season == 1 {
        return vec![0.0; values.len()];
    }
    let detrended: Vec<f64> = values.iter().zip(trend).map(|(v, t)| v - t).collect();
    let reach = SEASON_CYCLES * season;
    (0..values.len())
        .map(|i| {
            let start = i % season + i.saturating_sub(reach) / season * season;
            let end = (i + reach + 1).min(values.len());
            let same_phase: Vec<f64> = (start..end)
                .step_by(season)
                .filter(|&j| j != i)
                .map(|j| detrended[j])
                .collect();
            median(&same_phase)
        })
        .collect()
}

/// The median (of a non-empty slice; 0 for an empty one).
fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// 120 days: a rising trend, a weekly cycle (weekends at 60 %) and normal noise of sd 20
    /// (Box–Muller from a seeded generator).
    fn series(seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..120)
            .map(|day| {
                let weekly = if day % 7 >= 5 { 0.6 } else { 1.0 };
                let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
                let noise = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                (1000.0 + 4.0 * day as f64) * weekly + 20.0 * noise
            })
            .collect()
    }

    const WEEKLY: Settings = Settings {
        season: 7,
        sensitivity: 4.0,
        min_deviation: 0.0,
    };

    #[test]
    fn planted_spikes_and_drops_are_found_and_normal_days_rarely_flagged() {
        let planted = [
            (20, 250.0),
            (47, -300.0),
            (75, 200.0),
            (103, -220.0),
            (119, 260.0),
        ];
        let (mut false_alarms, mut normal) = (0, 0);
        for seed in 0..20 {
            let mut values = series(seed);
            for (day, delta) in planted {
                values[day] += delta;
            }
            let points = detect(&values, WEEKLY).unwrap();
            for (day, _) in planted {
                assert!(
                    points[day].anomaly,
                    "seed {seed}, day {day}: {:?}",
                    points[day]
                );
            }
            for (day, point) in points.iter().enumerate() {
                if planted.iter().all(|(d, _)| *d != day) {
                    normal += 1;
                    false_alarms += usize::from(point.anomaly);
                }
            }
        }
        // A 4-sd band over normal noise: about 6 points in 100,000; the edges' narrower windows
        // add some. Stated bound: under 1 %.
        let rate = false_alarms as f64 / normal as f64;
        eprintln!("{false_alarms} of {normal} normal days flagged");
        assert!(
            rate < 0.01,
            "{false_alarms} of {normal} normal days flagged"
        );
    }

    #[test]
    fn the_expected_value_follows_the_weekly_cycle_and_the_band_the_noise() {
        let values = series(7);
        let points = detect(&values, WEEKLY).unwrap();
        let saturday = &points[61];
        let wednesday = &points[58];
        assert!(
            (saturday.expected - (1000.0 + 4.0 * 61.0) * 0.6).abs() < 40.0,
            "{saturday:?}"
        );
        assert!(
            (wednesday.expected - (1000.0 + 4.0 * 58.0)).abs() < 40.0,
            "{wednesday:?}"
        );
        // The scale is the sd of a point around its expected value: the noise's (20) and the
        // error of the medians that estimate the expected value; the band is 4 scales each side.
        let scale = (wednesday.upper - wednesday.lower) / 8.0;
        assert!((20.0..32.0).contains(&scale), "{scale}");
    }

    #[test]
    fn min_deviation_and_bad_input() {
        let mut values = series(3);
        values[60] += 150.0;
        let strict = Settings {
            min_deviation: 500.0,
            ..WEEKLY
        };
        assert!(detect(&values, WEEKLY).unwrap()[60].anomaly);
        assert!(!detect(&values, strict).unwrap()[60].anomaly);
        assert_eq!(
            detect(&values[..14], WEEKLY).unwrap_err(),
            AnomalyError::TooShort {
                points: 14,
                needed: 15
            }
        );
        assert_eq!(
            detect(
                &[1.0, f64::NAN, 2.0, 3.0],
                Settings {
                    season: 1,
                    ..WEEKLY
                }
            )
            .unwrap_err(),
            AnomalyError::NotFinite
        );
        let flat = detect(
            &[5.0; 20],
            Settings {
                season: 1,
                ..WEEKLY
            },
        )
        .unwrap();
        assert!(flat.iter().all(|p| p.deviation == 0.0 && !p.anomaly));
    }
}
