//! What gardenlet's `gardener/access` component deploys for a shoot, for tests that run the
//! shoot's real gardener-resource-manager: the shoot access secret `gardener-internal` in the
//! shoot namespace (a kubeconfig without a token; the resource manager's token requestor creates
//! the ServiceAccount `kube-system/gardener-internal` in the shoot and writes its token in), and
//! the ManagedResource `shoot-core-gardeneraccess` that binds that ServiceAccount to
//! `cluster-admin` in the shoot (ClusterRoleBinding `gardener.cloud:system:gardener`).

use super::{TestEnv, TestEnvError};
use crate::api::ManagedResource;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

const ACCESS: &str = "gardener-internal";
const MANAGED_RESOURCE: &str = "shoot-core-gardeneraccess";

/// A kubeconfig as gardenlet writes it (`kubernetesutils.NewKubeconfig`): named after the
/// namespace, with an empty token for the token requestor to fill.
fn kubeconfig_without_token(namespace: &str, server: &str, ca_pem: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: {namespace}\nclusters:\n- name: {namespace}\n  cluster:\n    certificate-authority-data: {ca}\n    server: {server}\ncontexts:\n- name: {namespace}\n  context:\n    cluster: {namespace}\n    user: {namespace}\nusers:\n- name: {namespace}\n  user:\n    token: \"\"\n"
    )
}

async fn create<K>(api: &Api<K>, obj: &K) -> Result<(), TestEnvError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deploys gardenlet's shoot access for `shoot` into the seed `namespace`.
pub async fn deploy_gardener_access(seed: &Client, namespace: &str, shoot: &TestEnv) -> Result<(), TestEnvError> {
    let secrets: Api<Secret> = Api::namespaced(seed.clone(), namespace);
    let access: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": ACCESS,
            "labels": {"resources.gardener.cloud/purpose": "token-requestor", "resources.gardener.cloud/class": "shoot"},
            "annotations": {"serviceaccount.resources.gardener.cloud/name": ACCESS,
                            "serviceaccount.resources.gardener.cloud/namespace": "kube-system"}
        },
        "type": "Opaque",
    }))
    .map_err(|e| TestEnvError::Startup(e.to_string()))?;
    let access = Secret {
        data: Some(
            [(
                "kubeconfig".to_string(),
                ByteString(kubeconfig_without_token(namespace, shoot.url(), shoot.ca_pem()).into_bytes()),
            )]
            .into(),
        ),
        ..access
    };
    create(&secrets, &access).await?;

    let binding = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: gardener.cloud:system:gardener\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n- kind: ServiceAccount\n  name: {ACCESS}\n  namespace: kube-system\n"
    );
    let data_secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("managedresource-{MANAGED_RESOURCE}")),
            ..Default::default()
        },
        data: Some(
            [(
                "clusterrolebinding____gardener.cloud_system_gardener.yaml".to_string(),
                ByteString(binding.into_bytes()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    create(&secrets, &data_secret).await?;
    let mr: ManagedResource = serde_json::from_value(json!({
        "apiVersion": "resources.gardener.cloud/v1alpha1", "kind": "ManagedResource",
        "metadata": {"name": MANAGED_RESOURCE, "labels": {"origin": "gardener"}},
        "spec": {"secretRefs": [{"name": format!("managedresource-{MANAGED_RESOURCE}")}], "keepObjects": false}
    }))
    .map_err(|e| TestEnvError::Startup(e.to_string()))?;
    create(&Api::namespaced(seed.clone(), namespace), &mr).await
}
