//! `ContainerRuntime` (extensions.gardener.cloud/v1alpha1): one per (worker pool, runtime type).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::common::DefaultStatus;

pub type ContainerRuntimeStatus = DefaultStatus;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "extensions.gardener.cloud",
    version = "v1alpha1",
    kind = "ContainerRuntime",
    plural = "containerruntimes",
    namespaced,
    status = "ContainerRuntimeStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRuntimeSpec {
    #[serde(rename = "type")]
    pub type_: String,
    /// nil means `shoot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_config: Option<serde_json::Value>,
    pub binary_path: String,
    pub worker_pool: WorkerPool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPool {
    pub name: String,
    pub selector: LabelSelector,
}

/// Where gardenlet tells extensions to put runtime binaries on the nodes.
pub const BINARY_PATH: &str = "/var/bin/containerruntimes";

impl ContainerRuntime {
    /// The object gardenlet creates for runtime `type_` on worker pool `pool`: named
    /// `<type>-<pool>`, selecting the pool's nodes.
    pub fn for_pool(type_: &str, pool: &str, provider_config: Option<serde_json::Value>) -> Self {
        ContainerRuntime::new(
            &format!("{type_}-{pool}"),
            ContainerRuntimeSpec {
                type_: type_.into(),
                class: None,
                provider_config,
                binary_path: BINARY_PATH.into(),
                worker_pool: WorkerPool {
                    name: pool.into(),
                    selector: LabelSelector {
                        match_labels: Some([(super::POOL_LABEL.to_string(), pool.to_string())].into()),
                        ..Default::default()
                    },
                },
            },
        )
    }
}
