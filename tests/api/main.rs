//! Integration tests: the real application against real ClickHouse, Postgres and Redis.
//! One binary (modules below) keeps link time down.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "test code: a failed expectation is a failed test"
)]

mod access;
mod alerts;
mod attacks;
mod audit;
mod bi;
mod cache;
mod definitions;
mod durability;
mod experiments;
mod freshness;
mod funnel;
mod health;
mod helpers;
mod import;
mod ingest;
mod keys;
mod limits;
mod migrations;
mod native;
mod predictions;
mod properties;
mod queries;
mod reference;
mod reports;
mod rollups;
mod segments;
mod server_side;
mod settings;
