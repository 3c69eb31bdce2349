//! The extension binary as a process, twice, against one real apiserver: leader election and
//! hand-over, heartbeat, readiness, metrics, logs and shutdown.

mod common;

use common::*;
use gardener_extension_runtime_kata::testenv::{TestEnv, free_port};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_gardener-extension-runtime-kata");

struct Extension {
    child: Child,
    health: u16,
    metrics: u16,
    log: PathBuf,
    started: Instant,
}

impl Extension {
    fn start(name: &str, kubeconfig: &Path, extra: &[&str]) -> Self {
        let (health, metrics) = (free_port().unwrap(), free_port().unwrap());
        let log = TestEnv::shared()
            .dir()
            .join(format!("{name}-{}.log", std::process::id()));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--health-bind-address=127.0.0.1:{health}"))
            .arg(format!("--metrics-bind-address=127.0.0.1:{metrics}"))
            .arg("--disable-webhooks")
            .args(extra)
            .env("POD_NAME", name)
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        Self {
            child,
            health,
            metrics,
            log,
            started: Instant::now(),
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn rss_kib(&self) -> u64 {
        gardener_extension_runtime_kata::testenv::status_kib(self.child.id(), "VmRSS:")
    }
}

impl Drop for Extension {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET on loopback: (status code, body).
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// The value of one sample of the metrics text, 0 when absent.
fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

const SUCCESS: &str = "controller_runtime_reconcile_total{controller=\"containerruntime\",result=\"success\"}";

async fn reconciles(ext: &Extension) -> f64 {
    let (_, body) = get(ext.metrics, "/metrics").await.unwrap_or_default();
    sample(&body, SUCCESS)
}

/// The count of successful reconciles once it reached `want` and stayed there: a reconcile is
/// counted when it returns, which can be after gardenlet's readiness rule already holds.
async fn reconciles_settle_at(ext: &Extension, want: f64) -> f64 {
    eventually(Duration::from_secs(10), &format!("{want} reconciles"), || async {
        match reconciles(ext).await {
            n if n >= want => Ok(()),
            n => Err(format!("{n}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    reconciles(ext).await
}

async fn lease_holder(client: &kube::Client, ns: &str, name: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

async fn shoot_with_pools(client: &kube::Client, env: &TestEnv, prefix: &str, pools: &[&str]) -> String {
    let ns = env.namespace(prefix).await;
    let specs: Vec<_> = pools.iter().map(|p| pool(p, None)).collect();
    create_cluster(client, &ns, shoot("local", &specs, false)).await;
    ns
}

#[tokio::test]
async fn one_leader_reconciles_and_hands_over_on_kill_and_on_sigterm() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ext_ns = env.namespace("ext-leader").await;
    let ns = shoot_with_pools(&client, env, "leader", &["p1", "p2", "p3", "p4"]).await;
    let flags = [
        format!("--leader-election-namespace={ext_ns}"),
        format!("--watch-namespace={ns}"),
        "--heartbeat-renew-interval-seconds=1".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut a = Extension::start("replica-a", env.kubeconfig_path(), &flags);
    let holder = eventually(Duration::from_secs(20), "a leader", || async {
        lease_holder(&client, &ext_ns, "runtime-kata-leader-election")
            .await
            .ok_or("no holder".to_string())
    })
    .await;
    assert!(holder.starts_with("replica-a_"), "{holder}");
    let mut b = Extension::start("replica-b", env.kubeconfig_path(), &flags);

    // both become ready: the leader with a synced cache, the standby waiting for the lease
    for ext in [&a, &b] {
        eventually(Duration::from_secs(20), "ready", || async {
            match get(ext.health, "/readyz").await {
                Some((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    println!("start-to-ready of the leader: {:?}", a.started.elapsed());

    for p in ["p1", "p2", "p3"] {
        create_cr(&client, &ns, p, None).await;
    }
    for p in ["p1", "p2", "p3"] {
        wait_ready(&client, &ns, &format!("kata-{p}")).await;
    }
    // one reconcile per object, all by the leader
    assert_eq!(reconciles_settle_at(&a, 3.0).await, 3.0);
    assert_eq!(reconciles(&b).await, 0.0, "the standby must not reconcile");
    let (_, body) = get(a.metrics, "/metrics").await.unwrap();
    assert_eq!(sample(&body, "leader_election_master_status"), 1.0);
    assert!(sample(&body, "process_resident_memory_bytes") > 0.0);
    assert!(
        sample(
            &body,
            "controller_runtime_reconcile_time_seconds_count{controller=\"containerruntime\"}"
        ) >= 3.0
    );
    assert_eq!(
        sample(
            &body,
            "controller_runtime_max_concurrent_reconciles{controller=\"containerruntime\"}"
        ),
        5.0
    );
    println!("idle RSS: leader {} KiB, standby {} KiB", a.rss_kib(), b.rss_kib());

    // the heartbeat is renewed while the leader runs
    let heartbeat = |client: kube::Client, ns: String| async move {
        Api::<Lease>::namespaced(client, &ns)
            .get("gardener-extension-heartbeat")
            .await
            .ok()
            .and_then(|l| l.spec)
            .and_then(|s| s.renew_time)
            .map(|t| t.0)
    };
    let first = heartbeat(client.clone(), ext_ns.clone())
        .await
        .expect("heartbeat lease");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = heartbeat(client.clone(), ext_ns.clone()).await.unwrap();
    assert!(second > first, "heartbeat renewTime must advance ({first} -> {second})");

    // SIGKILL: no release; the standby takes over once the lease expires (15 s)
    let killed = Instant::now();
    a.signal(libc::SIGKILL);
    a.wait_exit(Duration::from_secs(5));
    let holder = eventually(Duration::from_secs(30), "take-over after SIGKILL", || async {
        match lease_holder(&client, &ext_ns, "runtime-kata-leader-election").await {
            Some(h) if h.starts_with("replica-b_") => Ok(h),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let takeover = killed.elapsed();
    println!("take-over after SIGKILL: {takeover:?} ({holder})");
    assert!(
        takeover < Duration::from_secs(25),
        "within the lease duration plus renew slack"
    );
    create_cr(&client, &ns, "p4", None).await;
    wait_ready(&client, &ns, "kata-p4").await;
    // b reconciles p4; its initial list also sees p1-p3, which are ready and need nothing
    assert!(reconciles_settle_at(&b, 1.0).await >= 1.0);

    // SIGTERM: the leader releases at once and exits 0; a new replica takes over immediately
    let mut c = Extension::start("replica-c", env.kubeconfig_path(), &flags);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let terminated = Instant::now();
    b.signal(libc::SIGTERM);
    assert_eq!(
        b.wait_exit(Duration::from_secs(40)),
        Some(0),
        "clean exit:\n{}",
        b.logs()
    );
    eventually(Duration::from_secs(10), "take-over after SIGTERM", || async {
        match lease_holder(&client, &ext_ns, "runtime-kata-leader-election").await {
            Some(h) if h.starts_with("replica-c_") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let handover = terminated.elapsed();
    println!("hand-over after SIGTERM: {handover:?}");
    assert!(handover < Duration::from_secs(8), "released, not expired: {handover:?}");
    assert!(b.logs().contains("leader lease released"), "{}", b.logs());
    c.signal(libc::SIGTERM);
    assert_eq!(c.wait_exit(Duration::from_secs(40)), Some(0));
    // every duty ends before the process says so: nothing is logged after "stopped"
    for replica in [&b, &c] {
        let logs = replica.logs();
        let last = logs.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default();
        assert!(
            last.contains("\"stopped\""),
            "the last line is not \"stopped\":\n{logs}"
        );
    }

    // JSON logs with Gardener's field names
    let line = b
        .logs()
        .lines()
        .find(|l| l.contains("became leader"))
        .map(str::to_owned)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    for key in ["level", "ts", "logger", "msg"] {
        assert!(v.get(key).is_some(), "{key} missing in {line}");
    }
    assert_eq!(v["logger"], "runtime-kata.app");
}

#[tokio::test]
async fn readyz_waits_for_the_cache_and_metrics_count_the_work() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ext_ns = env.namespace("ext-ready").await;
    // a ServiceAccount that may not list ContainerRuntimes yet: the cache cannot sync
    let kubeconfig = env.service_account_kubeconfig(&ext_ns, "extension").await.unwrap();
    let ns = shoot_with_pools(&client, env, "metrics", &["m1", "m2"]).await;
    let watch = format!("--watch-namespace={ns}");
    let ext = Extension::start("ready", &kubeconfig, &["--leader-election=false", &watch]);
    eventually(Duration::from_secs(20), "health endpoint", || async {
        get(ext.health, "/healthz").await.map(|_| ()).ok_or("down".to_string())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, body) = get(ext.health, "/readyz").await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("controller-cache"), "{body}");
    assert_eq!(get(ext.health, "/healthz").await.unwrap().0, 200);

    // grant what the controller needs; the watch retries and the cache syncs
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let name = format!("test-ready-{ext_ns}");
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        rules: Some(vec![
            rule(
                &["extensions.gardener.cloud"],
                &["containerruntimes", "containerruntimes/status"],
                &["get", "list", "watch", "patch", "update"],
            ),
            rule(&["extensions.gardener.cloud"], &["clusters"], &["get", "list", "watch"]),
            rule(
                &["resources.gardener.cloud"],
                &["managedresources"],
                &["get", "list", "watch", "create", "patch", "delete"],
            ),
            rule(&[""], &["secrets"], &["create", "delete"]),
        ]),
        ..Default::default()
    };
    Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name,
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "extension".into(),
            namespace: Some(ext_ns.clone()),
            ..Default::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "ready after RBAC", || async {
        match get(ext.health, "/readyz").await {
            Some((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let before = reconciles(&ext).await;
    create_cr(&client, &ns, "m1", None).await;
    create_cr(&client, &ns, "m2", None).await;
    wait_ready(&client, &ns, "kata-m1").await;
    wait_ready(&client, &ns, "kata-m2").await;
    assert_eq!(
        reconciles_settle_at(&ext, before + 2.0).await - before,
        2.0,
        "one reconcile per new object"
    );
    let (_, body) = get(ext.metrics, "/metrics").await.unwrap();
    assert_eq!(
        sample(
            &body,
            "controller_runtime_reconcile_errors_total{controller=\"containerruntime\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(
            &body,
            "controller_runtime_active_workers{controller=\"containerruntime\"}"
        ),
        0.0
    );
    assert!(body.contains("workqueue_depth{name=\"containerruntime\"}"), "{body}");
    assert!(
        sample(&body, "rest_client_requests_total{method=\"PATCH\",code=\"200\"}") >= 6.0,
        "{body}"
    );
}

#[test]
fn a_fatal_start_up_error_exits_non_zero_with_a_clear_message() {
    let out = Command::new(BIN)
        .args(["--kubeconfig", "/nonexistent/kubeconfig", "--leader-election=false"])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reading kubeconfig /nonexistent/kubeconfig"), "{err}");
}

/// A TCP proxy from a loopback port to the apiserver that can be cut, as a network partition
/// between one replica and the apiserver: once cut, open connections are dropped and new ones
/// are accepted but never answered (requests hang, as across a real partition).
struct Partition {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Partition {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut down, _)) = listener.accept().await {
                if *cut_rx.borrow() {
                    held.push(down);
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = cut_rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Self { port, cut, task }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_partitioned_leader_steps_down_before_another_replica_can_take_the_lease() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ext_ns = env.namespace("ext-partition").await;
    let ns = shoot_with_pools(&client, env, "partition", &["p1"]).await;
    let upstream = env.url().trim_start_matches("https://").to_string();
    let proxy = Partition::start(upstream).await;
    let admin = std::fs::read_to_string(env.kubeconfig_path()).unwrap();
    let via_proxy = env.dir().join(format!("kubeconfig-partition-{}", std::process::id()));
    std::fs::write(
        &via_proxy,
        admin.replace(env.url(), &format!("https://127.0.0.1:{}", proxy.port)),
    )
    .unwrap();
    let flags = [
        format!("--leader-election-namespace={ext_ns}"),
        format!("--watch-namespace={ns}"),
        "--heartbeat-renew-interval-seconds=1".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut a = Extension::start("partitioned-a", &via_proxy, &flags);
    eventually(Duration::from_secs(20), "a leads", || async {
        match lease_holder(&client, &ext_ns, "runtime-kata-leader-election").await {
            Some(h) if h.starts_with("partitioned-a_") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let _b = Extension::start("partitioned-b", env.kubeconfig_path(), &flags);
    tokio::time::sleep(Duration::from_secs(3)).await;

    proxy.cut();
    let cut = Instant::now();
    // a must stop by itself, non-zero, within the renew deadline (10 s) plus one retry
    let a_exit = tokio::task::spawn_blocking(move || {
        let code = a.wait_exit(Duration::from_secs(30));
        (code, Instant::now(), a.logs())
    });
    let b_leads = eventually(Duration::from_secs(40), "b takes over", || async {
        match lease_holder(&client, &ext_ns, "runtime-kata-leader-election").await {
            Some(h) if h.starts_with("partitioned-b_") => Ok(Instant::now()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let (code, a_stopped, logs) = a_exit.await.unwrap();
    println!(
        "partitioned leader stopped after {:?}, standby took over after {:?}",
        a_stopped - cut,
        b_leads - cut
    );
    assert_eq!(code, Some(1), "the cut-off leader exits non-zero:\n{logs}");
    assert!(
        a_stopped - cut < Duration::from_secs(13),
        "within the renew deadline: {:?}",
        a_stopped - cut
    );
    assert!(
        a_stopped < b_leads,
        "two leaders at once: a stopped {:?} after b took over",
        a_stopped - b_leads
    );
    assert!(logs.contains("renew deadline"), "{logs}");
}
