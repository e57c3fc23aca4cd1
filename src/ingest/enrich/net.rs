//! Client address resolution behind trusted proxies, network lists, and IP anonymization.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// A list of networks given as CIDRs (a bare address is a /32 or /128).
#[derive(Debug, Clone, Default)]
pub struct Networks(Vec<IpNet>);

impl Networks {
    /// Parses CIDRs; the error names the entry of `setting` that is wrong.
    pub fn parse(setting: &str, entries: &[String]) -> anyhow::Result<Self> {
        entries
            .iter()
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        anyhow::anyhow!("{setting}: {entry:?} is not a CIDR or IP address")
                    })
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map(Self)
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        let ip = canonical(*ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The networks as CIDRs, each narrower one widened to the prefix [`truncate`] keeps, so
    /// that a stored, truncated address falls in every network its full address was in.
    pub fn widened_to_truncation(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|net| {
                let keep = match net {
                    IpNet::V4(_) => TRUNCATED_V4,
                    IpNet::V6(_) => TRUNCATED_V6,
                };
                let prefix = net.prefix_len().min(keep);
                IpNet::new(net.network(), prefix)
                    .map(|n| n.trunc())
                    .unwrap_or(*net)
                    .to_string()
            })
            .collect()
    }
}

/// Prefix lengths [`truncate`] keeps.
const TRUNCATED_V4: u8 = 24;
const TRUNCATED_V6: u8 = 48;

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The client's address: the connection's peer, unless the peer is a trusted proxy, in which case
/// the forwarding chain is walked from the nearest hop and the first untrusted address wins.
/// `Forwarded` (RFC 7239) is preferred over `X-Forwarded-For` when both are present.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &Networks) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(&peer) {
        return peer;
    }
    let chain = forwarded_chain(headers);
    for hop in chain.iter().rev() {
        if !trusted.contains(hop) {
            return *hop;
        }
    }
    // Every hop is trusted: the farthest one is the best we know.
    chain.first().copied().unwrap_or(peer)
}

/// Addresses of the forwarding chain, client first, as the headers list them.
fn forwarded_chain(headers: &HeaderMap) -> Vec<IpAddr> {
    let forwarded: Vec<IpAddr> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                key.eq_ignore_ascii_case("for")
                    .then(|| parse_node(value.trim().trim_matches('"')))
                    .flatten()
            })
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| parse_node(hop.trim()))
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:80`, `[2001:db8::1]`, `[2001:db8::1]:80` or `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok().map(canonical);
    }
    let (host, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse().ok().map(canonical)
}

/// Zeroes the host part: IPv4 to /24, IPv6 to /48.
pub fn truncate(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn proxies() -> Networks {
        Networks::parse(
            "ingest.trusted_proxies",
            &["10.0.0.0/8".into(), "192.168.1.1".into()],
        )
        .unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_the_headers_say() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(client_ip(ip("8.8.8.8"), &h, &proxies()), ip("8.8.8.8"));
    }

    #[test]
    fn behind_trusted_proxies_the_first_untrusted_hop_from_the_right_wins() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 77.88.8.8, 10.1.2.3")]);
        assert_eq!(
            client_ip(ip("192.168.1.1"), &h, &proxies()),
            ip("77.88.8.8")
        );
    }

    #[test]
    fn the_forwarded_header_is_understood_with_ports_and_brackets() {
        let h = headers(&[(
            "forwarded",
            r#"for="[2001:db8::7]:443";proto=https, for=10.0.0.2"#,
        )]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &proxies()), ip("2001:db8::7"));
        let h = headers(&[("forwarded", "for=5.6.7.8:1234")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &proxies()), ip("5.6.7.8"));
    }

    #[test]
    fn ipv4_mapped_peers_count_as_ipv4() {
        assert!(proxies().contains(&ip("::ffff:10.9.9.9")));
    }

    #[test]
    fn truncation_keeps_a_slash_24_or_slash_48() {
        assert_eq!(truncate(ip("77.88.8.8")), ip("77.88.8.0"));
        assert_eq!(truncate(ip("2001:db8:abcd:1234::1")), ip("2001:db8:abcd::"));
    }

    #[test]
    fn networks_narrower_than_a_truncated_address_are_widened_to_hold_it() {
        let networks = Networks::parse(
            "ingest.bot_networks",
            &[
                "198.51.100.7".into(),
                "10.0.0.0/8".into(),
                "2001:db8:abcd:1234::/64".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            networks.widened_to_truncation(),
            ["198.51.100.0/24", "10.0.0.0/8", "2001:db8:abcd::/48"]
        );
    }

    #[test]
    fn a_bad_cidr_is_reported_with_the_setting_name() {
        let err = Networks::parse("ingest.bot_networks", &["10.0.0.0/33".into()]).unwrap_err();
        assert!(err.to_string().contains("ingest.bot_networks"));
    }
}
