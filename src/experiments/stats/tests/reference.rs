//! Every statistic against the values SciPy/statsmodels computed for the fixture's experiments.

use super::fixture::{reference, Mismatches};
use crate::experiments::stats::{
    beta_binomial, compare_conversions, conversion_sample_size, cuped, mean_sample_size,
    msprt_conversions, msprt_means, normal_difference, sample_ratio_mismatch, welch, Conversions,
    MeanSums, ALPHA, POWER,
};

#[test]
fn the_fixture_was_made_with_this_module_s_settings() {
    let r = reference();
    assert_eq!((r.alpha, r.power), (ALPHA, POWER));
    assert!(r.seed > 0);
    assert!(r.conversion.len() >= 10 && r.mean.len() >= 5 && r.srm.len() >= 5);
}

#[test]
fn conversions_match_statsmodels_and_the_beta_posteriors() {
    let mut off = Mismatches::default();
    for case in reference().conversion {
        let (name, e) = (case.name.as_str(), &case.expected);
        if let Some(t) = off.ok(name, compare_conversions(case.control, case.variant)) {
            off.number(name, "control rate", t.control_rate, e.control_rate);
            off.number(name, "variant rate", t.variant_rate, e.variant_rate);
            off.number(name, "absolute lift", t.absolute_lift, e.absolute_lift);
            off.optional_number(name, "relative lift", t.relative_lift, e.relative_lift);
            off.interval(name, "absolute ci", t.absolute_ci, e.absolute_ci);
            off.interval(name, "relative ci", t.relative_ci, e.relative_ci);
            off.number(name, "z", t.z, e.z);
            off.number(name, "p", t.p_value, e.p_value);
        }
        if let Some(b) = off.ok(name, beta_binomial(case.control, case.variant)) {
            off.bayesian(name, &b, &e.bayesian);
        }
    }
    off.assert_none();
}

#[test]
fn means_match_scipy_welch_and_the_normal_posterior() {
    let mut off = Mismatches::default();
    for case in reference().mean {
        let (name, e) = (case.name.as_str(), &case.expected);
        let (Some(c), Some(v)) = (
            off.ok(name, case.control.moments()),
            off.ok(name, case.variant.moments()),
        ) else {
            continue;
        };
        off.number(name, "control mean", c.mean, e.control_mean);
        off.number(name, "variant mean", v.mean, e.variant_mean);
        off.number(name, "control variance", c.variance, e.control_variance);
        off.number(name, "variant variance", v.variance, e.variant_variance);
        if let Some(t) = off.ok(name, welch(&c, &v)) {
            off.welch(name, "", &t, &e.welch);
            off.number(name, "se", t.standard_error, e.standard_error);
            off.optional_number(name, "relative lift", t.relative_lift, e.relative_lift);
            off.optional_interval(name, "relative ci", t.relative_ci, e.relative_ci);
        }
        if let Some(b) = off.ok(name, normal_difference(&c, &v)) {
            off.bayesian(name, &b, &e.bayesian);
        }
    }
    off.assert_none();
}

#[test]
fn cuped_matches_adjusting_raw_values_then_scipy_welch() {
    let mut off = Mismatches::default();
    for case in reference().cuped {
        let (name, e) = (case.name.as_str(), &case.expected);
        let Some(adjusted) = off.ok(name, cuped(&case.variants)) else {
            continue;
        };
        off.number(name, "theta", adjusted.theta, e.theta);
        off.number(name, "pre mean", adjusted.pre_mean, e.pre_mean);
        for (i, m) in adjusted.adjusted.iter().enumerate() {
            off.number(name, &format!("mean {i}"), m.mean, e.adjusted_means[i]);
            let variance = e.adjusted_variances[i];
            off.number(name, &format!("variance {i}"), m.variance, variance);
        }
        let control = &adjusted.adjusted[0];
        for (i, (variant, x)) in adjusted.adjusted[1..]
            .iter()
            .zip(&e.comparisons)
            .enumerate()
        {
            if let Some(t) = off.ok(name, welch(control, variant)) {
                off.welch(name, &format!("variant {} ", i + 1), &t, x);
            }
        }
    }
    off.assert_none();
}

#[test]
fn sample_ratio_mismatch_matches_scipy_chisquare() {
    let mut off = Mismatches::default();
    for case in reference().srm {
        let (name, e) = (case.name.as_str(), &case.expected);
        let Some(s) = off.ok(name, sample_ratio_mismatch(&case.users, &case.weights)) else {
            continue;
        };
        for (i, (&a, &x)) in s.expected_users.iter().zip(&e.expected_users).enumerate() {
            off.number(name, &format!("expected users {i}"), a, x);
        }
        off.number(name, "chi-square", s.chi_square, e.chi_square);
        off.number(name, "p", s.p_value, e.p_value);
        if s.unreliable != e.unreliable {
            off.fail(name, format!("unreliable {}", s.unreliable));
        }
    }
    off.assert_none();
}

#[test]
fn sample_sizes_match_statsmodels_normal_ind_power() {
    let mut off = Mismatches::default();
    for case in reference().sample_size {
        let name = case.name.as_str();
        let size = match (case.kind.as_str(), case.std_dev) {
            ("conversion", _) => conversion_sample_size(case.baseline, case.mde_relative, 0),
            ("mean", Some(sd)) => mean_sample_size(case.baseline, sd, case.mde_relative, 0),
            (kind, _) => {
                off.fail(name, format!("unknown kind {kind}"));
                continue;
            }
        };
        let Some(s) = off.ok(name, size) else {
            continue;
        };
        off.number(
            name,
            "effect size",
            s.effect_size,
            case.expected.effect_size,
        );
        let users = case.expected.users_per_variant;
        off.number(name, "users per variant", s.users_per_variant, users);
        if s.still_needed != users.ceil() as u64 {
            off.fail(name, format!("still needed {}", s.still_needed));
        }
    }
    off.assert_none();
}

#[test]
fn the_msprt_matches_its_formula() {
    let mut off = Mismatches::default();
    for case in reference().sequential {
        let name = format!("{} ({})", case.name, case.kind);
        let look = if case.kind == "conversion" {
            let parse = |v| serde_json::from_value::<Conversions>(v).expect("conversions");
            let (c, v) = (parse(case.control), parse(case.variant));
            msprt_conversions(c, v, case.mixing_variance)
        } else {
            let parse = |v| {
                let sums = serde_json::from_value::<MeanSums>(v).expect("sums");
                sums.moments().expect("moments")
            };
            let (c, v) = (parse(case.control), parse(case.variant));
            msprt_means(&c, &v, case.mixing_variance)
        };
        let e = &case.expected;
        let Some(m) = off.ok(&name, look) else {
            continue;
        };
        off.number(&name, "difference", m.difference, e.difference);
        off.number(&name, "variance", m.variance, e.variance);
        let log_lr = m.log_likelihood_ratio;
        off.number(&name, "log LR", log_lr, e.log_likelihood_ratio);
        off.number(&name, "p", m.p_value, e.p_value);
        off.interval(&name, "ci", m.ci, e.ci);
    }
    off.assert_none();
}
