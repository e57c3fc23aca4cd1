//! One event as sent ([`RawEvent`]): the model's fields picked out while parsing.

use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::field::{visit_scalars_as_kind, Field, Key, Object};

/// One event as sent, before validation: the model's fields picked out while parsing (no map of
/// keys is built), other top-level fields kept aside.
#[derive(Debug, Default)]
pub struct RawEvent<'a> {
    /// The JSON type sent when the event is not an object.
    pub(super) not_object: Option<&'static str>,
    pub(super) event: Option<Field<'a>>,
    pub(super) event_id: Option<Field<'a>>,
    pub(super) timestamp: Option<Field<'a>>,
    pub(super) user_id: Option<Field<'a>>,
    pub(super) anonymous_id: Option<Field<'a>>,
    pub(super) session_id: Option<Field<'a>>,
    pub(super) platform: Option<Field<'a>>,
    pub(super) context: Option<Field<'a>>,
    pub(super) properties: Option<Field<'a>>,
    pub(super) traits: Option<Field<'a>>,
    pub(super) unknown: Object<'a>,
}

impl<'a> RawEvent<'a> {
    pub(super) fn not_object(kind: &'static str) -> Self {
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
