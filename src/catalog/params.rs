//! Typed template parameters: declaration, validation of caller input, and the values bound to
//! ClickHouse as server-side parameters.

use chrono::{Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Scalar types a parameter may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    String,
    Date,
    DateTime,
    Bool,
    Uuid,
    Int(u8),
    UInt(u8),
    Float(u8),
}

/// A parameter's ClickHouse type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Scalar(Scalar),
    Array(Scalar),
}

impl ParamType {
    /// Parses a ClickHouse type name: `String`, `Date`, `DateTime`, `Bool`, `(U)Int8…64`,
    /// `Float32/64`, `LowCardinality(String)`, or `Array(` one of those `)`.
    pub fn parse(text: &str) -> Option<Self> {
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if let Some(inner) = text
            .strip_prefix("Array(")
            .and_then(|t| t.strip_suffix(')'))
        {
            return scalar(inner).map(ParamType::Array);
        }
        scalar(&text).map(ParamType::Scalar)
    }

    /// The canonical ClickHouse spelling, used in `{name:Type}` and in docs.
    pub fn clickhouse(&self) -> String {
        match self {
            Self::Scalar(s) => scalar_name(*s),
            Self::Array(s) => format!("Array({})", scalar_name(*s)),
        }
    }

    /// JSON Schema of a value of this type (OpenAPI).
    pub fn json_schema(&self) -> Value {
        match self {
            Self::Scalar(s) => scalar_schema(*s),
            Self::Array(s) => serde_json::json!({"type": "array", "items": scalar_schema(*s)}),
        }
    }
}

fn scalar(text: &str) -> Option<Scalar> {
    let text = text
        .strip_prefix("LowCardinality(")
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(text);
    Some(match text {
        "String" => Scalar::String,
        "Date" | "Date32" => Scalar::Date,
        "DateTime" => Scalar::DateTime,
        "Bool" => Scalar::Bool,
        "UUID" => Scalar::Uuid,
        "Float32" => Scalar::Float(32),
        "Float64" => Scalar::Float(64),
        other => {
            let (unsigned, bits) = match other.strip_prefix("UInt") {
                Some(bits) => (true, bits),
                None => (false, other.strip_prefix("Int")?),
            };
            let bits: u8 = bits.parse().ok().filter(|b| [8, 16, 32, 64].contains(b))?;
            if unsigned {
                Scalar::UInt(bits)
            } else {
                Scalar::Int(bits)
            }
        }
    })
}

fn scalar_name(s: Scalar) -> String {
    match s {
        Scalar::String => "String".into(),
        Scalar::Date => "Date".into(),
        Scalar::DateTime => "DateTime".into(),
        Scalar::Bool => "Bool".into(),
        Scalar::Uuid => "UUID".into(),
        Scalar::Int(b) => format!("Int{b}"),
        Scalar::UInt(b) => format!("UInt{b}"),
        Scalar::Float(b) => format!("Float{b}"),
    }
}

fn scalar_schema(s: Scalar) -> Value {
    match s {
        Scalar::String => serde_json::json!({"type": "string"}),
        Scalar::Date => {
            // No `format: date`: the relative forms are valid values too.
            serde_json::json!({"type": "string", "description": "YYYY-MM-DD, or today, today-7d, today+1d", "example": "today-7d"})
        }
        Scalar::DateTime => {
            serde_json::json!({"type": "string", "description": "RFC 3339 or YYYY-MM-DD hh:mm:ss (UTC), or now, now-24h, now-30s, today-7d", "example": "now-24h"})
        }
        Scalar::Bool => serde_json::json!({"type": "boolean"}),
        Scalar::Uuid => serde_json::json!({"type": "string", "format": "uuid"}),
        Scalar::Int(_) | Scalar::UInt(_) => serde_json::json!({"type": "integer"}),
        Scalar::Float(_) => serde_json::json!({"type": "number"}),
    }
}

/// A validated value, serialized the way the `clickhouse` crate binds server-side parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    Str(String),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Array(Vec<ParamValue>),
}

impl ParamValue {
    /// The value as seen by templates (for shape decisions) and in JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Str(s) => Value::String(s.clone()),
            Self::Int(i) => Value::from(*i),
            Self::UInt(u) => Value::from(*u),
            Self::Float(f) => Value::from(*f),
            Self::Bool(b) => Value::Bool(*b),
            Self::Array(items) => Value::Array(items.iter().map(Self::to_json).collect()),
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Int(i) => Some(*i as f64),
            Self::UInt(u) => Some(*u as f64),
            Self::Float(f) => Some(*f),
            _ => None,
        }
    }
}

/// A parameter as declared in a template's header.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(rename = "type")]
    pub ty_name: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<Value>,
    #[serde(default)]
    pub description: String,
    /// The only values accepted (for arrays: of each item).
    #[serde(default)]
    pub allowed: Option<Vec<Value>>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub min_items: Option<usize>,
    #[serde(default)]
    pub max_items: Option<usize>,
    #[serde(skip)]
    pub ty: Option<ParamType>,
}

/// Why a value is not acceptable; the message names the rule.
pub type Invalid = String;

impl ParamSpec {
    /// An optional parameter of ClickHouse type `ty` with no rules of its own.
    pub fn of_type(ty: &str) -> Self {
        Self {
            ty_name: ty.into(),
            required: false,
            default: None,
            description: String::new(),
            allowed: None,
            min: None,
            max: None,
            min_items: None,
            max_items: None,
            ty: ParamType::parse(ty),
        }
    }

    pub fn param_type(&self) -> ParamType {
        self.ty.unwrap_or(ParamType::Scalar(Scalar::String))
    }

    /// Validates and normalizes a caller's value (strings from query strings are converted).
    pub fn coerce(&self, value: &Value, now: chrono::DateTime<Utc>) -> Result<ParamValue, Invalid> {
        match self.param_type() {
            ParamType::Scalar(s) => {
                let v = coerce_scalar(s, value, now)?;
                self.check_scalar(&v)?;
                Ok(v)
            }
            ParamType::Array(s) => {
                let items: Vec<Value> = match value {
                    Value::Array(items) => items.clone(),
                    // A query string gives a comma-separated list.
                    Value::String(text) if text.is_empty() => Vec::new(),
                    Value::String(text) => text
                        .split(',')
                        .map(|t| Value::String(t.trim().to_string()))
                        .collect(),
                    other => vec![other.clone()],
                };
                if let Some(min) = self.min_items {
                    if items.len() < min {
                        return Err(format!(
                            "must have at least {min} items, got {}",
                            items.len()
                        ));
                    }
                }
                if let Some(max) = self.max_items {
                    if items.len() > max {
                        return Err(format!(
                            "must have at most {max} items, got {}",
                            items.len()
                        ));
                    }
                }
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let v = coerce_scalar(s, item, now).map_err(|e| format!("item {i}: {e}"))?;
                    self.check_scalar(&v)
                        .map_err(|e| format!("item {i}: {e}"))?;
                    out.push(v);
                }
                Ok(ParamValue::Array(out))
            }
        }
    }

    fn check_scalar(&self, value: &ParamValue) -> Result<(), Invalid> {
        if let Some(allowed) = &self.allowed {
            let json = value.to_json();
            if !allowed
                .iter()
                .any(|a| a == &json || a.as_str().is_some_and(|s| Some(s) == json.as_str()))
            {
                let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
                return Err(format!("must be one of {}, got {json}", list.join(", ")));
            }
        }
        if let Some(number) = value.as_f64() {
            if let Some(min) = self.min {
                if number < min {
                    return Err(format!("must be at least {min}, got {number}"));
                }
            }
            if let Some(max) = self.max {
                if number > max {
                    return Err(format!("must be at most {max}, got {number}"));
                }
            }
        }
        Ok(())
    }
}

fn coerce_scalar(
    s: Scalar,
    value: &Value,
    now: chrono::DateTime<Utc>,
) -> Result<ParamValue, Invalid> {
    let text = match value {
        Value::String(t) => Some(t.trim()),
        _ => None,
    };
    match s {
        Scalar::String => match value {
            Value::String(t) => Ok(ParamValue::Str(t.clone())),
            Value::Number(n) => Ok(ParamValue::Str(n.to_string())),
            other => Err(format!("must be a string, got {}", kind(other))),
        },
        Scalar::Uuid => text
            .and_then(|t| uuid::Uuid::parse_str(t).ok())
            .map(|u| ParamValue::Str(u.hyphenated().to_string()))
            .ok_or_else(|| format!("must be a UUID, got {}", kind(value))),
        Scalar::Bool => match (value, text) {
            (Value::Bool(b), _) => Ok(ParamValue::Bool(*b)),
            (_, Some("true" | "1")) => Ok(ParamValue::Bool(true)),
            (_, Some("false" | "0")) => Ok(ParamValue::Bool(false)),
            (other, _) => Err(format!("must be true or false, got {}", kind(other))),
        },
        Scalar::Int(bits) => {
            let n = match (value, text) {
                (Value::Number(n), _) => n.as_i64(),
                (_, Some(t)) => t.parse::<i64>().ok(),
                _ => None,
            }
            .ok_or_else(|| format!("must be an integer, got {}", kind(value)))?;
            let limit = if bits == 64 {
                i64::MAX
            } else {
                (1i64 << (bits - 1)) - 1
            };
            if n > limit || n < -limit - 1 {
                return Err(format!("does not fit Int{bits}"));
            }
            Ok(ParamValue::Int(n))
        }
        Scalar::UInt(bits) => {
            let n = match (value, text) {
                (Value::Number(n), _) => n.as_u64(),
                (_, Some(t)) => t.parse::<u64>().ok(),
                _ => None,
            }
            .ok_or_else(|| format!("must be a non-negative integer, got {}", kind(value)))?;
            if bits < 64 && n >= (1u64 << bits) {
                return Err(format!("does not fit UInt{bits}"));
            }
            Ok(ParamValue::UInt(n))
        }
        Scalar::Float(_) => {
            let n = match (value, text) {
                (Value::Number(n), _) => n.as_f64(),
                (_, Some(t)) => t.parse::<f64>().ok(),
                _ => None,
            }
            .filter(|f| f.is_finite())
            .ok_or_else(|| format!("must be a number, got {}", kind(value)))?;
            Ok(ParamValue::Float(n))
        }
        Scalar::Date => {
            let t =
                text.ok_or_else(|| format!("must be a date (YYYY-MM-DD), got {}", kind(value)))?;
            let date = match relative(t, now) {
                Some(moment) => moment?.date_naive(),
                None => NaiveDate::parse_from_str(t, "%Y-%m-%d")
                    .map_err(|_| format!("{t:?} is not a date (YYYY-MM-DD, today, today-7d)"))?,
            };
            let (first, last) = DATE_RANGE;
            if date < first || date > last {
                return Err(format!(
                    "{t:?} is {date}, outside the dates ClickHouse can store ({first} to {last})"
                ));
            }
            Ok(ParamValue::Str(date.format("%Y-%m-%d").to_string()))
        }
        Scalar::DateTime => {
            let t = text.ok_or_else(|| format!("must be a date-time, got {}", kind(value)))?;
            let parsed = relative(t, now)
                .transpose()?
                .or_else(|| {
                    chrono::DateTime::parse_from_rfc3339(t)
                        .ok()
                        .map(|d| d.with_timezone(&Utc))
                })
                .or_else(|| {
                    NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S")
                        .ok()
                        .map(|n| Utc.from_utc_datetime(&n))
                })
                .or_else(|| {
                    NaiveDate::parse_from_str(t, "%Y-%m-%d")
                        .ok()
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                        .map(|n| Utc.from_utc_datetime(&n))
                })
                .ok_or_else(|| {
                    format!(
                        "{t:?} is not a date-time (RFC 3339, YYYY-MM-DD hh:mm:ss, now-24h, today)"
                    )
                })?;
            let (first, last) = DATE_TIME_RANGE;
            let naive = parsed.naive_utc();
            if naive < first || naive > last {
                return Err(format!(
                    "{t:?} is {}, outside the date-times ClickHouse can store ({first} to {last} UTC)",
                    parsed.format("%Y-%m-%d %H:%M:%S")
                ));
            }
            Ok(ParamValue::Str(
                parsed.format("%Y-%m-%d %H:%M:%S").to_string(),
            ))
        }
    }
}

/// The dates a ClickHouse `Date` holds.
pub const DATE_RANGE: (NaiveDate, NaiveDate) = (
    match NaiveDate::from_ymd_opt(1970, 1, 1) {
        Some(d) => d,
        None => NaiveDate::MIN,
    },
    match NaiveDate::from_ymd_opt(2149, 6, 6) {
        Some(d) => d,
        None => NaiveDate::MAX,
    },
);

/// The moments a ClickHouse `DateTime` holds (UTC).
pub const DATE_TIME_RANGE: (NaiveDateTime, NaiveDateTime) = (
    match NaiveDate::from_ymd_opt(1970, 1, 1) {
        Some(d) => match d.and_hms_opt(0, 0, 0) {
            Some(t) => t,
            None => NaiveDateTime::MIN,
        },
        None => NaiveDateTime::MIN,
    },
    match NaiveDate::from_ymd_opt(2106, 2, 7) {
        Some(d) => match d.and_hms_opt(6, 28, 15) {
            Some(t) => t,
            None => NaiveDateTime::MAX,
        },
        None => NaiveDateTime::MAX,
    },
);

/// `now`, `today`, and those followed by `±N` and a unit `s`, `m`, `h`, `d` or `w` (UTC).
/// `None`: not a relative form; `Some(Err)`: a relative form whose offset cannot be applied.
pub fn relative(
    text: &str,
    now: chrono::DateTime<Utc>,
) -> Option<Result<chrono::DateTime<Utc>, Invalid>> {
    let (base, rest) = if let Some(rest) = text.strip_prefix("today") {
        (
            Utc.from_utc_datetime(&now.date_naive().and_hms_opt(0, 0, 0)?),
            rest,
        )
    } else if let Some(rest) = text.strip_prefix("now") {
        (now, rest)
    } else {
        return None;
    };
    let rest = rest.trim();
    if rest.is_empty() {
        return Some(Ok(base));
    }
    let (sign, amount) = match rest.split_at_checked(1)? {
        ("-", a) => (-1, a.trim()),
        ("+", a) => (1, a.trim()),
        _ => return None,
    };
    let unit = amount.chars().last()?;
    let n: i64 = amount[..amount.len() - unit.len_utf8()].parse().ok()?;
    let delta = match unit {
        's' => Duration::try_seconds(n),
        'm' => Duration::try_minutes(n),
        'h' => Duration::try_hours(n),
        'd' => Duration::try_days(n),
        'w' => Duration::try_weeks(n),
        _ => return None,
    };
    let moved = delta.and_then(|d| {
        if sign < 0 {
            base.checked_sub_signed(d)
        } else {
            base.checked_add_signed(d)
        }
    });
    Some(
        moved.ok_or_else(|| {
            format!("{text:?} moves too far from {base}: the offset is out of range")
        }),
    )
}

fn kind(value: &Value) -> &'static str {
    crate::ingest::model::type_name(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(ty: &str) -> ParamSpec {
        ParamSpec::of_type(ty)
    }

    fn now() -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 15, 30, 0).unwrap()
    }

    #[test]
    fn types_parse_and_print_canonically() {
        assert_eq!(
            ParamType::parse("Array( LowCardinality(String) )")
                .unwrap()
                .clickhouse(),
            "Array(String)"
        );
        assert_eq!(
            ParamType::parse("UInt16"),
            Some(ParamType::Scalar(Scalar::UInt(16)))
        );
        assert_eq!(ParamType::parse("Map(String, String)"), None);
        assert_eq!(ParamType::parse("Int128"), None);
    }

    #[test]
    fn dates_accept_iso_and_relative_forms() {
        let date = spec("Date");
        assert_eq!(
            date.coerce(&json!("2026-01-31"), now()),
            Ok(ParamValue::Str("2026-01-31".into()))
        );
        assert_eq!(
            date.coerce(&json!("today-7d"), now()),
            Ok(ParamValue::Str("2026-11-17".into()))
        );
        assert!(date
            .coerce(&json!("31.01.2026"), now())
            .unwrap_err()
            .contains("not a date"));
        let datetime = spec("DateTime");
        assert_eq!(
            datetime.coerce(&json!("now-2h"), now()),
            Ok(ParamValue::Str("2026-11-24 13:30:00".into()))
        );
        assert_eq!(
            datetime.coerce(&json!("2026-11-24T10:00:00+03:00"), now()),
            Ok(ParamValue::Str("2026-11-24 07:00:00".into()))
        );
    }

    #[test]
    fn relative_dates_out_of_range_are_refused_not_computed() {
        for (ty, text) in [
            ("Date", "today+999999999w"),
            ("Date", "today-999999d"),
            ("Date", "now-9223372036854775807s"),
            ("Date", "1969-12-31"),
            ("Date", "2149-06-07"),
            ("DateTime", "now-9223372036854775807s"),
            ("DateTime", "now+9223372036854775807w"),
            ("DateTime", "today-999999d"),
            ("DateTime", "2106-02-07 06:28:16"),
            ("DateTime", "1960-01-01T00:00:00Z"),
        ] {
            let error = spec(ty).coerce(&json!(text), now()).unwrap_err();
            assert!(
                error.contains("outside") || error.contains("out of range"),
                "{ty} {text}: {error}"
            );
        }
        assert_eq!(
            spec("Date").coerce(&json!("2149-06-06"), now()),
            Ok(ParamValue::Str("2149-06-06".into()))
        );
        assert_eq!(
            spec("DateTime").coerce(&json!("1970-01-01 00:00:00"), now()),
            Ok(ParamValue::Str("1970-01-01 00:00:00".into()))
        );
        assert!(spec("Date").coerce(&json!("today-é"), now()).is_err());
    }

    #[test]
    fn numbers_are_range_checked_and_strings_from_query_strings_converted() {
        let mut periods = spec("UInt8");
        periods.min = Some(1.0);
        periods.max = Some(12.0);
        assert_eq!(periods.coerce(&json!("6"), now()), Ok(ParamValue::UInt(6)));
        assert!(periods
            .coerce(&json!(13), now())
            .unwrap_err()
            .contains("at most 12"));
        assert!(periods
            .coerce(&json!(-1), now())
            .unwrap_err()
            .contains("non-negative"));
        assert!(spec("UInt8")
            .coerce(&json!(300), now())
            .unwrap_err()
            .contains("UInt8"));
        assert!(spec("Int32")
            .coerce(&json!("x"), now())
            .unwrap_err()
            .contains("integer"));
    }

    #[test]
    fn arrays_take_json_arrays_or_comma_lists_with_item_rules() {
        let mut steps = spec("Array(String)");
        steps.min_items = Some(2);
        steps.max_items = Some(3);
        assert_eq!(
            steps.coerce(&json!("view, cart"), now()),
            Ok(ParamValue::Array(vec![
                ParamValue::Str("view".into()),
                ParamValue::Str("cart".into())
            ]))
        );
        assert!(steps
            .coerce(&json!(["a"]), now())
            .unwrap_err()
            .contains("at least 2"));
        assert!(steps
            .coerce(&json!(["a", "b", "c", "d"]), now())
            .unwrap_err()
            .contains("at most 3"));
        assert!(steps
            .coerce(&json!(["a", {"x": 1}]), now())
            .unwrap_err()
            .starts_with("item 1"));
    }

    #[test]
    fn allowed_values_are_enforced() {
        let mut granularity = spec("String");
        granularity.allowed = Some(vec![json!("day"), json!("week")]);
        assert!(granularity.coerce(&json!("day"), now()).is_ok());
        let err = granularity.coerce(&json!("hour; DROP"), now()).unwrap_err();
        assert!(err.contains("must be one of \"day\", \"week\""), "{err}");
    }
}
