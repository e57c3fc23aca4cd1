//! Traffic source: referrer host, UTM parameters and a channel classification.

use url::Url;

/// Campaign and referrer facts of a page view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traffic {
    pub page_path: String,
    pub referrer_host: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_term: String,
    pub utm_content: String,
    /// direct, search, social, referral, email or paid.
    pub channel: &'static str,
}

/// Referrer hosts of search engines (matched as a label of the host).
const SEARCH: &[&str] = &[
    "google",
    "bing",
    "yandex",
    "ya",
    "duckduckgo",
    "baidu",
    "yahoo",
    "ecosia",
    "startpage",
    "search.brave",
    "qwant",
    "naver",
    "seznam",
];
/// Referrer hosts of social networks.
const SOCIAL: &[&str] = &[
    "facebook.com",
    "fb.com",
    "instagram.com",
    "t.co",
    "twitter.com",
    "x.com",
    "linkedin.com",
    "lnkd.in",
    "vk.com",
    "ok.ru",
    "t.me",
    "telegram.org",
    "reddit.com",
    "pinterest.com",
    "youtube.com",
    "tiktok.com",
    "dzen.ru",
    "discord.com",
    "whatsapp.com",
];
const PAID_MEDIUMS: &[&str] = &[
    "cpc",
    "ppc",
    "paid",
    "paidsearch",
    "paid_search",
    "paid-social",
    "paid_social",
    "cpm",
    "cpa",
    "display",
    "banner",
    "retargeting",
];
/// Click ids that ad networks append to landing URLs.
const CLICK_IDS: &[&str] = &["gclid", "yclid", "fbclid", "msclkid", "ttclid", "dclid"];

/// Inputs already known from the event's context.
pub struct TrafficInput<'a> {
    pub page_url: &'a str,
    pub page_path: &'a str,
    pub referrer: &'a str,
    pub campaign: [&'a str; 5],
}

/// Hosts of URLs seen lately, by origin (`scheme://authority`): the events of a batch share a
/// site and, within a session, a referrer, so most hosts are found here without parsing a URL.
#[derive(Debug, Default)]
pub struct Hosts {
    recent: Vec<(String, String)>,
}

/// Origins remembered by [`Hosts`].
const RECENT_HOSTS: usize = 4;

impl Hosts {
    /// The host of `url` without `www.`, lower-cased; empty when it has none or does not parse.
    fn of(&mut self, url: &str) -> String {
        if url.is_empty() {
            return String::new();
        }
        let origin = origin(url);
        if let Some((_, host)) = self.recent.iter().find(|(o, _)| o == origin) {
            return host.clone();
        }
        let host = Url::parse(origin)
            .ok()
            .and_then(|u| {
                u.host_str()
                    .map(|h| h.trim_start_matches("www.").to_ascii_lowercase())
            })
            .unwrap_or_default();
        if self.recent.len() == RECENT_HOSTS {
            self.recent.remove(0);
        }
        self.recent.push((origin.to_string(), host.clone()));
        host
    }
}

/// `scheme://authority` of a URL: what its host is parsed from. A URL of another shape is
/// returned whole.
fn origin(url: &str) -> &str {
    match url.find("://") {
        Some(at) => {
            let start = at + 3;
            match url[start..].find(['/', '?', '#']) {
                Some(end) => &url[..start + end],
                None => url,
            }
        }
        None => url,
    }
}

pub fn classify(input: &TrafficInput<'_>, hosts: &mut Hosts) -> Traffic {
    // The page URL is parsed whole only for what its path and query hold; its host comes from
    // `hosts`.
    let page = if input.page_path.is_empty() || input.page_url.contains('?') {
        Url::parse(input.page_url).ok()
    } else {
        None
    };
    let mut traffic = Traffic {
        page_path: if input.page_path.is_empty() {
            page.as_ref()
                .map(|u| u.path().to_string())
                .unwrap_or_default()
        } else {
            input.page_path.to_string()
        },
        ..Default::default()
    };
    let mut click_id = false;
    if let Some(page) = &page {
        for (key, value) in page.query_pairs() {
            let slot = match key.as_ref() {
                "utm_source" => &mut traffic.utm_source,
                "utm_medium" => &mut traffic.utm_medium,
                "utm_campaign" => &mut traffic.utm_campaign,
                "utm_term" => &mut traffic.utm_term,
                "utm_content" => &mut traffic.utm_content,
                other => {
                    click_id |= CLICK_IDS.contains(&other);
                    continue;
                }
            };
            *slot = value.into_owned();
        }
    }
    // Campaign context wins over the URL: SDKs fill it from the landing page of the session.
    let [source, medium, campaign, term, content] = input.campaign;
    for (slot, value) in [
        (&mut traffic.utm_source, source),
        (&mut traffic.utm_medium, medium),
        (&mut traffic.utm_campaign, campaign),
        (&mut traffic.utm_term, term),
        (&mut traffic.utm_content, content),
    ] {
        if !value.is_empty() {
            *slot = value.to_string();
        }
    }
    let referrer_host = hosts.of(input.referrer);
    // Navigation within the site is not a referral; without a referrer there is nothing to tell.
    let internal = !referrer_host.is_empty() && hosts.of(input.page_url) == referrer_host;
    traffic.channel = channel(&traffic, &referrer_host, internal, click_id);
    if !internal {
        traffic.referrer_host = referrer_host;
    }
    traffic
}

fn channel(traffic: &Traffic, referrer_host: &str, internal: bool, click_id: bool) -> &'static str {
    let medium = traffic.utm_medium.to_ascii_lowercase();
    let source = traffic.utm_source.to_ascii_lowercase();
    if click_id || PAID_MEDIUMS.contains(&medium.as_str()) {
        return "paid";
    }
    if medium == "email" || medium == "e-mail" || source == "email" || source == "newsletter" {
        return "email";
    }
    if medium == "social" || is_social(referrer_host) || is_social(&source) {
        return "social";
    }
    if medium == "organic" || is_search(referrer_host) {
        return "search";
    }
    if !referrer_host.is_empty() && !internal {
        return "referral";
    }
    if !source.is_empty() {
        return "referral";
    }
    "direct"
}

fn is_social(host: &str) -> bool {
    !host.is_empty()
        && SOCIAL.iter().any(|s| {
            host == *s
                || host.strip_suffix(s).is_some_and(|h| h.ends_with('.'))
                || host == s.split('.').next().unwrap_or(s)
        })
}

fn is_search(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    SEARCH.iter().any(|engine| {
        if engine.contains('.') {
            host.contains(engine)
        } else {
            // "google" matches google.com, google.co.uk, www.google.ru; "ya" matches ya.ru only.
            labels.len() >= 2 && labels[..labels.len() - 1].contains(engine)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(page_url: &str, referrer: &str, campaign: [&str; 5]) -> Traffic {
        classify(
            &TrafficInput {
                page_url,
                page_path: "",
                referrer,
                campaign,
            },
            &mut Hosts::default(),
        )
    }

    #[test]
    fn remembered_hosts_and_given_paths_change_no_result() {
        // (page URL, referrer); the page path is the URL's, as SDKs send it.
        let cases = [
            ("https://s.example/a", "https://www.google.com/search?q=x"),
            ("https://s.example/b", "https://S.example/a"),
            ("https://s.example/c?utm_source=vk", ""),
            ("https://s.example/d", "https://vk.com/feed"),
            (
                "https://other.example:8443/e#top",
                "https://www.google.com/",
            ),
            ("https://s.example/f", "not a url"),
            ("", "https://blog.other.org/post"),
            ("https://s.example/g", "https://s.example/"),
            ("https://s.example/h", "https://news.example/x?y=1"),
            ("https://s.example/i", "https://t.me/channel"),
            ("https://s.example/j", "https://www.google.com/search?q=y"),
        ];
        let mut hosts = Hosts::default();
        for (page_url, referrer) in cases {
            let path = Url::parse(page_url).map(|u| u.path().to_string());
            let page_path = path.as_deref().unwrap_or_default();
            let input = |page_path| TrafficInput {
                page_url,
                page_path,
                referrer,
                campaign: [""; 5],
            };
            let remembered = classify(&input(page_path), &mut hosts);
            let fresh = classify(&input(""), &mut Hosts::default());
            assert_eq!(remembered, fresh, "{page_url} from {referrer}");
        }
        assert_eq!(hosts.recent.len(), RECENT_HOSTS);
        assert_eq!(origin("https://a.example:1/p?q#f"), "https://a.example:1");
        assert_eq!(origin("mailto:x@y.example"), "mailto:x@y.example");
    }

    #[test]
    fn utm_parameters_come_from_the_page_url() {
        let t = run(
            "https://shop.example/p?utm_source=newsletter&utm_medium=email&utm_campaign=bf",
            "",
            [""; 5],
        );
        assert_eq!(
            (
                t.utm_source.as_str(),
                t.utm_medium.as_str(),
                t.utm_campaign.as_str()
            ),
            ("newsletter", "email", "bf")
        );
        assert_eq!(t.channel, "email");
        assert_eq!(t.page_path, "/p");
    }

    #[test]
    fn campaign_context_overrides_the_url() {
        let t = run(
            "https://shop.example/?utm_source=a",
            "",
            ["b", "cpc", "", "", ""],
        );
        assert_eq!(t.utm_source, "b");
        assert_eq!(t.channel, "paid");
    }

    #[test]
    fn referrers_classify_search_social_and_referral() {
        assert_eq!(
            run(
                "https://s.example/",
                "https://www.google.com/search?q=x",
                [""; 5]
            )
            .channel,
            "search"
        );
        assert_eq!(
            run("https://s.example/", "https://yandex.ru/", [""; 5]).channel,
            "search"
        );
        assert_eq!(
            run("https://s.example/", "https://ya.ru/", [""; 5]).channel,
            "search"
        );
        assert_eq!(
            run("https://s.example/", "https://vk.com/feed", [""; 5]).channel,
            "social"
        );
        assert_eq!(
            run("https://s.example/", "https://m.facebook.com/", [""; 5]).channel,
            "social"
        );
        let referral = run("https://s.example/", "https://blog.other.org/post", [""; 5]);
        assert_eq!(
            (referral.channel, referral.referrer_host.as_str()),
            ("referral", "blog.other.org")
        );
    }

    #[test]
    fn no_referrer_or_an_internal_one_is_direct() {
        assert_eq!(run("https://s.example/a", "", [""; 5]).channel, "direct");
        let internal = run("https://www.s.example/b", "https://s.example/a", [""; 5]);
        assert_eq!(internal.channel, "direct");
        assert_eq!(internal.referrer_host, "");
    }

    #[test]
    fn ad_click_ids_mean_paid() {
        assert_eq!(
            run(
                "https://s.example/?gclid=abc",
                "https://www.google.com/",
                [""; 5]
            )
            .channel,
            "paid"
        );
    }
}
