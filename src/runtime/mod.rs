//! Operational duties of every Gardener extension: metrics, health, leader election, heartbeat,
//! logging and shutdown.

pub mod metrics;
