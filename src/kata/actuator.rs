//! The kata actuator: per pool, the installer ManagedResource; per shoot, the shared one with the
//! RuntimeClasses of all kata pools.

use super::imagevector::ImageSource;
use super::names::*;
use super::pools::PoolInput;
use super::requirements::Requirements;
use super::{defaults, manifests, names, plan};
use crate::api::kata_status::{self, provider_status};
use crate::api::{ContainerRuntime, DecodedCluster};
use crate::extension::actuator::ProviderStatus;
use crate::extension::{Actuator, ActuatorError};
use crate::managedresources::{ApplyCheck, ApplyTracker, ManagedResourceCache, ManagedResourceError, ManagedResources};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use std::time::Duration;

/// How long to wait before checking again whether a ManagedResource is gone.
const DELETION_POLL: Duration = Duration::from_secs(5);
/// How long to wait before looking again at what gardener-resource-manager reported.
const APPLY_POLL: Duration = Duration::from_secs(2);

fn to_result(check: ApplyCheck) -> Result<(), ActuatorError> {
    match check {
        ApplyCheck::Done => Ok(()),
        ApplyCheck::Wait(reason) => Err(ActuatorError::requeue(APPLY_POLL, reason)),
        ApplyCheck::Failed(description) => Err(ActuatorError::new(description)),
    }
}

pub struct KataActuator {
    mrs: ManagedResources,
    /// All ContainerRuntimes of the seed, from the controller's cache: the shoot's other kata pools.
    cache: Store<ContainerRuntime>,
    images: ImageSource,
    requirements: Requirements,
    applied: ApplyTracker,
}

impl From<ManagedResourceError> for ActuatorError {
    fn from(e: ManagedResourceError) -> Self {
        ActuatorError::new(e.to_string())
    }
}

impl KataActuator {
    pub fn new(
        client: Client,
        cache: Store<ContainerRuntime>,
        images: impl Into<ImageSource>,
        requirements: Requirements,
    ) -> Self {
        Self {
            mrs: ManagedResources::new(client, ORIGIN).with_cache(),
            cache,
            images: images.into(),
            requirements,
            applied: ApplyTracker::default(),
        }
    }

    /// The cache of our ManagedResources (with their status, as the resource manager reports it).
    pub fn managed_resource_cache(&self) -> Option<ManagedResourceCache> {
        self.mrs.cache().cloned()
    }

    async fn ensure_shared(&self, ns: &str, pools: &[PoolInput]) -> Result<(), ActuatorError> {
        let data = manifests::shared(pools).map_err(plan::config_error)?;
        self.mrs.ensure(ns, SHARED_MR, &data).await?;
        Ok(())
    }

    /// Removes this pool: its installation, its share of the shoot-wide objects, and the shared
    /// ManagedResource once no installer is left that needs its RBAC. `wait`: requeue until the
    /// resource manager has removed what it must (kata-deploy cleans its node on SIGTERM).
    async fn cleanup(&self, cr: &ContainerRuntime, cluster: &DecodedCluster, wait: bool) -> Result<(), ActuatorError> {
        let ns = cr.namespace().unwrap_or_default();
        if !plan::valid_pool_name(&cr.spec.worker_pool.name) {
            // nothing can have been deployed under a name the apiserver refuses
            return Ok(());
        }
        let installation = names::installation_mr(&cr.spec.worker_pool.name);
        self.mrs.delete(&ns, &installation).await?;
        if wait && self.mrs.exists(&ns, &installation).await? {
            return Err(ActuatorError::requeue(
                DELETION_POLL,
                format!("waiting for ManagedResource {installation} to be deleted"),
            ));
        }
        let cache = self.cache.state();
        let in_namespace = || cache.iter().map(|o| &**o).filter(|o| o.namespace() == cr.namespace());
        let others = plan::other_pools(&cr.spec.worker_pool.name, in_namespace(), cluster);
        if !others.is_empty() {
            // the remaining pools keep their RuntimeClasses; this pool's shims may go
            return self.ensure_shared(&ns, &others).await;
        }
        // No pool stays. Other pools being deleted at the same time may still have installers
        // cleaning their nodes: the shared RBAC goes only with the last installation.
        let left: Vec<String> = self
            .mrs
            .names_with_prefix(&ns, INSTALLATION_MR_PREFIX)
            .await?
            .into_iter()
            .filter(|n| *n != installation)
            .collect();
        if !left.is_empty() && !wait {
            // force deletion never waits; the shoot is going away with everything in it
            for mr in &left {
                self.mrs.delete(&ns, mr).await?;
            }
        } else if !left.is_empty() {
            let deleting_pools: Vec<String> = in_namespace()
                .filter(|o| o.spec.type_ == EXTENSION_TYPE && o.spec.worker_pool.name != cr.spec.worker_pool.name)
                .map(|o| names::installation_mr(&o.spec.worker_pool.name))
                .collect();
            if left.iter().all(|mr| deleting_pools.contains(mr)) {
                // each of those pools checks again once its own installation is gone
                tracing::info!(namespace = %ns, remaining = ?left, "keeping the shared ManagedResource for installations still being removed");
                return Ok(());
            }
            // installations whose pool is gone entirely: nothing else will remove them
            for mr in left.iter().filter(|mr| !deleting_pools.contains(mr)) {
                self.mrs.delete(&ns, mr).await?;
            }
            return Err(ActuatorError::requeue(
                DELETION_POLL,
                format!("waiting for ManagedResources {left:?} to be deleted"),
            ));
        }
        self.mrs.delete(&ns, SHARED_MR).await?;
        if wait && self.mrs.exists(&ns, SHARED_MR).await? {
            return Err(ActuatorError::requeue(
                DELETION_POLL,
                format!("waiting for ManagedResource {SHARED_MR} to be deleted"),
            ));
        }
        Ok(())
    }
}

impl Actuator for KataActuator {
    async fn reconcile(
        &self,
        cr: &ContainerRuntime,
        cluster: &DecodedCluster,
    ) -> Result<ProviderStatus, ActuatorError> {
        let ns = cr.namespace().unwrap_or_default();
        let cache = self.cache.state();
        let plan = plan::plan(
            cr,
            cache.iter().map(|o| &**o),
            cluster,
            &self.images,
            &self.requirements,
        )?;
        let shared = self.mrs.ensure(&ns, SHARED_MR, &plan.shared).await?;
        let installation = self
            .mrs
            .ensure(&ns, &names::installation_mr(&plan.pool), &plan.installation)
            .await?;
        let hibernated = cluster.shoot.is_hibernation_enabled();
        to_result(self.applied.check(&shared, hibernated))?;
        to_result(self.applied.check(&installation, hibernated))?;
        Ok(Some(provider_status(&plan.config, &plan.default_hypervisors)))
    }

    async fn delete(&self, cr: &ContainerRuntime, cluster: &DecodedCluster) -> Result<(), ActuatorError> {
        self.cleanup(cr, cluster, true).await
    }

    /// The pool's default hypervisors, fixed at first sight: an object with a lastOperation but
    /// without our providerStatus is then always one that v0.1.0 reconciled.
    fn first_provider_status(&self, cr: &ContainerRuntime) -> ProviderStatus {
        let current = cr.status.as_ref().and_then(|s| s.provider_status.as_ref());
        (!kata_status::is_ours(current)).then(|| kata_status::default_only(&defaults::default_hypervisors(Some(cr))))
    }

    async fn force_delete(&self, cr: &ContainerRuntime, cluster: &DecodedCluster) -> Result<(), ActuatorError> {
        self.cleanup(cr, cluster, false).await
    }

    async fn migrate(&self, cr: &ContainerRuntime, _cluster: &DecodedCluster) -> Result<(), ActuatorError> {
        let ns = cr.namespace().unwrap_or_default();
        if !plan::valid_pool_name(&cr.spec.worker_pool.name) {
            return Ok(());
        }
        let installation = names::installation_mr(&cr.spec.worker_pool.name);
        // the shoot keeps kata running; only this seed lets go
        for mr in [installation.as_str(), SHARED_MR] {
            self.mrs.set_keep_objects(&ns, mr).await?;
            self.mrs.delete(&ns, mr).await?;
        }
        Ok(())
    }

    async fn restore(&self, cr: &ContainerRuntime, cluster: &DecodedCluster) -> Result<ProviderStatus, ActuatorError> {
        self.reconcile(cr, cluster).await
    }
}
