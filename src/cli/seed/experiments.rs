//! The experiments `chgate seed` runs over its users: `checkout_redesign`, whose treatment completes
//! more checkouts (a planted effect), and `button_color_aa`, an A/A test whose variants behave the
//! same. Users are assigned by a hash of the experiment and their id (as SDKs bucket users), so a
//! user keeps their variant whatever the seed; each exposed user has one `$experiment_exposure`
//! event per experiment, at the first moment they see it on or after the experiments' start.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::SeedPlan;
use crate::access::auth::Principal;
use crate::config::Settings;
use crate::definitions::{Context, Kind};
use crate::experiments::metrics::Metrics;
use crate::experiments::spec::{
    ExperimentSpec, Exposure, Metric, MetricEntry, MetricKind, SavedMetric, Variant,
};
use crate::experiments::Experiments;

/// The experiment with a real effect: exposure at a user's first checkout.
pub const CHECKOUT_REDESIGN: &str = "checkout_redesign";
/// The A/A experiment: exposure at a user's first game page.
pub const BUTTON_COLOR_AA: &str = "button_color_aa";
/// The exposure event and its properties (the definitions' defaults).
pub const EXPOSURE_EVENT: &str = "$experiment_exposure";

/// The experiments run over the last this many days of the seeded period (all of it when shorter).
pub const EXPERIMENT_DAYS: u32 = 28;
/// Share of started checkouts that end in a purchase without the redesign.
pub const CHECKOUT_COMPLETION: f64 = 0.7;
/// The planted effect: the redesigned checkout completes this much more (relative), from exposure.
pub const PLANTED_LIFT: f64 = 0.2;

const DAY_MS: i64 = 86_400_000;

/// Where an experiment is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Checkout,
    GamePage,
}

/// One user's arm of one experiment.
#[derive(Debug, Clone)]
struct Arm {
    experiment: &'static str,
    variant: &'static str,
    exposed_at: Option<i64>,
}

impl Arm {
    fn new(experiment: &'static str, variants: [&'static str; 2], user_id: &str) -> Self {
        Self {
            experiment,
            variant: variants[(bucket(experiment, user_id) % 2) as usize],
            exposed_at: None,
        }
    }
}

/// A user's variants and exposures.
#[derive(Debug, Clone)]
pub struct Assignments {
    start_ms: i64,
    checkout: Arm,
    game_page: Arm,
}

impl Assignments {
    pub fn new(user_id: &str, start_ms: i64) -> Self {
        Self {
            start_ms,
            checkout: Arm::new(CHECKOUT_REDESIGN, ["control", "treatment"], user_id),
            game_page: Arm::new(BUTTON_COLOR_AA, ["a", "b"], user_id),
        }
    }

    /// The properties of the exposure event when the user sees `surface` for the first time at
    /// `t` (on or after the start); none otherwise.
    pub fn expose(&mut self, surface: Surface, t: i64) -> Option<Value> {
        let arm = match surface {
            Surface::Checkout => &mut self.checkout,
            Surface::GamePage => &mut self.game_page,
        };
        if t < self.start_ms || arm.exposed_at.is_some() {
            return None;
        }
        arm.exposed_at = Some(t);
        Some(json!({"experiment": arm.experiment, "variant": arm.variant}))
    }

    /// The chance that a checkout started at `t` ends in a purchase.
    pub fn checkout_completion(&self, t: i64) -> f64 {
        let treated = self.checkout.variant == "treatment"
            && self.checkout.exposed_at.is_some_and(|at| at <= t);
        if treated {
            CHECKOUT_COMPLETION * (1.0 + PLANTED_LIFT)
        } else {
            CHECKOUT_COMPLETION
        }
    }
}

/// FNV-1a of `experiment:user_id`, mixed by SplitMix64's finalizer: stable across platforms and
/// releases, and every bit depends on every byte (FNV's low bit alone is the parity of the bytes'
/// low bits, which would tie the experiments' assignments together).
fn bucket(experiment: &str, user_id: &str) -> u64 {
    let hash = format!("{experiment}:{user_id}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    let hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The experiments' start (ms since the epoch): [`EXPERIMENT_DAYS`] before the plan's end.
pub fn start_ms(plan: &SeedPlan) -> i64 {
    plan.end_ms - i64::from(plan.days.min(EXPERIMENT_DAYS)) * DAY_MS
}

/// The metrics both experiments use, saved once (`/v1/metrics`): a purchase within a day of
/// exposure (primary: within 14 days most users buy at some checkout whatever the variant, which
/// hides a better checkout), revenue per user over 14 days and activity on day 7 after exposure.
pub fn metrics() -> Vec<Metric> {
    let metric =
        |name: &str, description: &str, kind, property: Option<&str>, window_days| Metric {
            name: name.into(),
            description: description.into(),
            kind,
            event: "purchase".into(),
            property: property.map(Into::into),
            steps: Vec::new(),
            day: None,
            window_days,
        };
    vec![
        metric(
            "purchase",
            "A purchase within a day of exposure",
            MetricKind::Conversion,
            None,
            1,
        ),
        metric(
            "revenue",
            "Revenue per user over 14 days after exposure",
            MetricKind::Mean,
            Some("revenue"),
            14,
        ),
        Metric {
            event: "*".into(),
            day: Some(7),
            ..metric(
                "active on day 7",
                "Any event on the seventh day after exposure",
                MetricKind::Retention,
                None,
                14,
            )
        },
    ]
}

/// The two definitions, for experiments that started at `start_ms`, measuring `metrics` (the
/// primary first): [`metrics`] by the ids they were saved under, or defined in place.
pub fn definitions(start_ms: i64, metrics: &[MetricEntry]) -> Vec<ExperimentSpec> {
    let start: DateTime<Utc> = Utc
        .timestamp_millis_opt(start_ms)
        .single()
        .unwrap_or_default();
    let spec = |name: &str, hypothesis: &str, variants: [&str; 2], sequential| ExperimentSpec {
        name: name.into(),
        hypothesis: hypothesis.into(),
        variants: variants
            .into_iter()
            .map(|key| Variant {
                key: key.into(),
                weight: None,
            })
            .collect(),
        exposure: Exposure::default(),
        start,
        end: None,
        metrics: metrics.to_vec(),
        minimum_detectable_effect: 0.1,
        sequential,
        cuped: false,
    };
    vec![
        spec(
            CHECKOUT_REDESIGN,
            "the redesigned checkout turns more started checkouts into purchases",
            ["control", "treatment"],
            true,
        ),
        spec(
            BUTTON_COLOR_AA,
            "an A/A test: both variants show the same button, so no difference is expected",
            ["a", "b"],
            false,
        ),
    ]
}

/// What storing a seeded definition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Created(uuid::Uuid),
    /// An experiment of that name exists already (an earlier seed): left as it is.
    Kept(uuid::Uuid),
}

/// Stores [`metrics`] as saved metrics and [`definitions`] using them, through the definitions
/// repository, owned by the command line's admin principal (`cli:<login>`), unless definitions of
/// those names exist: `(name, what happened)` of each experiment.
pub async fn store(settings: &Settings, start_ms: i64) -> anyhow::Result<Vec<(String, Stored)>> {
    let ctx = definitions_context(settings)?;
    let owner = Principal {
        key_id: None,
        name: format!("cli:{}", crate::cli::login()),
        role: "admin".into(),
        attributes: Default::default(),
    };
    let saved = Metrics::list(&ctx.pool)
        .await
        .context("cannot list the saved metrics (run `chgate migrate` first?)")?;
    let mut entries = Vec::new();
    for metric in metrics() {
        let id = match saved.iter().find(|m| m.spec.name == metric.name) {
            Some(view) => view.id,
            None => {
                let id = uuid::Uuid::new_v4();
                crate::definitions::store::<Metrics>(&ctx, &owner, id, &metric, true)
                    .await
                    .with_context(|| format!("cannot save the metric {}", metric.name))?;
                id
            }
        };
        entries.push(MetricEntry::Saved(SavedMetric { metric: id }));
    }
    let existing = Experiments::list(&ctx.pool)
        .await
        .context("cannot list the stored experiments")?;
    let mut stored = Vec::new();
    for spec in definitions(start_ms, &entries) {
        let outcome = match existing.iter().find(|e| e.spec.name == spec.name) {
            Some(experiment) => Stored::Kept(experiment.id),
            None => {
                let id = uuid::Uuid::new_v4();
                crate::definitions::store::<Experiments>(&ctx, &owner, id, &spec, true)
                    .await
                    .with_context(|| format!("cannot store the experiment {}", spec.name))?;
                Stored::Created(id)
            }
        };
        stored.push((spec.name, outcome));
    }
    Ok(stored)
}

/// The handles the definitions repository needs, without ingestion or a listener: the templates
/// and the access policy to validate with, Postgres to store in.
fn definitions_context(settings: &Settings) -> anyhow::Result<Context> {
    use crate::storage::{clickhouse::ClickHouse, postgres::Postgres, redis::Redis};
    let postgres = Postgres::connect_lazy(&settings.postgres)?;
    let redis = Redis::from_settings(&settings.redis)?;
    let clickhouse = ClickHouse::new(&settings.clickhouse);
    let database = &settings.clickhouse.database;
    let catalog = crate::catalog::Catalog::load_or_explain(&settings.catalog.dir, database)?;
    let access = crate::access::Access::load(&settings.access, redis.clone())?;
    let generations = crate::cache::generations::Generations::new(
        redis.clone(),
        database,
        Duration::from_millis(settings.cache.generation_memo_ms),
    );
    let audit = crate::audit::AuditLog::start(
        postgres.pool().clone(),
        settings.audit.retention_days,
        CancellationToken::new(),
    );
    let runner = crate::query::runner::Runner {
        catalog: crate::catalog::CatalogHandle::new(catalog, database),
        access: access.clone(),
        cache: crate::cache::ResultCache::new(&settings.cache, redis, generations),
        clickhouse: clickhouse.clone(),
        buffers: crate::http::body::MemoryBudget::new(
            settings.server.max_buffered_bytes,
            Duration::from_millis(settings.server.buffered_wait_ms),
        ),
        audit: audit.clone(),
        pii_salt: Arc::from(settings.privacy.salt.expose()),
    };
    Ok(Context {
        pool: postgres.pool().clone(),
        runner,
        access,
        clickhouse,
        scheduler: crate::schedule::Scheduler::new(postgres.pool().clone()),
        outbound: reqwest::Client::new(),
        audit,
        settings: Arc::new(settings.clone()),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::cli::seed::generate;

    fn events(users: usize, seed: u64) -> Vec<Value> {
        let mut events = Vec::new();
        let plan = SeedPlan {
            users,
            days: 35,
            end_ms: 1_790_000_000_000,
            seed,
        };
        generate(&plan, |e| events.push(e));
        events
    }

    fn exposures(events: &[Value]) -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["event"] == EXPOSURE_EVENT)
            .collect()
    }

    #[test]
    fn the_same_seed_generates_the_same_exposures() {
        let (first, second) = (events(300, 3), events(300, 3));
        assert!(exposures(&first).len() > 300);
        assert_eq!(exposures(&first), exposures(&second));
    }

    #[test]
    fn each_exposed_user_has_one_exposure_and_one_variant_per_experiment() {
        let events = events(400, 5);
        let start = 1_790_000_000_000 - i64::from(EXPERIMENT_DAYS) * DAY_MS;
        let mut seen: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for exposure in exposures(&events) {
            assert!(exposure["timestamp"].as_i64().unwrap() >= start);
            let key = (
                exposure["user_id"].as_str().unwrap().to_string(),
                exposure["properties"]["experiment"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
            let variant = exposure["properties"]["variant"].as_str().unwrap();
            assert!(
                seen.entry(key.clone())
                    .or_default()
                    .insert(variant.to_string()),
                "{key:?} exposed twice"
            );
        }
        assert!(seen.values().all(|variants| variants.len() == 1));
        let per_experiment = |name: &str| seen.keys().filter(|(_, e)| e == name).count();
        assert!(per_experiment(CHECKOUT_REDESIGN) > 200);
        assert!(per_experiment(BUTTON_COLOR_AA) > 300);
    }

    /// Per variant of `experiment`: (checkouts started after the user's exposure, purchases).
    fn completions(events: &[Value], experiment: &str) -> BTreeMap<String, (u64, u64)> {
        let mut exposed: BTreeMap<&str, (&str, i64)> = BTreeMap::new();
        for e in exposures(events) {
            if e["properties"]["experiment"] == experiment {
                let variant = e["properties"]["variant"].as_str().unwrap();
                let user = e["user_id"].as_str().unwrap();
                exposed.insert(user, (variant, e["timestamp"].as_i64().unwrap()));
            }
        }
        let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for e in events {
            let Some(&(variant, at)) = e["user_id"].as_str().and_then(|u| exposed.get(u)) else {
                continue;
            };
            if e["timestamp"].as_i64().unwrap() <= at {
                continue;
            }
            let entry = counts.entry(variant.to_string()).or_default();
            match e["event"].as_str() {
                Some("checkout_started") => entry.0 += 1,
                Some("purchase") => entry.1 += 1,
                _ => {}
            }
        }
        counts
    }

    #[test]
    fn the_treatment_completes_the_planted_share_more_checkouts_and_the_a_a_variants_do_not_differ()
    {
        let events = events(2500, 11);
        let rate = |counts: &BTreeMap<String, (u64, u64)>, variant: &str| {
            let (checkouts, purchases) = counts[variant];
            assert!(checkouts > 2000, "{variant}: {checkouts} checkouts");
            purchases as f64 / checkouts as f64
        };
        let checkout = completions(&events, CHECKOUT_REDESIGN);
        let control = rate(&checkout, "control");
        let lift = rate(&checkout, "treatment") / control - 1.0;
        assert!((control - CHECKOUT_COMPLETION).abs() < 0.03, "{control}");
        assert!((lift - PLANTED_LIFT).abs() < 0.05, "lift {lift}");
        let aa = completions(&events, BUTTON_COLOR_AA);
        let ratio = rate(&aa, "b") / rate(&aa, "a") - 1.0;
        assert!(ratio.abs() < 0.05, "A/A difference {ratio}");
    }

    #[test]
    fn users_keep_their_variant_whatever_the_seed_and_split_about_evenly() {
        let variant = |user: &str| Assignments::new(user, 0).checkout.variant;
        assert_eq!(variant("user-000042"), variant("user-000042"));
        let treated = (0..10_000)
            .filter(|i| variant(&format!("user-{i:06}")) == "treatment")
            .count();
        assert!((4_800..5_200).contains(&treated), "{treated}");
        let both = (0..10_000)
            .map(|i| Assignments::new(&format!("user-{i:06}"), 0))
            .filter(|a| a.checkout.variant == "treatment" && a.game_page.variant == "b")
            .count();
        assert!(
            (2_300..2_700).contains(&both),
            "the experiments' assignments are tied: {both}"
        );
    }

    #[test]
    fn the_definitions_are_valid_and_start_with_the_exposures() {
        let plan = SeedPlan {
            users: 1,
            days: 60,
            end_ms: 1_790_000_000_000,
            seed: 1,
        };
        let metrics: Vec<MetricEntry> = metrics().into_iter().map(MetricEntry::Defined).collect();
        let definitions = definitions(start_ms(&plan), &metrics);
        assert_eq!(definitions.len(), 2);
        for spec in &definitions {
            spec.check().unwrap();
            crate::experiments::spec::check_metric_names(&super::metrics()).unwrap();
            assert_eq!(spec.start.timestamp_millis(), start_ms(&plan));
            assert_eq!(spec.exposure.event, EXPOSURE_EVENT);
        }
    }
}
