//! chgate: a SQL-first analytics gateway over ClickHouse.

pub mod access;
pub mod alerts;
pub mod app;
pub mod audit;
pub mod bench;
pub mod bi;
pub mod cache;
pub mod catalog;
pub mod check;
pub mod check_live;
pub mod cli;
pub mod config;
pub mod definitions;
pub mod error;
pub mod glob;
pub mod http;
pub mod import;
pub mod ingest;
pub mod migrate;
pub mod query;
pub mod reload;
pub mod reports;
pub mod schedule;
pub mod seed;
pub mod segments;
pub mod sql;
pub mod storage;
pub mod telemetry;

pub use app::{AppState, Application};
pub use config::Settings;
