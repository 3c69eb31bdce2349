//! Which default hypervisors a pool gets when its providerConfig names none.
//!
//! Firecracker became opt-in in v0.2.0 (a thin-pool file on every node and a node-wide containerd
//! setting are too much to get by default). Pools that already run with the old default must not
//! lose `fc` by an upgrade of the extension, so a pool keeps the default it started with:
//!
//! - the default recorded in its status (`providerStatus.defaultHypervisors`, written with the
//!   first status write on the object, before any operation can fail, and with every success;
//!   mirrored into `status.state`, which survives a control-plane migration);
//! - else, when the pool was reconciled before (a `lastOperation` without our providerStatus:
//!   v0.1.0, whose default included `fc`), the old default;
//! - else (a new pool) the new default.

use crate::api::ContainerRuntime;
use crate::api::kata_config::{DEFAULT_HYPERVISORS, KataConfiguration, LEGACY_DEFAULT_HYPERVISORS, Shim};
use crate::api::kata_status;

pub fn default_hypervisors(cr: Option<&ContainerRuntime>) -> Vec<Shim> {
    let status = cr.and_then(|c| c.status.as_ref());
    let recorded = kata_status::recorded(status);
    if let Some(defaults) = kata_status::recorded_default_hypervisors(recorded) {
        return defaults;
    }
    let reconciled_before = status.is_some_and(|s| s.last_operation.is_some()) && recorded.is_none();
    if reconciled_before {
        LEGACY_DEFAULT_HYPERVISORS.to_vec()
    } else {
        DEFAULT_HYPERVISORS.to_vec()
    }
}

/// The pool's configuration from its providerConfig, with the pool's own default.
pub fn configuration(cr: &ContainerRuntime) -> Result<KataConfiguration, crate::api::kata_config::ConfigError> {
    KataConfiguration::from_provider_config_with_default(
        cr.spec.provider_config.as_ref(),
        &default_hypervisors(Some(cr)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::{DefaultStatus, LastOperation, OperationState, OperationType};

    fn reconciled(provider_status: Option<serde_json::Value>) -> ContainerRuntime {
        let mut cr = ContainerRuntime::for_pool("kata", "a", None);
        cr.status = Some(DefaultStatus {
            provider_status,
            last_operation: Some(LastOperation {
                type_: OperationType::Reconcile.into(),
                state: OperationState::Succeeded.into(),
                progress: 100,
                description: String::new(),
                last_update_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ),
            }),
            ..Default::default()
        });
        cr
    }

    #[test]
    fn a_pool_keeps_the_default_it_started_with() {
        // new pool: fc is opt-in
        let new = ContainerRuntime::for_pool("kata", "a", None);
        assert_eq!(default_hypervisors(Some(&new)), DEFAULT_HYPERVISORS.to_vec());
        assert_eq!(default_hypervisors(None), DEFAULT_HYPERVISORS.to_vec());
        // reconciled by v0.1.0 (no providerStatus of ours): the old default with fc
        assert_eq!(
            default_hypervisors(Some(&reconciled(None))),
            LEGACY_DEFAULT_HYPERVISORS.to_vec()
        );
        // recorded since v0.2.0: whatever was recorded
        let config = configuration(&reconciled(None)).unwrap();
        let status = kata_status::provider_status(&config, &LEGACY_DEFAULT_HYPERVISORS);
        assert_eq!(
            default_hypervisors(Some(&reconciled(Some(status)))),
            LEGACY_DEFAULT_HYPERVISORS.to_vec()
        );
        let status = kata_status::provider_status(&config, &DEFAULT_HYPERVISORS);
        assert_eq!(
            default_hypervisors(Some(&reconciled(Some(status)))),
            DEFAULT_HYPERVISORS.to_vec()
        );
        // recorded at first sight, before a first operation that failed: still a new pool, and
        // nothing counts as applied
        let first = kata_status::default_only(&DEFAULT_HYPERVISORS);
        assert_eq!(kata_status::applied_configuration(Some(&first)), None);
        assert_eq!(
            default_hypervisors(Some(&reconciled(Some(first)))),
            DEFAULT_HYPERVISORS.to_vec()
        );
        // restored on another seed: a fresh object with only the state gardenlet carried over
        let mut restored = ContainerRuntime::for_pool("kata", "a", None);
        restored.status = Some(DefaultStatus {
            state: Some(kata_status::provider_status(&config, &LEGACY_DEFAULT_HYPERVISORS)),
            ..Default::default()
        });
        assert_eq!(
            default_hypervisors(Some(&restored)),
            LEGACY_DEFAULT_HYPERVISORS.to_vec()
        );
    }
}
