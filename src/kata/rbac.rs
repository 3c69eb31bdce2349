//! The installer's identity in the shoot: what kata-deploy 4.1.0 needs (nodes get/patch for its
//! labels, nodes/proxy get for the kubelet's configz, daemonsets get/list/watch to know whether its
//! own DaemonSet still selects the node during cleanup). The node labeler needs nodes get/patch.

use super::names::*;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::api::ObjectMeta;
use std::collections::BTreeMap;

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.into(), MANAGED_BY.into())])),
        ..Default::default()
    }
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn service_account() -> ServiceAccount {
    ServiceAccount {
        metadata: meta(SERVICE_ACCOUNT, Some(SHOOT_NAMESPACE)),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

pub fn cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: meta(CLUSTER_ROLE, None),
        rules: Some(vec![
            rule("", &["nodes"], &["get", "patch"]),
            rule("", &["nodes/proxy"], &["get"]),
            rule("apps", &["daemonsets"], &["get", "list", "watch"]),
        ]),
        ..Default::default()
    }
}

pub fn cluster_role_binding() -> ClusterRoleBinding {
    let mut metadata = meta(CLUSTER_ROLE, None);
    // `roleRef` is immutable
    metadata.annotations = Some(BTreeMap::from([(DELETE_ON_INVALID_UPDATE.into(), "true".into())]));
    ClusterRoleBinding {
        metadata,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: CLUSTER_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: SERVICE_ACCOUNT.into(),
            namespace: Some(SHOOT_NAMESPACE.into()),
            ..Default::default()
        }]),
    }
}
