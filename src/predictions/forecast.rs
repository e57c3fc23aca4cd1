//! Forecasts of a series: MSTL decomposition with an automatically chosen exponential-smoothing
//! model of the trend (the `augurs` crate: statsforecast's MSTL and AutoETS, in Rust), with 80 and
//! 95 % prediction intervals, and its accuracy by a rolling-origin backtest against the seasonal
//! naive forecast (the last cycle repeated) (docs/predictions.md).

use augurs::ets::AutoETS;
use augurs::mstl::MSTLModel;
use augurs::{Fit, Predict};
use serde::Serialize;

/// Backtest origins, newest first, each `horizon` points before the next.
const ORIGINS: usize = 3;

/// One future point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Step {
    /// 1 for the point after the series' last.
    pub step: usize,
    pub point: f64,
    pub lower_80: f64,
    pub upper_80: f64,
    pub lower_95: f64,
    pub upper_95: f64,
}

/// Errors of forecasts made from earlier origins, against what followed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Errors {
    /// Symmetric mean absolute percentage error, in percent (0–200).
    pub smape: f64,
    /// Mean absolute error over that of the in-sample seasonal naive forecast: under 1 beats it.
    pub mase: f64,
}

/// The rolling-origin backtest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backtest {
    /// How many origins were tested (each with `horizon` points after it, or fewer at the end).
    pub origins: usize,
    pub model: Errors,
    pub seasonal_naive: Errors,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForecastError {
    #[error("a series of {points} points is too short to forecast: at least {needed} (two seasons and one more) are needed")]
    TooShort { points: usize, needed: usize },
    #[error("season: must be 1 to 366 points per cycle")]
    Season,
    #[error("horizon: must be 1 to 366 points")]
    Horizon,
    #[error("the series has a value that is not a finite number")]
    NotFinite,
    #[error("the model could not be fitted: {0}")]
    Model(String),
}

/// The points a series needs for `season`.
pub fn needed(season: usize) -> usize {
    2 * season + 1
}

/// The bounds of `season` and `horizon`, whatever the series.
pub fn check_settings(season: usize, horizon: usize) -> Result<(), ForecastError> {
    if !(1..=366).contains(&season) {
        return Err(ForecastError::Season);
    }
    if !(1..=366).contains(&horizon) {
        return Err(ForecastError::Horizon);
    }
    Ok(())
}

fn check(values: &[f64], season: usize, horizon: usize) -> Result<(), ForecastError> {
    check_settings(season, horizon)?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(ForecastError::NotFinite);
    }
    let needed = needed(season).max(4);
    if values.len() < needed {
        return Err(ForecastError::TooShort {
            points: values.len(),
            needed,
        });
    }
    Ok(())
}

/// The next `horizon` points of `values` (evenly spaced, in time order) with 80 and 95 % prediction
/// intervals.
pub fn forecast(values: &[f64], season: usize, horizon: usize) -> Result<Vec<Step>, ForecastError> {
    check(values, season, horizon)?;
    let model = |e: &dyn std::fmt::Display| ForecastError::Model(e.to_string());
    let fitted = if season > 1 {
        let trend = AutoETS::non_seasonal().into_trend_model();
        let fitted = MSTLModel::new(vec![season], trend)
            .fit(values)
            .map_err(|e| model(&e))?;
        (
            fitted.predict(horizon, 0.8).map_err(|e| model(&e))?,
            fitted.predict(horizon, 0.95).map_err(|e| model(&e))?,
        )
    } else {
        let fitted = AutoETS::non_seasonal().fit(values).map_err(|e| model(&e))?;
        (
            fitted.predict(horizon, 0.8).map_err(|e| model(&e))?,
            fitted.predict(horizon, 0.95).map_err(|e| model(&e))?,
        )
    };
    let (f80, f95) = fitted;
    let (Some(i80), Some(i95)) = (f80.intervals, f95.intervals) else {
        return Err(ForecastError::Model("no prediction intervals".into()));
    };
    Ok((0..horizon)
        .map(|i| Step {
            step: i + 1,
            point: f80.point[i],
            lower_80: i80.lower[i],
            upper_80: i80.upper[i],
            lower_95: i95.lower[i],
            upper_95: i95.upper[i],
        })
        .collect())
}

/// The last cycle of `values` repeated over `horizon` points.
pub fn seasonal_naive(values: &[f64], season: usize, horizon: usize) -> Vec<f64> {
    let cycle = &values[values.len() - season..];
    (0..horizon).map(|i| cycle[i % season]).collect()
}

/// Forecasts from up to [`ORIGINS`] earlier origins (each leaving two seasons and one more point
/// before it), scored against what followed, for the model and for the seasonal naive forecast.
pub fn backtest(values: &[f64], season: usize, horizon: usize) -> Result<Backtest, ForecastError> {
    check(values, season, horizon)?;
    let scale = naive_scale(values, season);
    let (mut model, mut naive) = (Vec::new(), Vec::new());
    let mut origins = 0;
    for k in 1..=ORIGINS {
        let Some(origin) = values.len().checked_sub(k * horizon) else {
            break;
        };
        if origin < needed(season).max(4) {
            break;
        }
        let (train, test) = (
            &values[..origin],
            &values[origin..(origin + horizon).min(values.len())],
        );
        let predicted = forecast(train, season, horizon)?;
        let baseline = seasonal_naive(train, season, horizon);
        for (i, actual) in test.iter().enumerate() {
            model.push((predicted[i].point, *actual));
            naive.push((baseline[i], *actual));
        }
        origins += 1;
    }
    if origins == 0 {
        return Err(ForecastError::TooShort {
            points: values.len(),
            needed: needed(season).max(4) + horizon,
        });
    }
    Ok(Backtest {
        origins,
        model: errors(&model, scale),
        seasonal_naive: errors(&naive, scale),
    })
}

/// Mean absolute error of the in-sample seasonal naive forecast (1 step for `season` 1).
fn naive_scale(values: &[f64], season: usize) -> f64 {
    let diffs: Vec<f64> = values
        .windows(season + 1)
        .map(|w| (w[season] - w[0]).abs())
        .collect();
    diffs.iter().sum::<f64>() / diffs.len().max(1) as f64
}

fn errors(pairs: &[(f64, f64)], scale: f64) -> Errors {
    let n = pairs.len().max(1) as f64;
    let smape = pairs
        .iter()
        .map(|(f, a)| {
            let denominator = f.abs() + a.abs();
            if denominator == 0.0 {
                0.0
            } else {
                200.0 * (f - a).abs() / denominator
            }
        })
        .sum::<f64>()
        / n;
    let mae = pairs.iter().map(|(f, a)| (f - a).abs()).sum::<f64>() / n;
    Errors {
        smape,
        mase: if scale > 0.0 {
            mae / scale
        } else {
            f64::INFINITY
        },
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// A rising trend with a weekly cycle (weekends at 60 %), with normal noise of sd `noise`.
    fn level(day: usize) -> f64 {
        let weekly = if day % 7 >= 5 { 0.6 } else { 1.0 };
        (1000.0 + 5.0 * day as f64) * weekly
    }

    fn series(days: usize, noise: f64, seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..days)
            .map(|day| {
                let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                level(day) + noise * z
            })
            .collect()
    }

    #[test]
    fn a_planted_trend_and_weekly_cycle_are_forecast_within_three_percent() {
        let values = series(112, 10.0, 5);
        let steps = forecast(&values, 7, 14).unwrap();
        assert_eq!(steps.len(), 14);
        let mape = steps
            .iter()
            .map(|s| (s.point - level(111 + s.step)).abs() / level(111 + s.step))
            .sum::<f64>()
            / 14.0;
        eprintln!("mean absolute percentage error {:.2} %", mape * 100.0);
        assert!(mape < 0.03, "mean absolute error {:.2} %", mape * 100.0);
        for s in &steps {
            assert!(
                s.lower_95 <= s.lower_80
                    && s.lower_80 <= s.point
                    && s.point <= s.upper_80
                    && s.upper_80 <= s.upper_95,
                "{s:?}"
            );
        }
    }

    #[test]
    fn on_a_trending_series_the_model_beats_the_seasonal_naive_forecast() {
        let values = series(112, 10.0, 9);
        let tested = backtest(&values, 7, 14).unwrap();
        eprintln!("{tested:?}");
        assert_eq!(tested.origins, 3);
        assert!(tested.model.mase < tested.seasonal_naive.mase, "{tested:?}");
        assert!(tested.model.smape < 5.0, "{tested:?}");
    }

    #[test]
    fn short_series_and_bad_settings_are_refused() {
        assert_eq!(
            forecast(&[1.0; 10], 7, 7).unwrap_err(),
            ForecastError::TooShort {
                points: 10,
                needed: 15
            }
        );
        assert_eq!(
            forecast(&[1.0; 30], 0, 7).unwrap_err(),
            ForecastError::Season
        );
        assert_eq!(
            seasonal_naive(&[1.0, 2.0, 3.0, 4.0], 2, 3),
            vec![3.0, 4.0, 3.0]
        );
    }
}
