//! gardenlet's own code drives the extension. `hack/gardenlet-driver` (built by `make testbin`)
//! imports gardenlet's ContainerRuntime component of Gardener v1.149.3
//! (`pkg/component/extensions/containerruntime`) and runs its flows against the extension binary
//! running as a process: Deploy/Wait, a providerConfig change, DeleteStaleResources, Destroy/
//! WaitCleanup, force deletion, the deletion of six pools at once, and a control-plane migration
//! (Migrate/WaitMigrate on one control plane, Restore from the ShootState on a second one). The
//! readiness, migration and cleanup checks are Gardener's, not ours. So is the folding of the
//! extension's health reports into the Shoot's `SystemComponentsHealthy` condition: the driver's
//! `health` scenario calls the shoot care controller's checker
//! (`pkg/utils/kubernetes/health/checker`, `HealthChecker.CheckExtensionCondition`).

mod common;

use common::*;
use gardener_extension_runtime_kata::api::containerruntime::ContainerRuntime;
use gardener_extension_runtime_kata::api::managedresource::ManagedResource;
use gardener_extension_runtime_kata::testenv::{TestEnv, free_port};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_gardener-extension-runtime-kata");
/// Far above what a scenario takes (seconds); gardenlet's own waits in the driver time out after 60 s.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(240);

/// `$TESTBIN_DIR/gardenlet-driver`, else `.testbin/` at the repository root; missing is a failure.
fn driver_path() -> PathBuf {
    let dir = std::env::var_os("TESTBIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".testbin"));
    let path = dir.join("gardenlet-driver");
    assert!(
        path.is_file(),
        "{} not found: run `make testbin` (hack/testbin.sh builds hack/gardenlet-driver)",
        path.display()
    );
    path
}

/// The extension binary as a process against one control plane, watching one shoot namespace.
struct Extension {
    child: Child,
    log: PathBuf,
    /// Its leader election namespace, which also holds its heartbeat Lease.
    lease_ns: String,
}

impl Extension {
    async fn start(env: &TestEnv, watch: &str) -> Self {
        Self::start_with(env, watch, &[]).await
    }

    async fn start_with(env: &TestEnv, watch: &str, extra: &[&str]) -> Self {
        let lease_ns = env.namespace("ext-gardenlet").await;
        let (health, metrics) = (free_port().unwrap(), free_port().unwrap());
        let log = env.dir().join(format!("extension-{watch}.log"));
        let child = Command::new(BIN)
            .arg(format!("--kubeconfig={}", env.kubeconfig_path().display()))
            .arg(format!("--health-bind-address=127.0.0.1:{health}"))
            .arg(format!("--metrics-bind-address=127.0.0.1:{metrics}"))
            .arg("--disable-webhooks")
            .arg(format!("--leader-election-namespace={lease_ns}"))
            .arg(format!("--watch-namespace={watch}"))
            .args(extra)
            .env("POD_NAME", format!("extension-{watch}"))
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut ext = Self { child, log, lease_ns };
        let deadline = Instant::now() + Duration::from_secs(30);
        while readyz(health).await != Some(200) {
            if let Some(status) = ext.child.try_wait().unwrap() {
                panic!("the extension exited ({status}):\n{}", ext.logs());
            }
            assert!(
                Instant::now() < deadline,
                "the extension is not ready after 30 s:\n{}",
                ext.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ext
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Extension {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn readyz(port: u16) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// Runs one scenario of the driver and returns its stdout; any failure (exit code, timeout) fails
/// the test with the driver's output and the extension's log.
async fn run_driver(env: &TestEnv, ns: &str, scenario: &str, extra: &[String], ext: &Extension) -> String {
    // numbered: a test may run a scenario more than once (health)
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_path = env.dir().join(format!("driver-{scenario}-{ns}-{run}.out"));
    let err_path = env.dir().join(format!("driver-{scenario}-{ns}-{run}.err"));
    let started = Instant::now();
    let mut child = Command::new(driver_path())
        .arg(format!("--kubeconfig={}", env.kubeconfig_path().display()))
        .arg(format!("--namespace={ns}"))
        .arg(format!("--scenario={scenario}"))
        .args(extra)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("starting gardenlet-driver");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > DRIVER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let outcome = match status {
        Some(s) if s.success() => {
            println!(
                "gardenlet-driver --scenario={scenario}: {:?}\n{stderr}",
                started.elapsed()
            );
            return stdout;
        }
        Some(s) => format!("failed ({s})"),
        None => format!("did not finish within {DRIVER_TIMEOUT:?}"),
    };
    panic!(
        "gardenlet-driver --scenario={scenario} in {ns} {outcome}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- extension log\n{}",
        ext.logs()
    );
}

/// The `STATE <json>` line the driver prints.
fn state_line(stdout: &str) -> Value {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("STATE "))
        .unwrap_or_else(|| panic!("no STATE line in the driver's output:\n{stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("STATE is no JSON ({e}): {line}"))
}

fn kata_pool<'a>(name: &'a str, hypervisor: &str) -> PoolSpec<'a> {
    pool(name, Some(kata_config(json!({"hypervisors": [hypervisor]}))))
}

/// A namespace of exactly this name (the destination seed of a migration uses the shoot's).
async fn create_namespace(client: &kube::Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("gardener.cloud/role".to_string(), "shoot".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

#[tokio::test]
async fn lifecycle_deploy_change_remove_a_pool_and_destroy() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("gl-lifecycle").await;
    create_cluster(
        &client,
        &ns,
        shoot("local", &[kata_pool("a", "qemu"), kata_pool("b", "qemu")], false),
    )
    .await;
    let ext = Extension::start(env, &ns).await;
    run_driver(env, &ns, "lifecycle", &[], &ext).await;
}

#[tokio::test]
async fn force_deletion_does_not_wait_for_the_shoot() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("gl-force").await;
    // gardener-apiserver accepts the confirmation only on a shoot that is being deleted
    let mut shoot = shoot("local", &[kata_pool("a", "qemu")], false);
    shoot["metadata"]["annotations"] = json!({"confirmation.gardener.cloud/force-deletion": "true"});
    shoot["metadata"]["deletionTimestamp"] = json!(timestamp_now());
    create_cluster(&client, &ns, shoot).await;
    let ext = Extension::start(env, &ns).await;
    run_driver(env, &ns, "force-delete", &[], &ext).await;
}

/// The pool's providerConfig names no hypervisors, so the pool's recorded default decides. The
/// state handed over is that of a pool that started with the legacy default (with Firecracker):
/// the restored pool must keep it, which it can only learn from the state gardenlet's Restore
/// writes into `status.state` before asking for the restore.
#[tokio::test]
async fn control_plane_migration_to_a_second_seed_keeps_the_pools_record() {
    let default_pool = || [pool("a", Some(kata_config(json!({}))))];
    // source seed: reconcile, migrate, hand the state over (the driver then deletes the objects)
    let source = TestEnv::shared();
    let client = source.client().await;
    let ns = source.namespace("gl-migrate").await;
    create_cluster(&client, &ns, shoot("local", &default_pool(), false)).await;
    let ext = Extension::start(source, &ns).await;
    let migrated = state_line(&run_driver(source, &ns, "migrate", &[], &ext).await);
    drop(ext);
    println!("migrated state: {migrated}");
    assert_eq!(migrated["kind"], "KataStatus", "{migrated}");
    assert_eq!(migrated["defaultHypervisors"], json!(["qemu", "clh"]), "{migrated}");
    let mut handed_over = migrated.clone();
    handed_over["defaultHypervisors"] = json!(["qemu", "clh", "fc"]);

    // destination seed: a control plane of its own, the same shoot namespace and Cluster
    let dest = TestEnv::start().await.expect("the destination control plane");
    let dest_client = dest.client().await;
    create_namespace(&dest_client, &ns).await;
    create_cluster(&dest_client, &ns, shoot("local", &default_pool(), false)).await;
    let dest_ext = Extension::start(&dest, &ns).await;
    let state_file = dest.dir().join("shootstate-kata-a.json");
    std::fs::write(&state_file, handed_over.to_string()).unwrap();
    let restored = state_line(
        &run_driver(
            &dest,
            &ns,
            "restore",
            &[format!("--state-file={}", state_file.display())],
            &dest_ext,
        )
        .await,
    );
    println!("restored state: {restored}");
    assert_eq!(
        restored["defaultHypervisors"],
        json!(["qemu", "clh", "fc"]),
        "{restored}"
    );
    assert_eq!(
        restored["appliedConfiguration"]["hypervisors"],
        json!(["qemu", "clh", "fc"]),
        "the restored pool applies its recorded default: {restored}"
    );
}

#[tokio::test]
async fn six_pools_deleted_at_once_leave_nothing_behind() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("gl-mass-delete").await;
    create_cluster(&client, &ns, shoot("local", &[kata_pool("a", "qemu")], false)).await;
    let ext = Extension::start(env, &ns).await;
    // the driver asserts that no ContainerRuntime and no ManagedResource is left
    run_driver(env, &ns, "mass-delete", &[], &ext).await;
}

const SHARED_MR: &str = "extension-runtime-kata";

fn installation_mr(pool: &str) -> String {
    format!("extension-runtime-kata-installation-{pool}")
}

/// What gardener-resource-manager says about one ManagedResource.
enum Grm<'a> {
    Healthy,
    /// ResourcesHealthy False with this message.
    Unhealthy(&'a str),
    /// A rollout: ResourcesProgressing True with this message.
    RollingOut(&'a str),
}

/// A stand-in for gardener-resource-manager (none runs against this control plane): writes the
/// status it would write on the ManagedResource's status subresource, for the current generation.
async fn resource_manager_reports(client: &kube::Client, ns: &str, name: &str, says: Grm<'_>) {
    let api = Api::<ManagedResource>::namespaced(client.clone(), ns);
    let generation = api.get(name).await.unwrap().metadata.generation.unwrap();
    let now = timestamp_now();
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": now, "lastUpdateTime": now})
    };
    let healthy = cond(
        "ResourcesHealthy",
        "True",
        "ResourcesHealthy",
        "All resources are healthy.",
    );
    let rolled_out = cond(
        "ResourcesProgressing",
        "False",
        "ResourcesRolledOut",
        "All resources have been fully rolled out.",
    );
    let (health, progressing) = match says {
        Grm::Healthy => (healthy, rolled_out),
        Grm::Unhealthy(m) => (cond("ResourcesHealthy", "False", "DaemonSetUnhealthy", m), rolled_out),
        Grm::RollingOut(m) => (healthy, cond("ResourcesProgressing", "True", "DaemonSetProgressing", m)),
    };
    let status = json!({"status": {"observedGeneration": generation, "conditions": [
        cond("ResourcesApplied", "True", "ApplySucceeded", "All resources are applied."),
        health,
        progressing,
    ]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap_or_else(|e| panic!("the resource manager stand-in patching {ns}/{name}: {e}"));
}

/// Waits until the extension's health loop has reported `status` on every pool's ContainerRuntime
/// (gardenlet folds no report into True as well, so True alone does not show that it reported).
async fn extension_reported(client: &kube::Client, ns: &str, pools: &[&str], status: &str) {
    let api = Api::<ContainerRuntime>::namespaced(client.clone(), ns);
    let what = format!("the extension to report SystemComponentsHealthy {status} for pools {pools:?}");
    eventually(Duration::from_secs(30), &what, || {
        let api = api.clone();
        async move {
            for pool in pools {
                let cr = api.get(&format!("kata-{pool}")).await.map_err(|e| e.to_string())?;
                let report = cr
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "SystemComponentsHealthy"));
                match report {
                    Some(c) if c.status == status => {}
                    other => return Err(format!("kata-{pool}: {other:?}")),
                }
            }
            Ok(())
        }
    })
    .await
}

/// The Shoot's SystemComponentsHealthy as gardenlet folds it: the driver polls until it has
/// `status` and `reason`, and returns (reason, message) of its `CONDITION` line.
async fn shoot_condition(env: &TestEnv, ns: &str, ext: &Extension, status: &str, reason: &str) -> (String, String) {
    let extra = [
        format!("--expect-status={status}"),
        format!("--expect-reason={reason}"),
        format!("--heartbeat-namespace={}", ext.lease_ns),
    ];
    let out = run_driver(env, ns, "health", &extra, ext).await;
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("CONDITION "))
        .unwrap_or_else(|| panic!("no CONDITION line in the driver's output:\n{out}"));
    let mut parts = line.splitn(3, ' ');
    let (got_status, got_reason, message) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    println!("Shoot SystemComponentsHealthy: {got_status} {got_reason}: {message}");
    assert_eq!((got_status, got_reason), (status, reason), "{line}");
    (got_reason.to_string(), message.to_string())
}

/// The extension's health reports (every second here) as gardenlet's shoot care controller folds
/// them into the Shoot's SystemComponentsHealthy, with gardener-resource-manager played by
/// `resource_manager_reports`: healthy is True, an unhealthy installation is False naming the pool,
/// a rollout is Progressing, and a rollout that outlasts the extension's progressing threshold is
/// False. The driver also applies gardenlet's stale-report check to the extension's heartbeat Lease.
#[tokio::test]
async fn gardenlet_folds_the_health_reports_into_the_shoot_condition() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("gl-health").await;
    create_cluster(
        &client,
        &ns,
        shoot("local", &[kata_pool("a", "qemu"), kata_pool("b", "qemu")], false),
    )
    .await;
    // the shared apiserver stands in for the shoot; its nodes are the ones this test registers
    env.grant_shoot_access(&client, &ns).await.unwrap();
    let threshold = 10;
    let ext = Extension::start_with(
        env,
        &ns,
        &[
            "--health-check-sync-period-seconds=1",
            &format!("--health-check-progressing-threshold-seconds={threshold}"),
        ],
    )
    .await;
    run_driver(env, &ns, "deploy", &["--pools=a,b".to_string()], &ext).await;
    let all = [SHARED_MR.to_string(), installation_mr("a"), installation_mr("b")];

    // all healthy
    for mr in &all {
        resource_manager_reports(&client, &ns, mr, Grm::Healthy).await;
    }
    extension_reported(&client, &ns, &["a", "b"], "True").await;
    shoot_condition(env, &ns, &ext, "True", "SystemComponentsRunning").await;

    // pool b's installation is unhealthy
    let unhealthy = "DaemonSet \"kube-system/kata-deploy-b\" is unhealthy: too many unavailable pods found (1/3)";
    resource_manager_reports(&client, &ns, &installation_mr("b"), Grm::Unhealthy(unhealthy)).await;
    let (_, message) = shoot_condition(env, &ns, &ext, "False", "ContainerRuntimeUnhealthyReport").await;
    assert!(
        message.starts_with(&format!(
            "ContainerRuntime extension ({ns}/kata-b) reports failing health check: pool b: "
        )),
        "{message}"
    );
    assert!(
        message.contains(&installation_mr("b")) && message.contains(unhealthy) && !message.contains("pool a"),
        "{message}"
    );

    // healthy again
    resource_manager_reports(&client, &ns, &installation_mr("b"), Grm::Healthy).await;
    extension_reported(&client, &ns, &["a", "b"], "True").await;
    shoot_condition(env, &ns, &ext, "True", "SystemComponentsRunning").await;

    // a node of pool b has been unable to run fc for ten minutes (its node-labeler said so);
    // stand-in for the kubelet and the node-labeler: the test writes the Node and its conditions
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone());
    let node_name = format!("{ns}-b-1");
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({"metadata": {"name": node_name,
        "labels": {"worker.gardener.cloud/pool": "b", "containerruntime.worker.gardener.cloud/kata": "true"}}}))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let (now, ten_minutes_ago) = (
        timestamp_now(),
        (k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_mins(10)).to_string(),
    );
    let cannot = "can run: qemu; cannot run fc: the devmapper thin-pool devpool is not active";
    nodes
        .patch_status(
            &node_name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready",
             "lastHeartbeatTime": now, "lastTransitionTime": now},
            {"type": "KataRuntimeReady", "status": "False", "reason": "DevmapperPoolMissing", "message": cannot,
             "lastHeartbeatTime": now, "lastTransitionTime": ten_minutes_ago}]}})),
        )
        .await
        .unwrap();
    let (_, message) = shoot_condition(env, &ns, &ext, "False", "ContainerRuntimeUnhealthyReport").await;
    assert_eq!(
        message,
        format!(
            "ContainerRuntime extension ({ns}/kata-b) reports failing health check: pool b: \
             1 of 1 nodes cannot run every shim of the pool: node {node_name}: {cannot}"
        )
    );
    nodes.delete(&node_name, &Default::default()).await.unwrap();
    extension_reported(&client, &ns, &["a", "b"], "True").await;
    shoot_condition(env, &ns, &ext, "True", "SystemComponentsRunning").await;

    // a rollout of pool b's kata-deploy
    let rollout = "DaemonSet \"kube-system/kata-deploy-b\" is progressing: 1 of 3 replica(s) have been updated";
    resource_manager_reports(&client, &ns, &installation_mr("b"), Grm::RollingOut(rollout)).await;
    let started = Instant::now();
    let (_, message) = shoot_condition(env, &ns, &ext, "Progressing", "ContainerRuntimeHealthCheckProgressing").await;
    assert!(
        message.starts_with("pool b: ") && message.contains(rollout) && !message.contains("pool a"),
        "{message}"
    );

    // a rollout that does not finish within the extension's progressing threshold
    let (_, message) = shoot_condition(env, &ns, &ext, "False", "ContainerRuntimeUnhealthyReport").await;
    assert!(
        started.elapsed() >= Duration::from_secs(threshold - 1),
        "False after {:?}, before the progressing threshold of {threshold} s",
        started.elapsed()
    );
    assert!(
        message.starts_with(&format!(
            "ContainerRuntime extension ({ns}/kata-b) reports failing health check: pool b: "
        )) && message.contains(rollout),
        "{message}"
    );
}
