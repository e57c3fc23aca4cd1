//! The row written to ClickHouse, in the column order of `events`.

use anyhow::Context;
use clickhouse::native::builder::BlockBuilder;
use clickhouse::native::encode::{Encode, ValueWriter};
use clickhouse::native::{Block, DataTypeNode};
use clickhouse::Row;
use clickhouse_types::data_types::DateTimePrecision;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One enriched event as stored in `events` (through the Buffer table).
#[derive(Debug, Clone, Default, PartialEq, Row, Serialize, Deserialize)]
pub struct EventRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    pub event: String,
    /// DateTime64(3): milliseconds since the epoch.
    pub timestamp: i64,
    pub received_at: i64,
    pub user_id: String,
    pub anonymous_id: String,
    pub actor_id: String,
    pub session_id: String,
    pub platform: String,
    pub properties: String,
    pub item_id: String,
    pub developer_id: String,
    pub revenue: f64,
    pub currency: String,
    pub operation: String,
    pub status: String,
    pub duration_ms: Option<f64>,
    pub ip: String,
    pub country: String,
    pub region: String,
    pub city: String,
    pub locale: String,
    pub user_agent: String,
    pub browser: String,
    pub browser_version: String,
    pub os: String,
    pub os_version: String,
    pub device_type: String,
    pub device_model: String,
    pub is_bot: u8,
    pub app_version: String,
    pub library: String,
    pub page_url: String,
    pub page_path: String,
    pub page_title: String,
    pub referrer: String,
    pub referrer_host: String,
    pub channel: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_term: String,
    pub utm_content: String,
    pub ingest_segment: u64,
}

impl EventRow {
    /// Bytes of text the row holds (what its encodings are mostly made of).
    pub fn text_len(&self) -> usize {
        [
            &self.event,
            &self.user_id,
            &self.anonymous_id,
            &self.actor_id,
            &self.session_id,
            &self.platform,
            &self.properties,
            &self.item_id,
            &self.developer_id,
            &self.currency,
            &self.operation,
            &self.status,
            &self.ip,
            &self.country,
            &self.region,
            &self.city,
            &self.locale,
            &self.user_agent,
            &self.browser,
            &self.browser_version,
            &self.os,
            &self.os_version,
            &self.device_type,
            &self.device_model,
            &self.app_version,
            &self.library,
            &self.page_url,
            &self.page_path,
            &self.page_title,
            &self.referrer,
            &self.referrer_host,
            &self.channel,
            &self.utm_source,
            &self.utm_medium,
            &self.utm_campaign,
            &self.utm_term,
            &self.utm_content,
        ]
        .iter()
        .map(|s| s.len())
        .sum()
    }
}

/// A `DateTime64(3, 'UTC')` value: milliseconds since the epoch.
struct Millis(i64);

impl Encode for Millis {
    fn produces() -> DataTypeNode {
        DataTypeNode::DateTime64(DateTimePrecision::Precision3, Some("UTC".into()))
    }

    fn encode(
        &self,
        writer: &mut ValueWriter<'_>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(writer.write_fixed(&self.0.to_le_bytes())?)
    }
}

/// The rows as one Native block, column by column in the order of `events`.
pub fn native_block(rows: &[&EventRow]) -> anyhow::Result<Block> {
    let mut block = BlockBuilder::new();
    // One column of the block: its name and what each row puts in it.
    macro_rules! column {
        ($name:ident: $ty:ty = |$row:ident| $value:expr) => {
            block
                .upsert_column::<$ty>(stringify!($name))
                .context(concat!("column ", stringify!($name)))?
                .add_all(rows.iter().map(|$row| $value))
                .map_err(|e| anyhow::anyhow!("column {}: {e}", stringify!($name)))?;
        };
        ($name:ident: &str) => {
            column!($name: &str = |r| r.$name.as_str());
        };
    }
    column!(event_id: Uuid = |r| r.event_id);
    column!(event: &str);
    column!(timestamp: Millis = |r| Millis(r.timestamp));
    column!(received_at: Millis = |r| Millis(r.received_at));
    column!(user_id: &str);
    column!(anonymous_id: &str);
    column!(actor_id: &str);
    column!(session_id: &str);
    column!(platform: &str);
    column!(properties: &str);
    column!(item_id: &str);
    column!(developer_id: &str);
    column!(revenue: f64 = |r| r.revenue);
    column!(currency: &str);
    column!(operation: &str);
    column!(status: &str);
    column!(duration_ms: Option<f64> = |r| r.duration_ms);
    column!(ip: &str);
    column!(country: &str);
    column!(region: &str);
    column!(city: &str);
    column!(locale: &str);
    column!(user_agent: &str);
    column!(browser: &str);
    column!(browser_version: &str);
    column!(os: &str);
    column!(os_version: &str);
    column!(device_type: &str);
    column!(device_model: &str);
    column!(is_bot: u8 = |r| r.is_bot);
    column!(app_version: &str);
    column!(library: &str);
    column!(page_url: &str);
    column!(page_path: &str);
    column!(page_title: &str);
    column!(referrer: &str);
    column!(referrer_host: &str);
    column!(channel: &str);
    column!(utm_source: &str);
    column!(utm_medium: &str);
    column!(utm_campaign: &str);
    column!(utm_term: &str);
    column!(utm_content: &str);
    column!(ingest_segment: u64 = |r| r.ingest_segment);
    block.build().context("cannot build the Native block")
}

/// Latest traits of a user, from `identify`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct UserPropertiesRow {
    pub user_id: String,
    pub traits: String,
    pub updated_at: i64,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A row with every column set, for round-trip tests.
    pub fn sample_row() -> EventRow {
        EventRow {
            event_id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            event: "purchase".into(),
            timestamp: 1_790_000_000_123,
            received_at: 1_790_000_000_456,
            user_id: "u1".into(),
            anonymous_id: "a1".into(),
            actor_id: "u1".into(),
            session_id: "s1".into(),
            platform: "web".into(),
            properties: r#"{"amount":10.5}"#.into(),
            item_id: "game-7".into(),
            developer_id: "dev-1".into(),
            revenue: 10.5,
            currency: "USD".into(),
            operation: String::new(),
            status: String::new(),
            duration_ms: Some(12.5),
            ip: "77.88.8.0".into(),
            country: "RU".into(),
            region: String::new(),
            city: String::new(),
            locale: "ru-RU".into(),
            user_agent: "ua".into(),
            browser: "Chrome".into(),
            browser_version: "131".into(),
            os: "Windows 10".into(),
            os_version: "NT 10.0".into(),
            device_type: "desktop".into(),
            device_model: String::new(),
            is_bot: 0,
            app_version: "1.2.3".into(),
            library: "analytics.js".into(),
            page_url: "https://shop.example/p".into(),
            page_path: "/p".into(),
            page_title: "P".into(),
            referrer: String::new(),
            referrer_host: String::new(),
            channel: "direct".into(),
            utm_source: String::new(),
            utm_medium: String::new(),
            utm_campaign: String::new(),
            utm_term: String::new(),
            utm_content: String::new(),
            ingest_segment: 0,
        }
    }
}
