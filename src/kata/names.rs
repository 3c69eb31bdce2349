//! Names and labels of what the extension deploys.

pub const EXTENSION_NAME: &str = "runtime-kata";
pub const EXTENSION_TYPE: &str = "kata";
/// The unique `origin` of our ManagedResources (never `gardener`).
pub const ORIGIN: &str = "extension-runtime-kata";
/// Shared ManagedResource: RuntimeClasses, ServiceAccount and RBAC.
pub const SHARED_MR: &str = "extension-runtime-kata";
pub const SHOOT_NAMESPACE: &str = "kube-system";
pub const SERVICE_ACCOUNT: &str = "kata-deploy";
pub const CLUSTER_ROLE: &str = "extensions.gardener.cloud:runtime-kata:kata-deploy";
/// ValidatingAdmissionPolicy (and binding) that keeps the installer to its own node.
pub const OWN_NODE_POLICY: &str = "extensions.gardener.cloud-runtime-kata-own-node";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "gardener-extension-runtime-kata";
/// Tells gardener-resource-manager to delete and re-create an object whose update the apiserver
/// rejects as invalid (immutable fields: RuntimeClass `handler`, ClusterRoleBinding `roleRef`).
pub const DELETE_ON_INVALID_UPDATE: &str = "resources.gardener.cloud/delete-on-invalid-update";
/// Gardener's node label for a pool that lists kata.
pub const KATA_NODE_LABEL: &str = "containerruntime.worker.gardener.cloud/kata";
/// kata-deploy's node label once it finished installing.
pub const KATA_RUNTIME_LABEL: &str = "katacontainers.io/kata-runtime";
/// Label our node labeler puts on nodes where a shim is installed.
pub const SHIM_LABEL_PREFIX: &str = "kata.runtime.extensions.gardener.cloud/";
pub const POOL_LABEL_KEY: &str = "kata.runtime.extensions.gardener.cloud/pool";

pub const INSTALLATION_MR_PREFIX: &str = "extension-runtime-kata-installation-";

/// Per-pool ManagedResource holding the installer.
pub fn installation_mr(pool: &str) -> String {
    format!("{INSTALLATION_MR_PREFIX}{pool}")
}

pub fn daemonset(pool: &str) -> String {
    format!("kata-deploy-{pool}")
}

pub fn shim_label(shim: crate::api::kata_config::Shim) -> String {
    format!("{SHIM_LABEL_PREFIX}{}", shim.as_str())
}

/// kata-deploy 4.1 with `DEBUG=true` registers a second handler per shim, `kata-<shim>-debug`,
/// which alone carries the runtime, agent and hypervisor debug settings.
pub fn debug_handler(shim: crate::api::kata_config::Shim) -> String {
    format!("{}-debug", shim.handler())
}

/// Marks a node whose installer registered the debug handler of `shim`.
pub fn debug_shim_label(shim: crate::api::kata_config::Shim) -> String {
    format!("{}-debug", shim_label(shim))
}
