//! `Cluster` (extensions.gardener.cloud/v1alpha1, cluster-scoped, named like the shoot namespace):
//! raw copies of the Shoot, Seed and CloudProfile. We decode only the fields we need and ignore the
//! rest, so new Gardener fields never break us.

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "extensions.gardener.cloud",
    version = "v1alpha1",
    kind = "Cluster",
    plural = "clusters",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    pub cloud_profile: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<serde_json::Value>,
    pub shoot: serde_json::Value,
}

/// Errors decoding the raw objects of a Cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterDecodeError {
    #[error("cannot decode spec.{field} of Cluster {cluster}: {source}")]
    Field {
        cluster: String,
        field: &'static str,
        source: serde_json::Error,
    },
}

/// The Cluster with its raw objects decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedCluster {
    pub name: String,
    pub shoot: Shoot,
    pub seed: Option<Seed>,
    pub cloud_profile: CloudProfile,
}

impl DecodedCluster {
    pub fn decode(cluster: &Cluster) -> Result<Self, ClusterDecodeError> {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let field = |field: &'static str, source| ClusterDecodeError::Field {
            cluster: name.clone(),
            field,
            source,
        };
        let shoot = serde_json::from_value(cluster.spec.shoot.clone()).map_err(|e| field("shoot", e))?;
        let cloud_profile =
            serde_json::from_value(cluster.spec.cloud_profile.clone()).map_err(|e| field("cloudProfile", e))?;
        let seed = match &cluster.spec.seed {
            Some(v) if !v.is_null() => Some(serde_json::from_value(v.clone()).map_err(|e| field("seed", e))?),
            _ => None,
        };
        Ok(Self {
            name,
            shoot,
            seed,
            cloud_profile,
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub deletion_timestamp: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Shoot {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ShootSpec,
    #[serde(default)]
    pub status: ShootStatus,
}

impl Shoot {
    /// gardenlet stopped working on this shoot (`status.lastOperation.state == Failed`).
    pub fn is_failed(&self) -> bool {
        self.status
            .last_operation
            .as_ref()
            .is_some_and(|op| op.state == "Failed")
    }

    /// As Gardener's `ShootNeedsForceDeletion`: the annotation's value parsed like Go's
    /// `strconv.ParseBool`, anything unparsable meaning no.
    pub fn is_force_deletion(&self) -> bool {
        self.metadata
            .annotations
            .get(super::FORCE_DELETION_ANNOTATION)
            .is_some_and(|v| parse_go_bool(v) == Some(true))
    }

    pub fn is_hibernation_enabled(&self) -> bool {
        self.spec.hibernation.as_ref().and_then(|h| h.enabled).unwrap_or(false)
    }

    pub fn worker(&self, pool: &str) -> Option<&Worker> {
        self.spec.provider.workers.iter().find(|w| w.name == pool)
    }
}

/// Go's `strconv.ParseBool`, which Gardener uses for boolean annotations and labels.
pub fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShootSpec {
    #[serde(default)]
    pub provider: Provider,
    #[serde(default)]
    pub kubernetes: Kubernetes,
    #[serde(default)]
    pub hibernation: Option<Hibernation>,
    #[serde(default)]
    pub region: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Kubernetes {
    #[serde(default)]
    pub version: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Hibernation {
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Provider {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub workers: Vec<Worker>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Worker {
    pub name: String,
    #[serde(default)]
    pub machine: Machine,
    #[serde(default)]
    pub cri: Option<Cri>,
    #[serde(default)]
    pub taints: Vec<Taint>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Worker {
    /// The providerConfig of the pool's container runtime of `type_`, if the pool lists it.
    pub fn container_runtime(&self, type_: &str) -> Option<&ContainerRuntimeRef> {
        self.cri.as_ref()?.container_runtimes.iter().find(|r| r.type_ == type_)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub image: Option<MachineImage>,
    #[serde(default)]
    pub architecture: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct MachineImage {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Cri {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub container_runtimes: Vec<ContainerRuntimeRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRuntimeRef {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub provider_config: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Taint {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    pub effect: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShootStatus {
    #[serde(default)]
    pub last_operation: Option<ShootLastOperation>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ShootLastOperation {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub state: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Seed {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: SeedSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SeedSpec {
    #[serde(default)]
    pub provider: SeedProvider,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SeedProvider {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub region: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CloudProfile {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CloudProfileSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CloudProfileSpec {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub machine_images: Vec<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shoot_with_force_deletion(value: &str) -> Shoot {
        let mut s = Shoot::default();
        s.metadata
            .annotations
            .insert(super::super::FORCE_DELETION_ANNOTATION.into(), value.into());
        s
    }

    #[test]
    fn force_deletion_is_parsed_like_gardener_parses_it() {
        for yes in ["1", "t", "T", "TRUE", "true", "True"] {
            assert!(shoot_with_force_deletion(yes).is_force_deletion(), "{yes}");
        }
        for no in ["0", "f", "false", "False", "yes", "tRUE", ""] {
            assert!(!shoot_with_force_deletion(no).is_force_deletion(), "{no}");
        }
        assert!(!Shoot::default().is_force_deletion());
    }
}
