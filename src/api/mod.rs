//! Typed views of the objects the extension reads and writes: Gardener's extension resources
//! (ContainerRuntime, Cluster, OperatingSystemConfig), gardener-resource-manager's ManagedResource,
//! and our own providerConfig (`KataConfiguration`).
//!
//! Gardener owns these CRDs; the types here only give us typed access. Where we write objects back
//! (OSC mutation, status), unknown fields are kept in `extra` maps so nothing Gardener adds is lost.

pub mod cluster;
pub mod common;
pub mod containerruntime;
pub mod kata_config;
pub mod kata_status;
pub mod managedresource;
pub mod osc;

pub use cluster::{Cluster, ClusterSpec, DecodedCluster};
pub use common::{DefaultStatus, LastError, LastOperation, OperationState, OperationType};
pub use containerruntime::{ContainerRuntime, ContainerRuntimeSpec, ContainerRuntimeStatus};
pub use managedresource::{ManagedResource, ManagedResourceSpec};
pub use osc::OperatingSystemConfig;

/// Annotation gardenlet sets to trigger an operation on an extension object.
pub const OPERATION_ANNOTATION: &str = "gardener.cloud/operation";
/// Annotation gardenlet sets next to the operation annotation; `lastUpdateTime` must not be older.
pub const TIMESTAMP_ANNOTATION: &str = "gardener.cloud/timestamp";
/// Shoot annotation that asks for a force deletion.
pub const FORCE_DELETION_ANNOTATION: &str = "confirmation.gardener.cloud/force-deletion";
/// Label gardenlet puts on nodes (and OSCs) of a worker pool.
pub const POOL_LABEL: &str = "worker.gardener.cloud/pool";
