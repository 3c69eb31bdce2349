//! Our typed Gardener models round-trip through the real kube-apiserver with Gardener's own CRDs:
//! what we write is what we read back, status included (through the status subresource).

use gardener_extension_runtime_kata::api::cluster::{Cluster, ClusterSpec, DecodedCluster};
use gardener_extension_runtime_kata::api::common::*;
use gardener_extension_runtime_kata::api::containerruntime::{ContainerRuntime, ContainerRuntimeSpec, WorkerPool};
use gardener_extension_runtime_kata::api::managedresource::{ManagedResource, ManagedResourceSpec};
use gardener_extension_runtime_kata::api::osc::*;
use gardener_extension_runtime_kata::testenv::TestEnv;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn now_seconds() -> Time {
    // the apiserver stores RFC 3339 with second precision
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap())
}

#[tokio::test]
async fn container_runtime_round_trips_with_status() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("roundtrip-cr").await;
    let api: Api<ContainerRuntime> = Api::namespaced(client, &ns);
    let spec = ContainerRuntimeSpec {
        type_: "kata".into(),
        class: None,
        provider_config: Some(
            json!({"apiVersion": "kata.runtime.extensions.config.gardener.cloud/v1alpha1",
            "kind": "KataConfiguration", "hypervisors": ["qemu"]}),
        ),
        binary_path: "/var/bin/containerruntimes".into(),
        worker_pool: WorkerPool {
            name: "pool-a".into(),
            selector: LabelSelector {
                match_labels: Some([("worker.gardener.cloud/pool".to_string(), "pool-a".to_string())].into()),
                ..Default::default()
            },
        },
    };
    let created = api
        .create(
            &PostParams::default(),
            &ContainerRuntime::new("kata-pool-a", spec.clone()),
        )
        .await
        .unwrap();
    assert_eq!(created.spec, spec);

    let status = DefaultStatus {
        last_operation: Some(LastOperation {
            type_: OperationType::Reconcile.into(),
            state: OperationState::Error.into(),
            progress: 50,
            description: "Error reconciling".into(),
            last_update_time: now_seconds(),
        }),
        last_error: Some(LastError {
            description: "boom".into(),
            task_id: None,
            codes: vec!["ERR_CONFIGURATION_PROBLEM".into()],
            last_update_time: Some(now_seconds()),
        }),
        observed_generation: Some(1),
        provider_status: Some(json!({"shims": ["qemu"]})),
        state: Some(json!({"opaque": true})),
        ..Default::default()
    };
    api.patch_status(
        "kata-pool-a",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap();
    let read = api.get("kata-pool-a").await.unwrap();
    assert_eq!(read.spec, spec);
    assert_eq!(
        read.status,
        Some(status),
        "status must survive the status subresource unchanged"
    );
}

#[tokio::test]
async fn status_is_ignored_on_the_main_resource() {
    // Proves the CRD really has a status subresource: a status in a spec update is dropped.
    let env = TestEnv::shared();
    let ns = env.namespace("roundtrip-sub").await;
    let api: Api<ContainerRuntime> = Api::namespaced(env.client().await, &ns);
    let mut cr = ContainerRuntime::new(
        "kata-x",
        ContainerRuntimeSpec {
            type_: "kata".into(),
            class: Some("shoot".into()),
            provider_config: None,
            binary_path: "/var/bin/containerruntimes".into(),
            worker_pool: WorkerPool {
                name: "x".into(),
                selector: LabelSelector::default(),
            },
        },
    );
    cr.status = Some(DefaultStatus {
        observed_generation: Some(7),
        ..Default::default()
    });
    let created = api.create(&PostParams::default(), &cr).await.unwrap();
    assert_eq!(created.status.and_then(|s| s.observed_generation), None);
}

#[tokio::test]
async fn cluster_round_trips_and_decodes() {
    let env = TestEnv::shared();
    let ns = env.namespace("roundtrip-cluster").await;
    let api: Api<Cluster> = Api::all(env.client().await);
    let shoot = json!({
        "apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
        "metadata": {"name": "demo", "namespace": "garden-dev",
                     "annotations": {"confirmation.gardener.cloud/force-deletion": "true"}},
        "spec": {
            "kubernetes": {"version": "1.33.4"},
            "provider": {"type": "local", "workers": [
                {"name": "pool-a", "machine": {"type": "m5.large", "image": {"name": "gardenlinux", "version": "1877.0"}},
                 "cri": {"name": "containerd", "containerRuntimes": [{"type": "kata", "providerConfig": {"hypervisors": ["fc"]}}]},
                 "taints": [{"key": "dedicated", "value": "kata", "effect": "NoSchedule"}],
                 "someFutureField": {"x": 1}}
            ]},
            "futureTopLevel": [1, 2, 3]
        },
        "status": {"lastOperation": {"type": "Reconcile", "state": "Failed"}}
    });
    let spec = ClusterSpec {
        cloud_profile: json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "CloudProfile",
            "metadata": {"name": "local"}, "spec": {"type": "local", "machineImages": [{"name": "gardenlinux"}]}}),
        seed: Some(json!({"metadata": {"name": "seed-1"}, "spec": {"provider": {"type": "local", "region": "eu"}}})),
        shoot,
    };
    let created = api
        .create(&PostParams::default(), &Cluster::new(&ns, spec.clone()))
        .await
        .unwrap();
    assert_eq!(created.spec, spec, "raw extensions must be preserved verbatim");
    let decoded = DecodedCluster::decode(&api.get(&ns).await.unwrap()).unwrap();
    assert_eq!(decoded.name, ns);
    assert!(decoded.shoot.is_failed());
    assert!(decoded.shoot.is_force_deletion());
    let w = decoded.shoot.worker("pool-a").unwrap();
    assert_eq!(
        w.container_runtime("kata").unwrap().provider_config,
        Some(json!({"hypervisors": ["fc"]}))
    );
    assert_eq!(w.taints[0].key, "dedicated");
    assert_eq!(decoded.seed.unwrap().spec.provider.type_, "local");
    assert_eq!(decoded.cloud_profile.spec.type_, "local");
}

#[tokio::test]
async fn operating_system_config_round_trips_losslessly() {
    let env = TestEnv::shared();
    let ns = env.namespace("roundtrip-osc").await;
    let api: Api<OperatingSystemConfig> = Api::namespaced(env.client().await, &ns);
    let raw = json!({
        "apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "OperatingSystemConfig",
        "metadata": {"name": "osc-pool-a", "labels": {"worker.gardener.cloud/pool": "pool-a"}},
        "spec": {
            "type": "gardenlinux", "purpose": "reconcile",
            "units": [{"name": "containerd.service", "command": "restart", "enable": true,
                       "dropIns": [{"name": "10-x.conf", "content": "[Service]\n"}],
                       "filePaths": ["/etc/containerd/config.toml"]}],
            "files": [{"path": "/opt/bin/x.sh", "permissions": 493,
                       "content": {"inline": {"encoding": "b64", "data": "ZWNobw=="}}},
                      {"path": "/opt/bin/y", "content": {"imageRef": {"image": "img:1", "filePathInImage": "/y"}}}],
            "criConfig": {"name": "containerd", "cgroupDriver": "systemd",
                          "containerd": {"sandboxImage": "pause:3.10",
                                         "registries": [{"upstream": "docker.io", "server": "https://registry-1.docker.io"}],
                                         "plugins": [{"op": "add", "path": ["io.containerd.snapshotter.v1.devmapper"],
                                                      "values": {"pool_name": "devpool", "discard_blocks": true}}]}}
        }
    });
    let osc: OperatingSystemConfig = serde_json::from_value(raw.clone()).unwrap();
    // typed model keeps every field, including the ones it does not model (imageRef, registries)
    let mut again = serde_json::to_value(&osc).unwrap();
    again.as_object_mut().unwrap().remove("status");
    assert_eq!(again["spec"], raw["spec"]);
    let created = api.create(&PostParams::default(), &osc).await.unwrap();
    assert_eq!(created.spec, osc.spec);
    let plugins = created.spec.containerd_plugins();
    assert_eq!(
        plugins[0].values,
        Some(json!({"pool_name": "devpool", "discard_blocks": true}))
    );
}

#[tokio::test]
async fn managed_resource_round_trips() {
    let env = TestEnv::shared();
    let ns = env.namespace("roundtrip-mr").await;
    let api: Api<ManagedResource> = Api::namespaced(env.client().await, &ns);
    let spec = ManagedResourceSpec {
        secret_refs: vec![k8s_openapi::api::core::v1::LocalObjectReference {
            name: "managedresource-x-0123abcd".into(),
        }],
        inject_labels: Some([("shoot.gardener.cloud/no-cleanup".to_string(), "true".to_string())].into()),
        keep_objects: Some(true),
        ..Default::default()
    };
    let created = api
        .create(
            &PostParams::default(),
            &ManagedResource::new("extension-runtime-kata", spec.clone()),
        )
        .await
        .unwrap();
    assert_eq!(created.spec, spec);
    api.patch_status(
        "extension-runtime-kata",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"observedGeneration": 1, "secretsDataChecksum": "abc"}})),
    )
    .await
    .unwrap();
    let st = api.get("extension-runtime-kata").await.unwrap().status.unwrap();
    assert_eq!(
        (st.observed_generation, st.secrets_data_checksum.as_deref()),
        (Some(1), Some("abc"))
    );
}

#[tokio::test]
async fn service_account_clients_are_subject_to_rbac() {
    let env = TestEnv::shared();
    let ns = env.namespace("rbac").await;
    let sa_client = env.service_account_client(&ns, "nobody").await.unwrap();
    let err = Api::<ContainerRuntime>::namespaced(sa_client, &ns)
        .list(&Default::default())
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("expected Forbidden, got {other}"),
    }
}
