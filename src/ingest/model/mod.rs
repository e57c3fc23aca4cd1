//! The event model and its validation. Every rejection names the field and the rule it broke.
//!
//! Native shape (snake_case):
//! `{event_id?, event, timestamp?, user_id?, anonymous_id?, session_id?, platform?, properties?,
//!   context?: {ip?, user_agent?, locale?, page?: {url?, path?, referrer?, title?}, app?: {version?},
//!   device?: {type?, model?, manufacturer?}, os?: {name?, version?},
//!   campaign?: {source?, medium?, name?, term?, content?}, library?: {name?, version?}}}`
//!
//! Here: the event, its rejections and the validation rules. `field.rs`: JSON values read
//! leniently from a body and written back; `raw.rs`: an event as sent; `context.rs`: the
//! `context` object; `validate.rs`: the checks from a raw event to an [`Event`].

mod context;
mod field;
mod raw;
mod validate;

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::config::IngestSettings;

pub use self::context::Context;
pub(crate) use self::field::visit_scalars_as_kind;
pub use self::field::{member, Field, JsonObject, Object};
pub use self::raw::RawEvent;
pub use self::validate::{check_event_name, parse_timestamp, validate, validate_raw, Incoming};

/// Longest accepted identifier (`user_id`, `anonymous_id`, `session_id`).
pub const MAX_ID_LEN: usize = 256;
/// Longest accepted event name.
pub const MAX_EVENT_NAME_LEN: usize = 128;
/// Longest accepted free-text context value (URLs, user agents, titles).
pub const MAX_TEXT_LEN: usize = 4096;

/// Platforms an event can come from.
pub const PLATFORMS: &[&str] = &["web", "ios", "android", "desktop", "server", "other"];

/// Why one event of a batch was not accepted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    /// Stable snake_case reason, also the `reason` label of the rejected-events metric.
    pub code: &'static str,
    /// The offending field as a JSON path, e.g. `context.page.url`.
    pub field: String,
    pub message: String,
}

impl Rejection {
    pub fn new(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = format!(
            "{}: {}",
            if field.is_empty() { "event" } else { &field },
            message.into()
        );
        Self {
            code,
            field,
            message,
        }
    }
}

/// A validated event, before enrichment. Property text is borrowed from the request body where
/// it had no escapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub event_id: Uuid,
    pub event: String,
    /// Milliseconds since the Unix epoch, UTC.
    pub timestamp_ms: i64,
    pub user_id: String,
    pub anonymous_id: String,
    pub session_id: String,
    pub platform: String,
    pub properties: Object<'a>,
    pub context: Context,
    /// Traits of an `identify` call, stored as the user's latest properties.
    pub traits: Option<Object<'a>>,
}

impl<'a> Event<'a> {
    /// A property by key (keys of an [`Object`] are unique).
    pub fn property(&self, key: &str) -> Option<&Field<'a>> {
        member(&self.properties, key)
    }
}

/// Validation knobs that differ between live traffic and imports.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub settings: &'a IngestSettings,
    /// Receive time, ms since the epoch.
    pub now_ms: i64,
    /// Live traffic checks the timestamp window; imports accept any past time.
    pub enforce_window: bool,
    /// Whether `context.ip` is believed (trusted server keys only).
    pub trust_context_ip: bool,
    /// Event names the sender may send (globs); empty allows all.
    pub allowed_events: &'a [String],
}

pub fn wrong_type(field: &str, expected: &str, got: &Value) -> Rejection {
    wrong_kind(field, expected, &Field::of(got))
}

pub fn wrong_kind(field: &str, expected: &str, got: &Field<'_>) -> Rejection {
    Rejection::new(
        "invalid_type",
        field,
        format!("must be {expected}, got {}", got.type_name()),
    )
}

pub fn type_name(value: &Value) -> &'static str {
    Field::of(value).type_name()
}
