//! The node condition `KataRuntimeReady`: the labeler's verdict where a person looks first
//! (`kubectl describe node`). Written through `nodes/status` with a strategic merge patch keyed on
//! the condition type, so the kubelet's own conditions are never touched.

use super::capability::Verdict;
use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Node;
use serde_json::{Value, json};

pub const TYPE: &str = "KataRuntimeReady";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCondition {
    pub status: String,
    pub reason: String,
    pub message: String,
    /// RFC 3339, seconds.
    pub last_transition_time: String,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl NodeCondition {
    /// The condition for a verdict; the transition time moves only when the status changes.
    pub fn for_verdict(verdict: &Verdict, previous: Option<&NodeCondition>, now: DateTime<Utc>) -> Self {
        let status = if verdict.all_runnable() { "True" } else { "False" };
        let last_transition_time = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => rfc3339(now),
        };
        Self {
            status: status.into(),
            reason: verdict.reason().into(),
            message: verdict.message(),
            last_transition_time,
        }
    }

    /// Our condition as the node carries it, if it does.
    pub fn from_node(node: &Node) -> Option<Self> {
        Self::from_conditions(node.status.as_ref()?.conditions.as_deref()?)
    }

    /// Our condition among a node's conditions, if it is there.
    pub fn from_conditions(conditions: &[k8s_openapi::api::core::v1::NodeCondition]) -> Option<Self> {
        let c = conditions.iter().find(|c| c.type_ == TYPE)?;
        Some(Self {
            status: c.status.clone(),
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
            last_transition_time: c
                .last_transition_time
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
        })
    }

    /// Whether writing `other` would tell a reader anything new.
    pub fn same_state(&self, other: &NodeCondition) -> bool {
        self.status == other.status && self.reason == other.reason && self.message == other.message
    }

    /// Strategic merge patch for `nodes/status` that sets this condition.
    pub fn patch(&self) -> Value {
        json!({"status": {"conditions": [{
            "type": TYPE,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastHeartbeatTime": rfc3339(Utc::now()),
            "lastTransitionTime": self.last_transition_time,
        }]}})
    }
}

/// Strategic merge patch for `nodes/status` that removes the condition (kata leaves the node).
pub fn removal_patch() -> Value {
    json!({"status": {"conditions": [{"type": TYPE, "$patch": "delete"}]}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kata_config::Shim;
    use crate::node_labeler::capability::Missing;

    fn verdict(blocked: bool) -> Verdict {
        Verdict {
            runnable: if blocked { vec![] } else { vec![Shim::Qemu] },
            blocked: if blocked {
                vec![(Shim::Qemu, Missing::KvmUnavailable)]
            } else {
                vec![]
            },
            notes: vec![],
            pool_shortfall: None,
        }
    }

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().to_utc();
        let t1 = DateTime::parse_from_rfc3339("2026-01-01T01:00:00Z").unwrap().to_utc();
        let bad = NodeCondition::for_verdict(&verdict(true), None, t0);
        assert_eq!((bad.status.as_str(), bad.reason.as_str()), ("False", "KVMUnavailable"));
        assert_eq!(bad.last_transition_time, "2026-01-01T00:00:00Z");
        let still_bad = NodeCondition::for_verdict(&verdict(true), Some(&bad), t1);
        assert_eq!(still_bad.last_transition_time, bad.last_transition_time);
        assert!(still_bad.same_state(&bad));
        let good = NodeCondition::for_verdict(&verdict(false), Some(&bad), t1);
        assert_eq!(
            (good.status.as_str(), good.reason.as_str()),
            ("True", "AllShimsRunnable")
        );
        assert_eq!(good.last_transition_time, "2026-01-01T01:00:00Z");
        assert!(!good.same_state(&bad));
    }

    #[test]
    fn patches_are_keyed_on_the_condition_type() {
        let c = NodeCondition::for_verdict(&verdict(false), None, Utc::now());
        let p = c.patch();
        assert_eq!(p["status"]["conditions"][0]["type"], TYPE);
        assert_eq!(p["status"]["conditions"][0]["message"], "can run: qemu");
        assert_eq!(removal_patch()["status"]["conditions"][0]["$patch"], "delete");
    }
}
