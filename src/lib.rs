//! chgate: a SQL-first analytics gateway over ClickHouse.

pub mod access;
pub mod alerts;
pub mod app;
pub mod audit;
pub mod bi;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod definitions;
pub mod error;
pub mod experiments;
pub mod glob;
pub mod http;
pub mod ingest;
pub mod migrate;
pub mod predictions;
pub mod query;
pub mod reload;
pub mod reports;
pub mod rollups;
pub mod schedule;
pub mod segments;
pub mod sql;
pub mod storage;
pub mod telemetry;

pub use app::{AppState, Application};
pub use config::Settings;
