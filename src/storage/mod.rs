//! Clients for the stores chgate talks to.

pub mod clickhouse;
pub mod postgres;
pub mod redis;
