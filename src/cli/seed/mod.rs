//! A generator of realistic game-store traffic: page and screen views, search, item views, carts,
//! purchases (and refunds), signups, reviews, play sessions and connector operations, with funnels
//! that leak at each step, retention that decays with age, and a mix of platforms, countries,
//! browsers, traffic sources and a few bots, and two A/B experiments over the users
//! ([`experiments`]). Deterministic for a given seed.

pub mod experiments;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Shape of a generated data set.
#[derive(Debug, Clone)]
pub struct SeedPlan {
    pub users: usize,
    pub days: u32,
    /// End of the period (ms since the epoch); events fall in the `days` before it.
    pub end_ms: i64,
    pub seed: u64,
}

struct Item {
    id: String,
    developer: String,
    name: String,
    price: f64,
}

struct Country {
    code: &'static str,
    weight: u32,
    /// A public address block the GeoIP database places in the country (first three octets).
    prefix: [u8; 3],
    locale: &'static str,
    currency: &'static str,
}

const COUNTRIES: &[Country] = &[
    Country {
        code: "RU",
        weight: 30,
        prefix: [77, 88, 8],
        locale: "ru-RU",
        currency: "RUB",
    },
    Country {
        code: "US",
        weight: 20,
        prefix: [8, 8, 8],
        locale: "en-US",
        currency: "USD",
    },
    Country {
        code: "DE",
        weight: 10,
        prefix: [85, 214, 132],
        locale: "de-DE",
        currency: "EUR",
    },
    Country {
        code: "GB",
        weight: 7,
        prefix: [81, 2, 69],
        locale: "en-GB",
        currency: "GBP",
    },
    Country {
        code: "KZ",
        weight: 6,
        prefix: [2, 132, 0],
        locale: "ru-KZ",
        currency: "KZT",
    },
    Country {
        code: "BR",
        weight: 6,
        prefix: [200, 160, 2],
        locale: "pt-BR",
        currency: "BRL",
    },
    Country {
        code: "FR",
        weight: 5,
        prefix: [90, 84, 0],
        locale: "fr-FR",
        currency: "EUR",
    },
    Country {
        code: "TR",
        weight: 5,
        prefix: [78, 160, 0],
        locale: "tr-TR",
        currency: "TRY",
    },
    Country {
        code: "IN",
        weight: 6,
        prefix: [117, 192, 0],
        locale: "en-IN",
        currency: "INR",
    },
    Country {
        code: "JP",
        weight: 5,
        prefix: [133, 242, 0],
        locale: "ja-JP",
        currency: "JPY",
    },
];

/// (platform, weight, user agents)
const PLATFORMS: &[(&str, u32, &[&str])] = &[
    ("web", 50, &[
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 YaBrowser/24.12.0.0 Safari/537.36",
    ]),
    ("ios", 20, &[
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
    ]),
    ("android", 22, &[
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36",
    ]),
    ("desktop", 8, &["GameStoreClient/3.4.1 (Windows NT 10.0; Win64; x64)"]),
];

const BOT_AGENTS: &[&str] = &[
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
];

/// (referrer, utm_source, utm_medium, utm_campaign, weight)
const SOURCES: &[(&str, &str, &str, &str, u32)] = &[
    ("", "", "", "", 35),
    ("https://www.google.com/", "", "", "", 18),
    ("https://yandex.ru/", "", "", "", 14),
    ("https://vk.com/feed", "", "", "", 8),
    ("https://t.me/", "", "", "", 4),
    ("", "newsletter", "email", "winter_sale", 7),
    ("https://www.google.com/", "google", "cpc", "brand", 6),
    ("https://yandex.ru/", "yandex", "cpc", "games_rsya", 5),
    ("https://stopgame.ru/news", "", "", "", 3),
];

const OPERATIONS: &[&str] = &[
    "steam_sync",
    "payment_api",
    "catalog_export",
    "achievements_push",
];
const SEARCHES: &[&str] = &[
    "rpg", "strategy", "indie", "coop", "space", "racing", "horror", "puzzle",
];

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T], weight: impl Fn(&T) -> u32) -> &'a T {
    let total: u32 = items.iter().map(&weight).sum();
    let mut roll = rng.random_range(0..total.max(1));
    for item in items {
        let w = weight(item);
        if roll < w {
            return item;
        }
        roll -= w;
    }
    &items[0]
}

/// Generates the plan's events, one user at a time, calling `emit` for each (native shape).
pub fn generate(plan: &SeedPlan, mut emit: impl FnMut(Value)) {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let catalog: Vec<Item> = (0..200)
        .map(|i| Item {
            id: format!("game-{i:03}"),
            developer: format!("dev-{:02}", i % 40),
            name: format!("Game {i:03}"),
            price: [4.99, 9.99, 14.99, 19.99, 29.99, 39.99, 59.99][i % 7],
        })
        .collect();
    let day_ms = 86_400_000i64;
    let start_ms = plan.end_ms - i64::from(plan.days) * day_ms;
    let experiments_start = experiments::start_ms(plan);
    for u in 0..plan.users {
        let user = UserProfile::new(&mut rng, u, plan.seed);
        let mut assignments = experiments::Assignments::new(&user.id, experiments_start);
        // More users arrive early in the period, so later days have returning cohorts.
        let signup_day = (rng.random::<f64>().powf(1.3) * f64::from(plan.days)) as i64;
        let signup_day = signup_day.min(i64::from(plan.days) - 1);
        for day in signup_day..i64::from(plan.days) {
            let age = (day - signup_day) as f64;
            let weekend = matches!((day + 3) % 7, 5 | 6);
            let p_active = if age == 0.0 {
                1.0
            } else {
                (0.45 / (1.0 + age).sqrt()) * if weekend { 1.25 } else { 1.0 }
            };
            if rng.random::<f64>() > p_active {
                continue;
            }
            let sessions = 1
                + usize::from(rng.random::<f64>() < 0.35)
                + usize::from(rng.random::<f64>() < 0.1);
            for s in 0..sessions {
                // Sessions start early enough that their last event stays inside the day.
                let session_start =
                    start_ms + day * day_ms + rng.random_range(0..day_ms - 5 * 3_600_000);
                let mut session = Session {
                    user: &user,
                    id: format!("s-{u}-{day}-{s}"),
                    t: session_start,
                    first_of_user: day == signup_day && s == 0,
                    source: pick(&mut rng, SOURCES, |s| s.4),
                    assignments: &mut assignments,
                };
                session.run(&mut rng, &catalog, &mut emit);
            }
        }
        // A little crawler traffic next to every hundred users.
        if u % 100 == 0 {
            for b in 0..rng.random_range(5..20) {
                let t = start_ms + rng.random_range(0..i64::from(plan.days) * day_ms);
                let item = &catalog[rng.random_range(0..catalog.len())];
                emit(json!({
                    "event": "page_view",
                    "anonymous_id": format!("bot-{u}-{b}"),
                    "timestamp": t,
                    "platform": "web",
                    "properties": {"item_id": item.id},
                    "context": {
                        "ip": format!("66.249.66.{}", rng.random_range(1..250)),
                        "user_agent": BOT_AGENTS[rng.random_range(0..BOT_AGENTS.len())],
                        "page": {"url": format!("https://store.example/app/{}", item.id)}
                    }
                }));
            }
        }
    }
}

struct UserProfile {
    id: String,
    platform: &'static str,
    user_agent: &'static str,
    country: &'static Country,
    ip: String,
    /// How keen on buying this user is.
    spender: f64,
}

impl UserProfile {
    /// User `index` of the data set made with `seed`. Seed 1 (the default) names users
    /// `user-000042`; other seeds add their own prefix, so a database topped up with another seed
    /// gains new users instead of giving existing ones a second history (and a second exposure).
    fn new(rng: &mut StdRng, index: usize, seed: u64) -> Self {
        let (platform, _, agents) = *pick(rng, PLATFORMS, |p| p.1);
        let country = pick(rng, COUNTRIES, |c| c.weight);
        let [a, b, c] = country.prefix;
        Self {
            id: if seed == 1 {
                format!("user-{index:06}")
            } else {
                format!("user-s{seed}-{index:06}")
            },
            platform,
            user_agent: agents[rng.random_range(0..agents.len())],
            country,
            ip: format!("{a}.{b}.{c}.{}", rng.random_range(1..250)),
            spender: rng.random::<f64>().powi(3),
        }
    }
}

struct Session<'a> {
    user: &'a UserProfile,
    id: String,
    t: i64,
    first_of_user: bool,
    source: &'a (&'a str, &'a str, &'a str, &'a str, u32),
    assignments: &'a mut experiments::Assignments,
}

impl Session<'_> {
    fn event(&mut self, rng: &mut StdRng, name: &str, properties: Value, path: &str) -> Value {
        self.t += rng.random_range(2_000..90_000);
        self.event_now(name, properties, path)
    }

    /// The exposure event when the user sees `surface` for the first time since the experiments
    /// started, a second from now. It draws nothing from `rng`, so the rest of the traffic stays
    /// what the seed makes it.
    fn expose(&mut self, surface: experiments::Surface, path: &str, emit: &mut impl FnMut(Value)) {
        if let Some(properties) = self.assignments.expose(surface, self.t + 1_000) {
            self.t += 1_000;
            emit(self.event_now(experiments::EXPOSURE_EVENT, properties, path));
        }
    }

    /// An event at the session's current time.
    fn event_now(&self, name: &str, properties: Value, path: &str) -> Value {
        let u = self.user;
        let mut context = json!({
            "ip": u.ip,
            "user_agent": u.user_agent,
            "locale": u.country.locale,
            "app": {"version": "3.4.1"}
        });
        if u.platform == "web" {
            let (referrer, source, medium, campaign, _) = *self.source;
            let mut url = format!("https://store.example{path}");
            if !source.is_empty() {
                url.push_str(&format!(
                    "?utm_source={source}&utm_medium={medium}&utm_campaign={campaign}"
                ));
            }
            context["page"] = json!({"url": url, "path": path, "referrer": referrer});
        }
        json!({
            "event": name,
            "user_id": u.id,
            "session_id": self.id,
            "timestamp": self.t,
            "platform": u.platform,
            "properties": properties,
            "context": context
        })
    }

    fn run(&mut self, rng: &mut StdRng, catalog: &[Item], emit: &mut impl FnMut(Value)) {
        let view = if self.user.platform == "web" {
            "page_view"
        } else {
            "screen_view"
        };
        emit(self.event(rng, view, json!({"name": "home"}), "/"));
        if self.first_of_user {
            let method = ["email", "vk", "google", "steam"][rng.random_range(0..4)];
            emit(self.event(rng, "signup", json!({ "method": method }), "/signup"));
            let mut identify = self.event(rng, "identify", json!({}), "/signup");
            identify["traits"] = json!({"country": self.user.country.code, "platform": self.user.platform, "plan": "free"});
            emit(identify);
        }
        if rng.random::<f64>() < 0.4 {
            let q = SEARCHES[rng.random_range(0..SEARCHES.len())];
            let results = rng.random_range(0..40);
            emit(self.event(
                rng,
                "search",
                json!({"query": q, "results": results}),
                "/search",
            ));
        }
        let views = rng.random_range(1..6);
        for _ in 0..views {
            // A long tail: popular games get most views.
            let index = ((rng.random::<f64>().powi(2)) * catalog.len() as f64) as usize;
            let item = &catalog[index.min(catalog.len() - 1)];
            let item_props = json!({"item_id": item.id, "developer_id": item.developer, "item_name": item.name, "price": item.price});
            let page = format!("/app/{}", item.id);
            self.expose(experiments::Surface::GamePage, &page, emit);
            emit(self.event(rng, "game_view", item_props.clone(), &page));
            if rng.random::<f64>() > 0.28 + self.user.spender * 0.3 {
                continue;
            }
            emit(self.event(rng, "add_to_cart", item_props.clone(), "/cart"));
            if rng.random::<f64>() > 0.55 {
                continue;
            }
            self.expose(experiments::Surface::Checkout, "/checkout", emit);
            emit(self.event(rng, "checkout_started", item_props.clone(), "/checkout"));
            if rng.random::<f64>() > self.assignments.checkout_completion(self.t) {
                continue;
            }
            // Now and then a whale buys a bundle for well over $1000.
            let (amount, currency) = if rng.random::<f64>() < 0.004 {
                (1299.0, "USD")
            } else if self.user.country.currency == "RUB" {
                // Regional pricing: roubles at a store rate.
                ((item.price * 90.0).round(), "RUB")
            } else {
                (item.price, "USD")
            };
            let order = format!("o-{}-{}", self.id, item.id);
            let mut purchase = item_props.clone();
            purchase["amount"] = json!(amount);
            purchase["currency"] = json!(currency);
            purchase["order_id"] = json!(order);
            emit(self.event(rng, "purchase", purchase.clone(), "/checkout/done"));
            let status = if rng.random::<f64>() < 0.97 {
                "ok"
            } else {
                "error"
            };
            let duration = 80.0 + rng.random::<f64>().powi(3) * 1500.0;
            let call =
                json!({"operation": "payment_api", "status": status, "duration_ms": duration});
            emit(self.event(rng, "connector_call", call, "/checkout/done"));
            if rng.random::<f64>() < 0.03 {
                emit(self.event(rng, "refund", purchase, "/account/orders"));
            }
            if rng.random::<f64>() < 0.15 {
                let mut review = item_props.clone();
                review["rating"] = json!(rng.random_range(1..=5));
                emit(self.event(rng, "review", review, &format!("/app/{}/reviews", item.id)));
            }
        }
        if rng.random::<f64>() < 0.5 {
            let item = &catalog[rng.random_range(0..catalog.len())];
            let props = json!({"item_id": item.id, "developer_id": item.developer});
            emit(self.event(rng, "game_start", props.clone(), "/library"));
            let minutes = rng.random_range(5..180);
            let mut end = props;
            end["duration_ms"] = json!(minutes * 60_000);
            self.t += minutes * 60_000;
            emit(self.event(rng, "game_end", end, "/library"));
        }
        if rng.random::<f64>() < 0.3 {
            let operation = OPERATIONS[rng.random_range(0..OPERATIONS.len())];
            let roll = rng.random::<f64>();
            let status = if roll < 0.94 {
                "ok"
            } else if roll < 0.98 {
                "error"
            } else {
                "timeout"
            };
            let duration = 20.0 + rng.random::<f64>().powi(4) * 4000.0;
            emit(self.event(rng, "connector_call", json!({"operation": operation, "status": status, "duration_ms": (duration * 10.0).round() / 10.0}), "/library"));
        }
    }
}

/// A stream of realistic events for load tests: `batch` events per batch, no two batches alike.
pub fn batches(count: usize, batch: usize, seed: u64) -> Vec<Vec<Value>> {
    let mut events = Vec::with_capacity(count * batch);
    let plan = SeedPlan {
        users: (count * batch / 12).max(10),
        days: 3,
        end_ms: chrono::Utc::now().timestamp_millis(),
        seed,
    };
    generate(&plan, |e| {
        if events.len() < count * batch {
            events.push(e);
        }
    });
    let mut out: Vec<Vec<Value>> = events.chunks(batch).map(<[Value]>::to_vec).collect();
    out.retain(|b| b.len() == batch);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Value> {
        let mut events = Vec::new();
        generate(
            &SeedPlan {
                users: 300,
                days: 14,
                end_ms: 1_790_000_000_000,
                seed: 7,
            },
            |e| events.push(e),
        );
        events
    }

    #[test]
    fn the_same_seed_generates_the_same_events() {
        assert_eq!(sample(), sample());
    }

    #[test]
    fn funnels_leak_at_every_step() {
        let events = sample();
        let count = |name: &str| events.iter().filter(|e| e["event"] == name).count();
        let (views, carts, checkouts, purchases) = (
            count("game_view"),
            count("add_to_cart"),
            count("checkout_started"),
            count("purchase"),
        );
        assert!(
            views > carts && carts > checkouts && checkouts > purchases && purchases > 0,
            "{views} {carts} {checkouts} {purchases}"
        );
        assert_eq!(count("signup"), 300);
    }

    #[test]
    fn events_fall_inside_the_period() {
        for e in sample() {
            let t = e["timestamp"].as_i64().unwrap();
            assert!(
                (1_790_000_000_000 - 15 * 86_400_000..1_790_000_000_000 + 86_400_000).contains(&t)
            );
        }
    }
}
