//! GeoIP lookups over a MaxMind-format database.
//!
//! Reads both common record shapes: MaxMind GeoIP2/GeoLite2 (`country.iso_code`, `city.names.en`,
//! `subdivisions[0].iso_code`) and ip-location-db (`country_code`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;

/// Where an address is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Geo {
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
    /// ISO 3166-2 subdivision code (without the country), when the database has it.
    pub region: String,
    /// English city name, when the database has it.
    pub city: String,
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
    #[serde(borrow, default)]
    country: Option<Country<'a>>,
    #[serde(borrow, default)]
    city: Option<Named<'a>>,
    #[serde(borrow, default)]
    subdivisions: Option<Vec<Subdivision<'a>>>,
}

#[derive(Deserialize)]
struct Country<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    names: Option<BTreeMap<&'a str, &'a str>>,
}

#[derive(Deserialize)]
struct Subdivision<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

/// A loaded GeoIP database.
#[derive(Clone)]
pub struct GeoIp {
    reader: Arc<maxminddb::Reader<Vec<u8>>>,
}

impl GeoIp {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let reader = maxminddb::Reader::open_readfile(path)
            .with_context(|| format!("cannot open GeoIP database {}", path.display()))?;
        Ok(Self {
            reader: Arc::new(reader),
        })
    }

    /// Empty geography for addresses the database does not know (private ranges, for instance).
    pub fn lookup(&self, ip: IpAddr) -> Geo {
        let Ok(result) = self.reader.lookup(ip) else {
            return Geo::default();
        };
        let Ok(Some(record)) = result.decode::<Record<'_>>() else {
            return Geo::default();
        };
        let country = record
            .country
            .and_then(|c| c.iso_code)
            .or(record.country_code)
            .unwrap_or_default()
            .to_ascii_uppercase();
        let region = record
            .subdivisions
            .and_then(|s| s.into_iter().next())
            .and_then(|s| s.iso_code)
            .unwrap_or_default()
            .to_string();
        let city = record
            .city
            .and_then(|c| c.names)
            .and_then(|names| names.get("en").copied())
            .unwrap_or_default()
            .to_string();
        Geo {
            country,
            region,
            city,
        }
    }
}
