//! Where alert notifications go: a generic webhook (the whole notification as JSON), a
//! Slack-compatible incoming webhook (`{"text": …}`), or Telegram (Bot API `sendMessage`, base URL
//! configurable). Each channel is tried on its own with back-off; a failing one never holds up the
//! others, and every attempt is counted.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::AlertSettings;
use crate::definitions::Invalid;

/// A channel of an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Channel {
    Webhook { url: String },
    Slack { url: String },
    Telegram { chat_id: String },
}

impl Channel {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::Slack { .. } => "slack",
            Self::Telegram { .. } => "telegram",
        }
    }

    /// Checks the channel's fields; the message names the field and the rule.
    pub fn validate(&self, path: &str, settings: &AlertSettings) -> Result<(), Invalid> {
        match self {
            Self::Webhook { url } | Self::Slack { url } => check_url(&format!("{path}.url"), url),
            Self::Telegram { chat_id } => {
                if chat_id.trim().is_empty() || chat_id.len() > 64 {
                    return Err(Invalid::new(
                        format!("{path}.chat_id"),
                        "must be a chat id or @channel name of at most 64 characters",
                    ));
                }
                if settings.telegram_bot_token.expose().is_empty() {
                    return Err(Invalid::new(
                        path,
                        "Telegram is not configured on this gateway (alerts.telegram_bot_token)",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Checks an outgoing webhook URL: http or https, with a host.
pub fn check_url(path: &str, url: &str) -> Result<(), Invalid> {
    let parsed =
        url::Url::parse(url).map_err(|e| Invalid::new(path, format!("not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Invalid::new(
            path,
            "must be an http:// or https:// URL with a host",
        ));
    }
    Ok(())
}

/// What is sent.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub alert_id: uuid::Uuid,
    pub alert: String,
    pub severity: String,
    /// firing | renotified | resolved
    pub state: String,
    pub value: Option<f64>,
    pub condition: String,
    pub message: String,
    /// The template watched; empty when the alert watches an experiment.
    pub template: String,
    /// The experiment watched, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<uuid::Uuid>,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The outcome of one channel.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub channel: &'static str,
    pub delivered: bool,
    pub attempts: u32,
    pub error: Option<String>,
}

async fn send_once(
    client: &reqwest::Client,
    channel: &Channel,
    notification: &Notification,
    settings: &AlertSettings,
) -> Result<(), String> {
    let (url, body): (String, Value) = match channel {
        Channel::Webhook { url } => (url.clone(), json!(notification)),
        Channel::Slack { url } => (url.clone(), json!({ "text": notification.message })),
        Channel::Telegram { chat_id } => (
            format!(
                "{}/bot{}/sendMessage",
                settings.telegram_api_base.trim_end_matches('/'),
                settings.telegram_bot_token.expose()
            ),
            json!({ "chat_id": chat_id, "text": notification.message, "disable_web_page_preview": true }),
        ),
    };
    let response = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("cannot reach the channel: {}", without_url(&e)))?;
    if response.status().is_success() {
        Ok(())
    } else {
        let status = response.status();
        let text: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        Err(format!("HTTP {status}: {text}"))
    }
}

/// reqwest errors name the URL, which for Telegram holds the bot token.
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "<channel>");
    }
    text
}

/// Delivers to one channel, retrying with back-off.
pub async fn deliver(
    client: &reqwest::Client,
    channel: &Channel,
    notification: &Notification,
    settings: &AlertSettings,
) -> Delivery {
    retrying(channel.name(), settings, || {
        send_once(client, channel, notification, settings)
    })
    .await
}

/// Runs `attempt` until it succeeds, at most `delivery_attempts` times, each within
/// `delivery_timeout_ms`, with a doubling back-off between attempts; counted per channel.
pub async fn retrying<F, Fut>(
    channel: &'static str,
    settings: &AlertSettings,
    mut attempt: F,
) -> Delivery
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let attempts = settings.delivery_attempts.max(1);
    let mut delay = Duration::from_millis(settings.retry_base_ms);
    let mut last_error = None;
    for n in 1..=attempts {
        let outcome = tokio::time::timeout(
            Duration::from_millis(settings.delivery_timeout_ms),
            attempt(),
        )
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
        match outcome {
            Ok(()) => {
                metrics::counter!("chgate_deliveries_total", "channel" => channel, "outcome" => "delivered").increment(1);
                return Delivery {
                    channel,
                    delivered: true,
                    attempts: n,
                    error: None,
                };
            }
            Err(e) => {
                metrics::counter!("chgate_deliveries_total", "channel" => channel, "outcome" => "attempt_failed").increment(1);
                tracing::warn!(channel, attempt = n, error = %e, "a delivery attempt failed");
                last_error = Some(e);
                if n < attempts {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
    metrics::counter!("chgate_deliveries_total", "channel" => channel, "outcome" => "failed")
        .increment(1);
    Delivery {
        channel,
        delivered: false,
        attempts,
        error: last_error,
    }
}

/// Delivers to every channel at once.
pub async fn deliver_all(
    client: &reqwest::Client,
    channels: &[Channel],
    notification: &Notification,
    settings: &AlertSettings,
) -> Vec<Delivery> {
    futures_util::future::join_all(
        channels
            .iter()
            .map(|channel| deliver(client, channel, notification, settings)),
    )
    .await
}
