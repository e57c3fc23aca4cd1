//! The event model and its validation. Every rejection names the field and the rule it broke.
//!
//! Native shape (snake_case):
//! `{event_id?, event, timestamp?, user_id?, anonymous_id?, session_id?, platform?, properties?,
//!   context?: {ip?, user_agent?, locale?, page?: {url?, path?, referrer?, title?}, app?: {version?},
//!   device?: {type?, model?, manufacturer?}, os?: {name?, version?},
//!   campaign?: {source?, medium?, name?, term?, content?}, library?: {name?, version?}}}`

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;
use serde_json::{Number, Value};
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

/// One JSON value of an event, read leniently so that validation, not parsing, names what is
/// wrong. Text is borrowed from the request body unless it had escapes, so properties go from the
/// body to their stored JSON text without a copy of each key and string.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Text(Cow<'a, str>),
    Array(Vec<Field<'a>>),
    Object(Object<'a>),
}

/// Members of a JSON object in the order sent, each key once: a repeated key keeps its first
/// position and its last value (as `serde_json`'s ordered map does).
pub type Object<'a> = Vec<(Cow<'a, str>, Field<'a>)>;

/// The member `key` of an object.
pub fn member<'o, 'a>(object: &'o Object<'a>, key: &str) -> Option<&'o Field<'a>> {
    object.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Objects up to this many members are checked for repeated keys pairwise, larger ones by hash.
const PAIRWISE_DEDUP_MAX: usize = 16;

/// Makes the keys of `members` unique: the first position, the last value.
fn dedup_members(members: &mut Object<'_>) {
    if members.len() < 2 {
        return;
    }
    let small = members.len() <= PAIRWISE_DEDUP_MAX;
    // Keys are nearly always unique: a small object is checked without allocating.
    if small && (1..members.len()).all(|i| members[..i].iter().all(|m| m.0 != members[i].0)) {
        return;
    }
    // Index of the first occurrence of each member's key.
    let first: Vec<usize> = if small {
        (0..members.len())
            .map(|i| (0..i).find(|&j| members[j].0 == members[i].0).unwrap_or(i))
            .collect()
    } else {
        let mut seen = std::collections::HashMap::with_capacity(members.len());
        members
            .iter()
            .enumerate()
            .map(|(i, (k, _))| *seen.entry(k.as_ref()).or_insert(i))
            .collect()
    };
    if first.iter().enumerate().all(|(i, &f)| i == f) {
        return;
    }
    let mut slots: Vec<Option<(Cow<'_, str>, Field<'_>)>> =
        std::mem::take(members).into_iter().map(Some).collect();
    for (i, &f) in first.iter().enumerate() {
        if f != i {
            if let Some((_, value)) = slots[i].take() {
                if let Some(kept) = slots[f].as_mut() {
                    kept.1 = value;
                }
            }
        }
    }
    *members = slots.into_iter().flatten().collect();
}

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => serializer.serialize_unit(),
            Self::Bool(b) => serializer.serialize_bool(*b),
            Self::Number(n) => n.serialize(serializer),
            Self::Text(s) => serializer.serialize_str(s),
            Self::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Self::Object(members) => JsonObject(members).serialize(serializer),
        }
    }
}

/// An [`Object`] serialized as a JSON object.
pub struct JsonObject<'o, 'a>(pub &'o [(Cow<'a, str>, Field<'a>)]);

impl Serialize for JsonObject<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key.as_ref(), value)?;
        }
        map.end()
    }
}

impl JsonObject<'_, '_> {
    /// The compact JSON text.
    pub fn text(&self) -> String {
        let mut out = Vec::with_capacity(self.len_hint());
        // Writing to a Vec fails only for keys that are not strings; these always are.
        let _ = serde_json::to_writer(&mut out, self);
        String::from_utf8(out).unwrap_or_default()
    }

    fn len_hint(&self) -> usize {
        self.0.iter().map(|(k, _)| k.len() + 24).sum::<usize>() + 2
    }

    /// Length of the compact JSON text, without building it.
    pub fn text_len(&self) -> usize {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        match serde_json::to_writer(&mut count, self) {
            Ok(()) => count.0,
            Err(_) => usize::MAX,
        }
    }
}

impl<'a> Field<'a> {
    /// A view of a `serde_json::Value` (arrays and objects keep only their kind).
    pub fn of(value: &'a Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => Self::Number(n.clone()),
            Value::String(s) => Self::Text(Cow::Borrowed(s)),
            Value::Array(_) => Self::Array(Vec::new()),
            Value::Object(_) => Self::Object(Vec::new()),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Number(_) => "a number",
            Self::Text(_) => "a string",
            Self::Array(_) => "an array",
            Self::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Field::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Field::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Field::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Number::from_f64(v).map_or(Field::Null, Field::Number))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Field::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::Text(Cow::Owned(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Field::Text(Cow::Owned(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Field::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Field::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // JSON gives no size hint; most objects of an event have a handful of members.
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(Key(key)) = map.next_key()? {
            members.push((key, map.next_value()?));
        }
        dedup_members(&mut members);
        Ok(Field::Object(members))
    }
}

/// An object key, borrowed from the request body unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The scalar `visit_*` methods of a visitor that only reports which JSON type it got, through
/// `$make(kind)` (kinds as in messages: "a string", "null", ...).
macro_rules! visit_scalars_as_kind {
    ($make:expr) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($make("a boolean"))
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($make("a number"))
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($make("a number"))
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($make("a number"))
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($make("a string"))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($make("null"))
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($make("null"))
        }
    };
}
pub(crate) use visit_scalars_as_kind;

/// One event as sent, before validation: the model's fields picked out while parsing (no map of
/// keys is built), other top-level fields kept aside.
#[derive(Debug, Default)]
pub struct RawEvent<'a> {
    /// The JSON type sent when the event is not an object.
    not_object: Option<&'static str>,
    event: Option<Field<'a>>,
    event_id: Option<Field<'a>>,
    timestamp: Option<Field<'a>>,
    user_id: Option<Field<'a>>,
    anonymous_id: Option<Field<'a>>,
    session_id: Option<Field<'a>>,
    platform: Option<Field<'a>>,
    context: Option<Field<'a>>,
    properties: Option<Field<'a>>,
    traits: Option<Field<'a>>,
    unknown: Object<'a>,
}

impl<'a> RawEvent<'a> {
    fn not_object(kind: &'static str) -> Self {
        Self {
            not_object: Some(kind),
            ..Self::default()
        }
    }

    /// Reads the members of an event object.
    pub fn from_map<A: MapAccess<'a>>(mut map: A) -> Result<Self, A::Error> {
        let mut raw = Self::default();
        while let Some(Key(key)) = map.next_key()? {
            let slot = match &*key {
                "event" => &mut raw.event,
                "event_id" => &mut raw.event_id,
                "timestamp" => &mut raw.timestamp,
                "user_id" => &mut raw.user_id,
                "anonymous_id" => &mut raw.anonymous_id,
                "session_id" => &mut raw.session_id,
                "platform" => &mut raw.platform,
                "context" => &mut raw.context,
                "properties" => &mut raw.properties,
                "traits" => &mut raw.traits,
                _ => {
                    raw.unknown.push((key, map.next_value()?));
                    continue;
                }
            };
            *slot = Some(map.next_value()?);
        }
        Ok(raw)
    }
}

impl<'de> Deserialize<'de> for RawEvent<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawEventVisitor)
    }
}

struct RawEventVisitor;

impl<'de> Visitor<'de> for RawEventVisitor {
    type Value = RawEvent<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        RawEvent::from_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RawEvent::not_object("an array"))
    }

    visit_scalars_as_kind!(RawEvent::not_object);

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        RawEvent::deserialize(d)
    }
}

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

/// Members of a JSON object read leniently: each known key is taken once, the rest ignored.
struct Members<'a, 'p> {
    members: Vec<(Cow<'a, str>, Field<'a>)>,
    /// JSON path of the object, for messages (`context.page`).
    path: &'p str,
}

impl<'a, 'p> Members<'a, 'p> {
    fn take(&mut self, key: &str) -> Option<Field<'a>> {
        let at = self.members.iter().rposition(|(k, _)| k == key)?;
        Some(self.members.swap_remove(at).1)
    }

    /// A text value; numbers are taken as their decimal text.
    fn text(&mut self, key: &str) -> Result<String, Rejection> {
        let text = match self.take(key) {
            None | Some(Field::Null) => return Ok(String::new()),
            Some(Field::Text(s)) => s.into_owned(),
            Some(Field::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(wrong_kind(
                    &format!("{}.{key}", self.path),
                    "a string",
                    &other,
                ))
            }
        };
        if text.len() > MAX_TEXT_LEN && text.chars().count() > MAX_TEXT_LEN {
            return Err(Rejection::new(
                "too_long",
                format!("{}.{key}", self.path),
                format!("must be at most {MAX_TEXT_LEN} characters"),
            ));
        }
        Ok(text)
    }

    /// A nested object, if sent.
    fn object<'q>(
        &mut self,
        key: &str,
        path: &'q str,
    ) -> Result<Option<Members<'a, 'q>>, Rejection> {
        match self.take(key) {
            None | Some(Field::Null) => Ok(None),
            Some(Field::Object(members)) => Ok(Some(Members { members, path })),
            Some(other) => Err(wrong_kind(path, "an object", &other)),
        }
    }
}

fn parse_context(
    members: Vec<(Cow<'_, str>, Field<'_>)>,
    trust_ip: bool,
) -> Result<Context, Rejection> {
    let mut map = Members {
        members,
        path: "context",
    };
    let mut context = Context::default();
    let ip_text = map.text("ip")?;
    if !ip_text.is_empty() {
        let ip: IpAddr = ip_text.parse().map_err(|_| {
            Rejection::new(
                "invalid_value",
                "context.ip",
                format!("{ip_text:?} is not an IP address"),
            )
        })?;
        if trust_ip {
            context.ip = Some(ip);
        }
    }
    context.user_agent = map.text("user_agent")?;
    context.locale = map.text("locale")?;
    context.library = map.text("library")?;
    if let Some(mut page) = map.object("page", "context.page")? {
        context.page_url = page.text("url")?;
        context.page_path = page.text("path")?;
        context.page_referrer = page.text("referrer")?;
        context.page_title = page.text("title")?;
    }
    if let Some(mut app) = map.object("app", "context.app")? {
        context.app_version = app.text("version")?;
    }
    if let Some(mut device) = map.object("device", "context.device")? {
        context.device_type = device.text("type")?;
        context.device_model = device.text("model")?;
    }
    if let Some(mut os) = map.object("os", "context.os")? {
        context.os_name = os.text("name")?;
        context.os_version = os.text("version")?;
    }
    if let Some(mut campaign) = map.object("campaign", "context.campaign")? {
        context.utm_source = campaign.text("source")?;
        context.utm_medium = campaign.text("medium")?;
        context.utm_campaign = campaign.text("name")?;
        context.utm_term = campaign.text("term")?;
        context.utm_content = campaign.text("content")?;
    }
    Ok(context)
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

#[cfg(test)]
mod tests {
    use super::*;
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
