//! Settings: one TOML file, every key overridable by `CHGATE__SECTION__KEY` environment variables.
//!
//! Precedence, lowest first: built-in defaults, the TOML file, `DATABASE_URL` / `REDIS_URL`,
//! `CHGATE__…` variables. Unknown keys anywhere are an error, so a typo never goes unnoticed.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// File read when `--config` is not given and the file exists.
pub const DEFAULT_CONFIG_FILE: &str = "chgate.toml";

/// All settings of the gateway.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub clickhouse: ClickHouseSettings,
    pub postgres: PostgresSettings,
    pub redis: RedisSettings,
    pub telemetry: TelemetrySettings,
    pub ingest: IngestSettings,
    pub geoip: GeoIpSettings,
    pub privacy: PrivacySettings,
    pub catalog: CatalogSettings,
    pub access: AccessSettings,
    pub cache: CacheSettings,
    pub audit: AuditSettings,
    pub bi: BiSettings,
    pub scheduler: SchedulerSettings,
    pub alerts: AlertSettings,
    pub reports: ReportSettings,
    pub rollups: RollupSettings,
}

/// What the gateway's resident memory is bounded by, term by term (docs/security.md).
#[derive(Debug, Clone, Serialize)]
pub struct MemoryCeiling {
    /// Code, runtime, connection pools, the template catalog, policy, caches of parsed user agents.
    pub base: u64,
    /// The GeoIP database, read whole.
    pub geoip: u64,
    /// Request bodies, rows being prepared, buffered results: `server.max_buffered_bytes`.
    pub buffered: u64,
    /// Rows between acknowledgement and ClickHouse (`ingest.queue_bytes`), and a quarter again for
    /// their encodings on the way (WAL records, insert blocks).
    pub queue: u64,
    /// The in-process result cache: `cache.local_capacity_bytes`.
    pub cache: u64,
    /// Audit records waiting for Postgres (10,000 at most, each at most ~8 KiB).
    pub audit: u64,
    /// The sum, with a fifth more for the allocator's own overhead.
    pub total: u64,
}

impl Settings {
    /// The resident memory these settings allow the gateway, by what holds it.
    pub fn memory_ceiling(&self) -> MemoryCeiling {
        const MIB: u64 = 1024 * 1024;
        let geoip = self
            .geoip
            .path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        let base = 96 * MIB;
        let buffered = self.server.max_buffered_bytes as u64;
        let queue = self.ingest.queue_bytes + self.ingest.queue_bytes / 4;
        let cache = self.cache.local_capacity_bytes;
        let audit = 80 * MIB;
        let sum = base + geoip + buffered + queue + cache + audit;
        MemoryCeiling {
            base,
            geoip,
            buffered,
            queue,
            cache,
            audit,
            total: sum + sum / 5,
        }
    }
}

/// Report files.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSettings {
    /// Rows printed in a PDF's table (the chart uses all rows; csv and xlsx carry all of them).
    pub pdf_max_rows: usize,
    /// Largest file a run may produce.
    pub max_file_bytes: usize,
    /// Stored files are removed after this many days.
    pub retention_days: u32,
}

impl Default for ReportSettings {
    fn default() -> Self {
        Self {
            pdf_max_rows: 500,
            max_file_bytes: 100 * 1024 * 1024,
            retention_days: 30,
        }
    }
}

/// The job scheduler (alerts, reports, segment refreshes).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSettings {
    /// Whether this gateway runs scheduled jobs (any number of gateways may; each occurrence runs
    /// once).
    pub enabled: bool,
    /// How often due jobs are looked for.
    pub tick_ms: u64,
    /// Jobs this gateway runs at once.
    pub parallel: usize,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            tick_ms: 1000,
            parallel: 4,
        }
    }
}

/// The finalizer of the rollups' closed periods (src/rollups).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RollupSettings {
    /// How often this gateway finalizes the periods that closed or changed (0: never; then the
    /// templates merge the rollups' states for every period).
    pub finalize_secs: u64,
    /// Periods that started at most this many days ago are finalized.
    pub finalize_days: u32,
}

impl Default for RollupSettings {
    fn default() -> Self {
        Self {
            finalize_secs: 60,
            finalize_days: 400,
        }
    }
}

/// Alert notifications.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// Telegram bot token for `telegram` channels (prefer CHGATE__ALERTS__TELEGRAM_BOT_TOKEN).
    pub telegram_bot_token: Secret,
    /// Telegram Bot API base URL.
    pub telegram_api_base: String,
    /// Per attempt.
    pub delivery_timeout_ms: u64,
    pub delivery_attempts: u32,
    /// First back-off between attempts; doubles each time.
    pub retry_base_ms: u64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            telegram_bot_token: Secret::default(),
            telegram_api_base: "https://api.telegram.org".into(),
            delivery_timeout_ms: 5000,
            delivery_attempts: 3,
            retry_base_ms: 500,
        }
    }
}

/// The ClickHouse-HTTP-compatible endpoint for BI tools (Grafana, Superset).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BiSettings {
    pub enabled: bool,
    /// Address of its own listener.
    pub listen: SocketAddr,
    /// Largest SQL text (query parameter plus body), after decompression.
    pub max_query_bytes: usize,
    /// Largest response kept by the result cache (roles opt in with `bi_cache_ttl_secs`).
    pub max_cached_bytes: usize,
    /// How long a query waits for one of the caller's concurrent-query slots before it is
    /// refused: a dashboard sends all its panels' queries at once.
    pub queue_timeout_ms: u64,
}

impl Default for BiSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8124)),
            max_query_bytes: 1024 * 1024,
            max_cached_bytes: 4 * 1024 * 1024,
            queue_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address of the REST API listener.
    pub listen: SocketAddr,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub shutdown_timeout_secs: u64,
    /// Upper bound for a single request (queries set their own, lower, limits).
    pub request_timeout_secs: u64,
    /// Memory all request bodies read whole (events, BI SQL, template parameters, compressed and
    /// decompressed) and all buffered results (JSON template results, as read and as rendered) may
    /// take together; a request waits `buffered_wait_ms` for room, then → 503.
    pub max_buffered_bytes: usize,
    pub buffered_wait_ms: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_timeout_secs: 30,
            request_timeout_secs: 300,
            max_buffered_bytes: 128 * 1024 * 1024,
            buffered_wait_ms: 2000,
        }
    }
}

impl ServerSettings {
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// LZ4 over the network, none when ClickHouse runs on this host (the URL's host is a loopback
    /// address or `localhost`): compressing costs CPU on both ends and saves nothing there.
    Auto,
    None,
    Lz4,
}

impl Compression {
    /// The compression to use with the ClickHouse server at `url`.
    pub fn for_url(self, url: &str) -> Compression {
        match self {
            Self::Auto => {
                let local = url::Url::parse(url).ok().is_some_and(|u| match u.host() {
                    Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    None => false,
                });
                if local {
                    Self::None
                } else {
                    Self::Lz4
                }
            }
            other => other,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseSettings {
    /// HTTP interface of the ClickHouse server or cluster.
    pub url: String,
    /// Database holding the analytics tables; created by `chgate migrate`.
    pub database: String,
    pub user: String,
    pub password: Secret,
    /// Compression of the HTTP transport between chgate and ClickHouse (auto: LZ4 unless
    /// ClickHouse is on this host).
    pub compression: Compression,
    /// Timeout of health probes against ClickHouse.
    pub probe_timeout_ms: u64,
}

impl Default for ClickHouseSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "analytics".into(),
            user: "default".into(),
            password: Secret::default(),
            compression: Compression::Auto,
            probe_timeout_ms: 2000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSettings {
    /// Connection URL; `DATABASE_URL` sets it too. May contain a password, so it is never logged.
    pub url: Secret,
    pub max_connections: u32,
    /// Create the database named in the URL when `chgate migrate` finds it missing.
    pub create_database: bool,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            url: Secret::new("postgres://postgres@127.0.0.1:5432/chgate"),
            max_connections: 16,
            create_database: true,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// Optional; without it, features that use Redis fall back to in-process state.
    pub url: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when standard error is not a terminal, pretty otherwise.
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// `tracing` filter directives, e.g. `info` or `chgate=debug,tower_http=info`.
    pub level: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Audit records older than this are deleted.
    pub retention_days: u32,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            retention_days: 400,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Cache template results (JSON) for their `cache_ttl_secs`.
    pub enabled: bool,
    /// Largest compressed entry; larger results are not cached.
    pub max_entry_bytes: usize,
    /// Memory of the in-process cache (it also serves while Redis is down).
    pub local_capacity_bytes: u64,
    /// Upper bound of any entry's life in the in-process cache (`past_ttl_secs` is the bound of
    /// entries kept for it).
    pub max_ttl_secs: u64,
    /// Key template results by the generations of the days they read, which advance when rows
    /// for those days are committed to ClickHouse (see docs/caching.md).
    pub freshness: bool,
    /// The most recent UTC days (1: today) left out of the keys: their results stay as fresh as
    /// the template's TTL, as without generations. 0 tracks every day.
    pub live_days: u32,
    /// TTL of results whose generations tell every change (a settled past range, read from
    /// tables fed by `events`, generations shared through Redis); 0 keeps the template's TTL.
    pub past_ttl_secs: u64,
    /// How long generations read from Redis are reused in process.
    pub generation_memo_ms: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entry_bytes: 8 * 1024 * 1024,
            local_capacity_bytes: 128 * 1024 * 1024,
            max_ttl_secs: 3600,
            freshness: true,
            live_days: 1,
            past_ttl_secs: 6 * 3600,
            generation_memo_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessSettings {
    /// Roles and their policies (templates, ingestion, BI tables, row filters, limits).
    pub policy: PathBuf,
    /// How often the policy file is checked for changes; 0 disables.
    pub reload_poll_ms: u64,
    /// Queries running at once across the whole gateway; beyond it → 503.
    pub max_concurrent_queries: usize,
    /// Where request rates are counted: `local` (per gateway) or `redis` (shared by all gateways;
    /// falls back to local counting while Redis is down).
    pub limits_backend: LimitsBackend,
    pub jwt: JwtSettings,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            policy: PathBuf::from("config/access.toml"),
            reload_poll_ms: 2000,
            max_concurrent_queries: 32,
            limits_backend: LimitsBackend::Local,
            jwt: JwtSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitsBackend {
    Local,
    Redis,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtSettings {
    /// Shared secret of HS256 tokens (empty: HS256 not accepted). Never logged.
    pub hs256_secret: Secret,
    /// PEM files of RSA (RS256) or EC (ES256) public keys.
    pub public_keys: Vec<PathBuf>,
    /// A JWKS file with public keys (matched by `kid`).
    pub jwks_file: Option<PathBuf>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Clock skew allowed for `exp` and `nbf`.
    pub leeway_secs: u64,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            hs256_secret: Secret::default(),
            public_keys: Vec::new(),
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogSettings {
    /// Directory of query templates (`<name>/v<N>.sql`).
    pub dir: PathBuf,
    /// How often the directory is checked for changes (SIGHUP reloads at once); 0 disables.
    pub reload_poll_ms: u64,
}

impl Default for CatalogSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("queries"),
            reload_poll_ms: 2000,
        }
    }
}

/// What happens to top-level fields of an event that the model does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownFields {
    /// Moved into `properties` under the same key (unless a property of that name exists).
    Keep,
    /// The event is rejected, naming the field.
    Reject,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Largest accepted request body (after decompression); larger → 413.
    pub max_body_bytes: usize,
    /// Most events in one request.
    pub max_batch_events: usize,
    /// Largest serialized `properties` object of one event.
    pub max_properties_bytes: usize,
    /// Live traffic: oldest accepted timestamp, relative to receive time (`chgate import` has no limit).
    pub max_past_secs: u64,
    /// Live traffic: how far in the future a timestamp may be (clock skew).
    pub max_future_secs: u64,
    pub unknown_fields: UnknownFields,
    /// Events also written, normalized, to Postgres.
    pub critical_events: Vec<String>,
    /// Currency assumed for revenue events that name none.
    pub default_currency: String,
    /// Drop events flagged as bots instead of storing them flagged.
    pub drop_bots: bool,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` headers are believed (CIDR list).
    pub trusted_proxies: Vec<String>,
    /// Client addresses whose events are flagged as bots (CIDR list).
    pub bot_networks: Vec<String>,
    /// Write-ahead log: `on` makes every acknowledged event durable before the 2xx.
    pub wal: WalMode,
    pub wal_dir: PathBuf,
    /// Largest total size of retained WAL segments; beyond it ingestion answers 503.
    pub wal_max_bytes: u64,
    /// A segment is sealed after this many bytes or seconds.
    pub wal_segment_bytes: u64,
    pub wal_segment_secs: u64,
    /// Events held in memory between acknowledgement and ClickHouse; beyond it → 503.
    pub queue_events: usize,
    /// Memory those events may take (their rows as held, estimated per row); beyond it → 503.
    /// Whichever of the two limits is reached first applies.
    pub queue_bytes: u64,
    /// The writer inserts when this many rows are pending or `flush_interval_ms` passed.
    pub flush_rows: usize,
    pub flush_interval_ms: u64,
    /// Table the writer inserts into: `events_ingest`, whose materialized view passes the rows to
    /// the Buffer table `events_buffer` in front of `events` (plain String columns there make
    /// RowBinary cheap for ClickHouse to read). `events_buffer` itself also works, at a higher cost.
    pub table: String,
    /// Wire format of the writer's inserts: `rowbinary` (the `clickhouse` crate's typed inserter)
    /// or `native` (columnar blocks, which ClickHouse reads at a fraction of the CPU cost).
    pub insert_format: InsertFormat,
    /// The Buffer table's `max_time`: rows inserted are in `events` at most this long after.
    pub buffer_flush_secs: u64,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 * 1024 * 1024,
            max_batch_events: 10_000,
            max_properties_bytes: 32 * 1024,
            max_past_secs: 30 * 24 * 3600,
            max_future_secs: 600,
            unknown_fields: UnknownFields::Keep,
            critical_events: vec!["signup".into(), "purchase".into(), "refund".into()],
            default_currency: "USD".into(),
            drop_bots: false,
            trusted_proxies: Vec::new(),
            bot_networks: Vec::new(),
            wal: WalMode::On,
            wal_dir: PathBuf::from("data/wal"),
            wal_max_bytes: 2 * 1024 * 1024 * 1024,
            wal_segment_bytes: 32 * 1024 * 1024,
            wal_segment_secs: 2,
            queue_events: 500_000,
            queue_bytes: 128 * 1024 * 1024,
            flush_rows: 50_000,
            flush_interval_ms: 250,
            table: "events_ingest".into(),
            insert_format: InsertFormat::RowBinary,
            buffer_flush_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InsertFormat {
    /// Row by row, each row a Rust struct serialized by the `clickhouse` crate.
    RowBinary,
    /// Column by column: ClickHouse copies each column instead of parsing every value.
    Native,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WalMode {
    On,
    /// Faster, but events acknowledged and not yet in ClickHouse are lost on a crash.
    Off,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoIpSettings {
    /// A MaxMind-format `.mmdb` (GeoIP2/GeoLite2 City or Country, or ip-location-db country).
    /// Unset: events get no geography.
    pub path: Option<PathBuf>,
}

/// What to do with a property that holds personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PiiAction {
    /// Removed from the event.
    Drop,
    /// Replaced by a salted HMAC-SHA256 (stable, so still countable and joinable).
    Hash,
    /// Replaced by a masked form that keeps a hint (`i***@example.com`).
    Mask,
    /// Stored as sent.
    Keep,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySettings {
    /// Store IPv4 addresses truncated to /24 and IPv6 to /48 (152-FZ); `false` stores them whole.
    pub truncate_ip: bool,
    /// Key of the HMAC used by `hash` rules and user id pseudonymization. Never logged.
    pub salt: Secret,
    /// Rules per property key (case-insensitive), e.g. `{ email = "hash", phone = "mask" }`.
    pub properties: std::collections::BTreeMap<String, PiiAction>,
    /// Applied to e-mails, phone numbers and card numbers found in other string properties.
    pub detected: PiiAction,
    /// Replace `user_id` by its salted HMAC before storage.
    pub pseudonymize_user_id: bool,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self {
            truncate_ip: true,
            salt: Secret::default(),
            properties: [
                ("email", PiiAction::Hash),
                ("phone", PiiAction::Mask),
                ("name", PiiAction::Drop),
                ("first_name", PiiAction::Drop),
                ("last_name", PiiAction::Drop),
                ("address", PiiAction::Drop),
                ("passport", PiiAction::Drop),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            detected: PiiAction::Mask,
            pseudonymize_user_id: false,
        }
    }
}

/// A string that never appears in logs or `Debug` output.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself; call only where it is handed to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
}

impl Settings {
    /// Loads settings from `file` (or `./chgate.toml` when present) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::figment(file, std::env::vars()).and_then(Self::extract)
    }

    /// Same as [`Settings::load`] with an explicit environment, so tests need not touch the process's.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::figment(file, env).and_then(Self::extract)
    }

    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        figment
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))
    }

    fn figment(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Figment, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE))
            }
            None => {}
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        for (var, key) in [("DATABASE_URL", "postgres.url"), ("REDIS_URL", "redis.url")] {
            if let Some((_, value)) = env.iter().find(|(k, v)| k == var && !v.is_empty()) {
                figment = figment.merge(Serialized::global(key, value));
            }
        }
        for (var, value) in env {
            let Some(rest) = var.strip_prefix("CHGATE__") else {
                continue;
            };
            let key = rest.to_ascii_lowercase().replace("__", ".");
            // Parsed like figment's own `Env` provider: numbers and booleans become typed values.
            let value: figment::value::Value = value
                .parse()
                .unwrap_or_else(|_| figment::value::Value::from(value));
            figment = figment.merge(Serialized::globals(figment::util::nest(&key, value)));
        }
        Ok(figment)
    }
}

#[cfg(test)]
mod tests {
    use super::Compression;

    #[test]
    fn the_default_memory_ceiling_is_the_documented_one() {
        let ceiling = super::Settings::default().memory_ceiling();
        assert_eq!(ceiling.total / (1024 * 1024), 710);
        assert!(include_str!("../docs/security.md").contains("710 MiB without GeoIP"));
    }

    #[test]
    fn auto_compression_is_off_only_for_a_clickhouse_on_this_host() {
        for (url, want) in [
            ("http://127.0.0.1:8123", Compression::None),
            ("http://localhost:8123", Compression::None),
            ("http://[::1]:8123", Compression::None),
            ("https://clickhouse.internal:8443", Compression::Lz4),
            ("http://10.0.0.5:8123", Compression::Lz4),
        ] {
            assert_eq!(Compression::Auto.for_url(url), want, "{url}");
        }
        assert_eq!(
            Compression::Lz4.for_url("http://127.0.0.1:8123"),
            Compression::Lz4
        );
        assert_eq!(
            Compression::None.for_url("http://10.0.0.5"),
            Compression::None
        );
    }
}
