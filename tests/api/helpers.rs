//! Test harness: each test gets its own migrated ClickHouse database and Postgres database, and a
//! real `Application` on port 0. Both databases are dropped when the `TestApp` is dropped, even when
//! the test panics.

use std::net::SocketAddr;
use std::process::Output;

use chgate::config::{Secret, Settings};
use chgate::Application;
use tokio_util::sync::CancellationToken;

/// Prefix of every database a test creates; `scripts/test` removes leftovers with it.
pub const TEST_DB_PREFIX: &str = "chgate_t_";

pub fn clickhouse_url() -> String {
    std::env::var("CHGATE__CLICKHOUSE__URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

pub fn postgres_admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `base` with its database (path) replaced by `database`.
pub fn with_database(base: &str, database: &str) -> String {
    let mut url = url::Url::parse(base).expect("DATABASE_URL is a URL");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

/// Settings pointing at fresh, uniquely named databases (not yet created).
pub fn test_settings() -> Settings {
    let name = format!(
        "{TEST_DB_PREFIX}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    let mut settings = Settings::default();
    settings.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.bi.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.server.shutdown_timeout_secs = 5;
    settings.clickhouse.url = clickhouse_url();
    settings.clickhouse.database = name.clone();
    settings.postgres.url = Secret::new(with_database(&postgres_admin_url(), &name));
    settings.postgres.max_connections = 4;
    settings.redis.url = Some(Secret::new(redis_url()));
    settings.telemetry.level = "warn".into();
    settings.ingest.wal_dir = std::env::temp_dir().join(format!("chgate-test-wal-{name}"));
    settings.ingest.flush_interval_ms = 50;
    settings.geoip.path = geoip_file();
    settings.catalog.dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
    settings.catalog.reload_poll_ms = 0;
    settings.access.policy =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/access.toml");
    settings.access.reload_poll_ms = 0;
    settings.access.jwt.hs256_secret = Secret::new(JWT_SECRET);
    settings
}

/// The HS256 secret test gateways accept JWTs signed with.
pub const JWT_SECRET: &str = "test-secret-with-enough-entropy-0123456789";

/// The GeoIP database `scripts/test` fetched, if any.
pub fn geoip_file() -> Option<std::path::PathBuf> {
    std::env::var_os("CHGATE_TEST_GEOIP")
        .map(std::path::PathBuf::from)
        .filter(|p| p.exists())
}

/// Owns a test's databases; drops them when dropped (unless it is a `borrowed` view).
pub struct TestDatabases {
    pub settings: Settings,
    owned: bool,
}

impl TestDatabases {
    /// Creates and migrates fresh databases.
    pub async fn migrated() -> Self {
        let databases = Self {
            settings: test_settings(),
            owned: true,
        };
        chgate::migrate::run(&databases.settings)
            .await
            .expect("migrations apply to a fresh database");
        databases
    }

    /// Fresh names, nothing created yet (dropping still cleans whatever the test created).
    pub fn unmigrated() -> Self {
        Self {
            settings: test_settings(),
            owned: true,
        }
    }

    /// The same databases with other settings, not dropped by this value (a second gateway).
    pub fn borrowed(&self, adjust: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = self.settings.clone();
        adjust(&mut settings);
        Self {
            settings,
            owned: false,
        }
    }
}

impl Drop for TestDatabases {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.settings.ingest.wal_dir);
        let clickhouse_database = self.settings.clickhouse.database.clone();
        // The server's URL, not the settings' (a test may point those at a closed port).
        let clickhouse_url = clickhouse_url();
        // A separate thread with its own runtime: Drop may run inside (or outside) a runtime.
        let joined = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let client = clickhouse::Client::default().with_url(&clickhouse_url);
                if let Err(err) = client
                    .query_raw(&format!(
                        "DROP DATABASE IF EXISTS `{clickhouse_database}` SYNC"
                    ))
                    .execute()
                    .await
                {
                    eprintln!("cannot drop test database {clickhouse_database}: {err}");
                }
                if let Ok(pool) = sqlx::PgPool::connect(&postgres_admin_url()).await {
                    let _ = sqlx::query(&format!(
                        "DROP DATABASE IF EXISTS \"{clickhouse_database}\" WITH (FORCE)"
                    ))
                    .execute(&pool)
                    .await;
                }
            });
        })
        .join();
        let _ = joined;
    }
}

/// A running gateway.
pub struct TestApp {
    pub address: String,
    /// Base URL of the BI endpoint.
    pub bi_address: String,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Last, so the server is asked to stop before its databases disappear.
    pub databases: TestDatabases,
}

impl TestApp {
    /// Starts the gateway over freshly migrated databases.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts the gateway over freshly migrated databases, with settings adjusted by `adjust`.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let mut databases = TestDatabases::migrated().await;
        adjust(&mut databases.settings);
        Self::start(databases).await
    }

    pub async fn start(databases: TestDatabases) -> Self {
        chgate::telemetry::init(&databases.settings.telemetry);
        let app = Application::build(databases.settings.clone())
            .await
            .expect("application builds");
        let address = format!("http://{}", app.local_addr().expect("bound"));
        let bi_address = app
            .bi_addr()
            .map(|a| format!("http://{a}"))
            .unwrap_or_default();
        let shutdown = app.shutdown_token();
        let server = tokio::spawn(app.run_until_stopped());
        Self {
            address,
            bi_address,
            client: reqwest::Client::new(),
            shutdown,
            server: Some(server),
            databases,
        }
    }

    /// Cancels the server as SIGTERM does; true if it returned `Ok` within `within`.
    pub async fn stop(&mut self, within: std::time::Duration) -> bool {
        self.shutdown.cancel();
        let Some(server) = self.server.take() else {
            return false;
        };
        matches!(tokio::time::timeout(within, server).await, Ok(Ok(Ok(()))))
    }

    pub fn settings(&self) -> &Settings {
        &self.databases.settings
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request is sent")
    }

    /// `GET path` with `key`, the answer as JSON.
    pub async fn get_json(&self, path: &str, key: &str) -> serde_json::Value {
        self.client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request is sent")
            .json()
            .await
            .expect("a JSON answer")
    }

    /// Creates an API key through the library, as `chgate keys create` does.
    pub async fn create_key(&self, role: &str) -> String {
        self.create_key_with(role, &[]).await
    }

    /// Creates an API key with attributes (claims for row filters).
    pub async fn create_key_with(&self, role: &str, attributes: &[(&str, &str)]) -> String {
        let store = chgate::access::keys::KeyStore::new(
            sqlx::PgPool::connect(self.settings().postgres.url.expose())
                .await
                .expect("postgres connects"),
        );
        store
            .create(
                &format!("test-{}", uuid::Uuid::new_v4()),
                role,
                attributes
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
            .await
            .expect("key is created")
            .secret
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Runs the `chgate` binary with `args` and extra environment variables.
pub fn run_cli(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_chgate"));
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    command.env("CHGATE__TELEMETRY__LEVEL", "warn");
    command.output().expect("chgate runs")
}

/// Environment variables that point the CLI at `settings`' databases.
pub fn cli_env(settings: &Settings) -> Vec<(&'static str, String)> {
    vec![
        ("CHGATE__CLICKHOUSE__URL", settings.clickhouse.url.clone()),
        (
            "CHGATE__CLICKHOUSE__DATABASE",
            settings.clickhouse.database.clone(),
        ),
        ("DATABASE_URL", settings.postgres.url.expose().to_string()),
        ("REDIS_URL", redis_url()),
    ]
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

impl TestApp {
    /// A ClickHouse client on this test's database.
    pub fn clickhouse(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(clickhouse_url())
            .with_database(&self.settings().clickhouse.database)
    }

    /// A pool on this test's Postgres database.
    pub async fn postgres(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(self.settings().postgres.url.expose())
            .await
            .expect("postgres connects")
    }

    /// Posts JSON to `path` with `key`.
    pub async fn post_json(
        &self,
        path: &str,
        key: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request is sent")
    }
}

/// The value of a counter or gauge on `/metrics`, summed over its labels (0 when absent).
pub async fn metric_value(app: &TestApp, name: &str) -> f64 {
    let text = app
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics are text");
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A few days of page views, carts and purchases on two platforms, loaded into `events` (the
/// rollups fill from it).
pub async fn load_reference_events(app: &TestApp) {
    let now = chrono::Utc::now();
    let mut events = Vec::new();
    for i in 0..120i64 {
        let event = ["game_view", "add_to_cart", "purchase"][(i % 3) as usize];
        let mut properties = serde_json::json!({"item_id": format!("game-{}", i % 4)});
        if event == "purchase" {
            properties["amount"] = serde_json::json!(5 + i % 20);
            properties["currency"] = serde_json::json!("USD");
        }
        events.push(serde_json::json!({
            "event": event,
            "user_id": format!("u-{}", i % 20),
            "platform": if i % 2 == 0 { "web" } else { "ios" },
            "timestamp": (now - chrono::Duration::hours(i)).to_rfc3339(),
            "properties": properties,
        }));
    }
    chgate::cli::check::live::load_events_into(&app.clickhouse(), app.settings(), &events)
        .await
        .expect("reference events load");
}

/// An authenticated call with an optional JSON body: status, the answer as JSON (null when it is
/// not JSON) and as text.
pub async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value, String) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request is sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("the body is text");
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, json, text)
}

/// Serves `router` on a free local port (a stand-in for a webhook, say): its base URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

/// A gateway with `events` loaded into `events` (one insert; the rollups fill from it).
pub async fn app_with(events: &[serde_json::Value]) -> TestApp {
    let app = TestApp::spawn().await;
    chgate::cli::check::live::load_events_into(&app.clickhouse(), app.settings(), events)
        .await
        .expect("events load");
    app
}

/// `path` called by an analyst with `params` as its JSON body: the status and the body.
pub async fn ask(app: &TestApp, path: &str, params: serde_json::Value) -> (u16, serde_json::Value) {
    let key = app.create_key("analyst").await;
    let (status, body, _) = call(app, reqwest::Method::POST, path, &key, Some(params)).await;
    (status, body)
}

/// The rows of a successful call.
pub async fn rows(app: &TestApp, path: &str, params: serde_json::Value) -> Vec<serde_json::Value> {
    let (status, body) = ask(app, path, params).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().cloned().unwrap_or_default()
}

/// One column of the rows.
pub fn column(rows: &[serde_json::Value], name: &str) -> Vec<serde_json::Value> {
    rows.iter().map(|r| r[name].clone()).collect()
}
