//! One JSON value of an event ([`Field`]), read leniently from a request body with its text
//! borrowed where it had no escapes, objects' keys made unique, and written back as JSON.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;
use serde_json::{Number, Value};

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
pub(super) struct Key<'a>(pub(super) Cow<'a, str>);

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
