//! `funnel` v2 and `funnel_time_to_convert`: one rule of their documented semantics per test, each
//! on a handful of events of 2026-05-04 (UTC).

use serde_json::{json, Value};

use crate::helpers::{app_with, ask, column, rows, TestApp};

/// An event of `user` at `at` (hh:mm:ss[.mmm]) on 2026-05-04; `extra` is merged into it.
fn ev(user: &str, event: &str, at: &str, extra: Value) -> Value {
    let mut e = json!({"event": event, "user_id": user, "timestamp": format!("2026-05-04T{at}Z")});
    if let (Some(e), Value::Object(extra)) = (e.as_object_mut(), extra) {
        e.extend(extra);
    }
    e
}

/// The day's range with `params` on top.
fn day(params: Value) -> Value {
    let mut all = json!({"from": "2026-05-04 00:00:00", "to": "2026-05-05 00:00:00"});
    if let (Some(all), Value::Object(params)) = (all.as_object_mut(), params) {
        all.extend(params);
    }
    all
}

/// The funnel's rows over the day.
async fn funnel(app: &TestApp, params: Value) -> Vec<Value> {
    rows(app, "/v1/queries/funnel", day(params)).await
}

/// The funnel's rows over the day with attempt=best, then with attempt=first.
async fn best_and_first(app: &TestApp, params: Value) -> (Vec<Value>, Vec<Value>) {
    let mut first = day(params);
    let best = rows(app, "/v1/queries/funnel", first.clone()).await;
    first["attempt"] = json!("first");
    (best, rows(app, "/v1/queries/funnel", first).await)
}

#[tokio::test]
async fn best_counts_the_attempt_that_goes_furthest_where_first_counts_only_the_first() {
    // A look in the morning without buying; a purchase in one go in the afternoon.
    let app = app_with(&[
        ev("u1", "view", "09:00:00", json!({})),
        ev("u1", "view", "15:00:00", json!({})),
        ev("u1", "cart", "15:01:00", json!({})),
        ev("u1", "buy", "15:03:00", json!({})),
    ])
    .await;
    let steps = json!({"steps": ["view", "cart", "buy"], "window_seconds": 3600});

    let (best, first) = best_and_first(&app, steps.clone()).await;
    let v1 = rows(&app, "/v1/queries/funnel/v1", day(steps)).await;

    assert_eq!(column(&best, "users"), [json!(1), json!(1), json!(1)]);
    assert_eq!(
        column(&best, "median_seconds_from_previous"),
        [Value::Null, json!(60), json!(120)]
    );
    assert_eq!(column(&first, "users"), [json!(1), json!(0), json!(0)]);
    assert_eq!(column(&v1, "users"), column(&first, "users"));
}

#[tokio::test]
async fn of_the_attempts_reaching_the_furthest_step_the_earliest_gives_breakdown_and_times() {
    let app = app_with(&[
        ev("u1", "view", "10:00:00", json!({"platform": "web"})),
        ev("u1", "cart", "10:05:00", json!({"platform": "web"})),
        ev("u1", "view", "12:00:00", json!({"platform": "ios"})),
        ev("u1", "cart", "12:01:00", json!({"platform": "ios"})),
        // A third attempt that stops at step 1 does not compete.
        ev("u1", "view", "08:00:00", json!({"platform": "android"})),
    ])
    .await;

    let answer = funnel(
        &app,
        json!({"steps": ["view", "cart"], "window_seconds": 600, "breakdown": "platform"}),
    )
    .await;

    assert_eq!(column(&answer, "breakdown"), [json!("web"), json!("web")]);
    assert_eq!(column(&answer, "users"), [json!(1), json!(1)]);
    assert_eq!(answer[1]["median_seconds_from_previous"], json!(300));
}

#[tokio::test]
async fn an_attempt_opened_inside_an_earlier_window_is_timed_from_its_own_step_one() {
    // Overlapping attempts share the cart; only the later one is within an hour of it.
    let app = app_with(&[
        ev("u1", "view", "10:00:00", json!({})),
        ev("u1", "view", "10:50:00", json!({})),
        ev("u1", "cart", "11:20:00", json!({})),
    ])
    .await;
    let params = json!({"steps": ["view", "cart"], "window_seconds": 3600});

    let (best, first) = best_and_first(&app, params).await;

    assert_eq!(column(&best, "users"), [json!(1), json!(1)]);
    assert_eq!(best[1]["median_seconds_from_previous"], json!(1800));
    assert_eq!(column(&first, "users"), [json!(1), json!(0)]);
}

#[tokio::test]
async fn a_step_counts_up_to_the_window_end_inclusive_and_never_after_to() {
    let app = app_with(&[
        ev("u1", "view", "10:00:00", json!({})),
        ev("u1", "cart", "11:00:00", json!({})),
        ev("u1", "buy", "11:00:00.001", json!({})),
        // Within the window, but the window crosses `to`: the cart is not read.
        ev("u2", "view", "23:30:00", json!({})),
        json!({"event": "cart", "user_id": "u2", "timestamp": "2026-05-05T00:10:00Z"}),
    ])
    .await;

    let answer = funnel(
        &app,
        json!({"steps": ["view", "cart", "buy"], "window_seconds": 3600}),
    )
    .await;

    assert_eq!(column(&answer, "users"), [json!(2), json!(1), json!(0)]);
}

#[tokio::test]
async fn same_timestamp_events_go_in_step_order_and_no_event_counts_for_two_steps() {
    let app = app_with(&[
        // Sent cart first; the same millisecond is taken in step order.
        ev("u1", "cart", "10:00:00", json!({})),
        ev("u1", "view", "10:00:00", json!({})),
        // A repeated step needs an event of its own.
        ev("u2", "view", "11:00:00", json!({})),
        ev("u2", "cart", "11:01:00", json!({})),
        ev("u3", "view", "12:00:00", json!({})),
        ev("u3", "cart", "12:01:00", json!({})),
        ev("u3", "view", "12:02:00", json!({})),
    ])
    .await;

    let two = funnel(&app, json!({"steps": ["view", "cart"]})).await;
    let repeated = funnel(&app, json!({"steps": ["view", "cart", "view"]})).await;

    assert_eq!(column(&two, "users"), [json!(3), json!(3)]);
    assert_eq!(two[1]["median_seconds_from_previous"], json!(60));
    assert_eq!(column(&repeated, "users"), [json!(3), json!(3), json!(1)]);
}

#[tokio::test]
async fn events_are_taken_in_time_order_whatever_order_they_were_sent_in() {
    // Sent newest first; and a cart before any view is no step 2.
    let app = app_with(&[
        ev("u1", "buy", "10:02:00", json!({})),
        ev("u1", "cart", "10:01:00", json!({})),
        ev("u1", "view", "10:00:00", json!({})),
        ev("u2", "view", "11:00:00", json!({})),
        ev("u2", "cart", "10:59:00", json!({})),
    ])
    .await;

    let answer = funnel(&app, json!({"steps": ["view", "cart", "buy"]})).await;

    assert_eq!(column(&answer, "users"), [json!(2), json!(1), json!(1)]);
}

#[tokio::test]
async fn strict_order_takes_a_later_attempt_with_no_event_in_between() {
    let app = app_with(&[
        ev("u1", "view", "10:00:00", json!({})),
        ev("u1", "search", "10:00:30", json!({})),
        ev("u1", "cart", "10:01:00", json!({})),
        ev("u1", "view", "10:05:00", json!({})),
        ev("u1", "cart", "10:05:10", json!({})),
    ])
    .await;
    let params = json!({"steps": ["view", "cart"], "order": "strict"});

    let (best, first) = best_and_first(&app, params).await;

    assert_eq!(column(&best, "users"), [json!(1), json!(1)]);
    assert_eq!(best[1]["median_seconds_from_previous"], json!(10));
    assert_eq!(column(&first, "users"), [json!(1), json!(0)]);
}

#[tokio::test]
async fn step_filters_narrow_steps_by_event_columns_and_properties() {
    let paid = |user: &str, at: &str, amount: f64| {
        ev(
            user,
            "purchase",
            at,
            json!({"properties": {"amount": amount, "currency": "USD"}}),
        )
    };
    let view = |user: &str, at: &str, properties: Value| {
        ev(user, "view", at, json!({"properties": properties}))
    };
    let app = app_with(&[
        view("u1", "10:00:00", json!({"source": "email"})),
        paid("u1", "10:01:00", 0.0),
        view(
            "u2",
            "10:00:00",
            json!({"source": "email", "campaign": "spring sale"}),
        ),
        paid("u2", "10:01:00", 5.0),
        view("u3", "10:00:00", json!({"source": "ads"})),
        paid("u3", "10:01:00", 5.0),
        // No `source` property at all.
        view("u4", "10:00:00", json!({})),
    ])
    .await;
    let filters = |steps: Value, properties: Value, ops: Value, values: Value| {
        json!({"steps": ["view", "purchase"], "filter_steps": steps,
            "filter_properties": properties, "filter_ops": ops, "filter_values": values})
    };

    let paid_only = funnel(
        &app,
        filters(json!([2]), json!(["revenue"]), json!([">"]), json!([0])),
    )
    .await;
    let from_email = funnel(
        &app,
        filters(
            json!([1, 2]),
            json!(["source", "currency"]),
            json!(["=", "="]),
            json!(["email", "USD"]),
        ),
    )
    .await;
    let not_email = funnel(
        &app,
        filters(
            json!([1]),
            json!(["source"]),
            json!(["!="]),
            json!(["email"]),
        ),
    )
    .await;
    let sale = funnel(
        &app,
        filters(
            json!([1]),
            json!(["campaign"]),
            json!(["contains"]),
            json!(["sale"]),
        ),
    )
    .await;
    let numeric_on_text = funnel(
        &app,
        filters(json!([1]), json!(["source"]), json!([">="]), json!(["0"])),
    )
    .await;

    assert_eq!(column(&paid_only, "users"), [json!(4), json!(2)]);
    assert_eq!(column(&from_email, "users"), [json!(2), json!(2)]);
    assert_eq!(column(&not_email, "users"), [json!(2), json!(1)]);
    assert_eq!(column(&sale, "users"), [json!(1), json!(1)]);
    assert!(numeric_on_text.is_empty(), "{numeric_on_text:?}");
}

#[tokio::test]
async fn an_exclusion_between_two_steps_drops_that_attempt_and_leaves_the_others() {
    let app = app_with(&[
        // Dropped attempt, then a clean one later.
        ev("u1", "view", "10:00:00", json!({})),
        ev(
            "u1",
            "refund",
            "10:10:00",
            json!({"properties": {"amount": 5}}),
        ),
        ev("u1", "cart", "10:20:00", json!({})),
        ev("u1", "view", "12:00:00", json!({})),
        ev("u1", "cart", "12:10:00", json!({})),
        // At the same time as the step after it: not between.
        ev("u2", "view", "10:00:00", json!({})),
        ev(
            "u2",
            "refund",
            "10:30:00",
            json!({"properties": {"amount": 5}}),
        ),
        ev("u2", "cart", "10:30:00", json!({})),
        // No step 2: dropped when within the window of the attempt...
        ev("u3", "view", "10:00:00", json!({})),
        ev(
            "u3",
            "refund",
            "10:50:00",
            json!({"properties": {"amount": 5}}),
        ),
        // ...kept when after it.
        ev("u4", "view", "10:00:00", json!({})),
        ev(
            "u4",
            "refund",
            "11:00:01",
            json!({"properties": {"amount": 5}}),
        ),
    ])
    .await;
    let params = json!({"steps": ["view", "cart"], "window_seconds": 3600,
        "exclude_events": ["refund"], "exclude_from_steps": [1], "exclude_to_steps": [2]});

    let (best, first) = best_and_first(&app, params).await;

    assert_eq!(column(&best, "users"), [json!(3), json!(2)]);
    assert_eq!(best[1]["median_seconds_from_previous"], json!(1200));
    assert_eq!(column(&first, "users"), [json!(2), json!(1)]);
}

#[tokio::test]
async fn filter_and_exclusion_lists_that_do_not_fit_get_400_naming_the_parameter() {
    let app = TestApp::spawn().await;
    let steps = json!({"steps": ["view", "cart"]});
    let with = |extra: Value| {
        let mut params = day(steps.clone());
        if let (Some(params), Value::Object(extra)) = (params.as_object_mut(), extra) {
            params.extend(extra);
        }
        params
    };
    let cases = [
        (
            with(json!({"filter_steps": [1], "filter_properties": ["a"], "filter_ops": ["="]})),
            "filter_values: must have as many items as filter_steps",
        ),
        (
            with(
                json!({"filter_steps": [3], "filter_properties": ["a"], "filter_ops": ["="], "filter_values": ["x"]}),
            ),
            "filter_steps: each item is a step number",
        ),
        (
            with(
                json!({"filter_steps": [1], "filter_properties": ["a"], "filter_ops": ["~"], "filter_values": ["x"]}),
            ),
            "filter_ops: item 0: must be one of",
        ),
        (
            with(
                json!({"exclude_events": ["x"], "exclude_from_steps": [2], "exclude_to_steps": [2]}),
            ),
            "exclude_to_steps: each exclusion runs from a step to a later step",
        ),
        (
            with(json!({"exclude_events": ["x"]})),
            "exclude_from_steps: must have as many items as exclude_events",
        ),
        (
            with(json!({"from": "1990-01-01 00:00:00"})),
            "to: must be at most 30 years after from",
        ),
    ];

    for (params, rule) in cases {
        let (status, body) = ask(&app, "/v1/queries/funnel", params.clone()).await;
        assert_eq!(status, 400, "{params}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(rule), "{params}: {message}");
    }
    let (status, body) = ask(
        &app,
        "/v1/queries/funnel_time_to_convert",
        day(json!({"steps": ["view", "cart"], "from_step": 2})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn time_to_convert_lists_equal_bins_of_the_users_attempts() {
    let app = app_with(&[
        ev("u1", "view", "10:00:00", json!({})),
        ev("u1", "cart", "10:01:00", json!({})),
        ev("u2", "view", "10:00:00", json!({})),
        ev("u2", "cart", "10:02:00", json!({})),
        ev("u3", "view", "10:00:00", json!({})),
        ev("u3", "cart", "10:05:00", json!({})),
        // Its earlier attempt never converts; the best one takes 4 minutes.
        ev("u4", "view", "08:00:00", json!({})),
        ev("u4", "view", "11:00:00", json!({})),
        ev("u4", "cart", "11:04:00", json!({})),
        // Not converted: not in the histogram.
        ev("u5", "view", "10:00:00", json!({})),
    ])
    .await;

    let answer = rows(
        &app,
        "/v1/queries/funnel_time_to_convert",
        day(json!({"steps": ["view", "cart"], "window_seconds": 3600, "bins": 2})),
    )
    .await;

    assert_eq!(column(&answer, "bin"), [json!(1), json!(2)]);
    assert_eq!(column(&answer, "from_seconds"), [json!(60), json!(180)]);
    assert_eq!(column(&answer, "to_seconds"), [json!(180), json!(300)]);
    assert_eq!(column(&answer, "users"), [json!(2), json!(2)]);
    assert_eq!(column(&answer, "share"), [json!(0.5), json!(0.5)]);
}
