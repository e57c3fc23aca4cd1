//! `dau`, `funnel` and `retention` against straightforward Rust implementations of their documented
//! semantics, over randomly generated events (a fixed seed per case, several cases).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use crate::helpers::TestApp;

#[derive(Clone, Debug)]
struct Ev {
    user: String,
    event: &'static str,
    ts: DateTime<Utc>,
    bot: bool,
}

const NAMES: &[&str] = &["view", "cart", "buy", "other"];

fn generate(seed: u64, start: DateTime<Utc>) -> Vec<Ev> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events = Vec::new();
    for u in 0..30 {
        let user = format!("u{u}");
        let n = rng.random_range(1..25);
        for _ in 0..n {
            // Whole seconds, with frequent exact ties inside a user's events.
            let ts = start + Duration::seconds(rng.random_range(0..21 * 86_400) / 60 * 60);
            let event = NAMES[rng.random_range(0..NAMES.len())];
            events.push(Ev {
                user: user.clone(),
                event,
                ts,
                bot: rng.random_range(0..40) == 0,
            });
        }
    }
    events
}

fn to_json(events: &[Ev]) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            let mut v =
                json!({"event": e.event, "user_id": e.user, "timestamp": e.ts.to_rfc3339()});
            if e.bot {
                v["context"] = json!({"user_agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"});
            }
            v
        })
        .collect()
}

async fn run(app: &TestApp, name: &str, params: Value) -> Vec<Map<String, Value>> {
    let catalog = chgate::catalog::Catalog::load(
        &app.settings().catalog.dir,
        &app.settings().clickhouse.database,
    )
    .unwrap();
    let template = catalog.get(name, None).unwrap();
    chgate::check_live::query_rows_on(
        &app.clickhouse(),
        &catalog,
        template,
        params.as_object().unwrap(),
    )
    .await
    .unwrap()
}

fn dau_reference(events: &[Ev], from: NaiveDate, to: NaiveDate) -> Vec<(String, u64)> {
    let mut days: BTreeMap<NaiveDate, BTreeSet<&str>> = BTreeMap::new();
    let mut day = from;
    while day <= to {
        days.insert(day, BTreeSet::new());
        day += Duration::days(1);
    }
    for e in events.iter().filter(|e| !e.bot) {
        if let Some(users) = days.get_mut(&e.ts.date_naive()) {
            users.insert(&e.user);
        }
    }
    days.into_iter()
        .map(|(d, u)| (d.to_string(), u.len() as u64))
        .collect()
}

/// Median with linear interpolation between the two middle values (quantileExactInclusive(0.5)).
fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let pos = (values.len() - 1) as f64 * 0.5;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(values[lo] + (values[hi] - values[lo]) * (pos - lo as f64))
}

/// (users, conversion_from_previous, conversion_from_start, median_seconds_from_previous) per step.
fn funnel_reference(
    events: &[Ev],
    steps: &[&str],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    window: i64,
    strict: bool,
) -> Vec<(u64, f64, f64, Option<f64>)> {
    let mut by_user: BTreeMap<&str, Vec<&Ev>> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| !e.bot && e.ts >= from && e.ts < to)
    {
        if strict || steps.contains(&e.event) {
            by_user.entry(&e.user).or_default().push(e);
        }
    }
    let mut reached = vec![0u64; steps.len()];
    let mut gaps: Vec<Vec<f64>> = vec![Vec::new(); steps.len()];
    for evs in by_user.values_mut() {
        // Ties in time go in step order (events that are no step first).
        evs.sort_by_key(|e| {
            (
                e.ts,
                steps
                    .iter()
                    .position(|s| *s == e.event)
                    .map_or(0, |p| p + 1),
            )
        });
        let Some(first) = evs.iter().position(|e| e.event == steps[0]) else {
            continue;
        };
        let t1 = evs[first].ts;
        let mut prev = first;
        reached[0] += 1;
        for (k, step) in steps.iter().enumerate().skip(1) {
            let next = if strict {
                Some(prev + 1).filter(|&j| {
                    j < evs.len()
                        && evs[j].event == *step
                        && evs[j].ts <= t1 + Duration::seconds(window)
                })
            } else {
                (prev + 1..evs.len())
                    .find(|&j| evs[j].event == *step && evs[j].ts <= t1 + Duration::seconds(window))
            };
            let Some(j) = next else { break };
            reached[k] += 1;
            gaps[k].push((evs[j].ts - evs[prev].ts).num_milliseconds() as f64 / 1000.0);
            prev = j;
        }
    }
    (0..steps.len())
        .map(|k| {
            let users = reached[k];
            let previous = if k == 0 { users } else { reached[k - 1] };
            let conv_prev = if previous == 0 {
                0.0
            } else {
                users as f64 / previous as f64
            };
            let conv_start = if reached[0] == 0 {
                0.0
            } else {
                users as f64 / reached[0] as f64
            };
            (
                users,
                conv_prev,
                conv_start,
                if k == 0 || users == 0 {
                    None
                } else {
                    median(gaps[k].clone())
                },
            )
        })
        .collect()
}

fn monday(d: NaiveDate) -> NaiveDate {
    d - Duration::days(d.weekday().num_days_from_monday() as i64)
}

/// (cohort, cohort_size, offset, retained) for weekly cohorts by first seen.
fn retention_reference(
    events: &[Ev],
    from: NaiveDate,
    to: NaiveDate,
    periods: u32,
    today: NaiveDate,
) -> Vec<(String, u64, u64, u64)> {
    let humans: Vec<&Ev> = events.iter().filter(|e| !e.bot).collect();
    let mut first: BTreeMap<&str, NaiveDate> = BTreeMap::new();
    for e in &humans {
        let d = e.ts.date_naive();
        first
            .entry(&e.user)
            .and_modify(|f| *f = (*f).min(d))
            .or_insert(d);
    }
    let cohort_of: BTreeMap<&str, NaiveDate> = first
        .into_iter()
        .filter(|(_, d)| *d >= from && *d <= to)
        .map(|(u, d)| (u, monday(d)))
        .collect();
    let mut active: BTreeMap<(NaiveDate, i64), BTreeSet<&str>> = BTreeMap::new();
    for e in &humans {
        if let Some(cohort) = cohort_of.get(e.user.as_str()) {
            let week = monday(e.ts.date_naive());
            let offset = (week - *cohort).num_days() / 7;
            if (0..=periods as i64).contains(&offset) {
                active.entry((*cohort, offset)).or_default().insert(&e.user);
            }
        }
    }
    let mut sizes: BTreeMap<NaiveDate, u64> = BTreeMap::new();
    for cohort in cohort_of.values() {
        *sizes.entry(*cohort).or_default() += 1;
    }
    let mut out = Vec::new();
    for (cohort, size) in sizes {
        for offset in 0..=periods as i64 {
            if cohort + Duration::weeks(offset) > monday(today) {
                continue;
            }
            let retained = active.get(&(cohort, offset)).map_or(0, |s| s.len() as u64);
            out.push((cohort.to_string(), size, offset as u64, retained));
        }
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

#[tokio::test]
async fn dau_funnel_and_retention_agree_with_reference_implementations_on_random_events() {
    let app = TestApp::spawn().await;
    let start = Utc.with_ymd_and_hms(2026, 2, 2, 0, 0, 0).unwrap();
    for seed in [1u64, 2, 3] {
        app.clickhouse()
            .query("TRUNCATE TABLE events")
            .execute()
            .await
            .unwrap();
        for table in ["dau_daily", "user_first_seen"] {
            app.clickhouse()
                .query(&format!("TRUNCATE TABLE {table}"))
                .execute()
                .await
                .unwrap();
        }
        let events = generate(seed, start);
        chgate::check_live::load_events_into(&app.clickhouse(), app.settings(), &to_json(&events))
            .await
            .unwrap();

        // dau
        let (from, to) = (
            NaiveDate::from_ymd_opt(2026, 2, 3).unwrap(),
            NaiveDate::from_ymd_opt(2026, 2, 19).unwrap(),
        );
        let rows = run(
            &app,
            "dau",
            json!({"from": from.to_string(), "to": to.to_string()}),
        )
        .await;
        let actual: Vec<(String, u64)> = rows
            .iter()
            .map(|r| {
                (
                    r["day"].as_str().unwrap().to_string(),
                    r["users"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(actual, dau_reference(&events, from, to), "dau, seed {seed}");

        // funnel, ordered and strict, several windows
        let steps = ["view", "cart", "buy"];
        let (ffrom, fto) = (start + Duration::days(2), start + Duration::days(16));
        for (window, strict) in [(86_400i64, false), (3_600, false), (604_800, true)] {
            let rows = run(&app, "funnel", json!({
                "steps": steps, "from": ffrom.format("%Y-%m-%d %H:%M:%S").to_string(), "to": fto.format("%Y-%m-%d %H:%M:%S").to_string(),
                "window_seconds": window, "order": if strict { "strict" } else { "ordered" }
            }))
            .await;
            let expected = funnel_reference(&events, &steps, ffrom, fto, window, strict);
            assert_eq!(rows.len(), 3, "funnel rows, seed {seed}");
            for (k, (row, want)) in rows.iter().zip(&expected).enumerate() {
                let context = format!("funnel step {} window {window} strict {strict} seed {seed}: {row:?} vs {want:?}", k + 1);
                assert_eq!(row["users"].as_u64().unwrap(), want.0, "{context}");
                assert!(
                    close(row["conversion_from_previous"].as_f64().unwrap(), want.1),
                    "{context}"
                );
                assert!(
                    close(row["conversion_from_start"].as_f64().unwrap(), want.2),
                    "{context}"
                );
                match (row["median_seconds_from_previous"].as_f64(), want.3) {
                    (Some(a), Some(b)) => assert!(close(a, b), "{context}"),
                    (None, None) => {}
                    _ => panic!("{context}"),
                }
            }
        }

        // retention, weekly
        let today = Utc::now().date_naive();
        let (rfrom, rto) = (
            NaiveDate::from_ymd_opt(2026, 2, 2).unwrap(),
            NaiveDate::from_ymd_opt(2026, 2, 15).unwrap(),
        );
        let rows = run(&app, "retention", json!({"from": rfrom.to_string(), "to": rto.to_string(), "period": "week", "periods": 3})).await;
        let actual: Vec<(String, u64, u64, u64)> = rows
            .iter()
            .map(|r| {
                (
                    r["cohort"].as_str().unwrap().to_string(),
                    r["cohort_size"].as_u64().unwrap(),
                    r["period_offset"].as_u64().unwrap(),
                    r["retained"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            actual,
            retention_reference(&events, rfrom, rto, 3, today),
            "retention, seed {seed}"
        );
    }
}
