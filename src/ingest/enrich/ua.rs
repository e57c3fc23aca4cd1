//! User-agent parsing (woothee) with a cache per UA string, plus bot detection.

use std::sync::Arc;

/// What a user agent says about the client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UaInfo {
    pub browser: String,
    pub browser_version: String,
    pub os: String,
    pub os_version: String,
    /// desktop, mobile, tablet, bot, other (or empty when unknown).
    pub device_type: String,
    pub is_bot: bool,
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
    "python-requests",
    "python-urllib",
    "aiohttp",
    "httpx",
    "curl/",
    "wget/",
    "go-http-client",
    "java/",
    "okhttp",
    "libwww",
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
        let Some(result) = self.parser.parse(user_agent) else {
            return UaInfo {
                device_type: if marker_bot { "bot" } else { "" }.into(),
                is_bot: marker_bot,
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
        let is_bot = marker_bot || result.category == "crawler";
        let device_type = if is_bot {
            "bot"
        } else {
            match result.category {
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
            }
        };
        UaInfo {
            browser: known(result.name),
            browser_version: known(result.version),
            os: known(result.os),
            os_version: known(&result.os_version),
            device_type: device_type.into(),
            is_bot,
        }
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
        for ua in [GOOGLEBOT, HEADLESS, "curl/8.5.0", "python-requests/2.31"] {
            let info = parser.parse(ua);
            assert!(info.is_bot, "{ua}");
            assert_eq!(info.device_type, "bot", "{ua}");
        }
    }

    #[test]
    fn an_empty_user_agent_tells_nothing() {
        assert_eq!(*UaParser::default().parse(""), UaInfo::default());
    }
}
