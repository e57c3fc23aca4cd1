//! Tests against the SciPy/statsmodels fixture and on simulated experiments.

mod fixture;
mod reference;
mod simulation;
