//! Which shoots are hibernated, from a watch of the Clusters that decodes nothing but
//! `spec.shoot.spec.hibernation.enabled`: the health checks ask it before every verdict, as
//! Gardener's health checks do, without a request per check and without holding whole Clusters
//! (each carries a Shoot, a Seed and a CloudProfile).

use crate::api::Cluster;
use crate::runtime::watch_cache::WatchCache;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use serde::Deserialize;

/// A Cluster reduced to its name and its shoot's hibernation flag.
#[derive(Resource, Deserialize, Clone, Debug)]
#[resource(inherit = "Cluster")]
pub struct ClusterHibernation {
    pub metadata: ObjectMeta,
    #[serde(default)]
    spec: Spec,
}

#[derive(Deserialize, Clone, Debug, Default)]
struct Spec {
    #[serde(default)]
    shoot: Shoot,
}

#[derive(Deserialize, Clone, Debug, Default)]
struct Shoot {
    #[serde(default)]
    spec: ShootSpec,
}

#[derive(Deserialize, Clone, Debug, Default)]
struct ShootSpec {
    #[serde(default)]
    hibernation: Option<Hibernation>,
}

#[derive(Deserialize, Clone, Debug, Default)]
struct Hibernation {
    #[serde(default)]
    enabled: Option<bool>,
}

impl ClusterHibernation {
    pub fn hibernated(&self) -> bool {
        self.spec
            .shoot
            .spec
            .hibernation
            .as_ref()
            .and_then(|h| h.enabled)
            .unwrap_or(false)
    }
}

/// Small pages: the list responses carry whole Clusters before they are reduced.
const PAGE_SIZE: u32 = 50;

/// The watch-fed hibernation flags; the watch stops when this is dropped.
pub struct HibernationCache(WatchCache<ClusterHibernation>);

impl HibernationCache {
    pub fn start(client: Client) -> Self {
        let config = watcher::Config::default().page_size(PAGE_SIZE);
        Self(WatchCache::start(Api::all(client), config, "Cluster"))
    }

    /// Whether the first list is in.
    pub fn is_synced(&self) -> bool {
        self.0.is_synced()
    }

    /// Whether the shoot of `namespace` is hibernated (a missing Cluster: no).
    pub fn hibernated(&self, namespace: &str) -> bool {
        self.0
            .store()
            .get(&ObjectRef::new(namespace))
            .is_some_and(|c| c.hibernated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hibernation_flag_is_decoded() {
        let cluster = serde_json::json!({
            "apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "shoot--p--s"},
            "spec": {"cloudProfile": {"spec": {"huge": [1, 2, 3]}}, "seed": {},
                     "shoot": {"spec": {"hibernation": {"enabled": true, "schedules": []}, "provider": {"workers": []}}}}
        });
        let c: ClusterHibernation = serde_json::from_value(cluster).unwrap();
        assert!(c.hibernated());
        let awake: ClusterHibernation = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x"}, "spec": {"shoot": {"spec": {"hibernation": {}}}}
        }))
        .unwrap();
        assert!(!awake.hibernated());
        let bare: ClusterHibernation = serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
        assert!(!bare.hibernated());
        assert_eq!(ClusterHibernation::plural(&()), "clusters");
    }
}
