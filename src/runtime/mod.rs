//! Operational duties of every Gardener extension: metrics, health, leader election, heartbeat,
//! logging and shutdown.

pub mod client_metrics;
pub mod duties;
pub mod health;
pub mod heartbeat;
pub mod kubeconfig;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod process_metrics;
pub mod shutdown;
pub mod watch_cache;
