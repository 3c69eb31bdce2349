//! `make bench`: reconcile throughput, API cost, memory and CPU of the real extension binary at
//! seed scale, next to a physical-limit baseline, against the real kube-apiserver.
//!
//! For each N: N kata ContainerRuntimes in N/2 shoot namespaces (two pools each, with their
//! Cluster), created as gardenlet does (operation annotation + timestamp). Measures the time until
//! all satisfy gardenlet's readiness rule, then the same for deleting all of them. The baseline is
//! a plain client performing the writes the extension performs per object, with the same
//! concurrency. Every namespace gets a shoot access secret for the same apiserver, which plays
//! every shoot with `BENCH_NODES` (default 10) kata nodes, so the health rounds read real-sized
//! nodes. `BENCH_BINARY` runs another extension binary (A/B). Prints Markdown.

use futures::{StreamExt, stream};
use gardener_extension_runtime_kata::api::containerruntime::ContainerRuntime;
use gardener_extension_runtime_kata::api::managedresource::ManagedResource;
use gardener_extension_runtime_kata::api::{Cluster, ClusterSpec, OPERATION_ANNOTATION, TIMESTAMP_ANNOTATION};
use gardener_extension_runtime_kata::extension::readiness::not_ready_reason;
use gardener_extension_runtime_kata::managedresources::{Manifests, build_managed_resource, build_secret};
use gardener_extension_runtime_kata::testenv::{TestEnv, free_port, status_kib};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONCURRENCY: usize = 5;
/// The extension's health check period (its default).
const HEALTH_SYNC_SECONDS: u64 = 30;
/// How long the health checks' request rate is sampled (two rounds).
const HEALTH_WINDOW: Duration = Duration::from_secs(60);

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    // SAFETY: sysconf has no preconditions
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / ticks
}

async fn metrics(port: u16) -> String {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf).await;
    buf
}

/// rest_client_requests_total summed by verb.
fn requests_by_verb(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("rest_client_requests_total{")) {
        let verb = line
            .split("method=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        let v: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *out.entry(verb.to_string()).or_default() += v;
    }
    out
}

fn diff(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>, n: usize) -> String {
    after
        .iter()
        .map(|(k, v)| (k, (v - before.get(k).copied().unwrap_or(0.0)) / n as f64))
        .filter(|(k, v)| *v > 0.0 && k.as_str() != "WATCH")
        .map(|(k, v)| format!("{k} {v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Requests per minute by verb between two snapshots `window` apart ("none" when there were none).
fn per_minute(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>, window: Duration) -> String {
    let per_min = diff(after, before, 1)
        .split(", ")
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (verb, v) = s.split_once(' ').unwrap_or((s, "0"));
            format!(
                "{verb} {:.0}",
                v.parse::<f64>().unwrap_or(0.0) * 60.0 / window.as_secs_f64()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    if per_min.is_empty() { "none".into() } else { per_min }
}

fn health_of(cr: &ContainerRuntime) -> Option<&str> {
    cr.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "SystemComponentsHealthy")
        .map(|c| c.status.as_str())
}

/// Stand-in for the shoots' gardener-resource-manager: reports every ManagedResource of the
/// namespaces applied, and healthy or not, as it would after a successful apply.
async fn resource_manager_reports(client: &Client, namespaces: &[String], healthy: bool) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let health = if healthy { "True" } else { "False" };
    let cond = |t: &str, s: &str| json!({"type": t, "status": s, "reason": t, "message": "", "lastTransitionTime": now, "lastUpdateTime": now});
    stream::iter(namespaces.iter())
        .for_each_concurrent(16, |ns| {
            let cond = &cond;
            async move {
                let api = Api::<ManagedResource>::namespaced(client.clone(), ns);
                for mr in api.list(&Default::default()).await.unwrap() {
                    let status = json!({"status": {"observedGeneration": mr.metadata.generation,
                        "conditions": [cond("ResourcesApplied", "True"), cond("ResourcesHealthy", health), cond("ResourcesProgressing", "False")]}});
                    api.patch_status(&mr.name_any(), &PatchParams::default(), &Patch::Merge(&status))
                        .await
                        .unwrap();
                }
            }
        })
        .await;
}

fn cr(ns: &str, pool: &str, label: &str) -> ContainerRuntime {
    let mut cr = ContainerRuntime::for_pool("kata", pool, None);
    cr.metadata.namespace = Some(ns.into());
    if label.starts_with("base") {
        // the baseline's objects stay on the apiserver during the extension's run: another class
        // keeps them out of the extension's health checks (as objects of another extension would be)
        cr.spec.class = Some("bench-baseline".into());
    }
    cr.labels_mut().insert("bench".into(), label.into());
    cr.annotations_mut()
        .insert(OPERATION_ANNOTATION.into(), "reconcile".into());
    cr.annotations_mut().insert(
        TIMESTAMP_ANNOTATION.into(),
        k8s_openapi::jiff::Timestamp::now().to_string(),
    );
    cr
}

/// Stand-in for the kubelets of the (one, shared) stand-in shoot: `count` kata nodes of pools a
/// and b, each with the status a kubelet reports (40 images, addresses, capacity, node info) and
/// the node-labeler's `KataRuntimeReady`, so that every shoot read lists and decodes real-sized
/// nodes.
async fn register_nodes(client: &Client, count: usize) {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    stream::iter(0..count)
        .for_each_concurrent(8, |i| {
            let nodes = nodes.clone();
            async move {
                let name = format!("bench-node-{i}");
                let pool = if i % 2 == 0 { "a" } else { "b" };
                let node = serde_json::from_value(json!({"metadata": {"name": name, "labels": {
                    "worker.gardener.cloud/pool": pool, "containerruntime.worker.gardener.cloud/kata": "true",
                    "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
                    "node.kubernetes.io/instance-type": "m5.xlarge", "topology.kubernetes.io/zone": "zone-a",
                    "kata.runtime.extensions.gardener.cloud/qemu": "true", "katacontainers.io/kata-runtime": "true"}}}))
                .unwrap();
                nodes.create(&PostParams::default(), &node).await.unwrap();
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                let images: Vec<_> = (0..40)
                    .map(|j| json!({"names": [format!("registry.invalid/component-{j}@sha256:{:064x}", j * 7919 + i),
                                              format!("registry.invalid/component-{j}:v1.{j}.0")],
                                    "sizeBytes": 20_000_000 + j * 1_000_000}))
                    .collect();
                let cond = |t: &str, s: &str, r: &str, m: &str| json!({"type": t, "status": s, "reason": r, "message": m,
                    "lastHeartbeatTime": now, "lastTransitionTime": now});
                let status = json!({"status": {
                    "conditions": [
                        cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                        cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                        cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
                        cond("KataRuntimeReady", "True", "AllShimsRunnable", "can run: qemu")],
                    "addresses": [{"type": "InternalIP", "address": format!("10.250.{}.{}", i / 250, i % 250)},
                                  {"type": "Hostname", "address": name}],
                    "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110", "ephemeral-storage": "50Gi"},
                    "allocatable": {"cpu": "3920m", "memory": "14Gi", "pods": "110", "ephemeral-storage": "45Gi"},
                    "nodeInfo": {"machineID": format!("{i:032x}"), "systemUUID": format!("{i:032x}"), "bootID": format!("{i:032x}"),
                        "kernelVersion": "6.6.0", "osImage": "Garden Linux", "containerRuntimeVersion": "containerd://2.2.0",
                        "kubeletVersion": "v1.33.0", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
                    "images": images}});
                nodes
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await
                    .unwrap();
            }
        })
        .await;
}

async fn setup_namespaces(client: &Client, label: &str, count: usize) -> Vec<String> {
    let names: Vec<String> = (0..count).map(|i| format!("shoot--bench--{label}-{i}")).collect();
    stream::iter(names.clone())
        .for_each_concurrent(16, |ns| async move {
            let n = Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    labels: Some([("gardener.cloud/role".to_string(), "shoot".to_string())].into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &n).await.unwrap();
            let workers: Vec<_> = ["a", "b"]
                .iter()
                .map(|p| json!({"name": p, "machine": {"image": {"name": "gardenlinux"}}, "cri": {"name": "containerd", "containerRuntimes": [{"type": "kata"}]}}))
                .collect();
            let spec = ClusterSpec {
                cloud_profile: json!({"metadata": {"name": "local"}, "spec": {"type": "local"}}),
                seed: None,
                shoot: json!({"metadata": {"name": ns}, "spec": {"provider": {"type": "local", "workers": workers}},
                              "status": {"lastOperation": {"state": "Succeeded"}}}),
            };
            Api::<Cluster>::all(client.clone()).create(&PostParams::default(), &Cluster::new(&ns, spec)).await.unwrap();
        })
        .await;
    names
}

async fn create_all(client: &Client, namespaces: &[String], label: &str) {
    let objs: Vec<ContainerRuntime> = namespaces
        .iter()
        .flat_map(|ns| [cr(ns, "a", label), cr(ns, "b", label)])
        .collect();
    stream::iter(objs)
        .for_each_concurrent(16, |o| async move {
            Api::<ContainerRuntime>::namespaced(client.clone(), o.metadata.namespace.as_deref().unwrap())
                .create(&PostParams::default(), &o)
                .await
                .unwrap();
        })
        .await;
}

/// Follows the labelled objects with a watch (one list, then events), as gardenlet-side observers
/// would; it runs in both the extension run and the baseline, so both pay for one observer.
struct Observer {
    reader: reflector::Store<ContainerRuntime>,
    follow: tokio::task::JoinHandle<()>,
    label: String,
}

impl Observer {
    async fn start(client: &Client, label: &str) -> Self {
        let api: Api<ContainerRuntime> = Api::all(client.clone());
        let (reader, writer) = reflector::store();
        let config = watcher::Config::default().labels(&format!("bench={label}"));
        let follow = tokio::spawn(
            watcher(api, config)
                .reflect(writer)
                .for_each(|_| futures::future::ready(())),
        );
        reader.wait_until_ready().await.expect("watch");
        Self {
            reader,
            follow,
            label: label.into(),
        }
    }

    /// Waits until `pred` holds for the observed objects.
    async fn wait(&self, pred: impl Fn(&[ContainerRuntime]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(1200);
        loop {
            let items: Vec<ContainerRuntime> = self.reader.state().iter().map(|o| (**o).clone()).collect();
            if pred(&items) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out (label {})", self.label);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.follow.abort();
    }
}

/// The health checks at seed scale.
#[derive(Default)]
struct HealthRun {
    /// From the first create until every object has its first health condition.
    first: Duration,
    first_requests: String,
    progressing_per_min: String,
    unhealthy_per_min: String,
    healthy_per_min: String,
    /// The extension's CPU seconds per round while all are healthy (the node reads of every shoot).
    cpu_per_round: f64,
    /// VmHWM after the health windows (the shoot reads included).
    peak_kib: u64,
}

struct Run {
    wall: Duration,
    delete: Duration,
    per_reconcile: String,
    per_delete: String,
    steady: String,
    health: HealthRun,
    peak_kib: u64,
    steady_kib: u64,
    ext_cpu: f64,
    api_cpu: f64,
}

async fn run_extension(env: &TestEnv, client: &Client, bin: &str, n: usize, with_health: bool) -> Run {
    let label = format!("ext{n}");
    let namespaces = setup_namespaces(client, &label, n / 2).await;
    // stand-in for gardenlet's shoot access secrets: every shoot is this apiserver (no nodes)
    stream::iter(namespaces.iter())
        .for_each_concurrent(
            16,
            |ns| async move { env.grant_shoot_access(client, ns).await.unwrap() },
        )
        .await;
    let port = free_port().unwrap();
    let mut child: Child = Command::new(bin)
        .arg(format!("--kubeconfig={}", env.kubeconfig_path().display()))
        .args(["--leader-election=false", "--disable-webhooks", "--log-level=error"])
        .arg(format!("--max-concurrent-reconciles={CONCURRENCY}"))
        .arg(format!("--metrics-bind-address=127.0.0.1:{port}"))
        .arg(format!("--health-bind-address=127.0.0.1:{}", free_port().unwrap()))
        .arg(format!("--health-check-sync-period-seconds={HEALTH_SYNC_SECONDS}"))
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the extension binary");
    let pid = child.id();
    while metrics(port).await.is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = requests_by_verb(&metrics(port).await);
    let (cpu0, api0) = (cpu_seconds(pid), cpu_seconds(env.apiserver_pid()));
    let observer = Observer::start(client, &label).await;
    let t0 = Instant::now();
    create_all(client, &namespaces, &label).await;
    observer
        .wait(|items| items.len() == n && items.iter().all(|c| not_ready_reason(c).is_none()))
        .await;
    let wall = t0.elapsed();
    let (ext_cpu, api_cpu) = (cpu_seconds(pid) - cpu0, cpu_seconds(env.apiserver_pid()) - api0);
    let after = requests_by_verb(&metrics(port).await);
    let peak_kib = status_kib(pid, "VmHWM:");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let steady_kib = status_kib(pid, "VmRSS:");

    // steady state: gardenlet re-annotates unchanged objects
    let api: Api<ContainerRuntime> = Api::all(client.clone());
    let sample: Vec<_> = namespaces.iter().take(50).collect();
    let s0 = requests_by_verb(&metrics(port).await);
    for ns in &sample {
        let patch = json!({"metadata": {"annotations": {OPERATION_ANNOTATION: "reconcile", TIMESTAMP_ANNOTATION: k8s_openapi::jiff::Timestamp::now().to_string()}}});
        Api::<ContainerRuntime>::namespaced(client.clone(), ns)
            .patch("kata-a", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    let _ = &api;
    // let the observer see the annotations before asking whether all are ready again
    tokio::time::sleep(Duration::from_millis(500)).await;
    observer
        .wait(|items| items.iter().all(|c| not_ready_reason(c).is_none()))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let steady = diff(&requests_by_verb(&metrics(port).await), &s0, sample.len());

    // health checks (largest N only: each window is two rounds): first conditions (nothing
    // applied them here, so Progressing), then the request rate while they stay so, while the
    // resource manager (stand-in) reports every installation unhealthy, and while all are healthy
    let mut health = HealthRun::default();
    if with_health {
        let rate = |settle: bool| async move {
            if settle {
                tokio::time::sleep(Duration::from_secs(HEALTH_SYNC_SECONDS)).await;
            }
            let before = requests_by_verb(&metrics(port).await);
            tokio::time::sleep(HEALTH_WINDOW).await;
            per_minute(&requests_by_verb(&metrics(port).await), &before, HEALTH_WINDOW)
        };
        let h0 = requests_by_verb(&metrics(port).await);
        observer
            .wait(|items| items.iter().all(|c| health_of(c).is_some()))
            .await;
        health.first = t0.elapsed();
        health.first_requests = diff(&requests_by_verb(&metrics(port).await), &h0, n);
        health.progressing_per_min = rate(false).await;
        resource_manager_reports(client, &namespaces, false).await;
        observer
            .wait(|items| items.iter().all(|c| health_of(c) == Some("False")))
            .await;
        health.unhealthy_per_min = rate(true).await;
        resource_manager_reports(client, &namespaces, true).await;
        observer
            .wait(|items| items.iter().all(|c| health_of(c) == Some("True")))
            .await;
        let cpu0 = cpu_seconds(pid);
        health.healthy_per_min = rate(true).await;
        let rounds = (HEALTH_SYNC_SECONDS + HEALTH_WINDOW.as_secs()) as f64 / HEALTH_SYNC_SECONDS as f64;
        health.cpu_per_round = (cpu_seconds(pid) - cpu0) / rounds;
        health.peak_kib = status_kib(pid, "VmHWM:");
    }

    let d0 = requests_by_verb(&metrics(port).await);
    let t1 = Instant::now();
    stream::iter(
        namespaces
            .iter()
            .flat_map(|ns| [(ns.clone(), "kata-a"), (ns.clone(), "kata-b")]),
    )
    .for_each_concurrent(16, |(ns, name)| async move {
        Api::<ContainerRuntime>::namespaced(client.clone(), &ns)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    })
    .await;
    observer.wait(|items| items.is_empty()).await;
    let delete = t1.elapsed();
    let per_delete = diff(&requests_by_verb(&metrics(port).await), &d0, n);
    // SAFETY: plain kill(2) on our child
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    Run {
        wall,
        delete,
        per_reconcile: diff(&after, &before, n),
        per_delete,
        steady,
        health,
        peak_kib,
        steady_kib,
        ext_cpu,
        api_cpu,
    }
}

/// The writes the extension performs for one new object, done directly.
async fn baseline_create(client: Client, cr: ContainerRuntime, with_shared: bool) {
    let ns = cr.metadata.namespace.clone().unwrap();
    let name = cr.name_any();
    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), &ns);
    let pp = PatchParams::default();
    let meta = json!({"metadata": {"annotations": {OPERATION_ANNOTATION: null}, "finalizers": ["extensions.gardener.cloud/containerruntime"]}});
    api.patch(&name, &pp, &Patch::Merge(&meta)).await.unwrap();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let processing = json!({"status": {"lastOperation": {"type": "Create", "state": "Processing", "progress": 1, "description": "x", "lastUpdateTime": now}}});
    api.patch_status(&name, &pp, &Patch::Merge(&processing)).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mrs: Api<ManagedResource> = Api::namespaced(client.clone(), &ns);
    let mut names = vec![format!(
        "extension-runtime-kata-installation-{}",
        cr.spec.worker_pool.name
    )];
    if with_shared {
        names.push("extension-runtime-kata".into());
    }
    for mr_name in names {
        let data = Manifests::from([("x.yaml".to_string(), format!("# {mr_name}\n"))]);
        let secret = build_secret(&ns, &mr_name, "bench", &data);
        secrets.create(&PostParams::default(), &secret).await.unwrap();
        let mr = build_managed_resource(&ns, &mr_name, "bench", &secret.name_any());
        mrs.patch(&mr_name, &PatchParams::apply("bench").force(), &Patch::Apply(&mr))
            .await
            .unwrap();
    }
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let done = json!({"status": {"lastOperation": {"type": "Create", "state": "Succeeded", "progress": 100, "description": "x", "lastUpdateTime": now}, "lastError": null, "observedGeneration": 1}});
    api.patch_status(&name, &pp, &Patch::Merge(&done)).await.unwrap();
}

async fn run_baseline(client: &Client, n: usize) -> Duration {
    let label = format!("base{n}");
    let namespaces = setup_namespaces(client, &label, n / 2).await;
    let observer = Observer::start(client, &label).await;
    let t0 = Instant::now();
    create_all(client, &namespaces, &label).await;
    let objs: Vec<(ContainerRuntime, bool)> = namespaces
        .iter()
        .flat_map(|ns| [(cr(ns, "a", &label), true), (cr(ns, "b", &label), false)])
        .collect();
    stream::iter(objs)
        .for_each_concurrent(CONCURRENCY, |(o, shared)| baseline_create(client.clone(), o, shared))
        .await;
    // the same observer as in the extension run, seeing every object done
    observer
        .wait(|items| items.len() == n && items.iter().all(|c| not_ready_reason(c).is_none()))
        .await;
    t0.elapsed()
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "100,500,1000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("BENCH_SIZES"))
        .collect();
    let bin = std::env::var("BENCH_BINARY").unwrap_or_else(|_| "target/release/gardener-extension-runtime-kata".into());
    let env = TestEnv::start().await.expect("control plane");
    let client = env.client().await;
    // every shoot access secret points at this apiserver: its nodes are every shoot's nodes
    let nodes: usize = std::env::var("BENCH_NODES").map_or(10, |v| v.parse().expect("BENCH_NODES"));
    register_nodes(&client, nodes).await;
    println!(
        "| N | extension ready | baseline writes | ratio | delete all | API requests per object (create) | per object (delete) | steady-state re-reconcile | peak RSS | steady RSS | CPU extension / apiserver |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut health_rows = Vec::new();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    for n in sizes {
        let base = run_baseline(&client, n).await;
        let r = run_extension(&env, &client, &bin, n, n == largest).await;
        if n == largest {
            let h = &r.health;
            health_rows.push(format!(
                "| {n} | {:.1} s | {} | {} | {} | {} | {:.2} s | {:.1} MiB |",
                h.first.as_secs_f64(),
                h.first_requests,
                h.progressing_per_min,
                h.unhealthy_per_min,
                h.healthy_per_min,
                h.cpu_per_round,
                h.peak_kib as f64 / 1024.0
            ));
        }
        println!(
            "| {n} | {:.2} s | {:.2} s | {:.2} | {:.2} s | {} | {} | {} | {:.1} MiB | {:.1} MiB | {:.1} s / {:.1} s |",
            r.wall.as_secs_f64(),
            base.as_secs_f64(),
            r.wall.as_secs_f64() / base.as_secs_f64(),
            r.delete.as_secs_f64(),
            r.per_reconcile,
            r.per_delete,
            r.steady,
            r.peak_kib as f64 / 1024.0,
            r.steady_kib as f64 / 1024.0,
            r.ext_cpu,
            r.api_cpu
        );
    }
    println!();
    println!(
        "| N | every object has its first health condition (from the first create) | requests per object until then | seed requests per minute, all Progressing | all unhealthy | all healthy | extension CPU per round, all healthy (node reads of every shoot) | peak RSS after the health rounds |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in health_rows {
        println!("{row}");
    }
}
