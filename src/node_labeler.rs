//! `node-labeler`: runs in the shoot next to kata-deploy and marks its node with one label per
//! installed shim, which is what the RuntimeClasses select on.
//!
//! On start it also removes the marks of shims its pool no longer has (a rollout after the shim
//! set changed). On SIGTERM it removes its marks only when kata is going away from the node: as
//! kata-deploy 4.1 does for its own cleanup, it keeps them while its DaemonSet still exists and
//! selects the node, because then the pod is only being replaced and kata stays installed.

use crate::api::kata_config::Shim;
use crate::kata::names::{debug_shim_label, shim_label};
use crate::runtime::shutdown::Shutdown;
use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// The DaemonSet whose pod this is.
#[derive(Clone, Debug)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
}

pub fn parse_labels(labels: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    labels
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("label {l:?} is not key=value"),
        })
        .collect()
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

pub async fn run(
    client: kube::Client,
    node: &str,
    labels: &[String],
    owner: Option<Owner>,
    resync: Duration,
) -> anyhow::Result<()> {
    let labels = parse_labels(labels)?;
    let nodes: Api<Node> = Api::all(client.clone());
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let params = PatchParams::default();
    loop {
        match nodes
            .patch(node, &params, &Patch::Merge(set_and_prune_patch(&labels)))
            .await
        {
            Ok(_) => tracing::info!(node, "node labelled"),
            Err(e) => tracing::warn!(node, error = %e, "cannot label the node, retrying"),
        }
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(resync) => {}
        }
    }
    if let Some(owner) = &owner {
        match rolling(&client, owner, &nodes, node).await {
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
    nodes
        .patch(node, &params, &Patch::Merge(label_patch(&labels, true)))
        .await
        .with_context(|| format!("removing the labels from node {node}"))?;
    tracing::info!(node, "node labels removed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_and_patch() {
        let l = parse_labels(&["a/b=true".into(), "c=".into()]).unwrap();
        assert_eq!(
            label_patch(&l, false),
            json!({"metadata": {"labels": {"a/b": "true", "c": ""}}})
        );
        assert_eq!(
            label_patch(&l, true),
            json!({"metadata": {"labels": {"a/b": null, "c": null}}})
        );
        assert!(parse_labels(&["novalue".into()]).is_err());
    }

    #[test]
    fn other_shims_marks_are_pruned() {
        let l = parse_labels(&[format!("{}=true", shim_label(Shim::Qemu))]).unwrap();
        let p = set_and_prune_patch(&l);
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
