//! Validation of one event: names, ids, the timestamp window, platform, properties and traits,
//! the context, and unknown top-level fields by configuration.

use std::borrow::Cow;

use serde::de;
use serde_json::Value;
use uuid::Uuid;

use super::context::parse_context;
use super::{
    member, type_name, wrong_kind, Context, Event, Field, JsonObject, RawEvent, Rejection, Rules,
    MAX_EVENT_NAME_LEN, MAX_ID_LEN, PLATFORMS,
};
use crate::config::UnknownFields;

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

/// Something that validates into an [`Event`]: a parsed JSON value or an event read straight
/// from a request body.
pub trait Incoming<'a> {
    fn validate(self, rules: &Rules<'_>) -> Result<Event<'a>, Rejection>;
}

impl<'a> Incoming<'a> for Value {
    fn validate(self, rules: &Rules<'_>) -> Result<Event<'a>, Rejection> {
        validate(self, rules)
    }
}

impl<'a> Incoming<'a> for RawEvent<'a> {
    fn validate(self, rules: &Rules<'_>) -> Result<Event<'a>, Rejection> {
        validate_raw(self, rules)
    }
}

/// Validates one native-shaped event given as a JSON value (Segment calls, imports, checks).
pub fn validate<'a>(value: Value, rules: &Rules<'_>) -> Result<Event<'a>, Rejection> {
    match value {
        Value::Object(map) => {
            let raw = RawEvent::from_map(de::value::MapDeserializer::new(map.into_iter()))
                .map_err(|e: serde_json::Error| {
                    Rejection::new("invalid_type", "", e.to_string())
                })?;
            validate_raw(raw, rules)
        }
        other => validate_raw(RawEvent::not_object(type_name(&other)), rules),
    }
}

/// Validates one native-shaped event as read from a request body.
pub fn validate_raw<'a>(raw: RawEvent<'a>, rules: &Rules<'_>) -> Result<Event<'a>, Rejection> {
    if let Some(kind) = raw.not_object {
        return Err(Rejection::new(
            "invalid_type",
            "",
            format!("must be a JSON object, got {kind}"),
        ));
    }
    let event = match raw.event {
        None | Some(Field::Null) => {
            return Err(Rejection::new("missing_field", "event", "is required"))
        }
        Some(Field::Text(name)) => {
            check_event_name(&name)?;
            name.into_owned()
        }
        Some(other) => return Err(wrong_kind("event", "a string", &other)),
    };
    if !rules.allowed_events.is_empty()
        && !rules
            .allowed_events
            .iter()
            .any(|p| crate::glob::glob(p, &event))
    {
        return Err(Rejection::new(
            "event_not_allowed",
            "event",
            format!("{event:?} is not among the events this key may send"),
        ));
    }
    let event_id = match raw.event_id {
        None | Some(Field::Null) => Uuid::now_v7(),
        Some(Field::Text(s)) => Uuid::parse_str(&s)
            .map_err(|_| Rejection::new("invalid_value", "event_id", "must be a UUID"))?,
        Some(other) => return Err(wrong_kind("event_id", "a UUID string", &other)),
    };
    let timestamp_ms = match raw.timestamp {
        None | Some(Field::Null) => rules.now_ms,
        Some(value) => timestamp_of("timestamp", &value)?,
    };
    check_window(timestamp_ms, rules)?;
    let user_id = id_field("user_id", raw.user_id)?;
    let anonymous_id = id_field("anonymous_id", raw.anonymous_id)?;
    if user_id.is_empty() && anonymous_id.is_empty() {
        return Err(Rejection::new(
            "missing_field",
            "user_id",
            "either user_id or anonymous_id is required",
        ));
    }
    let session_id = id_field("session_id", raw.session_id)?;
    let platform = match raw.platform {
        None | Some(Field::Null) => "other".to_string(),
        Some(Field::Text(s)) => match PLATFORMS.iter().find(|p| p.eq_ignore_ascii_case(&s)) {
            Some(p) => (*p).to_string(),
            None => {
                return Err(Rejection::new(
                    "invalid_value",
                    "platform",
                    format!("must be one of {}, got {s:?}", PLATFORMS.join(", ")),
                ))
            }
        },
        Some(other) => return Err(wrong_kind("platform", "a string", &other)),
    };
    let mut properties = match raw.properties {
        None | Some(Field::Null) => Vec::new(),
        Some(Field::Object(members)) => members,
        Some(other) => return Err(wrong_kind("properties", "an object", &other)),
    };
    let traits = match raw.traits {
        None | Some(Field::Null) => None,
        Some(Field::Object(members)) => Some(members),
        Some(other) => return Err(wrong_kind("traits", "an object", &other)),
    };
    let context = match raw.context {
        None | Some(Field::Null) => Context::default(),
        Some(Field::Object(members)) => parse_context(members, rules.trust_context_ip)?,
        Some(other) => return Err(wrong_kind("context", "an object", &other)),
    };
    // What is left is unknown at the top level; of a repeated key the last value counts.
    for (key, value) in raw.unknown.into_iter().rev() {
        debug_assert!(!TOP_LEVEL.contains(&key.as_ref()));
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
                if member(&properties, &key).is_none() {
                    properties.push((key, value));
                }
            }
        }
    }
    let size = JsonObject(&properties).text_len();
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

/// Ids may be sent as strings or integers; integers are stored as their decimal text.
fn id_field(field: &'static str, value: Option<Field<'_>>) -> Result<String, Rejection> {
    let id = match value {
        None | Some(Field::Null) => return Ok(String::new()),
        Some(Field::Text(s)) => s,
        Some(Field::Number(n)) if n.is_i64() || n.is_u64() => Cow::Owned(n.to_string()),
        Some(other) => return Err(wrong_kind(field, "a string", &other)),
    };
    if id.len() > MAX_ID_LEN && id.chars().count() > MAX_ID_LEN {
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
    Ok(id.into_owned())
}

/// RFC 3339 text or integer milliseconds since the epoch.
pub fn parse_timestamp(field: &str, value: &Value) -> Result<i64, Rejection> {
    timestamp_of(field, &Field::of(value))
}

fn timestamp_of(field: &str, value: &Field<'_>) -> Result<i64, Rejection> {
    match value {
        Field::Text(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_millis())
            .map_err(|_| {
                Rejection::new(
                    "invalid_value",
                    field,
                    format!("{text:?} is not an RFC 3339 time (e.g. 2026-11-24T10:00:00Z) or epoch milliseconds"),
                )
            }),
        Field::Number(n) => n
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
        other => Err(wrong_kind(field, "an RFC 3339 string or epoch milliseconds", other)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IngestSettings;
    use serde_json::json;

    const NOW: i64 = 1_790_000_000_000;

    fn check(value: Value) -> Result<Event<'static>, Rejection> {
        check_with(value, &IngestSettings::default())
    }

    fn check_with(value: Value, settings: &IngestSettings) -> Result<Event<'static>, Rejection> {
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

    /// Validates an event read straight from JSON text, as a request body is.
    fn check_text(text: &str) -> Result<Event<'_>, Rejection> {
        let raw: RawEvent<'_> = serde_json::from_str(text).unwrap();
        validate_raw(
            raw,
            &Rules {
                settings: &IngestSettings::default(),
                now_ms: NOW,
                enforce_window: true,
                trust_context_ip: false,
                allowed_events: &[],
            },
        )
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
        assert_eq!(kept.property("plan"), Some(&Field::Text("pro".into())));
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

    /// Events read straight from request text validate exactly like the same JSON values.
    #[test]
    fn events_read_from_text_validate_like_json_values() {
        let cases = [
            r#"{"event":"signup","user_id":"u1"}"#,
            r#"{"event":"page_view","anonymous_id":7,"platform":"WEB","session_id":"s\u00e9","timestamp":"2026-09-21T17:13:19.5+03:00","properties":{"a":[1,{"b":null}],"email":"x@y.ru"},"context":{"ip":"8.8.8.8","user_agent":"Mozilla/5.0 \"quoted\"","page":{"url":"https://e.example/p?q=1","title":42},"campaign":{"source":"news"},"extra":{"nested":true}},"plan":"pro","plan":"team"}"#,
            r#"{"event":"x","user_id":"u","context":{"page":{"url":["a"]}}}"#,
            r#"{"event":"x","user_id":"u","context":{"os":"linux"}}"#,
            r#"{"event":"x","user_id":"u","context":[]}"#,
            r#"{"event":"x","user_id":"u","context":{"ip":"999.1.1.1"}}"#,
            r#"{"event":"x","user_id":{"id":1}}"#,
            r#"{"event":"x","user_id":"u","properties":[1]}"#,
            r#"{"event":"x","user_id":"u","traits":"t"}"#,
            r#"{"event":"x","user_id":"u","timestamp":true}"#,
            r#"{"event":"x","user_id":"u","event_id":"nope"}"#,
            r#"{"event":"x","user_id":"u","platform":"tv"}"#,
            r#"{"event":null,"user_id":"u"}"#,
            r#"{"event":"a;drop","user_id":"u"}"#,
            r#"{"event":"x","user_id":"u","event":"y"}"#,
            r#"{"event":"x"}"#,
            r#"[1,2]"#,
            r#""text""#,
            r#"null"#,
        ];
        for text in cases {
            let from_value = check(serde_json::from_str::<Value>(text).unwrap());
            let from_text = check_text(text);
            match (from_value, from_text) {
                (Ok(a), Ok(b)) => assert_eq!(
                    Event {
                        event_id: b.event_id,
                        ..a
                    },
                    b,
                    "{text}"
                ),
                (a, b) => assert_eq!(a, b, "{text}"),
            }
        }
        let event = check_text(
            r#"{"event":"x","user_id":"u","context":{"page":{"title":"\u0422\u0435\u0441\u0442"}},"plan":"pro","plan":"team"}"#,
        )
        .unwrap();
        assert_eq!(event.context.page_title, "Тест");
        assert_eq!(
            event.property("plan"),
            Some(&Field::Text("team".into())),
            "the last of a repeated key counts"
        );
    }

    #[test]
    fn properties_are_stored_as_json_would_store_them_with_each_key_once() {
        // Small objects are deduplicated pairwise, large ones by hash: both keep the first
        // position and the last value of a repeated key, as an ordered JSON map does.
        let many: String = (0..40).map(|i| format!(r#""k{}":{i},"#, i % 25)).collect();
        for properties in [
            r#"{"b":1,"a":{"x":[1,2.5,{"y":null}],"x":"\u0442\"q\""},"b":true,"c":-7,"d":1e3}"#
                .to_string(),
            format!(r#"{{{many}"z":"\n"}}"#),
        ] {
            let text = format!(r#"{{"event":"x","user_id":"u","properties":{properties}}}"#);
            let event = check_text(&text).unwrap();
            let expected = serde_json::from_str::<Value>(&properties)
                .unwrap()
                .to_string();
            let stored = JsonObject(&event.properties);
            assert_eq!(stored.text(), expected);
            assert_eq!(stored.text_len(), expected.len());
        }
    }

    #[test]
    fn a_non_object_event_is_rejected() {
        assert_eq!(rejected(json!([1, 2])).code, "invalid_type");
    }
}

#[cfg(test)]
mod allowed_events_tests {
    use super::*;
    use crate::config::IngestSettings;
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
