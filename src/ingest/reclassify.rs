//! `chgate reclassify-bots`: counts server-side events that gateways before the server-side
//! user-agent rule ([`Sender::user_agent_rule`]) stored as bots, and rebuilds the rollups of
//! their days.
//!
//! Those gateways took the request's `User-Agent` for events without `context.user_agent`
//! whoever sent them, and flagged every HTTP library as a bot: a backend posting with Go's
//! net/http or python-requests had its events stored with `is_bot = 1`. `events` does not record
//! which key sent a row, so the criterion is what the rows show: the stored user agent is an HTTP
//! library, nothing else in it marks a bot (crawlers, headless browsers, monitors), and the
//! address is not in `ingest.bot_networks`. A browser never sends an HTTP library's user agent,
//! so such a row was sent by a program: a backend, or a script on the public write key, which the
//! stored columns cannot tell apart; `--event` narrows the run to the events backends send.
//!
//! Values are written into the statements as literals: a mutation is stored and run by the
//! server later, as text, so server-side parameters cannot travel with it.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::enrich::net::Networks;
use super::enrich::ua::{http_library_needles, UaParser};
use super::sender::Sender;
use crate::access::policy::sql_string;

/// How a rollup fed from `events` is brought in line once rows stop being bots.
#[derive(Debug, Clone, Copy)]
enum Rebuild {
    /// Keyed by day (the expression gives a rollup row's day): the days' rows are deleted and
    /// inserted again from `events` with the view's own SELECT.
    Days(&'static str),
    /// Keyed by actor, with aggregates that repeated rows do not change (min, max, argMin):
    /// the affected actors' rows are inserted again and merge into the right state, so no actor
    /// is missing from it meanwhile.
    Actors,
}

/// The materialized views on `events` that read `is_bot` or `device_type`, with their tables.
/// The ops rollups read neither (they count bots too) and need no rebuild.
const ROLLUPS: &[(&str, &str, Rebuild)] = &[
    ("dau_daily_mv", "dau_daily", Rebuild::Days("day")),
    (
        "events_hourly_mv",
        "events_hourly",
        Rebuild::Days("toDate(hour)"),
    ),
    ("revenue_daily_mv", "revenue_daily", Rebuild::Days("day")),
    ("user_first_seen_mv", "user_first_seen", Rebuild::Actors),
    (
        "user_day_events_mv",
        "user_day_events",
        Rebuild::Days("day"),
    ),
];

/// How often a day is rebuilt before the command gives up on it (see [`verify`]).
const ATTEMPTS: usize = 3;

/// The rows to look at.
#[derive(Debug, Clone)]
pub struct Scope {
    /// First instant, inclusive.
    pub since: DateTime<Utc>,
    /// Last instant, exclusive.
    pub until: DateTime<Utc>,
    /// Event names; empty: every event.
    pub events: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReclassifyError {
    #[error("--since ({since}) must be before --until ({until})")]
    EmptyRange {
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    #[error(
        "the materialized view {0} reads is_bot or device_type of events, and reclassify-bots \
         does not know how to rebuild its table; nothing was changed"
    )]
    UnknownView(String),
    #[error(
        "{table} for {days} still differs from events after {ATTEMPTS} rebuilds (events for \
         those days are still arriving); the rows are re-classified: run the command again to \
         rebuild those days"
    )]
    Unsettled { table: String, days: String },
    #[error(transparent)]
    ClickHouse(#[from] anyhow::Error),
}

/// What a run found, and did unless it was a dry run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Rows stored as bots that are counted now, by user agent.
    pub user_agents: BTreeMap<String, u64>,
    /// Days (`YYYY-MM-DD`) holding rows of HTTP libraries in scope: their rollups are rebuilt.
    pub days: Vec<String>,
    /// Tables rebuilt.
    pub rebuilt: Vec<String>,
}

impl Report {
    /// Rows stored as bots that are counted now.
    pub fn rows(&self) -> u64 {
        self.user_agents.values().sum()
    }

    /// A human-readable summary.
    pub fn render(&self, dry_run: bool) -> String {
        let mut out = String::new();
        if !self.user_agents.is_empty() {
            out.push_str("rows stored as bots  user agent\n");
            for (agent, rows) in &self.user_agents {
                out.push_str(&format!("{rows:>20}  {agent}\n"));
            }
        }
        let days = &self.days;
        out.push_str(&format!(
            "{} rows stored as bots were sent by HTTP libraries; {} days to rebuild{}{}\n",
            self.rows(),
            days.len(),
            if days.is_empty() { "" } else { ": " },
            days.join(", ")
        ));
        if dry_run {
            out.push_str("dry run: nothing changed\n");
        } else if !self.rebuilt.is_empty() {
            out.push_str(&format!(
                "re-classified {} rows; rebuilt {}\n",
                self.rows(),
                self.rebuilt.join(", ")
            ));
        }
        out
    }
}

/// Finds the rows in `scope`, and unless `dry_run` re-classifies them and rebuilds the rollups.
/// `client` is bound to `database`.
pub async fn reclassify_bots(
    client: &clickhouse::Client,
    database: &str,
    bot_networks: &Networks,
    scope: &Scope,
    dry_run: bool,
) -> Result<Report, ReclassifyError> {
    if scope.since >= scope.until {
        return Err(ReclassifyError::EmptyRange {
            since: scope.since,
            until: scope.until,
        });
    }
    let views = rollup_views(client, database).await?;
    // Rows acknowledged before the run may still be in the Buffer table, where no mutation
    // reaches; flushing only does now what the Buffer does within seconds anyway.
    client
        .query("OPTIMIZE TABLE events_buffer")
        .execute()
        .await
        .context("cannot flush events_buffer into events")?;
    let agents = http_library_agents(client, scope).await?;
    if agents.is_empty() {
        return Ok(Report::default());
    }
    let rows = Rows {
        scope,
        agents: &agents,
        networks: bot_networks.widened_to_truncation(),
    };
    let mut report = found(client, &rows).await?;
    if dry_run {
        return Ok(report);
    }
    if report.rows() > 0 {
        client
            .clone()
            .with_setting("mutations_sync", "2")
            .query_raw(&format!(
                "ALTER TABLE `{database}`.events UPDATE is_bot = 0, device_type = '' \
                 WHERE is_bot = 1 AND {}",
                rows.condition()
            ))
            .execute()
            .await
            .context("cannot update is_bot and device_type in events")?;
    }
    for view in &views {
        match view.rebuild {
            Rebuild::Days(day) => rebuild_days(client, database, view, day, &report.days).await?,
            Rebuild::Actors => {
                let actors = format!(
                    "actor_id IN (SELECT actor_id FROM `{database}`.events WHERE is_bot = 0 AND {})",
                    rows.condition()
                );
                insert_from_view(client, database, view, &actors).await?;
            }
        }
        report.rebuilt.push(view.table.to_string());
    }
    Ok(report)
}

/// The rows stored as bots by user agent, and the days of all the rows (bots or not any more,
/// so that a second run rebuilds the days an interrupted one did not).
async fn found(client: &clickhouse::Client, rows: &Rows<'_>) -> anyhow::Result<Report> {
    let found: Vec<(String, String, u64)> = client
        .query_raw(&format!(
            "SELECT toString(toDate(timestamp)), user_agent, toUInt64(countIf(is_bot = 1)) \
             FROM events WHERE {} GROUP BY 1, 2",
            rows.condition()
        ))
        .fetch_all()
        .await
        .context("cannot count the rows to re-classify")?;
    let mut report = Report::default();
    let mut days = BTreeSet::new();
    for (day, agent, bots) in found {
        days.insert(day);
        if bots > 0 {
            *report.user_agents.entry(agent).or_default() += bots;
        }
    }
    report.days = days.into_iter().collect();
    Ok(report)
}

/// A rollup to rebuild and the SELECT its view fills it with.
struct View {
    table: &'static str,
    rebuild: Rebuild,
    select: String,
}

/// The views on `events` that read the classification; refuses a view it does not know, so a
/// rollup added later cannot silently keep the old counts.
async fn rollup_views(
    client: &clickhouse::Client,
    database: &str,
) -> Result<Vec<View>, ReclassifyError> {
    let views: Vec<(String, String)> = client
        .query(
            "SELECT name, as_select FROM system.tables WHERE database = {db:String} AND name IN \
             (SELECT arrayJoin(dependencies_table) FROM system.tables \
              WHERE database = {db:String} AND name = 'events') ORDER BY name",
        )
        .param("db", database)
        .fetch_all()
        .await
        .context("cannot list the materialized views on events")?;
    let mut known = Vec::new();
    for (name, select) in views {
        let reads_class = select.contains("is_bot") || select.contains("device_type");
        match ROLLUPS.iter().find(|(view, ..)| *view == name) {
            Some(&(_, table, rebuild)) => known.push(View {
                table,
                rebuild,
                select,
            }),
            None if reads_class => return Err(ReclassifyError::UnknownView(name)),
            None => {}
        }
    }
    Ok(known)
}

/// User agents in scope that are HTTP libraries and, under the rule for server keys, no bots.
async fn http_library_agents(
    client: &clickhouse::Client,
    scope: &Scope,
) -> anyhow::Result<Vec<String>> {
    // A cheap superset by substring; the parser the gateway uses decides.
    let candidates: Vec<String> = client
        .query_raw(&format!(
            "SELECT DISTINCT user_agent FROM events WHERE {} \
             AND multiSearchAnyCaseInsensitive(user_agent, [{}])",
            scope.condition(),
            http_library_needles()
                .into_iter()
                .map(sql_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .fetch_all()
        .await
        .context("cannot list the user agents of HTTP libraries")?;
    let parser = UaParser::default();
    let rule = Sender::Server.user_agent_rule();
    Ok(candidates
        .into_iter()
        .filter(|agent| {
            let info = parser.parse(agent);
            info.http_library && !rule.is_bot(&info)
        })
        .collect())
}

impl Scope {
    /// The time range and events, as a condition on `events`.
    fn condition(&self) -> String {
        let mut condition = format!(
            "timestamp >= fromUnixTimestamp64Milli(toInt64({}), 'UTC') \
             AND timestamp < fromUnixTimestamp64Milli(toInt64({}), 'UTC')",
            self.since.timestamp_millis(),
            self.until.timestamp_millis()
        );
        if !self.events.is_empty() {
            condition.push_str(&format!(" AND event IN ({})", list(&self.events)));
        }
        condition
    }
}

/// The rows the command is about, bots or not.
struct Rows<'a> {
    scope: &'a Scope,
    agents: &'a [String],
    /// `ingest.bot_networks`, widened to the truncation of stored addresses.
    networks: Vec<String>,
}

impl Rows<'_> {
    fn condition(&self) -> String {
        let mut condition = format!(
            "{} AND user_agent IN ({})",
            self.scope.condition(),
            list(self.agents)
        );
        if !self.networks.is_empty() {
            let ranges: Vec<String> = self
                .networks
                .iter()
                .map(|net| format!("isIPAddressInRange(ip, {})", sql_string(net)))
                .collect();
            // An empty address (none known) is in no network, and is no address to parse.
            condition.push_str(&format!(
                " AND NOT (ip != '' AND ({}))",
                ranges.join(" OR ")
            ));
        }
        condition
    }
}

fn list(values: &[String]) -> String {
    values
        .iter()
        .map(|v| sql_string(v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Deletes the days' rows of a day-keyed rollup and inserts them again from `events`; checks the
/// sums against `events` and rebuilds the days that differ again.
async fn rebuild_days(
    client: &clickhouse::Client,
    database: &str,
    view: &View,
    day: &str,
    days: &[String],
) -> Result<(), ReclassifyError> {
    let mut pending = days.to_vec();
    for _ in 0..ATTEMPTS {
        if pending.is_empty() {
            return Ok(());
        }
        let in_days = format!(
            "{day} IN ({})",
            pending
                .iter()
                .map(|d| sql_string(d))
                .collect::<Vec<_>>()
                .join(", ")
        );
        client
            .clone()
            .with_setting("mutations_sync", "2")
            .query_raw(&format!(
                "ALTER TABLE `{database}`.`{}` DELETE WHERE {in_days}",
                view.table
            ))
            .execute()
            .await
            .with_context(|| format!("cannot delete the days' rows of {}", view.table))?;
        insert_from_view(client, database, view, &in_days).await?;
        pending = verify(client, database, view, day, &in_days).await?;
    }
    if pending.is_empty() {
        return Ok(());
    }
    Err(ReclassifyError::Unsettled {
        table: view.table.to_string(),
        days: pending.join(", "),
    })
}

/// Inserts into the view's table what its SELECT gives for the rows `condition` (on the view's
/// columns) keeps.
async fn insert_from_view(
    client: &clickhouse::Client,
    database: &str,
    view: &View,
    condition: &str,
) -> anyhow::Result<()> {
    let columns: Vec<String> = client
        .query(
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String} \
             ORDER BY position",
        )
        .param("db", database)
        .param("t", view.table)
        .fetch_all()
        .await
        .with_context(|| format!("cannot list the columns of {}", view.table))?;
    let columns = columns.join(", ");
    client
        .query_raw(&format!(
            "INSERT INTO `{database}`.`{table}` ({columns}) SELECT {columns} FROM ({select}) \
             WHERE {condition}",
            table = view.table,
            select = view.select
        ))
        .execute()
        .await
        .with_context(|| format!("cannot insert the rebuilt rows of {}", view.table))
}

/// The days (among `in_days`) whose sums in the rollup differ from the view's SELECT over
/// `events`. A row written into `events` while its day is rebuilt reaches the rollup twice,
/// through the view and through the rebuild; the sums show it (the other aggregates are
/// unchanged by a repeated row).
async fn verify(
    client: &clickhouse::Client,
    database: &str,
    view: &View,
    day: &str,
    in_days: &str,
) -> anyhow::Result<Vec<String>> {
    let sums: Vec<String> = client
        .query(
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String} \
             AND startsWith(type, 'SimpleAggregateFunction(sum,') ORDER BY position",
        )
        .param("db", database)
        .param("t", view.table)
        .fetch_all()
        .await
        .with_context(|| format!("cannot list the sums of {}", view.table))?;
    if sums.is_empty() {
        return Ok(Vec::new());
    }
    let totals = sums
        .iter()
        .map(|c| format!("toString(sum({c}))"))
        .collect::<Vec<_>>()
        .join(", ");
    let per_day = |source: &str| {
        format!(
            "SELECT toString({day}) AS d, arrayStringConcat([{totals}], ' ') FROM {source} WHERE {in_days} GROUP BY d \
             ORDER BY d"
        )
    };
    let stored: Vec<(String, String)> = client
        .query_raw(&per_day(&format!("`{database}`.`{}`", view.table)))
        .fetch_all()
        .await
        .with_context(|| format!("cannot read back {}", view.table))?;
    let expected: Vec<(String, String)> = client
        .query_raw(&per_day(&format!("({})", view.select)))
        .fetch_all()
        .await
        .with_context(|| format!("cannot recompute {} from events", view.table))?;
    let expected: BTreeMap<_, _> = expected.into_iter().collect();
    let stored: BTreeMap<_, _> = stored.into_iter().collect();
    Ok(expected
        .keys()
        .chain(stored.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|d| expected.get(*d) != stored.get(*d))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(events: &[&str]) -> Scope {
        Scope {
            since: DateTime::from_timestamp_millis(1_700_000_000_000).unwrap_or_default(),
            until: DateTime::from_timestamp_millis(1_700_086_400_000).unwrap_or_default(),
            events: events.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn the_rows_condition_escapes_user_agents_and_leaves_truncated_bot_addresses_alone() {
        let scope = scope(&["purchase"]);
        let agents = ["Go-http-client/1.1".to_string(), "it's\\".to_string()];
        let networks = Networks::parse("ingest.bot_networks", &["198.51.100.7".into()]).unwrap();
        let rows = Rows {
            scope: &scope,
            agents: &agents,
            networks: networks.widened_to_truncation(),
        };
        assert_eq!(
            rows.condition(),
            "timestamp >= fromUnixTimestamp64Milli(toInt64(1700000000000), 'UTC') \
             AND timestamp < fromUnixTimestamp64Milli(toInt64(1700086400000), 'UTC') \
             AND event IN ('purchase') \
             AND user_agent IN ('Go-http-client/1.1', 'it\\'s\\\\') \
             AND NOT (ip != '' AND (isIPAddressInRange(ip, '198.51.100.0/24')))"
        );
    }
}
