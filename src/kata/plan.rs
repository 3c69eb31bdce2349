//! What the extension deploys for one ContainerRuntime, as a pure function of the object, the
//! other kata ContainerRuntimes of the shoot and the Cluster. Used by the actuator and by the
//! `render` subcommand.

use super::imagevector::ImageSource;
use super::manifests;
use super::names::EXTENSION_TYPE;
use super::pools::PoolInput;
use super::requirements::Requirements;
use crate::api::kata_config::KataConfiguration;
use crate::api::kata_status::{applied_configuration, recorded};
use crate::api::{ContainerRuntime, DecodedCluster};
use crate::extension::{ActuatorError, ERR_CONFIGURATION_PROBLEM};
use crate::managedresources::Manifests;
use kube::ResourceExt;

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub pool: String,
    /// The pool's configuration, recorded as applied once the plan is.
    pub config: KataConfiguration,
    /// The pool's default hypervisors, recorded with it.
    pub default_hypervisors: Vec<crate::api::kata_config::Shim>,
    /// Content of the shared ManagedResource (RuntimeClasses, RBAC).
    pub shared: Manifests,
    /// Content of the pool's installation ManagedResource.
    pub installation: Manifests,
}

pub fn config_error(msg: impl std::fmt::Display) -> ActuatorError {
    ActuatorError::new(msg.to_string()).with_code(ERR_CONFIGURATION_PROBLEM)
}

/// The configuration a pool contributes to the shoot-wide objects: its providerConfig when that
/// is valid, else the configuration last applied successfully (from its providerStatus), so
/// an invalid edit never takes away what the pool already provides. `None`: nothing applied yet.
pub fn contributed_configuration(cr: &ContainerRuntime) -> Option<KataConfiguration> {
    super::defaults::configuration(cr)
        .ok()
        .or_else(|| applied_configuration(recorded(cr.status.as_ref())))
}

/// The kata pools among `others` (same namespace, not being deleted), excluding `pool` itself,
/// each with the configuration it contributes.
pub fn other_pools<'a>(
    pool: &str,
    others: impl IntoIterator<Item = &'a ContainerRuntime>,
    cluster: &DecodedCluster,
) -> Vec<PoolInput> {
    let mut pools: Vec<PoolInput> = others
        .into_iter()
        .filter(|o| o.spec.type_ == EXTENSION_TYPE && o.metadata.deletion_timestamp.is_none())
        .filter(|o| o.spec.worker_pool.name != pool && valid_pool_name(&o.spec.worker_pool.name))
        .filter_map(|o| {
            let config = contributed_configuration(o)?;
            Some(PoolInput::new(&o.spec.worker_pool.name, config, cluster))
        })
        .collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    pools.dedup_by(|a, b| a.name == b.name);
    pools
}

/// Whether `pool` can name Kubernetes objects (`kata-deploy-<pool>`, ManagedResource
/// `extension-runtime-kata-installation-<pool>`): an RFC 1123 label, as Gardener validates worker
/// names. A hand-written object may carry anything; such a pool never got anything deployed.
pub fn valid_pool_name(pool: &str) -> bool {
    !pool.is_empty()
        && pool.len() <= 63
        && pool
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !pool.starts_with('-')
        && !pool.ends_with('-')
}

/// Everything to deploy for `cr`; configuration problems carry `ERR_CONFIGURATION_PROBLEM`.
pub fn plan<'a>(
    cr: &ContainerRuntime,
    others: impl IntoIterator<Item = &'a ContainerRuntime>,
    cluster: &DecodedCluster,
    images: &ImageSource,
    requirements: &Requirements,
) -> Result<Plan, ActuatorError> {
    let pool_name = &cr.spec.worker_pool.name;
    if !valid_pool_name(pool_name) {
        return Err(config_error(format!(
            "worker pool name {:?} is not a valid name (lowercase letters, digits and '-', at most 63)",
            crate::extension::truncate_for_status(pool_name)
        )));
    }
    let default_hypervisors = super::defaults::default_hypervisors(Some(cr));
    let config =
        KataConfiguration::from_provider_config_with_default(cr.spec.provider_config.as_ref(), &default_hypervisors)
            .map_err(|e| config_error(format!("pool {pool_name:?}: {e}")))?;
    requirements
        .check(cluster, pool_name)
        .map_err(|reason| config_error(format!("pool {pool_name:?}: {reason}")))?;
    let pool = PoolInput::new(pool_name, config.clone(), cluster);
    let version = Some(cluster.shoot.spec.kubernetes.version.as_str()).filter(|v| !v.is_empty());
    let images = images
        .for_pool(version, &pool.architecture)
        .map_err(|e| config_error(format!("pool {pool_name:?} ({}): {e}", pool.architecture)))?;
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
        config,
        default_hypervisors,
        shared: manifests::shared(&pools).map_err(config_error)?,
        installation: manifests::installation(&pool, &images),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Cluster;
    use crate::kata::imagevector::Images;
    use crate::kata::installer::ARCH_LABEL;
    use k8s_openapi::api::apps::v1::DaemonSet;

    /// The example Cluster (pools `vm` and `fc`) with pool `vm` on arm64.
    fn cluster_with_arm64_pool() -> DecodedCluster {
        let mut cluster: serde_json::Value =
            serde_saphyr::from_str(include_str!("../../example/local/cluster.yaml")).unwrap();
        cluster["spec"]["shoot"]["spec"]["provider"]["workers"][0]["machine"]["architecture"] = "arm64".into();
        let cluster: Cluster = serde_json::from_value(cluster).unwrap();
        DecodedCluster::decode(&cluster).unwrap()
    }

    fn installer(plan: &Plan) -> DaemonSet {
        let (_, yaml) = plan
            .installation
            .iter()
            .find(|(k, _)| k.starts_with("daemonset__"))
            .expect("a DaemonSet");
        serde_saphyr::from_str(yaml).unwrap()
    }

    /// With the embedded image vector alone, an arm64 pool installs (no configuration problem):
    /// the same multi-arch images as an amd64 pool, on the pool's arm64 nodes only.
    #[test]
    fn an_arm64_pool_installs_with_the_multi_arch_images() {
        let cluster = cluster_with_arm64_pool();
        let images = ImageSource::from(Images::from_sources("v0.1.0", None).unwrap());
        let requirements = Requirements::default();
        let plan_for = |pool: &str| {
            let cr = ContainerRuntime::for_pool("kata", pool, None);
            installer(
                &plan(&cr, std::iter::empty(), &cluster, &images, &requirements)
                    .unwrap_or_else(|e| panic!("{pool}: {e:?}")),
            )
        };
        let (arm, amd) = (plan_for("vm"), plan_for("fc"));
        let pod = |ds: &DaemonSet| ds.spec.clone().unwrap().template.spec.unwrap();
        let images_of = |ds: &DaemonSet| {
            pod(ds)
                .containers
                .iter()
                .map(|c| c.image.clone().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            images_of(&arm),
            [
                "quay.io/kata-containers/kata-deploy:4.1.0",
                "registry.invalid/gardener/extensions/runtime-kata:v0.1.0"
            ]
        );
        assert_eq!(images_of(&arm), images_of(&amd), "one manifest list per image");
        assert_eq!(pod(&arm).node_selector.unwrap()[ARCH_LABEL], "arm64");
        assert_eq!(pod(&amd).node_selector.unwrap()[ARCH_LABEL], "amd64");
    }

    #[test]
    fn pool_names_must_be_usable_in_object_names() {
        for ok in ["a", "pool-1", &"x".repeat(63)] {
            assert!(valid_pool_name(ok), "{ok}");
        }
        for bad in ["", "with space", "Upper", "-a", "a-", "a/b", "a%20b", &"x".repeat(64)] {
            assert!(!valid_pool_name(bad), "{bad}");
        }
    }
}
