//! `OperatingSystemConfig` (extensions.gardener.cloud/v1alpha1). Every struct keeps unknown fields in
//! `extra`, so the webhook can compute its patch from a typed object without dropping anything.

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "extensions.gardener.cloud",
    version = "v1alpha1",
    kind = "OperatingSystemConfig",
    plural = "operatingsystemconfigs",
    namespaced,
    status = "OperatingSystemConfigStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct OperatingSystemConfigSpec {
    #[serde(rename = "type")]
    pub type_: String,
    /// `provision` or `reconcile`.
    pub purpose: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<Unit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<File>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cri_config: Option<CriConfig>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

pub const PURPOSE_RECONCILE: &str = "reconcile";

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Unit {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_ins: Vec<DropIn>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_paths: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct DropIn {
    pub name: String,
    pub content: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct File {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<i32>,
    pub content: FileContent,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FileContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<InlineContent>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct InlineContent {
    /// `""` (plain) or `b64`.
    pub encoding: String,
    pub data: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CriConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containerd: Option<ContainerdConfig>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerdConfig {
    #[serde(default)]
    pub sandbox_image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginConfig>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One containerd config table gardener-node-agent merges into config.toml.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct PluginConfig {
    /// `add` (default) or `remove`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    pub path: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperatingSystemConfigStatus {
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl OperatingSystemConfigSpec {
    /// The containerd config tables gardener-node-agent merges into config.toml (none without
    /// `criConfig.containerd`).
    pub fn containerd_plugins(&self) -> &[PluginConfig] {
        self.cri_config
            .as_ref()
            .and_then(|c| c.containerd.as_ref())
            .map(|c| c.plugins.as_slice())
            .unwrap_or_default()
    }
}
