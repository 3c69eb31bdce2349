//! Webhook latency and throughput on this machine (not a timed test): the admission handler
//! in-process, and the same over HTTPS through the real server (rustls, keep-alive connections).
//! Clusters come from memory, so the figures exclude the Cluster GET against the apiserver.
//!
//! Run: `cargo bench --bench webhook` (prints a Markdown table).

use gardener_extension_runtime_kata::api::cluster::{Cluster, ClusterSpec};
use gardener_extension_runtime_kata::certs::CertificateAuthority;
use gardener_extension_runtime_kata::webhook::handler::{self, HandlerState, StaticClusters};
use gardener_extension_runtime_kata::webhook::mutate::MutationSettings;
use gardener_extension_runtime_kata::webhook::server;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PATH: &str = "/webhooks/operatingsystemconfig";
const NS: &str = "shoot--bench--s";

fn cluster() -> Cluster {
    Cluster::new(
        NS,
        ClusterSpec {
            cloud_profile: json!({}),
            seed: None,
            shoot: json!({"spec": {"provider": {"workers": [
                {"name": "kata-fc", "cri": {"name": "containerd", "containerRuntimes": [{"type": "kata", "providerConfig": {"apiVersion": "kata.runtime.extensions.config.gardener.cloud/v1alpha1", "kind": "KataConfiguration", "hypervisors": ["qemu", "fc"]}}]}},
                {"name": "plain", "cri": {"name": "containerd"}}
            ]}}}),
        },
    )
}

/// A realistic reconcile OSC: ~20 units and ~40 files, like gardenlet's.
fn review(pool: &str) -> Vec<u8> {
    let units: Vec<Value> = (0..20)
        .map(|i| {
            json!({"name": format!("unit-{i}.service"), "command": "start", "enable": true,
                         "content": format!("[Unit]\nDescription=unit {i}\n[Service]\nExecStart=/opt/bin/u{i}\n")})
        })
        .collect();
    let files: Vec<Value> = (0..40)
        .map(|i| {
            json!({"path": format!("/etc/gardener/file-{i}"), "permissions": 420,
                         "content": {"inline": {"encoding": "b64", "data": "x".repeat(2000)}}})
        })
        .collect();
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0f2a8c1e-0000-4000-8000-000000000001",
            "kind": {"group": "extensions.gardener.cloud", "version": "v1alpha1", "kind": "OperatingSystemConfig"},
            "resource": {"group": "extensions.gardener.cloud", "version": "v1alpha1", "resource": "operatingsystemconfigs"},
            "namespace": NS, "operation": "UPDATE", "userInfo": {"username": "gardenlet"},
            "object": {
                "apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "OperatingSystemConfig",
                "metadata": {"name": format!("osc-{pool}"), "namespace": NS,
                             "labels": {"worker.gardener.cloud/pool": pool}},
                "spec": {"type": "gardenlinux", "purpose": "reconcile", "units": units, "files": files,
                         "criConfig": {"name": "containerd", "cgroupDriver": "systemd",
                                       "containerd": {"sandboxImage": "registry.k8s.io/pause:3.10"}}}
            }
        }
    }))
    .unwrap()
}

fn state() -> Arc<HandlerState> {
    Arc::new(HandlerState {
        clusters: Box::new(StaticClusters([(NS.to_string(), cluster())].into())),
        settings: MutationSettings::default(),
        metrics: None,
        webhook_label: PATH.into(),
    })
}

struct Stats {
    p50: Duration,
    p99: Duration,
    rps: f64,
}

fn stats(mut samples: Vec<Duration>, wall: Duration) -> Stats {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Stats {
        p50: pick(0.50),
        p99: pick(0.99),
        rps: samples.len() as f64 / wall.as_secs_f64(),
    }
}

async fn in_process(body: &[u8], n: usize) -> Stats {
    let s = state();
    let body = axum::body::Bytes::copy_from_slice(body);
    for _ in 0..n / 10 {
        handler::review(&s, body.clone()).await;
    }
    let mut samples = Vec::with_capacity(n);
    let wall = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let (status, _) = handler::review(&s, body.clone()).await;
        assert!(status.is_success());
        samples.push(t.elapsed());
    }
    stats(samples, wall.elapsed())
}

async fn client(url: &str, ca: &CertificateAuthority) -> kube::Client {
    let mut config = kube::Config::new(url.parse().unwrap());
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(ca.cert_pem.as_bytes())
        .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
        .unwrap();
    config.root_cert = Some(vec![der]);
    config.read_timeout = Some(Duration::from_secs(10));
    kube::Client::try_from(config).unwrap()
}

async fn post(c: &kube::Client, body: &[u8]) {
    let req = http::Request::post(PATH)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .unwrap();
    let text = c.request_text(req).await.unwrap();
    assert!(text.contains("\"allowed\":true"));
}

/// Sequential requests on one keep-alive connection.
async fn over_tls(c: &kube::Client, body: &[u8], n: usize) -> Stats {
    for _ in 0..n / 10 {
        post(c, body).await;
    }
    let mut samples = Vec::with_capacity(n);
    let wall = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        post(c, body).await;
        samples.push(t.elapsed());
    }
    stats(samples, wall.elapsed())
}

/// `workers` concurrent clients for `duration`.
async fn throughput(url: &str, ca: &CertificateAuthority, body: &[u8], workers: usize, duration: Duration) -> Stats {
    let body = Arc::new(body.to_vec());
    let mut tasks = Vec::new();
    let wall = Instant::now();
    for _ in 0..workers {
        let c = client(url, ca).await;
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let end = Instant::now() + duration;
            while Instant::now() < end {
                let t = Instant::now();
                post(&c, &body).await;
                samples.push(t.elapsed());
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    stats(all, wall.elapsed())
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs this binary too (without `--bench`): keep that a smoke check
    let full = std::env::args().any(|a| a == "--bench");
    server::install_crypto_provider();
    let mutate = review("kata-fc");
    let skip = review("plain");
    println!(
        "AdmissionReview body: {} KiB; cores: {}",
        mutate.len() / 1024,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let ca = CertificateAuthority::generate("bench-ca", Duration::from_secs(3600)).unwrap();
    let leaf = ca
        .issue_serving("bench", &[], &["127.0.0.1".parse().unwrap()], Duration::from_secs(3600))
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = server::rustls_config(&leaf.cert_pem, &leaf.key_pem).unwrap();
    let app = server::protected(
        server::router(state(), PATH),
        server::DEFAULT_MAX_BODY_BYTES,
        &Default::default(),
    );
    tokio::spawn(
        axum_server::from_tcp_rustls(listener, tls)
            .unwrap()
            .serve(app.into_make_service()),
    );
    let url = format!("https://{addr}");
    let c = client(&url, &ca).await;

    let n = if full { 2000 } else { 20 };
    let window = Duration::from_secs(if full { 5 } else { 1 });
    let rows = vec![
        ("in-process, kata-fc OSC (patch)", in_process(&mutate, n).await),
        ("in-process, other pool (no patch)", in_process(&skip, n).await),
        ("HTTPS, 1 connection, kata-fc OSC", over_tls(&c, &mutate, n).await),
        ("HTTPS, 1 connection, other pool", over_tls(&c, &skip, n).await),
        (
            "HTTPS, 8 concurrent clients, kata-fc OSC",
            throughput(&url, &ca, &mutate, 8, window).await,
        ),
    ];
    println!();
    println!("| scenario | p50 (ms) | p99 (ms) | requests/s |");
    println!("|---|---:|---:|---:|");
    for (name, s) in rows {
        println!("| {name} | {} | {} | {:.0} |", ms(s.p50), ms(s.p99), s.rps);
    }
}
