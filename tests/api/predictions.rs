//! Anomalies in a template's series, on request and as an alert condition, over generated daily
//! users with a weekly cycle and one planted spike.

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{call, TestApp};

/// Six weeks of daily users ending yesterday: 40 on weekdays, 20 at weekends (a small
/// deterministic wobble), and `spike` users on yesterday when given.
fn events(spike: Option<u32>) -> Vec<Value> {
    let today = Utc::now().date_naive();
    let mut out = Vec::new();
    for back in 1..=42i64 {
        let day = today - Duration::days(back);
        let weekend = matches!(
            chrono::Datelike::weekday(&day),
            chrono::Weekday::Sat | chrono::Weekday::Sun
        );
        let usual = if weekend {
            20 + back % 2
        } else {
            40 + back % 3
        } as u32;
        let users = if back == 1 {
            spike.unwrap_or(usual)
        } else {
            usual
        };
        for u in 0..users {
            out.push(json!({
                "event": "page_view",
                "user_id": format!("u{u}"),
                "timestamp": format!("{day}T12:00:00Z"),
            }));
        }
    }
    out
}

fn range() -> (String, String) {
    let today = Utc::now().date_naive();
    (
        (today - Duration::days(42)).to_string(),
        (today - Duration::days(1)).to_string(),
    )
}

/// Each change of `body` answers 400 `invalid_prediction` with a message naming `field`.
async fn refused<const N: usize>(
    app: &TestApp,
    key: &str,
    path: &str,
    body: &Value,
    changes: [(Value, &str); N],
) {
    for (change, field) in changes {
        let mut bad = body.clone();
        for (name, value) in change.as_object().unwrap() {
            bad[name] = value.clone();
        }
        let (status, answer, text) = call(app, Method::POST, path, key, Some(bad)).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("invalid_prediction")),
            "{text}"
        );
        assert!(text.contains(field), "{field}: {text}");
    }
}

async fn load(app: &TestApp, events: &[Value]) {
    chgate::cli::check::live::load_events_into(&app.clickhouse(), app.settings(), events)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_planted_spike_is_the_only_anomaly_of_the_series_and_bad_requests_name_the_field() {
    let app = TestApp::spawn().await;
    let analyst = app.create_key("analyst").await;
    load(&app, &events(Some(120))).await;
    let (from, to) = range();
    let body = json!({"template": "dau", "params": {"from": from, "to": to}, "column": "users"});
    let (status, judged, text) = call(
        &app,
        Method::POST,
        "/v1/predictions/anomalies",
        &analyst,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(judged["anomalies"], 1, "{text}");
    let points = judged["points"].as_array().unwrap();
    assert_eq!(points.len(), 42);
    let last = points.last().unwrap();
    assert_eq!(
        (last["anomaly"].as_bool(), last["row"]["day"].as_str()),
        (Some(true), Some(to.as_str()))
    );
    assert!(
        last["deviation"].as_f64().unwrap() > 3.5 && last["expected"].as_f64().unwrap() < 50.0,
        "{last}"
    );

    refused(
        &app,
        &analyst,
        "/v1/predictions/anomalies",
        &body,
        [
            (json!({"column": "visits"}), "column: "),
            (json!({"season": 0}), "season"),
            (json!({"sensitivity": -1}), "sensitivity"),
            (json!({"params": {"from": to, "to": to}}), "too short"),
        ],
    )
    .await;
}

#[tokio::test]
async fn an_anomaly_alert_fires_on_an_unusual_last_day_and_stays_ok_on_a_usual_one() {
    let alert = |name: &str| {
        json!({
            "name": name,
            "template": "dau",
            "params": {"from": "today-42d", "to": "today-1d"},
            "condition": {"column": "users", "op": "anomaly", "threshold": 3.5},
            "schedule": "0 0 1 1 *",
            "channels": [{"type": "webhook", "url": "http://127.0.0.1:9/hook"}]
        })
    };
    for (spike, state) in [(Some(120), "firing"), (None, "ok")] {
        let app = TestApp::spawn().await;
        let analyst = app.create_key("analyst").await;
        load(&app, &events(spike)).await;
        let (status, created, text) = call(
            &app,
            Method::POST,
            "/v1/alerts",
            &analyst,
            Some(alert("unusual users")),
        )
        .await;
        assert_eq!(status, 201, "{text}");
        let path = format!("/v1/alerts/{}/evaluate", created["id"].as_str().unwrap());
        let (status, evaluated, text) = call(&app, Method::POST, &path, &analyst, None).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(evaluated["result"]["state"], state, "{text}");
    }
    let app = TestApp::spawn().await;
    let analyst = app.create_key("analyst").await;
    let mut bad = alert("bad");
    bad["condition"]["threshold"] = json!(0);
    let (status, _, text) = call(&app, Method::POST, "/v1/alerts", &analyst, Some(bad)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("condition.threshold: "), "{text}");
}

#[tokio::test]
async fn a_forecast_continues_the_weekly_cycle_with_ordered_intervals_and_a_backtest() {
    let app = TestApp::spawn().await;
    let analyst = app.create_key("analyst").await;
    load(&app, &events(None)).await;
    let (from, to) = range();
    let body = json!({"template": "dau", "params": {"from": from, "to": to}, "column": "users", "horizon": 14});
    let (status, forecast, text) = call(
        &app,
        Method::POST,
        "/v1/predictions/forecast",
        &analyst,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let steps = forecast["forecast"].as_array().unwrap();
    assert_eq!(steps.len(), 14);
    for step in steps {
        let v = |k: &str| step[k].as_f64().unwrap();
        assert!(
            v("lower_95") <= v("lower_80") && v("lower_80") <= v("point"),
            "{step}"
        );
        assert!(
            v("point") <= v("upper_80") && v("upper_80") <= v("upper_95"),
            "{step}"
        );
    }
    // Weekdays near 40 users, weekends near 20: the forecast keeps the cycle.
    let points: Vec<f64> = steps.iter().map(|s| s["point"].as_f64().unwrap()).collect();
    let (high, low) = (
        points.iter().cloned().fold(f64::MIN, f64::max),
        points.iter().cloned().fold(f64::MAX, f64::min),
    );
    assert!(
        high > 35.0 && high < 45.0 && low > 15.0 && low < 25.0,
        "{points:?}"
    );
    assert_eq!(forecast["backtest"]["origins"], 1, "{text}");
    assert_eq!(forecast["after"]["day"], to);

    refused(
        &app,
        &analyst,
        "/v1/predictions/forecast",
        &body,
        [
            (json!({"horizon": 0}), "horizon"),
            (json!({"column": "visits"}), "column: "),
            (json!({"params": {"from": to, "to": to}}), "too short"),
        ],
    )
    .await;
}
