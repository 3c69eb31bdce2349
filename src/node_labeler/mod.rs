//! `node-labeler`: runs in the shoot next to kata-deploy and marks its node with one label per
//! shim that can run there, which is what the RuntimeClasses select on.
//!
//! Every `--check-seconds` it reads what the node offers (KVM, the fc thin-pool; see
//! [`capability`]), labels only the runnable shims, records the verdict as the node condition
//! `KataRuntimeReady` and reports it as readiness, so an installer pod on a node that can run none
//! of its pool's shims is not ready and gardener-resource-manager reports the DaemonSet unhealthy.
//!
//! On start it also removes the marks of shims its pool no longer has (a rollout after the shim
//! set changed). On SIGTERM it removes its marks only when kata is going away from the node: as
//! kata-deploy 4.1 does for its own cleanup, it keeps them while its DaemonSet still exists and
//! selects the node, because then the pod is only being replaced and kata stays installed.

pub mod capability;
pub mod condition;

use crate::api::kata_config::Shim;
use crate::kata::names::{debug_shim_label, shim_label};
use crate::runtime::health::{self, Readiness};
use crate::runtime::shutdown::Shutdown;
use anyhow::{Context, bail};
use capability::{HostFacts, Roots, Verdict};
use condition::NodeCondition;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The DaemonSet whose pod this is.
#[derive(Clone, Debug)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
}

pub fn parse_shims(names: &[String]) -> anyhow::Result<Vec<Shim>> {
    let shims = names
        .iter()
        .filter(|n| !n.is_empty())
        .map(|n| Shim::parse(n).with_context(|| format!("unknown shim {n:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if shims.is_empty() {
        bail!("--shims names no shim");
    }
    Ok(shims)
}

/// The labels that advertise `shims` (and their debug handlers on a debug pool).
pub fn labels_for(shims: &[Shim], debug: bool) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = shims.iter().map(|s| (shim_label(*s), "true".into())).collect();
    if debug {
        labels.extend(shims.iter().map(|s| (debug_shim_label(*s), "true".into())));
    }
    labels
}

/// Merge patch setting (or, with `remove`, deleting) the labels.
pub fn label_patch(labels: &[(String, String)], remove: bool) -> Value {
    let map: Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.clone(), if remove { Value::Null } else { Value::String(v.clone()) }))
        .collect();
    json!({"metadata": {"labels": map}})
}

/// Merge patch setting the labels and deleting the marks of every other shim.
pub fn set_and_prune_patch(labels: &[(String, String)]) -> Value {
    let mut patch = label_patch(labels, false);
    let map = patch["metadata"]["labels"].as_object_mut().expect("built above");
    for key in Shim::ALL.into_iter().flat_map(|s| [shim_label(s), debug_shim_label(s)]) {
        if !map.contains_key(&key) {
            map.insert(key, Value::Null);
        }
    }
    patch
}

/// Whether the DaemonSet would (still) run a pod on a node with these labels: it is not being
/// deleted and its pod template's nodeSelector matches (our DaemonSets use no node affinity).
pub fn selects_node(ds: &DaemonSet, node_labels: &BTreeMap<String, String>) -> bool {
    if ds.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let selector = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.node_selector.clone())
        .unwrap_or_default();
    selector.iter().all(|(k, v)| node_labels.get(k) == Some(v))
}

/// True when the pod is only being replaced: the owner DaemonSet still selects the node.
async fn rolling(client: &kube::Client, owner: &Owner, nodes: &Api<Node>, node: &str) -> anyhow::Result<bool> {
    let ds = Api::<DaemonSet>::namespaced(client.clone(), &owner.namespace)
        .get_opt(&owner.name)
        .await
        .with_context(|| format!("reading DaemonSet {}/{}", owner.namespace, owner.name))?;
    let Some(ds) = ds else { return Ok(false) };
    let node = nodes.get(node).await.with_context(|| format!("reading node {node}"))?;
    Ok(selects_node(&ds, node.labels()))
}

/// How the labeler runs (flags of the `node-labeler` subcommand).
#[derive(Clone, Debug)]
pub struct LabelerConfig {
    /// The pool's shims.
    pub shims: Vec<Shim>,
    /// The pool registers debug handlers too.
    pub debug: bool,
    pub owner: Option<Owner>,
    /// Re-apply the labels this often even when nothing changed (someone may remove them).
    pub resync: Duration,
    /// Re-read the node's capabilities this often (a module loaded later, the fc pool created).
    pub check_every: Duration,
    /// The pool's `devmapper.dataSize` in bytes when it has fc: a smaller thin-pool is reported.
    pub fc_data_size: Option<u64>,
    pub roots: Roots,
    /// `/healthz` and `/readyz`; none in tests that do not need them.
    pub health_address: Option<SocketAddr>,
}

/// What was last written to the node, so unchanged state costs no request.
#[derive(Default)]
struct Written {
    labels: Option<(Vec<(String, String)>, Instant)>,
    condition: Option<NodeCondition>,
}

pub async fn run(client: kube::Client, node: &str, cfg: LabelerConfig) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let readiness = Readiness::default();
    let runnable = readiness.check("kata-runtime");
    let health_task = match cfg.health_address {
        Some(addr) => Some(
            health::serve("health", addr, health::health_router(readiness), shutdown.wait())
                .await
                .with_context(|| format!("binding the health address {addr}"))?
                .1,
        ),
        None => None,
    };
    let mut written = Written {
        // keeps the transition time of the verdict a previous pod recorded
        condition: match nodes.get(node).await {
            Ok(n) => NodeCondition::from_node(&n),
            Err(e) => {
                tracing::warn!(node, error = %e, "cannot read the node");
                None
            }
        },
        ..Default::default()
    };
    let params = PatchParams::default();
    let mut last_verdict = None;
    loop {
        let verdict = Verdict::of(&HostFacts::read(&cfg.roots), &cfg.shims, cfg.fc_data_size);
        // ready while the node can run at least one of the pool's shims
        runnable.send_replace(!verdict.runnable.is_empty());
        if last_verdict.as_ref() != Some(&verdict) {
            tracing::info!(node, verdict = %verdict.message(), "kata capability of this node");
            last_verdict = Some(verdict.clone());
        }
        let labels = labels_for(&verdict.runnable, cfg.debug);
        let stale = written
            .labels
            .as_ref()
            .is_none_or(|(l, at)| *l != labels || at.elapsed() >= cfg.resync);
        if stale {
            match nodes
                .patch(node, &params, &Patch::Merge(set_and_prune_patch(&labels)))
                .await
            {
                Ok(_) => {
                    tracing::debug!(node, ?labels, "node labelled");
                    written.labels = Some((labels, Instant::now()));
                }
                Err(e) => tracing::warn!(node, error = %e, "cannot label the node, retrying"),
            }
        }
        let desired = NodeCondition::for_verdict(&verdict, written.condition.as_ref(), chrono::Utc::now());
        if written.condition.as_ref().is_none_or(|c| !c.same_state(&desired)) {
            match nodes
                .patch_status(node, &params, &Patch::Strategic(desired.patch()))
                .await
            {
                Ok(_) => {
                    tracing::info!(node, status = %desired.status, reason = %desired.reason, "node condition {} recorded", condition::TYPE);
                    written.condition = Some(desired);
                }
                Err(e) => tracing::warn!(node, error = %e, "cannot record the node condition, retrying"),
            }
        }
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(cfg.check_every) => {}
        }
    }
    let result = clean_up(&client, &nodes, node, &cfg).await;
    if let Some(task) = health_task {
        let _ = task.await;
    }
    result
}

/// On SIGTERM: keep everything during a rollout, otherwise remove our labels and condition.
async fn clean_up(client: &kube::Client, nodes: &Api<Node>, node: &str, cfg: &LabelerConfig) -> anyhow::Result<()> {
    if let Some(owner) = &cfg.owner {
        match rolling(client, owner, nodes, node).await {
            Ok(true) => {
                tracing::info!(node, daemonset = %owner.name, "the DaemonSet still selects this node (rolling update): keeping the labels");
                return Ok(());
            }
            Ok(false) => {}
            // not knowing, the safe side is not to advertise a shim that may be going away
            Err(e) => {
                tracing::warn!(node, error = %e, "cannot tell whether kata stays on this node, removing the labels")
            }
        }
    }
    let params = PatchParams::default();
    nodes
        .patch(
            node,
            &params,
            &Patch::Merge(label_patch(&labels_for(&cfg.shims, cfg.debug), true)),
        )
        .await
        .with_context(|| format!("removing the labels from node {node}"))?;
    nodes
        .patch_status(node, &params, &Patch::Strategic(condition::removal_patch()))
        .await
        .with_context(|| format!("removing the {} condition from node {node}", condition::TYPE))?;
    tracing::info!(node, "node labels and condition removed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shims_parse_and_labels_patch() {
        assert_eq!(
            parse_shims(&["qemu".into(), "fc".into()]).unwrap(),
            vec![Shim::Qemu, Shim::Fc]
        );
        assert!(
            parse_shims(&["kvm".into()])
                .unwrap_err()
                .to_string()
                .contains("unknown shim \"kvm\"")
        );
        assert!(parse_shims(&[]).is_err());
        let l = labels_for(&[Shim::Qemu], true);
        assert_eq!(
            label_patch(&l, false),
            json!({"metadata": {"labels": {shim_label(Shim::Qemu): "true", debug_shim_label(Shim::Qemu): "true"}}})
        );
        assert_eq!(
            label_patch(&l, true),
            json!({"metadata": {"labels": {shim_label(Shim::Qemu): null, debug_shim_label(Shim::Qemu): null}}})
        );
        assert_eq!(labels_for(&[Shim::Fc], false).len(), 1);
    }

    #[test]
    fn other_shims_marks_are_pruned() {
        let p = set_and_prune_patch(&labels_for(&[Shim::Qemu], false));
        let labels = p["metadata"]["labels"].as_object().unwrap();
        assert_eq!(labels[&shim_label(Shim::Qemu)], "true");
        assert_eq!(labels[&shim_label(Shim::Fc)], Value::Null);
        assert_eq!(labels[&debug_shim_label(Shim::Qemu)], Value::Null);
        assert_eq!(labels.len(), 2 * Shim::ALL.len());
    }

    #[test]
    fn a_daemonset_selects_a_node_by_its_node_selector_unless_deleting() {
        let mut ds = DaemonSet {
            spec: Some(Default::default()),
            ..Default::default()
        };
        ds.spec.as_mut().unwrap().template.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            node_selector: Some(BTreeMap::from([("pool".to_string(), "a".to_string())])),
            ..Default::default()
        });
        let node = BTreeMap::from([
            ("pool".to_string(), "a".to_string()),
            ("x".to_string(), "y".to_string()),
        ]);
        assert!(selects_node(&ds, &node));
        assert!(!selects_node(
            &ds,
            &BTreeMap::from([("pool".to_string(), "b".to_string())])
        ));
        ds.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        assert!(!selects_node(&ds, &node));
    }
}
