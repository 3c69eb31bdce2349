//! What goes into the two ManagedResources, as YAML documents keyed by kind and name.

use super::installer::{InstallerImages, daemon_set};
use super::pools::PoolInput;
use super::rbac;
use super::runtimeclasses::runtime_classes;
use super::shootwide::Violations;
use crate::managedresources::Manifests;
use kube::Resource;
use serde::Serialize;

/// `<kind>__[<namespace>__]<name>.yaml`; Secret keys allow only `[-._a-zA-Z0-9]`.
fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    let kind = K::kind(&()).to_lowercase();
    let meta = obj.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    let key = match &meta.namespace {
        Some(ns) => format!("{kind}__{ns}__{name}.yaml"),
        None => format!("{kind}__{name}.yaml"),
    };
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn add<K: Resource<DynamicType = ()> + Serialize>(out: &mut Manifests, obj: &K) {
    let yaml = serde_saphyr::to_string(obj).expect("k8s-openapi objects serialize");
    out.insert(key(obj), yaml);
}

/// RuntimeClasses for the union of the pools' shims, plus the installer's identity.
pub fn shared(pools: &[PoolInput]) -> Result<Manifests, Violations> {
    let mut out = Manifests::new();
    for rc in runtime_classes(pools)? {
        add(&mut out, &rc);
    }
    add(&mut out, &rbac::service_account());
    add(&mut out, &rbac::cluster_role());
    add(&mut out, &rbac::cluster_role_binding());
    add(&mut out, &rbac::own_node_policy());
    add(&mut out, &rbac::own_node_policy_binding());
    Ok(out)
}

/// The kata-deploy DaemonSet of one pool.
pub fn installation(pool: &PoolInput, images: &InstallerImages) -> Manifests {
    let mut out = Manifests::new();
    add(&mut out, &daemon_set(pool, images));
    out
}
