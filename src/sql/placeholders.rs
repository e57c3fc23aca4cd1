//! ClickHouse server-side parameters (`{name:Type}`) found at token level, outside string literals,
//! quoted identifiers and comments — so the guard parses exactly the SQL that will run, with each
//! placeholder replaced by a neutral expression.

use super::lexer;

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
    fn braces_in_strings_comments_and_maps_are_left_alone() {
        let text = "SELECT '{a:Date}', `{b:Int8}` -- {c:String}\n/* {d:String} */ FROM t WHERE m = map('k', 1) AND j = '{\"x\":1}'";
        let (found, sql) = extract(text);
        assert!(found.is_empty());
        assert_eq!(sql, text);
    }
}
