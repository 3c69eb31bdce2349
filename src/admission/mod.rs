//! Garden admission (`admission` subcommand): a validating webhook for `core.gardener.cloud`
//! Shoots, so that a shoot owner learns about a bad kata configuration when submitting the Shoot
//! rather than minutes later from a ContainerRuntime error in the seed.
//!
//! It runs in the garden runtime cluster (its certificate Secret lives there) and registers a
//! ValidatingWebhookConfiguration in the (virtual) garden, whose gardener-apiserver calls it.
//!
//! - [`validate`]: the rules, pure; the providerConfig goes through the seed's own decoder;
//! - [`handler`]: the AdmissionReview endpoint;
//! - [`registration`]: the ValidatingWebhookConfiguration (kata Shoots only, spec changes only);
//! - serving, certificates and rotation are the seed webhook's ([`crate::webhook::serve_tls`]).

pub mod handler;
pub mod registration;
pub mod validate;

use crate::kata::requirements::Requirements;
use crate::runtime::duties::Duties;
use crate::runtime::health::{self, Readiness};
use crate::runtime::metrics::Metrics;
use crate::runtime::shutdown::Shutdown;
use crate::webhook::certs::{CertOptions, CertStore};
use crate::webhook::registration::FailurePolicy;
use crate::webhook::{self, ConfigMode, Registrar, TlsServing, WebhookError, WebhookOptions};
use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use clap::{ArgAction, Args};
use handler::{AdmissionState, GardenProfiles};
use registration::{ShootRegistration, ValidatingRegistrar};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use validate::{CapabilityRequirement, Rules};

/// Name of the admission component (Deployment, Service, ServiceAccount).
pub const NAME: &str = "gardener-extension-admission-runtime-kata";
/// Path of the Shoot validation webhook.
pub const PATH: &str = "/webhooks/validate-shoot";
/// Default `--webhook-timeout-seconds`, see [`AdmissionOptions::default`].
pub const DEFAULT_TIMEOUT_SECONDS: i32 = 5;

/// Options of the admission server.
#[derive(Clone, Debug)]
pub struct AdmissionOptions {
    /// Serving, certificates and how the garden reaches us (shared with the seed webhook):
    /// `namespace` is the runtime-cluster namespace of the certificate Secret.
    pub webhook: WebhookOptions,
    /// `--webhook-config-owner-namespace`: the extension's namespace in the garden.
    pub owner_namespace: Option<String>,
    pub rules: Rules,
}

impl Default for AdmissionOptions {
    /// Failure policy Fail: the object selector and the match condition already confine the
    /// webhook to spec changes of kata Shoots, so an outage can only delay those, never other
    /// Shoots nor gardenlet's metadata updates, and a validation that silently does not happen
    /// would defeat its purpose. Timeout 5 s: the webhook does one GET of a CloudProfile and
    /// microseconds of work, so anything slower is an outage, reported sooner than after 10 s.
    fn default() -> Self {
        Self {
            webhook: WebhookOptions {
                mode: ConfigMode::Url,
                service_name: NAME.into(),
                path: PATH.into(),
                configuration_name: registration::DEFAULT_CONFIGURATION_NAME.into(),
                failure_policy: FailurePolicy::Fail,
                timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
                max_body_bytes: webhook::server::DEFAULT_MAX_BODY_BYTES,
                certs: CertOptions {
                    secret_name: format!("{NAME}-webhook-certs"),
                    ..Default::default()
                },
                ..Default::default()
            },
            owner_namespace: None,
            rules: Rules::default(),
        }
    }
}

impl AdmissionOptions {
    pub fn registration(&self, bound: SocketAddr) -> ShootRegistration {
        ShootRegistration {
            configuration_name: self.webhook.configuration_name.clone(),
            owner_namespace: self.owner_namespace.clone(),
            target: self.webhook.target(bound),
            failure_policy: self.webhook.failure_policy,
            timeout_seconds: self.webhook.timeout_seconds,
        }
    }
}

/// Serves the Shoot webhook until `shutdown`: certificates in `runtime` (the cluster the server
/// runs in), the ValidatingWebhookConfiguration and CloudProfiles in `garden`.
///
/// `ready` receives the bound address once serving and registered; `registered` follows whether
/// the configuration in the garden is intact.
pub async fn run(
    runtime: kube::Client,
    garden: kube::Client,
    opts: AdmissionOptions,
    metrics: Option<Arc<Metrics>>,
    ready: Option<oneshot::Sender<SocketAddr>>,
    registered: Option<watch::Sender<bool>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WebhookError> {
    let w = &opts.webhook;
    if !w.path.starts_with('/') {
        return Err(WebhookError::Options(format!("path {:?} must start with '/'", w.path)));
    }
    let (listener, bound) = webhook::bind(w.bind_address, w.server_port)?;
    let store = CertStore::new(runtime, &w.namespace, w.certs.clone(), w.identity(bound));
    let registrar: Option<Arc<dyn Registrar>> = w.register.then(|| {
        Arc::new(ValidatingRegistrar {
            client: garden.clone(),
            registration: opts.registration(bound),
        }) as Arc<dyn Registrar>
    });
    let state = Arc::new(AdmissionState {
        rules: opts.rules.clone(),
        profiles: Box::new(GardenProfiles(garden)),
        metrics,
        webhook_label: w.path.clone(),
    });
    let app = Router::new()
        .route(&w.path, post(handler::admit))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state);
    webhook::serve_tls(
        TlsServing {
            listener,
            bound,
            store,
            registrar,
            limits: w.limits,
            max_body_bytes: w.max_body_bytes,
            path: w.path.clone(),
        },
        app,
        ready,
        registered,
        shutdown,
    )
    .await
}

/// Flags of the `admission` subcommand, named as the seed's where they mean the same.
#[derive(Args, Debug, Clone)]
pub struct AdmissionArgs {
    /// Kubeconfig of the garden (where the ValidatingWebhookConfiguration and CloudProfiles are);
    /// gardener-operator injects GARDEN_KUBECONFIG. Unset: the runtime cluster's (--kubeconfig).
    #[arg(long, env = "GARDEN_KUBECONFIG")]
    pub garden_kubeconfig: Option<PathBuf>,

    /// Provider types that may run kata (comma-separated); empty means all. Same as the seed's.
    #[arg(long, value_delimiter = ',', env = "KATA_SUPPORTED_PROVIDERS")]
    pub supported_providers: Vec<String>,
    /// Machine image names that may run kata (comma-separated); empty means all. Same as the seed's.
    #[arg(long, value_delimiter = ',', env = "KATA_SUPPORTED_MACHINE_IMAGES")]
    pub supported_machine_images: Vec<String>,
    /// NAME=VALUE: kata pools need a machine type whose CloudProfile entry lists this capability
    /// value (e.g. nestedVirtualization=supported). Unset: any machine type.
    #[arg(long)]
    pub machine_type_capability: Option<CapabilityRequirement>,

    /// How the garden reaches the webhook; url (Gardener's admission default) or service.
    #[arg(long, value_enum, default_value_t = ConfigMode::Url)]
    pub webhook_config_mode: ConfigMode,
    /// With mode url: host[:port] the garden calls, e.g. gardener-extension-admission-runtime-kata.garden.
    #[arg(long)]
    pub webhook_config_url: Option<String>,
    /// Runtime-cluster namespace of the Service and of the certificate Secret.
    #[arg(long, env = "WEBHOOK_CONFIG_NAMESPACE")]
    pub webhook_config_namespace: String,
    /// The extension's namespace in the garden: owner of the ValidatingWebhookConfiguration.
    #[arg(long)]
    pub webhook_config_owner_namespace: Option<String>,
    /// Port of the Service (mode service).
    #[arg(long, default_value_t = 443)]
    pub webhook_config_service_port: u16,
    /// Address the HTTPS server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub webhook_config_server_host: String,
    /// Port the HTTPS server listens on (0: any free port).
    #[arg(long, default_value_t = 10250)]
    pub webhook_config_server_port: u16,
    /// What gardener-apiserver does when the webhook cannot answer (see docs/operations.md).
    #[arg(long, value_enum, default_value_t = FailurePolicy::Fail)]
    pub webhook_failure_policy: FailurePolicy,
    /// How long gardener-apiserver waits for an answer.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECONDS, value_parser = clap::value_parser!(i32).range(1..=30))]
    pub webhook_timeout_seconds: i32,
    /// Do not create or update the ValidatingWebhookConfiguration (someone else does).
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub webhook_config_skip_registration: bool,

    /// Where /metrics is served.
    #[arg(long, default_value = ":8080")]
    pub metrics_bind_address: String,
    /// Where /healthz and /readyz are served.
    #[arg(long, default_value = ":8081")]
    pub health_bind_address: String,
}

impl AdmissionArgs {
    pub fn options(&self) -> anyhow::Result<AdmissionOptions> {
        let mut opts = AdmissionOptions {
            owner_namespace: self.webhook_config_owner_namespace.clone(),
            rules: Rules {
                requirements: Requirements {
                    supported_providers: self.supported_providers.clone(),
                    supported_machine_images: self.supported_machine_images.clone(),
                },
                machine_type_capability: self.machine_type_capability.clone(),
            },
            ..Default::default()
        };
        let w = &mut opts.webhook;
        w.mode = self.webhook_config_mode;
        w.url = self.webhook_config_url.clone();
        w.namespace = self.webhook_config_namespace.clone();
        w.service_port = self.webhook_config_service_port;
        w.server_port = self.webhook_config_server_port;
        w.bind_address = self.webhook_config_server_host.parse().with_context(|| {
            format!(
                "invalid --webhook-config-server-host {:?}",
                self.webhook_config_server_host
            )
        })?;
        w.failure_policy = self.webhook_failure_policy;
        w.timeout_seconds = self.webhook_timeout_seconds;
        w.register = !self.webhook_config_skip_registration;
        Ok(opts)
    }
}

async fn client_from(path: Option<&PathBuf>, what: &str) -> anyhow::Result<kube::Client> {
    let config = crate::runtime::kubeconfig::config_from(path.map(PathBuf::as_path), what).await?;
    kube::Client::try_from(config).with_context(|| format!("building the {what} client"))
}

/// The `admission` subcommand: health and metrics endpoints, the webhook, until SIGTERM.
pub async fn run_command(args: AdmissionArgs, kubeconfig: Option<PathBuf>, shutdown: Shutdown) -> anyhow::Result<()> {
    let mut duties = Duties::new(shutdown.clone());
    let started = start(args, kubeconfig, &mut duties).await;
    if started.is_ok() {
        shutdown.wait().await;
    }
    let stopped = duties.stop().await;
    started?;
    stopped
}

/// Starts the duties of the admission process: its health and metrics servers, then the webhook.
async fn start(args: AdmissionArgs, kubeconfig: Option<PathBuf>, duties: &mut Duties) -> anyhow::Result<()> {
    let opts = args.options()?;
    let runtime = client_from(kubeconfig.as_ref(), "runtime cluster").await?;
    let garden = match &args.garden_kubeconfig {
        Some(p) => client_from(Some(p), "garden").await?,
        None => runtime.clone(),
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    crate::runtime::process_metrics::register(&mut registry);
    let readiness = Readiness::default();
    let ready_tx = readiness.serving("webhook");
    let registered = readiness.check("webhook-registration");
    health::start_servers(
        duties,
        (&args.health_bind_address, &args.metrics_bind_address),
        readiness,
        Arc::new(registry),
    )
    .await?;
    tracing::info!(
        rules = ?opts.rules,
        failure_policy = %opts.webhook.failure_policy,
        timeout_seconds = opts.webhook.timeout_seconds,
        "starting the garden admission for kata Shoots"
    );
    duties.start("admission webhook", Duration::from_secs(15), move |stop| async move {
        Ok(run(
            runtime,
            garden,
            opts,
            Some(metrics),
            Some(ready_tx),
            Some(registered),
            stop.wait(),
        )
        .await?)
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The subcommand's own flags, without the process-wide ones of `cli::Cli`.
    #[derive(Parser)]
    struct Admission {
        #[command(flatten)]
        args: AdmissionArgs,
    }

    #[test]
    fn admission_flags_and_defaults() {
        let Admission { args } = Admission::parse_from([
            "x",
            "--webhook-config-namespace=garden",
            "--webhook-config-url=gardener-extension-admission-runtime-kata.garden",
            "--webhook-config-owner-namespace=extension-admission-runtime-kata",
            "--supported-providers=aws,gcp",
            "--machine-type-capability=nestedVirtualization=supported",
        ]);
        let o = args.options().unwrap();
        assert_eq!(o.webhook.failure_policy, FailurePolicy::Fail);
        assert_eq!(o.webhook.timeout_seconds, 5);
        assert_eq!(o.webhook.mode, ConfigMode::Url);
        assert_eq!(
            o.webhook.certs.secret_name,
            "gardener-extension-admission-runtime-kata-webhook-certs"
        );
        assert_eq!(o.rules.requirements.supported_providers, ["aws", "gcp"]);
        assert_eq!(
            o.rules
                .machine_type_capability
                .as_ref()
                .map(|c| c.to_string())
                .as_deref(),
            Some("nestedVirtualization=supported")
        );
        let bound: SocketAddr = "0.0.0.0:10250".parse().unwrap();
        let r = o.registration(bound);
        assert_eq!(
            r.target,
            crate::webhook::registration::ClientTarget::Url(
                "https://gardener-extension-admission-runtime-kata.garden/webhooks/validate-shoot".into()
            )
        );
        assert!(
            o.webhook
                .identity(bound)
                .dns_names
                .contains(&"gardener-extension-admission-runtime-kata.garden".to_string())
        );
        for bad in ["--machine-type-capability=x", "--webhook-timeout-seconds=60"] {
            assert!(Admission::try_parse_from(["x", "--webhook-config-namespace=g", bad]).is_err());
        }
    }
}
