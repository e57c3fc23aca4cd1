//! Who sent a batch, as far as its key tells, and so how much the HTTP request itself says about
//! the events it carries (their address, their user agent).

use super::enrich::ua::UaInfo;

/// Roles whose keys are server-side: backends that report what their users did.
pub const SERVER_ROLES: &[&str] = &["service", "admin"];

/// The kind of sender a batch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// A trusted server key (`service`, `admin`; API key or JWT), or the operator's own
    /// `chgate import`/`seed`: a backend states facts about its users, and the HTTP request is the
    /// backend's own, not the user's.
    Server,
    /// Any other key allowed to send events, above all `ingest`, the public write key that web
    /// pages and apps embed: the request comes from the user's browser or device, or from anyone
    /// who copied the key.
    Client,
}

/// Which user agent describes an event, and what an HTTP library in it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UaRule {
    /// The request's `User-Agent` stands in for events without `context.user_agent`.
    pub request_describes_event: bool,
    /// A general-purpose HTTP library (Go's net/http, okhttp, requests, axios, curl, …) in the
    /// event's user agent marks it as a bot.
    pub http_library_is_bot: bool,
}

impl Sender {
    /// The sender a key of `role` stands for.
    pub fn of_role(role: &str) -> Self {
        if SERVER_ROLES.contains(&role) {
            Self::Server
        } else {
            Self::Client
        }
    }

    /// Whether `context.ip` is believed: only a server can know its user's address.
    pub fn trusts_context_ip(self) -> bool {
        self == Self::Server
    }

    /// The user-agent rule for this sender (docs/ingestion.md, "Which user agent describes an
    /// event"). Crawlers, headless browsers, monitors and `ingest.bot_networks` mark bots for
    /// every sender; only the two points below differ.
    ///
    /// - `Server`: a backend's HTTP client (Go-http-client, okhttp, python-requests, …) carries
    ///   the request, so the request's `User-Agent` never describes an event; only
    ///   `context.user_agent` does. An HTTP library there is no bot signal either: it is how the
    ///   users of an API call it, and what Android apps' HTTP stack (okhttp) sends.
    /// - `Client`: the request comes from the browser or device, so its `User-Agent` describes
    ///   events that carry none. Browsers never send an HTTP library's user agent: on the public
    ///   key it is a script, so a bot.
    pub fn user_agent_rule(self) -> UaRule {
        match self {
            Self::Server => UaRule {
                request_describes_event: false,
                http_library_is_bot: false,
            },
            Self::Client => UaRule {
                request_describes_event: true,
                http_library_is_bot: true,
            },
        }
    }
}

impl UaRule {
    /// The user agent of an event: its own `context` one, else the request's where the rule lets
    /// it stand in, else none. Takes the event's by value, as enrichment moves it into the row.
    pub fn event_user_agent(&self, context: String, request: &str) -> String {
        if context.is_empty() && self.request_describes_event {
            request.to_string()
        } else {
            context
        }
    }

    /// Whether a parsed user agent marks the event as a bot.
    pub fn is_bot(&self, info: &UaInfo) -> bool {
        info.is_bot || (info.http_library && self.http_library_is_bot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::enrich::ua::UaParser;

    const HTTP_LIBRARIES: &[&str] = &[
        "Go-http-client/1.1",
        "Go-http-client/2.0",
        "Java/17.0.9",
        "Java-http-client/21.0.1",
        "Apache-HttpClient/4.5.14 (Java/17.0.8)",
        "okhttp/4.12.0",
        "python-requests/2.31.0",
        "Python-urllib/3.11",
        "Python/3.11 aiohttp/3.9.1",
        "python-httpx/0.27.0",
        "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
        "node-fetch",
        "axios/1.6.7",
        "undici",
        "node",
        "curl/8.5.0",
        "Wget/1.21.4",
        "GuzzleHttp/7",
        "Ruby",
        "Faraday v2.9.0",
    ];

    #[test]
    fn every_role_that_may_ingest_maps_to_a_sender() {
        for role in crate::access::auth::ROLES {
            let expected = if ["service", "admin"].contains(role) {
                Sender::Server
            } else {
                Sender::Client
            };
            assert_eq!(Sender::of_role(role), expected, "{role}");
        }
        assert_eq!(Sender::of_role("a role added later"), Sender::Client);
    }

    #[test]
    fn a_servers_request_user_agent_never_describes_its_events() {
        let rule = Sender::Server.user_agent_rule();
        assert_eq!(
            rule.event_user_agent(String::new(), "Go-http-client/1.1"),
            ""
        );
        assert_eq!(
            rule.event_user_agent("Mozilla/5.0 (iPhone)".into(), "Go-http-client/1.1"),
            "Mozilla/5.0 (iPhone)"
        );
    }

    #[test]
    fn a_clients_request_user_agent_stands_in_for_events_without_one() {
        let rule = Sender::Client.user_agent_rule();
        assert_eq!(
            rule.event_user_agent(String::new(), "curl/8.5.0"),
            "curl/8.5.0"
        );
        assert_eq!(
            rule.event_user_agent("Mozilla/5.0 (iPhone)".into(), "curl/8.5.0"),
            "Mozilla/5.0 (iPhone)"
        );
    }

    #[test]
    fn http_libraries_are_bots_only_on_client_keys() {
        let parser = UaParser::default();
        for ua in HTTP_LIBRARIES {
            let info = parser.parse(ua);
            assert!(info.http_library, "{ua} is an HTTP library");
            assert!(!Sender::Server.user_agent_rule().is_bot(&info), "{ua}");
            assert!(Sender::Client.user_agent_rule().is_bot(&info), "{ua}");
        }
    }

    #[test]
    fn crawlers_and_headless_browsers_are_bots_for_every_sender() {
        let parser = UaParser::default();
        for ua in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
            "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
            "Scrapy/2.11 (+https://scrapy.org)",
            "python-requests/2.31.0 (compatible; ExampleBot/1.0)",
        ] {
            let info = parser.parse(ua);
            for sender in [Sender::Server, Sender::Client] {
                assert!(sender.user_agent_rule().is_bot(&info), "{ua} {sender:?}");
            }
        }
    }

    #[test]
    fn browsers_and_server_sdks_are_people_for_every_sender() {
        let parser = UaParser::default();
        for ua in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            "analytics-python/2.3.2",
            "analytics-go (version: 3.3.0)",
            "",
        ] {
            let info = parser.parse(ua);
            assert!(!info.http_library, "{ua}");
            for sender in [Sender::Server, Sender::Client] {
                assert!(!sender.user_agent_rule().is_bot(&info), "{ua} {sender:?}");
            }
        }
    }
}
