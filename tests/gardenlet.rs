//! gardenlet's own code drives the extension. `hack/gardenlet-driver` (built by `make testbin`)
//! imports gardenlet's ContainerRuntime component of Gardener v1.149.3
//! (`pkg/component/extensions/containerruntime`) and runs its flows against the extension binary
//! running as a process: Deploy/Wait, a providerConfig change, DeleteStaleResources, Destroy/
//! WaitCleanup, force deletion, and a control-plane migration (Migrate/WaitMigrate on one control
//! plane, Restore from the ShootState on a second one). The readiness, migration and cleanup
//! checks are Gardener's, not ours.

mod common;

use common::*;
use gardener_extension_runtime_kata::testenv::{TestEnv, free_port};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
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
}

impl Extension {
    async fn start(env: &TestEnv, watch: &str) -> Self {
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
            .env("POD_NAME", format!("extension-{watch}"))
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut ext = Self { child, log };
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
    let out_path = env.dir().join(format!("driver-{scenario}-{ns}.out"));
    let err_path = env.dir().join(format!("driver-{scenario}-{ns}.err"));
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
