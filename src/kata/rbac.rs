//! The installer's identity in the shoot, with exactly what kata-deploy 4.1.0 calls in our
//! configuration: nodes get/patch (its labels and start-up taints), daemonsets get/list/watch (on
//! SIGTERM: does its own or another kata-deploy DaemonSet still select the node). The node
//! labeler, in the same pod, needs nodes get/patch, nodes/status patch (its `KataRuntimeReady`
//! condition) and daemonsets get.
//!
//! Not granted: `nodes/proxy` (the whole kubelet API of every node). kata-deploy reads the
//! kubelet's configz through it only for guest pull or the EROFS snapshotter, neither of which
//! we configure, and only to print a warning when that fails.
//!
//! RBAC cannot say "only your own node", so a ValidatingAdmissionPolicy does: requests of this
//! ServiceAccount may change only the node named in their token, which the kubelet binds to the
//! pod and its node (`authentication.kubernetes.io/node-name`).

use super::names::*;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec, ValidatingAdmissionPolicySpec, Validation,
};
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
            rule("", &["nodes/status"], &["patch"]),
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

/// The ServiceAccount's user name as the apiserver sees it.
pub fn service_account_user() -> String {
    format!("system:serviceaccount:{SHOOT_NAMESPACE}:{SERVICE_ACCOUNT}")
}

/// Node writes of the installer's ServiceAccount must target the node its token is bound to.
pub fn own_node_policy() -> ValidatingAdmissionPolicy {
    ValidatingAdmissionPolicy {
        metadata: meta(OWN_NODE_POLICY, None),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".into()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(vec![NamedRuleWithOperations {
                    api_groups: Some(vec!["".into()]),
                    api_versions: Some(vec!["v1".into()]),
                    // a PATCH is admitted as UPDATE
                    operations: Some(vec!["UPDATE".into(), "DELETE".into()]),
                    resources: Some(vec!["nodes".into(), "nodes/status".into()]),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            match_conditions: Some(vec![MatchCondition {
                name: "kata-installer".into(),
                expression: format!("request.userInfo.username == '{}'", service_account_user()),
            }]),
            validations: Some(vec![Validation {
                expression: "has(request.userInfo.extra) && \
                             'authentication.kubernetes.io/node-name' in request.userInfo.extra && \
                             request.userInfo.extra['authentication.kubernetes.io/node-name'].exists(n, n == request.name)"
                    .into(),
                message: Some("the kata installer may change only the node its pod runs on".into()),
                reason: Some("Forbidden".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn own_node_policy_binding() -> ValidatingAdmissionPolicyBinding {
    ValidatingAdmissionPolicyBinding {
        metadata: meta(OWN_NODE_POLICY, None),
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name: Some(OWN_NODE_POLICY.into()),
            validation_actions: Some(vec!["Deny".into()]),
            ..Default::default()
        }),
    }
}
