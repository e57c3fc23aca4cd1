//! Reading a BI request: the credential as drivers send it, the URL parameters, the session
//! database, query and session ids, and the SQL (the `query` parameter and the body).

use axum::body::Body;
use axum::http::{header, HeaderMap};

use super::error::BiError;
use super::Endpoint;
use crate::access::auth::{Authorization, Principal};
use crate::error::ErrorCode;

/// The credential as BI drivers send it: HTTP Basic (the key or JWT as the password; the user name
/// is free), `Authorization: Bearer`, `X-ClickHouse-Key`, or the `password` URL parameter.
fn credential(headers: &HeaderMap, params: &[(String, String)]) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        // A user name alone is a credential only when it is an API key (drivers send
        // `default` with an empty password when nothing is configured).
        return match Authorization::parse(value)? {
            Authorization::Bearer(token) => Some(token),
            Authorization::Basic { user, password } if password.is_empty() => {
                Some(user).filter(|u| u.starts_with(crate::access::keys::KEY_PREFIX))
            }
            Authorization::Basic { password, .. } => Some(password),
        }
        .filter(|c| !c.is_empty());
    }
    let header = headers
        .get("x-clickhouse-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    if let Some(key) = header {
        return Some(key.to_string());
    }
    params
        .iter()
        .find(|(k, _)| k == "password")
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

pub(super) async fn authenticate(
    state: &Endpoint,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<Principal, BiError> {
    let Some(credential) = credential(headers, params) else {
        return Err(crate::error::ApiError::unauthorized(
            ErrorCode::MissingCredentials,
            "no credentials: send an API key (or a JWT) as the password with HTTP Basic, X-ClickHouse-Key or the password parameter, or a JWT as Authorization: Bearer",
        )
        .into());
    };
    Ok(crate::access::auth::authenticate(&state.auth, &credential).await?)
}

pub(super) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The session database: the analytics database (also for `default` or none), or `system`.
pub(super) fn session_database<'a>(
    requested: Option<&'a str>,
    analytics: &'a str,
) -> Result<&'a str, BiError> {
    match requested.map(str::trim) {
        None | Some("") | Some("default") => Ok(analytics),
        Some(db) if db == analytics || db == "system" => Ok(db),
        Some(db) => Err(BiError::unknown_database(db)),
    }
}

/// Characters ClickHouse ids may keep.
pub(super) fn safe_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

pub(super) fn identity(principal: &Principal) -> String {
    match principal.key_id {
        Some(id) => id.simple().to_string()[..12].to_string(),
        None => principal
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(48)
            .collect(),
    }
}

/// The client's `query_id` prefixed with the caller's identity, so that no caller can collide with
/// another's running query or learn that it runs; the request id when the client's is unsafe.
pub(super) fn query_id(client: Option<&str>, principal: &Principal, request_id: &str) -> String {
    match client.map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) if safe_id(id) => format!("{}:{id}", identity(principal)),
        _ => request_id.to_string(),
    }
}

/// Reads the SQL: the `query` parameter, then the body, joined by a newline (as ClickHouse does).
pub(super) async fn read_sql(
    state: &Endpoint,
    params: &[(String, String)],
    headers: &HeaderMap,
    body: Body,
) -> Result<String, BiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("multipart/") {
        return Err(BiError::not_implemented(
            "external_tables",
            "multipart requests (external tables) are not supported by the BI endpoint",
        ));
    }
    if param(params, "decompress").is_some_and(|v| v != "0") {
        return Err(BiError::not_implemented(
            "decompress",
            "decompress=1 (compressed request bodies) is not supported; send the SQL as plain text or with Content-Encoding: gzip",
        ));
    }
    let limit = state.settings.bi.max_query_bytes;
    let body = crate::http::body::read_body(body, headers, limit, &state.buffers).await?;
    let body = std::str::from_utf8(&body)
        .map_err(|_| BiError::syntax("invalid_utf8", "the query is not valid UTF-8"))?;
    let parts: Vec<&str> = [param(params, "query").unwrap_or_default(), body]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    let sql = parts.join("\n");
    if sql.len() > limit {
        return Err(BiError::syntax(
            "query_too_large",
            format!("Max query size exceeded: the query is longer than {limit} bytes"),
        ));
    }
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn principal() -> Principal {
        Principal {
            key_id: None,
            name: "grafana key".into(),
            role: "analyst".into(),
            attributes: Default::default(),
        }
    }

    #[test]
    fn credentials_come_the_ways_drivers_send_them() {
        use base64::Engine as _;
        let basic = |user: &str, password: &str| {
            let mut headers = HeaderMap::new();
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Basic {token}")).unwrap(),
            );
            headers
        };
        assert_eq!(
            credential(&basic("default", "chg_x"), &[]).as_deref(),
            Some("chg_x")
        );
        assert_eq!(
            credential(&basic("chg_y", ""), &[]).as_deref(),
            Some("chg_y")
        );
        assert_eq!(credential(&basic("default", ""), &[]), None);
        let mut headers = HeaderMap::new();
        headers.insert("x-clickhouse-key", HeaderValue::from_static("chg_z"));
        assert_eq!(credential(&headers, &[]).as_deref(), Some("chg_z"));
        let params = vec![
            ("user".to_string(), "u".to_string()),
            ("password".to_string(), "chg_p".to_string()),
        ];
        assert_eq!(
            credential(&HeaderMap::new(), &params).as_deref(),
            Some("chg_p")
        );
    }

    #[test]
    fn query_ids_are_prefixed_with_the_caller_or_replaced_when_unsafe() {
        let id = "0b8a0a0e-3f3c-4c39-9a55-0b5b1d1f0a11";
        assert_eq!(
            query_id(Some(id), &principal(), "req"),
            format!("grafanakey:{id}")
        );
        assert_eq!(
            query_id(Some("mine"), &principal(), "req"),
            "grafanakey:mine"
        );
        assert_eq!(query_id(Some("a b'"), &principal(), "req"), "req");
        assert_eq!(query_id(None, &principal(), "req"), "req");
    }

    #[test]
    fn the_session_database_is_the_analytics_one_or_system() {
        assert_eq!(session_database(None, "a").unwrap(), "a");
        assert_eq!(session_database(Some("default"), "a").unwrap(), "a");
        assert_eq!(session_database(Some("system"), "a").unwrap(), "system");
        assert_eq!(session_database(Some("other"), "a").unwrap_err().code, 81);
    }
}
