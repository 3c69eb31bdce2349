//! RuntimeClasses `kata-<shim>` (and `kata` for the default hypervisor) for the union of the shims
//! of a shoot's kata pools. Each selects only nodes where its shim is installed, and tolerates the
//! taints of the pools that have it.

use super::names::*;
use super::pools::PoolInput;
use super::shootwide;
use crate::api::kata_config::Shim;
use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::api::node::v1::{Overhead, RuntimeClass, Scheduling};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use std::collections::BTreeMap;

/// A RuntimeClass `name` for containerd handler `handler`, scheduling onto nodes marked with
/// `node_label` and tolerating the taints of `pools`.
fn runtime_class(name: &str, handler: String, node_label: String, shim: Shim, pools: &[&PoolInput]) -> RuntimeClass {
    let (memory, cpu) = shim.overhead();
    let mut tolerations: Vec<Toleration> = Vec::new();
    for pool in pools {
        for t in &pool.taints {
            let tol = Toleration {
                key: Some(t.key.clone()),
                operator: Some(if t.value.is_some() { "Equal" } else { "Exists" }.into()),
                value: t.value.clone(),
                effect: Some(t.effect.clone()),
                ..Default::default()
            };
            if !tolerations.contains(&tol) {
                tolerations.push(tol);
            }
        }
    }
    RuntimeClass {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.into(), MANAGED_BY.into())])),
            // `handler` is immutable: a new defaultHypervisor replaces the `kata` class
            annotations: Some(BTreeMap::from([(DELETE_ON_INVALID_UPDATE.into(), "true".into())])),
            ..Default::default()
        },
        handler,
        overhead: Some(Overhead {
            pod_fixed: Some(BTreeMap::from([
                ("memory".into(), Quantity(memory.into())),
                ("cpu".into(), Quantity(cpu.into())),
            ])),
        }),
        scheduling: Some(Scheduling {
            node_selector: Some(BTreeMap::from([
                (node_label, "true".into()),
                (KATA_RUNTIME_LABEL.into(), "true".into()),
            ])),
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
        }),
    }
}

fn shim_class(name: &str, shim: Shim, pools: &[&PoolInput]) -> RuntimeClass {
    runtime_class(name, shim.handler(), shim_label(shim), shim, pools)
}

/// RuntimeClasses for all pools, sorted by name; the shoot-wide rules decide whether there are any.
pub fn runtime_classes(pools: &[PoolInput]) -> Result<Vec<RuntimeClass>, shootwide::Violations> {
    let mut by_shim: BTreeMap<Shim, Vec<&PoolInput>> = BTreeMap::new();
    for pool in pools {
        for shim in &pool.config.hypervisors {
            by_shim.entry(*shim).or_default().push(pool);
        }
    }
    let mut classes: Vec<RuntimeClass> = by_shim
        .iter()
        .map(|(shim, pools)| shim_class(&shim.handler(), *shim, pools))
        .collect();
    // `kata-<shim>-debug` only where a pool with `debug: true` registered that handler
    for (shim, pools) in &by_shim {
        let debug: Vec<&PoolInput> = pools.iter().copied().filter(|p| p.config.debug).collect();
        if !debug.is_empty() {
            let handler = debug_handler(*shim);
            classes.push(runtime_class(
                &handler.clone(),
                handler,
                debug_shim_label(*shim),
                *shim,
                &debug,
            ));
        }
    }
    let views: Vec<shootwide::Pool> = pools
        .iter()
        .map(|p| shootwide::Pool {
            name: &p.name,
            config: &p.config,
        })
        .collect();
    shootwide::check(&views)?;
    let default = shootwide::default_hypervisor(&views);
    if let Some(shim) = default {
        classes.push(shim_class("kata", shim, &by_shim[&shim]));
    }
    classes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(classes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kata_config::KataConfiguration;

    fn pool(name: &str, config: serde_json::Value) -> PoolInput {
        let mut v = serde_json::json!({"apiVersion": "kata.runtime.extensions.config.gardener.cloud/v1alpha1", "kind": "KataConfiguration"});
        v.as_object_mut().unwrap().extend(config.as_object().cloned().unwrap());
        PoolInput {
            name: name.into(),
            config: KataConfiguration::from_provider_config(Some(&v)).unwrap(),
            taints: vec![],
            architecture: "amd64".into(),
        }
    }

    #[test]
    fn debug_pools_get_debug_classes_that_schedule_only_onto_their_nodes() {
        let pools = [
            pool("a", serde_json::json!({"hypervisors": ["qemu", "clh"], "debug": true})),
            pool("b", serde_json::json!({"hypervisors": ["qemu", "fc"]})),
        ];
        let classes = runtime_classes(&pools).unwrap();
        let names: Vec<_> = classes.iter().map(|c| c.metadata.name.clone().unwrap()).collect();
        assert_eq!(
            names,
            ["kata-clh", "kata-clh-debug", "kata-fc", "kata-qemu", "kata-qemu-debug"]
        );
        let debug = classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some("kata-qemu-debug"))
            .unwrap();
        assert_eq!(debug.handler, "kata-qemu-debug");
        let selector = debug.scheduling.as_ref().unwrap().node_selector.as_ref().unwrap();
        assert_eq!(selector["kata.runtime.extensions.gardener.cloud/qemu-debug"], "true");
        let plain = classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some("kata-qemu"))
            .unwrap();
        assert_eq!(debug.overhead, plain.overhead);
        assert!(
            runtime_classes(&pools[1..])
                .unwrap()
                .iter()
                .all(|c| !c.handler.ends_with("-debug"))
        );
    }
}
