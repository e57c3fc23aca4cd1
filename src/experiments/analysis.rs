//! From the per-variant sums of each metric (the rows of `experiment_results`) to an
//! experiment's results: rates or means, lifts against control with intervals, p-values, the
//! Bayesian read-out, the sample-ratio check, the sample size still needed, CUPED and the
//! sequential test (docs/experiments.md). Pure: no I/O.

use serde::Serialize;
use serde_json::Value;

use super::spec::{ExperimentSpec, Metric};
use super::stats::{
    self, beta_binomial, compare_conversions, conversion_sample_size, cuped, mean_sample_size,
    mixing_variance, msprt_conversions, msprt_means, normal_difference, sample_ratio_mismatch,
    welch, Bayesian, Conversions, CupedSums, Interval, MeanSums, Moments, SampleRatio, SampleSize,
    StatsError,
};

/// One variant's sums of one metric, as the template returns them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sums {
    pub users: u64,
    pub converters: u64,
    pub value_sum: f64,
    pub value_sum_squares: f64,
    pub pre_sum: f64,
    pub pre_sum_squares: f64,
    pub cross_sum: f64,
}

impl Sums {
    fn conversions(&self) -> Conversions {
        Conversions {
            users: self.users,
            converters: self.converters,
        }
    }

    fn moments(&self) -> stats::Result<Moments> {
        MeanSums {
            users: self.users,
            sum: self.value_sum,
            sum_squares: self.value_sum_squares,
        }
        .moments()
    }

    fn cuped(&self) -> CupedSums {
        CupedSums {
            users: self.users,
            sum: self.value_sum,
            sum_squares: self.value_sum_squares,
            pre_sum: self.pre_sum,
            pre_sum_squares: self.pre_sum_squares,
            cross_sum: self.cross_sum,
        }
    }
}

/// One metric's rows: the sums of each variant, in the definition's order (a variant nobody was
/// exposed to has zeros), and the users excluded for being exposed to several variants.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRows {
    pub variants: Vec<Sums>,
    pub excluded_users: u64,
}

/// Reads the JSON result of `experiment_results` for the variants `keys`.
pub fn read_rows(result: &Value, keys: &[String]) -> Result<MetricRows, String> {
    let mut rows = MetricRows {
        variants: vec![Sums::default(); keys.len()],
        excluded_users: 0,
    };
    for row in result["data"].as_array().into_iter().flatten() {
        let count = |name: &str| number(&row[name]).map(|n| n.max(0.0) as u64);
        let users = count("users").ok_or("a row without users")?;
        if count("excluded") == Some(1) {
            rows.excluded_users = users;
            continue;
        }
        let variant = row["variant"].as_str().ok_or("a row without a variant")?;
        let Some(index) = keys.iter().position(|k| k == variant) else {
            return Err(format!("a row of an unknown variant {variant:?}"));
        };
        let sum = |name: &str| number(&row[name]).ok_or_else(|| format!("a row without {name}"));
        rows.variants[index] = Sums {
            users,
            converters: count("converters").ok_or("a row without converters")?,
            value_sum: sum("value_sum")?,
            value_sum_squares: sum("value_sum_squares")?,
            pre_sum: sum("pre_sum")?,
            pre_sum_squares: sum("pre_sum_squares")?,
            cross_sum: sum("cross_sum")?,
        };
    }
    Ok(rows)
}

/// A JSON number, or a number written as a string (64-bit integers may be quoted).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// An experiment's results.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// False when the sample-ratio check fails (or cannot be made): no lift can be trusted.
    pub reliable: bool,
    /// Users exposed to more than one variant, left out of every metric.
    pub excluded_users: u64,
    pub variants: Vec<Assignment>,
    pub sample_ratio: Option<SampleRatio>,
    pub metrics: Vec<MetricResult>,
    /// What could not be computed, and why.
    pub notes: Vec<String>,
}

/// How many users a variant was meant to get, and got.
#[derive(Debug, Clone, Serialize)]
pub struct Assignment {
    pub key: String,
    pub expected_share: f64,
    pub users: u64,
}

/// One metric's results.
#[derive(Debug, Clone, Serialize)]
pub struct MetricResult {
    pub name: String,
    pub kind: &'static str,
    pub primary: bool,
    pub variants: Vec<VariantResult>,
    /// Users per variant needed for the minimum detectable effect at 80 % power.
    pub sample_size: Option<SampleSize>,
    /// CUPED's θ, when `cuped`.
    pub cuped_theta: Option<f64>,
    /// What could not be computed, and why.
    pub notes: Vec<String>,
}

/// One variant of one metric; the comparisons are against control (none for control itself).
#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    pub key: String,
    pub users: u64,
    /// Users with at least one metric event in the window.
    pub converters: u64,
    /// Rate metrics (conversion, retention, funnel): converters / users.
    pub rate: Option<f64>,
    /// The mean per-user value (the rate, for conversions) and its sample variance.
    pub mean: Option<f64>,
    pub variance: Option<f64>,
    pub comparison: Option<Comparison>,
    pub cuped: Option<CupedResult>,
    pub sequential: Option<Sequential>,
}

/// A variant against control (variant − control).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub absolute_lift: f64,
    pub absolute_ci: Interval,
    pub relative_lift: Option<f64>,
    pub relative_ci: Option<Interval>,
    pub p_value: f64,
    pub probability_to_beat_control: f64,
    pub expected_loss: f64,
    pub expected_loss_control: f64,
}

impl Comparison {
    fn welch(control: &Moments, variant: &Moments) -> stats::Result<Self> {
        let test = welch(control, variant)?;
        Ok(Self::new(
            (test.difference, test.ci),
            (test.relative_lift, test.relative_ci),
            test.p_value,
            normal_difference(control, variant)?,
        ))
    }

    fn conversions(control: Conversions, variant: Conversions) -> stats::Result<Self> {
        let test = compare_conversions(control, variant)?;
        Ok(Self::new(
            (test.absolute_lift, test.absolute_ci),
            (test.relative_lift, Some(test.relative_ci)),
            test.p_value,
            beta_binomial(control, variant)?,
        ))
    }

    fn new(
        (absolute_lift, absolute_ci): (f64, Interval),
        (relative_lift, relative_ci): (Option<f64>, Option<Interval>),
        p_value: f64,
        bayes: Bayesian,
    ) -> Self {
        Self {
            absolute_lift,
            absolute_ci,
            relative_lift,
            relative_ci,
            p_value,
            probability_to_beat_control: bayes.probability_to_beat_control,
            expected_loss: bayes.expected_loss,
            expected_loss_control: bayes.expected_loss_control,
        }
    }
}

/// A variant's metric adjusted by CUPED.
#[derive(Debug, Clone, Serialize)]
pub struct CupedResult {
    pub adjusted_mean: f64,
    pub variance_reduction: f64,
    pub comparison: Option<Comparison>,
}

/// The mSPRT's always-valid p-value and confidence sequence of the absolute lift at this look.
#[derive(Debug, Clone, Serialize)]
pub struct Sequential {
    pub p_value: f64,
    pub ci: Interval,
}

/// The results of `spec` from its `metrics` (saved ones read) and the rows of each, in its order.
pub fn analyze(spec: &ExperimentSpec, metrics: &[Metric], rows: &[MetricRows]) -> Results {
    let weights = spec.weights();
    let total_weight: f64 = weights.iter().sum();
    let users: Vec<u64> = match rows.first() {
        Some(first) => first.variants.iter().map(|s| s.users).collect(),
        None => vec![0; spec.variants.len()],
    };
    let mut notes = Vec::new();
    let sample_ratio = keep(
        &mut notes,
        "sample-ratio check",
        sample_ratio_mismatch(&users, &weights),
    );
    Results {
        reliable: sample_ratio.as_ref().is_some_and(|s| !s.unreliable),
        excluded_users: rows.first().map_or(0, |r| r.excluded_users),
        variants: spec
            .variants
            .iter()
            .zip(&weights)
            .zip(&users)
            .map(|((variant, weight), users)| Assignment {
                key: variant.key.clone(),
                expected_share: weight / total_weight,
                users: *users,
            })
            .collect(),
        sample_ratio,
        metrics: metrics
            .iter()
            .zip(rows)
            .enumerate()
            .map(|(i, (metric, rows))| analyze_metric(spec, metric, i == 0, rows))
            .collect(),
        notes,
    }
}

/// `result`'s value, or none with a note saying what could not be computed and why.
fn keep<T>(notes: &mut Vec<String>, what: &str, result: stats::Result<T>) -> Option<T> {
    result
        .map_err(|e: StatsError| notes.push(format!("{what}: {e}")))
        .ok()
}

fn analyze_metric(
    spec: &ExperimentSpec,
    metric: &Metric,
    primary: bool,
    rows: &MetricRows,
) -> MetricResult {
    let mut notes = Vec::new();
    let conversion = metric.kind.is_binary();
    let mde = spec.minimum_detectable_effect;
    let Some(control) = rows.variants.first().copied() else {
        return MetricResult {
            name: metric.name.clone(),
            kind: metric.kind.name(),
            primary,
            variants: Vec::new(),
            sample_size: None,
            cuped_theta: None,
            notes: vec!["no variants".into()],
        };
    };
    let control_moments = control.moments();
    let adjusted = if spec.cuped {
        let sums: Vec<CupedSums> = rows.variants.iter().map(Sums::cuped).collect();
        keep(&mut notes, "CUPED", cuped(&sums))
    } else {
        None
    };
    let baseline = if conversion {
        (control.users > 0).then(|| control.conversions().rate())
    } else {
        control_moments.as_ref().ok().map(|m| m.mean)
    };
    let tau2 = match (spec.sequential, baseline) {
        (true, Some(baseline)) => keep(
            &mut notes,
            "sequential test",
            mixing_variance(baseline, mde),
        ),
        _ => None,
    };
    let mut variants = Vec::with_capacity(rows.variants.len());
    for (i, (variant, sums)) in spec.variants.iter().zip(&rows.variants).enumerate() {
        let label = |what: &str| format!("{}: {what}", variant.key);
        let moments = sums.moments().ok();
        let versus = i > 0;
        let comparison = if !versus {
            None
        } else if conversion {
            keep(
                &mut notes,
                &label("comparison"),
                Comparison::conversions(control.conversions(), sums.conversions()),
            )
        } else {
            keep(
                &mut notes,
                &label("comparison"),
                control_moments
                    .clone()
                    .and_then(|c| Comparison::welch(&c, &sums.moments()?)),
            )
        };
        let sequential = match tau2 {
            Some(tau2) if versus => keep(
                &mut notes,
                &label("sequential test"),
                if conversion {
                    msprt_conversions(control.conversions(), sums.conversions(), tau2)
                } else {
                    control_moments
                        .clone()
                        .and_then(|c| msprt_means(&c, &sums.moments()?, tau2))
                },
            )
            .map(|look| Sequential {
                p_value: look.p_value,
                ci: look.ci,
            }),
            _ => None,
        };
        let cuped = adjusted.as_ref().map(|adjusted| CupedResult {
            adjusted_mean: adjusted.adjusted[i].mean,
            variance_reduction: adjusted.variance_reduction[i],
            comparison: if versus {
                keep(
                    &mut notes,
                    &label("CUPED comparison"),
                    Comparison::welch(&adjusted.adjusted[0], &adjusted.adjusted[i]),
                )
            } else {
                None
            },
        });
        variants.push(VariantResult {
            key: variant.key.clone(),
            users: sums.users,
            converters: sums.converters,
            rate: (conversion && sums.users > 0).then(|| sums.conversions().rate()),
            mean: (sums.users > 0).then(|| sums.value_sum / sums.users as f64),
            variance: moments.map(|m| m.variance),
            comparison,
            cuped,
            sequential,
        });
    }
    let exposed = rows.variants.iter().map(|s| s.users).min().unwrap_or(0);
    let sample_size = match (conversion, baseline, &control_moments) {
        (true, Some(rate), _) => keep(
            &mut notes,
            "sample size",
            conversion_sample_size(rate, mde, exposed),
        ),
        (false, Some(mean), Ok(moments)) => keep(
            &mut notes,
            "sample size",
            mean_sample_size(mean, moments.variance.sqrt(), mde, exposed),
        ),
        _ => None,
    };
    MetricResult {
        name: metric.name.clone(),
        kind: metric.kind.name(),
        primary,
        variants,
        sample_size,
        cuped_theta: adjusted.map(|a| a.theta),
        notes,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(cuped: bool, sequential: bool) -> ExperimentSpec {
        let mut body = crate::experiments::spec::tests::example();
        body["cuped"] = json!(cuped);
        body["sequential"] = json!(sequential);
        serde_json::from_value(body).unwrap()
    }

    /// The results of `spec`, whose metrics are all defined in place.
    fn analyze(spec: &ExperimentSpec, rows: &[MetricRows]) -> Results {
        super::analyze(spec, &crate::experiments::spec::tests::defined(spec), rows)
    }

    /// Conversions as sums of 0/1 values.
    fn converted(users: u64, converters: u64, pre: f64, cross: f64) -> Sums {
        let c = converters as f64;
        Sums {
            users,
            converters,
            value_sum: c,
            value_sum_squares: c,
            pre_sum: pre,
            pre_sum_squares: pre,
            cross_sum: cross,
        }
    }

    fn spent(users: u64, sum: f64, squares: f64) -> Sums {
        Sums {
            users,
            converters: users / 2,
            value_sum: sum,
            value_sum_squares: squares,
            pre_sum: sum / 2.0,
            pre_sum_squares: squares / 3.0,
            cross_sum: squares / 4.0,
        }
    }

    fn rows(variants: Vec<Sums>) -> MetricRows {
        MetricRows {
            variants,
            excluded_users: 3,
        }
    }

    #[test]
    fn rows_are_read_in_the_definitions_order_with_quoted_integers_and_the_excluded_row() {
        let result = json!({"data": [
            {"variant": "green", "excluded": 0, "users": "20", "converters": "3", "value_sum": 3.0,
             "value_sum_squares": 3.0, "pre_sum": 0, "pre_sum_squares": 0, "cross_sum": 0},
            {"variant": "", "excluded": 1, "users": "2", "converters": "0", "value_sum": 0,
             "value_sum_squares": 0, "pre_sum": 0, "pre_sum_squares": 0, "cross_sum": 0}
        ]});
        let keys = vec!["control".to_string(), "green".to_string()];

        let read = read_rows(&result, &keys).unwrap();

        assert_eq!(read.excluded_users, 2);
        assert_eq!(read.variants[0], Sums::default());
        assert_eq!(
            (read.variants[1].users, read.variants[1].converters),
            (20, 3)
        );
        let unknown = json!({"data": [{"variant": "blue", "excluded": 0, "users": 1}]});
        assert!(read_rows(&unknown, &keys).unwrap_err().contains("blue"));
    }

    #[test]
    fn a_planted_effect_is_significant_with_every_statistic_and_a_fair_split_is_reliable() {
        let results = analyze(
            &spec(true, true),
            &[
                rows(vec![
                    converted(2000, 200, 300.0, 40.0),
                    converted(2000, 280, 310.0, 50.0),
                ]),
                rows(vec![
                    spent(2000, 4000.0, 40000.0),
                    spent(2000, 5000.0, 52000.0),
                ]),
            ],
        );

        assert!(results.reliable, "{:?}", results.notes);
        assert_eq!(results.excluded_users, 3);
        assert_eq!(results.variants[1].expected_share, 0.5);
        let green = &results.metrics[0].variants[1];
        let comparison = green.comparison.as_ref().unwrap();
        assert!(comparison.p_value < 0.001 && comparison.absolute_lift > 0.0);
        assert!((comparison.absolute_lift - 0.04).abs() < 1e-12);
        assert!(comparison.probability_to_beat_control > 0.99);
        assert!(green.sequential.is_some() && green.cuped.is_some());
        assert_eq!(green.rate, Some(0.14));
        assert!(results.metrics[0].sample_size.is_some());
        assert!(results.metrics[0].cuped_theta.is_some());
        let revenue = &results.metrics[1];
        assert!(
            revenue.variants[1].comparison.is_some(),
            "{:?}",
            revenue.notes
        );
        assert_eq!(revenue.variants[1].rate, None);
        assert!(results.metrics[0].primary && !revenue.primary);
    }

    #[test]
    fn a_mismatched_split_is_unreliable_and_a_variant_without_users_is_noted_not_failed() {
        let mismatched = analyze(
            &spec(false, false),
            &[
                rows(vec![
                    converted(900, 90, 0.0, 0.0),
                    converted(1100, 110, 0.0, 0.0),
                ]),
                rows(vec![spent(900, 10.0, 30.0), spent(1100, 12.0, 40.0)]),
            ],
        );
        let empty = analyze(
            &spec(false, false),
            &[
                rows(vec![converted(50, 5, 0.0, 0.0), Sums::default()]),
                rows(vec![spent(50, 10.0, 30.0), Sums::default()]),
            ],
        );

        assert!(!mismatched.reliable);
        assert!(mismatched.sample_ratio.as_ref().unwrap().unreliable);
        assert!(mismatched.metrics[0].variants[1].cuped.is_none());
        assert!(!empty.reliable);
        assert!(empty.metrics[0].variants[1].comparison.is_none());
        assert!(
            empty.metrics[0].notes[0].starts_with("green: comparison: "),
            "{:?}",
            empty.metrics[0].notes
        );
        assert_eq!(empty.metrics[1].variants[1].mean, None);
    }
}
