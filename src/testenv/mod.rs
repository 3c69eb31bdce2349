//! A real control plane for tests, benchmarks and the local demo: etcd and kube-apiserver built by
//! `hack/testbin.sh`, started on free loopback ports with RBAC, and Gardener's seed CRDs installed.
//!
//! A bare apiserver has no controller-manager and no gardener-resource-manager: no garbage
//! collection, namespaces never finish deleting, ManagedResources are never applied. Tests assert on
//! what the extension writes and use a fresh namespace each.

mod certs;
mod garden;
mod gardener_access;
mod process;
mod resource_manager;
mod standins;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use garden::GardenEnv;
pub use gardener_access::deploy_gardener_access;
use process::Supervised;
pub use process::{Binaries, free_port, status_kib};
pub use resource_manager::{ResourceManager, ResourceManagerOptions};
pub use standins::ForegroundDeletionStandIn;

#[derive(Debug, thiserror::Error)]
pub enum TestEnvError {
    #[error("test binaries missing: {0}. Run `make testbin` (hack/testbin.sh) first")]
    Missing(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Startup(String),
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestEnvError {
    let what = what.into();
    move |source| TestEnvError::Io { what, source }
}

/// A running etcd + kube-apiserver. Dropping it stops both and removes the temp dir.
pub struct TestEnv {
    // Field order matters: processes stop before the directory they write to goes away.
    apiserver: Supervised,
    etcd: Supervised,
    url: String,
    etcd_url: String,
    ca_pem: String,
    admin_token: String,
    kubeconfig_path: PathBuf,
    dir: tempfile::TempDir,
}

const ADMIN_TOKEN_BYTES: usize = 24;

impl TestEnv {
    /// Starts a fresh control plane and installs Gardener's CRDs: a seed.
    pub async fn start() -> Result<Self, TestEnvError> {
        Self::start_with(true, false).await
    }

    /// Starts a fresh control plane without Gardener's CRDs: a shoot, as
    /// gardener-resource-manager's target.
    pub async fn start_shoot() -> Result<Self, TestEnvError> {
        Self::start_with(false, false).await
    }

    /// `aggregation`: front-proxy flags, so that aggregated API servers (gardener-apiserver) can be
    /// registered with APIServices.
    async fn start_with(crds: bool, aggregation: bool) -> Result<Self, TestEnvError> {
        let bins = Binaries::locate()?;
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("kata-testenv-")
            .tempdir()
            .map_err(io("creating the temp dir"))?;
        let root = dir.path();
        let pki = certs::ControlPlanePki::generate()
            .map_err(|e| TestEnvError::Startup(format!("generating certificates: {e}")))?;
        let admin_token = certs::random_token(ADMIN_TOKEN_BYTES);
        let write = |name: &str, content: &str| -> Result<PathBuf, TestEnvError> {
            let p = root.join(name);
            std::fs::write(&p, content).map_err(io(format!("writing {}", p.display())))?;
            Ok(p)
        };
        write("ca.crt", &pki.ca_pem)?;
        let serving_cert = write("apiserver.crt", &pki.serving_cert_pem)?;
        let serving_key = write("apiserver.key", &pki.serving_key_pem)?;
        let sa_key = write("sa.key", &pki.sa_key_pem)?;
        let sa_pub = write("sa.pub", &pki.sa_pub_pem)?;
        let tokens = write("tokens.csv", &format!("{admin_token},admin,admin,\"system:masters\"\n"))?;

        let etcd_port = process::free_port()?;
        let etcd_peer_port = process::free_port()?;
        let api_port = process::free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd = Supervised::spawn(
            &bins.etcd,
            &[
                "--data-dir".into(),
                root.join("etcd").display().to_string(),
                "--listen-client-urls".into(),
                etcd_url.clone(),
                "--advertise-client-urls".into(),
                etcd_url.clone(),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{etcd_peer_port}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{etcd_peer_port}"),
                "--initial-cluster".into(),
                format!("default=http://127.0.0.1:{etcd_peer_port}"),
                "--unsafe-no-fsync".into(),
                "--quota-backend-bytes".into(),
                (4u64 << 30).to_string(),
                "--log-level".into(),
                "warn".into(),
            ],
            &root.join("etcd.log"),
        )?;
        let url = format!("https://127.0.0.1:{api_port}");
        let mut extra_args = Vec::new();
        if aggregation {
            let proxy = certs::FrontProxyPki::generate()
                .map_err(|e| TestEnvError::Startup(format!("generating front-proxy certificates: {e}")))?;
            let ca = write("front-proxy-ca.crt", &proxy.ca_pem)?;
            let cert = write("front-proxy-client.crt", &proxy.client_cert_pem)?;
            let key = write("front-proxy-client.key", &proxy.client_key_pem)?;
            extra_args.extend([
                format!("--requestheader-client-ca-file={}", ca.display()),
                format!("--requestheader-allowed-names={}", certs::FRONT_PROXY_CN),
                "--requestheader-username-headers=X-Remote-User".into(),
                "--requestheader-group-headers=X-Remote-Group".into(),
                "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
                format!("--proxy-client-cert-file={}", cert.display()),
                format!("--proxy-client-key-file={}", key.display()),
            ]);
        }
        if !crds {
            // a shoot's apiserver also accepts tokens for Gardener's audience, which
            // gardener-resource-manager's token requestor asks for (shoot access secrets)
            extra_args.push(format!("--api-audiences={url},gardener"));
        }
        let apiserver = Supervised::spawn(
            &bins.kube_apiserver,
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", root.join("certs").display()),
                format!("--tls-cert-file={}", serving_cert.display()),
                format!("--tls-private-key-file={}", serving_key.display()),
                format!("--token-auth-file={}", tokens.display()),
                "--authorization-mode=RBAC".into(),
                format!("--service-account-issuer={url}"),
                format!("--service-account-key-file={}", sa_pub.display()),
                format!("--service-account-signing-key-file={}", sa_key.display()),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--allow-privileged=true".into(),
                "--disable-admission-plugins=ServiceAccount".into(),
                "--endpoint-reconciler-type=none".into(),
                "--enable-priority-and-fairness=false".into(),
                "--v=0".into(),
            ]
            .into_iter()
            .chain(extra_args)
            .collect::<Vec<_>>(),
            &root.join("kube-apiserver.log"),
        )?;
        let kubeconfig = kubeconfig_yaml(&url, &pki.ca_pem, "admin", &admin_token);
        let kubeconfig_path = write("kubeconfig", &kubeconfig)?;
        let env = TestEnv {
            apiserver,
            etcd,
            url,
            etcd_url,
            ca_pem: pki.ca_pem,
            admin_token,
            kubeconfig_path,
            dir,
        };
        env.wait_ready(Duration::from_secs(60)).await?;
        if crds {
            env.install_crds(&bins.crds).await?;
        }
        tracing::info!(elapsed = ?started.elapsed(), url = %env.url, "test control plane ready");
        Ok(env)
    }

    /// The control plane shared by all tests of one test binary, started on first use. Its
    /// processes are killed when the test process exits (also on panic or abort).
    pub fn shared() -> &'static TestEnv {
        static SHARED: OnceLock<TestEnv> = OnceLock::new();
        SHARED.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            // A thread that never exits spawns the processes, because the parent-death signal
            // follows the spawning thread, and test threads come and go.
            std::thread::Builder::new()
                .name("testenv".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("tokio runtime for the test environment");
                    let env = rt.block_on(TestEnv::start());
                    let failed = env.is_err();
                    tx.send(env).ok();
                    if !failed {
                        loop {
                            std::thread::park();
                        }
                    }
                })
                .expect("spawning the testenv thread");
            let env = rx
                .recv()
                .expect("testenv thread died")
                .unwrap_or_else(|e| panic!("starting the test control plane: {e}"));
            process::cleanup_at_exit(&[env.etcd.pid(), env.apiserver.pid()], env.dir.path());
            env
        })
    }

    /// The kube-apiserver process id (CPU accounting in benchmarks).
    pub fn apiserver_pid(&self) -> u32 {
        self.apiserver.pid()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// An admin kubeconfig on disk, for processes (the extension binary, kubectl).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The temp dir of this control plane (logs, certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new admin client. Clients are bound to the tokio runtime that first uses them, so every
    /// test gets its own.
    pub async fn client(&self) -> kube::Client {
        client_for(&kubeconfig_yaml(&self.url, &self.ca_pem, "admin", &self.admin_token))
            .await
            .expect("admin client")
    }

    /// A client that authenticates with `token` (e.g. a pod-bound ServiceAccount token).
    pub async fn client_with_token(&self, user: &str, token: &str) -> Result<kube::Client, TestEnvError> {
        client_for(&kubeconfig_yaml(&self.url, &self.ca_pem, user, token)).await
    }

    /// A client that authenticates as ServiceAccount `namespace/name` with a real token from the
    /// TokenRequest API, so RBAC applies exactly as for a pod. The ServiceAccount is created if
    /// missing.
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Result<kube::Client, TestEnvError> {
        let token = self.service_account_token(namespace, name).await?;
        let user = format!("system:serviceaccount:{namespace}:{name}");
        client_for(&kubeconfig_yaml(&self.url, &self.ca_pem, &user, &token)).await
    }

    async fn service_account_token(&self, namespace: &str, name: &str) -> Result<String, TestEnvError> {
        let admin = self.client().await;
        let sas: Api<ServiceAccount> = Api::namespaced(admin, namespace);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match sas.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let request = TokenRequest {
            spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        sas.create_token_request(name, &PostParams::default(), &request)
            .await?
            .status
            .map(|s| s.token)
            .ok_or_else(|| TestEnvError::Startup("TokenRequest returned no token".into()))
    }

    /// A kubeconfig file for ServiceAccount `namespace/name` (created if missing), for processes
    /// that should run with exactly that ServiceAccount's permissions.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf, TestEnvError> {
        let token = self.service_account_token(namespace, name).await?;
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let path = self.dir.path().join(format!("kubeconfig-{namespace}-{name}"));
        std::fs::write(&path, kubeconfig_yaml(&self.url, &self.ca_pem, &user, &token))
            .map_err(io(format!("writing {}", path.display())))?;
        Ok(path)
    }

    /// Stand-in for gardenlet's shoot access secret: `gardener-internal` in the seed `namespace`
    /// with a kubeconfig for this apiserver as the shoot (in Gardener its token is a ServiceAccount
    /// token kept fresh by gardener-resource-manager; here the admin token).
    pub async fn grant_shoot_access(&self, seed: &kube::Client, namespace: &str) -> Result<(), TestEnvError> {
        self.grant_shoot_access_as(seed, namespace, "gardener-internal").await
    }

    /// [`Self::grant_shoot_access`] under another secret name (`gardener`: the external one).
    pub async fn grant_shoot_access_as(
        &self,
        seed: &kube::Client,
        namespace: &str,
        secret_name: &str,
    ) -> Result<(), TestEnvError> {
        let kubeconfig = kubeconfig_yaml(&self.url, &self.ca_pem, "admin", &self.admin_token);
        let secret = k8s_openapi::api::core::v1::Secret {
            metadata: ObjectMeta {
                name: Some(secret_name.into()),
                ..Default::default()
            },
            data: Some(
                [(
                    "kubeconfig".to_string(),
                    k8s_openapi::ByteString(kubeconfig.into_bytes()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(seed.clone(), namespace);
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a fresh shoot-like namespace (`shoot--it--<prefix>-<n>`) and returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = format!("shoot--it--{prefix}-{}-{n}", std::process::id());
        name.truncate(63);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("gardener.cloud/role".to_string(), "shoot".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client().await)
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        name
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<(), TestEnvError> {
        let deadline = Instant::now() + timeout;
        let client = self.client().await;
        loop {
            let req = http::Request::get("/readyz").body(Vec::new()).expect("request");
            match client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                _ if Instant::now() > deadline => {
                    return Err(TestEnvError::Startup(format!(
                        "kube-apiserver not ready after {timeout:?}; log tail:\n{}\netcd log tail:\n{}",
                        self.apiserver.log_tail(),
                        self.etcd.log_tail()
                    )));
                }
                _ => {
                    if let Some(status) = self.apiserver.exited() {
                        return Err(TestEnvError::Startup(format!(
                            "kube-apiserver exited ({status}); log tail:\n{}",
                            self.apiserver.log_tail()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn install_crds(&self, dir: &Path) -> Result<(), TestEnvError> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client().await);
        let mut names = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(io(format!("reading {}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
            let crd: CustomResourceDefinition = serde_saphyr::from_str(&text)
                .map_err(|e| TestEnvError::Startup(format!("decoding {}: {e}", path.display())))?;
            names.push(crd.metadata.name.clone().unwrap_or_default());
            api.create(&PostParams::default(), &crd).await?;
        }
        for name in names {
            let cond = kube::runtime::conditions::is_crd_established();
            tokio::time::timeout(
                Duration::from_secs(30),
                kube::runtime::wait::await_condition(api.clone(), &name, cond),
            )
            .await
            .map_err(|_| TestEnvError::Startup(format!("CRD {name} not established after 30s")))?
            .map_err(|e| TestEnvError::Startup(format!("waiting for CRD {name}: {e}")))?;
        }
        Ok(())
    }
}

/// A kubeconfig with one cluster, one token user and one context.
pub fn kubeconfig_yaml(url: &str, ca_pem: &str, user: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testenv\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: {user:?}\n  user:\n    token: {token}\ncontexts:\n- name: testenv\n  context:\n    cluster: testenv\n    user: {user:?}\ncurrent-context: testenv\n"
    )
}

async fn client_for(kubeconfig: &str) -> Result<kube::Client, TestEnvError> {
    let kc = Kubeconfig::from_yaml(kubeconfig).map_err(|e| TestEnvError::Startup(format!("kubeconfig: {e}")))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| TestEnvError::Startup(format!("kubeconfig: {e}")))?;
    Ok(kube::Client::try_from(config)?)
}
