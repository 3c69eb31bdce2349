//! `make bench` (fourth part): the release binary's garden admission (`admission` subcommand) under
//! heavy and hostile load, over HTTPS on loopback, with its resident memory measured from outside
//! (`/proc/<pid>/status`). The test apiserver serves as both its runtime cluster and its garden.
//!
//! Phases: memory per review (one 2 MiB kata Shoot CREATE, then UPDATEs carrying object and old
//! object, four at a time); 1000 concurrent small reviews; valid reviews while 600 trickling
//! clients fight over the 512 connection slots (latency percentiles). Every case has an expected
//! answer; the probe prints a Markdown table for docs/benchmarks.md.

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
use hostile::{Args, Outcome, mib};
use tls::Tls;

const RUNTIME_NS: &str = "garden-admission-probe";
const PATH: &str = "/webhooks/validate-shoot";
const KATA_API: &str = "kata.runtime.extensions.config.gardener.cloud/v1alpha1";

/// A kata Shoot whose providerConfig is about `size` bytes (many allowed hypervisor annotations,
/// a denial for each), as `operation` with the old object for UPDATE.
fn review(uid: usize, size: usize, operation: &str) -> Vec<u8> {
    let annotation = format!("qemu:{}", "a".repeat(1000));
    let annotations: Vec<String> = (0..size / annotation.len()).map(|_| annotation.clone()).collect();
    let shoot = |debug: bool| {
        json!({
            "apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
            "metadata": {"name": "probe", "namespace": "garden-dev"},
            "spec": {"cloudProfile": {"kind": "CloudProfile", "name": "local"}, "provider": {"type": "local", "workers": [
                {"name": "kata", "machine": {"type": "m", "image": {"name": "gardenlinux"}},
                 "cri": {"name": "containerd", "containerRuntimes": [{"type": "kata", "providerConfig": {
                     "apiVersion": KATA_API, "kind": "KataConfiguration", "hypervisors": ["qemu"], "debug": debug,
                     "allowedHypervisorAnnotations": annotations}}]}}]}}
        })
    };
    let old: Value = if operation == "UPDATE" {
        shoot(false)
    } else {
        Value::Null
    };
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": format!("probe-{uid}"), "operation": operation, "namespace": "garden-dev", "name": "probe",
                    "kind": {"group": "core.gardener.cloud", "version": "v1beta1", "kind": "Shoot"},
                    "resource": {"group": "core.gardener.cloud", "version": "v1beta1", "resource": "shoots"},
                    "userInfo": {"username": "probe"}, "object": shoot(true), "oldObject": old}
    }))
    .unwrap()
}

/// Answered as an AdmissionReview for `uid` (allowed or denied: both are answers).
fn answered(uid: usize, answer: Option<(u16, Vec<u8>)>) -> bool {
    answer.is_some_and(|(code, body)| {
        code == 200
            && serde_json::from_slice::<Value>(&body)
                .is_ok_and(|v| v["response"]["uid"] == format!("probe-{uid}").as_str())
    })
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let env = TestEnv::start().await.expect("control plane");
    let client = env.client().await;
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(RUNTIME_NS.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let port = free_port().unwrap();
    let kubeconfig = env.kubeconfig_path().display().to_string();
    let mut child = Command::new(&args.bin)
        .arg("admission")
        .arg(format!("--kubeconfig={kubeconfig}"))
        .arg(format!("--garden-kubeconfig={kubeconfig}"))
        .args(["--log-level=error", "--webhook-config-server-host=127.0.0.1"])
        .arg(format!("--webhook-config-server-port={port}"))
        .arg(format!("--webhook-config-namespace={RUNTIME_NS}"))
        .arg(format!("--metrics-bind-address=127.0.0.1:{}", free_port().unwrap()))
        .arg(format!("--health-bind-address=127.0.0.1:{}", free_port().unwrap()))
        .env_remove("KUBECONFIG")
        .stderr(Stdio::null())
        .spawn()
        .expect("the extension binary (cargo build --release, or --bin)");
    let pid = child.id();
    let secret = format!("{}-webhook-certs", gardener_extension_runtime_kata::admission::NAME);
    let tls = Arc::new(Tls::new(&tls::wait_for_ca(&client, RUNTIME_NS, &secret).await, port));
    while tls.request("GET", "/healthz", b"").await.is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = status_kib(pid, "VmRSS:");
    let (mut cases, mut as_expected, mut missed) = (0usize, 0usize, Vec::new());
    // counts a case, and keeps what a missed one got back (for the report)
    let mut check = |what: &str, uid: usize, answer: Option<(u16, Vec<u8>)>, took: Duration| {
        cases += 1;
        let miss = (!answered(uid, answer.clone())).then(|| match answer {
            None => format!("{what}: no answer after {took:.1?}"),
            Some((code, body)) => format!(
                "{what}: {code} after {took:.1?}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
        });
        as_expected += usize::from(miss.is_none());
        missed.extend(miss);
    };

    // 1. memory per review: one large CREATE alone, then UPDATEs (object + old object), 4 at a time
    let create = review(0, 2 << 20, "CREATE");
    let before = status_kib(pid, "VmHWM:");
    let t = Instant::now();
    let answer = tls.request("POST", PATH, &create).await;
    check("the large CREATE", 0, answer, t.elapsed());
    let one_peak = status_kib(pid, "VmHWM:");
    let per_review = (one_peak.saturating_sub(before) * 1024) as f64 / create.len() as f64;
    let update = Arc::new(review(1, 2 << 20, "UPDATE"));
    let t0 = Instant::now();
    for round in 0..5 {
        let answers = futures::future::join_all((0..4).map(|_| {
            let (tls, body) = (tls.clone(), update.clone());
            async move {
                let t = Instant::now();
                (tls.request("POST", PATH, &body).await, t.elapsed())
            }
        }))
        .await;
        for (a, took) in answers {
            check(&format!("a large UPDATE of round {round}"), 1, a, took);
        }
    }
    let updates_wall = t0.elapsed();
    let updates_peak = status_kib(pid, "VmHWM:");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_large = status_kib(pid, "VmRSS:");

    // 2. 1000 concurrent small reviews
    let small = Arc::new(review(2, 4 << 10, "CREATE"));
    let (thousand_ok, thousand_wall) = hostile::concurrent(&tls, PATH, small.clone(), 1000, answered_2).await;

    // 3. 600 clients from a pod's address trickle a byte of a TLS record every 200 ms
    //    (reconnecting when cut off) while valid reviews are sent one after the other
    let attack = hostile::under_attack(&tls, pid, PATH, &small, (600, 200), answered_2).await;
    let peak = status_kib(pid, "VmHWM:");
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();

    println!("| what | figure |");
    println!("|---|---|");
    println!("| idle RSS after start | {:.1} MiB |", mib(idle));
    println!(
        "| one {:.1} MiB CREATE review | peak RSS +{:.1} MiB: {per_review:.2}× the body |",
        create.len() as f64 / 1048576.0,
        mib(one_peak.saturating_sub(before))
    );
    println!(
        "| 5 rounds of 4 concurrent {:.1} MiB UPDATE reviews (object + old object) | {:.1} s, peak RSS {:.1} MiB, RSS 2 s later {:.1} MiB |",
        update.len() as f64 / 1048576.0,
        updates_wall.as_secs_f64(),
        mib(updates_peak),
        mib(after_large)
    );
    for m in &missed {
        eprintln!("case not answered as expected: {m}");
    }
    Outcome {
        cases,
        as_expected,
        idle_rss_kib: idle,
        peak_rss_kib: peak,
        burst: (thousand_ok, 1000, thousand_wall),
        attack,
        alive,
    }
    .report(&args);
}

/// Answered as an AdmissionReview for the small review (uid 2).
fn answered_2(code: u16, body: &[u8]) -> bool {
    answered(2, Some((code, body.to_vec())))
}
