//! The Segment-compatible tracking API: messages of analytics.js, RudderStack and Jitsu SDKs mapped
//! onto the native event shape, which then goes through the same validation.
//!
//! | Segment | native |
//! |---|---|
//! | `track` | `event` as sent |
//! | `page` / `screen` | `page_view` / `screen_view`, `name` and `category` into properties |
//! | `identify` | `identify`, `traits` (or `context.traits`) stored as the user's latest properties |
//! | `group` / `alias` | `group` (`group_id`, traits) / `alias` (`previous_id`) |
//! | `messageId` | `event_id` (a UUID as is; anything else hashed to a stable UUID) |
//! | `timestamp`, `sentAt`, `receivedAt` | `timestamp = receivedAt − (sentAt − timestamp)` (device clock skew) |
//! | `context.userAgent`, `context.page`, … | `context.user_agent`, `context.page`, … |
//!
//! Envelope fields with no meaning here (`integrations`, `channel`, `version`, `writeKey`,
//! `_metadata`, `projectId`, `receivedAt`) are ignored; other unknown fields follow
//! `ingest.unknown_fields` like native events.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::model::{parse_timestamp, wrong_type, Rejection};

/// Message types of the tracking API.
pub const TYPES: &[&str] = &["track", "page", "screen", "identify", "group", "alias"];

const IGNORED: &[&str] = &[
    "integrations",
    "channel",
    "version",
    "writeKey",
    "_metadata",
    "projectId",
    "receivedAt",
];

/// Namespace of UUIDs derived from non-UUID `messageId`s.
const MESSAGE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c8f_2a3e_4d1b_4f0a_9e57_c0a1_b2d3_e4f5);

/// Maps one message. `kind` is the endpoint's type (`/v1/track` → `track`), `None` for `/v1/batch`
/// where each message names its own; `batch` is the batch envelope (shared `context`, `sentAt`).
pub fn to_native(
    message: Value,
    kind: Option<&str>,
    batch: &Map<String, Value>,
    received_at_ms: i64,
) -> Result<Value, Rejection> {
    let Value::Object(mut m) = message else {
        return Err(wrong_type("", "a JSON object", &message));
    };
    let kind = match (m.remove("type"), kind) {
        (Some(Value::String(t)), _) => t,
        (None | Some(Value::Null), Some(k)) => k.to_string(),
        (None | Some(Value::Null), None) => {
            return Err(Rejection::new(
                "missing_field",
                "type",
                "is required in a batch",
            ))
        }
        (Some(other), _) => return Err(wrong_type("type", "a string", &other)),
    };
    if !TYPES.contains(&kind.as_str()) {
        return Err(Rejection::new(
            "invalid_value",
            "type",
            format!("must be one of {}, got {kind:?}", TYPES.join(", ")),
        ));
    }
    for key in IGNORED {
        m.remove(*key);
    }
    let mut native = Map::new();
    let mut properties = match m.remove("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(other) => return Err(wrong_type("properties", "an object", &other)),
    };
    let mut context = match m
        .remove("context")
        .or_else(|| batch.get("context").cloned())
    {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(c)) => c,
        Some(other) => return Err(wrong_type("context", "an object", &other)),
    };
    let event = match kind.as_str() {
        "track" => match m.remove("event") {
            Some(name) => name,
            None => {
                return Err(Rejection::new(
                    "missing_field",
                    "event",
                    "is required for track",
                ))
            }
        },
        "page" | "screen" => {
            for key in ["name", "category"] {
                if let Some(v) = m.remove(key) {
                    properties.entry(key).or_insert(v);
                }
            }
            Value::String(format!("{kind}_view"))
        }
        "identify" => {
            let traits = m
                .remove("traits")
                .or_else(|| context.remove("traits"))
                .unwrap_or_else(|| json!({}));
            native.insert("traits".into(), traits);
            Value::String("identify".into())
        }
        "group" => {
            if let Some(group) = m.remove("groupId") {
                properties.insert("group_id".into(), group);
            }
            if let Some(traits) = m.remove("traits") {
                properties.insert("group_traits".into(), traits);
            }
            Value::String("group".into())
        }
        _ => {
            if let Some(previous) = m.remove("previousId") {
                properties.insert("previous_id".into(), previous);
            }
            Value::String("alias".into())
        }
    };
    native.insert("event".into(), event);
    for (from, to) in [("userId", "user_id"), ("anonymousId", "anonymous_id")] {
        if let Some(v) = m.remove(from) {
            native.insert(to.into(), v);
        }
    }
    if let Some(id) = m.remove("messageId") {
        let Value::String(id) = id else {
            return Err(wrong_type("messageId", "a string", &id));
        };
        let uuid = Uuid::parse_str(&id)
            .unwrap_or_else(|_| Uuid::new_v5(&MESSAGE_ID_NAMESPACE, id.as_bytes()));
        native.insert("event_id".into(), Value::String(uuid.to_string()));
    }
    native.insert(
        "timestamp".into(),
        Value::from(corrected_timestamp(&mut m, batch, received_at_ms)?),
    );
    if let Some(session) = context
        .remove("sessionId")
        .or_else(|| properties.get("session_id").cloned())
    {
        native.insert("session_id".into(), session);
    }
    native.insert("platform".into(), Value::String(platform(&context).into()));
    native.insert(
        "context".into(),
        Value::Object(map_context(context, &mut properties)),
    );
    native.insert("properties".into(), Value::Object(properties));
    // Whatever is left is unknown; the native validation applies `ingest.unknown_fields`.
    for (key, value) in m {
        native.entry(key).or_insert(value);
    }
    Ok(Value::Object(native))
}

fn corrected_timestamp(
    m: &mut Map<String, Value>,
    batch: &Map<String, Value>,
    received_at_ms: i64,
) -> Result<i64, Rejection> {
    let timestamp = match m
        .remove("timestamp")
        .or_else(|| m.remove("originalTimestamp"))
    {
        None | Some(Value::Null) => return Ok(received_at_ms),
        Some(v) => parse_timestamp("timestamp", &v)?,
    };
    m.remove("originalTimestamp");
    let sent_at = match m.remove("sentAt").or_else(|| batch.get("sentAt").cloned()) {
        None | Some(Value::Null) => return Ok(timestamp),
        Some(v) => parse_timestamp("sentAt", &v)?,
    };
    // The device clock may be off; the time between its timestamp and its send is not.
    Ok(received_at_ms - (sent_at - timestamp))
}

fn platform(context: &Map<String, Value>) -> &'static str {
    let library = context
        .get("library")
        .and_then(|l| l.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let os = context
        .get("os")
        .and_then(|o| o.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    if library.contains("ios") || os == "ios" || os == "ipados" {
        "ios"
    } else if library.contains("android") || os == "android" {
        "android"
    } else if library.contains("analytics.js")
        || library.contains("javascript")
        || context.contains_key("page")
    {
        "web"
    } else if [
        "node", "python", "go", "ruby", "java", "php", "dotnet", ".net", "rust",
    ]
    .iter()
    .any(|l| library.contains(l))
    {
        "server"
    } else if ["macos", "mac os x", "windows", "linux"].contains(&os.as_str()) {
        "desktop"
    } else {
        "other"
    }
}

fn map_context(
    mut c: Map<String, Value>,
    properties: &mut Map<String, Value>,
) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(ip) = c.remove("ip") {
        out.insert("ip".into(), ip);
    }
    if let Some(ua) = c.remove("userAgent") {
        out.insert("user_agent".into(), ua);
    }
    if let Some(locale) = c.remove("locale") {
        out.insert("locale".into(), locale);
    }
    let mut page = match c.remove("page") {
        Some(Value::Object(p)) => p,
        _ => Map::new(),
    };
    // analytics.js also puts the page facts into a page call's properties.
    for key in ["url", "path", "referrer", "title"] {
        if !page.contains_key(key) {
            if let Some(v) = properties.get(key) {
                page.insert(key.into(), v.clone());
            }
        }
    }
    page.retain(|k, _| ["url", "path", "referrer", "title"].contains(&k.as_str()));
    if !page.is_empty() {
        out.insert("page".into(), Value::Object(page));
    }
    if let Some(Value::Object(app)) = c.remove("app") {
        if let Some(v) = app.get("version") {
            out.insert("app".into(), json!({"version": v}));
        }
    }
    if let Some(Value::Object(device)) = c.remove("device") {
        let mut d = Map::new();
        for key in ["type", "model"] {
            if let Some(v) = device.get(key) {
                d.insert(key.into(), v.clone());
            }
        }
        out.insert("device".into(), Value::Object(d));
    }
    if let Some(Value::Object(os)) = c.remove("os") {
        let mut o = Map::new();
        for key in ["name", "version"] {
            if let Some(v) = os.get(key) {
                o.insert(key.into(), v.clone());
            }
        }
        out.insert("os".into(), Value::Object(o));
    }
    if let Some(Value::Object(campaign)) = c.remove("campaign") {
        let mut o = Map::new();
        for key in ["source", "medium", "name", "term", "content"] {
            if let Some(v) = campaign.get(key) {
                o.insert(key.into(), v.clone());
            }
        }
        out.insert("campaign".into(), Value::Object(o));
    }
    if let Some(Value::Object(library)) = c.remove("library") {
        let name = library
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let version = library
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let text = if version.is_empty() {
            name.to_string()
        } else {
            format!("{name}/{version}")
        };
        out.insert("library".into(), Value::String(text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000_000;

    fn map(value: Value) -> Value {
        to_native(value, None, &Map::new(), NOW).unwrap()
    }

    #[test]
    fn a_track_call_maps_ids_properties_and_context() {
        let native = map(json!({
            "type": "track", "event": "Order Completed", "userId": "u1", "anonymousId": "a1",
            "messageId": "ajs-next-1f2e", "properties": {"revenue": 9.5},
            "context": {"userAgent": "UA", "ip": "1.2.3.4", "locale": "ru-RU",
                        "page": {"url": "https://s.example/p", "referrer": "https://ya.ru/"},
                        "campaign": {"source": "vk", "medium": "social"},
                        "library": {"name": "analytics.js", "version": "next-1.70"}},
            "integrations": {"All": true}
        }));
        assert_eq!(native["event"], "Order Completed");
        assert_eq!(native["user_id"], "u1");
        assert_eq!(native["platform"], "web");
        assert_eq!(native["context"]["user_agent"], "UA");
        assert_eq!(native["context"]["campaign"]["source"], "vk");
        assert_eq!(native["context"]["library"], "analytics.js/next-1.70");
        assert_eq!(native["properties"]["revenue"], 9.5);
        assert!(native.get("integrations").is_none());
        let id = native["event_id"].as_str().unwrap();
        assert_eq!(Uuid::parse_str(id).unwrap().get_version_num(), 5);
        assert_eq!(
            map(
                json!({"type": "track", "event": "x", "userId": "u", "messageId": "ajs-next-1f2e"})
            )["event_id"],
            id,
            "stable"
        );
    }

    #[test]
    fn device_clock_skew_is_corrected_with_sent_at() {
        // The device clock is 1 hour fast: sent 2 s after the event by its own clock.
        let native = map(json!({
            "type": "track", "event": "x", "userId": "u",
            "timestamp": "2026-09-21T15:33:18.000Z", "sentAt": "2026-09-21T15:33:20.000Z"
        }));
        assert_eq!(native["timestamp"], NOW - 2_000);
    }

    #[test]
    fn page_identify_and_batch_types() {
        let page = map(
            json!({"type": "page", "name": "Home", "anonymousId": "a", "properties": {"url": "https://s.example/", "title": "Home"}}),
        );
        assert_eq!(page["event"], "page_view");
        assert_eq!(page["properties"]["name"], "Home");
        assert_eq!(page["context"]["page"]["url"], "https://s.example/");
        let identify = map(json!({"type": "identify", "userId": "u", "traits": {"plan": "pro"}}));
        assert_eq!(identify["traits"]["plan"], "pro");
        let err = to_native(json!({"event": "x"}), None, &Map::new(), NOW).unwrap_err();
        assert_eq!((err.code, err.field.as_str()), ("missing_field", "type"));
        let err = to_native(json!({"type": "hover"}), None, &Map::new(), NOW).unwrap_err();
        assert_eq!(err.field, "type");
    }

    #[test]
    fn the_endpoint_type_applies_when_the_message_has_none() {
        let native = to_native(
            json!({"name": "Settings", "userId": "u"}),
            Some("screen"),
            &Map::new(),
            NOW,
        )
        .unwrap();
        assert_eq!(native["event"], "screen_view");
    }
}
