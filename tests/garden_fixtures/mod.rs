//! Garden fixtures of the admission tests: what an operator and a shoot owner create in a garden
//! (registrations, a CloudProfile with machine capabilities, a project with credentials, Shoots).
#![allow(dead_code)]

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub const KATA_API: &str = "kata.runtime.extensions.config.gardener.cloud/v1alpha1";
pub const PROFILE: &str = "kata-it";
pub const DENIED: &str =
    "admission webhook \"shoots.validation.runtime-kata.extensions.gardener.cloud\" denied the request";

pub fn api(
    client: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

pub fn core(client: &kube::Client, kind: &str, plural: &str, ns: Option<&str>) -> Api<DynamicObject> {
    api(client, "core.gardener.cloud", "v1beta1", kind, plural, ns)
}

pub fn shoots(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    core(client, "Shoot", "shoots", Some(ns))
}

pub async fn create(api: &Api<DynamicObject>, value: Value) -> Result<DynamicObject, kube::Error> {
    api.create(&PostParams::default(), &serde_json::from_value(value).expect("object"))
        .await
}

/// What an operator has in the garden: the extension namespaces, registrations for every
/// extension a Shoot needs (ExtensionValidator), and a CloudProfile whose machine types say which
/// of them support nested virtualization.
pub async fn landscape(client: &kube::Client) {
    for ns in ["garden", "extension-admission-runtime-kata"] {
        let _ = Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await;
    }
    for (kind, ty) in [
        ("Infrastructure", "local"),
        ("ControlPlane", "local"),
        ("Worker", "local"),
        ("Network", "calico"),
        ("ContainerRuntime", "kata"),
        ("OperatingSystemConfig", "gardenlinux"),
        ("OperatingSystemConfig", "ubuntu"),
    ] {
        create(
            &core(client, "ControllerRegistration", "controllerregistrations", None),
            json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "ControllerRegistration",
                   "metadata": {"name": format!("{}-{ty}", kind.to_lowercase())},
                   "spec": {"resources": [{"kind": kind, "type": ty}]}}),
        )
        .await
        .unwrap();
    }
    let kata_cri = json!([{"name": "containerd", "containerRuntimes": [{"type": "kata"}]}]);
    create(
        &core(client, "CloudProfile", "cloudprofiles", None),
        json!({
            "apiVersion": "core.gardener.cloud/v1beta1", "kind": "CloudProfile", "metadata": {"name": PROFILE},
            "spec": {
                "type": "local",
                "kubernetes": {"versions": [{"version": "1.33.0"}]},
                "machineCapabilities": [
                    {"name": "architecture", "values": ["amd64"]},
                    {"name": "nestedVirtualization", "values": ["supported", "unsupported"]}
                ],
                "machineImages": [
                    {"name": "gardenlinux", "versions": [{"version": "1877.0.0", "cri": kata_cri}]},
                    {"name": "ubuntu", "versions": [{"version": "24.4.0", "cri": kata_cri}]}
                ],
                "machineTypes": [
                    {"name": "metal", "cpu": "4", "gpu": "0", "memory": "16Gi", "usable": true,
                     "capabilities": {"nestedVirtualization": ["supported"]}},
                    {"name": "small", "cpu": "2", "gpu": "0", "memory": "8Gi", "usable": true}
                ],
                "regions": [{"name": "local", "zones": [{"name": "z1"}]}]
            }
        }),
    )
    .await
    .unwrap();
}

/// A project with its namespace and credentials; returns the namespace.
pub async fn project(client: &kube::Client, name: &str) -> String {
    let ns = format!("garden-{name}");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns, "labels": {
                "project.gardener.cloud/name": name, "gardener.cloud/role": "project"}}}))
            .unwrap(),
        )
        .await
        .unwrap();
    create(
        &core(client, "Project", "projects", None),
        json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Project", "metadata": {"name": name},
               "spec": {"namespace": ns}}),
    )
    .await
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "local"}, "data": {"token": "eA=="}})).unwrap(),
        )
        .await
        .unwrap();
    create(
        &api(
            client,
            "security.gardener.cloud",
            "v1alpha1",
            "CredentialsBinding",
            "credentialsbindings",
            Some(&ns),
        ),
        json!({"apiVersion": "security.gardener.cloud/v1alpha1", "kind": "CredentialsBinding",
               "metadata": {"name": "local"}, "provider": {"type": "local"},
               "credentialsRef": {"apiVersion": "v1", "kind": "Secret", "name": "local", "namespace": ns}}),
    )
    .await
    .unwrap();
    ns
}

pub fn pool(name: &str, machine: &str, image: &str, runtimes: Value) -> Value {
    let version = if image == "ubuntu" { "24.4.0" } else { "1877.0.0" };
    json!({
        "name": name, "minimum": 1, "maximum": 2, "zones": ["z1"],
        "machine": {"type": machine, "image": {"name": image, "version": version}},
        "cri": {"name": "containerd", "containerRuntimes": runtimes}
    })
}

pub fn kata(extra: Value) -> Value {
    let mut config = json!({"apiVersion": KATA_API, "kind": "KataConfiguration"});
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap());
    json!([{"type": "kata", "providerConfig": config}])
}

pub fn shoot(ns: &str, name: &str, workers: Value) -> Value {
    json!({
        "apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "cloudProfile": {"kind": "CloudProfile", "name": PROFILE},
            "region": "local",
            "credentialsBindingName": "local",
            "kubernetes": {"version": "1.33.0"},
            "networking": {"type": "calico", "nodes": "10.0.0.0/16"},
            "provider": {"type": "local", "workers": workers}
        }
    })
}

/// gardener-apiserver reads ValidatingWebhookConfigurations through an informer: wait until it
/// calls ours (a dry-run create of an invalid kata Shoot is denied by it).
pub async fn wait_webhook_active(client: &kube::Client, ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let probe = shoot(
        ns,
        "probe",
        json!([pool("kata", "small", "gardenlinux", kata(json!({})))]),
    );
    loop {
        let pp = PostParams {
            dry_run: true,
            ..Default::default()
        };
        match shoots(client, ns)
            .create(&pp, &serde_json::from_value(probe.clone()).unwrap())
            .await
        {
            Err(kube::Error::Api(s)) if s.message.starts_with(DENIED) => return,
            other if Instant::now() > deadline => panic!(
                "webhook not called after 60s: {other:?}\ngardener-apiserver log tail:\n{}",
                gardener_extension_runtime_kata::testenv::GardenEnv::shared().gardener_apiserver_log_tail()
            ),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The status of a rejected create.
pub fn denial(r: Result<DynamicObject, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected a denial, got {other:?}"),
    }
}
