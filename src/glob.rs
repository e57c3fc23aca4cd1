//! Name patterns: `*` matches any run of characters. Used by role policies (templates, tables,
//! events), the SQL guard's table allow-list and the BI endpoint's table visibility.

/// `*` matches any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names() {
        assert!(glob("*", "dau"));
        assert!(glob("ops_*", "ops_usage"));
        assert!(!glob("ops_*", "dau"));
        assert!(glob("*_users", "active_users"));
        assert!(glob("dau", "dau"));
    }
}
