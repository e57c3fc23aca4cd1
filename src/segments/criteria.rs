//! The segment criteria DSL and its compilation to parameterized ClickHouse SQL.
//!
//! Criteria are JSON: conditions on behaviour, aggregates and user properties, combined with
//! `and`, `or` and `not` (docs/segments.md). Compilation produces one `SELECT actor_id …` whose
//! every value — event names, property names, numbers, strings, lists — is a `{pN:Type}` server-side
//! parameter; only fixed column names and operators chosen from closed lists appear in the text.
//! Invalid criteria are refused with the JSON path of the problem (`and[1].event.min_count`).

use std::fmt::Write as _;

use serde_json::Value;

/// The compiled query and its parameters (name, ClickHouse type, value as text).
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub sql: String,
    pub params: Vec<(String, String, String)>,
}

/// A problem in the criteria, at `path`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("criteria{path}: {message}")]
pub struct CriteriaError {
    pub path: String,
    pub message: String,
}

/// Event columns a property filter may name directly; other names are read from `properties`.
const COLUMNS: &[&str] = &[
    "platform",
    "country",
    "region",
    "city",
    "locale",
    "browser",
    "os",
    "device_type",
    "app_version",
    "item_id",
    "developer_id",
    "currency",
    "channel",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "referrer_host",
    "page_path",
];

/// User fields, from the actor's events.
const USER_FIELDS: &[&str] = &[
    "country",
    "platform",
    "region",
    "city",
    "locale",
    "device_type",
    "os",
];

/// Longest lookback, in days.
const MAX_DAYS: u64 = 3650;
/// Deepest nesting of and/or/not.
const MAX_DEPTH: usize = 8;
/// Most conditions in one criteria document.
const MAX_CONDITIONS: usize = 50;

struct Compiler {
    params: Vec<(String, String, String)>,
    conditions: usize,
}

fn error(path: &str, message: impl Into<String>) -> CriteriaError {
    CriteriaError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// A ClickHouse string value for an `Array(String)` parameter: `['a', 'b']`, escaped.
fn string_array(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| crate::access::policy::sql_string(s))
        .collect();
    format!("[{}]", quoted.join(", "))
}

impl Compiler {
    fn bind(&mut self, ty: &str, value: String) -> String {
        let name = format!("p{}", self.params.len());
        let placeholder = format!("{{{name}:{ty}}}");
        self.params.push((name, ty.to_string(), value));
        placeholder
    }

    fn object<'a>(
        &self,
        value: &'a Value,
        path: &str,
    ) -> Result<&'a serde_json::Map<String, Value>, CriteriaError> {
        value
            .as_object()
            .ok_or_else(|| error(path, "must be an object"))
    }

    fn condition(
        &mut self,
        value: &Value,
        path: &str,
        depth: usize,
    ) -> Result<String, CriteriaError> {
        if depth > MAX_DEPTH {
            return Err(error(
                path,
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let object = self.object(value, path)?;
        if object.len() != 1 {
            let keys: Vec<&String> = object.keys().collect();
            return Err(error(
                path,
                format!("must have exactly one of and, or, not, event, revenue, last_seen, user, trait (found {keys:?})"),
            ));
        }
        let Some((key, inner)) = object.iter().next() else {
            return Err(error(path, "is empty"));
        };
        let here = format!("{path}.{key}");
        match key.as_str() {
            "and" | "or" => {
                let items = inner
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| error(&here, "must be a non-empty array of conditions"))?;
                let parts = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.condition(item, &format!("{here}[{i}]"), depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                let joiner = if key == "and" { " AND " } else { " OR " };
                Ok(format!("({})", parts.join(joiner)))
            }
            "not" => Ok(format!(
                "(NOT {})",
                self.condition(inner, &here, depth + 1)?
            )),
            _ => {
                self.conditions += 1;
                if self.conditions > MAX_CONDITIONS {
                    return Err(error(
                        path,
                        format!("more than {MAX_CONDITIONS} conditions"),
                    ));
                }
                match key.as_str() {
                    "event" => self.event(inner, &here),
                    "revenue" => self.revenue(inner, &here),
                    "last_seen" => self.last_seen(inner, &here),
                    "user" => self.user(inner, &here),
                    "trait" => self.user_trait(inner, &here),
                    other => Err(error(path, format!("unknown condition {other:?} (and, or, not, event, revenue, last_seen, user, trait)"))),
                }
            }
        }
    }

    fn fields<'a>(
        &self,
        value: &'a Value,
        path: &str,
        allowed: &[&str],
    ) -> Result<&'a serde_json::Map<String, Value>, CriteriaError> {
        let object = self.object(value, path)?;
        if let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(error(
                &format!("{path}.{unknown}"),
                format!("unknown field (allowed: {})", allowed.join(", ")),
            ));
        }
        Ok(object)
    }

    fn count(
        &self,
        object: &serde_json::Map<String, Value>,
        field: &str,
        path: &str,
        max: u64,
    ) -> Result<Option<u64>, CriteriaError> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_u64()
                .filter(|n| *n <= max)
                .map(Some)
                .ok_or_else(|| {
                    error(
                        &format!("{path}.{field}"),
                        format!("must be a whole number from 0 to {max}"),
                    )
                }),
        }
    }

    fn days(
        &mut self,
        object: &serde_json::Map<String, Value>,
        field: &str,
        path: &str,
    ) -> Result<Option<String>, CriteriaError> {
        match self.count(object, field, path, MAX_DAYS)? {
            Some(0) => Err(error(&format!("{path}.{field}"), "must be at least 1")),
            Some(days) => Ok(Some(self.bind("UInt32", days.to_string()))),
            None => Ok(None),
        }
    }

    fn text(
        &self,
        object: &serde_json::Map<String, Value>,
        field: &str,
        path: &str,
    ) -> Result<Option<String>, CriteriaError> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 200 => Ok(Some(s.clone())),
            Some(_) => Err(error(
                &format!("{path}.{field}"),
                "must be a non-empty string of at most 200 characters",
            )),
        }
    }

    /// `{"event": "purchase", "min_count": 2, "max_count": 5, "within_days": 30, "where": […]}`
    fn event(&mut self, value: &Value, path: &str) -> Result<String, CriteriaError> {
        let object = self.fields(
            value,
            path,
            &["name", "min_count", "max_count", "within_days", "where"],
        )?;
        let name = self
            .text(object, "name", path)?
            .ok_or_else(|| error(&format!("{path}.name"), "is required: the event name"))?;
        let min = self.count(object, "min_count", path, 1_000_000_000)?;
        let max = self.count(object, "max_count", path, 1_000_000_000)?;
        if let (Some(min), Some(max)) = (min, max) {
            if min > max {
                return Err(error(
                    &format!("{path}.max_count"),
                    "must not be less than min_count",
                ));
            }
        }
        let mut filter = format!("event = {}", self.bind("String", name));
        if let Some(days) = self.days(object, "within_days", path)? {
            let _ = write!(filter, " AND timestamp >= now() - toIntervalDay({days})");
        }
        if let Some(conditions) = object.get("where") {
            let items = conditions.as_array().ok_or_else(|| {
                error(
                    &format!("{path}.where"),
                    "must be an array of property filters",
                )
            })?;
            for (i, item) in items.iter().enumerate() {
                let clause = self.property_filter(item, &format!("{path}.where[{i}]"))?;
                let _ = write!(filter, " AND {clause}");
            }
        }
        let min = min.unwrap_or(1);
        // "at most N times" includes actors who never did it: the complement of "more than N".
        match max {
            Some(max) if min == 0 => {
                let max = self.bind("UInt64", max.to_string());
                Ok(format!("actor_id NOT IN (SELECT actor_id FROM events WHERE {filter} GROUP BY actor_id HAVING count() > {max})"))
            }
            Some(max) => {
                let (min, max) = (
                    self.bind("UInt64", min.to_string()),
                    self.bind("UInt64", max.to_string()),
                );
                Ok(format!("actor_id IN (SELECT actor_id FROM events WHERE {filter} GROUP BY actor_id HAVING count() >= {min} AND count() <= {max})"))
            }
            None if min == 0 => Ok("1".to_string()),
            None => {
                let min = self.bind("UInt64", min.to_string());
                Ok(format!("actor_id IN (SELECT actor_id FROM events WHERE {filter} GROUP BY actor_id HAVING count() >= {min})"))
            }
        }
    }

    /// `{"property": "currency", "op": "=", "value": "USD"}`; ops `=`, `!=`, `in`, `not_in`,
    /// `contains`, `>`, `>=`, `<`, `<=` (numbers).
    fn property_filter(&mut self, value: &Value, path: &str) -> Result<String, CriteriaError> {
        let object = self.fields(value, path, &["property", "op", "value"])?;
        let property = self
            .text(object, "property", path)?
            .ok_or_else(|| error(&format!("{path}.property"), "is required"))?;
        let op = self.text(object, "op", path)?.unwrap_or_else(|| "=".into());
        // A lifted column by its fixed name, anything else read from the properties JSON.
        let column =
            |compiler: &mut Self, numeric: bool| match COLUMNS.iter().find(|c| **c == property) {
                Some(column) if !numeric => format!("toString({column})"),
                _ => {
                    let name = compiler.bind("String", property.clone());
                    if numeric {
                        format!("JSONExtractFloat(properties, {name})")
                    } else {
                        format!("JSONExtractString(properties, {name})")
                    }
                }
            };
        let value_path = format!("{path}.value");
        let target = object
            .get("value")
            .ok_or_else(|| error(&value_path, "is required"))?;
        self.compare(&op, target, &value_path, &format!("{path}.op"), column)
    }

    fn compare(
        &mut self,
        op: &str,
        target: &Value,
        value_path: &str,
        op_path: &str,
        column: impl Fn(&mut Self, bool) -> String,
    ) -> Result<String, CriteriaError> {
        let scalar = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        match op {
            "=" | "!=" | "contains" => {
                let text = scalar(target)
                    .ok_or_else(|| error(value_path, "must be a string, number or boolean"))?;
                let lhs = column(self, false);
                let rhs = self.bind("String", text);
                Ok(match op {
                    "=" => format!("{lhs} = {rhs}"),
                    "!=" => format!("{lhs} != {rhs}"),
                    _ => format!("position({lhs}, {rhs}) > 0"),
                })
            }
            "in" | "not_in" => {
                let items = target
                    .as_array()
                    .filter(|a| !a.is_empty() && a.len() <= 1000)
                    .ok_or_else(|| {
                        error(
                            value_path,
                            "must be a non-empty array of at most 1000 values",
                        )
                    })?;
                let texts = items
                    .iter()
                    .map(|v| {
                        scalar(v).ok_or_else(|| error(value_path, "must hold strings or numbers"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let lhs = column(self, false);
                let rhs = self.bind("Array(String)", string_array(&texts));
                Ok(if op == "in" {
                    format!("has({rhs}, {lhs})")
                } else {
                    format!("NOT has({rhs}, {lhs})")
                })
            }
            ">" | ">=" | "<" | "<=" => {
                let number = target
                    .as_f64()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| error(value_path, "must be a number"))?;
                let lhs = column(self, true);
                let rhs = self.bind("Float64", number.to_string());
                Ok(format!("{lhs} {op} {rhs}"))
            }
            other => Err(error(
                op_path,
                format!("unknown operator {other:?} (=, !=, in, not_in, contains, >, >=, <, <=)"),
            )),
        }
    }

    /// `{"revenue": {"min": 100, "max": 1000, "within_days": 90, "currency": "USD"}}`: purchases
    /// minus refunds.
    fn revenue(&mut self, value: &Value, path: &str) -> Result<String, CriteriaError> {
        let object = self.fields(value, path, &["min", "max", "within_days", "currency"])?;
        let number = |field: &str| -> Result<Option<f64>, CriteriaError> {
            match object.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|n| n.is_finite())
                    .map(Some)
                    .ok_or_else(|| error(&format!("{path}.{field}"), "must be a number")),
            }
        };
        let (min, max) = (number("min")?, number("max")?);
        if min.is_none() && max.is_none() {
            return Err(error(path, "needs min, max or both"));
        }
        let mut filter = "event IN ('purchase', 'refund')".to_string();
        if let Some(days) = self.days(object, "within_days", path)? {
            let _ = write!(filter, " AND timestamp >= now() - toIntervalDay({days})");
        }
        if let Some(currency) = self.text(object, "currency", path)? {
            let currency = self.bind("String", currency);
            let _ = write!(filter, " AND currency = {currency}");
        }
        let total = "sum(if(event = 'refund', -revenue, revenue))";
        let mut having = Vec::new();
        if let Some(min) = min {
            having.push(format!(
                "{total} >= {}",
                self.bind("Float64", min.to_string())
            ));
        }
        if let Some(max) = max {
            having.push(format!(
                "{total} <= {}",
                self.bind("Float64", max.to_string())
            ));
        }
        let set = format!(
            "SELECT actor_id FROM events WHERE {filter} GROUP BY actor_id HAVING {}",
            having.join(" AND ")
        );
        // A maximum admits actors without any purchase (revenue 0) when 0 is in range.
        if min.is_none_or(|m| m <= 0.0) && max.is_some_and(|m| m >= 0.0) {
            let above = format!(
                "SELECT actor_id FROM events WHERE {filter} GROUP BY actor_id HAVING NOT ({})",
                having.join(" AND ")
            );
            return Ok(format!("actor_id NOT IN ({above})"));
        }
        Ok(format!("actor_id IN ({set})"))
    }

    /// `{"last_seen": {"within_days": 7}}` or `{"last_seen": {"more_than_days": 30}}`.
    fn last_seen(&mut self, value: &Value, path: &str) -> Result<String, CriteriaError> {
        let object = self.fields(value, path, &["within_days", "more_than_days"])?;
        match (self.days(object, "within_days", path)?, self.days(object, "more_than_days", path)?) {
            (Some(days), None) => Ok(format!("actor_id IN (SELECT actor_id FROM events WHERE timestamp >= now() - toIntervalDay({days}))")),
            (None, Some(days)) => Ok(format!("actor_id NOT IN (SELECT actor_id FROM events WHERE timestamp >= now() - toIntervalDay({days}))")),
            _ => Err(error(path, "needs exactly one of within_days, more_than_days")),
        }
    }

    /// `{"user": {"field": "country", "op": "in", "value": ["RU", "KZ"]}}`: the actor's latest
    /// value of the field.
    fn user(&mut self, value: &Value, path: &str) -> Result<String, CriteriaError> {
        let object = self.fields(value, path, &["field", "op", "value"])?;
        let field = self
            .text(object, "field", path)?
            .ok_or_else(|| error(&format!("{path}.field"), "is required"))?;
        let Some(column) = USER_FIELDS.iter().find(|f| **f == field) else {
            return Err(error(
                &format!("{path}.field"),
                format!(
                    "unknown field {field:?} ({}); traits from identify are `trait` conditions",
                    USER_FIELDS.join(", ")
                ),
            ));
        };
        let op = self.text(object, "op", path)?.unwrap_or_else(|| "=".into());
        let target = object
            .get("value")
            .ok_or_else(|| error(&format!("{path}.value"), "is required"))?;
        let latest = format!("toString(argMax({column}, timestamp))");
        let clause = self.compare(
            &op,
            target,
            &format!("{path}.value"),
            &format!("{path}.op"),
            |_, _| latest.clone(),
        )?;
        Ok(format!(
            "actor_id IN (SELECT actor_id FROM events GROUP BY actor_id HAVING {clause})"
        ))
    }

    /// `{"trait": {"name": "plan", "op": "=", "value": "pro"}}`: traits from `identify`.
    fn user_trait(&mut self, value: &Value, path: &str) -> Result<String, CriteriaError> {
        let object = self.fields(value, path, &["name", "op", "value"])?;
        let name = self
            .text(object, "name", path)?
            .ok_or_else(|| error(&format!("{path}.name"), "is required"))?;
        let op = self.text(object, "op", path)?.unwrap_or_else(|| "=".into());
        let target = object
            .get("value")
            .ok_or_else(|| error(&format!("{path}.value"), "is required"))?;
        let key = self.bind("String", name);
        let clause = self.compare(
            &op,
            target,
            &format!("{path}.value"),
            &format!("{path}.op"),
            |_, numeric| {
                if numeric {
                    format!("JSONExtractFloat(traits, {key})")
                } else {
                    format!("JSONExtractString(traits, {key})")
                }
            },
        )?;
        Ok(format!(
            "actor_id IN (SELECT user_id FROM user_properties FINAL WHERE {clause})"
        ))
    }
}

/// Compiles criteria to a query returning the members' `actor_id`s.
pub fn compile(criteria: &Value) -> Result<Compiled, CriteriaError> {
    let mut compiler = Compiler {
        params: Vec::new(),
        conditions: 0,
    };
    let condition = compiler.condition(criteria, "", 0)?;
    Ok(Compiled {
        sql: format!("SELECT actor_id FROM (SELECT DISTINCT actor_id FROM events WHERE actor_id != '') WHERE {condition}"),
        params: compiler.params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn behaviour_aggregates_and_properties_compile_to_bound_parameters() {
        let compiled = compile(&json!({"and": [
            {"event": {"name": "purchase", "min_count": 2, "within_days": 30,
                       "where": [{"property": "currency", "op": "=", "value": "USD"},
                                 {"property": "coupon", "op": "in", "value": ["A", "B'"]}]}},
            {"not": {"last_seen": {"within_days": 3}}},
            {"revenue": {"min": 100}},
            {"user": {"field": "country", "op": "in", "value": ["RU", "KZ"]}},
            {"trait": {"name": "plan", "value": "pro"}}
        ]}))
        .unwrap();
        assert!(compiled
            .sql
            .starts_with("SELECT actor_id FROM (SELECT DISTINCT actor_id FROM events"));
        assert!(compiled.sql.contains("HAVING count() >= {p"));
        assert!(compiled.sql.contains("(NOT actor_id IN"));
        assert!(compiled.sql.contains("toString(currency) = {p"));
        assert!(compiled.sql.contains("JSONExtractString(properties, {p"));
        let values: Vec<&str> = compiled.params.iter().map(|p| p.2.as_str()).collect();
        assert!(
            values.contains(&"purchase") && values.contains(&"USD") && values.contains(&"coupon")
        );
        assert!(values.contains(&r"['A', 'B\'']"), "{values:?}");
        crate::sql::guard::check(
            &compiled.sql,
            &crate::sql::guard::Policy::database("analytics"),
        )
        .unwrap();
    }

    #[test]
    fn values_and_names_never_reach_the_sql_text() {
        let evil = "x') OR 1=1 --";
        let compiled = compile(&json!({"or": [
            {"event": {"name": evil, "where": [{"property": evil, "op": "contains", "value": evil}]}},
            {"trait": {"name": evil, "op": "!=", "value": evil}},
            {"user": {"field": "country", "value": evil}}
        ]}))
        .unwrap();
        assert!(!compiled.sql.contains("OR 1=1"), "{}", compiled.sql);
        assert_eq!(compiled.params.iter().filter(|p| p.2 == evil).count(), 6);
    }

    #[test]
    fn invalid_criteria_name_the_path() {
        let cases = [
            (
                json!({"and": []}),
                "criteria.and: must be a non-empty array",
            ),
            (
                json!({"and": [{"event": {"name": "a"}}, {"evnt": {}}]}),
                "criteria.and[1]: unknown condition \"evnt\"",
            ),
            (
                json!({"event": {"name": "a", "min_count": -1}}),
                "criteria.event.min_count: must be a whole number",
            ),
            (
                json!({"event": {"name": "a", "min_count": 3, "max_count": 1}}),
                "criteria.event.max_count",
            ),
            (
                json!({"event": {"name": "a", "where": [{"property": "p", "op": "~", "value": 1}]}}),
                "criteria.event.where[0].op: unknown operator",
            ),
            (
                json!({"event": {"name": "a", "within_days": 0}}),
                "criteria.event.within_days: must be at least 1",
            ),
            (
                json!({"revenue": {}}),
                "criteria.revenue: needs min, max or both",
            ),
            (
                json!({"last_seen": {"within_days": 1, "more_than_days": 2}}),
                "criteria.last_seen: needs exactly one",
            ),
            (
                json!({"user": {"field": "email", "value": "x"}}),
                "criteria.user.field: unknown field",
            ),
            (
                json!({"event": {"name": "a", "color": "red"}}),
                "criteria.event.color: unknown field",
            ),
            (
                json!({"event": {"name": "a"}, "and": []}),
                "criteria: must have exactly one",
            ),
            (json!([1]), "criteria: must be an object"),
        ];
        for (criteria, expected) in cases {
            let message = compile(&criteria).unwrap_err().to_string();
            assert!(message.starts_with(expected), "{criteria}: {message}");
        }
        let mut deep = json!({"event": {"name": "a"}});
        for _ in 0..10 {
            deep = json!({"not": deep});
        }
        assert!(compile(&deep)
            .unwrap_err()
            .to_string()
            .contains("nested deeper"));
    }

    #[test]
    fn at_most_counts_include_those_who_never_did_it() {
        let compiled =
            compile(&json!({"event": {"name": "refund", "min_count": 0, "max_count": 1}})).unwrap();
        assert!(compiled.sql.contains("actor_id NOT IN (SELECT actor_id FROM events WHERE event = {p0:String} GROUP BY actor_id HAVING count() > {p1:UInt64})"), "{}", compiled.sql);
    }
}
