//! The garden admission webhook behind a real gardener-apiserver: Shoots, CloudProfiles and
//! Projects are real API objects, and gardener-apiserver's ValidatingAdmissionWebhook plugin calls
//! the webhook exactly as in a landscape.

use gardener_extension_runtime_kata::testenv::GardenEnv;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};

fn garden_api(client: &kube::Client, kind: &str, plural: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("core.gardener.cloud", "v1beta1", kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

async fn create(api: &Api<DynamicObject>, value: Value) -> Result<DynamicObject, kube::Error> {
    let obj: DynamicObject = serde_json::from_value(value).expect("object");
    api.create(&PostParams::default(), &obj).await
}

#[tokio::test]
async fn garden_serves_projects_cloudprofiles_and_shoots() {
    let garden = GardenEnv::shared();
    let client = garden.kube().client().await;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "garden-probe", "labels": {"project.gardener.cloud/name": "probe", "gardener.cloud/role": "project"}}});
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    nss.create(&PostParams::default(), &serde_json::from_value(ns).unwrap())
        .await
        .unwrap();
    let p = create(
        &garden_api(&client, "Project", "projects", None),
        json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Project", "metadata": {"name": "probe"}, "spec": {"namespace": "garden-probe"}}),
    )
    .await;
    println!("project: {p:?}");
    let cp = create(
        &garden_api(&client, "CloudProfile", "cloudprofiles", None),
        json!({
            "apiVersion": "core.gardener.cloud/v1beta1", "kind": "CloudProfile", "metadata": {"name": "probe"},
            "spec": {
                "type": "local",
                "kubernetes": {"versions": [{"version": "1.33.0"}]},
                "machineCapabilities": [{"name": "architecture", "values": ["amd64"]}, {"name": "nestedVirtualization", "values": ["supported", "unsupported"]}],
                "machineImages": [{"name": "gardenlinux", "versions": [{"version": "1877.0.0", "cri": [{"name": "containerd", "containerRuntimes": [{"type": "kata"}]}]}]}],
                "machineTypes": [
                    {"name": "metal", "cpu": "4", "gpu": "0", "memory": "16Gi", "usable": true, "capabilities": {"nestedVirtualization": ["supported"]}},
                    {"name": "small", "cpu": "2", "gpu": "0", "memory": "8Gi", "usable": true}
                ],
                "regions": [{"name": "local", "zones": [{"name": "z1"}]}]
            }
        }),
    )
    .await;
    println!("cloudprofile: {cp:?}");
    for (kind, ty) in [
        ("Infrastructure", "local"),
        ("ControlPlane", "local"),
        ("Worker", "local"),
        ("Network", "calico"),
        ("ContainerRuntime", "kata"),
        ("OperatingSystemConfig", "gardenlinux"),
    ] {
        let r = create(
            &garden_api(&client, "ControllerRegistration", "controllerregistrations", None),
            json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "ControllerRegistration", "metadata": {"name": format!("{}-{}", kind.to_lowercase(), ty)}, "spec": {"resources": [{"kind": kind, "type": ty}]}}),
        ).await;
        println!("registration {kind}: {:?}", r.err());
    }
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), "garden-probe");
    let r = secrets.create(&PostParams::default(), &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "local-creds"}, "data": {"x": "eA=="}})).unwrap()).await;
    println!("secret: {:?}", r.err());
    let gvk = GroupVersionKind::gvk("security.gardener.cloud", "v1alpha1", "CredentialsBinding");
    let cbs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "garden-probe",
        &ApiResource::from_gvk_with_plural(&gvk, "credentialsbindings"),
    );
    let r = create(&cbs, json!({"apiVersion": "security.gardener.cloud/v1alpha1", "kind": "CredentialsBinding", "metadata": {"name": "local"}, "provider": {"type": "local"}, "credentialsRef": {"apiVersion": "v1", "kind": "Secret", "name": "local-creds", "namespace": "garden-probe"}})).await;
    println!("credentialsbinding: {:?}", r.err());
    let shoot = create(
        &garden_api(&client, "Shoot", "shoots", Some("garden-probe")),
        json!({
            "apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot", "metadata": {"name": "s1", "namespace": "garden-probe"},
            "spec": {
                "cloudProfile": {"kind": "CloudProfile", "name": "probe"},
                "region": "local",
                "credentialsBindingName": "local",
                "kubernetes": {"version": "1.33.0"},
                "networking": {"type": "calico", "nodes": "10.0.0.0/16"},
                "provider": {"type": "local", "workers": [{
                    "name": "kata", "minimum": 1, "maximum": 1,
                    "machine": {"type": "metal", "image": {"name": "gardenlinux", "version": "1877.0.0"}},
                    "cri": {"name": "containerd", "containerRuntimes": [{"type": "kata"}]},
                    "zones": ["z1"]
                }]}
            }
        }),
    )
    .await;
    println!("shoot: {shoot:?}");
    shoot.unwrap();
}
