//! `make local`: the extension's main job on a local control plane, no cluster needed.
//!
//! Starts a seed (etcd + kube-apiserver built by `make testbin`), a second apiserver as the shoot,
//! and the shoot's gardener-resource-manager between them, configured as gardenlet configures
//! it; loads the example shoot from `example/local/` (a Cluster and one kata ContainerRuntime per
//! pool, as gardenlet creates them), runs the extension (the same code as the binary, with leader
//! election and heartbeat) and shows what landed in the shoot. `--keep` leaves everything
//! running for kubectl until Ctrl-C.

use anyhow::Context;
use clap::Parser;
use gardener_extension_runtime_kata::api::managedresource::ManagedResource;
use gardener_extension_runtime_kata::api::osc::OperatingSystemConfig;
use gardener_extension_runtime_kata::api::{Cluster, ContainerRuntime, TIMESTAMP_ANNOTATION};
use gardener_extension_runtime_kata::app;
use gardener_extension_runtime_kata::cli::Cli;
use gardener_extension_runtime_kata::extension::readiness::not_ready_reason;
use gardener_extension_runtime_kata::managedresources::{AppliedState, applied_state};
use gardener_extension_runtime_kata::runtime::logging::{self, LogFormat, LogLevel};
use gardener_extension_runtime_kata::runtime::shutdown::Shutdown;
use gardener_extension_runtime_kata::testenv::{
    ForegroundDeletionStandIn, ResourceManager, ResourceManagerOptions, TestEnv, deploy_gardener_access,
};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::ResourceExt;
use kube::api::ListParams;
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::{Duration, Instant};

const SHOOT_NS: &str = "shoot--local--demo";
const EXTENSION_NS: &str = "extension-runtime-kata";

fn read<T: serde::de::DeserializeOwned>(path: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    serde_saphyr::from_str(&text).with_context(|| format!("decoding {path}"))
}

async fn namespace(client: &kube::Client, name: &str, shoot: bool) -> anyhow::Result<()> {
    let labels = shoot.then(|| [("gardener.cloud/role".to_string(), "shoot".to_string())].into());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels,
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

/// Writes a reconcile OSC for `pool` as gardenlet does and returns what the apiserver stored.
async fn store_osc(client: &kube::Client, pool: &str) -> anyhow::Result<OperatingSystemConfig> {
    let osc: OperatingSystemConfig = serde_json::from_value(serde_json::json!({
        "apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "OperatingSystemConfig",
        "metadata": {"name": format!("osc-{pool}"), "namespace": SHOOT_NS, "labels": {"worker.gardener.cloud/pool": pool}},
        "spec": {"type": "gardenlinux", "purpose": "reconcile",
                 "files": [{"path": "/etc/motd", "content": {"inline": {"encoding": "", "data": "hello"}}}],
                 "units": [{"name": "containerd.service", "command": "restart"}],
                 "criConfig": {"name": "containerd", "containerd": {"sandboxImage": "registry.k8s.io/pause:3.10"}}}
    }))?;
    let api: Api<OperatingSystemConfig> = Api::namespaced(client.clone(), SHOOT_NS);
    Ok(api.create(&PostParams::default(), &osc).await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let keep = std::env::args().any(|a| a == "--keep");
    logging::init(LogLevel::Info, LogFormat::Text);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    println!("==> starting a local seed and a shoot (etcd + kube-apiserver from .testbin)");
    let env = TestEnv::start().await.context("starting the local seed")?;
    let shoot_env = TestEnv::start_shoot().await.context("starting the local shoot")?;
    let client = env.client().await;
    let shoot = shoot_env.client().await;
    println!(
        "    seed {}, shoot {} ({:.1?})",
        env.url(),
        shoot_env.url(),
        started.elapsed()
    );

    println!("==> loading the example shoot from example/local/");
    namespace(&client, SHOOT_NS, true).await?;
    println!("==> starting the shoot's gardener-resource-manager ({SHOOT_NS} in the seed -> shoot)");
    let rm = ResourceManager::start(&env, &shoot_env, ResourceManagerOptions::for_shoot(SHOOT_NS))
        .await
        .context("starting gardener-resource-manager (make testbin builds it)")?;
    // as gardenlet does: the shoot access the extension's health checks read the shoot's nodes
    // with (the resource manager's token requestor writes its token)
    deploy_gardener_access(&client, SHOOT_NS, &shoot_env)
        .await
        .context("deploying the shoot access gardener-internal")?;
    // no kube-controller-manager in the shoot: release foreground-deleted DaemonSets
    let _gc = ForegroundDeletionStandIn::start(shoot.clone());
    namespace(&client, EXTENSION_NS, false).await?;
    let cluster: Cluster = read("example/local/cluster.yaml")?;
    Api::<Cluster>::all(client.clone())
        .create(&PostParams::default(), &cluster)
        .await?;
    let crs: Api<ContainerRuntime> = Api::namespaced(client.clone(), SHOOT_NS);
    let mut names = Vec::new();
    for pool in ["vm", "fc"] {
        let mut cr: ContainerRuntime = read(&format!("example/local/containerruntime-{pool}.yaml"))?;
        cr.annotations_mut().insert(
            TIMESTAMP_ANNOTATION.into(),
            k8s_openapi::jiff::Timestamp::now().to_string(),
        );
        crs.create(&PostParams::default(), &cr).await?;
        names.push(cr.name_any());
    }

    println!("==> running the extension (leader election and heartbeat in {EXTENSION_NS})");
    let kubeconfig = env.kubeconfig_path().display().to_string();
    let args = Cli::parse_from([
        "gardener-extension-runtime-kata",
        "--kubeconfig",
        &kubeconfig,
        "--leader-election-namespace",
        EXTENSION_NS,
        "--metrics-bind-address",
        "127.0.0.1:0",
        "--health-bind-address",
        "127.0.0.1:0",
        "--log-format",
        "text",
        // the apiserver calls the webhook at https://127.0.0.1:<free port>
        "--webhook-config-mode",
        "url",
        "--webhook-config-server-host",
        "127.0.0.1",
        "--webhook-config-server-port",
        "0",
    ])
    .run;
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let extension = tokio::spawn(app::run(args, shutdown.clone()));

    // the webhook registers itself at start-up; wait for it before writing OSCs
    let webhooks: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
        Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while webhooks.get_opt("gardener-extension-runtime-kata").await?.is_none() {
        anyhow::ensure!(Instant::now() < deadline, "the webhook did not register");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for name in &names {
        loop {
            let cr = crs.get(name).await?;
            match not_ready_reason(&cr) {
                None => break,
                Some(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                Some(reason) => anyhow::bail!("{name} did not become ready: {reason}"),
            }
        }
    }
    println!("\n==> ContainerRuntimes (gardenlet's readiness rule holds for all)");
    for cr in crs.list(&Default::default()).await? {
        let op = cr.status.as_ref().and_then(|s| s.last_operation.clone());
        if let Some(op) = op {
            println!(
                "    {:<8} {:?} {:?} ({}), finalizers {:?}",
                cr.name_any(),
                op.type_,
                op.state,
                op.description,
                cr.finalizers()
            );
        }
    }
    println!("\n==> ManagedResources in {SHOOT_NS}, as gardener-resource-manager reports them");
    let mrs: Api<ManagedResource> = Api::namespaced(client.clone(), SHOOT_NS);
    for mr in mrs.list(&Default::default()).await? {
        let name = mr.name_any();
        let mut state = applied_state(&mr);
        while state != AppliedState::Applied && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            state = applied_state(&mrs.get(&name).await?);
        }
        println!("    {name:<44} {state:?}");
        anyhow::ensure!(
            state == AppliedState::Applied,
            "{name} not applied; log:\n{}",
            rm.log_tail()
        );
    }
    println!("\n==> What landed in the shoot");
    let managed = ListParams::default().labels("app.kubernetes.io/managed-by=gardener-extension-runtime-kata");
    for rc in Api::<RuntimeClass>::all(shoot.clone()).list(&managed).await? {
        let name = rc.name_any();
        let sel = rc.scheduling.and_then(|s| s.node_selector).unwrap_or_default();
        let sel: Vec<_> = sel.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "    RuntimeClass {name:<12} handler {:<10} nodeSelector {}",
            rc.handler,
            sel.join(",")
        );
    }
    for ds in Api::<DaemonSet>::namespaced(shoot.clone(), "kube-system")
        .list(&managed)
        .await?
    {
        let name = ds.name_any();
        let pod = ds.spec.and_then(|s| s.template.spec).unwrap_or_default();
        let images: Vec<_> = pod.containers.iter().filter_map(|c| c.image.clone()).collect();
        let sel: Vec<_> = pod
            .node_selector
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "    DaemonSet kube-system/{name} images {images:?} nodeSelector {}",
            sel.join(",")
        );
    }
    for sa in Api::<ServiceAccount>::namespaced(shoot.clone(), "kube-system")
        .list(&managed)
        .await?
    {
        println!("    ServiceAccount kube-system/{}", sa.name_any());
    }
    for cr in Api::<ClusterRole>::all(shoot.clone()).list(&managed).await? {
        println!("    ClusterRole {}", cr.name_any());
    }
    for crb in Api::<ClusterRoleBinding>::all(shoot.clone()).list(&managed).await? {
        println!("    ClusterRoleBinding {}", crb.name_any());
    }
    println!("\n==> OperatingSystemConfigs written through the apiserver (mutated by the webhook for pool fc only)");
    for pool in ["vm", "fc"] {
        let osc = store_osc(&client, pool).await?;
        let files: Vec<_> = osc.spec.files.iter().map(|f| f.path.clone()).collect();
        let units: Vec<_> = osc.spec.units.iter().map(|u| u.name.clone()).collect();
        let plugins: Vec<_> = osc.spec.containerd_plugins().iter().map(|p| p.path.join(".")).collect();
        println!("    osc-{pool:<3} files {files:?}, units {units:?}, containerd plugins {plugins:?}");
    }

    let leases: Api<Lease> = Api::namespaced(client.clone(), EXTENSION_NS);
    println!("\n==> Leases in {EXTENSION_NS}");
    for lease in leases.list(&Default::default()).await? {
        let spec = lease.spec.clone().unwrap_or_default();
        println!(
            "    {:<32} holder {:?}, renewed {:?}",
            lease.name_any(),
            spec.holder_identity.unwrap_or_default(),
            spec.renew_time.map(|t| t.0.to_string()).unwrap_or_default()
        );
    }
    println!("\nDone in {:.1?}.", started.elapsed());
    if keep {
        println!(
            "Still running; seed: `KUBECONFIG={kubeconfig} kubectl ...`, shoot: `KUBECONFIG={} kubectl ...`, Ctrl-C to stop.",
            shoot_env.kubeconfig_path().display()
        );
    } else {
        shutdown.trigger();
    }
    extension.await??;
    Ok(())
}
