//! Properties on simulated experiments (seeded, so every run draws the same data): error rates
//! of the tests under A/A, the mismatch check, and the sequential test under daily peeking.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::experiments::stats::{
    compare_conversions, mixing_variance, msprt_conversions, sample_ratio_mismatch, Conversions,
    ALPHA,
};

/// Converters among `users` who each convert with probability `rate`.
fn conversions(rng: &mut StdRng, users: u64, rate: f64) -> Conversions {
    let converters = (0..users).filter(|_| rng.random::<f64>() < rate).count() as u64;
    Conversions { users, converters }
}

/// `count` plus the counts of another look.
fn add(a: Conversions, b: Conversions) -> Conversions {
    Conversions {
        users: a.users + b.users,
        converters: a.converters + b.converters,
    }
}

/// Largest count of `runs` Bernoulli(`rate`) successes still in line with that rate: mean plus
/// four standard deviations.
fn upper_bound(runs: u64, rate: f64) -> f64 {
    let runs = runs as f64;
    runs * rate + 4.0 * (runs * rate * (1.0 - rate)).sqrt()
}

#[test]
fn a_a_experiments_reject_at_about_the_nominal_rate() {
    const RUNS: u64 = 2000;
    let mut rng = StdRng::seed_from_u64(0xAA);
    let mut rejections = 0u64;
    for _ in 0..RUNS {
        let control = conversions(&mut rng, 1000, 0.1);
        let variant = conversions(&mut rng, 1000, 0.1);
        let test = compare_conversions(control, variant).expect("test");
        rejections += u64::from(test.p_value < ALPHA);
    }
    // Within four binomial standard deviations of 5 % on either side.
    let expected = RUNS as f64 * ALPHA;
    let gap = upper_bound(RUNS, ALPHA) - expected;
    let rate = rejections as f64 / RUNS as f64;
    assert!(
        (rejections as f64 - expected).abs() <= gap,
        "false-positive rate {rate}"
    );
}

#[test]
fn a_45_55_split_of_10_000_users_is_flagged_and_a_fair_one_is_not() {
    const RUNS: u64 = 200;
    let mut rng = StdRng::seed_from_u64(0x5A);
    let (mut flagged_skewed, mut flagged_fair) = (0, 0);
    for _ in 0..RUNS {
        for (share, flagged) in [(0.45, &mut flagged_skewed), (0.5, &mut flagged_fair)] {
            let first = conversions(&mut rng, 10_000, share).converters;
            let srm = sample_ratio_mismatch(&[first, 10_000 - first], &[50.0, 50.0]).expect("srm");
            *flagged += u32::from(srm.unreliable);
        }
    }
    assert_eq!(flagged_skewed, RUNS as u32);
    // A fair split is flagged with probability 0.001: of 200 runs, hardly ever.
    assert!(flagged_fair <= 2, "{flagged_fair} fair splits flagged");
}

/// How many of `runs` seeded experiments cross α at some daily look, for the naive z-test and for
/// the mSPRT: `days` looks at cumulative data, `per_day` new users per variant a day.
fn peeking(runs: u64, days: u32, per_day: u64, rates: (f64, f64)) -> (u64, u64) {
    let mut rng = StdRng::seed_from_u64(0x5E9);
    let tau2 = mixing_variance(rates.0, 0.1).expect("tau");
    let (mut naive, mut sequential) = (0, 0);
    for _ in 0..runs {
        let none = Conversions {
            users: 0,
            converters: 0,
        };
        let (mut control, mut variant) = (none, none);
        let (mut naive_crossed, mut sequential_crossed) = (false, false);
        for _ in 0..days {
            control = add(control, conversions(&mut rng, per_day, rates.0));
            variant = add(variant, conversions(&mut rng, per_day, rates.1));
            if let Ok(t) = compare_conversions(control, variant) {
                naive_crossed |= t.p_value < ALPHA;
            }
            if let Ok(m) = msprt_conversions(control, variant, tau2) {
                sequential_crossed |= m.p_value < ALPHA;
            }
        }
        naive += u64::from(naive_crossed);
        sequential += u64::from(sequential_crossed);
    }
    (naive, sequential)
}

#[test]
fn peeking_daily_inflates_the_z_test_but_not_the_msprt() {
    const RUNS: u64 = 500;
    let (naive, sequential) = peeking(RUNS, 30, 300, (0.1, 0.1));
    assert!(
        (sequential as f64) <= upper_bound(RUNS, ALPHA),
        "mSPRT crossed in {sequential} of {RUNS} A/A runs"
    );
    // Thirty looks at a 5 % test: well over twice the nominal rate.
    assert!(
        naive as f64 >= 0.15 * RUNS as f64 && naive > 2 * sequential,
        "naive z-test crossed in {naive} of {RUNS} runs (mSPRT {sequential})"
    );
}

#[test]
fn the_msprt_still_finds_a_real_effect() {
    const RUNS: u64 = 100;
    let (_, sequential) = peeking(RUNS, 30, 500, (0.10, 0.12));
    assert!(sequential >= 90, "detected in {sequential} of {RUNS} runs");
}
