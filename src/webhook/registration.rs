//! The MutatingWebhookConfiguration that sends OperatingSystemConfigs to this extension.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use std::fmt;

/// Name of the MutatingWebhookConfiguration (Gardener: `gardener-extension-<name>`).
pub const DEFAULT_CONFIGURATION_NAME: &str = "gardener-extension-runtime-kata";
/// The webhook inside it (Gardener: `<webhook>.<name>.extensions.gardener.cloud`).
pub const WEBHOOK_NAME: &str = "osc.runtime-kata.extensions.gardener.cloud";
/// The label gardenlet puts on pools' objects when they use kata (newer Gardener versions only).
pub const CONTAINER_RUNTIME_LABEL: &str = "containerruntime.worker.gardener.cloud/kata";
pub const FIELD_MANAGER: &str = "gardener-extension-runtime-kata";

/// What the apiserver does when the webhook cannot be reached or answers with an error.
///
/// The default is `Ignore`: the webhook only adds Firecracker's devmapper prerequisites to kata-fc
/// pools. With `Fail`, an outage of this extension would block the OperatingSystemConfigs of every
/// shoot on the seed (the namespace selector has to cover all shoot namespaces, because Gardener
/// v1.149 labels neither namespaces nor OSCs with the container runtime), i.e. node updates of
/// shoots that do not use kata at all. With `Ignore` a missed mutation is repaired on the next OSC
/// update or resync, because gardenlet rewrites OSCs on every shoot reconciliation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FailurePolicy {
    #[default]
    Ignore,
    Fail,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Ignore => "Ignore",
            FailurePolicy::Fail => "Fail",
        }
    }
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FailurePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Ignore" | "ignore" => Ok(FailurePolicy::Ignore),
            "Fail" | "fail" => Ok(FailurePolicy::Fail),
            other => Err(format!("unknown failure policy {other:?} (Ignore or Fail)")),
        }
    }
}

/// How the apiserver reaches the webhook server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientTarget {
    /// The Service `name` in `namespace` on `port`, at `path` (Gardener's `service` mode).
    Service {
        namespace: String,
        name: String,
        port: u16,
        path: String,
    },
    /// A URL (Gardener's `url` mode, for local runs and tests).
    Url(String),
}

/// Everything that goes into the webhook configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Registration {
    pub configuration_name: String,
    /// The extension's namespace: the configuration's owner, so that deleting the extension's
    /// namespace lets the garbage collector remove a configuration that would otherwise keep
    /// intercepting every OSC write of the seed.
    pub owner_namespace: Option<String>,
    pub target: ClientTarget,
    pub failure_policy: FailurePolicy,
    pub timeout_seconds: i32,
    /// Select only OSCs labelled `containerruntime.worker.gardener.cloud/kata=true`.
    pub object_selector: bool,
    pub namespace_selector: LabelSelector,
}

/// Shoot namespaces on a seed: `gardener.cloud/role=shoot`.
pub fn shoot_namespace_selector() -> LabelSelector {
    LabelSelector {
        match_labels: Some([("gardener.cloud/role".to_string(), "shoot".to_string())].into()),
        ..Default::default()
    }
}

impl Registration {
    /// The MutatingWebhookConfiguration with `ca_bundle_pem` as the trusted CAs.
    /// `owner`: the extension namespace's (name, uid), when known.
    pub fn build(&self, ca_bundle_pem: &str, owner: Option<(&str, &str)>) -> MutatingWebhookConfiguration {
        let client_config = client_config(&self.target, ca_bundle_pem);
        MutatingWebhookConfiguration {
            metadata: ObjectMeta {
                name: Some(self.configuration_name.clone()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        "gardener-extension-runtime-kata".to_string(),
                    )]
                    .into(),
                ),
                owner_references: owner.map(|(name, uid)| vec![namespace_owner_reference(name, uid)]),
                ..Default::default()
            },
            webhooks: Some(vec![MutatingWebhook {
                name: WEBHOOK_NAME.into(),
                admission_review_versions: vec!["v1".into()],
                client_config,
                failure_policy: Some(self.failure_policy.as_str().into()),
                match_policy: Some("Equivalent".into()),
                namespace_selector: Some(self.namespace_selector.clone()),
                object_selector: self.object_selector.then(|| LabelSelector {
                    match_labels: Some([(CONTAINER_RUNTIME_LABEL.to_string(), "true".to_string())].into()),
                    ..Default::default()
                }),
                reinvocation_policy: Some("Never".into()),
                rules: Some(vec![RuleWithOperations {
                    api_groups: Some(vec!["extensions.gardener.cloud".into()]),
                    api_versions: Some(vec!["v1alpha1".into()]),
                    operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                    resources: Some(vec!["operatingsystemconfigs".into()]),
                    scope: Some("Namespaced".into()),
                }]),
                side_effects: "None".into(),
                timeout_seconds: Some(self.timeout_seconds),
                match_conditions: None,
            }]),
        }
    }

    /// The whole configuration as it is applied, with its owner looked up.
    pub async fn desired(&self, client: &kube::Client, ca_bundle_pem: &str) -> Result<serde_json::Value, kube::Error> {
        let owner = namespace_owner(client, self.owner_namespace.as_deref()).await?;
        let object = self.build(ca_bundle_pem, owner.as_ref().map(|(n, u)| (n.as_str(), u.as_str())));
        Ok(serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": object.metadata,
            "webhooks": object.webhooks,
        }))
    }
}

/// Server-side applies the whole configuration `desired` as `field_manager` (forced: we own it);
/// `dry_run` only shows what the object would become.
pub async fn server_side_apply<K>(
    api: &Api<K>,
    name: &str,
    field_manager: &str,
    desired: &serde_json::Value,
    dry_run: bool,
) -> Result<K, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + fmt::Debug,
{
    let mut params = PatchParams::apply(field_manager).force();
    params.dry_run = dry_run;
    api.patch(name, &params, &Patch::Apply(desired)).await
}

/// Whether the stored configuration is exactly what applying `desired` would make of it, over
/// everything we set: the webhooks (rules, selectors, match conditions, failure policy, timeout,
/// client config, CA bundle, ...), our labels and the owner. A dry run of the apply gives the
/// apiserver's own defaulting, so defaults never count as drift; fields only others set do not count.
pub async fn is_registered<K>(
    api: &Api<K>,
    name: &str,
    field_manager: &str,
    desired: &serde_json::Value,
) -> Result<bool, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + fmt::Debug,
{
    let Some(current) = api.get_opt(name).await? else {
        return Ok(false);
    };
    let would_be = server_side_apply(api, name, field_manager, desired, true).await?;
    Ok(owned_view(&current) == owned_view(&would_be))
}

fn owned_view<K: serde::Serialize>(object: &K) -> serde_json::Value {
    let v = serde_json::to_value(object).unwrap_or_default();
    serde_json::json!({
        "webhooks": v["webhooks"],
        "labels": v["metadata"]["labels"],
        "ownerReferences": v["metadata"]["ownerReferences"],
    })
}

/// How the apiserver reaches the server, trusting `ca_bundle_pem`.
pub fn client_config(target: &ClientTarget, ca_bundle_pem: &str) -> WebhookClientConfig {
    let ca_bundle = Some(ByteString(ca_bundle_pem.as_bytes().to_vec()));
    match target {
        ClientTarget::Service {
            namespace,
            name,
            port,
            path,
        } => WebhookClientConfig {
            service: Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                port: Some(i32::from(*port)),
                path: Some(path.clone()),
            }),
            ca_bundle,
            url: None,
        },
        ClientTarget::Url(url) => WebhookClientConfig {
            url: Some(url.clone()),
            ca_bundle,
            service: None,
        },
    }
}

/// A webhook configuration owned by a Namespace is garbage-collected with it.
pub fn namespace_owner_reference(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    }
}

/// `(name, uid)` of the owner namespace, if given and present.
pub async fn namespace_owner(
    client: &kube::Client,
    namespace: Option<&str>,
) -> Result<Option<(String, String)>, kube::Error> {
    let Some(ns) = namespace else { return Ok(None) };
    match Api::<Namespace>::all(client.clone()).get_opt(ns).await? {
        Some(n) => Ok(n.metadata.uid.map(|uid| (ns.to_string(), uid))),
        None => {
            tracing::warn!(namespace = %ns, "the owner namespace does not exist: registering the webhook without an owner");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_mode_configuration() {
        let r = Registration {
            configuration_name: DEFAULT_CONFIGURATION_NAME.into(),
            owner_namespace: Some("extension-kata".into()),
            target: ClientTarget::Service {
                namespace: "extension-kata".into(),
                name: "gardener-extension-runtime-kata".into(),
                port: 443,
                path: "/webhooks/operatingsystemconfig".into(),
            },
            failure_policy: FailurePolicy::default(),
            timeout_seconds: 10,
            object_selector: false,
            namespace_selector: shoot_namespace_selector(),
        };
        let c = r.build("CA", Some(("extension-kata", "uid-1")));
        let owner = &c.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.api_version.as_str(),
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str()
            ),
            ("v1", "Namespace", "extension-kata", "uid-1")
        );
        let w = &c.webhooks.as_ref().unwrap()[0];
        assert_eq!(w.name, WEBHOOK_NAME);
        assert_eq!(w.failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(w.side_effects, "None");
        assert_eq!(w.timeout_seconds, Some(10));
        assert_eq!(w.admission_review_versions, vec!["v1"]);
        assert!(w.object_selector.is_none());
        let svc = w.client_config.service.as_ref().unwrap();
        assert_eq!(
            (svc.port, svc.path.as_deref()),
            (Some(443), Some("/webhooks/operatingsystemconfig"))
        );
        assert_eq!(w.client_config.ca_bundle.as_ref().unwrap().0, b"CA");
        let rule = &w.rules.as_ref().unwrap()[0];
        assert_eq!(
            rule.operations.as_ref().unwrap(),
            &vec!["CREATE".to_string(), "UPDATE".to_string()]
        );
        assert_eq!(
            w.namespace_selector.as_ref().unwrap().match_labels.as_ref().unwrap()["gardener.cloud/role"],
            "shoot"
        );
    }

    #[test]
    fn url_mode_and_object_selector() {
        let r = Registration {
            configuration_name: "x".into(),
            owner_namespace: None,
            target: ClientTarget::Url("https://127.0.0.1:9443/webhooks/operatingsystemconfig".into()),
            failure_policy: FailurePolicy::Fail,
            timeout_seconds: 10,
            object_selector: true,
            namespace_selector: shoot_namespace_selector(),
        };
        let c = r.build("CA", None);
        assert!(c.metadata.owner_references.is_none());
        let w = &c.webhooks.as_ref().unwrap()[0];
        assert!(w.client_config.service.is_none());
        assert_eq!(w.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(
            w.object_selector.as_ref().unwrap().match_labels.as_ref().unwrap()[CONTAINER_RUNTIME_LABEL],
            "true"
        );
        assert_eq!("ignore".parse::<FailurePolicy>().unwrap(), FailurePolicy::Ignore);
        assert!("Maybe".parse::<FailurePolicy>().is_err());
    }
}
