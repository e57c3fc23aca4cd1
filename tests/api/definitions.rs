//! `new_users`, `retention` and `paths` v2: where v1 differed by accident from the definitions of
//! PostHog and ClickHouse's `retention()`, one test per fix (v1 answers as before).

use serde_json::{json, Value};

use crate::helpers::{app_with, column, rows};

fn event(user: &str, event: &str, timestamp: &str) -> Value {
    json!({"event": event, "user_id": user, "timestamp": timestamp})
}

fn purchase(user: &str, timestamp: &str) -> Value {
    json!({"event": "purchase", "user_id": user, "timestamp": timestamp,
        "properties": {"amount": 5, "currency": "USD"}})
}

#[tokio::test]
async fn new_users_lists_periods_without_new_users_with_zero() {
    let app = app_with(&[
        event("jan", "open", "2026-01-15T10:00:00Z"),
        event("mar", "open", "2026-03-10T10:00:00Z"),
    ])
    .await;
    let params = json!({"from": "2026-01-01", "to": "2026-03-31", "granularity": "month"});

    let v2 = rows(&app, "/v1/queries/new_users", params.clone()).await;
    let v1 = rows(&app, "/v1/queries/new_users/v1", params).await;

    assert_eq!(
        column(&v2, "period"),
        [
            json!("2026-01-01"),
            json!("2026-02-01"),
            json!("2026-03-01")
        ]
    );
    assert_eq!(column(&v2, "new_users"), [json!(1), json!(0), json!(1)]);
    assert_eq!(column(&v1, "new_users"), [json!(1), json!(1)]);
}

#[tokio::test]
async fn retention_cohorts_are_whole_periods_even_when_the_range_starts_inside_one() {
    // The range starts on Wednesday 2026-01-07; `a` was first seen on the Monday before.
    let app = app_with(&[
        event("a", "open", "2026-01-05T10:00:00Z"),
        event("a", "open", "2026-01-12T10:00:00Z"),
        event("b", "open", "2026-01-07T10:00:00Z"),
    ])
    .await;
    let params = json!({"from": "2026-01-07", "to": "2026-01-07", "period": "week", "periods": 1});

    let v2 = rows(&app, "/v1/queries/retention", params.clone()).await;
    let v1 = rows(&app, "/v1/queries/retention/v1", params).await;

    assert_eq!(column(&v2, "cohort_size"), [json!(2), json!(2)]);
    assert_eq!(column(&v2, "retained"), [json!(2), json!(1)]);
    assert_eq!(column(&v1, "cohort_size"), [json!(1), json!(1)]);
}

#[tokio::test]
async fn retention_by_start_event_starts_at_the_first_start_event_ever() {
    // `a` first bought before the range: not a new buyer of its first week.
    let app = app_with(&[
        purchase("a", "2025-12-01T10:00:00Z"),
        purchase("a", "2026-01-06T10:00:00Z"),
        purchase("a", "2026-01-13T10:00:00Z"),
        purchase("b", "2026-01-06T10:00:00Z"),
        purchase("b", "2026-01-13T10:00:00Z"),
    ])
    .await;
    let params = json!({"from": "2026-01-05", "to": "2026-01-11", "period": "week", "periods": 1,
        "start_event": "purchase", "return_event": "purchase"});

    let v2 = rows(&app, "/v1/queries/retention", params.clone()).await;
    let v1 = rows(&app, "/v1/queries/retention/v1", params).await;

    assert_eq!(
        column(&v2, "cohort"),
        [json!("2026-01-05"), json!("2026-01-05")]
    );
    assert_eq!(column(&v2, "cohort_size"), [json!(1), json!(1)]);
    assert_eq!(column(&v2, "retained"), [json!(1), json!(1)]);
    assert_eq!(column(&v1, "cohort_size"), [json!(2), json!(2)]);
}

#[tokio::test]
async fn paths_take_events_of_the_same_millisecond_in_event_name_order() {
    // Two inserts (two parts) with events of the same millisecond: the order ClickHouse reads
    // them in must not decide (v1 answered search -> home -> game here).
    let app = app_with(&[event("u1", "home", "2026-02-01T10:00:00Z")]).await;
    chgate::cli::check::live::load_events_into(
        &app.clickhouse(),
        app.settings(),
        &[
            event("u1", "search", "2026-02-01T10:00:00Z"),
            event("u1", "game", "2026-02-01T10:00:01Z"),
        ],
    )
    .await
    .unwrap();

    let answer = rows(
        &app,
        "/v1/queries/paths",
        json!({"from": "2026-02-01 00:00:00", "to": "2026-02-02 00:00:00", "depth": 3}),
    )
    .await;

    let transitions: Vec<(Value, Value)> = answer
        .iter()
        .map(|r| (r["source"].clone(), r["target"].clone()))
        .collect();
    assert_eq!(
        transitions,
        [
            (json!("home"), json!("search")),
            (json!("search"), json!("game"))
        ]
    );
}
