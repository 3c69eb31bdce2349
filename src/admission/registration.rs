//! The ValidatingWebhookConfiguration in the (virtual) garden that sends kata Shoots to the
//! admission server.

use crate::webhook::Registrar;
use crate::webhook::registration::{
    ClientTarget, FailurePolicy, client_config, namespace_owner, namespace_owner_reference,
};
use crate::webhook::registration::{is_registered, server_side_apply};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, RuleWithOperations, ValidatingWebhook, ValidatingWebhookConfiguration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ObjectMeta};

/// Name of the configuration (Gardener: `gardener-extension-admission-<name>`).
pub const DEFAULT_CONFIGURATION_NAME: &str = "gardener-extension-admission-runtime-kata";
/// The webhook inside it.
pub const WEBHOOK_NAME: &str = "shoots.validation.runtime-kata.extensions.gardener.cloud";
/// gardener-apiserver's ExtensionLabels plugin puts this on every Shoot with a kata pool (before
/// validating webhooks run), so Shoots without kata never reach us.
pub const SHOOT_KATA_LABEL: &str = "containerruntime.extensions.gardener.cloud/kata";
/// Only spec changes are judged: metadata-only updates (finalizers, operation annotations,
/// deletion) never wait on this webhook, whatever its failure policy.
pub const SPEC_CHANGED_EXPRESSION: &str = "request.operation == 'CREATE' || object.spec != oldObject.spec";
const FIELD_MANAGER: &str = "gardener-extension-admission-runtime-kata";

/// Everything that goes into the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ShootRegistration {
    pub configuration_name: String,
    /// The extension's namespace in the garden (`--webhook-config-owner-namespace`): deleting it
    /// removes the configuration.
    pub owner_namespace: Option<String>,
    pub target: ClientTarget,
    pub failure_policy: FailurePolicy,
    pub timeout_seconds: i32,
}

impl ShootRegistration {
    pub fn build(&self, ca_bundle_pem: &str, owner: Option<(&str, &str)>) -> ValidatingWebhookConfiguration {
        ValidatingWebhookConfiguration {
            metadata: ObjectMeta {
                name: Some(self.configuration_name.clone()),
                labels: Some([("app.kubernetes.io/managed-by".to_string(), FIELD_MANAGER.to_string())].into()),
                owner_references: owner.map(|(name, uid)| vec![namespace_owner_reference(name, uid)]),
                ..Default::default()
            },
            webhooks: Some(vec![ValidatingWebhook {
                name: WEBHOOK_NAME.into(),
                admission_review_versions: vec!["v1".into()],
                client_config: client_config(&self.target, ca_bundle_pem),
                failure_policy: Some(self.failure_policy.as_str().into()),
                match_policy: Some("Equivalent".into()),
                match_conditions: Some(vec![MatchCondition {
                    name: "spec-changed".into(),
                    expression: SPEC_CHANGED_EXPRESSION.into(),
                }]),
                namespace_selector: None,
                object_selector: Some(LabelSelector {
                    match_labels: Some([(SHOOT_KATA_LABEL.to_string(), "true".to_string())].into()),
                    ..Default::default()
                }),
                rules: Some(vec![RuleWithOperations {
                    api_groups: Some(vec!["core.gardener.cloud".into()]),
                    api_versions: Some(vec!["v1beta1".into()]),
                    operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                    resources: Some(vec!["shoots".into()]),
                    scope: Some("Namespaced".into()),
                }]),
                side_effects: "None".into(),
                timeout_seconds: Some(self.timeout_seconds),
            }]),
        }
    }
}

/// Keeps the configuration in the garden (server-side apply, forced: we own it).
pub struct ValidatingRegistrar {
    /// A client of the (virtual) garden.
    pub client: kube::Client,
    pub registration: ShootRegistration,
}

impl ValidatingRegistrar {
    /// The whole configuration as it is applied, with its owner looked up.
    async fn desired(&self, ca_bundle_pem: &str) -> Result<serde_json::Value, kube::Error> {
        let owner = namespace_owner(&self.client, self.registration.owner_namespace.as_deref()).await?;
        let object = self
            .registration
            .build(ca_bundle_pem, owner.as_ref().map(|(n, u)| (n.as_str(), u.as_str())));
        Ok(serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": object.metadata,
            "webhooks": object.webhooks,
        }))
    }
}

impl Registrar for ValidatingRegistrar {
    fn kind(&self) -> &'static str {
        "ValidatingWebhookConfiguration"
    }

    fn name(&self) -> &str {
        &self.registration.configuration_name
    }

    fn apply<'a>(&'a self, ca_bundle_pem: &'a str) -> BoxFuture<'a, Result<(), kube::Error>> {
        Box::pin(async move {
            let desired = self.desired(ca_bundle_pem).await?;
            let api: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
            server_side_apply(&api, self.name(), FIELD_MANAGER, &desired, false).await?;
            Ok(())
        })
    }

    fn intact<'a>(&'a self, ca_bundle_pem: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let api: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
            let checked = async {
                let desired = self.desired(ca_bundle_pem).await?;
                is_registered(&api, self.name(), FIELD_MANAGER, &desired).await
            };
            crate::webhook::unknown_is_intact(self.kind(), checked.await)
        })
    }

    fn changes(&self) -> BoxStream<'static, ()> {
        crate::webhook::changes_by_name(
            Api::<ValidatingWebhookConfiguration>::all(self.client.clone()),
            self.name(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kata_shoots_only_spec_changes_only() {
        let r = ShootRegistration {
            configuration_name: DEFAULT_CONFIGURATION_NAME.into(),
            owner_namespace: Some("extension-admission-runtime-kata".into()),
            target: ClientTarget::Url(
                "https://gardener-extension-admission-runtime-kata.garden/webhooks/validate-shoot".into(),
            ),
            failure_policy: FailurePolicy::Fail,
            timeout_seconds: 5,
        };
        let c = r.build("CA", Some(("extension-admission-runtime-kata", "uid-1")));
        assert_eq!(c.metadata.owner_references.as_ref().unwrap()[0].kind, "Namespace");
        let w = &c.webhooks.as_ref().unwrap()[0];
        assert_eq!(w.name, WEBHOOK_NAME);
        assert_eq!(w.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(w.timeout_seconds, Some(5));
        assert_eq!(w.side_effects, "None");
        assert_eq!(
            w.object_selector.as_ref().unwrap().match_labels.as_ref().unwrap()[SHOOT_KATA_LABEL],
            "true"
        );
        assert_eq!(
            w.match_conditions.as_ref().unwrap()[0].expression,
            SPEC_CHANGED_EXPRESSION
        );
        let rule = &w.rules.as_ref().unwrap()[0];
        assert_eq!(rule.resources.as_ref().unwrap(), &vec!["shoots".to_string()]);
        assert_eq!(
            rule.api_groups.as_ref().unwrap(),
            &vec!["core.gardener.cloud".to_string()]
        );
        assert_eq!(w.client_config.ca_bundle.as_ref().unwrap().0, b"CA");
        assert!(
            w.client_config
                .url
                .as_ref()
                .unwrap()
                .ends_with("/webhooks/validate-shoot")
        );
    }
}
