use chgate::migrate::{self, ClickHouseMigrator, Migration};

use crate::helpers::{cli_env, run_cli, stderr, TestDatabases};

async fn ledger_rows(databases: &TestDatabases) -> u64 {
    clickhouse::Client::default()
        .with_url(&databases.settings.clickhouse.url)
        .query(&format!(
            "SELECT count() FROM `{}`.schema_migrations",
            databases.settings.clickhouse.database
        ))
        .fetch_one()
        .await
        .unwrap()
}

#[tokio::test]
async fn applying_migrations_twice_is_a_no_op() {
    let databases = TestDatabases::unmigrated();

    let first = migrate::run(&databases.settings).await.unwrap();
    let rows_after_first = ledger_rows(&databases).await;
    let second = migrate::run(&databases.settings).await.unwrap();

    assert_eq!(
        first.clickhouse_applied.len(),
        migrate::clickhouse::embedded().unwrap().len()
    );
    assert!(!first.postgres_applied.is_empty());
    assert!(second.clickhouse_applied.is_empty());
    assert!(second.postgres_applied.is_empty());
    assert_eq!(ledger_rows(&databases).await, rows_after_first);
    assert!(migrate::pending(&databases.settings)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_migration_edited_after_it_was_applied_is_refused_naming_the_file() {
    let databases = TestDatabases::migrated().await;
    let mut edited = migrate::clickhouse::embedded().unwrap();
    let first = edited[0].name.clone();
    edited[0] = Migration::new(&first, &format!("{}\n-- edited", edited[0].sql)).unwrap();

    let result = ClickHouseMigrator::with_migrations(&databases.settings.clickhouse, edited)
        .run()
        .await;

    let message = format!("{:#}", result.unwrap_err());
    assert!(
        message.contains(&format!("migrations/clickhouse/{first}")),
        "{message}"
    );
    assert!(message.contains("edited"), "{message}");
}

#[tokio::test]
async fn a_new_migration_is_applied_after_the_existing_ones() {
    let databases = TestDatabases::migrated().await;
    let mut migrations = migrate::clickhouse::embedded().unwrap();
    let next = migrations.last().unwrap().version + 1;
    migrations.push(
        Migration::new(
            &format!("{next:04}_extra.sql"),
            "CREATE TABLE IF NOT EXISTS ${database}.extra (x UInt8) ENGINE = Memory;",
        )
        .unwrap(),
    );
    let migrator = ClickHouseMigrator::with_migrations(&databases.settings.clickhouse, migrations);

    assert_eq!(
        migrator.pending().await.unwrap(),
        vec![format!("{next:04}_extra.sql")]
    );
    assert_eq!(
        migrator.run().await.unwrap(),
        vec![format!("{next:04}_extra.sql")]
    );
    assert!(migrator.pending().await.unwrap().is_empty());
}

#[tokio::test]
async fn serve_refuses_to_start_with_pending_migrations() {
    let databases = TestDatabases::unmigrated();
    let mut env = cli_env(&databases.settings);
    env.push(("CHGATE__SERVER__LISTEN", "127.0.0.1:0".to_string()));

    let output = run_cli(&["serve"], &env);

    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("pending migrations"), "{message}");
    assert!(message.contains("0001_events.sql"), "{message}");
    assert!(message.contains("chgate migrate"), "{message}");
}

#[tokio::test]
async fn migrate_status_lists_pending_migrations_then_reports_up_to_date() {
    let databases = TestDatabases::unmigrated();
    let env = cli_env(&databases.settings);

    let before = run_cli(&["migrate", "--status"], &env);
    let applied = run_cli(&["migrate"], &env);
    let after = run_cli(&["migrate", "--status"], &env);

    assert!(!before.status.success());
    assert!(String::from_utf8_lossy(&before.stdout).contains("pending clickhouse 0001_events.sql"));
    assert!(applied.status.success(), "{}", stderr(&applied));
    assert!(after.status.success(), "{}", stderr(&after));
}

/// Applies the Postgres migrations numbered below `version` only (as a gateway of that release did).
async fn migrate_postgres_before(databases: &TestDatabases, version: u32) -> sqlx::PgPool {
    use sqlx::migrate::MigrateDatabase as _;
    let url = databases.settings.postgres.url.expose();
    if !sqlx::Postgres::database_exists(url).await.unwrap() {
        sqlx::Postgres::create_database(url).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name[..4].parse::<u32>().unwrap() < version {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::migrate::Migrator::new(dir.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    pool
}

#[tokio::test]
async fn alerts_reports_and_segments_stored_before_the_definitions_table_keep_their_specs_state_and_history(
) {
    use serde_json::json;
    let databases = TestDatabases::unmigrated();
    let pool = migrate_postgres_before(&databases, 9).await;
    let (alert, report, segment) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    let alert_spec = json!({"name": "big orders", "template": "revenue", "params": {},
        "condition": {"column": "revenue", "op": ">", "threshold": 100.0},
        "schedule": "0 * * * *", "channels": [{"type": "telegram", "chat_id": "42"}]});
    sqlx::query(
        "INSERT INTO alerts (id, name, spec, owner_name, owner_role, state, last_value)
         VALUES ($1, 'big orders', $2, 'ops', 'admin', 'firing', 250)",
    )
    .bind(alert)
    .bind(&alert_spec)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO alert_events (alert_id, kind, value, message) VALUES ($1, 'firing', 250, 'fired')")
        .bind(alert)
        .execute(&pool)
        .await
        .unwrap();
    let report_spec = json!({"name": "weekly revenue", "template": "revenue", "format": "csv"});
    sqlx::query(
        "INSERT INTO reports (id, spec, owner_name, owner_role) VALUES ($1, $2, 'ops', 'admin')",
    )
    .bind(report)
    .bind(&report_spec)
    .execute(&pool)
    .await
    .unwrap();
    let criteria = json!({"did": {"event": "purchase", "at_least": 1, "within_days": 30}});
    sqlx::query(
        "INSERT INTO segments (id, name, description, criteria, kind, schedule, owner_name, owner_role, computed_at, size)
         VALUES ($1, 'buyers', 'bought once', $2, 'dynamic', '0 3 * * *', 'ops', 'admin', now(), 17)",
    )
    .bind(segment)
    .bind(&criteria)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO segment_sizes (segment_id, computed_at, size, duration_ms) VALUES ($1, now(), 17, 5)")
        .bind(segment)
        .execute(&pool)
        .await
        .unwrap();

    migrate::run(&databases.settings).await.unwrap();
    let app = crate::helpers::TestApp::start(databases).await;
    let key = app.create_key("admin").await;

    let shown = app.get_json(&format!("/v1/alerts/{alert}"), &key).await;
    assert_eq!(shown["name"], "big orders");
    for field in ["template", "params", "schedule", "channels"] {
        assert_eq!(shown["spec"][field], alert_spec[field], "{field}");
    }
    assert_eq!(shown["spec"]["condition"]["threshold"], 100.0);
    assert_eq!(
        (shown["state"].as_str(), shown["last_value"].as_f64()),
        (Some("firing"), Some(250.0))
    );
    let events = app
        .get_json(&format!("/v1/alerts/{alert}/events"), &key)
        .await;
    assert_eq!(events["events"].as_array().unwrap().len(), 1, "{events}");

    let shown = app.get_json(&format!("/v1/reports/{report}"), &key).await;
    assert_eq!(
        (shown["name"].as_str(), shown["template"].as_str()),
        (Some("weekly revenue"), Some("revenue"))
    );

    let shown = app.get_json(&format!("/v1/segments/{segment}"), &key).await;
    assert_eq!(shown["name"], "buyers");
    assert_eq!(shown["description"], "bought once");
    assert_eq!(shown["criteria"], criteria);
    assert_eq!(
        (shown["kind"].as_str(), shown["schedule"].as_str()),
        (Some("dynamic"), Some("0 3 * * *"))
    );
    assert_eq!(shown["size"], 17);
    assert_eq!(shown["sizes"].as_array().unwrap().len(), 1);

    for kind in ["alerts", "reports", "segments"] {
        let listed = app.get_json(&format!("/v1/{kind}"), &key).await;
        assert_eq!(listed[kind].as_array().unwrap().len(), 1, "{listed}");
    }
    let deleted = app
        .client
        .delete(app.url(&format!("/v1/alerts/{alert}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM alert_events WHERE alert_id = $1")
        .bind(alert)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "an alert's history goes with it");
    pool.close().await;
}
