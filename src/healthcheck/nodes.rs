//! What the shoot's kata nodes say about themselves: the node-labeler's `KataRuntimeReady`
//! condition, read from the shoot and judged per pool. Pure apart from [`read`].
//!
//! A node counts only while the kubelet reports it `Ready` (a node that is down or leaving is the
//! Worker's business, and its condition is stale). `False` means a shim of the pool cannot run
//! there; the first minutes of that are a node still settling (its thin-pool unit retries every
//! minute). `True` with [`SMALLER_POOL`] is not a failure: fc runs with a smaller thin-pool than
//! `devmapper.dataSize` (the default 100Gi on a 50Gi disk does that), so it is reported but
//! leaves the pool healthy.

use crate::api::POOL_LABEL;
use crate::kata::names::KATA_NODE_LABEL;
use crate::node_labeler::capability::{Missing, PoolShortfall};
use crate::node_labeler::condition::NodeCondition;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::{Api, ListParams};
use serde::Deserialize;
use std::time::Duration;

pub const SMALLER_POOL: &str = PoolShortfall::REASON;
/// How long a node may say `False` before it counts against the pool.
pub const SETTLE: Duration = Duration::from_secs(5 * 60);
/// A page is held whole before it is decoded (a node with its image list is 5–10 KiB), and
/// several shoots are read at once: small pages.
const PAGE_SIZE: u32 = 50;

/// One kata node, reduced to what the verdict needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KataNode {
    pub name: String,
    pub pool: String,
    /// The kubelet's `Ready` is `True` and the node is not being deleted.
    pub up: bool,
    /// `KataRuntimeReady`, if the node-labeler wrote it yet.
    pub kata: Option<KataCondition>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KataCondition {
    pub status: String,
    pub reason: String,
    pub message: String,
    /// Time since `lastTransitionTime` (zero if it is missing).
    pub since_transition: Duration,
}

/// A Node as the verdict reads it: decoding skips its images, addresses and node info (most of
/// a node's size) instead of allocating them.
#[derive(Resource, Deserialize, Clone, Debug)]
#[resource(inherit = "Node")]
pub struct NodeView {
    pub metadata: ObjectMeta,
    #[serde(default)]
    status: NodeViewStatus,
}

#[derive(Deserialize, Clone, Debug, Default)]
struct NodeViewStatus {
    #[serde(default)]
    conditions: Vec<k8s_openapi::api::core::v1::NodeCondition>,
}

impl KataNode {
    /// `None` for a node of no pool.
    pub fn from_view(node: &NodeView, now: k8s_openapi::jiff::Timestamp) -> Option<Self> {
        let pool = node.metadata.labels.as_ref()?.get(POOL_LABEL)?.clone();
        let conditions = &node.status.conditions;
        let ready = conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        let kata = NodeCondition::from_conditions(conditions).map(|c| KataCondition {
            since_transition: c
                .last_transition_time
                .parse::<k8s_openapi::jiff::Timestamp>()
                .ok()
                .and_then(|t| Duration::try_from(now.duration_since(t)).ok())
                .unwrap_or_default(),
            status: c.status,
            reason: c.reason,
            message: c.message,
        });
        Some(Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            pool,
            up: ready && node.metadata.deletion_timestamp.is_none(),
            kata,
        })
    }
}

/// The pool's nodes, sorted into what the health condition says about them. Each entry is
/// `node <name>: <the node's own message>`; nothing in them changes with time alone, so an
/// unchanged shoot writes no new condition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolNodes {
    /// Up nodes that carry the condition.
    pub judged: usize,
    /// `False` for longer than [`SETTLE`].
    pub failing: Vec<String>,
    /// `False` for less.
    pub settling: Vec<String>,
    /// `True`, with a thin-pool smaller than configured.
    pub smaller_pools: Vec<String>,
    /// A failing node's machine offers no virtualization: the pool's machine type must change.
    pub configuration_problem: bool,
}

pub fn judge(nodes: &[KataNode], pool: &str) -> PoolNodes {
    let mut out = PoolNodes::default();
    let mut of_pool: Vec<&KataNode> = nodes.iter().filter(|n| n.pool == pool && n.up).collect();
    of_pool.sort_by(|a, b| a.name.cmp(&b.name));
    for node in of_pool {
        let Some(kata) = &node.kata else { continue };
        out.judged += 1;
        let said = format!("node {}: {}", node.name, kata.message);
        match kata.status.as_str() {
            "True" if kata.reason == SMALLER_POOL => out.smaller_pools.push(said),
            "True" => {}
            _ if kata.since_transition < SETTLE => out.settling.push(said),
            _ => {
                out.configuration_problem |= kata.reason == Missing::VirtualizationUnsupported.reason();
                out.failing.push(said);
            }
        }
    }
    out
}

/// The kata nodes of a shoot (those Gardener labelled for the kata container runtime).
pub async fn read(shoot: kube::Client) -> Result<Vec<KataNode>, kube::Error> {
    let api: Api<NodeView> = Api::all(shoot);
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut params = ListParams::default()
        .labels(&format!("{KATA_NODE_LABEL}=true"))
        .limit(PAGE_SIZE);
    let mut out = Vec::new();
    loop {
        let page = api.list(&params).await?;
        out.extend(page.items.iter().filter_map(|n| KataNode::from_view(n, now)));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_labeler::condition::TYPE as KATA_RUNTIME_READY;
    use serde_json::json;

    fn node(name: &str, pool: &str, ready: &str, kata: Option<(&str, &str, i64)>) -> NodeView {
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut conditions = vec![json!({"type": "Ready", "status": ready})];
        if let Some((status, reason, minutes_ago)) = kata {
            let at = now - k8s_openapi::jiff::SignedDuration::from_mins(minutes_ago);
            conditions.push(json!({"type": KATA_RUNTIME_READY, "status": status, "reason": reason,
                "message": format!("{reason} on {name}"), "lastTransitionTime": at.to_string()}));
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {POOL_LABEL: pool, KATA_NODE_LABEL: "true"}},
            "status": {"conditions": conditions, "images": [{"names": ["x"], "sizeBytes": 1}], "nodeInfo": {}}
        }))
        .unwrap()
    }

    fn kata_nodes(nodes: &[NodeView]) -> Vec<KataNode> {
        let now = k8s_openapi::jiff::Timestamp::now();
        nodes.iter().filter_map(|n| KataNode::from_view(n, now)).collect()
    }

    #[test]
    fn each_node_counts_for_its_own_pool_by_what_it_says() {
        let nodes = kata_nodes(&[
            node("a-3", "a", "True", Some(("False", "DevmapperPoolMissing", 30))),
            node("a-1", "a", "True", Some(("True", "AllShimsRunnable", 30))),
            node("a-2", "a", "True", Some(("True", SMALLER_POOL, 30))),
            node("a-4", "a", "True", Some(("False", "KVMUnavailable", 1))),
            node("a-5", "a", "True", None),
            node("a-6", "a", "False", Some(("False", "KVMUnavailable", 30))),
            node("b-1", "b", "True", Some(("False", "VirtualizationUnsupported", 30))),
        ]);
        let a = judge(&nodes, "a");
        assert_eq!(a.judged, 4, "a-5 has no condition yet, a-6 is down");
        assert_eq!(a.failing, vec!["node a-3: DevmapperPoolMissing on a-3"]);
        assert_eq!(a.settling, vec!["node a-4: KVMUnavailable on a-4"]);
        assert_eq!(a.smaller_pools, vec![format!("node a-2: {SMALLER_POOL} on a-2")]);
        assert!(!a.configuration_problem);
        let b = judge(&nodes, "b");
        assert_eq!(b.failing.len(), 1);
        assert!(b.configuration_problem, "a machine type without nested virtualization");
        assert_eq!(judge(&nodes, "c"), PoolNodes::default());
        assert_eq!(NodeView::plural(&()), "nodes", "listed as Nodes");
    }

    #[test]
    fn a_node_being_deleted_or_outside_every_pool_is_not_judged() {
        let mut leaving = node("a-1", "a", "True", Some(("False", "KVMUnavailable", 30)));
        leaving.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        let mut poolless = node("x", "a", "True", None);
        poolless.metadata.labels.as_mut().unwrap().remove(POOL_LABEL);
        let nodes = kata_nodes(&[leaving, poolless]);
        assert_eq!(nodes.len(), 1);
        assert_eq!(judge(&nodes, "a"), PoolNodes::default());
    }
}
