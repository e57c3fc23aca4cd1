//! The audit log: template runs with the reason header, admin changes, authentication failures.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{cli_env, run_cli, stderr, TestApp};

/// The audit records matching `query` (`/v1/admin/audit?…`) once `done` holds for them (records
/// are written asynchronously), within 10 s.
async fn records_when(
    app: &TestApp,
    admin: &str,
    query: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let body = app
            .get_json(&format!("/v1/admin/audit?{query}"), admin)
            .await;
        let records = body["records"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("{body}"));
        if done(&records) {
            return records;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{query}: {records:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn runs_admin_changes_and_auth_failures_are_audited_with_who_where_and_why() {
    let app = TestApp::spawn().await;
    let admin = app.create_key("admin").await;
    let analyst = app.create_key("analyst").await;

    let run = app
        .client
        .get(app.url("/v1/queries/dau?from=2026-01-01&to=2026-01-02"))
        .bearer_auth(&analyst)
        .header("X-Audit-Reason", "monthly board report")
        .header("User-Agent", "report-bot/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), 200);
    // The bytes as sent: re-serializing parsed floats need not give the same text.
    let run_bytes = run.bytes().await.unwrap();
    let run_len = run_bytes.len();
    let run_body: Value = serde_json::from_slice(&run_bytes).unwrap();
    let denied = app
        .client
        .get(app.url("/v1/queries/dau?from=x"))
        .bearer_auth("chg_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let created = app
        .client
        .post(app.url("/v1/admin/keys"))
        .bearer_auth(&admin)
        .header("X-Audit-Reason", "new partner")
        .json(&serde_json::json!({"name": "partner-x", "role": "developer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    // Written asynchronously: wait until all three are there.
    let records = records_when(&app, &admin, "limit=50", |records| {
        let actions: Vec<&str> = records
            .iter()
            .filter_map(|r| r["action"].as_str())
            .collect();
        ["template.run", "auth.failure", "admin.key.create"]
            .iter()
            .all(|a| actions.contains(a))
    })
    .await;

    let run = records
        .iter()
        .find(|r| r["action"] == "template.run")
        .unwrap();
    assert_eq!(run["resource"], "dau");
    assert_eq!(run["role"], "analyst");
    assert_eq!(run["reason"], "monthly board report");
    assert_eq!(run["user_agent"], "report-bot/1.0");
    assert_eq!(run["ip"], "127.0.0.1");
    assert_eq!(run["status"], 200);
    assert_eq!(run["params"]["from"], "2026-01-01", "{run}");
    assert!(!run["request_id"].as_str().unwrap().is_empty());
    assert_eq!(run["rows"], run_body["rows"], "rows returned are recorded");
    assert_eq!(
        run["bytes"].as_u64(),
        Some(run_len as u64),
        "bytes sent are recorded"
    );
    let failure = records
        .iter()
        .find(|r| r["action"] == "auth.failure")
        .unwrap();
    assert_eq!(
        (failure["outcome"].as_str(), failure["status"].as_i64()),
        (Some("invalid_api_key"), Some(401))
    );
    let change = records
        .iter()
        .find(|r| r["action"] == "admin.key.create")
        .unwrap();
    assert_eq!(
        (change["resource"].as_str(), change["reason"].as_str()),
        (Some("partner-x"), Some("new partner"))
    );
    assert_eq!(
        change["ip"], "127.0.0.1",
        "admin changes say where they came from"
    );

    let csv = app
        .client
        .get(app.url("/v1/admin/audit?action=template.run&format=csv"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    assert!(text.starts_with("at,request_id,principal"));
    assert!(text.contains("\"monthly board report\""));
    assert!(!text.contains("admin.key.create"), "filtered by action");
    let forbidden = app
        .client
        .get(app.url("/v1/admin/audit"))
        .bearer_auth(&analyst)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
}

#[tokio::test]
async fn body_params_streamed_rows_denied_admin_calls_and_cli_changes_are_audited_and_filterable() {
    let app = TestApp::spawn().await;
    let admin = app.create_key("admin").await;
    let analyst = app.create_key("analyst").await;
    crate::helpers::load_reference_events(&app).await;
    let before = chrono::Utc::now();
    let from = (before - chrono::Duration::days(30))
        .format("%Y-%m-%d")
        .to_string();
    let to = (before + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();

    let posted = app
        .client
        .post(app.url("/v1/queries/event_trends"))
        .bearer_auth(&analyst)
        .json(&serde_json::json!({"events": ["purchase", "game_view"], "from": from, "to": to, "format": "csv"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let csv = posted.text().await.unwrap();
    let csv_rows = csv.lines().count() as i64 - 1;
    assert!(csv_rows > 0, "{csv}");
    let denied = app
        .client
        .get(app.url("/v1/admin/keys"))
        .bearer_auth(&analyst)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let cli = run_cli(
        &[
            "keys", "create", "--name", "cli-made", "--role", "support", "--reason", "ticket 7",
        ],
        &cli_env(app.settings()),
    );
    assert!(cli.status.success(), "{}", stderr(&cli));

    let runs = records_when(&app, &admin, "action=template.run", |r| !r.is_empty()).await;
    let run = &runs[0];
    assert_eq!(
        run["params"]["from"],
        from.as_str(),
        "body params are recorded: {run}"
    );
    assert_eq!(
        run["rows"].as_i64(),
        Some(csv_rows),
        "streamed rows are counted: {run}"
    );
    let refused = records_when(&app, &admin, "action=admin.key.list", |r| !r.is_empty()).await;
    assert_eq!(
        (refused[0]["role"].as_str(), refused[0]["status"].as_i64()),
        (Some("analyst"), Some(403))
    );
    let made = records_when(&app, &admin, "action=admin.key.create", |r| !r.is_empty()).await;
    assert_eq!(made[0]["resource"], "cli-made");
    assert_eq!(made[0]["reason"], "ticket 7");
    assert!(made[0]["principal"].as_str().unwrap().starts_with("cli:"));

    // Filters: principal, and a time window.
    let analyst_name = run["principal"].as_str().unwrap().to_string();
    let by_principal = records_when(&app, &admin, &format!("principal={analyst_name}"), |r| {
        r.len() >= 2
    })
    .await;
    assert!(by_principal
        .iter()
        .all(|r| r["principal"] == analyst_name.as_str()));
    let since =
        (before - chrono::Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let later = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let window = records_when(&app, &admin, &format!("since={since}"), |r| !r.is_empty()).await;
    assert!(window.iter().any(|r| r["action"] == "template.run"));
    let none = records_when(&app, &admin, &format!("since={later}"), |_| true).await;
    assert!(none.is_empty(), "{none:?}");
    let until = records_when(&app, &admin, &format!("until={since}"), |_| true).await;
    assert!(
        until.iter().all(|r| r["action"] != "template.run"),
        "{until:?}"
    );

    // Append-only: the database refuses changes to recorded rows.
    let pool = app.postgres().await;
    let update = sqlx::query("UPDATE audit_log SET reason = 'edited'")
        .execute(&pool)
        .await;
    let delete = sqlx::query("DELETE FROM audit_log").execute(&pool).await;
    assert!(update.is_err() && delete.is_err(), "{update:?} {delete:?}");
}
