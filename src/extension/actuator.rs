//! What an extension implements: the work for each operation type.

use crate::api::{ContainerRuntime, DecodedCluster};
use std::future::Future;
use std::time::Duration;

/// An actuator failure as Gardener sees it: a description, Gardener error codes (e.g.
/// `ERR_CONFIGURATION_PROBLEM`), and whether it is only "not done yet, come back later".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{description}")]
pub struct ActuatorError {
    pub description: String,
    pub codes: Vec<String>,
    /// Set when the operation is progressing but not finished (e.g. waiting for a deletion): the
    /// object is requeued after this delay without reporting an error.
    pub requeue_after: Option<Duration>,
}

impl ActuatorError {
    pub fn new(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            codes: Vec::new(),
            requeue_after: None,
        }
    }

    pub fn with_code(mut self, code: &str) -> Self {
        self.codes.push(code.to_string());
        self
    }

    /// Not an error: try again after `delay`.
    pub fn requeue(delay: Duration, reason: impl Into<String>) -> Self {
        Self {
            description: reason.into(),
            codes: Vec::new(),
            requeue_after: Some(delay),
        }
    }
}

/// What a successful reconcile or restore reports: `Some` is merged into `status.providerStatus`
/// and `status.state` (written together with Succeeded), `None` leaves them alone.
pub type ProviderStatus = Option<serde_json::Value>;

/// The per-extension work behind the generic reconciler. Every method gets the object and its
/// decoded Cluster. Implementations must be idempotent: each may be called again after any error.
pub trait Actuator: Send + Sync + 'static {
    fn reconcile(
        &self,
        cr: &ContainerRuntime,
        cluster: &DecodedCluster,
    ) -> impl Future<Output = Result<ProviderStatus, ActuatorError>> + Send;
    /// Clean up and wait until clean.
    fn delete(
        &self,
        cr: &ContainerRuntime,
        cluster: &DecodedCluster,
    ) -> impl Future<Output = Result<(), ActuatorError>> + Send;
    /// Clean up without waiting on anything that may never happen (shoot force deletion).
    fn force_delete(
        &self,
        cr: &ContainerRuntime,
        cluster: &DecodedCluster,
    ) -> impl Future<Output = Result<(), ActuatorError>> + Send;
    /// Release everything in this seed while the shoot's objects stay.
    fn migrate(
        &self,
        cr: &ContainerRuntime,
        cluster: &DecodedCluster,
    ) -> impl Future<Output = Result<(), ActuatorError>> + Send;
    fn restore(
        &self,
        cr: &ContainerRuntime,
        cluster: &DecodedCluster,
    ) -> impl Future<Output = Result<ProviderStatus, ActuatorError>> + Send;
    /// What to record in `status.providerStatus` (and `status.state`) with the first status write on `cr` (Processing,
    /// or the error when the work cannot start), for facts that must be fixed from the object's
    /// first sight on, before any operation can fail. `None`: nothing (the default).
    fn first_provider_status(&self, _cr: &ContainerRuntime) -> ProviderStatus {
        None
    }
}
