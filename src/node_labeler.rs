//! `node-labeler`: runs in the shoot next to kata-deploy and marks its node with one label per
//! installed shim, which is what the RuntimeClasses select on. Removes the labels on SIGTERM,
//! when the pool stops using kata (or the shim set changes and the pod is replaced).

use crate::runtime::shutdown::Shutdown;
use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Map, Value, json};
use std::time::Duration;

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

pub async fn run(client: kube::Client, node: &str, labels: &[String], resync: Duration) -> anyhow::Result<()> {
    let labels = parse_labels(labels)?;
    let nodes: Api<Node> = Api::all(client);
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let params = PatchParams::default();
    loop {
        match nodes
            .patch(node, &params, &Patch::Merge(label_patch(&labels, false)))
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
}
