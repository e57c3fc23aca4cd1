//! Redis: result cache and shared rate limits. Optional; connected lazily, reconnected automatically.

use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

/// A cheap-to-clone handle on Redis.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    manager: std::sync::Arc<OnceCell<ConnectionManager>>,
}

const TIMEOUT: Duration = Duration::from_secs(2);

impl Redis {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("redis.url is not a valid Redis URL")?;
        Ok(Self {
            client,
            manager: Default::default(),
        })
    }

    /// The configured Redis, if any (`redis.url` unset or empty: none).
    pub fn from_settings(settings: &crate::config::RedisSettings) -> anyhow::Result<Option<Self>> {
        settings
            .url
            .as_ref()
            .filter(|url| !url.is_empty())
            .map(|url| Self::new(url.expose()))
            .transpose()
    }

    /// A multiplexed connection that reconnects by itself after Redis comes back.
    pub async fn connection(&self) -> anyhow::Result<ConnectionManager> {
        let manager = self
            .manager
            .get_or_try_init(|| {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    .set_response_timeout(Some(TIMEOUT))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(self.client.clone(), config)
            })
            .await
            .context("cannot connect")?;
        Ok(manager.clone())
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.connection().await?;
        let reply: String =
            tokio::time::timeout(TIMEOUT, redis::cmd("PING").query_async(&mut conn))
                .await
                .context("timed out")?
                .context("PING failed")?;
        anyhow::ensure!(reply == "PONG", "unexpected PING reply {reply:?}");
        Ok(())
    }
}
