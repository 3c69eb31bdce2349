//! The kata actuator: per pool, the installer ManagedResource; per shoot, the shared one with the
//! RuntimeClasses of all kata pools.

use super::installer::InstallerImages;
use super::names::*;
use super::pools::PoolInput;
use super::requirements::Requirements;
use super::{manifests, names, plan};
use crate::api::{ContainerRuntime, DecodedCluster};
use crate::extension::{Actuator, ActuatorError};
use crate::managedresources::{ManagedResourceError, ManagedResources};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use std::time::Duration;

/// How long to wait before checking again whether a ManagedResource is gone.
const DELETION_POLL: Duration = Duration::from_secs(5);

pub struct KataActuator {
    mrs: ManagedResources,
    /// All ContainerRuntimes of the seed, from the controller's cache: the shoot's other kata pools.
    cache: Store<ContainerRuntime>,
    images: InstallerImages,
    requirements: Requirements,
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
        images: InstallerImages,
        requirements: Requirements,
    ) -> Self {
        Self {
            mrs: ManagedResources::new(client, ORIGIN).with_cache(),
            cache,
            images,
            requirements,
        }
    }

    async fn ensure_shared(&self, ns: &str, pools: &[PoolInput]) -> Result<(), ActuatorError> {
        let data = manifests::shared(pools).map_err(plan::config_error)?;
        self.mrs.ensure(ns, SHARED_MR, &data).await?;
        Ok(())
    }

    async fn cleanup(&self, cr: &ContainerRuntime, cluster: &DecodedCluster, wait: bool) -> Result<(), ActuatorError> {
        let ns = cr.namespace().unwrap_or_default();
        let installation = names::installation_mr(&cr.spec.worker_pool.name);
        self.mrs.delete(&ns, &installation).await?;
        // kata-deploy pods clean their node on SIGTERM; they need the shared RBAC until then
        if wait && self.mrs.exists(&ns, &installation).await? {
            return Err(ActuatorError::requeue(
                DELETION_POLL,
                format!("waiting for ManagedResource {installation} to be deleted"),
            ));
        }
        let cache = self.cache.state();
        let others = plan::other_pools(
            &cr.spec.worker_pool.name,
            cache.iter().map(|o| &**o).filter(|o| o.namespace() == cr.namespace()),
            cluster,
        );
        if others.is_empty() {
            self.mrs.delete(&ns, SHARED_MR).await?;
            if wait && self.mrs.exists(&ns, SHARED_MR).await? {
                return Err(ActuatorError::requeue(
                    DELETION_POLL,
                    format!("waiting for ManagedResource {SHARED_MR} to be deleted"),
                ));
            }
        } else {
            // the remaining pools keep their RuntimeClasses; this pool's shims may go
            self.ensure_shared(&ns, &others).await?;
        }
        Ok(())
    }
}

impl Actuator for KataActuator {
    async fn reconcile(&self, cr: &ContainerRuntime, cluster: &DecodedCluster) -> Result<(), ActuatorError> {
        let ns = cr.namespace().unwrap_or_default();
        let cache = self.cache.state();
        let plan = plan::plan(
            cr,
            cache.iter().map(|o| &**o),
            cluster,
            &self.images,
            &self.requirements,
        )?;
        self.mrs.ensure(&ns, SHARED_MR, &plan.shared).await?;
        self.mrs
            .ensure(&ns, &names::installation_mr(&plan.pool), &plan.installation)
            .await?;
        Ok(())
    }

    async fn delete(&self, cr: &ContainerRuntime, cluster: &DecodedCluster) -> Result<(), ActuatorError> {
        self.cleanup(cr, cluster, true).await
    }

    async fn force_delete(&self, cr: &ContainerRuntime, cluster: &DecodedCluster) -> Result<(), ActuatorError> {
        self.cleanup(cr, cluster, false).await
    }

    async fn migrate(&self, cr: &ContainerRuntime, _cluster: &DecodedCluster) -> Result<(), ActuatorError> {
        let ns = cr.namespace().unwrap_or_default();
        let installation = names::installation_mr(&cr.spec.worker_pool.name);
        // the shoot keeps kata running; only this seed lets go
        for mr in [installation.as_str(), SHARED_MR] {
            self.mrs.set_keep_objects(&ns, mr).await?;
            self.mrs.delete(&ns, mr).await?;
        }
        Ok(())
    }

    async fn restore(&self, cr: &ContainerRuntime, cluster: &DecodedCluster) -> Result<(), ActuatorError> {
        self.reconcile(cr, cluster).await
    }
}
