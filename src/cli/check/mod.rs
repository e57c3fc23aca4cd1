//! `chgate check`: the gate for analysts' pull requests on `queries/`.
//!
//! Offline: every template's header, every example rendered through minijinja, the SQL guard and
//! the placeholder types (all of it is what `Catalog::load` does). `--live` also asks ClickHouse to
//! `EXPLAIN` each rendered example, compares the result columns with the declared ones, and runs the
//! fixture tests in `queries/<name>/tests/` in a scratch database.

pub mod live;

use std::fmt::Write as _;
use std::path::Path;

use crate::catalog::Catalog;
use crate::config::Settings;

/// What the check found.
pub struct Report {
    pub text: String,
    pub failures: usize,
}

pub async fn run(settings: &Settings, dir: &Path, live: bool) -> anyhow::Result<Report> {
    let mut text = String::new();
    let catalog = match Catalog::load(dir, &settings.clickhouse.database) {
        Ok(catalog) => catalog,
        Err(errors) => {
            for error in &errors {
                writeln!(text, "error: {error}")?;
            }
            return Ok(Report {
                text,
                failures: errors.len(),
            });
        }
    };
    let versions = catalog.all().count();
    let examples: usize = catalog.all().map(|t| t.meta().examples.len()).sum();
    writeln!(
        text,
        "ok: {versions} template versions, {examples} examples rendered and guarded"
    )?;
    let mut failures = 0;
    if live {
        let live = live::run(settings, &catalog).await?;
        text.push_str(&live.text);
        failures += live.failures;
    }
    Ok(Report { text, failures })
}
