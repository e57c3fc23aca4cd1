//! User-agent parsing (woothee) with a cache per UA string, plus bot detection.

use std::sync::Arc;

/// What a user agent says about the client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UaInfo {
    pub browser: String,
    pub browser_version: String,
    pub os: String,
    pub os_version: String,
    /// desktop, mobile, tablet, bot, other (or empty when unknown); `bot` for automated clients
    /// (`is_bot`), `other` for HTTP libraries.
    pub device_type: String,
    /// A crawler, headless browser, monitor or link previewer: a bot whoever sends the event.
    pub is_bot: bool,
    /// A general-purpose HTTP library or command-line client: a bot or not depending on who
    /// sends the event (`Sender::user_agent_rule`).
    pub http_library: bool,
}

/// Substrings (lower-case) of automated clients that woothee does not classify as crawlers.
const BOT_MARKERS: &[&str] = &[
    "bot",
    "spider",
    "crawl",
    "slurp",
    "headless",
    "phantomjs",
    "puppeteer",
    "playwright",
    "selenium",
    "scrapy",
    "lighthouse",
    "pingdom",
    "uptime",
    "monitor",
    "preview",
    "facebookexternalhit",
    "whatsapp",
    "telegrambot",
];

/// Substrings (lower-case) of HTTP libraries and command-line clients: what programs send, never
/// a browser.
const HTTP_LIBRARY_MARKERS: &[&str] = &[
    // Go, Java and Android
    "go-http-client",
    "java/",
    "java-http-client",
    "apache-httpclient",
    "apache-httpasyncclient",
    "commons-httpclient",
    "okhttp",
    "reactornetty",
    // Python
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "urllib3",
    // Node.js
    "node-fetch",
    "axios/",
    "undici",
    // Others
    "curl/",
    "wget/",
    "libwww-perl",
    "guzzlehttp",
    "faraday v",
    "restsharp",
    "dart:io",
    "httpie/",
    "postmanruntime/",
];

/// Whole user agents (lower-case) of HTTP libraries that send a bare word: Node's built-in
/// `fetch` and Ruby's Net::HTTP.
const HTTP_LIBRARY_NAMES: &[&str] = &["node", "ruby"];

/// Strings (lower-case) that every HTTP-library user agent contains one of, for a cheap
/// prefilter in SQL; [`UaParser::parse`] decides.
pub fn http_library_needles() -> Vec<&'static str> {
    HTTP_LIBRARY_MARKERS
        .iter()
        .chain(HTTP_LIBRARY_NAMES)
        .copied()
        .collect()
}

/// Parses user agents, remembering recent results.
#[derive(Clone)]
pub struct UaParser {
    parser: Arc<woothee::parser::Parser>,
    cache: moka::sync::Cache<String, Arc<UaInfo>>,
}

impl Default for UaParser {
    fn default() -> Self {
        Self {
            parser: Arc::new(woothee::parser::Parser::new()),
            cache: moka::sync::Cache::builder().max_capacity(20_000).build(),
        }
    }
}

impl UaParser {
    pub fn parse(&self, user_agent: &str) -> Arc<UaInfo> {
        if user_agent.is_empty() {
            return Arc::new(UaInfo::default());
        }
        if let Some(hit) = self.cache.get(user_agent) {
            return hit;
        }
        let info = Arc::new(self.parse_uncached(user_agent));
        // Very long, unique strings would only churn the cache.
        if user_agent.len() <= 512 {
            self.cache.insert(user_agent.to_string(), info.clone());
        }
        info
    }

    fn parse_uncached(&self, user_agent: &str) -> UaInfo {
        let lower = user_agent.to_ascii_lowercase();
        let marker_bot = BOT_MARKERS.iter().any(|m| lower.contains(m));
        let http_library = HTTP_LIBRARY_NAMES.contains(&lower.trim())
            || HTTP_LIBRARY_MARKERS.iter().any(|m| lower.contains(m));
        let Some(result) = self.parser.parse(user_agent) else {
            return UaInfo {
                device_type: kind_of_client(marker_bot, http_library, "").into(),
                is_bot: marker_bot,
                http_library,
                ..Default::default()
            };
        };
        let known = |s: &str| {
            if s == woothee::woothee::VALUE_UNKNOWN {
                String::new()
            } else {
                s.to_string()
            }
        };
        // Whether an HTTP library is a bot is the sender's rule, not woothee's crawler list.
        let is_bot = marker_bot || (result.category == "crawler" && !http_library);
        let device_type = match result.category {
            "pc" => "desktop",
            "smartphone" | "mobilephone" => {
                let android_tablet = result.os == "Android" && !lower.contains("mobile");
                if result.os == "iPad" || android_tablet || lower.contains("tablet") {
                    "tablet"
                } else {
                    "mobile"
                }
            }
            "appliance" | "misc" => "other",
            _ => "",
        };
        UaInfo {
            browser: known(result.name),
            browser_version: known(result.version),
            os: known(result.os),
            os_version: known(&result.os_version),
            device_type: kind_of_client(is_bot, http_library, device_type).into(),
            is_bot,
            http_library,
        }
    }
}

/// The device type of an automated client or HTTP library, whatever the device looks like.
fn kind_of_client(is_bot: bool, http_library: bool, device_type: &str) -> &str {
    if is_bot {
        "bot"
    } else if http_library {
        "other"
    } else {
        device_type
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_DESKTOP: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const IPHONE_SAFARI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    const IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    const HEADLESS: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36";

    #[test]
    fn desktop_chrome() {
        let info = UaParser::default().parse(CHROME_DESKTOP);
        assert_eq!(info.browser, "Chrome");
        assert_eq!(info.browser_version, "131.0.0.0");
        assert_eq!(info.os, "Windows 10");
        assert_eq!(info.device_type, "desktop");
        assert!(!info.is_bot);
    }

    #[test]
    fn iphone_safari_is_mobile() {
        let info = UaParser::default().parse(IPHONE_SAFARI);
        assert_eq!(info.browser, "Safari");
        assert_eq!(info.os, "iPhone");
        assert_eq!(info.device_type, "mobile");
    }

    #[test]
    fn ipad_is_a_tablet() {
        assert_eq!(UaParser::default().parse(IPAD).device_type, "tablet");
    }

    #[test]
    fn googlebot_and_headless_browsers_are_bots() {
        let parser = UaParser::default();
        for ua in [GOOGLEBOT, HEADLESS] {
            let info = parser.parse(ua);
            assert!(info.is_bot, "{ua}");
            assert_eq!(info.device_type, "bot", "{ua}");
        }
    }

    #[test]
    fn http_libraries_are_recognised_but_left_to_the_senders_rule() {
        let parser = UaParser::default();
        // woothee files Java and curl under "HTTP Library"; Go and Python it does not know.
        for ua in [
            "curl/8.5.0",
            "Java/17.0.9",
            "Go-http-client/1.1",
            "python-requests/2.31",
        ] {
            let info = parser.parse(ua);
            assert!(info.http_library, "{ua}");
            assert!(!info.is_bot, "{ua}");
            assert_eq!(info.device_type, "other", "{ua}");
        }
        assert!(!parser.parse(CHROME_DESKTOP).http_library);
        assert!(!parser.parse("Nodes/1.0 (Ruby gem)").http_library);
    }

    #[test]
    fn an_empty_user_agent_tells_nothing() {
        assert_eq!(*UaParser::default().parse(""), UaInfo::default());
    }
}
