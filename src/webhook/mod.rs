//! The OperatingSystemConfig mutating webhook: adds Firecracker's devmapper prerequisites (thin-pool
//! setup script, systemd unit, containerd snapshotter configuration) to the OSCs of kata pools that
//! enable the `fc` shim.
//!
//! - [`mutate`]: the pure mutation (what changes in an OSC, as a minimal JSON patch);
//! - [`handler`]: the AdmissionReview endpoint;
//! - [`server`]: HTTPS (axum + rustls) with hot certificate reload;
//! - [`certs`]: CA and serving certificate in a Secret, rotation;
//! - [`registration`]: the MutatingWebhookConfiguration.
//!
//! [`run`] ties them together; the binary calls it with options from its `--webhook-config-*` flags.
//! [`serve_tls`] (HTTPS, certificates, rotation, registration repair through a [`Registrar`]) is
//! shared with the garden admission (`crate::admission`).

pub mod certs;
pub mod handler;
pub mod limits;
pub mod mutate;
pub mod registration;
pub mod server;

use crate::runtime::metrics::Metrics;
use certs::{CertBundle, CertOptions, CertStore, CertStoreError, Identity};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use handler::{ApiClusters, HandlerState};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use mutate::MutationSettings;
use registration::{ClientTarget, FailurePolicy, Registration};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// Default path of the OSC webhook.
pub const DEFAULT_PATH: &str = "/webhooks/operatingsystemconfig";
/// Default name of the webhook Service (and of the extension).
pub const DEFAULT_SERVICE_NAME: &str = "gardener-extension-runtime-kata";

/// How the apiserver reaches the webhook (`--webhook-config-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ConfigMode {
    /// Through the Service `gardener-extension-runtime-kata` in the extension's namespace.
    #[default]
    Service,
    /// Through `--webhook-config-url` (local runs, tests).
    Url,
}

impl std::str::FromStr for ConfigMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "service" => Ok(ConfigMode::Service),
            "url" => Ok(ConfigMode::Url),
            other => Err(format!("unknown webhook config mode {other:?} (service or url)")),
        }
    }
}

/// Options of the webhook; see [`WebhookOptions::default`] for the defaults.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// `--webhook-config-mode` (default `service`).
    pub mode: ConfigMode,
    /// `--webhook-config-url`: `host[:port]` or `https://host[:port]` (url mode). `None` in url mode:
    /// `https://<bind address>:<bound port>`, handy with port 0 in tests.
    pub url: Option<String>,
    /// `--webhook-config-namespace`: the extension's namespace (certificate Secret, Service).
    pub namespace: String,
    /// Name of the webhook Service (default `gardener-extension-runtime-kata`).
    pub service_name: String,
    /// Listen address (default `0.0.0.0`).
    pub bind_address: IpAddr,
    /// `--webhook-config-server-port` (default 10250, as in Gardener; 0 picks a free port).
    pub server_port: u16,
    /// `--webhook-config-service-port` (default 443).
    pub service_port: u16,
    /// URL path of the OSC webhook (default `/webhooks/operatingsystemconfig`).
    pub path: String,
    /// Name of the MutatingWebhookConfiguration (default `gardener-extension-runtime-kata`).
    pub configuration_name: String,
    /// `--webhook-failure-policy` (default Ignore; see [`FailurePolicy`] for why).
    pub failure_policy: FailurePolicy,
    /// Default 10 s (short: the apiserver waits this long per OSC write).
    pub timeout_seconds: i32,
    /// Also select by `containerruntime.worker.gardener.cloud/kata=true` on the OSC (only for
    /// Gardener versions that set this label; v1.149 does not). Default off.
    pub object_selector: bool,
    /// Default `gardener.cloud/role=shoot`.
    pub namespace_selector: LabelSelector,
    /// Default [`server::DEFAULT_MAX_BODY_BYTES`] (7 MiB: object and old object of the largest
    /// object an apiserver stores).
    pub max_body_bytes: usize,
    pub mutation: MutationSettings,
    pub certs: CertOptions,
    /// Create/update the MutatingWebhookConfiguration (default true).
    pub register: bool,
    /// Open connections and idle time per connection.
    pub limits: limits::ConnectionLimits,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            mode: ConfigMode::Service,
            url: None,
            namespace: "default".into(),
            service_name: DEFAULT_SERVICE_NAME.into(),
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            server_port: 10250,
            service_port: 443,
            path: DEFAULT_PATH.into(),
            configuration_name: registration::DEFAULT_CONFIGURATION_NAME.into(),
            failure_policy: FailurePolicy::Ignore,
            timeout_seconds: 10,
            object_selector: false,
            namespace_selector: registration::shoot_namespace_selector(),
            max_body_bytes: server::DEFAULT_MAX_BODY_BYTES,
            mutation: MutationSettings::default(),
            certs: CertOptions::default(),
            register: true,
            limits: limits::ConnectionLimits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Certs(#[from] CertStoreError),
    #[error("webhook TLS: {0}")]
    Tls(#[from] server::TlsError),
    #[error("registering {kind} {name}: {source}")]
    Register {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("webhook server on {addr}: {source}")]
    Serve { addr: SocketAddr, source: std::io::Error },
    #[error("invalid webhook options: {0}")]
    Options(String),
}

impl WebhookOptions {
    /// The host of the url-mode URL, if any.
    fn url_host(&self) -> Option<String> {
        let url = self.url.as_deref()?;
        let rest = url.strip_prefix("https://").unwrap_or(url);
        let authority = rest.split('/').next().unwrap_or(rest);
        let host = if let Some(v6) = authority.strip_prefix('[') {
            v6.split(']').next().unwrap_or(v6)
        } else {
            authority.rsplit_once(':').map_or(authority, |(h, _)| h)
        };
        Some(host.to_string())
    }

    /// Whom the serving certificate is for: the Service's DNS names, plus the url-mode host.
    pub fn identity(&self, bound: SocketAddr) -> Identity {
        let svc = &self.service_name;
        let ns = &self.namespace;
        let mut dns_names = vec![
            svc.clone(),
            format!("{svc}.{ns}"),
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
        ];
        let mut ips = Vec::new();
        if self.mode == ConfigMode::Url {
            match self.url_host() {
                Some(host) => match host.parse::<IpAddr>() {
                    Ok(ip) => ips.push(ip),
                    Err(_) => dns_names.push(host),
                },
                None => ips.push(url_ip(bound)),
            }
        }
        Identity {
            common_name: svc.clone(),
            dns_names,
            ips,
        }
    }

    /// Where the apiserver sends reviews.
    pub fn target(&self, bound: SocketAddr) -> ClientTarget {
        match self.mode {
            ConfigMode::Service => ClientTarget::Service {
                namespace: self.namespace.clone(),
                name: self.service_name.clone(),
                port: self.service_port,
                path: self.path.clone(),
            },
            ConfigMode::Url => {
                let base = match &self.url {
                    Some(url) if url.starts_with("https://") => url.trim_end_matches('/').to_string(),
                    Some(url) => format!("https://{}", url.trim_end_matches('/')),
                    None => format!("https://{}", SocketAddr::new(url_ip(bound), bound.port())),
                };
                ClientTarget::Url(format!("{base}{}", self.path))
            }
        }
    }

    pub fn registration(&self, bound: SocketAddr) -> Registration {
        Registration {
            configuration_name: self.configuration_name.clone(),
            owner_namespace: Some(self.namespace.clone()),
            target: self.target(bound),
            failure_policy: self.failure_policy,
            timeout_seconds: self.timeout_seconds,
            object_selector: self.object_selector,
            namespace_selector: self.namespace_selector.clone(),
        }
    }
}

fn url_ip(bound: SocketAddr) -> IpAddr {
    if bound.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        bound.ip()
    }
}

/// Runs the webhook until `shutdown` completes: ensures the certificates, registers the
/// MutatingWebhookConfiguration, serves HTTPS, and rotates/reloads certificates in the background.
///
/// `ready` receives the bound address once the server accepts connections and the configuration
/// is registered; `registered` then follows whether the configuration is intact in the cluster. Returns after a graceful shutdown (in-flight requests get up to 10 s).
pub async fn run(
    client: kube::Client,
    opts: WebhookOptions,
    metrics: Option<Arc<Metrics>>,
    ready: Option<oneshot::Sender<SocketAddr>>,
    registered: Option<watch::Sender<bool>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WebhookError> {
    if !opts.path.starts_with('/') {
        return Err(WebhookError::Options(format!(
            "path {:?} must start with '/'",
            opts.path
        )));
    }
    if opts.mode == ConfigMode::Url && opts.url.is_none() && opts.bind_address.is_unspecified() {
        tracing::warn!("url mode without --webhook-config-url: using https://127.0.0.1:<port>");
    }
    let (listener, bound) = bind(opts.bind_address, opts.server_port)?;
    let store = CertStore::new(
        client.clone(),
        &opts.namespace,
        opts.certs.clone(),
        opts.identity(bound),
    );
    let registrar: Option<Arc<dyn Registrar>> = opts.register.then(|| {
        Arc::new(MutatingRegistrar {
            client: client.clone(),
            registration: opts.registration(bound),
        }) as Arc<dyn Registrar>
    });
    let state = Arc::new(HandlerState {
        clusters: Box::new(ApiClusters(client.clone())),
        settings: opts.mutation.clone(),
        metrics,
        webhook_label: opts.path.clone(),
    });
    let app = server::router(state, &opts.path);
    serve_tls(
        TlsServing {
            listener,
            bound,
            store,
            registrar,
            limits: opts.limits,
            max_body_bytes: opts.max_body_bytes,
            path: opts.path.clone(),
        },
        app,
        ready,
        registered,
        shutdown,
    )
    .await
}

/// Binds the webhook port (0: any free port); the listener is non-blocking, ready for
/// [`serve_tls`].
pub fn bind(address: IpAddr, port: u16) -> Result<(std::net::TcpListener, SocketAddr), WebhookError> {
    let addr = SocketAddr::new(address, port);
    let listener = std::net::TcpListener::bind(addr).map_err(|source| WebhookError::Serve { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| WebhookError::Serve { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| WebhookError::Serve { addr: bound, source })?;
    Ok((listener, bound))
}

/// A webhook configuration that names our server and trusts our CA: the seed's
/// MutatingWebhookConfiguration, the garden admission's ValidatingWebhookConfiguration.
pub trait Registrar: Send + Sync + 'static {
    /// The object kind, for logs and errors.
    fn kind(&self) -> &'static str;
    fn name(&self) -> &str;
    /// Creates or updates the configuration with `ca_bundle_pem`.
    fn apply<'a>(&'a self, ca_bundle_pem: &'a str) -> BoxFuture<'a, Result<(), kube::Error>>;
    /// Whether the configuration in the cluster is the whole desired one, trusting
    /// `ca_bundle_pem` (true when unknown: the next check decides).
    fn intact<'a>(&'a self, ca_bundle_pem: &'a str) -> BoxFuture<'a, bool>;
    /// Fires when the configuration may have been changed or deleted behind our back.
    fn changes(&self) -> BoxStream<'static, ()>;
}

/// The seed's OSC webhook configuration.
pub struct MutatingRegistrar {
    pub client: kube::Client,
    pub registration: Registration,
}

impl Registrar for MutatingRegistrar {
    fn kind(&self) -> &'static str {
        "MutatingWebhookConfiguration"
    }

    fn name(&self) -> &str {
        &self.registration.configuration_name
    }

    fn apply<'a>(&'a self, ca_bundle_pem: &'a str) -> BoxFuture<'a, Result<(), kube::Error>> {
        Box::pin(async move {
            let desired = self.registration.desired(&self.client, ca_bundle_pem).await?;
            let api: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(self.client.clone());
            registration::server_side_apply(&api, self.name(), registration::FIELD_MANAGER, &desired, false).await?;
            Ok(())
        })
    }

    fn intact<'a>(&'a self, ca_bundle_pem: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let api: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(self.client.clone());
            let checked = async {
                let desired = self.registration.desired(&self.client, ca_bundle_pem).await?;
                registration::is_registered(&api, self.name(), registration::FIELD_MANAGER, &desired).await
            };
            unknown_is_intact(self.kind(), checked.await)
        })
    }

    fn changes(&self) -> BoxStream<'static, ()> {
        let api: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(self.client.clone());
        changes_by_name(api, self.name())
    }
}

/// A check that could not be made counts as intact: the next check decides.
pub fn unknown_is_intact(kind: &str, checked: Result<bool, kube::Error>) -> bool {
    checked.unwrap_or_else(|e| {
        tracing::warn!(error = %e, kind, "checking the webhook configuration failed");
        true
    })
}

/// Create, update and delete events of the object `name` (and the end of every (re-)list, so
/// that what happened while the watch was down is checked too).
pub fn changes_by_name<K>(api: kube::Api<K>, name: &str) -> BoxStream<'static, ()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher(api, config)
        .default_backoff()
        .filter_map(|e| {
            futures::future::ready(
                matches!(
                    e,
                    Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone)
                )
                .then_some(()),
            )
        })
        .boxed()
}

/// Everything [`serve_tls`] needs besides the router.
pub struct TlsServing {
    /// From [`bind`].
    pub listener: std::net::TcpListener,
    pub bound: SocketAddr,
    /// CA and serving certificate (a Secret in the server's own namespace).
    pub store: CertStore,
    /// The configuration to keep registered; `None`: someone else registers it.
    pub registrar: Option<Arc<dyn Registrar>>,
    pub limits: limits::ConnectionLimits,
    /// The largest request body ([`server::DEFAULT_MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
    /// For the log line once listening.
    pub path: String,
}

/// Serves `app` over HTTPS until `shutdown` completes: ensures the certificates, registers the
/// configuration, and rotates/reloads certificates in the background (the seed webhook and the
/// garden admission share this).
///
/// `ready` receives the bound address once the server accepts connections and the configuration
/// is registered; `registered` then follows whether the configuration is intact in the cluster.
/// Returns after a graceful shutdown (in-flight requests get up to 10 s).
pub async fn serve_tls(
    serving: TlsServing,
    app: axum::Router,
    ready: Option<oneshot::Sender<SocketAddr>>,
    registered: Option<watch::Sender<bool>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WebhookError> {
    server::install_crypto_provider();
    let TlsServing {
        listener,
        bound,
        store,
        registrar,
        limits,
        max_body_bytes,
        path,
    } = serving;
    let bundle = with_retries("ensuring the webhook certificates", || async {
        let bundle = store.ensure().await?;
        if let Some(r) = &registrar {
            register(r.as_ref(), &bundle).await?;
        }
        Ok(bundle)
    })
    .await?;
    let tls = server::rustls_config(&bundle.cert_pem, &bundle.key_pem)?;

    let handle = axum_server::Handle::new();
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls.clone())
        .handshake_timeout(Duration::from_secs(10))
        .acceptor(limits::LimitedAcceptor::new(limits));
    let mut server = axum_server::from_tcp(listener)
        .map_err(|source| WebhookError::Serve { addr: bound, source })?
        .acceptor(acceptor)
        .first_request_timeout(Duration::from_secs(10))
        .handle(handle.clone());
    server
        .http_builder()
        .http1()
        .header_read_timeout(Duration::from_secs(10));
    // every route of every server gets the same protections
    let app = server::protected(app, max_body_bytes, &limits);
    let server = server.serve(app.into_make_service());

    if let Some(tx) = &registered {
        tx.send_replace(true);
    }
    let rotation = tokio::spawn(rotate_loop(store, tls, registrar, bundle, registered));
    let ready_handle = handle.clone();
    let announce = tokio::spawn(async move {
        if ready_handle.listening().await.is_some() {
            tracing::info!(addr = %bound, %path, "webhook server listening");
            if let Some(tx) = ready {
                let _ = tx.send(bound);
            }
        }
    });
    let mut server = std::pin::pin!(server);
    let served = tokio::select! {
        // the server ended on its own (an error): no waiting for the shutdown signal
        served = &mut server => served,
        () = shutdown => {
            tracing::info!("webhook server shutting down");
            handle.graceful_shutdown(Some(Duration::from_secs(10)));
            server.await
        }
    };
    rotation.abort();
    announce.abort();
    served.map_err(|source| WebhookError::Serve { addr: bound, source })
}

/// Start-up steps against the API server get a few attempts (1, 2, 4, 8 s apart), so that a
/// briefly unavailable apiserver does not crash the process.
async fn with_retries<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, WebhookError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, WebhookError>>,
{
    let mut delay = Duration::from_secs(1);
    for _ in 0..4 {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "{what} failed");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    attempt().await
}

async fn register(registrar: &dyn Registrar, bundle: &CertBundle) -> Result<(), WebhookError> {
    registrar
        .apply(&bundle.ca_bundle_pem)
        .await
        .map_err(|source| WebhookError::Register {
            kind: registrar.kind(),
            name: registrar.name().to_string(),
            source,
        })?;
    tracing::info!(kind = registrar.kind(), name = %registrar.name(), "registered the webhook configuration");
    Ok(())
}

/// Keeps certificate and registration right: every check interval, and at once when the
/// configuration or the certificate Secret changes. Re-creates a deleted Secret (via the store)
/// and a deleted or altered configuration; applies a new CA bundle to the configuration *before*
/// serving a new certificate, and reloads the served certificate in place. `registered` follows
/// whether the configuration in the cluster is intact (the readiness check).
async fn rotate_loop(
    store: CertStore,
    tls: axum_server::tls_rustls::RustlsConfig,
    registrar: Option<Arc<dyn Registrar>>,
    mut current: CertBundle,
    registered: Option<watch::Sender<bool>>,
) {
    use futures::StreamExt;
    let mut ticker = tokio::time::interval(store.options().check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut triggers = match &registrar {
        Some(r) => futures::stream::select(
            r.changes(),
            changes_by_name(store.secret_api(), &store.options().secret_name),
        )
        .boxed(),
        None => futures::stream::pending().boxed(),
    };
    let set_registered = |ok: bool| {
        if let Some(tx) = &registered {
            tx.send_replace(ok);
        }
    };
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            Some(()) = triggers.next() => {}
        }
        let next = match store.ensure().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "checking webhook certificates failed; retrying");
                continue;
            }
        };
        if let Some(r) = &registrar
            && !r.intact(&next.ca_bundle_pem).await
        {
            set_registered(false);
            match register(r.as_ref(), &next).await {
                Ok(()) => set_registered(true),
                Err(e) => {
                    tracing::warn!(error = %e, "repairing the webhook configuration failed; keeping the current certificate");
                    continue;
                }
            }
        }
        if next.cert_pem != current.cert_pem || next.key_pem != current.key_pem {
            match server::reload(&tls, &next.cert_pem, &next.key_pem) {
                Ok(()) => tracing::info!("reloaded the webhook serving certificate"),
                Err(e) => {
                    tracing::warn!(error = %e, "reloading the webhook certificate failed");
                    continue;
                }
            }
        }
        current = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_identity_and_target() {
        let opts = WebhookOptions {
            namespace: "extension-kata-x".into(),
            ..Default::default()
        };
        let bound: SocketAddr = "0.0.0.0:10250".parse().unwrap();
        let id = opts.identity(bound);
        assert_eq!(
            id.dns_names,
            vec![
                "gardener-extension-runtime-kata",
                "gardener-extension-runtime-kata.extension-kata-x",
                "gardener-extension-runtime-kata.extension-kata-x.svc",
                "gardener-extension-runtime-kata.extension-kata-x.svc.cluster.local"
            ]
        );
        assert!(id.ips.is_empty());
        assert!(matches!(opts.target(bound), ClientTarget::Service { port: 443, .. }));
    }

    #[test]
    fn url_mode_targets() {
        let bound: SocketAddr = "127.0.0.1:4443".parse().unwrap();
        let mut opts = WebhookOptions {
            mode: ConfigMode::Url,
            ..Default::default()
        };
        assert_eq!(
            opts.target(bound),
            ClientTarget::Url("https://127.0.0.1:4443/webhooks/operatingsystemconfig".into())
        );
        assert_eq!(opts.identity(bound).ips, vec![IpAddr::from([127, 0, 0, 1])]);
        opts.url = Some("host.example:9443".into());
        assert_eq!(
            opts.target(bound),
            ClientTarget::Url("https://host.example:9443/webhooks/operatingsystemconfig".into())
        );
        assert!(opts.identity(bound).dns_names.contains(&"host.example".to_string()));
        opts.url = Some("https://10.1.2.3:9443/".into());
        assert_eq!(
            opts.target(bound),
            ClientTarget::Url("https://10.1.2.3:9443/webhooks/operatingsystemconfig".into())
        );
        assert_eq!(opts.identity(bound).ips, vec![IpAddr::from([10, 1, 2, 3])]);
        assert_eq!("url".parse::<ConfigMode>().unwrap(), ConfigMode::Url);
    }
}
