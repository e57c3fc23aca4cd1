//! Access control: who is calling (API keys in `keys`, JWTs in `jwt`, the [`auth::Principal`]
//! extractor in `auth`), who may do what (roles and policies from `config/access.toml`), row-level
//! security from claims, rate and concurrency limits, and the admin API (`admin`).

pub mod admin;
pub mod auth;
pub mod jwt;
pub mod keys;
pub mod limits;
pub mod policy;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use self::policy::{sql_string, FilterTerm, Policy, RolePolicy};
use crate::access::auth::Principal;
use crate::error::ApiError;
use crate::error::ErrorCode;

/// The policy in use (swapped atomically on reload) and the JWT verifier.
#[derive(Clone)]
pub struct Access {
    policy: Arc<ArcSwap<Policy>>,
    path: Arc<PathBuf>,
    pub jwt: jwt::JwtVerifier,
    /// Rate and concurrency limits.
    pub limiter: limits::Limiter,
}

/// A principal's row filters for one statement, resolved with its claims.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowFilters {
    /// `database.table` → SQL condition, for ClickHouse's `additional_table_filters`.
    pub tables: BTreeMap<String, String>,
}

impl RowFilters {
    /// The `additional_table_filters` setting value, or `None` without filters.
    pub fn setting(&self) -> Option<String> {
        if self.tables.is_empty() {
            return None;
        }
        let entries: Vec<String> = self
            .tables
            .iter()
            .map(|(t, c)| format!("{}: {}", sql_string(t), sql_string(c)))
            .collect();
        Some(format!("{{{}}}", entries.join(", ")))
    }
}

impl Access {
    pub fn load(
        settings: &crate::config::AccessSettings,
        redis: Option<crate::storage::redis::Redis>,
    ) -> anyhow::Result<Self> {
        let shared = match settings.limits_backend {
            crate::config::LimitsBackend::Local => None,
            crate::config::LimitsBackend::Redis => Some(redis.ok_or_else(|| {
                anyhow::anyhow!("access.limits_backend = \"redis\" needs redis.url")
            })?),
        };
        let policy = Policy::load(&settings.policy)?;
        Ok(Self {
            policy: Arc::new(ArcSwap::from_pointee(policy)),
            path: Arc::new(settings.policy.clone()),
            jwt: jwt::JwtVerifier::new(&settings.jwt)?,
            limiter: limits::Limiter::new(settings.max_concurrent_queries, shared),
        })
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// The role's policy (shared, not copied); a role missing from the file may do nothing.
    pub fn role(&self, principal: &Principal) -> Result<Arc<RolePolicy>, ApiError> {
        self.policy().role(&principal.role).cloned().ok_or_else(|| {
            ApiError::forbidden(
                ErrorCode::RoleWithoutPolicy,
                format!(
                    "role {:?} has no entry in the access policy",
                    principal.role
                ),
            )
        })
    }

    /// Reloads the file; a broken file is rejected and the current policy kept.
    pub fn reload(&self) -> Result<(), policy::PolicyError> {
        match Policy::load(&self.path) {
            Ok(policy) => {
                self.policy.store(Arc::new(policy));
                metrics::counter!("chgate_access_reloads_total", "outcome" => "ok").increment(1);
                tracing::info!(path = %self.path.display(), "access policy reloaded");
                Ok(())
            }
            Err(e) => {
                metrics::counter!("chgate_access_reloads_total", "outcome" => "rejected")
                    .increment(1);
                tracing::error!(error = %e, "access policy reload rejected; keeping the previous policy");
                Err(e)
            }
        }
    }

    /// Reloads on SIGHUP and when the file changes (polled every `every`).
    pub fn watch(&self, every: Duration, stop: tokio_util::sync::CancellationToken) {
        let access = self.clone();
        crate::reload::watch(every, stop, self.path.to_path_buf(), move || {
            let _ = access.reload();
        });
    }
}

/// The caller's value of the claim a filter term needs.
fn claim<'a>(
    principal: &'a Principal,
    term: &FilterTerm,
    table: &str,
) -> Result<&'a String, ApiError> {
    principal.attributes.get(&term.claim).ok_or_else(|| {
        ApiError::forbidden(
            ErrorCode::MissingClaim,
            format!(
                "role {:?} needs the claim {:?} for its row filter on {table}",
                principal.role, term.claim
            ),
        )
    })
}

/// Column → claim value for every row filter term of the role: template parameters of that name
/// are fixed to it. A caller without a claim the role's filters need is refused outright.
pub fn fixed_params(
    role: &RolePolicy,
    principal: &Principal,
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut fixed = BTreeMap::new();
    for table in role.row_filters.keys() {
        for term in role.filter(table).into_iter().flatten() {
            let value = claim(principal, &term, table)?;
            fixed.insert(term.column, value.clone());
        }
    }
    Ok(fixed)
}

/// Resolves the row filters of `principal` for a statement reading `tables` (as
/// `database.table`). A role with row filters reads only the tables it has a filter for, and every
/// claim a filter names is required. Every filter of the role is returned, not only those of the
/// tables found in the statement: ClickHouse applies a filter only to tables a query reads, so a
/// table the analysis missed is filtered all the same.
pub fn row_filters(
    role: &RolePolicy,
    principal: &Principal,
    database: &str,
    tables: &BTreeSet<String>,
) -> Result<RowFilters, ApiError> {
    let mut filters = RowFilters::default();
    if role.row_filters.is_empty() {
        return Ok(filters);
    }
    for qualified in tables {
        let table = qualified
            .strip_prefix(&format!("{database}."))
            .unwrap_or(qualified);
        if !role.row_filters.contains_key(table) {
            return Err(ApiError::forbidden(
                ErrorCode::TableNotAllowed,
                format!("role {:?} has row filters and may read only the tables they cover; {qualified} has none", principal.role),
            ));
        }
    }
    for table in role.row_filters.keys() {
        let mut conditions = Vec::new();
        for term in role.filter(table).unwrap_or_default() {
            let value = claim(principal, &term, table)?;
            conditions.push(format!("{} = {}", term.column, sql_string(value)));
        }
        filters
            .tables
            .insert(format!("{database}.{table}"), conditions.join(" AND "));
    }
    Ok(filters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn developer() -> Principal {
        Principal {
            key_id: None,
            name: "d".into(),
            role: "developer".into(),
            attributes: [("developer_id".to_string(), "dev-7' OR 1=1".to_string())].into(),
        }
    }

    fn role() -> RolePolicy {
        RolePolicy {
            row_filters: [(
                "events".to_string(),
                "developer_id = {claim.developer_id}".to_string(),
            )]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn filters_become_escaped_conditions_and_fixed_params() {
        let tables = BTreeSet::from(["analytics.events".to_string()]);
        let filters = row_filters(&role(), &developer(), "analytics", &tables).unwrap();
        assert_eq!(
            filters.tables["analytics.events"],
            r"developer_id = 'dev-7\' OR 1=1'"
        );
        assert_eq!(
            fixed_params(&role(), &developer()).unwrap()["developer_id"],
            "dev-7' OR 1=1"
        );
        assert_eq!(
            filters.setting().unwrap(),
            r"{'analytics.events': 'developer_id = \'dev-7\\\' OR 1=1\''}"
        );
    }

    #[test]
    fn unfiltered_tables_and_missing_claims_are_refused() {
        let tables = BTreeSet::from(["analytics.dau_daily".to_string()]);
        assert!(row_filters(&role(), &developer(), "analytics", &tables).is_err());
        let mut anonymous = developer();
        anonymous.attributes.clear();
        let events = BTreeSet::from(["analytics.events".to_string()]);
        let err = row_filters(&role(), &anonymous, "analytics", &events).unwrap_err();
        assert_eq!(err.code(), "missing_claim");
    }

    #[test]
    fn every_filter_of_the_role_applies_even_to_tables_the_statement_seems_not_to_read() {
        let filters = row_filters(&role(), &developer(), "analytics", &BTreeSet::new()).unwrap();
        assert_eq!(
            filters.tables.keys().collect::<Vec<_>>(),
            ["analytics.events"]
        );
    }
}
