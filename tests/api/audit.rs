//! The audit log: template runs with the reason header, admin changes, authentication failures.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::TestApp;

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

    // Written asynchronously: poll until all three are there.
    let started = Instant::now();
    let records = loop {
        let body: Value = app
            .client
            .get(app.url("/v1/admin/audit?limit=50"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let records = body["records"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("{body}"));
        let actions: Vec<&str> = records
            .iter()
            .filter_map(|r| r["action"].as_str())
            .collect();
        if ["template.run", "auth.failure", "admin.key.create"]
            .iter()
            .all(|a| actions.contains(a))
        {
            break records;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{records:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

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
    assert!(run["params"].as_str().unwrap().contains("from=2026-01-01"));
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
