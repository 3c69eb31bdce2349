//! The ContainerRuntime controller against a real kube-apiserver: Gardener's extension contract
//! as gardenlet observes it, and what kata deploys into the shoot.

mod common;

use common::*;
use gardener_extension_runtime_kata::api::containerruntime::ContainerRuntime;
use gardener_extension_runtime_kata::api::managedresource::ManagedResource;
use gardener_extension_runtime_kata::api::{OPERATION_ANNOTATION, OperationState, OperationType};
use gardener_extension_runtime_kata::kata::requirements::Requirements;
use gardener_extension_runtime_kata::testenv::TestEnv;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const FINALIZER: &str = "extensions.gardener.cloud/containerruntime";
const SHARED: &str = "extension-runtime-kata";

fn installation(pool: &str) -> String {
    format!("extension-runtime-kata-installation-{pool}")
}

async fn mr_data(client: &Client, ns: &str, name: &str) -> (ManagedResource, Secret, BTreeMap<String, String>) {
    let mr = Api::<ManagedResource>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    assert_eq!(mr.spec.secret_refs.len(), 1);
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&mr.spec.secret_refs[0].name)
        .await
        .unwrap();
    let data = secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect();
    (mr, secret, data)
}

fn runtime_classes(data: &BTreeMap<String, String>) -> BTreeMap<String, RuntimeClass> {
    data.iter()
        .filter(|(k, _)| k.starts_with("runtimeclass__"))
        .map(|(_, v)| {
            let rc: RuntimeClass = serde_saphyr::from_str(v).unwrap();
            (rc.name_any(), rc)
        })
        .collect()
}

fn daemon_set(data: &BTreeMap<String, String>) -> DaemonSet {
    let (_, yaml) = data
        .iter()
        .find(|(k, _)| k.starts_with("daemonset__"))
        .expect("a DaemonSet");
    serde_saphyr::from_str(yaml).unwrap()
}

/// The shims the pool's installer DaemonSet installs (`SHIMS_X86_64`), from its ManagedResource.
async fn installed_shims(client: &Client, ns: &str, pool: &str) -> Option<String> {
    let (_, _, data) = mr_data(client, ns, &installation(pool)).await;
    let env = daemon_set(&data).spec?.template.spec?.containers.first()?.env.clone()?;
    env.into_iter().find(|e| e.name == "SHIMS_X86_64")?.value
}

async fn exists<K>(client: &Client, ns: &str, name: &str) -> bool
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
        .is_some()
}

async fn setup(prefix: &str, pools: &[PoolSpec<'_>]) -> (Client, String, TestController) {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace(prefix).await;
    create_cluster(&client, &ns, shoot("local", pools, false)).await;
    let controller = start_controller(client.clone(), &ns, Requirements::default()).await;
    (client, ns, controller)
}

#[tokio::test]
async fn new_pool_reaches_gardenlets_readiness_rule() {
    let (client, ns, controller) = setup("ready", &[pool("a", None)]).await;
    create_cr(&client, &ns, "a", None).await;
    let cr = wait_ready(&client, &ns, "kata-a").await;
    assert!(cr.finalizers().contains(&FINALIZER.to_string()));
    let last = cr.status.unwrap().last_operation.unwrap();
    assert_eq!(
        (last.type_, last.state, last.progress),
        (OperationType::Create.into(), OperationState::Succeeded.into(), 100)
    );

    let (mr, secret, data) = mr_data(&client, &ns, SHARED).await;
    assert_eq!(mr.labels()["origin"], "extension-runtime-kata");
    assert_eq!(mr.spec.class, None);
    assert_eq!(
        mr.spec.inject_labels.unwrap()["shoot.gardener.cloud/no-cleanup"],
        "true"
    );
    assert_eq!(secret.immutable, Some(true));
    assert_eq!(
        secret.labels()["resources.gardener.cloud/garbage-collectable-reference"],
        "true"
    );
    let rcs = runtime_classes(&data);
    // defaults of a new pool: qemu, clh (Firecracker is opt-in)
    assert_eq!(rcs.keys().cloned().collect::<Vec<_>>(), ["kata-clh", "kata-qemu"]);
    let qemu = &rcs["kata-qemu"];
    assert_eq!(qemu.handler, "kata-qemu");
    let overhead = qemu.overhead.as_ref().unwrap().pod_fixed.as_ref().unwrap();
    assert_eq!(overhead["memory"].0, "320Mi");
    assert_eq!(overhead["cpu"].0, "250m");
    assert_eq!(
        rcs["kata-clh"].overhead.as_ref().unwrap().pod_fixed.as_ref().unwrap()["memory"].0,
        "130Mi"
    );
    assert!(data.contains_key("serviceaccount__kube-system__kata-deploy.yaml"));
    assert!(data.contains_key("clusterrole__extensions.gardener.cloud_runtime-kata_kata-deploy.yaml"));
    assert!(data.keys().any(|k| k.starts_with("clusterrolebinding__")));

    let (_, _, data) = mr_data(&client, &ns, &installation("a")).await;
    let ds = daemon_set(&data);
    let spec = ds.spec.unwrap().template.spec.unwrap();
    let selector = spec.node_selector.unwrap();
    assert_eq!(selector["worker.gardener.cloud/pool"], "a");
    assert_eq!(selector["containerruntime.worker.gardener.cloud/kata"], "true");
    let kube_kata = &spec.containers[0];
    assert_eq!(
        kube_kata.image.as_deref(),
        Some("quay.io/kata-containers/kata-deploy:4.1.0")
    );
    assert_eq!(kube_kata.security_context.as_ref().unwrap().privileged, Some(false));
    let env: BTreeMap<_, _> = kube_kata
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect();
    assert_eq!(env["SHIMS_X86_64"], "qemu clh");
    assert_eq!(env["DEFAULT_SHIM_X86_64"], "qemu");
    assert!(
        !env.contains_key("SNAPSHOTTER_HANDLER_MAPPING_X86_64"),
        "no fc, no devmapper"
    );
    assert_eq!(spec.priority_class_name.as_deref(), Some("system-node-critical"));

    let reconciles: u64 = {
        controller
            .metrics
            .reconcile_total
            .get_or_create(&gardener_extension_runtime_kata::runtime::metrics::ResultLabels {
                controller: "containerruntime".into(),
                result: "success".into(),
            })
            .get()
    };
    assert!(reconciles >= 1);
}

#[tokio::test]
async fn pools_with_different_hypervisors_get_the_union_each_scheduling_only_where_installed() {
    let a = kata_config(json!({"hypervisors": ["qemu"]}));
    let b = kata_config(json!({"hypervisors": ["fc", "clh"], "defaultHypervisor": "clh"}));
    let mut tainted = pool("b", Some(b.clone()));
    tainted.taints = json!([{"key": "dedicated", "value": "kata", "effect": "NoSchedule"}]);
    let (client, ns, _c) = setup("union", &[pool("a", Some(a.clone())), tainted]).await;
    create_cr(&client, &ns, "a", Some(a)).await;
    create_cr(&client, &ns, "b", Some(b)).await;
    wait_ready(&client, &ns, "kata-a").await;
    wait_ready(&client, &ns, "kata-b").await;
    // the last writer saw both pools
    let rcs = eventually(Duration::from_secs(10), "union of RuntimeClasses", || async {
        let (_, _, data) = mr_data(&client, &ns, SHARED).await;
        let rcs = runtime_classes(&data);
        if rcs.len() == 4 {
            Ok(rcs)
        } else {
            Err(format!("{:?}", rcs.keys()))
        }
    })
    .await;
    assert_eq!(
        rcs.keys().cloned().collect::<Vec<_>>(),
        ["kata", "kata-clh", "kata-fc", "kata-qemu"]
    );
    assert_eq!(rcs["kata"].handler, "kata-clh");
    // each class requires its shim's node label ...
    for (name, shim) in [
        ("kata-qemu", "qemu"),
        ("kata-fc", "fc"),
        ("kata-clh", "clh"),
        ("kata", "clh"),
    ] {
        let sel = rcs[name].scheduling.as_ref().unwrap().node_selector.clone().unwrap();
        assert_eq!(
            sel[&format!("kata.runtime.extensions.gardener.cloud/{shim}")],
            "true",
            "{name}"
        );
        assert_eq!(sel["katacontainers.io/kata-runtime"], "true");
    }
    // ... which only the installer of a pool with that shim sets on its nodes
    let labels_of = |pool: &'static str| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let (_, _, data) = mr_data(&client, &ns, &installation(pool)).await;
            let spec = daemon_set(&data).spec.unwrap().template.spec.unwrap();
            let labeler = spec
                .containers
                .iter()
                .find(|c| c.name == "node-labeler")
                .unwrap()
                .clone();
            labeler.args.unwrap()[1].clone()
        }
    };
    assert_eq!(labels_of("a").await, "--shims=qemu");
    assert_eq!(labels_of("b").await, "--shims=fc,clh");
    // pool b is tainted: only the classes of its shims tolerate the taint
    let tolerates = |name: &str| rcs[name].scheduling.as_ref().unwrap().tolerations.is_some();
    assert!(tolerates("kata-fc") && tolerates("kata-clh") && !tolerates("kata-qemu"));
}

#[tokio::test]
async fn spec_change_reapplies_without_leaking_the_old_secret() {
    let (client, ns, _c) = setup("change", &[pool("a", None)]).await;
    create_cr(&client, &ns, "a", Some(kata_config(json!({"hypervisors": ["qemu"]})))).await;
    wait_ready(&client, &ns, "kata-a").await;
    let (old_mr, old_secret, _) = mr_data(&client, &ns, &installation("a")).await;
    let (_, old_shared, _) = mr_data(&client, &ns, SHARED).await;

    let pc = kata_config(json!({"hypervisors": ["qemu", "clh"], "debug": true}));
    annotate(&client, &ns, "kata-a", "reconcile", Some(pc)).await;
    let cr = wait_ready(&client, &ns, "kata-a").await;
    assert_eq!(cr.metadata.generation, Some(2));
    let (mr, secret, data) = mr_data(&client, &ns, &installation("a")).await;
    assert_ne!(secret.name_any(), old_secret.name_any());
    assert_ne!(mr.metadata.resource_version, old_mr.metadata.resource_version);
    let env = daemon_set(&data).spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "SHIMS_X86_64" && e.value.as_deref() == Some("qemu clh"))
    );
    assert!(
        env.iter()
            .any(|e| e.name == "DEBUG" && e.value.as_deref() == Some("true"))
    );
    assert!(
        !exists::<Secret>(&client, &ns, &old_secret.name_any()).await,
        "old installation secret leaked"
    );
    assert!(
        !exists::<Secret>(&client, &ns, &old_shared.name_any()).await,
        "old shared secret leaked"
    );
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(secrets.items.len(), 2, "exactly one secret per ManagedResource");

    // an unchanged re-reconcile writes no ManagedResource or Secret
    let rv = mr.metadata.resource_version.clone();
    annotate(&client, &ns, "kata-a", "reconcile", None).await;
    wait_ready(&client, &ns, "kata-a").await;
    let (mr, _, _) = mr_data(&client, &ns, &installation("a")).await;
    assert_eq!(mr.metadata.resource_version, rv);
}

#[tokio::test]
async fn bad_provider_config_is_a_configuration_problem_until_fixed() {
    let (client, ns, _c) = setup("badcfg", &[pool("a", None)]).await;
    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), &ns);
    let cases = [
        (
            json!({"hypervisors": ["qemu"], "surprise": 1}),
            "unknown field `surprise`",
        ),
        (json!({"hypervisors": ["qemu", "xen"]}), "hypervisors[1]"),
        (
            json!({"hypervisors": ["qemu"], "defaultHypervisor": "fc"}),
            "defaultHypervisor",
        ),
        (json!({"devmapper": {"dataSize": "100Gigs"}}), "devmapper.dataSize"),
    ];
    create_cr(&client, &ns, "a", Some(kata_config(cases[0].0.clone()))).await;
    for (i, (bad, field)) in cases.iter().enumerate() {
        if i > 0 {
            annotate(&client, &ns, "kata-a", "reconcile", Some(kata_config(bad.clone()))).await;
        }
        let generation = i as i64 + 1;
        let err = eventually(Duration::from_secs(20), &format!("error for {field}"), || async {
            let cr = api.get("kata-a").await.map_err(|e| e.to_string())?;
            let st = cr.status.clone().unwrap_or_default();
            match (&st.last_error, st.observed_generation) {
                (Some(e), Some(g)) if g == generation && e.description.contains(field) => Ok((cr, e.clone())),
                _ => Err(format!("{:?}", st.last_error)),
            }
        })
        .await;
        let (cr, last_error) = err;
        assert_eq!(last_error.codes, ["ERR_CONFIGURATION_PROBLEM"], "{field}");
        let last = cr.status.unwrap().last_operation.unwrap();
        assert_eq!((last.state, last.progress), (OperationState::Error.into(), 50));
        assert!(!exists::<ManagedResource>(&client, &ns, &installation("a")).await);
    }
    annotate(
        &client,
        &ns,
        "kata-a",
        "reconcile",
        Some(kata_config(json!({"hypervisors": ["qemu"]}))),
    )
    .await;
    wait_ready(&client, &ns, "kata-a").await;
}

#[tokio::test]
async fn unsupported_provider_is_a_configuration_problem() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("unsupported").await;
    create_cluster(&client, &ns, shoot("openstack", &[pool("a", None)], false)).await;
    let reqs = Requirements {
        supported_providers: vec!["aws".into(), "gcp".into()],
        supported_machine_images: vec![],
    };
    let _c = start_controller(client.clone(), &ns, reqs).await;
    create_cr(&client, &ns, "a", None).await;
    let e = wait_configuration_problem(&client, &ns, "kata-a").await;
    assert_eq!(e.codes, ["ERR_CONFIGURATION_PROBLEM"]);
    assert!(
        e.description.contains("provider type \"openstack\""),
        "{}",
        e.description
    );
}

async fn add_gardener_finalizer(client: &Client, ns: &str, name: &str) {
    let patch = json!({"metadata": {"finalizers": ["resources.gardener.cloud/gardener-resource-manager"]}});
    Api::<ManagedResource>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn drop_gardener_finalizer(client: &Client, ns: &str, name: &str) {
    let patch = json!({"metadata": {"finalizers": null}});
    let _ = Api::<ManagedResource>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
}

async fn gone(client: &Client, ns: &str, name: &str) {
    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), ns);
    eventually(Duration::from_secs(30), &format!("{name} gone"), || async {
        match api.get_opt(name).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(cr) => Err(format!(
                "finalizers {:?}, status {:?}",
                cr.finalizers(),
                cr.status.as_ref().map(|s| &s.last_operation)
            )),
        }
    })
    .await
}

#[tokio::test]
async fn deleting_one_pool_keeps_the_shared_resources_and_the_last_removes_everything() {
    let a = kata_config(json!({"hypervisors": ["qemu"]}));
    let b = kata_config(json!({"hypervisors": ["fc"]}));
    let (client, ns, _c) = setup("delete", &[pool("a", Some(a.clone())), pool("b", Some(b.clone()))]).await;
    create_cr(&client, &ns, "a", Some(a)).await;
    create_cr(&client, &ns, "b", Some(b)).await;
    wait_ready(&client, &ns, "kata-a").await;
    wait_ready(&client, &ns, "kata-b").await;
    // gardener-resource-manager holds the installation until the DaemonSet is gone: deletion waits
    add_gardener_finalizer(&client, &ns, &installation("b")).await;

    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), &ns);
    api.delete("kata-b", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cr = api.get("kata-b").await.unwrap();
    assert!(
        cr.finalizers().contains(&FINALIZER.to_string()),
        "must wait for the installation to go"
    );
    let last = cr.status.unwrap().last_operation.unwrap();
    assert_eq!(
        (last.type_, last.state),
        (OperationType::Delete.into(), OperationState::Processing.into())
    );
    drop_gardener_finalizer(&client, &ns, &installation("b")).await;
    gone(&client, &ns, "kata-b").await;

    assert!(!exists::<ManagedResource>(&client, &ns, &installation("b")).await);
    assert!(exists::<ManagedResource>(&client, &ns, &installation("a")).await);
    let (_, _, data) = mr_data(&client, &ns, SHARED).await;
    assert_eq!(
        runtime_classes(&data).keys().cloned().collect::<Vec<_>>(),
        ["kata-qemu"],
        "b's shims are gone"
    );

    api.delete("kata-a", &DeleteParams::default()).await.unwrap();
    gone(&client, &ns, "kata-a").await;
    for mr in [SHARED.to_string(), installation("a")] {
        assert!(!exists::<ManagedResource>(&client, &ns, &mr).await, "{mr}");
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        secrets.items.is_empty(),
        "{:?}",
        secrets.items.iter().map(|s| s.name_any()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn migrate_keeps_shoot_objects_and_restore_brings_everything_back() {
    let (client, ns, _c) = setup("migrate", &[pool("a", None)]).await;
    create_cr(&client, &ns, "a", None).await;
    wait_ready(&client, &ns, "kata-a").await;
    // hold the ManagedResources like the resource manager does, to see what migrate left on them
    for mr in [SHARED.to_string(), installation("a")] {
        add_gardener_finalizer(&client, &ns, &mr).await;
    }
    annotate(&client, &ns, "kata-a", "migrate", None).await;
    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), &ns);
    let cr = eventually(Duration::from_secs(20), "migrated", || async {
        let cr = api.get("kata-a").await.map_err(|e| e.to_string())?;
        let last = cr.status.as_ref().and_then(|s| s.last_operation.clone());
        // Gardener's order: Succeeded first, then every finalizer goes (a separate write)
        match last {
            Some(l) if l.type_ == OperationType::Migrate && l.state == OperationState::Succeeded => {
                if cr.finalizers().is_empty() {
                    Ok(cr)
                } else {
                    Err(format!("finalizers left after migrate: {:?}", cr.finalizers()))
                }
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(cr.finalizers().is_empty(), "all finalizers removed after migrate");
    let cr = eventually(Duration::from_secs(10), "migrate annotation removed", || async {
        let cr = api.get("kata-a").await.map_err(|e| e.to_string())?;
        if cr.annotations().contains_key(OPERATION_ANNOTATION) {
            Err("still annotated".into())
        } else {
            Ok(cr)
        }
    })
    .await;
    assert!(cr.finalizers().is_empty());
    for mr in [SHARED.to_string(), installation("a")] {
        let m = Api::<ManagedResource>::namespaced(client.clone(), &ns)
            .get(&mr)
            .await
            .unwrap();
        assert_eq!(m.spec.keep_objects, Some(true), "{mr}");
        assert!(
            m.metadata.deletion_timestamp.is_some(),
            "{mr} deleted from the source seed"
        );
        drop_gardener_finalizer(&client, &ns, &mr).await;
    }

    // a migrated object is left alone by ordinary reconciles
    annotate(&client, &ns, "kata-a", "reconcile", None).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!exists::<ManagedResource>(&client, &ns, SHARED).await);

    annotate(&client, &ns, "kata-a", "restore", None).await;
    let cr = wait_ready(&client, &ns, "kata-a").await;
    let last = cr.status.unwrap().last_operation.unwrap();
    assert_eq!(last.type_, OperationType::Restore);
    assert!(cr.metadata.finalizers.unwrap().contains(&FINALIZER.to_string()));
    for mr in [SHARED.to_string(), installation("a")] {
        let (m, _, _) = mr_data(&client, &ns, &mr).await;
        assert_eq!(m.spec.keep_objects, Some(false));
    }
}

#[tokio::test]
async fn a_failed_shoot_is_skipped() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("failed").await;
    create_cluster(&client, &ns, shoot("local", &[pool("a", None)], true)).await;
    let _c = start_controller(client.clone(), &ns, Requirements::default()).await;
    create_cr(&client, &ns, "a", None).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cr = Api::<ContainerRuntime>::namespaced(client.clone(), &ns)
        .get("kata-a")
        .await
        .unwrap();
    assert!(
        cr.status.and_then(|s| s.last_operation).is_none(),
        "no operation on a failed shoot"
    );
    assert!(cr.metadata.finalizers.is_none());
    assert!(!exists::<ManagedResource>(&client, &ns, SHARED).await);
}

#[tokio::test]
async fn a_missing_cluster_is_an_error_that_recovers() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("nocluster").await;
    let _c = start_controller(client.clone(), &ns, Requirements::default()).await;
    create_cr(&client, &ns, "a", None).await;
    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), &ns);
    let e = eventually(Duration::from_secs(20), "missing Cluster error", || async {
        let cr = api.get("kata-a").await.map_err(|e| e.to_string())?;
        cr.status
            .and_then(|s| s.last_error)
            .ok_or_else(|| "no error yet".to_string())
    })
    .await;
    assert!(e.description.contains("Cluster"), "{}", e.description);
    assert!(e.codes.is_empty(), "retryable: no configuration code");
    create_cluster(&client, &ns, shoot("local", &[pool("a", None)], false)).await;
    wait_ready(&client, &ns, "kata-a").await;
    // a failed first reconcile does not make the new pool look like one of v0.1.0 (whose default
    // included Firecracker): it keeps the default of a new pool
    let (_, _, data) = mr_data(&client, &ns, SHARED).await;
    assert_eq!(
        runtime_classes(&data).keys().cloned().collect::<Vec<_>>(),
        ["kata-clh", "kata-qemu"]
    );
}

#[tokio::test]
async fn every_shoot_object_passes_a_server_side_dry_run() {
    let a = kata_config(json!({"hypervisors": ["qemu", "fc"], "defaultHypervisor": "qemu",
        "allowedHypervisorAnnotations": ["default_memory"]}));
    let (client, ns, _c) = setup("dryrun", &[pool("a", Some(a.clone()))]).await;
    create_cr(&client, &ns, "a", Some(a)).await;
    wait_ready(&client, &ns, "kata-a").await;
    let mut count = 0;
    for mr in [SHARED.to_string(), installation("a")] {
        let (_, _, data) = mr_data(&client, &ns, &mr).await;
        for (key, yaml) in data {
            let obj: kube::api::DynamicObject = serde_saphyr::from_str(&yaml).unwrap();
            let tm = obj.types.clone().unwrap();
            let (group, version) = tm.api_version.rsplit_once('/').unwrap_or(("", &tm.api_version));
            let gvk = kube::api::GroupVersionKind::gvk(group, version, &tm.kind);
            let (ar, caps) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
            let api: Api<kube::api::DynamicObject> = match caps.scope {
                kube::discovery::Scope::Namespaced => {
                    Api::namespaced_with(client.clone(), obj.metadata.namespace.as_deref().unwrap(), &ar)
                }
                kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &ar),
            };
            api.create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &obj,
            )
            .await
            .unwrap_or_else(|e| panic!("{key} rejected by the apiserver: {e}"));
            count += 1;
        }
    }
    // 3 RuntimeClasses (kata, kata-qemu, kata-fc), SA, ClusterRole, binding, the own-node
    // ValidatingAdmissionPolicy and its binding, DaemonSet
    assert_eq!(count, 9);
}

#[tokio::test]
async fn force_deletion_does_not_wait_for_the_resource_manager() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("force").await;
    let mut shoot = shoot("local", &[pool("a", None)], false);
    // Gardener parses the value with strconv.ParseBool: "True" is as good as "true"
    shoot["metadata"]["annotations"] = json!({"confirmation.gardener.cloud/force-deletion": "True"});
    create_cluster(&client, &ns, shoot).await;
    let _c = start_controller(client.clone(), &ns, Requirements::default()).await;
    create_cr(&client, &ns, "a", None).await;
    wait_ready(&client, &ns, "kata-a").await;
    // the resource manager would never let go of this one
    add_gardener_finalizer(&client, &ns, &installation("a")).await;
    Api::<ContainerRuntime>::namespaced(client.clone(), &ns)
        .delete("kata-a", &DeleteParams::default())
        .await
        .unwrap();
    gone(&client, &ns, "kata-a").await;
    let mr = Api::<ManagedResource>::namespaced(client.clone(), &ns)
        .get(&installation("a"))
        .await
        .unwrap();
    assert!(mr.metadata.deletion_timestamp.is_some(), "deletion was requested");
    drop_gardener_finalizer(&client, &ns, &installation("a")).await;
}

#[tokio::test]
async fn ignoring_the_operation_annotation_reconciles_on_generation_and_cluster_changes() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("ignore").await;
    create_cluster(&client, &ns, shoot("local", &[pool("a", None)], false)).await;
    let _c = start_controller_with(client.clone(), &ns, Requirements::default(), |o| {
        o.predicate.ignore_operation_annotation = true;
    })
    .await;
    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), &ns);
    let mut cr = ContainerRuntime::for_pool("kata", "a", None);
    cr.metadata.namespace = Some(ns.clone());
    api.create(&PostParams::default(), &cr).await.unwrap();
    let first = wait_ready(&client, &ns, "kata-a").await;
    let updated = |c: &ContainerRuntime| c.status.clone().unwrap().last_operation.unwrap().last_update_time;

    // a spec change alone (no annotation) is reconciled
    let patch = json!({"spec": {"providerConfig": kata_config(json!({"hypervisors": ["clh"]}))}});
    api.patch("kata-a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "generation 2 observed", || async {
        let c = api.get("kata-a").await.map_err(|e| e.to_string())?;
        match c.status.as_ref().and_then(|s| s.observed_generation) {
            Some(2) if not_ready_reason(&c).is_none() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let (_, _, data) = mr_data(&client, &ns, SHARED).await;
    assert_eq!(runtime_classes(&data).keys().cloned().collect::<Vec<_>>(), ["kata-clh"]);

    // a Cluster change too
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = updated(&api.get("kata-a").await.unwrap());
    assert!(before >= updated(&first));
    let cluster_patch = json!({"metadata": {"annotations": {"touched": "yes"}}});
    Api::<gardener_extension_runtime_kata::api::Cluster>::all(client.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&cluster_patch))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "reconciled after the Cluster change",
        || async {
            let c = api.get("kata-a").await.map_err(|e| e.to_string())?;
            if updated(&c) > before {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn an_invalid_pool_keeps_its_last_good_share_of_the_shoot_and_its_installation() {
    let a = kata_config(json!({"hypervisors": ["qemu"], "defaultHypervisor": "qemu"}));
    let b = kata_config(json!({"hypervisors": ["clh"]}));
    let (client, ns, _c) = setup("lastgood", &[pool("a", Some(a.clone())), pool("b", Some(b.clone()))]).await;
    create_cr(&client, &ns, "a", Some(a.clone())).await;
    create_cr(&client, &ns, "b", Some(b)).await;
    let cr = wait_ready(&client, &ns, "kata-a").await;
    wait_ready(&client, &ns, "kata-b").await;
    // the configuration applied last is recorded with the success
    let applied = &cr.status.unwrap().provider_status.unwrap()["appliedConfiguration"];
    assert_eq!(applied["hypervisors"], json!(["qemu"]));
    let (_, installation_before, _) = mr_data(&client, &ns, &installation("a")).await;

    // a typo in pool a: a configuration problem for a only
    let typo = kata_config(json!({"hypervisor": ["qemu"]}));
    annotate(&client, &ns, "kata-a", "reconcile", Some(typo)).await;
    wait_configuration_problem(&client, &ns, "kata-a").await;

    // pool b changes and rewrites the shared objects: a's classes stay as last applied
    let b2 = kata_config(json!({"hypervisors": ["clh", "fc"]}));
    annotate(&client, &ns, "kata-b", "reconcile", Some(b2)).await;
    let b_ready = wait_ready(&client, &ns, "kata-b").await;
    assert_eq!(
        b_ready.status.unwrap().provider_status.unwrap()["appliedConfiguration"]["hypervisors"],
        json!(["clh", "fc"])
    );
    let (_, _, data) = mr_data(&client, &ns, SHARED).await;
    let classes = runtime_classes(&data);
    assert_eq!(
        classes.keys().cloned().collect::<Vec<_>>(),
        ["kata", "kata-clh", "kata-fc", "kata-qemu"],
        "a's RuntimeClasses and default survive its typo"
    );
    assert_eq!(classes["kata"].handler, "kata-qemu");
    let (_, installation_after, _) = mr_data(&client, &ns, &installation("a")).await;
    assert_eq!(
        installation_after.name_any(),
        installation_before.name_any(),
        "a's installation untouched"
    );

    // fixed: a's new configuration takes over
    let fixed = kata_config(json!({"hypervisors": ["qemu", "clh"]}));
    annotate(&client, &ns, "kata-a", "reconcile", Some(fixed)).await;
    wait_ready(&client, &ns, "kata-a").await;
    let (_, _, data) = mr_data(&client, &ns, SHARED).await;
    assert_eq!(
        runtime_classes(&data).keys().cloned().collect::<Vec<_>>(),
        ["kata-clh", "kata-fc", "kata-qemu"]
    );
}

#[tokio::test]
async fn shared_rbac_goes_only_after_every_installation_is_gone() {
    let (client, ns, _c) = setup("massdelete", &[pool("a", None), pool("b", None)]).await;
    create_cr(&client, &ns, "a", None).await;
    create_cr(&client, &ns, "b", None).await;
    wait_ready(&client, &ns, "kata-a").await;
    wait_ready(&client, &ns, "kata-b").await;
    // the resource manager holds each installation until its kata-deploy pods have cleaned up
    for p in ["a", "b"] {
        add_gardener_finalizer(&client, &ns, &installation(p)).await;
    }
    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), &ns);
    // shoot deletion: every pool at once
    api.delete("kata-a", &DeleteParams::default()).await.unwrap();
    api.delete("kata-b", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    drop_gardener_finalizer(&client, &ns, &installation("a")).await;
    gone(&client, &ns, "kata-a").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let shared = Api::<ManagedResource>::namespaced(client.clone(), &ns)
        .get_opt(SHARED)
        .await
        .unwrap()
        .expect("b's installer still needs the shared RBAC");
    assert!(shared.metadata.deletion_timestamp.is_none(), "not even being deleted");

    drop_gardener_finalizer(&client, &ns, &installation("b")).await;
    gone(&client, &ns, "kata-b").await;
    assert!(
        !exists::<ManagedResource>(&client, &ns, SHARED).await,
        "the last one removes it"
    );
}

/// The CRD allows any string in `lastOperation.type/state`; a value we do not know (a newer
/// Gardener's, a hand-written one) on any ContainerRuntime of the seed must not make the initial
/// list undecodable, which would stop every shoot's reconciles.
#[tokio::test]
async fn an_object_with_unknown_operation_values_present_at_start_up_stops_nothing() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("lenient").await;
    create_cluster(&client, &ns, shoot("local", &[pool("a", None)], false)).await;
    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), &ns);
    let foreign = ContainerRuntime::for_pool("gvisor", "g", None);
    api.create(&PostParams::default(), &foreign).await.unwrap();
    let status = json!({"status": {"lastOperation": {"type": "Upgrade", "state": "Frozen", "progress": 7,
        "description": "from a newer Gardener", "lastUpdateTime": "2026-01-01T00:00:00Z"}}});
    api.patch_status("gvisor-g", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();

    let _c = start_controller(client.clone(), &ns, Requirements::default()).await;
    create_cr(&client, &ns, "a", None).await;
    wait_ready(&client, &ns, "kata-a").await;
    // the foreign value is kept as it was
    let raw: serde_json::Value = client
        .request(
            http::Request::get(format!(
                "/apis/extensions.gardener.cloud/v1alpha1/namespaces/{ns}/containerruntimes/gvisor-g"
            ))
            .body(Vec::new())
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(raw["status"]["lastOperation"]["type"], "Upgrade");
    let decoded = api.get("gvisor-g").await.unwrap();
    let last = decoded.status.unwrap().last_operation.unwrap();
    assert_eq!(serde_json::to_value(&last.state).unwrap(), "Frozen");
}

/// An error that quotes user input (here a 700 KB field name) must still fit into the status
/// write, or the ContainerRuntime hangs in Processing with no error shown.
#[tokio::test]
async fn a_huge_field_name_is_a_visible_configuration_problem() {
    let field = "x".repeat(700 * 1024);
    let bad = kata_config(json!({ field: true }));
    let (client, ns, _c) = setup("huge", &[pool("a", Some(bad.clone()))]).await;
    create_cr(&client, &ns, "a", Some(bad)).await;
    let err = wait_configuration_problem(&client, &ns, "kata-a").await;
    assert_eq!(err.codes, ["ERR_CONFIGURATION_PROBLEM"]);
    assert!(err.description.len() <= 2048, "{}", err.description.len());
    assert!(err.description.contains("unknown field"), "{}", &err.description[..200]);
}

/// A hand-written ContainerRuntime whose pool name cannot be part of an object name gets a
/// configuration problem, and its deletion is never stuck on a finalizer.
#[tokio::test]
async fn a_pool_name_that_cannot_name_objects_never_blocks_deletion() {
    let (client, ns, _c) = setup("badname", &[pool("a", None)]).await;
    let mut cr = ContainerRuntime::for_pool("kata", "with space", None);
    cr.metadata.name = Some("kata-bad-name".into());
    cr.annotations_mut()
        .insert(OPERATION_ANNOTATION.into(), "reconcile".into());
    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &cr).await.unwrap();
    wait_configuration_problem(&client, &ns, "kata-bad-name").await;
    api.delete("kata-bad-name", &DeleteParams::default()).await.unwrap();
    gone(&client, &ns, "kata-bad-name").await;
}

/// The image vector is resolved per pool. Both images are manifest lists, so an arm64 pool
/// installs with the embedded vector alone, on arm64 nodes only; an operator's image for arm64
/// (more specific than the multi-arch entry) replaces the node labeler of that pool alone.
#[tokio::test]
async fn an_arm64_pool_installs_with_multi_arch_images_unless_the_operator_overrides_them() {
    use gardener_extension_runtime_kata::kata::imagevector::Images;
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("arch").await;
    let mut shoot = shoot("local", &[pool("amd", None), pool("arm", None)], false);
    shoot["spec"]["provider"]["workers"][1]["machine"]["architecture"] = json!("arm64");
    create_cluster(&client, &ns, shoot).await;
    let installer_pod = |data: &BTreeMap<String, String>| daemon_set(data).spec.unwrap().template.spec.unwrap();
    let images_of = |pod: &k8s_openapi::api::core::v1::PodSpec| {
        pod.containers
            .iter()
            .filter_map(|c| c.image.clone())
            .collect::<Vec<_>>()
    };
    let embedded = Images::from_sources("v0.1.0", None).unwrap();
    let c = start_controller_with_images(client.clone(), &ns, Requirements::default(), embedded, |_| {}).await;
    create_cr(&client, &ns, "amd", None).await;
    create_cr(&client, &ns, "arm", None).await;
    wait_ready(&client, &ns, "kata-amd").await;
    wait_ready(&client, &ns, "kata-arm").await;
    let (_, _, amd) = mr_data(&client, &ns, &installation("amd")).await;
    let (_, _, arm) = mr_data(&client, &ns, &installation("arm")).await;
    let (amd, arm) = (installer_pod(&amd), installer_pod(&arm));
    assert_eq!(
        images_of(&arm),
        [
            "quay.io/kata-containers/kata-deploy:4.1.0",
            "registry.invalid/gardener/extensions/runtime-kata:v0.1.0"
        ]
    );
    assert_eq!(images_of(&arm), images_of(&amd));
    assert_eq!(arm.node_selector.unwrap()["kubernetes.io/arch"], "arm64");
    assert_eq!(amd.node_selector.unwrap()["kubernetes.io/arch"], "amd64");
    drop(c);

    // the operator provides an image for arm64 alone: that pool's installer switches to it
    let overwrite = "images:\n- name: runtime-kata-node-labeler\n  ref: registry.local/runtime-kata:v0.1.0-arm64\n  architectures: [arm64]\n";
    let with_arm = Images::from_sources("v0.1.0", Some(("overwrite", overwrite))).unwrap();
    let _c = start_controller_with_images(client.clone(), &ns, Requirements::default(), with_arm, |_| {}).await;
    annotate(&client, &ns, "kata-arm", "reconcile", None).await;
    // ready again only once the reconcile that the annotation asked for has succeeded
    wait_ready(&client, &ns, "kata-arm").await;
    let (_, _, data) = mr_data(&client, &ns, &installation("arm")).await;
    assert_eq!(
        images_of(&installer_pod(&data)),
        [
            "quay.io/kata-containers/kata-deploy:4.1.0",
            "registry.local/runtime-kata:v0.1.0-arm64"
        ]
    );
}

/// Firecracker became opt-in. A pool that an earlier version reconciled with the old default
/// (which included fc) keeps fc after the upgrade, for good; a new pool of the same shoot gets
/// the new default.
#[tokio::test]
async fn pools_from_before_the_new_default_keep_firecracker() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("legacy").await;
    create_cluster(
        &client,
        &ns,
        shoot("local", &[pool("old", None), pool("new", None)], false),
    )
    .await;
    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), &ns);
    // "old" as v0.1.0 left it: reconciled, finalizer, no providerStatus of ours (written before
    // this version's controller starts, as after an upgrade)
    let mut old = ContainerRuntime::for_pool("kata", "old", None);
    old.metadata.finalizers = Some(vec![FINALIZER.into()]);
    api.create(&PostParams::default(), &old).await.unwrap();
    let v010 = json!({"status": {"observedGeneration": 1, "lastOperation": {"type": "Reconcile", "state": "Succeeded",
        "progress": 100, "description": "ContainerRuntime successfully reconciled", "lastUpdateTime": "2026-11-01T00:00:00Z"}}});
    api.patch_status("kata-old", &PatchParams::default(), &Patch::Merge(&v010))
        .await
        .unwrap();
    let _c = start_controller(client.clone(), &ns, Requirements::default()).await;
    annotate(&client, &ns, "kata-old", "reconcile", None).await;
    let old = wait_ready(&client, &ns, "kata-old").await;
    let status = old.status.unwrap().provider_status.unwrap();
    assert_eq!(status["defaultHypervisors"], json!(["qemu", "clh", "fc"]));
    assert_eq!(
        status["appliedConfiguration"]["hypervisors"],
        json!(["qemu", "clh", "fc"])
    );

    create_cr(&client, &ns, "new", None).await;
    let new = wait_ready(&client, &ns, "kata-new").await;
    assert_eq!(
        new.status.unwrap().provider_status.unwrap()["defaultHypervisors"],
        json!(["qemu", "clh"])
    );
    assert_eq!(installed_shims(&client, &ns, "new").await.as_deref(), Some("qemu clh"));

    // and it stays: later reconciles read the recorded default
    annotate(&client, &ns, "kata-old", "reconcile", None).await;
    wait_ready(&client, &ns, "kata-old").await;
    assert_eq!(
        installed_shims(&client, &ns, "old").await.as_deref(),
        Some("qemu clh fc")
    );
    let (_, _, shared) = mr_data(&client, &ns, SHARED).await;
    assert!(runtime_classes(&shared).contains_key("kata-fc"));

    // and it survives a control-plane migration: gardenlet carries only `status.state` to the
    // destination seed, where it creates the object anew (stand-in for gardenlet's restore:
    // create with wait-for-state, write the state from the ShootState, annotate restore)
    annotate(&client, &ns, "kata-old", "migrate", None).await;
    let migrated = eventually(Duration::from_secs(20), "migrated", || async {
        let cr = api.get("kata-old").await.map_err(|e| e.to_string())?;
        let done = cr
            .status
            .as_ref()
            .and_then(|s| s.last_operation.as_ref())
            .is_some_and(|l| l.type_ == OperationType::Migrate && l.state == OperationState::Succeeded);
        if done && cr.finalizers().is_empty() {
            Ok(cr)
        } else {
            Err("not migrated yet".to_string())
        }
    })
    .await;
    let state = migrated.status.unwrap().state.expect("status.state for the ShootState");
    api.delete("kata-old", &DeleteParams::default()).await.unwrap();
    gone(&client, &ns, "kata-old").await;
    let mut fresh = ContainerRuntime::for_pool("kata", "old", None);
    fresh
        .annotations_mut()
        .insert(OPERATION_ANNOTATION.into(), "wait-for-state".into());
    api.create(&PostParams::default(), &fresh).await.unwrap();
    api.patch_status(
        "kata-old",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"state": state}})),
    )
    .await
    .unwrap();
    annotate(&client, &ns, "kata-old", "restore", None).await;
    let restored = wait_ready(&client, &ns, "kata-old").await;
    assert_eq!(
        restored.status.unwrap().provider_status.unwrap()["defaultHypervisors"],
        json!(["qemu", "clh", "fc"])
    );
    assert_eq!(
        installed_shims(&client, &ns, "old").await.as_deref(),
        Some("qemu clh fc"),
        "the restored pool keeps Firecracker"
    );
}

/// Sets a ManagedResource's status as gardener-resource-manager writes it (`observedGeneration`
/// only after a successful apply).
async fn resource_manager_reports(client: &Client, ns: &str, name: &str, healthy: Result<(), &str>) {
    let api = Api::<ManagedResource>::namespaced(client.clone(), ns);
    let generation = api.get(name).await.unwrap().metadata.generation.unwrap();
    let now = timestamp_now();
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": now, "lastUpdateTime": now})
    };
    let health = match healthy {
        Ok(()) => cond(
            "ResourcesHealthy",
            "True",
            "ResourcesHealthy",
            "All resources are healthy.",
        ),
        Err(m) => cond("ResourcesHealthy", "False", "DaemonSetUnhealthy", m),
    };
    let status = json!({"status": {"observedGeneration": generation, "conditions": [
        cond("ResourcesApplied", "True", "ApplySucceeded", "All resources are applied."),
        health,
        cond("ResourcesProgressing", "False", "ResourcesRolledOut", "All resources have been fully rolled out."),
    ]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

fn system_components(cr: &ContainerRuntime) -> Option<gardener_extension_runtime_kata::api::common::Condition> {
    cr.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "SystemComponentsHealthy")
        .cloned()
}

/// Health checks against ManagedResources whose status a stand-in for gardener-resource-manager
/// sets: the ContainerRuntime's SystemComponentsHealthy says what the resource manager says, names
/// the pool, costs no reconcile and no write while nothing changes.
#[tokio::test]
async fn health_conditions_follow_the_resource_manager_without_reconciles_or_idle_writes() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("health").await;
    let ctl = start_controller(client.clone(), &ns, Requirements::default()).await;
    create_cluster(&client, &ns, shoot("local", &[pool("a", None)], false)).await;
    create_cr(&client, &ns, "a", None).await;
    wait_ready(&client, &ns, "kata-a").await;
    // the shared apiserver stands in for the shoot (it has no nodes)
    TestEnv::shared().grant_shoot_access(&client, &ns).await.unwrap();
    let checker = ctl.health_checker(Duration::from_secs(600));
    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), &ns);
    let condition_after_rounds = |want: &'static str| {
        let (api, checker) = (api.clone(), &checker);
        async move {
            eventually(
                Duration::from_secs(20),
                &format!("SystemComponentsHealthy {want}"),
                || async {
                    checker.round().await;
                    let cr = api.get("kata-a").await.map_err(|e| e.to_string())?;
                    match system_components(&cr) {
                        Some(c) if c.status == want => Ok((c, cr)),
                        other => Err(format!("{other:?}")),
                    }
                },
            )
            .await
        }
    };

    // written, not yet applied by any resource manager
    let (c, _) = condition_after_rounds("Progressing").await;
    assert_eq!(c.reason, "HealthCheckProgressing");
    assert!(
        c.message
            .starts_with("pool a: ManagedResource extension-runtime-kata-installation-a is not applied yet"),
        "{}",
        c.message
    );

    let unhealthy = "DaemonSet \"kube-system/kata-deploy-a\" is unhealthy: too many unavailable pods found (1/3)";
    resource_manager_reports(&client, &ns, SHARED, Ok(())).await;
    resource_manager_reports(&client, &ns, &installation("a"), Err(unhealthy)).await;
    let (c, cr) = condition_after_rounds("False").await;
    assert_eq!(c.reason, "HealthCheckUnsuccessful");
    assert_eq!(
        c.message,
        format!(
            "pool a: ManagedResource extension-runtime-kata-installation-a: ResourcesHealthy is False: {unhealthy}"
        )
    );
    let last_operation = cr.status.as_ref().unwrap().last_operation.clone();

    // nothing changes: rounds neither write nor cause a reconcile
    let version = cr.resource_version();
    for _ in 0..3 {
        assert_eq!(checker.round().await.written, 0);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cr = api.get("kata-a").await.unwrap();
    assert_eq!(cr.resource_version(), version, "no write while nothing changed");

    resource_manager_reports(&client, &ns, &installation("a"), Ok(())).await;
    let (ok, cr) = condition_after_rounds("True").await;
    assert_eq!(
        (ok.reason.as_str(), ok.message.as_str()),
        ("HealthCheckSuccessful", "All health checks successful")
    );
    assert!(ok.last_transition_time.0 >= c.last_transition_time.0);
    let version = cr.resource_version();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cr = api.get("kata-a").await.unwrap();
    assert_eq!(
        cr.resource_version(),
        version,
        "the condition write started no reconcile"
    );
    assert_eq!(
        cr.status.unwrap().last_operation,
        last_operation,
        "lastOperation untouched"
    );
}

/// A hibernated shoot's resource manager is scaled down: its pools are reported healthy, as
/// Gardener's health checks do, whatever the ManagedResources last said.
#[tokio::test]
async fn a_hibernated_shoot_is_reported_healthy() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("health-hibernated").await;
    let ctl = start_controller(client.clone(), &ns, Requirements::default()).await;
    let mut shoot = shoot("local", &[pool("a", None)], false);
    shoot["spec"]["hibernation"] = json!({"enabled": true});
    create_cluster(&client, &ns, shoot).await;
    create_cr(&client, &ns, "a", None).await;
    wait_ready(&client, &ns, "kata-a").await;
    resource_manager_reports(
        &client,
        &ns,
        &installation("a"),
        Err("DaemonSet \"kube-system/kata-deploy-a\" is unhealthy: not enough scheduled pods (0/3)"),
    )
    .await;
    // the shared apiserver stands in for the shoot (it has no nodes)
    TestEnv::shared().grant_shoot_access(&client, &ns).await.unwrap();
    let checker = ctl.health_checker(Duration::from_secs(600));
    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), &ns);
    // (until the cache has the resource manager's report, the pool is merely not applied yet)
    let c = eventually(Duration::from_secs(20), "the hibernation verdict", || async {
        checker.round().await;
        let cr = api.get("kata-a").await.map_err(|e| e.to_string())?;
        match system_components(&cr) {
            Some(c) if c.status != "Progressing" => Ok(c),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!((c.status.as_str(), c.message.as_str()), ("True", "Shoot is hibernated"));
}

/// gardenlet deploys a hibernated shoot's ContainerRuntimes too; their ManagedResources stay
/// unapplied until it wakes up. The pool is healthy from the first round after the reconcile on,
/// not `Progressing` until the progressing threshold runs out, and not only after the settle time
/// of one sync period (here a minute) that other pools wait.
#[tokio::test]
async fn a_hibernated_shoot_is_healthy_right_after_a_reconcile() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("health-hibernated-new").await;
    let ctl = start_controller(client.clone(), &ns, Requirements::default()).await;
    let mut shoot = shoot("local", &[pool("a", None)], false);
    shoot["spec"]["hibernation"] = json!({"enabled": true});
    create_cluster(&client, &ns, shoot).await;
    // the shared apiserver stands in for the shoot (it has no nodes)
    TestEnv::shared().grant_shoot_access(&client, &ns).await.unwrap();
    let checker = ctl.health_checker_with(ctl.runtimes(), Duration::from_secs(60), Duration::from_secs(600));
    create_cr(&client, &ns, "a", None).await;
    wait_ready(&client, &ns, "kata-a").await;
    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), &ns);
    let first = eventually(Duration::from_secs(10), "the first health condition", || async {
        checker.round().await;
        let cr = api.get("kata-a").await.map_err(|e| e.to_string())?;
        system_components(&cr).ok_or_else(|| "no condition yet".to_string())
    })
    .await;
    assert_eq!(
        (first.status.as_str(), first.message.as_str()),
        ("True", "Shoot is hibernated")
    );
}

/// A round never judges an object by a cache older than its own last write: with the watch held
/// back after a condition write, the next rounds write nothing (they wrote the same condition
/// again, with a new transition time, when a busy machine delayed the watch).
#[tokio::test]
async fn a_health_round_does_not_repeat_its_write_while_the_cache_lags() {
    let (client, ns, ctl) = setup("health-lag", &[pool("a", None)]).await;
    create_cr(&client, &ns, "a", None).await;
    let ready = wait_ready(&client, &ns, "kata-a").await;
    // the settle time of the checks (one sync period) after the last operation
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (held_back, mut writer) = kube::runtime::reflector::store::<ContainerRuntime>();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(ready.clone()));
    // the shared apiserver stands in for the shoot (it has no nodes)
    TestEnv::shared().grant_shoot_access(&client, &ns).await.unwrap();
    let checker = ctl.health_checker_over(held_back, Duration::from_secs(600));
    eventually(Duration::from_secs(10), "the first condition write", || async {
        match checker.round().await.written {
            1 => Ok(()),
            n => Err(format!("{n} written")),
        }
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            checker.round().await.written,
            0,
            "the cache still shows the version before our write"
        );
    }
    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), &ns);
    let current = api.get("kata-a").await.unwrap();
    assert_eq!(system_components(&current).unwrap().status, "Progressing");
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(current.clone()));
    assert_eq!(checker.round().await.written, 0, "the cache caught up: nothing changed");
    assert_eq!(
        api.get("kata-a").await.unwrap().resource_version(),
        current.resource_version()
    );
}
