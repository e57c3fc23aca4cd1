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
