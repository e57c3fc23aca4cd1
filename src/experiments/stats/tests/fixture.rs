//! tests/fixtures/experiments/reference.json (written by make_reference.py) and the comparison
//! rule: 1e-6 relative, or 1e-9 absolute for values near zero.

use std::fmt::Debug;

use serde::Deserialize;

use crate::experiments::stats::{
    Bayesian, Conversions, CupedSums, Interval, MeanSums, Result, WelchTest,
};

const JSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/experiments/reference.json"
));

#[derive(Deserialize)]
pub struct Reference {
    pub seed: u64,
    pub alpha: f64,
    pub power: f64,
    pub conversion: Vec<Case<Conversions, ConversionExpected>>,
    pub mean: Vec<Case<MeanSums, MeanExpected>>,
    pub cuped: Vec<CupedCase>,
    pub srm: Vec<SrmCase>,
    pub sample_size: Vec<SampleSizeCase>,
    pub sequential: Vec<SequentialCase>,
}

#[derive(Deserialize)]
pub struct Case<I, E> {
    pub name: String,
    pub control: I,
    pub variant: I,
    pub expected: E,
}

#[derive(Deserialize)]
pub struct ConversionExpected {
    pub control_rate: f64,
    pub variant_rate: f64,
    pub absolute_lift: f64,
    pub relative_lift: Option<f64>,
    pub absolute_ci: [f64; 2],
    pub relative_ci: [f64; 2],
    pub z: f64,
    pub p_value: f64,
    #[serde(flatten)]
    pub bayesian: BayesianExpected,
}

#[derive(Deserialize)]
pub struct BayesianExpected {
    pub probability_to_beat_control: f64,
    pub expected_loss: f64,
    pub expected_loss_control: f64,
}

#[derive(Deserialize)]
pub struct MeanExpected {
    pub control_mean: f64,
    pub variant_mean: f64,
    pub control_variance: f64,
    pub variant_variance: f64,
    pub standard_error: f64,
    #[serde(flatten)]
    pub welch: WelchExpected,
    pub relative_lift: Option<f64>,
    pub relative_ci: Option<[f64; 2]>,
    #[serde(flatten)]
    pub bayesian: BayesianExpected,
}

#[derive(Deserialize)]
pub struct CupedCase {
    pub name: String,
    pub variants: Vec<CupedSums>,
    pub expected: CupedExpected,
}

#[derive(Deserialize)]
pub struct CupedExpected {
    pub theta: f64,
    pub pre_mean: f64,
    pub adjusted_means: Vec<f64>,
    pub adjusted_variances: Vec<f64>,
    pub comparisons: Vec<WelchExpected>,
}

#[derive(Deserialize)]
pub struct WelchExpected {
    pub difference: f64,
    pub t: f64,
    pub df: f64,
    pub p_value: f64,
    pub ci: [f64; 2],
}

#[derive(Deserialize)]
pub struct SrmCase {
    pub name: String,
    pub users: Vec<u64>,
    pub weights: Vec<f64>,
    pub expected: SrmExpected,
}

#[derive(Deserialize)]
pub struct SrmExpected {
    pub expected_users: Vec<f64>,
    pub chi_square: f64,
    pub p_value: f64,
    pub unreliable: bool,
}

#[derive(Deserialize)]
pub struct SampleSizeCase {
    pub name: String,
    pub kind: String,
    pub baseline: f64,
    pub std_dev: Option<f64>,
    pub mde_relative: f64,
    pub expected: SampleSizeExpected,
}

#[derive(Deserialize)]
pub struct SampleSizeExpected {
    pub effect_size: f64,
    pub users_per_variant: f64,
}

#[derive(Deserialize)]
pub struct SequentialCase {
    pub name: String,
    pub kind: String,
    pub control: serde_json::Value,
    pub variant: serde_json::Value,
    pub mixing_variance: f64,
    pub expected: SequentialExpected,
}

#[derive(Deserialize)]
pub struct SequentialExpected {
    pub difference: f64,
    pub variance: f64,
    pub log_likelihood_ratio: f64,
    pub p_value: f64,
    pub ci: [f64; 2],
}

pub fn reference() -> Reference {
    serde_json::from_str(JSON).expect("reference.json parses")
}

/// Whether `actual` matches `expected` to 1e-6 relative, or 1e-9 absolute near zero.
pub fn close(actual: f64, expected: f64) -> bool {
    let gap = (actual - expected).abs();
    gap <= 1e-9 || gap <= 1e-6 * expected.abs()
}

/// Collects mismatches, so one run lists every number that is off, each with its case.
#[derive(Default)]
pub struct Mismatches(Vec<String>);

impl Mismatches {
    pub fn number(&mut self, case: &str, what: &str, actual: f64, expected: f64) {
        if !close(actual, expected) {
            self.0.push(format!(
                "{case}: {what} = {actual:e}, expected {expected:e}"
            ));
        }
    }

    pub fn interval(&mut self, case: &str, what: &str, actual: Interval, expected: [f64; 2]) {
        self.number(case, &format!("{what} lower"), actual.lower, expected[0]);
        self.number(case, &format!("{what} upper"), actual.upper, expected[1]);
    }

    /// A number that may be absent (a relative lift without a control rate).
    pub fn optional_number(&mut self, case: &str, what: &str, a: Option<f64>, x: Option<f64>) {
        self.optional(case, what, a, x, |o, a, x| o.number(case, what, a, x));
    }

    /// An interval that may be absent.
    pub fn optional_interval(
        &mut self,
        case: &str,
        what: &str,
        a: Option<Interval>,
        x: Option<[f64; 2]>,
    ) {
        self.optional(case, what, a, x, |o, a, x| o.interval(case, what, a, x));
    }

    /// Both there: compared by `compare`; both absent: equal; only one: a mismatch.
    fn optional<A: Debug, X: Debug>(
        &mut self,
        case: &str,
        what: &str,
        actual: Option<A>,
        expected: Option<X>,
        compare: impl FnOnce(&mut Self, A, X),
    ) {
        match (actual, expected) {
            (Some(a), Some(x)) => compare(self, a, x),
            (None, None) => {}
            (a, x) => self.fail(case, format!("{what} {a:?}, expected {x:?}")),
        }
    }

    /// The welch test's numbers that SciPy reports, `what` naming the comparison.
    pub fn welch(&mut self, case: &str, what: &str, actual: &WelchTest, expected: &WelchExpected) {
        let (a, x) = (actual, expected);
        self.number(
            case,
            &format!("{what}difference"),
            a.difference,
            x.difference,
        );
        self.number(case, &format!("{what}t"), a.t, x.t);
        self.number(case, &format!("{what}df"), a.df, x.df);
        self.number(case, &format!("{what}p"), a.p_value, x.p_value);
        self.interval(case, &format!("{what}ci"), a.ci, x.ci);
    }

    pub fn bayesian(&mut self, case: &str, actual: &Bayesian, expected: &BayesianExpected) {
        let (a, x) = (actual, expected);
        let p = a.probability_to_beat_control;
        self.number(case, "P(beat)", p, x.probability_to_beat_control);
        self.number(case, "loss", a.expected_loss, x.expected_loss);
        let control_loss = a.expected_loss_control;
        self.number(case, "control loss", control_loss, x.expected_loss_control);
    }

    /// The value, or none with the error recorded.
    pub fn ok<T>(&mut self, case: &str, result: Result<T>) -> Option<T> {
        result.map_err(|err| self.fail(case, err.to_string())).ok()
    }

    pub fn fail(&mut self, case: &str, problem: String) {
        self.0.push(format!("{case}: {problem}"));
    }

    pub fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} mismatches:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}
