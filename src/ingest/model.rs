//! The event model and its validation. Every rejection names the field and the rule it broke.
//!
//! Native shape (snake_case):
//! `{event_id?, event, timestamp?, user_id?, anonymous_id?, session_id?, platform?, properties?,
//!   context?: {ip?, user_agent?, locale?, page?: {url?, path?, referrer?, title?}, app?: {version?},
//!   device?: {type?, model?, manufacturer?}, os?: {name?, version?},
//!   campaign?: {source?, medium?, name?, term?, content?}, library?: {name?, version?}}}`

use std::net::IpAddr;

use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::config::{IngestSettings, UnknownFields};

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

/// Context of an event as sent by the client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// Only set when the sender may vouch for it (trusted server keys).
    pub ip: Option<IpAddr>,
    pub user_agent: String,
    pub locale: String,
    pub page_url: String,
    pub page_path: String,
    pub page_referrer: String,
    pub page_title: String,
    pub app_version: String,
    pub device_type: String,
    pub device_model: String,
    pub os_name: String,
    pub os_version: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_term: String,
    pub utm_content: String,
    pub library: String,
}

/// A validated event, before enrichment.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: Uuid,
    pub event: String,
    /// Milliseconds since the Unix epoch, UTC.
    pub timestamp_ms: i64,
    pub user_id: String,
    pub anonymous_id: String,
    pub session_id: String,
    pub platform: String,
    pub properties: Map<String, Value>,
    pub context: Context,
    /// Traits of an `identify` call, stored as the user's latest properties.
    pub traits: Option<Map<String, Value>>,
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

const TOP_LEVEL: &[&str] = &[
    "event_id",
    "event",
    "timestamp",
    "user_id",
    "anonymous_id",
    "session_id",
    "platform",
    "properties",
    "context",
    "traits",
];

/// Validates one native-shaped event.
pub fn validate(value: Value, rules: &Rules<'_>) -> Result<Event, Rejection> {
    let Value::Object(mut object) = value else {
        return Err(Rejection::new(
            "invalid_type",
            "",
            format!("must be a JSON object, got {}", type_name(&value)),
        ));
    };
    let event = take_event_name(&mut object)?;
    if !rules.allowed_events.is_empty()
        && !rules
            .allowed_events
            .iter()
            .any(|p| crate::access::policy::glob(p, &event))
    {
        return Err(Rejection::new(
            "event_not_allowed",
            "event",
            format!("{event:?} is not among the events this key may send"),
        ));
    }
    let event_id = match object.remove("event_id") {
        None | Some(Value::Null) => Uuid::now_v7(),
        Some(Value::String(s)) => Uuid::parse_str(&s)
            .map_err(|_| Rejection::new("invalid_value", "event_id", "must be a UUID"))?,
        Some(other) => return Err(wrong_type("event_id", "a UUID string", &other)),
    };
    let timestamp_ms = match object.remove("timestamp") {
        None | Some(Value::Null) => rules.now_ms,
        Some(value) => parse_timestamp("timestamp", &value)?,
    };
    check_window(timestamp_ms, rules)?;
    let user_id = take_id(&mut object, "user_id")?;
    let anonymous_id = take_id(&mut object, "anonymous_id")?;
    if user_id.is_empty() && anonymous_id.is_empty() {
        return Err(Rejection::new(
            "missing_field",
            "user_id",
            "either user_id or anonymous_id is required",
        ));
    }
    let session_id = take_id(&mut object, "session_id")?;
    let platform = match object.remove("platform") {
        None | Some(Value::Null) => "other".to_string(),
        Some(Value::String(s)) => {
            let lower = s.to_ascii_lowercase();
            if !PLATFORMS.contains(&lower.as_str()) {
                return Err(Rejection::new(
                    "invalid_value",
                    "platform",
                    format!("must be one of {}, got {s:?}", PLATFORMS.join(", ")),
                ));
            }
            lower
        }
        Some(other) => return Err(wrong_type("platform", "a string", &other)),
    };
    let mut properties = match object.remove("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(other) => return Err(wrong_type("properties", "an object", &other)),
    };
    let traits = match object.remove("traits") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map),
        Some(other) => return Err(wrong_type("traits", "an object", &other)),
    };
    let context = match object.remove("context") {
        None | Some(Value::Null) => Context::default(),
        Some(Value::Object(map)) => parse_context(map, rules.trust_context_ip)?,
        Some(other) => return Err(wrong_type("context", "an object", &other)),
    };
    // What is left is unknown at the top level.
    for (key, value) in object {
        debug_assert!(!TOP_LEVEL.contains(&key.as_str()));
        match rules.settings.unknown_fields {
            UnknownFields::Reject => {
                return Err(Rejection::new(
                    "unknown_field",
                    key,
                    format!(
                        "is not a field of the event model (allowed: {})",
                        TOP_LEVEL.join(", ")
                    ),
                ))
            }
            UnknownFields::Keep => {
                properties.entry(key).or_insert(value);
            }
        }
    }
    let size = serde_json::to_vec(&properties)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > rules.settings.max_properties_bytes {
        return Err(Rejection::new(
            "too_large",
            "properties",
            format!(
                "is {size} bytes serialized; the limit is {}",
                rules.settings.max_properties_bytes
            ),
        ));
    }
    Ok(Event {
        event_id,
        event,
        timestamp_ms,
        user_id,
        anonymous_id,
        session_id,
        platform,
        properties,
        context,
        traits,
    })
}

/// Event names: 1-128 characters, starting with a letter or `$`, then letters, digits, spaces and
/// `_ . : / -`. Names are case-sensitive (`Purchase` and `purchase` are different events).
pub fn check_event_name(name: &str) -> Result<(), Rejection> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '$');
    let rest_ok =
        chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '.' | ':' | '/' | '-'));
    if name.is_empty() {
        return Err(Rejection::new(
            "invalid_value",
            "event",
            "must not be empty",
        ));
    }
    if name.chars().count() > MAX_EVENT_NAME_LEN {
        return Err(Rejection::new(
            "too_long",
            "event",
            format!("must be at most {MAX_EVENT_NAME_LEN} characters"),
        ));
    }
    if !first_ok || !rest_ok || name.ends_with(' ') {
        return Err(Rejection::new(
            "invalid_value",
            "event",
            format!(
                "{name:?} must start with a letter or `$` and contain only letters, digits, spaces and _ . : / -"
            ),
        ));
    }
    Ok(())
}

fn take_event_name(object: &mut Map<String, Value>) -> Result<String, Rejection> {
    match object.remove("event") {
        None | Some(Value::Null) => Err(Rejection::new("missing_field", "event", "is required")),
        Some(Value::String(name)) => {
            check_event_name(&name)?;
            Ok(name)
        }
        Some(other) => Err(wrong_type("event", "a string", &other)),
    }
}

/// Ids may be sent as strings or integers; integers are stored as their decimal text.
fn take_id(object: &mut Map<String, Value>, field: &'static str) -> Result<String, Rejection> {
    let id = match object.remove(field) {
        None | Some(Value::Null) => return Ok(String::new()),
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(other) => return Err(wrong_type(field, "a string", &other)),
    };
    if id.chars().count() > MAX_ID_LEN {
        return Err(Rejection::new(
            "too_long",
            field,
            format!("must be at most {MAX_ID_LEN} characters"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(Rejection::new(
            "invalid_value",
            field,
            "must not contain control characters",
        ));
    }
    Ok(id)
}

/// RFC 3339 text or integer milliseconds since the epoch.
pub fn parse_timestamp(field: &str, value: &Value) -> Result<i64, Rejection> {
    match value {
        Value::String(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_millis())
            .map_err(|_| {
                Rejection::new(
                    "invalid_value",
                    field,
                    format!("{text:?} is not an RFC 3339 time (e.g. 2026-11-24T10:00:00Z) or epoch milliseconds"),
                )
            }),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64))
            .filter(|ms| (0..=253_402_300_799_999).contains(ms))
            .ok_or_else(|| {
                Rejection::new(
                    "invalid_value",
                    field,
                    "must be whole milliseconds since 1970-01-01 (before year 10000)",
                )
            }),
        other => Err(wrong_type(field, "an RFC 3339 string or epoch milliseconds", other)),
    }
}

fn check_window(timestamp_ms: i64, rules: &Rules<'_>) -> Result<(), Rejection> {
    if timestamp_ms < 0 {
        return Err(Rejection::new(
            "out_of_range",
            "timestamp",
            "must not be before 1970",
        ));
    }
    if !rules.enforce_window {
        return Ok(());
    }
    let past = rules.settings.max_past_secs as i64 * 1000;
    let future = rules.settings.max_future_secs as i64 * 1000;
    if timestamp_ms < rules.now_ms - past {
        return Err(Rejection::new(
            "out_of_range",
            "timestamp",
            format!(
                "is more than {} s in the past; send historic data with `chgate import`",
                rules.settings.max_past_secs
            ),
        ));
    }
    if timestamp_ms > rules.now_ms + future {
        return Err(Rejection::new(
            "out_of_range",
            "timestamp",
            format!(
                "is more than {} s in the future",
                rules.settings.max_future_secs
            ),
        ));
    }
    Ok(())
}

fn parse_context(mut map: Map<String, Value>, trust_ip: bool) -> Result<Context, Rejection> {
    let mut context = Context::default();
    if let Some(value) = map.remove("ip") {
        let text = text_field("context.ip", value)?;
        if !text.is_empty() {
            let ip: IpAddr = text.parse().map_err(|_| {
                Rejection::new(
                    "invalid_value",
                    "context.ip",
                    format!("{text:?} is not an IP address"),
                )
            })?;
            if trust_ip {
                context.ip = Some(ip);
            }
        }
    }
    context.user_agent = take_text(&mut map, "context", "user_agent")?;
    context.locale = take_text(&mut map, "context", "locale")?;
    context.library = take_text(&mut map, "context", "library")?;
    if let Some(page) = take_object(&mut map, "context.page")? {
        let mut page = page;
        context.page_url = take_text(&mut page, "context.page", "url")?;
        context.page_path = take_text(&mut page, "context.page", "path")?;
        context.page_referrer = take_text(&mut page, "context.page", "referrer")?;
        context.page_title = take_text(&mut page, "context.page", "title")?;
    }
    if let Some(mut app) = take_object(&mut map, "context.app")? {
        context.app_version = take_text(&mut app, "context.app", "version")?;
    }
    if let Some(mut device) = take_object(&mut map, "context.device")? {
        context.device_type = take_text(&mut device, "context.device", "type")?;
        context.device_model = take_text(&mut device, "context.device", "model")?;
    }
    if let Some(mut os) = take_object(&mut map, "context.os")? {
        context.os_name = take_text(&mut os, "context.os", "name")?;
        context.os_version = take_text(&mut os, "context.os", "version")?;
    }
    if let Some(mut campaign) = take_object(&mut map, "context.campaign")? {
        context.utm_source = take_text(&mut campaign, "context.campaign", "source")?;
        context.utm_medium = take_text(&mut campaign, "context.campaign", "medium")?;
        context.utm_campaign = take_text(&mut campaign, "context.campaign", "name")?;
        context.utm_term = take_text(&mut campaign, "context.campaign", "term")?;
        context.utm_content = take_text(&mut campaign, "context.campaign", "content")?;
    }
    Ok(context)
}

fn take_object(
    map: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<Map<String, Value>>, Rejection> {
    let key = field.rsplit('.').next().unwrap_or(field);
    match map.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(other) => Err(wrong_type(field, "an object", &other)),
    }
}

fn take_text(map: &mut Map<String, Value>, parent: &str, key: &str) -> Result<String, Rejection> {
    match map.remove(key) {
        None => Ok(String::new()),
        Some(value) => text_field(&format!("{parent}.{key}"), value),
    }
}

fn text_field(field: &str, value: Value) -> Result<String, Rejection> {
    let text = match value {
        Value::Null => return Ok(String::new()),
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        other => return Err(wrong_type(field, "a string", &other)),
    };
    if text.chars().count() > MAX_TEXT_LEN {
        return Err(Rejection::new(
            "too_long",
            field,
            format!("must be at most {MAX_TEXT_LEN} characters"),
        ));
    }
    Ok(text)
}

pub fn wrong_type(field: &str, expected: &str, got: &Value) -> Rejection {
    Rejection::new(
        "invalid_type",
        field,
        format!("must be {expected}, got {}", type_name(got)),
    )
}

pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_790_000_000_000;

    fn check(value: Value) -> Result<Event, Rejection> {
        check_with(value, &IngestSettings::default())
    }

    fn check_with(value: Value, settings: &IngestSettings) -> Result<Event, Rejection> {
        validate(
            value,
            &Rules {
                settings,
                now_ms: NOW,
                enforce_window: true,
                trust_context_ip: false,
                allowed_events: &[],
            },
        )
    }

    fn rejected(value: Value) -> Rejection {
        check(value).unwrap_err()
    }

    #[test]
    fn a_minimal_event_gets_an_id_the_receive_time_and_platform_other() {
        let event = check(json!({"event": "signup", "user_id": "u1"})).unwrap();

        assert_eq!(event.timestamp_ms, NOW);
        assert_eq!(event.platform, "other");
        assert_eq!(event.event_id.get_version_num(), 7);
    }

    #[test]
    fn the_event_name_is_required_and_must_follow_the_naming_rule() {
        assert_eq!(rejected(json!({"user_id": "u"})).field, "event");
        assert_eq!(
            rejected(json!({"event": "", "user_id": "u"})).code,
            "invalid_value"
        );
        assert_eq!(
            rejected(json!({"event": "9lives", "user_id": "u"})).code,
            "invalid_value"
        );
        assert_eq!(
            rejected(json!({"event": "a;drop", "user_id": "u"})).code,
            "invalid_value"
        );
        assert_eq!(
            rejected(json!({"event": "x".repeat(129), "user_id": "u"})).code,
            "too_long"
        );
        assert_eq!(
            rejected(json!({"event": 5, "user_id": "u"})).code,
            "invalid_type"
        );
        for ok in ["$pageview", "Order Completed", "game:play/start", "a.b-c_d"] {
            assert!(check(json!({"event": ok, "user_id": "u"})).is_ok(), "{ok}");
        }
    }

    #[test]
    fn an_identity_is_required() {
        let rejection = rejected(json!({"event": "x"}));
        assert_eq!(rejection.code, "missing_field");
        assert!(rejection.message.contains("user_id or anonymous_id"));
    }

    #[test]
    fn ids_accept_strings_and_integers_and_reject_the_rest() {
        assert_eq!(
            check(json!({"event": "x", "user_id": 42})).unwrap().user_id,
            "42"
        );
        assert_eq!(
            rejected(json!({"event": "x", "user_id": {"a": 1}})).field,
            "user_id"
        );
        assert_eq!(
            rejected(json!({"event": "x", "user_id": "a".repeat(257)})).code,
            "too_long"
        );
        assert_eq!(
            rejected(json!({"event": "x", "user_id": "a\u{0}b"})).code,
            "invalid_value"
        );
        assert_eq!(
            rejected(json!({"event": "x", "user_id": "u", "event_id": "nope"})).field,
            "event_id"
        );
    }

    #[test]
    fn timestamps_are_rfc3339_or_epoch_millis_within_the_window() {
        let rfc = check(
            json!({"event": "x", "user_id": "u", "timestamp": "2026-09-21T17:13:19.5+03:00"}),
        )
        .unwrap();
        assert_eq!(rfc.timestamp_ms, NOW - 500);
        let ms = check(json!({"event": "x", "user_id": "u", "timestamp": NOW - 5})).unwrap();
        assert_eq!(ms.timestamp_ms, NOW - 5);
        assert_eq!(
            rejected(json!({"event": "x", "user_id": "u", "timestamp": "yesterday"})).code,
            "invalid_value"
        );
        assert_eq!(
            rejected(json!({"event": "x", "user_id": "u", "timestamp": 1.5})).code,
            "invalid_value"
        );
        let old =
            rejected(json!({"event": "x", "user_id": "u", "timestamp": NOW - 31 * 86_400_000}));
        assert_eq!(
            (old.code, old.field.as_str()),
            ("out_of_range", "timestamp")
        );
        let future = rejected(json!({"event": "x", "user_id": "u", "timestamp": NOW + 3_600_000}));
        assert_eq!(future.code, "out_of_range");
    }

    #[test]
    fn imports_accept_any_past_timestamp() {
        let settings = IngestSettings::default();
        let rules = Rules {
            settings: &settings,
            now_ms: NOW,
            enforce_window: false,
            trust_context_ip: false,
            allowed_events: &[],
        };
        let event = validate(
            json!({"event": "x", "user_id": "u", "timestamp": 1_000_000}),
            &rules,
        )
        .unwrap();
        assert_eq!(event.timestamp_ms, 1_000_000);
    }

    #[test]
    fn platform_must_be_a_known_value() {
        assert_eq!(
            check(json!({"event": "x", "user_id": "u", "platform": "iOS"}))
                .unwrap()
                .platform,
            "ios"
        );
        let rejection = rejected(json!({"event": "x", "user_id": "u", "platform": "tv"}));
        assert_eq!(
            (rejection.code, rejection.field.as_str()),
            ("invalid_value", "platform")
        );
    }

    #[test]
    fn properties_must_be_an_object_under_the_size_cap() {
        assert_eq!(
            rejected(json!({"event": "x", "user_id": "u", "properties": [1]})).code,
            "invalid_type"
        );
        let big = "x".repeat(40_000);
        let rejection = rejected(json!({"event": "x", "user_id": "u", "properties": {"b": big}}));
        assert_eq!(
            (rejection.code, rejection.field.as_str()),
            ("too_large", "properties")
        );
    }

    #[test]
    fn context_fields_are_type_checked_with_their_full_path() {
        let rejection =
            rejected(json!({"event": "x", "user_id": "u", "context": {"page": {"url": ["a"]}}}));
        assert_eq!(rejection.field, "context.page.url");
        assert!(rejection
            .message
            .starts_with("context.page.url: must be a string"));
        let rejection =
            rejected(json!({"event": "x", "user_id": "u", "context": {"ip": "999.1.1.1"}}));
        assert_eq!(rejection.field, "context.ip");
    }

    #[test]
    fn context_ip_is_ignored_unless_trusted() {
        let value = json!({"event": "x", "user_id": "u", "context": {"ip": "8.8.8.8"}});
        assert_eq!(check(value.clone()).unwrap().context.ip, None);
        let settings = IngestSettings::default();
        let rules = Rules {
            settings: &settings,
            now_ms: NOW,
            enforce_window: true,
            trust_context_ip: true,
            allowed_events: &[],
        };
        assert_eq!(
            validate(value, &rules).unwrap().context.ip,
            Some("8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn unknown_top_level_fields_are_kept_in_properties_or_rejected_by_configuration() {
        let kept = check(json!({"event": "x", "user_id": "u", "plan": "pro"})).unwrap();
        assert_eq!(kept.properties["plan"], "pro");
        let settings = IngestSettings {
            unknown_fields: UnknownFields::Reject,
            ..Default::default()
        };
        let rejection = check_with(
            json!({"event": "x", "user_id": "u", "plan": "pro"}),
            &settings,
        )
        .unwrap_err();
        assert_eq!(
            (rejection.code, rejection.field.as_str()),
            ("unknown_field", "plan")
        );
    }

    #[test]
    fn a_non_object_event_is_rejected() {
        assert_eq!(rejected(json!([1, 2])).code, "invalid_type");
    }
}

#[cfg(test)]
mod allowed_events_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_key_limited_to_some_events_gets_the_others_rejected() {
        let settings = IngestSettings::default();
        let allowed = vec!["game_*".to_string(), "purchase".to_string()];
        let rules = Rules {
            settings: &settings,
            now_ms: 1_790_000_000_000,
            enforce_window: true,
            trust_context_ip: false,
            allowed_events: &allowed,
        };
        assert!(validate(json!({"event": "game_view", "user_id": "u"}), &rules).is_ok());
        let rejected = validate(json!({"event": "signup", "user_id": "u"}), &rules).unwrap_err();
        assert_eq!(
            (rejected.code, rejected.field.as_str()),
            ("event_not_allowed", "event")
        );
    }
}
