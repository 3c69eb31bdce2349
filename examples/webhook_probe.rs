//! `make bench` (third part): the release binary's webhook under hostile and heavy load, over
//! HTTPS on loopback, with its resident memory measured from outside (`/proc/<pid>/status`).
//!
//! Phases: large OSC reviews (3.4 MiB each, four at a time) while `/healthz` is polled; malformed
//! and oversized bodies; a crowd of idle TLS connections; 1000 concurrent small reviews; valid
//! reviews while 600 trickling clients fight over the 512 connection slots. Every case has an
//! expected answer; the probe counts the cases answered as expected and prints a Markdown table
//! for docs/benchmarks.md. `--check` (CI, with `--bin` the debug binary) exits 1 when a case or
//! a bound (peak RSS, open fds, p99 under attack) fails.

use gardener_extension_runtime_kata::api::cluster::{Cluster, ClusterSpec};
use gardener_extension_runtime_kata::testenv::{TestEnv, free_port, status_kib};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "probe/attack.rs"]
mod attack;
#[path = "probe/hostile.rs"]
mod hostile;
#[path = "probe/tls.rs"]
mod tls;
use hostile::{Args, Outcome};
use tls::Tls;

const NS: &str = "shoot--probe--memory";
const EXT_NS: &str = "extension-probe";
const PATH: &str = "/webhooks/operatingsystemconfig";

fn review(size: usize, pool: &str, uid: usize) -> Vec<u8> {
    // many inline files, as a large OSC carries them
    let chunk = "A".repeat(16 << 10);
    let files: Vec<Value> = (0..size / chunk.len())
        .map(|i| json!({"path": format!("/etc/probe/{i}"), "permissions": 420, "content": {"inline": {"encoding": "", "data": chunk}}}))
        .collect();
    let osc = json!({
        "apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "OperatingSystemConfig",
        "metadata": {"name": format!("osc-{uid}"), "namespace": NS, "labels": {"worker.gardener.cloud/pool": pool}},
        "spec": {"type": "gardenlinux", "purpose": "reconcile", "files": files,
                 "units": [{"name": "kubelet.service", "command": "start"}],
                 "criConfig": {"name": "containerd", "containerd": {"sandboxImage": "pause"}}}
    });
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": format!("probe-{uid}"), "operation": "CREATE", "namespace": NS,
                    "kind": {"group": "extensions.gardener.cloud", "version": "v1alpha1", "kind": "OperatingSystemConfig"},
                    "resource": {"group": "extensions.gardener.cloud", "version": "v1alpha1", "resource": "operatingsystemconfigs"},
                    "userInfo": {"username": "probe"}, "object": osc}
    }))
    .unwrap()
}

fn allowed_with_patch(body: &[u8]) -> bool {
    // chunked encoding is not used by axum for fixed bodies; the body is the JSON itself
    serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|v| v["response"]["allowed"] == true && v["response"]["patch"].is_string())
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let env = TestEnv::start().await.expect("control plane");
    let client = env.client().await;
    for (name, shoot) in [(NS, true), (EXT_NS, false)] {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: shoot.then(|| [("gardener.cloud/role".to_string(), "shoot".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    let fc = json!({"apiVersion": "kata.runtime.extensions.config.gardener.cloud/v1alpha1", "kind": "KataConfiguration", "hypervisors": ["fc"]});
    let shoot = json!({"metadata": {"name": "probe", "namespace": "garden-probe"},
        "spec": {"provider": {"type": "local", "workers": [
            {"name": "kata-fc", "cri": {"name": "containerd", "containerRuntimes": [{"type": "kata", "providerConfig": fc}]}}]}}});
    Api::<Cluster>::all(client.clone())
        .create(
            &PostParams::default(),
            &Cluster::new(
                NS,
                ClusterSpec {
                    cloud_profile: json!({}),
                    seed: None,
                    shoot,
                },
            ),
        )
        .await
        .unwrap();

    let (port, health) = (free_port().unwrap(), free_port().unwrap());
    let mut child = Command::new(&args.bin)
        .arg(format!("--kubeconfig={}", env.kubeconfig_path().display()))
        .args([
            "--leader-election=false",
            "--log-level=error",
            "--webhook-config-mode=url",
        ])
        .args([
            "--webhook-config-server-host=127.0.0.1",
            &format!("--webhook-config-server-port={port}"),
        ])
        .arg(format!("--webhook-config-namespace={EXT_NS}"))
        .arg(format!("--watch-namespace={NS}"))
        .arg(format!("--metrics-bind-address=127.0.0.1:{}", free_port().unwrap()))
        .arg(format!("--health-bind-address=127.0.0.1:{health}"))
        .env_remove("KUBECONFIG")
        .stderr(Stdio::null())
        .spawn()
        .expect("the extension binary (cargo build --release, or --bin)");
    let pid = child.id();
    let tls = Arc::new(Tls::new(
        &tls::wait_for_ca(&client, EXT_NS, "gardener-extension-runtime-kata-webhook-certs").await,
        port,
    ));
    while tls.request("GET", "/healthz", b"").await.is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kib = status_kib(pid, "VmRSS:");
    let (mut cases, mut survived) = (0usize, 0usize);

    // 1. large reviews, four at a time, while /healthz is polled
    let large = Arc::new(review(3_400 << 10, "kata-fc", 0));
    let rounds = 5;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (tls, stop) = (tls.clone(), stop.clone());
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let _ = tls.request("GET", "/healthz", b"").await;
                worst = worst.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            worst
        })
    };
    let t0 = Instant::now();
    for _ in 0..rounds {
        let answers = futures::future::join_all((0..4).map(|_| {
            let (tls, body) = (tls.clone(), large.clone());
            async move { tls.request("POST", PATH, &body).await }
        }))
        .await;
        for a in answers {
            cases += 1;
            survived += usize::from(a.is_some_and(|(code, body)| code == 200 && allowed_with_patch(&body)));
        }
    }
    let large_wall = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let worst_health = poller.await.unwrap();
    let large_peak = status_kib(pid, "VmHWM:");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_large = status_kib(pid, "VmRSS:");

    // 2. hostile bodies: each must get its documented answer, none may crash the process
    let mut hostile: Vec<(Vec<u8>, u16)> = vec![
        (b"{not json".to_vec(), 400),
        (Vec::new(), 400),
        // serde_json stops at its recursion limit and reports a data error: an admission error
        (b"[".repeat(100_000), 200),
        (b"null".to_vec(), 200),
        (b"{}".to_vec(), 200),
        (vec![b' '; 8 << 20], 413),
        (serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "x", "object": "text"}})).unwrap(), 200),
        (serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "x".repeat(1 << 20)}})).unwrap(), 200),
    ];
    for i in 0..200usize {
        // truncated large reviews at arbitrary points
        let cut = (i * 7919 + 13) % large.len();
        hostile.push((large[..cut].to_vec(), 400));
    }
    for (i, (body, expected)) in hostile.iter().enumerate() {
        cases += 1;
        let got = tls.request("POST", PATH, body).await.map(|(c, _)| c);
        if got != Some(*expected) {
            eprintln!(
                "hostile case {i} ({} bytes): expected {expected}, got {got:?}",
                body.len()
            );
        }
        survived += usize::from(got == Some(*expected));
    }

    // 3. a crowd of idle TLS connections, then a real review must still be answered
    let mut crowd = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = tls.connect().await {
            crowd.push(s);
        }
    }
    let crowd_kib = status_kib(pid, "VmRSS:");
    cases += 1;
    let small = review(64 << 10, "kata-fc", 1);
    survived += usize::from(
        tls.request("POST", PATH, &small)
            .await
            .is_some_and(|(c, b)| c == 200 && allowed_with_patch(&b)),
    );
    drop(crowd);

    // 4. 1000 concurrent small reviews
    let (thousand_ok, thousand_wall) = hostile::concurrent(&tls, PATH, Arc::new(small.clone()), 1000, patched).await;

    // 5. 600 clients from a pod's address trickle a byte of a TLS record every 200 ms
    //    (reconnecting when cut off) while valid reviews are sent one after the other
    let attack = hostile::under_attack(&tls, pid, PATH, &small, (600, 200), patched).await;
    let peak = status_kib(pid, "VmHWM:");
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();

    println!("| what | figure |");
    println!("|---|---|");
    println!("| idle RSS after start | {:.1} MiB |", idle_kib as f64 / 1024.0);
    println!(
        "| {rounds} rounds of 4 concurrent 3.4 MiB reviews | {:.1} s, peak RSS {:.1} MiB, RSS 2 s later {:.1} MiB |",
        large_wall.as_secs_f64(),
        large_peak as f64 / 1024.0,
        after_large as f64 / 1024.0
    );
    println!(
        "| slowest `/healthz` meanwhile | {:.0} ms |",
        worst_health.as_secs_f64() * 1000.0
    );
    println!(
        "| RSS with 300 idle TLS connections | {:.1} MiB |",
        crowd_kib as f64 / 1024.0
    );
    Outcome {
        cases,
        as_expected: survived,
        idle_rss_kib: idle_kib,
        peak_rss_kib: peak,
        burst: (thousand_ok, 1000, thousand_wall),
        attack,
        alive,
    }
    .report(&args);
}

/// Allowed with a JSON patch (a kata-fc OSC).
fn patched(code: u16, body: &[u8]) -> bool {
    code == 200 && allowed_with_patch(body)
}
