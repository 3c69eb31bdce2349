//! gardener-resource-manager (built by `hack/testbin.sh` from the pinned Gardener module) as a
//! process of the test environment, configured the way gardenlet configures its two instances:
//!
//! - the shoot's: ManagedResources of the default class from the shoot's namespace in the seed,
//!   applied into the shoot's apiserver;
//! - the seed's: class `seed`, target the seed itself, with the garbage collector that deletes
//!   unreferenced secrets labelled `resources.gardener.cloud/garbage-collectable-reference`.
//!
//! Only the controllers these roles need run (ManagedResource, health, garbage collector); every
//! webhook stays off, leader election is off (one replica per test).

use super::process::{Supervised, free_port};
use super::{Binaries, TestEnv, TestEnvError, io};
use crate::certs::CertificateAuthority;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which resource manager to run.
#[derive(Clone, Debug)]
pub struct ResourceManagerOptions {
    /// A name for its files and logs.
    pub name: String,
    /// `None`: Gardener's default class (the shoot's instance); `Some("seed")`: the seed's.
    pub class: Option<String>,
    /// Source namespaces in the seed (empty: all, as for the seed's instance).
    pub namespaces: Vec<String>,
    /// Namespaces of namespaced objects in the target (empty: all).
    pub target_namespaces: Vec<String>,
    /// Garbage collector period; `None` keeps it off.
    pub garbage_collector: Option<Duration>,
    /// The ManagedResource controller's `alwaysUpdate`.
    pub always_update: bool,
    /// The token requestor (tokens for shoot access secrets of class `shoot`).
    pub token_requestor: bool,
}

impl ResourceManagerOptions {
    /// gardenlet's shoot instance, for the shoot whose control plane lives in `namespace`
    /// (`targetGardenerResourceManagerDefaultValues`: default class, the shoot's system
    /// namespaces as target, `alwaysUpdate`, garbage collector every 12 h, token requestor).
    pub fn for_shoot(namespace: &str) -> Self {
        Self {
            name: format!("grm-shoot-{namespace}"),
            class: None,
            namespaces: vec![namespace.into()],
            target_namespaces: ["kube-system", "kubernetes-dashboard", "kube-node-lease"]
                .map(String::from)
                .to_vec(),
            garbage_collector: Some(Duration::from_secs(12 * 3600)),
            always_update: true,
            token_requestor: true,
        }
    }

    /// gardenlet's seed instance (`runtimeGardenerResourceManagerDefaultValues`): class `seed`,
    /// the seed itself as target, all namespaces, garbage collector on (12 h there; a test
    /// chooses its own period).
    pub fn for_seed(gc_period: Duration) -> Self {
        Self {
            name: "grm-seed".into(),
            class: Some("seed".into()),
            namespaces: vec![],
            target_namespaces: vec![],
            garbage_collector: Some(gc_period),
            always_update: false,
            token_requestor: false,
        }
    }
}

/// A running gardener-resource-manager; killed when dropped.
pub struct ResourceManager {
    process: Supervised,
    health_port: u16,
    log: PathBuf,
}

impl ResourceManager {
    /// Starts it with `seed` as source and `target` (the shoot, or the seed itself) as target,
    /// and waits until it reports ready.
    pub async fn start(seed: &TestEnv, target: &TestEnv, opts: ResourceManagerOptions) -> Result<Self, TestEnvError> {
        let bin = Binaries::locate()?.gardener_resource_manager()?;
        let dir = seed.dir().join(&opts.name);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        // the webhook server starts even with every webhook off and wants a certificate
        let certs = dir.join("tls");
        write_serving_cert(&certs)?;
        let health_port = free_port()?;
        let config = config_yaml(
            &opts,
            seed.kubeconfig_path(),
            target.kubeconfig_path(),
            &certs,
            [free_port()?, health_port, free_port()?],
        );
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, config).map_err(io(format!("writing {}", config_path.display())))?;
        let log = dir.join("gardener-resource-manager.log");
        let process = Supervised::spawn(&bin, &[format!("--config={}", config_path.display())], &log)?;
        let rm = Self {
            process,
            health_port,
            log,
        };
        rm.wait_ready(Duration::from_secs(60)).await?;
        Ok(rm)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Its log file (JSON lines).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<(), TestEnvError> {
        let deadline = Instant::now() + timeout;
        let url = format!("127.0.0.1:{}", self.health_port);
        loop {
            if probe_ready(&url).await {
                return Ok(());
            }
            if let Some(status) = self.process.exited() {
                return Err(TestEnvError::Startup(format!(
                    "gardener-resource-manager exited ({status}); log tail:\n{}",
                    self.log_tail()
                )));
            }
            if Instant::now() > deadline {
                return Err(TestEnvError::Startup(format!(
                    "gardener-resource-manager not ready after {timeout:?}; log tail:\n{}",
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A plain HTTP/1.0 GET of `/readyz`: true on a 200.
async fn probe_ready(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200")
}

fn write_serving_cert(dir: &Path) -> Result<(), TestEnvError> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let day = Duration::from_secs(24 * 3600);
    let issue = || -> Result<_, crate::certs::CertError> {
        let ca = CertificateAuthority::generate("grm-webhook-ca", day)?;
        ca.issue_serving(
            "gardener-resource-manager",
            &["localhost".into()],
            &["127.0.0.1".parse().expect("ip")],
            day,
        )
    };
    let cert = issue().map_err(|e| TestEnvError::Startup(format!("webhook certificate: {e}")))?;
    std::fs::write(dir.join("tls.crt"), cert.cert_pem).map_err(io("writing tls.crt"))?;
    std::fs::write(dir.join("tls.key"), cert.key_pem).map_err(io("writing tls.key"))?;
    Ok(())
}

fn duration(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

/// The `ResourceManagerConfiguration`, with the values gardenlet's resource-manager component
/// sets for these roles (sync periods, concurrency, `alwaysUpdate`, `managedByLabelValue`).
fn config_yaml(opts: &ResourceManagerOptions, source: &Path, target: &Path, certs: &Path, ports: [u16; 3]) -> String {
    let [webhook_port, health_port, metrics_port] = ports;
    let list = |key: &str, items: &[String]| {
        if items.is_empty() {
            String::new()
        } else {
            format!(
                "  {key}:\n{}",
                items.iter().map(|n| format!("  - {n}\n")).collect::<String>()
            )
        }
    };
    let namespaces = list("namespaces", &opts.namespaces);
    let target_namespaces = list("namespaces", &opts.target_namespaces);
    let class = opts
        .class
        .as_ref()
        .map(|c| format!("  resourceClass: {c}\n"))
        .unwrap_or_default();
    let gc = match opts.garbage_collector {
        Some(p) => format!(
            "  garbageCollector:\n    enabled: true\n    syncPeriod: {}\n",
            duration(p)
        ),
        None => "  garbageCollector:\n    enabled: false\n".into(),
    };
    let token_requestor = if opts.token_requestor {
        "  tokenRequestor:\n    enabled: true\n    concurrentSyncs: 5\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: resourcemanager.config.gardener.cloud/v1alpha1
kind: ResourceManagerConfiguration
sourceClientConnection:
  kubeconfig: {source}
  qps: 100
  burst: 130
{namespaces}targetClientConnection:
  kubeconfig: {target}
  qps: 100
  burst: 130
{target_namespaces}leaderElection:
  leaderElect: false
server:
  webhooks:
    bindAddress: 127.0.0.1
    port: {webhook_port}
    tls:
      serverCertDir: {certs}
  healthProbes:
    bindAddress: 127.0.0.1
    port: {health_port}
  metrics:
    bindAddress: 127.0.0.1
    port: {metrics_port}
logLevel: info
logFormat: json
controllers:
{class}{gc}{token_requestor}  health:
    concurrentSyncs: 10
    syncPeriod: 1m
  managedResource:
    concurrentSyncs: 20
    syncPeriod: 1h
    alwaysUpdate: {always_update}
    managedByLabelValue: gardener
webhooks: {{}}
"#,
        source = source.display(),
        target = target.display(),
        certs = certs.display(),
        always_update = opts.always_update,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shoot_instance_watches_one_namespace_and_collects_nothing() {
        let y = config_yaml(
            &ResourceManagerOptions::for_shoot("shoot--a--b"),
            Path::new("/s"),
            Path::new("/t"),
            Path::new("/c"),
            [1, 2, 3],
        );
        assert!(y.contains("kubeconfig: /s\n  qps: 100\n  burst: 130\n  namespaces:\n  - shoot--a--b\n"));
        assert!(y.contains("kubeconfig: /t\n  qps: 100\n  burst: 130\n  namespaces:\n  - kube-system\n"));
        assert!(y.contains("alwaysUpdate: true"));
        assert!(!y.contains("resourceClass"));
        let y = config_yaml(
            &ResourceManagerOptions::for_seed(Duration::from_secs(30)),
            Path::new("/s"),
            Path::new("/s"),
            Path::new("/c"),
            [1, 2, 3],
        );
        assert!(y.contains("resourceClass: seed"));
        assert!(y.contains("enabled: true\n    syncPeriod: 30s"));
        assert!(y.contains("alwaysUpdate: false"));
        assert!(!y.contains("  - kube-system"));
    }
}
