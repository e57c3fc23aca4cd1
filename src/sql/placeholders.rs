//! ClickHouse server-side parameters (`{name:Type}`) found at token level, outside string literals,
//! quoted identifiers and comments — so the guard parses exactly the SQL that will run, with each
//! placeholder replaced by a neutral expression.

use std::collections::BTreeSet;

use super::lexer;

/// The one parameter type whose value ClickHouse places into a query as a name (a column, a
/// table) rather than as a value.
pub const IDENTIFIER_TYPE: &str = "Identifier";

/// Why `{name:Identifier}` placeholders could not be bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("param_{0}: the query uses {{{0}:Identifier}} but sends no param_{0}")]
    Missing(String),
    #[error("param_{name}: an Identifier parameter must be a plain name (a letter or _, then letters, digits or _; at most 128 characters), got {value:?}")]
    NotAName { name: String, value: String },
    #[error("{{{name}:{ty}}}: Identifier may only be used as a whole parameter type")]
    NestedIdentifier { name: String, ty: String },
}

/// A query whose `{name:Identifier}` placeholders were replaced by their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The text that runs: names in place, value placeholders (`{name:Type}`) left for ClickHouse.
    pub sql: String,
    /// Names of the value placeholders still in the text: the only parameters ClickHouse needs.
    pub values: BTreeSet<String>,
}

/// Replaces every `{name:Identifier}` placeholder by its parameter's value as a quoted name, so
/// the guard reads the names that will run instead of a placeholder ClickHouse fills in later.
/// Values must be plain names; a type that merely contains `Identifier` is refused.
pub fn bind_identifiers<'a>(
    sql: &str,
    value: impl Fn(&str) -> Option<&'a str>,
) -> Result<Bound, BindError> {
    let mut out = String::with_capacity(sql.len());
    let mut values = BTreeSet::new();
    let mut copy_from = 0;
    for token in lexer::tokens(sql) {
        if token.start < copy_from || !token.is_symbol(sql, '{') {
            continue;
        }
        let Some((name, ty, len)) = parse_placeholder(&sql[token.start..]) else {
            continue;
        };
        if ty == IDENTIFIER_TYPE {
            let given = value(&name).ok_or_else(|| BindError::Missing(name.clone()))?;
            if !is_plain_name(given) {
                return Err(BindError::NotAName {
                    name,
                    value: given.to_string(),
                });
            }
            out.push_str(&sql[copy_from..token.start]);
            out.push('`');
            out.push_str(given);
            out.push('`');
            copy_from = token.start + len;
        } else if ty.to_ascii_lowercase().contains("identifier") {
            return Err(BindError::NestedIdentifier { name, ty });
        } else {
            values.insert(name);
        }
    }
    out.push_str(&sql[copy_from.min(sql.len())..]);
    Ok(Bound { sql: out, values })
}

/// `[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes: a name that needs no escaping inside backquotes.
fn is_plain_name(text: &str) -> bool {
    text.len() <= 128
        && text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One `{name:Type}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub name: String,
    /// The ClickHouse type as written, e.g. `Array(String)`.
    pub ty: String,
    /// 1-based line of the placeholder in the SQL text.
    pub line: usize,
}

/// What placeholders are replaced by for parsing: valid in every expression position.
pub const NEUTRAL: &str = "(NULL)";

/// Finds placeholders; returns them and the SQL with each replaced by [`NEUTRAL`].
pub fn extract(sql: &str) -> (Vec<Placeholder>, String) {
    let mut found = Vec::new();
    let mut out = String::with_capacity(sql.len());
    let mut copy_from = 0;
    let mut line = 1;
    for token in lexer::tokens(sql) {
        if token.start < copy_from {
            continue; // inside a placeholder already replaced
        }
        if token.is_symbol(sql, '{') {
            if let Some((name, ty, len)) = parse_placeholder(&sql[token.start..]) {
                out.push_str(&sql[copy_from..token.start]);
                out.push_str(NEUTRAL);
                found.push(Placeholder { name, ty, line });
                copy_from = token.start + len;
            }
        }
        line += token.text(sql).matches('\n').count();
    }
    out.push_str(&sql[copy_from.min(sql.len())..]);
    (found, out)
}

/// `{name:Type}` at the start of `text`: name, type and length in bytes.
fn parse_placeholder(text: &str) -> Option<(String, String, usize)> {
    let rest = text.strip_prefix('{')?;
    let colon = rest.find(':')?;
    let name = rest[..colon].trim();
    let valid_name = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return None;
    }
    // The type may nest parentheses: Array(Nullable(String)), DateTime64(3, 'UTC').
    let after = &rest[colon + 1..];
    let mut depth = 0i32;
    for (offset, c) in after.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            '}' if depth == 0 => {
                let ty = after[..offset].trim();
                if ty.is_empty() || !ty.starts_with(|c: char| c.is_ascii_alphabetic()) {
                    return None;
                }
                return Some((name.to_string(), ty.to_string(), 1 + colon + 1 + offset + 1));
            }
            '\n' | '{' | ';' => return None,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found_with_nested_types_and_replaced() {
        let (found, sql) = extract("SELECT {a:Date}, x IN {ids:Array(Nullable(String))}\nWHERE t > {t:DateTime64(3, 'UTC')}");
        assert_eq!(
            found
                .iter()
                .map(|p| (p.name.as_str(), p.ty.as_str(), p.line))
                .collect::<Vec<_>>(),
            vec![
                ("a", "Date", 1),
                ("ids", "Array(Nullable(String))", 1),
                ("t", "DateTime64(3, 'UTC')", 2)
            ]
        );
        assert_eq!(sql, "SELECT (NULL), x IN (NULL)\nWHERE t > (NULL)");
    }

    #[test]
    fn identifier_placeholders_are_bound_as_quoted_names_and_values_are_left() {
        let params = |name: &str| match name {
            "c" => Some("user_id"),
            "t" => Some("events_buffer"),
            "bad" => Some("x` FROM secret --"),
            _ => None,
        };
        let bound = bind_identifiers(
            "SELECT {c:Identifier}, '{c:Identifier}' FROM events WHERE 1 IN { t : Identifier } AND d = {d:Date}",
            params,
        )
        .unwrap();
        assert_eq!(
            bound.sql,
            "SELECT `user_id`, '{c:Identifier}' FROM events WHERE 1 IN `events_buffer` AND d = {d:Date}"
        );
        assert_eq!(bound.values, BTreeSet::from(["d".to_string()]));
        assert_eq!(
            bind_identifiers("SELECT {bad:Identifier}", params).unwrap_err(),
            BindError::NotAName {
                name: "bad".into(),
                value: "x` FROM secret --".into()
            }
        );
        assert_eq!(
            bind_identifiers("SELECT {zz:Identifier}", params).unwrap_err(),
            BindError::Missing("zz".into())
        );
        assert!(matches!(
            bind_identifiers("SELECT {c:Nullable(Identifier)}", params).unwrap_err(),
            BindError::NestedIdentifier { .. }
        ));
    }

    #[test]
    fn braces_in_strings_comments_and_maps_are_left_alone() {
        let text = "SELECT '{a:Date}', `{b:Int8}` -- {c:String}\n/* {d:String} */ FROM t WHERE m = map('k', 1) AND j = '{\"x\":1}'";
        let (found, sql) = extract(text);
        assert!(found.is_empty());
        assert_eq!(sql, text);
    }
}
