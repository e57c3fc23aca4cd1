//! `dau`, `funnel` and `retention` against straightforward Rust implementations of their documented
//! semantics, over randomly generated events (a fixed seed per case, several cases); `funnel` with
//! attempt=best also against ClickHouse's own `windowFunnel`.

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
    /// A property for step filters.
    price: i64,
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
                price: rng.random_range(0..4),
            });
        }
    }
    events
}

fn to_json(events: &[Ev]) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            let mut v = json!({"event": e.event, "user_id": e.user, "timestamp": e.ts.to_rfc3339(), "properties": {"price": e.price}});
            if e.bot {
                v["context"] = json!({"user_agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"});
            }
            v
        })
        .collect()
}

async fn run(app: &TestApp, name: &str, params: Value) -> Vec<Map<String, Value>> {
    run_version(app, name, None, params).await
}

async fn run_version(
    app: &TestApp,
    name: &str,
    version: Option<u32>,
    params: Value,
) -> Vec<Map<String, Value>> {
    let catalog = chgate::catalog::Catalog::load(
        &app.settings().catalog.dir,
        &app.settings().clickhouse.database,
    )
    .unwrap();
    let template = catalog.get(name, version).unwrap();
    chgate::cli::check::live::query_rows_on(
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

/// A funnel as the reference implementations take it.
struct Funnel<'a> {
    steps: &'a [&'a str],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    window: i64,
    strict: bool,
    /// attempt=best; otherwise attempt=first.
    best: bool,
    /// (step, minimum price): a property filter `price >= minimum` on that step (1-based).
    min_price: Option<(usize, i64)>,
    /// (event, from step, to step).
    exclusions: &'a [(&'a str, usize, usize)],
}

impl Funnel<'_> {
    /// The steps (1-based) an event satisfies.
    fn matches(&self, e: &Ev) -> Vec<usize> {
        (1..=self.steps.len())
            .filter(|&k| {
                self.steps[k - 1] == e.event
                    && self
                        .min_price
                        .is_none_or(|(step, min)| step != k || e.price >= min)
            })
            .collect()
    }

    /// The template's parameters for this funnel.
    fn params(&self) -> Value {
        let at = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
        let mut params = json!({
            "steps": self.steps, "from": at(self.from), "to": at(self.to),
            "window_seconds": self.window, "order": if self.strict { "strict" } else { "ordered" },
            "attempt": if self.best { "best" } else { "first" },
        });
        if let Some((step, min)) = self.min_price {
            params["filter_steps"] = json!([step]);
            params["filter_properties"] = json!(["price"]);
            params["filter_ops"] = json!([">="]);
            params["filter_values"] = json!([min.to_string()]);
        }
        if !self.exclusions.is_empty() {
            params["exclude_events"] =
                json!(self.exclusions.iter().map(|x| x.0).collect::<Vec<_>>());
            params["exclude_from_steps"] =
                json!(self.exclusions.iter().map(|x| x.1).collect::<Vec<_>>());
            params["exclude_to_steps"] =
                json!(self.exclusions.iter().map(|x| x.2).collect::<Vec<_>>());
        }
        params
    }
}

/// One attempt: the step times it reached within its window, or None when an exclusion drops it.
fn attempt(f: &Funnel, evs: &[&Ev], entry: usize) -> Option<Vec<DateTime<Utc>>> {
    let deadline = evs[entry].ts + Duration::seconds(f.window);
    let mut times = vec![evs[entry].ts];
    let mut prev = entry;
    for k in 2..=f.steps.len() {
        let fits = |j: &usize| f.matches(evs[*j]).contains(&k) && evs[*j].ts <= deadline;
        let next = if f.strict {
            Some(prev + 1).filter(|j| *j < evs.len() && fits(j))
        } else {
            (prev + 1..evs.len()).find(fits)
        };
        let Some(j) = next else { break };
        times.push(evs[j].ts);
        prev = j;
    }
    for &(event, a, b) in f.exclusions {
        if times.len() < a {
            continue;
        }
        let after = times[a - 1];
        let dropped = evs.iter().any(|e| {
            e.event == event
                && e.ts > after
                && match times.get(b - 1) {
                    Some(until) => e.ts < *until,
                    None => e.ts <= deadline,
                }
        });
        if dropped {
            return None;
        }
    }
    Some(times)
}

/// (users, conversion_from_previous, conversion_from_start, median_seconds_from_previous) per step,
/// straight from the template's description: every attempt followed event by event.
fn funnel_reference(events: &[Ev], f: &Funnel) -> Vec<(u64, f64, f64, Option<f64>)> {
    let mut by_user: BTreeMap<&str, Vec<&Ev>> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| !e.bot && e.ts >= f.from && e.ts < f.to)
    {
        if f.strict || f.steps.contains(&e.event) || f.exclusions.iter().any(|x| x.0 == e.event) {
            by_user.entry(&e.user).or_default().push(e);
        }
    }
    let n = f.steps.len();
    let mut reached = vec![0u64; n];
    let mut gaps: Vec<Vec<f64>> = vec![Vec::new(); n];
    for evs in by_user.values_mut() {
        // Time order; the same time in step order (events that are no step first), then by the
        // steps and exclusions they match, as the template's sort key has it.
        evs.sort_by_key(|e| {
            let steps = f.matches(e);
            let excluded = f
                .exclusions
                .iter()
                .enumerate()
                .filter(|(_, x)| x.0 == e.event);
            let bits = steps.iter().map(|k| 1u64 << (k - 1)).sum::<u64>()
                + excluded.map(|(j, _)| 1u64 << (n + j)).sum::<u64>();
            (e.ts, steps.first().copied().unwrap_or(0), bits)
        });
        let entries = (0..evs.len()).filter(|&i| f.matches(evs[i]).contains(&1));
        let attempts: Vec<Option<Vec<DateTime<Utc>>>> = if f.best {
            entries.map(|i| attempt(f, evs, i)).collect()
        } else {
            entries.take(1).map(|i| attempt(f, evs, i)).collect()
        };
        // The furthest, and the earliest of those.
        let Some(times) =
            attempts
                .into_iter()
                .flatten()
                .fold(None::<Vec<DateTime<Utc>>>, |best, a| match best {
                    Some(b) if b.len() >= a.len() => Some(b),
                    _ => Some(a),
                })
        else {
            continue;
        };
        for (k, t) in times.iter().enumerate() {
            reached[k] += 1;
            if k > 0 {
                gaps[k].push((*t - times[k - 1]).num_milliseconds() as f64 / 1000.0);
            }
        }
    }
    (0..n)
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

/// Users reaching each step by ClickHouse's `windowFunnel(window)` in its default mode (no
/// `strict_*` option): other events may come between steps, as with order=ordered; it keeps the
/// furthest level over all starts, as attempt=best. Its events are sorted by time, then by
/// condition, as the template takes same-timestamp events in step order.
async fn window_funnel(app: &TestApp, f: &Funnel<'_>) -> Vec<u64> {
    let conditions: Vec<String> = f.steps.iter().map(|s| format!("event = '{s}'")).collect();
    let sql = format!(
        "SELECT level, toUInt64(count()) FROM (SELECT actor_id, windowFunnel({})(toUInt64(toUnixTimestamp64Milli(timestamp)), {}) AS level \
         FROM events WHERE timestamp >= ? AND timestamp < ? AND is_bot = 0 GROUP BY actor_id) GROUP BY level",
        f.window * 1000,
        conditions.join(", ")
    );
    let levels: Vec<(u8, u64)> = app
        .clickhouse()
        .query(&sql)
        .bind(f.from.format("%Y-%m-%d %H:%M:%S").to_string())
        .bind(f.to.format("%Y-%m-%d %H:%M:%S").to_string())
        .fetch_all()
        .await
        .unwrap();
    (1..=f.steps.len())
        .map(|k| {
            levels
                .iter()
                .filter(|(level, _)| usize::from(*level) >= k)
                .map(|(_, users)| users)
                .sum()
        })
        .collect()
}

fn assert_funnel(
    rows: &[Map<String, Value>],
    expected: &[(u64, f64, f64, Option<f64>)],
    context: &str,
) {
    assert_eq!(rows.len(), expected.len(), "funnel rows, {context}");
    for (k, (row, want)) in rows.iter().zip(expected).enumerate() {
        let context = format!("funnel step {}, {context}: {row:?} vs {want:?}", k + 1);
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

fn monday(d: NaiveDate) -> NaiveDate {
    d - Duration::days(d.weekday().num_days_from_monday() as i64)
}

/// (cohort, cohort_size, offset, retained) for weekly cohorts by first seen: users first seen from
/// `from` to `to` (v1), or in the whole weeks containing them (`whole_weeks`, v2).
fn retention_reference(
    events: &[Ev],
    from: NaiveDate,
    to: NaiveDate,
    periods: u32,
    today: NaiveDate,
    whole_weeks: bool,
) -> Vec<(String, u64, u64, u64)> {
    let (from, to) = if whole_weeks {
        (monday(from), monday(to) + Duration::days(6))
    } else {
        (from, to)
    };
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

fn retention_rows(rows: &[Map<String, Value>]) -> Vec<(String, u64, u64, u64)> {
    rows.iter()
        .map(|r| {
            (
                r["cohort"].as_str().unwrap().to_string(),
                r["cohort_size"].as_u64().unwrap(),
                r["period_offset"].as_u64().unwrap(),
                r["retained"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Weekly retention by ClickHouse's own `retention(cond_0, …, cond_periods)` over `events` (not the
/// rollups): cohorts are the Monday of each user's first event (bots excluded) in the weeks
/// containing `from` to `to`; cond_k holds for events in the k-th week after, and retention()
/// answers, per user, cond_0 and cond_0 AND cond_k. The weeks are all in the past.
async fn retention_by_clickhouse(
    app: &TestApp,
    from: NaiveDate,
    to: NaiveDate,
    periods: u32,
) -> Vec<(String, u64, u64, u64)> {
    let conditions: Vec<String> = (0..=periods)
        .map(|k| format!("toMonday(toDate(e.timestamp)) = c.cohort + {}", 7 * k))
        .collect();
    let sql = format!(
        "SELECT toString(cohort) AS cohort, sumForEach(r) AS retained FROM (\
           SELECT e.actor_id, any(c.cohort) AS cohort, retention({}) AS r \
           FROM events AS e INNER JOIN (\
             SELECT actor_id, toMonday(toDate(min(timestamp))) AS cohort FROM events WHERE is_bot = 0 GROUP BY actor_id \
             HAVING cohort BETWEEN toMonday(toDate(?)) AND toMonday(toDate(?))) AS c ON c.actor_id = e.actor_id \
           WHERE e.is_bot = 0 GROUP BY e.actor_id) \
         GROUP BY cohort ORDER BY cohort",
        conditions.join(", ")
    );
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Cohort {
        cohort: String,
        retained: Vec<u64>,
    }
    let cohorts: Vec<Cohort> = app
        .clickhouse()
        .query(&sql)
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all()
        .await
        .unwrap();
    cohorts
        .into_iter()
        .flat_map(|Cohort { cohort, retained }| {
            let size = retained[0];
            retained
                .into_iter()
                .enumerate()
                .map(move |(k, n)| (cohort.clone(), size, k as u64, n))
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

#[tokio::test]
async fn dau_funnel_and_retention_agree_with_reference_implementations_and_window_funnel_on_random_events(
) {
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
        chgate::cli::check::live::load_events_into(
            &app.clickhouse(),
            app.settings(),
            &to_json(&events),
        )
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

        // funnel v1 (first attempts) and v2, ordered and strict, several windows
        let steps = ["view", "cart", "buy"];
        let (ffrom, fto) = (start + Duration::days(2), start + Duration::days(16));
        for (window, strict) in [(86_400i64, false), (3_600, false), (604_800, true)] {
            let first = Funnel {
                steps: &steps,
                from: ffrom,
                to: fto,
                window,
                strict,
                best: false,
                min_price: None,
                exclusions: &[],
            };
            let expected = funnel_reference(&events, &first);
            let context = format!("window {window} strict {strict} seed {seed}");
            let mut v1_params = first.params();
            v1_params.as_object_mut().unwrap().remove("attempt");
            let v1 = run_version(&app, "funnel", Some(1), v1_params).await;
            assert_funnel(&v1, &expected, &format!("v1, {context}"));
            let v2 = run(&app, "funnel", first.params()).await;
            assert_funnel(&v2, &expected, &format!("attempt=first, {context}"));
            let best = Funnel {
                best: true,
                ..first
            };
            let v2 = run(&app, "funnel", best.params()).await;
            if !strict {
                let users: Vec<u64> = v2.iter().map(|r| r["users"].as_u64().unwrap()).collect();
                assert_eq!(
                    users,
                    window_funnel(&app, &best).await,
                    "attempt=best against windowFunnel, {context}"
                );
            }
            assert_funnel(
                &v2,
                &funnel_reference(&events, &best),
                &format!("attempt=best, {context}"),
            );
        }
        // funnel v2 with a property filter and exclusions
        let exclusions = [("other", 1, 3), ("buy", 1, 2)];
        for (best, strict) in [(true, false), (false, false), (true, true)] {
            let f = Funnel {
                steps: &steps,
                from: ffrom,
                to: fto,
                window: 86_400,
                strict,
                best,
                min_price: Some((2, 2)),
                exclusions: &exclusions,
            };
            let rows = run(&app, "funnel", f.params()).await;
            assert_funnel(
                &rows,
                &funnel_reference(&events, &f),
                &format!("filter and exclusions, best {best} strict {strict} seed {seed}"),
            );
        }

        // retention, weekly, over a range that starts and ends mid-week
        let today = Utc::now().date_naive();
        let (rfrom, rto) = (
            NaiveDate::from_ymd_opt(2026, 2, 4).unwrap(),
            NaiveDate::from_ymd_opt(2026, 2, 18).unwrap(),
        );
        let params = json!({"from": rfrom.to_string(), "to": rto.to_string(), "period": "week", "periods": 3});
        let v1 = run_version(&app, "retention", Some(1), params.clone()).await;
        let v2 = run(&app, "retention", params).await;
        assert_eq!(
            retention_rows(&v1),
            retention_reference(&events, rfrom, rto, 3, today, false),
            "retention v1, seed {seed}"
        );
        assert_eq!(
            retention_rows(&v2),
            retention_by_clickhouse(&app, rfrom, rto, 3).await,
            "retention v2 against ClickHouse's retention(), seed {seed}"
        );
        assert_eq!(
            retention_rows(&v2),
            retention_reference(&events, rfrom, rto, 3, today, true),
            "retention v2, seed {seed}"
        );
    }
}
