//! The ClickHouse server behind the BI endpoint: statements go through as the client sent them,
//! and setting values are tried on ClickHouse once before a client's statement carries them.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;

use super::error::BiError;
use crate::config::ClickHouseSettings;

/// Distinct setting values remembered as accepted or refused.
const CHECKED_VALUES: u64 = 10_000;
/// Longest setting value the gateway tries on ClickHouse.
const MAX_VALUE_BYTES: usize = 4096;

/// The ClickHouse server behind the endpoint; cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
    url: url::Url,
    user: String,
    password: String,
    /// `(setting, value)` → `None` when ClickHouse accepts it, or its refusal.
    checked: moka::sync::Cache<(String, String), Option<Arc<str>>>,
}

impl Upstream {
    pub fn new(settings: &ClickHouseSettings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            client,
            url: url::Url::parse(&settings.url)?,
            user: settings.user.clone(),
            password: settings.password.expose().to_string(),
            checked: moka::sync::Cache::builder()
                .max_capacity(CHECKED_VALUES)
                .time_to_live(Duration::from_secs(3600))
                .build(),
        })
    }

    /// Refuses a setting whose value ClickHouse cannot take (a word where a number belongs, an
    /// unknown mode), naming it, with a 400: ClickHouse would answer such a statement with a 500
    /// whose code tells nothing of the setting. Each distinct value is tried once, on `SELECT 1`;
    /// drivers send the same values with every query.
    pub async fn check_settings(&self, settings: &[(String, String)]) -> Result<(), BiError> {
        for (name, value) in settings {
            if value.len() > MAX_VALUE_BYTES {
                return Err(BiError::setting_refused(format!(
                    "setting {name}: the value is longer than {MAX_VALUE_BYTES} bytes"
                )));
            }
            let key = (name.clone(), value.clone());
            let verdict = match self.checked.get(&key) {
                Some(verdict) => verdict,
                None => {
                    let Some(verdict) = self.try_setting(name, value).await else {
                        // ClickHouse did not answer: the statement itself will say so.
                        continue;
                    };
                    self.checked.insert(key, verdict.clone());
                    verdict
                }
            };
            if let Some(refusal) = verdict {
                return Err(BiError::setting_refused(format!(
                    "setting {name}: ClickHouse does not take the value {value:?}: {refusal}"
                )));
            }
        }
        Ok(())
    }

    /// `None` when ClickHouse cannot be asked; `Some(None)` when it takes the value.
    async fn try_setting(&self, name: &str, value: &str) -> Option<Option<Arc<str>>> {
        let pairs = [
            ("readonly".to_string(), "2".to_string()),
            (name.to_string(), value.to_string()),
        ];
        let response = self
            .send(&pairs, "SELECT 1".to_string(), HeaderMap::new())
            .await
            .ok()?;
        if response.status().is_success() {
            return Some(None);
        }
        let text = response.text().await.ok()?;
        let message = crate::storage::clickhouse_errors::message_in(&text);
        Some(Some(Arc::from(message)))
    }

    pub(super) async fn send(
        &self,
        pairs: &[(String, String)],
        sql: String,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, BiError> {
        let mut url = self.url.clone();
        url.query_pairs_mut().extend_pairs(pairs);
        let mut request = self
            .client
            .post(url)
            .headers(headers)
            .header("x-clickhouse-user", &self.user)
            .body(sql);
        if !self.password.is_empty() {
            request = request.header("x-clickhouse-key", &self.password);
        }
        request.send().await.map_err(|e| {
            tracing::warn!(error = %e, "BI query: ClickHouse cannot be reached");
            BiError::unavailable("ClickHouse cannot be reached; retry shortly")
        })
    }
}
