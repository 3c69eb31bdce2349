//! The kata pools of a shoot as the manifest builders need them.

use crate::api::cluster::{DecodedCluster, Taint};
use crate::api::kata_config::KataConfiguration;

#[derive(Clone, Debug, PartialEq)]
pub struct PoolInput {
    pub name: String,
    pub config: KataConfiguration,
    pub taints: Vec<Taint>,
    /// `amd64` or `arm64`.
    pub architecture: String,
}

impl PoolInput {
    pub fn new(name: &str, config: KataConfiguration, cluster: &DecodedCluster) -> Self {
        let worker = cluster.shoot.worker(name);
        Self {
            name: name.into(),
            config,
            taints: worker.map(|w| w.taints.clone()).unwrap_or_default(),
            architecture: worker
                .and_then(|w| w.machine.architecture.clone())
                .unwrap_or_else(|| "amd64".into()),
        }
    }
}
