//! Enrichment, in a fixed order of named steps, each timed per batch:
//! `lift` (well-known properties into columns) → `network` (client IP, bot networks) → `geo` →
//! `user_agent` → `traffic` (referrer, UTM, channel) → `privacy` (PII rules, IP truncation,
//! user id pseudonymization).

pub mod geo;
pub mod net;
pub mod pii;
pub mod traffic;
pub mod ua;

use std::net::IpAddr;
use std::time::Instant;

use self::geo::{Geo, GeoIp};
use self::net::Networks;
use self::pii::Pii;
use self::ua::UaParser;
use super::model::{member, wrong_kind, Event, Field, JsonObject, Object, Rejection};
use super::row::{EventRow, UserPropertiesRow};
use super::sender::Sender;
use crate::config::Settings;

/// Facts about the HTTP request a batch arrived in.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    /// The client address after trusted-proxy resolution.
    pub client_ip: Option<IpAddr>,
    /// The request's `User-Agent`; whether it stands for events that carry none is the
    /// sender's rule.
    pub user_agent: String,
    /// Who sent the batch: decides which user agent describes an event and what it means.
    pub sender: Sender,
    /// Receive time, ms since the epoch.
    pub received_at_ms: i64,
}

/// An event ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Enriched {
    pub row: EventRow,
    pub user: Option<UserPropertiesRow>,
}

/// Turns validated events into rows.
#[derive(Clone)]
pub struct Enricher {
    geo: Option<GeoIp>,
    ua: UaParser,
    pii: Pii,
    bot_networks: Networks,
    pub trusted_proxies: Networks,
    truncate_ip: bool,
    pseudonymize_user_id: bool,
    drop_bots: bool,
    default_currency: String,
}

/// What enrichment decided for one event.
pub enum Outcome {
    Stored(Box<Enriched>),
    Rejected(Rejection),
    /// Dropped by configuration (bots); acknowledged but not stored.
    Dropped(&'static str),
}

impl Enricher {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        // An empty path (e.g. `CHGATE__GEOIP__PATH=`) means no database, like an unset one.
        let geo = match settings
            .geoip
            .path
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
        {
            Some(path) => Some(GeoIp::open(path)?),
            None => {
                tracing::warn!(
                    "geoip.path is not set: events are stored without country, region and city"
                );
                None
            }
        };
        if settings.privacy.salt.is_empty() {
            tracing::warn!(
                "privacy.salt is not set: hashed properties and pseudonymized ids use an empty key"
            );
        }
        Ok(Self {
            geo,
            ua: UaParser::default(),
            pii: Pii::new(&settings.privacy),
            bot_networks: Networks::parse("ingest.bot_networks", &settings.ingest.bot_networks)?,
            trusted_proxies: Networks::parse(
                "ingest.trusted_proxies",
                &settings.ingest.trusted_proxies,
            )?,
            truncate_ip: settings.privacy.truncate_ip,
            pseudonymize_user_id: settings.privacy.pseudonymize_user_id,
            drop_bots: settings.ingest.drop_bots,
            default_currency: settings.ingest.default_currency.clone(),
        })
    }

    /// Enriches a batch, one outcome per event, in order.
    pub fn enrich(&self, events: Vec<Event<'_>>, facts: &RequestFacts) -> Vec<Outcome> {
        let mut work: Vec<Work> = events.into_iter().map(Work::new).collect();
        self.step("lift", &mut work, |w| {
            lift(&w.event, &mut w.row, &self.default_currency)
        });
        self.step("network", &mut work, |w| {
            let ip = w.event.context.ip.or(facts.client_ip);
            w.ip = ip;
            if ip.is_some_and(|ip| self.bot_networks.contains(&ip)) {
                w.bot_reason = Some("bot_network");
            }
            Ok(())
        });
        // Events of one batch usually come from one client: remember the last lookup of each step.
        let mut last_geo: Option<(IpAddr, Geo)> = None;
        self.step("geo", &mut work, |w| {
            if let (Some(geo), Some(ip)) = (&self.geo, w.ip) {
                let found = match &last_geo {
                    Some((seen, found)) if *seen == ip => found.clone(),
                    _ => {
                        let found = geo.lookup(ip);
                        last_geo = Some((ip, found.clone()));
                        found
                    }
                };
                let Geo {
                    country,
                    region,
                    city,
                } = found;
                w.row.country = country;
                w.row.region = region;
                w.row.city = city;
            }
            Ok(())
        });
        let mut last_ua: Option<(String, std::sync::Arc<ua::UaInfo>)> = None;
        let ua_rule = facts.sender.user_agent_rule();
        self.step("user_agent", &mut work, |w| {
            let ua = ua_rule.event_user_agent(
                std::mem::take(&mut w.event.context.user_agent),
                &facts.user_agent,
            );
            let info = match &last_ua {
                Some((seen, info)) if *seen == ua => info.clone(),
                _ => {
                    let info = self.ua.parse(&ua);
                    last_ua = Some((ua.clone(), info.clone()));
                    info
                }
            };
            w.row.browser = info.browser.clone();
            w.row.browser_version = info.browser_version.clone();
            // The SDK's own os/device facts are more precise than the UA's.
            w.row.os = first_non_empty(&w.event.context.os_name, &info.os);
            w.row.os_version = first_non_empty(&w.event.context.os_version, &info.os_version);
            let is_bot = ua_rule.is_bot(&info);
            w.row.device_type = if is_bot {
                "bot".into()
            } else {
                first_non_empty(
                    &w.event.context.device_type.to_ascii_lowercase(),
                    &info.device_type,
                )
            };
            if is_bot && w.bot_reason.is_none() {
                w.bot_reason = Some("bot_user_agent");
            }
            w.row.user_agent = ua;
            Ok(())
        });
        let mut hosts = traffic::Hosts::default();
        self.step("traffic", &mut work, |w| {
            let c = &w.event.context;
            let t = traffic::classify(
                &traffic::TrafficInput {
                    page_url: &c.page_url,
                    page_path: &c.page_path,
                    referrer: &c.page_referrer,
                    campaign: [
                        &c.utm_source,
                        &c.utm_medium,
                        &c.utm_campaign,
                        &c.utm_term,
                        &c.utm_content,
                    ],
                },
                &mut hosts,
            );
            w.row.page_path = t.page_path;
            w.row.referrer_host = t.referrer_host;
            w.row.channel = t.channel.to_string();
            w.row.utm_source = t.utm_source;
            w.row.utm_medium = t.utm_medium;
            w.row.utm_campaign = t.utm_campaign;
            w.row.utm_term = t.utm_term;
            w.row.utm_content = t.utm_content;
            Ok(())
        });
        let mut last_ip: Option<(IpAddr, String)> = None;
        self.step("privacy", &mut work, |w| {
            let outcome = self.pii.apply(&mut w.event.properties);
            if outcome.by_rule > 0 {
                metrics::counter!("chgate_ingest_pii_total", "how" => "rule")
                    .increment(outcome.by_rule.into());
            }
            if outcome.detected > 0 {
                metrics::counter!("chgate_ingest_pii_total", "how" => "detected")
                    .increment(outcome.detected.into());
            }
            if let Some(traits) = w.event.traits.as_mut() {
                self.pii.apply(traits);
            }
            for text in [
                &mut w.event.context.page_url,
                &mut w.event.context.page_referrer,
                &mut w.event.context.page_title,
            ] {
                if let Some(masked) = self.pii.detect(text) {
                    *text = masked;
                }
            }
            w.row.ip = match (w.ip, &last_ip) {
                (None, _) => String::new(),
                (Some(ip), Some((seen, text))) if *seen == ip => text.clone(),
                (Some(ip), _) => {
                    let text = if self.truncate_ip {
                        net::truncate(ip)
                    } else {
                        net::canonical(ip)
                    }
                    .to_string();
                    last_ip = Some((ip, text.clone()));
                    text
                }
            };
            if self.pseudonymize_user_id && !w.event.user_id.is_empty() {
                w.event.user_id = self.pii.hash(&w.event.user_id);
            }
            Ok(())
        });
        work.into_iter()
            .map(|w| self.finish(w, facts.received_at_ms))
            .collect()
    }

    fn step(
        &self,
        name: &'static str,
        work: &mut [Work<'_>],
        mut f: impl FnMut(&mut Work<'_>) -> Result<(), Rejection>,
    ) {
        let started = Instant::now();
        for w in work.iter_mut().filter(|w| w.rejection.is_none()) {
            if let Err(rejection) = f(w) {
                w.rejection = Some(rejection);
            }
        }
        metrics::histogram!("chgate_ingest_enrich_seconds", "step" => name)
            .record(started.elapsed().as_secs_f64());
    }

    fn finish(&self, w: Work<'_>, received_at_ms: i64) -> Outcome {
        if let Some(rejection) = w.rejection {
            return Outcome::Rejected(rejection);
        }
        if let Some(reason) = w.bot_reason {
            metrics::counter!("chgate_ingest_bots_total", "reason" => reason).increment(1);
            if self.drop_bots {
                return Outcome::Dropped(reason);
            }
        }
        let Work {
            event,
            mut row,
            bot_reason,
            ..
        } = w;
        let c = event.context;
        row.event_id = event.event_id;
        row.event = event.event;
        row.timestamp = event.timestamp_ms;
        row.received_at = received_at_ms;
        row.actor_id = if event.user_id.is_empty() {
            event.anonymous_id.clone()
        } else {
            event.user_id.clone()
        };
        row.user_id = event.user_id;
        row.anonymous_id = event.anonymous_id;
        row.session_id = event.session_id;
        row.platform = event.platform;
        row.properties = JsonObject(&event.properties).text();
        row.locale = c.locale;
        row.device_model = c.device_model;
        row.is_bot = u8::from(bot_reason.is_some());
        row.app_version = c.app_version;
        row.library = c.library;
        row.page_url = c.page_url;
        row.page_title = c.page_title;
        row.referrer = c.page_referrer;
        let user = event
            .traits
            .filter(|_| !row.user_id.is_empty())
            .map(|traits| UserPropertiesRow {
                user_id: row.user_id.clone(),
                traits: JsonObject(&traits).text(),
                updated_at: row.timestamp,
            });
        Outcome::Stored(Box::new(Enriched { row, user }))
    }
}

struct Work<'a> {
    event: Event<'a>,
    row: EventRow,
    ip: Option<IpAddr>,
    bot_reason: Option<&'static str>,
    rejection: Option<Rejection>,
}

impl<'a> Work<'a> {
    fn new(event: Event<'a>) -> Self {
        Self {
            event,
            row: empty_row(),
            ip: None,
            bot_reason: None,
            rejection: None,
        }
    }
}

fn empty_row() -> EventRow {
    EventRow {
        event_id: uuid::Uuid::nil(),
        event: String::new(),
        timestamp: 0,
        received_at: 0,
        user_id: String::new(),
        anonymous_id: String::new(),
        actor_id: String::new(),
        session_id: String::new(),
        platform: String::new(),
        properties: String::new(),
        item_id: String::new(),
        developer_id: String::new(),
        revenue: 0.0,
        currency: String::new(),
        operation: String::new(),
        status: String::new(),
        duration_ms: None,
        ip: String::new(),
        country: String::new(),
        region: String::new(),
        city: String::new(),
        locale: String::new(),
        user_agent: String::new(),
        browser: String::new(),
        browser_version: String::new(),
        os: String::new(),
        os_version: String::new(),
        device_type: String::new(),
        device_model: String::new(),
        is_bot: 0,
        app_version: String::new(),
        library: String::new(),
        page_url: String::new(),
        page_path: String::new(),
        page_title: String::new(),
        referrer: String::new(),
        referrer_host: String::new(),
        channel: String::new(),
        utm_source: String::new(),
        utm_medium: String::new(),
        utm_campaign: String::new(),
        utm_term: String::new(),
        utm_content: String::new(),
        ingest_segment: 0,
    }
}

fn first_non_empty(preferred: &str, fallback: &str) -> String {
    if preferred.is_empty() {
        fallback
    } else {
        preferred
    }
    .to_string()
}

/// Events whose amount is revenue: `purchase` adds, `refund` subtracts (in the revenue rollup).
pub const REVENUE_EVENTS: &[&str] = &["purchase", "refund"];

/// Copies well-known properties into typed columns (they stay in `properties` too).
/// `item_id` (or `product_id`, `game_id`), `developer_id`, `amount` (or `revenue`), `currency`,
/// `operation`, `status`, `duration_ms`.
fn lift(event: &Event<'_>, row: &mut EventRow, default_currency: &str) -> Result<(), Rejection> {
    let p = &event.properties;
    row.item_id = first_text(p, &["item_id", "product_id", "game_id"])?;
    row.developer_id = first_text(p, &["developer_id"])?;
    row.operation = first_text(p, &["operation"])?;
    row.status = first_text(p, &["status"])?;
    row.duration_ms = match member(p, "duration_ms") {
        None | Some(Field::Null) => None,
        Some(Field::Number(n)) => match n.as_f64() {
            Some(ms) if ms.is_finite() && ms >= 0.0 => Some(ms),
            _ => {
                return Err(Rejection::new(
                    "invalid_value",
                    "properties.duration_ms",
                    "must be a non-negative number",
                ))
            }
        },
        Some(other) => return Err(wrong_kind("properties.duration_ms", "a number", other)),
    };
    let amount = ["amount", "revenue"].into_iter().find_map(|k| {
        member(p, k)
            .filter(|v| !matches!(v, Field::Null))
            .map(|v| (k, v))
    });
    if let Some((key, value)) = amount {
        let field = format!("properties.{key}");
        let amount = match value {
            Field::Number(n) => n.as_f64().filter(|a| a.is_finite()),
            Field::Text(s) => s.trim().parse::<f64>().ok().filter(|a| a.is_finite()),
            other => return Err(wrong_kind(&field, "a number", other)),
        }
        .ok_or_else(|| Rejection::new("invalid_value", field.clone(), "must be a finite number"))?;
        if REVENUE_EVENTS.contains(&event.event.as_str()) && amount < 0.0 {
            return Err(Rejection::new(
                "out_of_range",
                field,
                "must not be negative (a refund is its own event)",
            ));
        }
        row.revenue = amount;
    } else if REVENUE_EVENTS.contains(&event.event.as_str()) {
        return Err(Rejection::new(
            "missing_field",
            "properties.amount",
            format!("is required for {} events", event.event),
        ));
    }
    let currency = first_text(p, &["currency"])?;
    row.currency = if currency.is_empty() {
        if row.revenue != 0.0 || REVENUE_EVENTS.contains(&event.event.as_str()) {
            default_currency.to_string()
        } else {
            String::new()
        }
    } else if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        currency.to_ascii_uppercase()
    } else {
        return Err(Rejection::new(
            "invalid_value",
            "properties.currency",
            format!("{currency:?} is not an ISO 4217 code such as USD or RUB"),
        ));
    };
    Ok(())
}

fn first_text(p: &Object<'_>, keys: &[&str]) -> Result<String, Rejection> {
    for key in keys {
        match member(p, key) {
            None | Some(Field::Null) => continue,
            Some(Field::Text(s)) => return Ok(s.to_string()),
            Some(Field::Number(n)) => return Ok(n.to_string()),
            Some(other) => return Err(wrong_kind(&format!("properties.{key}"), "a string", other)),
        }
    }
    Ok(String::new())
}
