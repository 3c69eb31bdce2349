//! RuntimeClasses `kata-<shim>` (and `kata` for the default hypervisor) for the union of the shims
//! of a shoot's kata pools. Each selects only nodes where its shim is installed, and tolerates the
//! taints of the pools that have it.

use super::names::*;
use super::pools::PoolInput;
use crate::api::kata_config::Shim;
use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::api::node::v1::{Overhead, RuntimeClass, Scheduling};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use std::collections::BTreeMap;

/// Two pools ask for different handlers behind the one `kata` RuntimeClass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "pools {first_pool:?} and {second_pool:?} set different defaultHypervisor values ({first} and {second}), but the RuntimeClass \"kata\" can point to one handler only"
)]
pub struct DefaultConflict {
    pub first_pool: String,
    pub first: Shim,
    pub second_pool: String,
    pub second: Shim,
}

fn runtime_class(name: &str, shim: Shim, pools: &[&PoolInput]) -> RuntimeClass {
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
            ..Default::default()
        },
        handler: shim.handler(),
        overhead: Some(Overhead {
            pod_fixed: Some(BTreeMap::from([
                ("memory".into(), Quantity(memory.into())),
                ("cpu".into(), Quantity(cpu.into())),
            ])),
        }),
        scheduling: Some(Scheduling {
            node_selector: Some(BTreeMap::from([
                (shim_label(shim), "true".into()),
                (KATA_RUNTIME_LABEL.into(), "true".into()),
            ])),
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
        }),
    }
}

/// RuntimeClasses for all pools, sorted by name.
pub fn runtime_classes(pools: &[PoolInput]) -> Result<Vec<RuntimeClass>, DefaultConflict> {
    let mut by_shim: BTreeMap<Shim, Vec<&PoolInput>> = BTreeMap::new();
    for pool in pools {
        for shim in &pool.config.hypervisors {
            by_shim.entry(*shim).or_default().push(pool);
        }
    }
    let mut classes: Vec<RuntimeClass> = by_shim
        .iter()
        .map(|(shim, pools)| runtime_class(&shim.handler(), *shim, pools))
        .collect();
    let mut default: Option<(&PoolInput, Shim)> = None;
    for pool in pools {
        if let Some(shim) = pool.config.default_hypervisor {
            match default {
                Some((first, s)) if s != shim => {
                    return Err(DefaultConflict {
                        first_pool: first.name.clone(),
                        first: s,
                        second_pool: pool.name.clone(),
                        second: shim,
                    });
                }
                Some(_) => {}
                None => default = Some((pool, shim)),
            }
        }
    }
    if let Some((_, shim)) = default {
        classes.push(runtime_class("kata", shim, &by_shim[&shim]));
    }
    classes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(classes)
}
