//! A garden for tests: gardener-apiserver (built by `hack/testbin.sh` from the pinned Gardener
//! module) aggregated behind the test kube-apiserver, so that Shoots, CloudProfiles and Projects are
//! real API objects, validated and defaulted by Gardener's own admission plugins, and admission
//! webhooks for them are called by gardener-apiserver exactly as in a landscape.
//!
//! Opt-in: [`TestEnv::start`] and [`TestEnv::shared`] stay as they are; only tests that need a
//! garden pay for the extra process (about 5 s to start).

use super::process::{self, Supervised};
use super::{TestEnv, TestEnvError, io, kubeconfig_yaml};
use crate::certs::CertificateAuthority;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{APIService, APIServiceSpec, ServiceReference};
use kube::api::{Api, ObjectMeta, PostParams};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The group versions gardener-apiserver serves (Gardener's `AllGardenerAPIGroupVersions`).
pub const GARDENER_GROUP_VERSIONS: [(&str, &str); 5] = [
    ("core.gardener.cloud", "v1"),
    ("core.gardener.cloud", "v1beta1"),
    ("seedmanagement.gardener.cloud", "v1alpha1"),
    ("operations.gardener.cloud", "v1alpha1"),
    ("security.gardener.cloud", "v1alpha1"),
];

/// The Service the APIServices point at: an ExternalName to localhost, resolved by the aggregator
/// without endpoints; the serving certificate is checked against `<name>.<namespace>.svc`.
const SERVICE_NAME: &str = "gardener-apiserver";
const SERVICE_NAMESPACE: &str = "kube-system";
/// Its own etcd prefix in the shared etcd, as in a landscape.
const ETCD_PREFIX: &str = "/registry-gardener";
const DAY: Duration = Duration::from_secs(24 * 3600);

/// A running garden: etcd, kube-apiserver with aggregation, gardener-apiserver. Dropping it stops
/// all three.
pub struct GardenEnv {
    // Field order matters: gardener-apiserver stops before the control plane it talks to.
    gardener_apiserver: Supervised,
    kube: TestEnv,
    gardener_url: String,
}

impl GardenEnv {
    /// Starts a fresh garden with gardener-apiserver's default admission plugins.
    pub async fn start() -> Result<Self, TestEnvError> {
        Self::start_with_args(&[]).await
    }

    /// As [`Self::start`], with extra gardener-apiserver flags (e.g. `--disable-admission-plugins=..`).
    pub async fn start_with_args(extra_args: &[String]) -> Result<Self, TestEnvError> {
        let started = Instant::now();
        let bin = gardener_apiserver_binary()?;
        let kube = TestEnv::start_with(false, true).await?;
        let root = kube.dir().to_path_buf();
        let write = |name: &str, content: &str| -> Result<PathBuf, TestEnvError> {
            let p = root.join(name);
            std::fs::write(&p, content).map_err(io(format!("writing {}", p.display())))?;
            Ok(p)
        };
        let startup = |what: &str| {
            let what = what.to_string();
            move |e: crate::certs::CertError| TestEnvError::Startup(format!("{what}: {e}"))
        };
        let ca = CertificateAuthority::generate("kata-testenv-gardener-apiserver-ca", DAY)
            .map_err(startup("generating the gardener-apiserver CA"))?;
        let serving = ca
            .issue_serving(
                SERVICE_NAME,
                &[
                    "localhost".into(),
                    format!("{SERVICE_NAME}.{SERVICE_NAMESPACE}.svc"),
                    format!("{SERVICE_NAME}.{SERVICE_NAMESPACE}.svc.cluster.local"),
                ],
                &["127.0.0.1".parse().expect("ip")],
                DAY,
            )
            .map_err(startup("issuing the gardener-apiserver serving certificate"))?;
        let cert = write("gardener-apiserver.crt", &serving.cert_pem)?;
        let key = write("gardener-apiserver.key", &serving.key_pem)?;
        let port = process::free_port()?;
        let gardener_url = format!("https://127.0.0.1:{port}");
        let kubeconfig = kube.kubeconfig_path().display().to_string();
        let mut args = vec![
            "--bind-address=127.0.0.1".to_string(),
            format!("--secure-port={port}"),
            format!("--etcd-servers={}", kube.etcd_url),
            format!("--etcd-prefix={ETCD_PREFIX}"),
            format!("--tls-cert-file={}", cert.display()),
            format!("--tls-private-key-file={}", key.display()),
            "--cluster-identity=kata-testenv".into(),
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--authorization-always-allow-paths=/healthz,/readyz,/livez".into(),
            "--enable-priority-and-fairness=false".into(),
            "--v=0".into(),
        ];
        args.extend(extra_args.iter().cloned());
        let gardener_apiserver = Supervised::spawn(&bin, &args, &root.join("gardener-apiserver.log"))?;
        let garden = GardenEnv {
            gardener_apiserver,
            kube,
            gardener_url,
        };
        garden.wait_healthy(&ca.cert_pem, Duration::from_secs(60)).await?;
        garden.register_apis(&ca.cert_pem).await?;
        garden.wait_served(Duration::from_secs(60)).await?;
        tracing::info!(elapsed = ?started.elapsed(), "test garden ready");
        Ok(garden)
    }

    /// The garden shared by all tests of one test binary, started on first use; its processes are
    /// killed when the test process exits. Use it or [`TestEnv::shared`] in one binary, not both.
    pub fn shared() -> &'static GardenEnv {
        static SHARED: OnceLock<GardenEnv> = OnceLock::new();
        SHARED.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            // As in TestEnv::shared: a thread that never exits spawns the processes, because the
            // parent-death signal follows the spawning thread.
            std::thread::Builder::new()
                .name("testenv-garden".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("tokio runtime for the test garden");
                    let env = rt.block_on(GardenEnv::start());
                    let failed = env.is_err();
                    tx.send(env).ok();
                    if !failed {
                        loop {
                            std::thread::park();
                        }
                    }
                })
                .expect("spawning the test garden thread");
            let env = rx
                .recv()
                .expect("test garden thread died")
                .unwrap_or_else(|e| panic!("starting the test garden: {e}"));
            process::cleanup_at_exit(
                &[
                    env.gardener_apiserver.pid(),
                    env.kube.etcd.pid(),
                    env.kube.apiserver.pid(),
                ],
                env.kube.dir.path(),
            );
            env
        })
    }

    /// The kube-apiserver of the garden (clients, kubeconfig, webhook registration).
    pub fn kube(&self) -> &TestEnv {
        &self.kube
    }

    /// gardener-apiserver's own URL (clients normally go through the kube-apiserver).
    pub fn gardener_apiserver_url(&self) -> &str {
        &self.gardener_url
    }

    /// The last 4 KiB of gardener-apiserver's log, for assertion messages.
    pub fn gardener_apiserver_log_tail(&self) -> String {
        self.gardener_apiserver.log_tail()
    }

    async fn wait_healthy(&self, ca_pem: &str, timeout: Duration) -> Result<(), TestEnvError> {
        let deadline = Instant::now() + timeout;
        let kc = kubeconfig_yaml(&self.gardener_url, ca_pem, "admin", &self.kube.admin_token);
        let client = super::client_for(&kc).await?;
        loop {
            let req = http::Request::get("/healthz").body(Vec::new()).expect("request");
            match client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                _ => {
                    if let Some(e) =
                        self.gave_up(deadline, || format!("gardener-apiserver not healthy after {timeout:?}"))
                    {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// The error to stop waiting with: gardener-apiserver exited, or `deadline` passed.
    fn gave_up(&self, deadline: Instant, waiting_for: impl FnOnce() -> String) -> Option<TestEnvError> {
        let why = match self.gardener_apiserver.exited() {
            Some(status) => format!("gardener-apiserver exited ({status})"),
            None if Instant::now() > deadline => waiting_for(),
            None => return None,
        };
        Some(TestEnvError::Startup(format!(
            "{why}; gardener-apiserver log tail:\n{}\nkube-apiserver log tail:\n{}",
            self.gardener_apiserver.log_tail(),
            self.kube.apiserver.log_tail()
        )))
    }

    /// The Service and one APIService per group version, as a landscape's gardener-apiserver
    /// chart creates them.
    async fn register_apis(&self, ca_pem: &str) -> Result<(), TestEnvError> {
        let client = self.kube.client().await;
        let service = Service {
            metadata: ObjectMeta {
                name: Some(SERVICE_NAME.into()),
                namespace: Some(SERVICE_NAMESPACE.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some("localhost".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        Api::<Service>::namespaced(client.clone(), SERVICE_NAMESPACE)
            .create(&PostParams::default(), &service)
            .await?;
        let port: i32 = self
            .gardener_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| TestEnvError::Startup(format!("no port in {}", self.gardener_url)))?;
        let api: Api<APIService> = Api::all(client);
        for (group, version) in GARDENER_GROUP_VERSIONS {
            let apiservice = APIService {
                metadata: ObjectMeta {
                    name: Some(format!("{version}.{group}")),
                    ..Default::default()
                },
                spec: Some(APIServiceSpec {
                    group: Some(group.into()),
                    version: Some(version.into()),
                    group_priority_minimum: 100,
                    version_priority: 100,
                    ca_bundle: Some(k8s_openapi::ByteString(ca_pem.as_bytes().to_vec())),
                    service: Some(ServiceReference {
                        name: Some(SERVICE_NAME.into()),
                        namespace: Some(SERVICE_NAMESPACE.into()),
                        port: Some(port),
                    }),
                    insecure_skip_tls_verify: None,
                }),
                status: None,
            };
            api.create(&PostParams::default(), &apiservice).await?;
        }
        Ok(())
    }

    /// Until every APIService is Available and Shoots can be listed through the kube-apiserver.
    async fn wait_served(&self, timeout: Duration) -> Result<(), TestEnvError> {
        let deadline = Instant::now() + timeout;
        let client = self.kube.client().await;
        let api: Api<APIService> = Api::all(client.clone());
        loop {
            let mut pending = Vec::new();
            for (group, version) in GARDENER_GROUP_VERSIONS {
                let name = format!("{version}.{group}");
                let available = api.get_opt(&name).await.ok().flatten().is_some_and(|s| {
                    s.status
                        .and_then(|st| st.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Available" && c.status == "True")
                });
                if !available {
                    pending.push(name);
                }
            }
            // Available is set by the availability controller, while the aggregator installs its
            // proxy for a group version from a separate informer: until then that group answers
            // 404. So every group version must also be reachable through the kube-apiserver.
            if pending.is_empty() {
                for (group, version) in GARDENER_GROUP_VERSIONS {
                    let req = http::Request::get(format!("/apis/{group}/{version}"))
                        .body(Vec::new())
                        .expect("request");
                    if client.request_text(req).await.is_err() {
                        pending.push(format!("/apis/{group}/{version} through the kube-apiserver"));
                    }
                }
            }
            if pending.is_empty() {
                let req = http::Request::get("/apis/core.gardener.cloud/v1beta1/shoots?limit=1")
                    .body(Vec::new())
                    .expect("request");
                if client.request_text(req).await.is_ok() {
                    return Ok(());
                }
                pending.push("listing shoots".into());
            }
            if let Some(e) = self.gave_up(deadline, || {
                format!(
                    "Gardener APIs not served after {timeout:?} (waiting for {})",
                    pending.join(", ")
                )
            }) {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn gardener_apiserver_binary() -> Result<PathBuf, TestEnvError> {
    let bins = process::Binaries::locate()?;
    let p = bins.dir.join("gardener-apiserver");
    if p.exists() {
        Ok(p)
    } else {
        Err(TestEnvError::Missing(format!(
            "{} not found (hack/testbin.sh gardener-apiserver)",
            p.display()
        )))
    }
}
