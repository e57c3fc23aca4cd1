//! Alerts over templates: firing, de-duplication, resolution, channels with retries, the history,
//! scheduled evaluation, and a scheduler shared by two gateways.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{json, Value};

use crate::helpers::{TestApp, TestDatabases};

/// A local HTTP server standing in for webhooks, Slack and Telegram: records every POST by path;
/// `/fail/{n}/…` answers 500 to the first `n` requests of its path.
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    async fn start() -> (Self, String) {
        let receiver = Self::default();
        async fn record(
            State(receiver): State<Receiver>,
            Path(path): Path<String>,
            body: axum::body::Bytes,
        ) -> StatusCode {
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let mut received = receiver.received.lock().unwrap();
            received.push((path.clone(), body));
            let seen = received.iter().filter(|(p, _)| *p == path).count();
            let failures: usize = path
                .strip_prefix("fail/")
                .and_then(|rest| rest.split('/').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if seen <= failures {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }
        let router = axum::Router::new()
            .route("/{*path}", post(record))
            .with_state(receiver.clone());
        (receiver, crate::helpers::serve(router).await)
    }

    fn at(&self, path: &str) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, body)| body.clone())
            .collect()
    }
}

async fn alerting_app(receiver: &str) -> TestApp {
    let receiver = receiver.to_string();
    TestApp::spawn_with(move |s| {
        s.alerts.telegram_api_base = receiver;
        s.alerts.telegram_bot_token = chgate::config::Secret::new("123:TEST");
        s.alerts.retry_base_ms = 20;
        s.scheduler.tick_ms = 200;
    })
    .await
}

async fn purchase(app: &TestApp, amount: f64, ago_secs: i64) {
    let at = chrono::Utc::now() - chrono::Duration::seconds(ago_secs);
    chgate::cli::check::live::load_events_into(
        &app.clickhouse(),
        app.settings(),
        &[
            json!({"event": "purchase", "user_id": "whale", "timestamp": at.to_rfc3339(),
                 "properties": {"amount": amount, "currency": "USD", "order_id": "o-1"}}),
        ],
    )
    .await
    .unwrap();
}

/// A call and its JSON answer (or the text, when it is not JSON).
async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, json, text) = crate::helpers::call(app, method, path, key, body).await;
    (
        status,
        if json.is_null() {
            Value::String(text)
        } else {
            json
        },
    )
}

async fn get(app: &TestApp, path: &str, key: &str) -> Value {
    call(app, reqwest::Method::GET, path, key, None).await.1
}

fn big_purchase_alert(receiver: &str, window: &str, schedule: &str) -> Value {
    json!({
        "name": "purchase over $1000",
        "template": "large_purchases",
        "params": {"from": window, "min_amount": 1000, "currency": "USD"},
        "condition": {"column": "max_amount", "op": ">", "threshold": 1000, "aggregate": "max"},
        "schedule": schedule,
        "severity": "critical",
        "channels": [
            {"type": "telegram", "chat_id": "-100777"},
            {"type": "webhook", "url": format!("{receiver}/hook")},
            {"type": "slack", "url": format!("{receiver}/fail/2/slack")},
            {"type": "webhook", "url": format!("{receiver}/fail/99/broken")},
        ],
    })
}

#[tokio::test]
async fn a_large_purchase_fires_once_to_every_channel_then_resolves() {
    let (receiver, url) = Receiver::start().await;
    let app = alerting_app(&url).await;
    let key = app.create_key("analyst").await;
    // A yearly schedule: this test drives the evaluations itself.
    let (status, alert) = call(
        &app,
        reqwest::Method::POST,
        "/v1/alerts",
        &key,
        Some(big_purchase_alert(&url, "now-6s", "0 0 1 1 *")),
    )
    .await;
    assert_eq!(status, 201, "{alert}");
    let id = alert["id"].as_str().unwrap().to_string();
    let evaluate = format!("/v1/alerts/{id}/evaluate");

    let (_, quiet) = call(&app, reqwest::Method::POST, &evaluate, &key, None).await;
    purchase(&app, 1500.0, 1).await;
    // Give the freshly inserted part a moment to become visible to queries.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, fired) = call(&app, reqwest::Method::POST, &evaluate, &key, None).await;
    let (_, again) = call(&app, reqwest::Method::POST, &evaluate, &key, None).await;
    // The purchase leaves the six-second window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, resolved) = call(&app, reqwest::Method::POST, &evaluate, &key, None).await;
    let history = get(&app, &format!("/v1/alerts/{id}/events"), &key).await;
    let runs = get(&app, &format!("/v1/alerts/{id}/runs"), &key).await;
    let shown = get(&app, &format!("/v1/alerts/{id}"), &key).await;

    assert_eq!(quiet["result"]["state"], "ok", "{quiet}");
    assert_eq!(fired["result"]["state"], "firing", "{fired}");
    assert_eq!(fired["result"]["value"], 1500.0);
    assert_eq!(again["result"]["state"], "firing");
    assert_eq!(
        again["result"]["event"],
        Value::Null,
        "no second notification while firing"
    );
    assert_eq!(resolved["result"]["state"], "ok", "{resolved}");
    assert_eq!(resolved["result"]["event"], "resolved");

    let telegram = receiver.at("bot123:TEST/sendMessage");
    assert_eq!(telegram.len(), 2, "fired and resolved: {telegram:?}");
    assert_eq!(telegram[0]["chat_id"], "-100777");
    let text = telegram[0]["text"].as_str().unwrap();
    assert!(
        text.contains("FIRING") && text.contains("purchase over $1000") && text.contains("1500"),
        "{text}"
    );
    assert!(telegram[1]["text"]
        .as_str()
        .unwrap()
        .starts_with("[RESOLVED]"));
    let hooks = receiver.at("hook");
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks[0]["state"], "firing");
    assert_eq!(hooks[0]["severity"], "critical");
    assert_eq!(hooks[0]["value"], 1500.0);
    assert_eq!(
        receiver.at("fail/2/slack").len(),
        3 + 1,
        "two failures, then delivered; then the resolution at once"
    );
    assert_eq!(
        receiver.at("fail/99/broken").len(),
        3 * 2,
        "three attempts per notification"
    );

    let events = history["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["resolved", "firing"]);
    let deliveries = events[1]["deliveries"].as_array().unwrap();
    let outcome = |channel: usize| {
        (
            deliveries[channel]["delivered"].as_bool().unwrap(),
            deliveries[channel]["attempts"].as_u64().unwrap(),
        )
    };
    assert_eq!(outcome(0), (true, 1));
    assert_eq!(outcome(2), (true, 3));
    assert_eq!(outcome(3), (false, 3));
    assert!(deliveries[3]["error"].as_str().unwrap().contains("500"));
    assert_eq!(runs["runs"].as_array().unwrap().len(), 4);
    assert!(runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["trigger"] == "manual" && r["status"] == "ok"));
    assert_eq!(shown["state"], "ok");
}

#[tokio::test]
async fn the_scheduler_evaluates_alerts_on_their_cron_schedule() {
    let (receiver, url) = Receiver::start().await;
    let app = alerting_app(&url).await;
    let key = app.create_key("analyst").await;
    purchase(&app, 2500.0, 1).await;
    let mut alert = big_purchase_alert(&url, "now-1h", "* * * * * *");
    alert["channels"] = json!([{"type": "webhook", "url": format!("{url}/scheduled")}]);
    let (status, created) =
        call(&app, reqwest::Method::POST, "/v1/alerts", &key, Some(alert)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();

    let mut delivered = Vec::new();
    for _ in 0..50 {
        delivered = receiver.at("scheduled");
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let runs = get(&app, &format!("/v1/alerts/{id}/runs"), &key).await;

    assert_eq!(delivered.len(), 1, "fired once by the scheduler");
    assert_eq!(
        receiver.at("scheduled").len(),
        1,
        "and not again while firing"
    );
    let runs = runs["runs"].as_array().unwrap();
    assert!(runs.len() >= 2, "{runs:?}");
    assert!(runs.iter().all(|r| r["trigger"] == "schedule"));
}

#[tokio::test]
async fn invalid_alerts_are_refused_naming_the_field() {
    let (_, url) = Receiver::start().await;
    let app = alerting_app(&url).await;
    let analyst = app.create_key("analyst").await;
    let developer = app
        .create_key_with("developer", &[("developer_id", "dev-1")])
        .await;
    let base = big_purchase_alert(&url, "now-1h", "*/5 * * * *");
    let with = |path: &[&str], value: Value| {
        let mut spec = base.clone();
        let mut at = &mut spec;
        for key in &path[..path.len() - 1] {
            at = &mut at[*key];
        }
        at[path[path.len() - 1]] = value;
        spec
    };

    let cases = [
        (with(&["condition", "op"], json!("~")), "condition.op"),
        (with(&["schedule"], json!("every minute")), "schedule"),
        (with(&["schedule"], json!("99 * * * *")), "schedule"),
        (
            with(&["channels"], json!([{"type": "pager", "url": "x"}])),
            "channels[0]",
        ),
        (
            with(
                &["channels"],
                json!([{"type": "webhook", "url": "ftp://x"}]),
            ),
            "channels[0].url",
        ),
        (with(&["channels"], json!([])), "channels"),
        (with(&["template"], json!("no_such_template")), "template"),
        (
            with(&["condition", "column"], json!("nope")),
            "condition.column",
        ),
        (with(&["params", "min_amount"], json!("lots")), "params"),
        (with(&["surprise"], json!(1)), "surprise"),
    ];
    let mut answers = Vec::new();
    for (spec, _) in &cases {
        answers.push(
            call(
                &app,
                reqwest::Method::POST,
                "/v1/alerts",
                &analyst,
                Some(spec.clone()),
            )
            .await,
        );
    }
    let (not_allowed, body) = call(
        &app,
        reqwest::Method::POST,
        "/v1/alerts",
        &developer,
        Some(base.clone()),
    )
    .await;

    for ((_, field), (status, body)) in cases.iter().zip(&answers) {
        assert_eq!(*status, 400, "{field}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{field}: {message}");
    }
    assert_eq!(not_allowed, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("may not run large_purchases"));
}

/// Which instances ran each (job, occurrence).
type Runners = Arc<Mutex<HashMap<(uuid::Uuid, String), Vec<String>>>>;

/// Counts every (job, occurrence) it is asked to run.
#[derive(Clone, Default)]
struct Counting {
    seen: Runners,
    instance: String,
}

impl chgate::schedule::Executor for Counting {
    async fn execute(
        &self,
        claimed: &chgate::schedule::Claimed,
    ) -> Result<chgate::schedule::Outcome, chgate::schedule::RunError> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.seen
            .lock()
            .unwrap()
            .entry((claimed.target, claimed.scheduled_for.to_rfc3339()))
            .or_default()
            .push(self.instance.clone());
        Ok(chgate::schedule::Outcome::default())
    }
}

#[tokio::test]
async fn two_scheduler_instances_never_run_the_same_occurrence_twice() {
    let databases = TestDatabases::migrated().await;
    let pool = sqlx::PgPool::connect(databases.settings.postgres.url.expose())
        .await
        .unwrap();
    let first = chgate::schedule::Scheduler::new(pool.clone());
    let second = chgate::schedule::Scheduler::new(pool.clone());
    let every_second = chgate::schedule::Schedule::parse("* * * * * *").unwrap();
    for _ in 0..8 {
        first
            .set("test", uuid::Uuid::new_v4(), &every_second, true)
            .await
            .unwrap();
    }
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    for (scheduler, name) in [(first.clone(), "a"), (second.clone(), "b")] {
        let executor = Counting {
            seen: seen.clone(),
            instance: name.into(),
        };
        chgate::schedule::spawn(
            scheduler,
            executor,
            Duration::from_millis(20),
            4,
            stop.clone(),
        );
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.len() >= 8 * 3,
        "every job ran on most seconds: {} runs",
        seen.len()
    );
    let doubled: Vec<_> = seen
        .iter()
        .filter(|(_, runners)| runners.len() > 1)
        .collect();
    assert!(doubled.is_empty(), "occurrences run twice: {doubled:?}");
    let by: Vec<&String> = seen.values().flatten().collect();
    assert!(
        by.iter().any(|r| *r == "a") && by.iter().any(|r| *r == "b"),
        "both instances took jobs"
    );
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_runs WHERE kind = 'test' AND status = 'ok'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(recorded as usize, seen.len());
}
