//! Personal data in properties (152-FZ): rules per property key, detection of e-mails, phone numbers
//! and card numbers in other strings, and keyed pseudonymization.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use hmac::{Hmac, Mac};
use regex::Regex;
use sha2::Sha256;

use crate::config::{PiiAction, PrivacySettings};
use crate::ingest::model::{Field, Object};

/// Applies the privacy rules to property values.
#[derive(Clone)]
pub struct Pii {
    salt: Arc<Vec<u8>>,
    rules: Arc<BTreeMap<String, PiiAction>>,
    detected: PiiAction,
}

/// What was done to one event's properties, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PiiOutcome {
    pub by_rule: u32,
    pub detected: u32,
}

fn email_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b")
            .unwrap_or_else(|_| unreachable!())
    })
}

fn phone_re() -> &'static Regex {
    // Candidates: digits with the separators phone numbers are written with.
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\+?\(?\d[\d\s().-]{8,22}\d").unwrap_or_else(|_| unreachable!()))
}

fn card_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").unwrap_or_else(|_| unreachable!()))
}

impl Pii {
    pub fn new(settings: &PrivacySettings) -> Self {
        Self {
            salt: Arc::new(settings.salt.expose().as_bytes().to_vec()),
            rules: Arc::new(
                settings
                    .properties
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), *v))
                    .collect(),
            ),
            detected: settings.detected,
        }
    }

    /// Keyed hash of `value`: stable for one salt, irreversible without it.
    pub fn hash(&self, value: &str) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.salt) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        mac.update(value.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// Applies key rules and detection to every string in `properties`, recursively.
    pub fn apply(&self, properties: &mut Object<'_>) -> PiiOutcome {
        let mut outcome = PiiOutcome::default();
        self.apply_map(properties, &mut outcome);
        outcome
    }

    fn apply_map(&self, map: &mut Object<'_>, outcome: &mut PiiOutcome) {
        map.retain_mut(|(key, value)| {
            let rule = if self.rules.is_empty() {
                None
            } else if key.bytes().any(|b| b.is_ascii_uppercase()) {
                self.rules.get(&key.to_ascii_lowercase()).copied()
            } else {
                self.rules.get(key.as_ref()).copied()
            };
            match rule {
                Some(PiiAction::Keep) => {}
                Some(PiiAction::Drop) => {
                    outcome.by_rule += 1;
                    return false;
                }
                Some(action) => {
                    self.transform_leaves(value, action);
                    outcome.by_rule += 1;
                }
                None => self.detect_in(value, outcome),
            }
            true
        });
    }

    fn transform_leaves(&self, value: &mut Field<'_>, action: PiiAction) {
        match value {
            Field::Text(s) => *s = self.transform(s, action, Kind::Generic).into(),
            Field::Number(n) => {
                *value = Field::Text(self.transform(&n.to_string(), action, Kind::Generic).into())
            }
            Field::Array(items) => items
                .iter_mut()
                .for_each(|v| self.transform_leaves(v, action)),
            Field::Object(map) => map
                .iter_mut()
                .for_each(|(_, v)| self.transform_leaves(v, action)),
            Field::Null | Field::Bool(_) => {}
        }
    }

    fn detect_in(&self, value: &mut Field<'_>, outcome: &mut PiiOutcome) {
        match value {
            Field::Text(s) => {
                if let Some(replaced) = self.detect(s) {
                    *s = replaced.into();
                    outcome.detected += 1;
                }
            }
            Field::Array(items) => items.iter_mut().for_each(|v| self.detect_in(v, outcome)),
            Field::Object(map) => self.apply_map(map, outcome),
            Field::Null | Field::Bool(_) | Field::Number(_) => {}
        }
    }

    /// The string with personal data replaced, or `None` when it holds none.
    pub fn detect(&self, text: &str) -> Option<String> {
        if self.detected == PiiAction::Keep {
            return None;
        }
        let has_at = text.contains('@');
        let digits = text.bytes().filter(u8::is_ascii_digit).count();
        if !has_at && digits < 10 {
            return None;
        }
        let mut out = text.to_string();
        let mut changed = false;
        if has_at {
            changed |= self.replace(&mut out, email_re(), Kind::Email, |_| true);
        }
        if digits >= 13 {
            changed |= self.replace(&mut out, card_re(), Kind::Card, luhn);
        }
        if digits >= 10 {
            changed |= self.replace(&mut out, phone_re(), Kind::Phone, looks_like_phone);
        }
        changed.then_some(out)
    }

    fn replace(
        &self,
        text: &mut String,
        re: &Regex,
        kind: Kind,
        accept: impl Fn(&str) -> bool,
    ) -> bool {
        let mut changed = false;
        let replaced = re.replace_all(text, |caps: &regex::Captures<'_>| {
            let found = &caps[0];
            if accept(found) {
                changed = true;
                if self.detected == PiiAction::Drop {
                    "[removed]".to_string()
                } else {
                    self.transform(found, self.detected, kind)
                }
            } else {
                found.to_string()
            }
        });
        if changed {
            *text = replaced.into_owned();
        }
        changed
    }

    fn transform(&self, value: &str, action: PiiAction, kind: Kind) -> String {
        match action {
            PiiAction::Keep => value.to_string(),
            PiiAction::Drop => String::new(),
            PiiAction::Hash => format!("hmac:{}", self.hash(value)),
            PiiAction::Mask => mask(value, kind),
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Email,
    Phone,
    Card,
    Generic,
}

fn mask(value: &str, kind: Kind) -> String {
    let kind = match kind {
        Kind::Generic if email_re().is_match(value) => Kind::Email,
        other => other,
    };
    match kind {
        Kind::Email => match value.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}***@{domain}")
            }
            None => "***".into(),
        },
        // Keep the last two digits of a phone and the last four of a card.
        Kind::Phone => mask_digits(value, 2),
        Kind::Card => mask_digits(value, 4),
        Kind::Generic => {
            let digits = value.bytes().filter(u8::is_ascii_digit).count();
            if digits >= 6 {
                mask_digits(value, 2)
            } else {
                "***".into()
            }
        }
    }
}

fn mask_digits(value: &str, keep: usize) -> String {
    let total = value.bytes().filter(u8::is_ascii_digit).count();
    let mut seen = 0;
    value
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen + keep > total {
                    c
                } else {
                    '*'
                }
            } else {
                c
            }
        })
        .collect()
}

/// A phone number has 10-15 digits and is written like one: with a leading `+` or with separators.
/// Bare digit runs are left alone, so order and product ids are not mistaken for phones.
fn looks_like_phone(candidate: &str) -> bool {
    let digits = candidate.bytes().filter(u8::is_ascii_digit).count();
    let separators = candidate
        .bytes()
        .filter(|b| matches!(b, b' ' | b'-' | b'(' | b')' | b'.'))
        .count();
    (10..=15).contains(&digits) && (candidate.starts_with('+') || separators >= 2)
}

/// The Luhn checksum of card numbers (separators ignored).
pub fn luhn(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::ingest::model::JsonObject;
    use serde_json::{json, Map, Value};

    fn pii() -> Pii {
        Pii::new(&PrivacySettings {
            salt: Secret::new("pepper"),
            ..Default::default()
        })
    }

    /// The outcome and the properties after the rules, as JSON.
    fn applied(value: Value) -> (PiiOutcome, Map<String, Value>) {
        use serde::Deserialize;
        let Field::Object(mut object) = Field::deserialize(value).unwrap() else {
            panic!("properties are an object")
        };
        let outcome = pii().apply(&mut object);
        let json = serde_json::to_value(JsonObject(&object)).unwrap();
        (outcome, json.as_object().unwrap().clone())
    }

    #[test]
    fn key_rules_hash_mask_and_drop_case_insensitively() {
        let (outcome, p) = applied(
            json!({"Email": "ivan@example.ru", "phone": "+7 912 345-67-89", "Name": "Ivan", "plan": "pro"}),
        );
        assert_eq!(outcome.by_rule, 3);
        assert_eq!(
            p["Email"],
            format!("hmac:{}", pii().hash("ivan@example.ru"))
        );
        assert_eq!(p["phone"], "+* *** ***-**-89");
        assert!(!p.contains_key("Name"));
        assert_eq!(p["plan"], "pro");
    }

    #[test]
    fn emails_phones_and_luhn_valid_cards_are_detected_in_free_text() {
        let (outcome, p) = applied(json!({
            "note": "write to anna.k@mail.ru or call +7 (495) 123-45-67",
            "nested": {"card": "pay 4111 1111 1111 1111 now"},
            "list": ["x", "olga@ya.ru"],
        }));
        assert_eq!(outcome.detected, 3);
        assert_eq!(
            p["note"],
            "write to a***@mail.ru or call +* (***) ***-**-67"
        );
        assert_eq!(p["nested"]["card"], "pay **** **** **** 1111 now");
        assert_eq!(p["list"][1], "o***@ya.ru");
    }

    #[test]
    fn ids_that_are_not_personal_data_are_left_alone() {
        let (outcome, p) =
            applied(json!({"order_id": "1234567890", "sku": "4111111111111112", "v": "1.2.3"}));
        assert_eq!(outcome, PiiOutcome::default());
        assert_eq!(p["order_id"], "1234567890");
        assert_eq!(p["sku"], "4111111111111112", "fails Luhn, so not a card");
    }

    #[test]
    fn hashing_depends_on_the_salt() {
        let other = Pii::new(&PrivacySettings {
            salt: Secret::new("other"),
            ..Default::default()
        });
        assert_ne!(pii().hash("u1"), other.hash("u1"));
        assert_eq!(pii().hash("u1"), pii().hash("u1"));
    }

    #[test]
    fn luhn_accepts_test_cards_only() {
        assert!(luhn("4111-1111-1111-1111"));
        assert!(luhn("5500 0000 0000 0004"));
        assert!(!luhn("4111 1111 1111 1112"));
    }
}
