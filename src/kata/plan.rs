//! What the extension deploys for one ContainerRuntime, as a pure function of the object, the
//! other kata ContainerRuntimes of the shoot and the Cluster. Used by the actuator and by the
//! `render` subcommand.

use super::installer::InstallerImages;
use super::manifests;
use super::names::EXTENSION_TYPE;
use super::pools::PoolInput;
use super::requirements::Requirements;
use crate::api::kata_config::KataConfiguration;
use crate::api::{ContainerRuntime, DecodedCluster};
use crate::extension::{ActuatorError, ERR_CONFIGURATION_PROBLEM};
use crate::managedresources::Manifests;
use kube::ResourceExt;

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub pool: String,
    /// Content of the shared ManagedResource (RuntimeClasses, RBAC).
    pub shared: Manifests,
    /// Content of the pool's installation ManagedResource.
    pub installation: Manifests,
}

pub fn config_error(msg: impl std::fmt::Display) -> ActuatorError {
    ActuatorError::new(msg.to_string()).with_code(ERR_CONFIGURATION_PROBLEM)
}

/// The kata pools among `others` (same namespace, not being deleted, valid providerConfig),
/// excluding `pool` itself. A pool with an invalid config reports that itself and contributes
/// nothing here.
pub fn other_pools<'a>(
    pool: &str,
    others: impl IntoIterator<Item = &'a ContainerRuntime>,
    cluster: &DecodedCluster,
) -> Vec<PoolInput> {
    let mut pools: Vec<PoolInput> = others
        .into_iter()
        .filter(|o| o.spec.type_ == EXTENSION_TYPE && o.metadata.deletion_timestamp.is_none())
        .filter(|o| o.spec.worker_pool.name != pool)
        .filter_map(|o| {
            let config = KataConfiguration::from_provider_config(o.spec.provider_config.as_ref()).ok()?;
            Some(PoolInput::new(&o.spec.worker_pool.name, config, cluster))
        })
        .collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    pools.dedup_by(|a, b| a.name == b.name);
    pools
}

/// Everything to deploy for `cr`; configuration problems carry `ERR_CONFIGURATION_PROBLEM`.
pub fn plan<'a>(
    cr: &ContainerRuntime,
    others: impl IntoIterator<Item = &'a ContainerRuntime>,
    cluster: &DecodedCluster,
    images: &InstallerImages,
    requirements: &Requirements,
) -> Result<Plan, ActuatorError> {
    let pool_name = &cr.spec.worker_pool.name;
    let config = KataConfiguration::from_provider_config(cr.spec.provider_config.as_ref())
        .map_err(|e| config_error(format!("pool {pool_name:?}: {e}")))?;
    requirements
        .check(cluster, pool_name)
        .map_err(|reason| config_error(format!("pool {pool_name:?}: {reason}")))?;
    let pool = PoolInput::new(pool_name, config, cluster);
    let namespace = cr.namespace();
    let mut pools = other_pools(
        pool_name,
        others.into_iter().filter(|o| o.namespace() == namespace),
        cluster,
    );
    pools.push(pool.clone());
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Plan {
        pool: pool_name.clone(),
        shared: manifests::shared(&pools).map_err(config_error)?,
        installation: manifests::installation(&pool, images),
    })
}
