//! The kata actuator: per pool, the installer ManagedResource; per shoot, the shared one with the
//! RuntimeClasses of all kata pools.

use super::installer::InstallerImages;
use super::names::*;
use super::pools::PoolInput;
use super::requirements::Requirements;
use super::{manifests, names};
use crate::api::kata_config::KataConfiguration;
use crate::api::{ContainerRuntime, DecodedCluster};
use crate::extension::{Actuator, ActuatorError, ERR_CONFIGURATION_PROBLEM};
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

fn config_error(msg: impl std::fmt::Display) -> ActuatorError {
    ActuatorError::new(msg.to_string()).with_code(ERR_CONFIGURATION_PROBLEM)
}

impl KataActuator {
    pub fn new(
        client: Client,
        cache: Store<ContainerRuntime>,
        images: InstallerImages,
        requirements: Requirements,
    ) -> Self {
        Self {
            mrs: ManagedResources::new(client, ORIGIN),
            cache,
            images,
            requirements,
        }
    }

    /// The other kata pools of the namespace that are not being deleted, with valid configs.
    fn sibling_pools(&self, cr: &ContainerRuntime, cluster: &DecodedCluster) -> Vec<PoolInput> {
        let ns = cr.namespace();
        let mut pools: Vec<PoolInput> = self
            .cache
            .state()
            .iter()
            .filter(|o| o.namespace() == ns && o.name_any() != cr.name_any())
            .filter(|o| o.spec.type_ == EXTENSION_TYPE && o.metadata.deletion_timestamp.is_none())
            .filter_map(|o| {
                // a pool with an invalid config reports that itself; it contributes nothing here
                let config = KataConfiguration::from_provider_config(o.spec.provider_config.as_ref()).ok()?;
                Some(PoolInput::new(&o.spec.worker_pool.name, config, cluster))
            })
            .collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        pools.dedup_by(|a, b| a.name == b.name);
        pools
    }

    async fn ensure_shared(&self, ns: &str, pools: &[PoolInput]) -> Result<(), ActuatorError> {
        let data = manifests::shared(pools).map_err(config_error)?;
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
        let others = self.sibling_pools(cr, cluster);
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
        let pool_name = &cr.spec.worker_pool.name;
        let config = KataConfiguration::from_provider_config(cr.spec.provider_config.as_ref()).map_err(config_error)?;
        self.requirements
            .check(cluster, pool_name)
            .map_err(|reason| config_error(format!("pool {pool_name:?}: {reason}")))?;
        let pool = PoolInput::new(pool_name, config, cluster);
        let mut pools = self.sibling_pools(cr, cluster);
        pools.retain(|p| p.name != pool.name);
        pools.push(pool.clone());
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        self.ensure_shared(&ns, &pools).await?;
        let data = manifests::installation(&pool, &self.images);
        self.mrs.ensure(&ns, &names::installation_mr(pool_name), &data).await?;
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
