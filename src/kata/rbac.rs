//! The installer's identity in the shoot, with exactly what kata-deploy 4.1.0 calls in our
//! configuration: nodes get/patch (its labels; we set no start-up taints), daemonsets get/list/watch (on
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
//! pod and its node (`authentication.kubernetes.io/node-name`), and on it only the installer's own
//! label keys and node condition (not taints, not the labels the kubelet itself may not set).

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

/// Label keys the installer writes: kata-deploy's `katacontainers.io/kata-runtime` and per-install
/// marker `kata-deploy.katacontainers.io/*`, the node-labeler's `kata.runtime.extensions.gardener.cloud/*`.
const OWN_LABEL_KEY: &str = "(k == 'katacontainers.io/kata-runtime' || k.startsWith('kata-deploy.katacontainers.io/') || k.startsWith('kata.runtime.extensions.gardener.cloud/'))";

/// A write of `nodes/status` (the field is absent for the node object itself).
const STATUS_REQUEST: &str = "(has(request.subResource) && request.subResource == 'status')";

/// `object.<path>` equals `oldObject.<path>`, absent on both counting as equal.
fn unchanged(path: &str) -> String {
    format!(
        "(has(object.{path}) == has(oldObject.{path}) && (!has(object.{path}) || object.{path} == oldObject.{path}))"
    )
}

/// Node status fields besides the conditions, in every Kubernetes version shoots run.
const STATUS_FIELDS: [&str; 10] = [
    "capacity",
    "allocatable",
    "phase",
    "addresses",
    "daemonEndpoints",
    "nodeInfo",
    "images",
    "volumesInUse",
    "volumesAttached",
    "config",
];

/// What the installer may do to a node, as CEL validations: only its own node (the node named in
/// its token), never delete it, on the node object only the label keys above (no taints, no other
/// labels such as `node-role.kubernetes.io/*` or `node-restriction.kubernetes.io/*`, no
/// annotations, finalizers or owners), and in its status only the `KataRuntimeReady` condition.
/// The kubelet itself may not do more.
fn own_node_validations() -> Vec<Validation> {
    let forbidden = |expression: String, message: &str| Validation {
        expression,
        message: Some(message.into()),
        reason: Some("Forbidden".into()),
        ..Default::default()
    };
    let ours_changed_only = format!(
        "(!has(object.metadata.labels) || object.metadata.labels.all(k, {OWN_LABEL_KEY} || (has(oldObject.metadata.labels) && k in oldObject.metadata.labels && oldObject.metadata.labels[k] == object.metadata.labels[k]))) && \
         (!has(oldObject.metadata.labels) || oldObject.metadata.labels.all(k, {OWN_LABEL_KEY} || (has(object.metadata.labels) && k in object.metadata.labels)))"
    );
    let node_object = [
        "spec",
        "metadata.annotations",
        "metadata.finalizers",
        "metadata.ownerReferences",
    ]
    .iter()
    .map(|p| unchanged(p))
    .chain([ours_changed_only])
    .collect::<Vec<_>>()
    .join(" && ");
    let condition = "c.type == 'KataRuntimeReady'";
    let other_conditions_unchanged = format!(
        "(!has(object.status.conditions) || object.status.conditions.all(c, {condition} || (has(oldObject.status.conditions) && oldObject.status.conditions.exists(o, o == c)))) && \
         (!has(oldObject.status.conditions) || oldObject.status.conditions.all(c, {condition} || (has(object.status.conditions) && object.status.conditions.exists(n, n == c))))"
    );
    let node_status = STATUS_FIELDS
        .iter()
        .map(|f| unchanged(&format!("status.{f}")))
        .chain([other_conditions_unchanged])
        .collect::<Vec<_>>()
        .join(" && ");
    vec![
        forbidden(
            "has(request.userInfo.extra) && \
             'authentication.kubernetes.io/node-name' in request.userInfo.extra && \
             request.userInfo.extra['authentication.kubernetes.io/node-name'].exists(n, n == request.name)"
                .into(),
            "the kata installer may change only the node its pod runs on",
        ),
        forbidden(
            "request.operation != 'DELETE'".into(),
            "the kata installer may not delete nodes",
        ),
        forbidden(
            format!("request.operation == 'DELETE' || {STATUS_REQUEST} || ({node_object})"),
            "the kata installer may change only the labels katacontainers.io/kata-runtime, kata-deploy.katacontainers.io/* and kata.runtime.extensions.gardener.cloud/* of its node",
        ),
        forbidden(
            format!("request.operation == 'DELETE' || !{STATUS_REQUEST} || ({node_status})"),
            "the kata installer may change only the KataRuntimeReady condition of its node's status",
        ),
    ]
}

/// Node writes of the installer's ServiceAccount: see [`own_node_validations`].
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
            validations: Some(own_node_validations()),
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
