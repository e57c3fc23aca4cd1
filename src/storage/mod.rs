//! Clients for the stores chgate talks to.

pub mod clickhouse;
pub mod clickhouse_errors;
pub mod postgres;
pub mod redis;
