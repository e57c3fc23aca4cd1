//! A/B experiments: the statistics that turn per-variant aggregates into results.

pub mod stats;
