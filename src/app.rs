//! The extension process as a list of duties ([`Duties`]): the health and metrics servers, the
//! webhook, then on the leader the lease, the heartbeat, the health checks and the ContainerRuntime
//! controller. Shutdown stops them in the reverse order, so probes answer until the end and the
//! lease is released only after the controller's last write.

use crate::cli::RunArgs;
use crate::extension::controller::ControllerOptions;
use crate::extension::run_controller;
use crate::healthcheck::{HealthChecker, HealthOptions};
use crate::kata::names::{EXTENSION_NAME, EXTENSION_TYPE};
use crate::kata::requirements::Requirements;
use crate::kata::{KataActuator, imagevector};
use crate::runtime::client_metrics::CountRequestsLayer;
use crate::runtime::duties::Duties;
use crate::runtime::health::{self, Readiness};
use crate::runtime::kubeconfig::config_from;
use crate::runtime::leader::LeaderElection;
use crate::runtime::metrics::Metrics;
use crate::runtime::shutdown::Shutdown;
use crate::runtime::{heartbeat, process_metrics};
use crate::webhook;
use anyhow::{Context, bail};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// How long in-flight reconciles may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// The webhook server's own graceful shutdown takes up to 10 s.
const WEBHOOK_GRACE: Duration = Duration::from_secs(15);
/// The lease, heartbeat and health checks stop at once or are cut.
const QUICK: Duration = Duration::from_secs(5);

pub async fn kube_config(args: &RunArgs) -> anyhow::Result<kube::Config> {
    config_from(args.kubeconfig.as_deref(), "").await
}

pub async fn kube_client(args: &RunArgs) -> anyhow::Result<kube::Client> {
    kube::Client::try_from(kube_config(args).await?).context("building the Kubernetes client")
}

/// A client whose requests are counted in `rest_client_requests_total`.
fn counted_client(config: kube::Config, metrics: &Metrics) -> anyhow::Result<kube::Client> {
    let layer = CountRequestsLayer::new(metrics.rest_client_requests_total.clone());
    Ok(kube::client::ClientBuilder::try_from(config)
        .context("building the Kubernetes client")?
        .with_layer(&layer)
        .build())
}

fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "runtime-kata".into());
    format!("{host}_{:08x}", rand::random::<u32>())
}

/// The extension's namespace: where its Leases, webhook Service and certificate Secret live.
fn namespace_of(args: &RunArgs) -> Option<String> {
    args.webhook_config_namespace
        .clone()
        .or_else(|| args.leader_election_namespace.clone())
}

fn webhook_options(args: &RunArgs, namespace: Option<String>) -> anyhow::Result<webhook::WebhookOptions> {
    let Some(namespace) = namespace else {
        bail!("the webhook needs --webhook-config-namespace (or LEADER_ELECTION_NAMESPACE)");
    };
    let mut opts = webhook::WebhookOptions {
        mode: args.webhook_config_mode,
        url: args.webhook_config_url.clone(),
        namespace,
        server_port: args.webhook_config_server_port,
        service_port: args.webhook_config_service_port,
        failure_policy: args.webhook_failure_policy,
        object_selector: args.webhook_object_selector,
        mutation: webhook::mutate::MutationSettings {
            local_image_pull: args.webhook_local_image_pull,
        },
        ..Default::default()
    };
    opts.bind_address = args.webhook_config_server_host.parse().with_context(|| {
        format!(
            "invalid --webhook-config-server-host {:?}",
            args.webhook_config_server_host
        )
    })?;
    Ok(opts)
}

/// Runs until `shutdown` (SIGTERM/SIGINT in the binary; exit 0) or a fatal error (non-zero).
pub async fn run(args: RunArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    let mut duties = Duties::new(shutdown.clone());
    // set when the lease is lost: another replica may be leading already
    let lost_lease = Shutdown::new();
    let started = start(&args, &shutdown, &lost_lease, &mut duties).await;
    let stopped = if lost_lease.is_triggered() {
        duties.abort().await
    } else {
        duties.stop().await
    };
    started?;
    stopped?;
    tracing::info!("stopped");
    Ok(())
}

/// Starts the duties and waits for `shutdown` (or, on a standby replica, for either shutdown or
/// leadership first).
async fn start(args: &RunArgs, shutdown: &Shutdown, lost_lease: &Shutdown, duties: &mut Duties) -> anyhow::Result<()> {
    let config = kube_config(args).await?;
    let installer_images =
        imagevector::Images::load(&format!("v{}", env!("CARGO_PKG_VERSION"))).context("reading the image vector")?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let client = counted_client(config, &metrics)?;
    process_metrics::register(&mut registry);

    let readiness = Readiness::default();
    let controller_ready = readiness.check("controller-cache");
    health::start_servers(
        duties,
        (&args.health_bind_address, &args.metrics_bind_address),
        readiness.clone(),
        Arc::new(registry),
    )
    .await?;

    if !args.disable_webhooks {
        let ready_tx = readiness.serving("webhook");
        // false while the MutatingWebhookConfiguration is missing or stale, until repaired
        let registered = readiness.check("webhook-registration");
        let opts = webhook_options(args, namespace_of(args))?;
        let (client, metrics) = (client.clone(), metrics.clone());
        duties.start("webhook server", WEBHOOK_GRACE, move |stop| async move {
            Ok(webhook::run(
                client,
                opts,
                Some(metrics),
                Some(ready_tx),
                Some(registered),
                stop.wait(),
            )
            .await?)
        });
    }

    // Standby replicas are ready: they serve the webhook and wait for the lease.
    if args.leader_election {
        controller_ready.send_replace(true);
        if !lead(args, &client, &metrics, shutdown, lost_lease, duties).await? {
            return Ok(());
        }
        controller_ready.send_replace(false);
    }

    let heartbeat_namespace = args
        .heartbeat_namespace
        .clone()
        .or_else(|| args.leader_election_namespace.clone());
    if let Some(ns) = heartbeat_namespace {
        let (client, every) = (
            client.clone(),
            Duration::from_secs(args.heartbeat_renew_interval_seconds),
        );
        duties.start("heartbeat", QUICK, move |stop| async move {
            heartbeat::run(client, ns, EXTENSION_NAME.into(), every, stop.wait()).await;
            Ok(())
        });
    }

    let cache = kube::runtime::reflector::store();
    let actuator = KataActuator::new(
        client.clone(),
        cache.0.clone(),
        installer_images,
        Requirements {
            supported_providers: args.supported_providers.clone(),
            supported_machine_images: args.supported_machine_images.clone(),
        },
    );
    let mut opts = ControllerOptions::new(EXTENSION_TYPE);
    opts.max_concurrent_reconciles = args.max_concurrent_reconciles.max(1);
    opts.predicate.classes = args.extension_classes.clone();
    opts.predicate.ignore_operation_annotation = args.ignore_operation_annotation;
    opts.namespace = args.watch_namespace.clone();
    // health conditions from the same caches the controller fills
    if let Some(mrs) = actuator.managed_resource_cache()
        && args.health_check_sync_period_seconds > 0
    {
        let checker = HealthChecker::new(
            client.clone(),
            cache.0.clone(),
            mrs,
            HealthOptions {
                sync_period: Duration::from_secs(args.health_check_sync_period_seconds),
                progressing_threshold: Duration::from_secs(args.health_check_progressing_threshold_seconds),
                responsibility: opts.predicate.clone(),
            },
        );
        duties.start("health checks", QUICK, move |stop| async move {
            checker.run(stop.wait()).await;
            Ok(())
        });
    }
    tracing::info!(
        gardener_version = args.gardener_version.as_deref().unwrap_or("unknown"),
        max_concurrent_reconciles = opts.max_concurrent_reconciles,
        "starting the ContainerRuntime controller"
    );
    let lost_lease = lost_lease.clone();
    duties.start("controller", SHUTDOWN_GRACE, move |stop| async move {
        tokio::select! {
            () = run_controller(client, actuator, cache, opts, metrics, controller_ready, stop.wait()) => Ok(()),
            // another replica may be leading already: no in-flight write may land after this
            () = lost_lease.wait() => Ok(()),
        }
    });

    shutdown.wait().await;
    Ok(())
}

/// Waits for the leader lease; `false` when shutdown came first. Once leading, the lease is a duty:
/// released when stopped, and its loss stops the process at once (`lost`).
async fn lead(
    args: &RunArgs,
    client: &kube::Client,
    metrics: &Arc<Metrics>,
    shutdown: &Shutdown,
    lost: &Shutdown,
    duties: &mut Duties,
) -> anyhow::Result<bool> {
    let Some(ns) = &args.leader_election_namespace else {
        bail!("--leader-election needs --leader-election-namespace (or LEADER_ELECTION_NAMESPACE)");
    };
    let mut election = LeaderElection::start(client.clone(), ns, &args.leader_election_id, &identity())
        .await
        .context("starting leader election")?;
    tracing::info!(lease = %args.leader_election_id, namespace = %ns, "waiting to become leader");
    let became_leader = tokio::select! {
        r = election.is_leader.wait_for(|l| *l) => { r.map(|_| true).context("leader election stopped")? }
        () = shutdown.wait() => false,
    };
    if !became_leader {
        election.release().await;
        return Ok(false);
    }
    tracing::info!("became leader");
    metrics.leader.set(1);
    let (metrics, lost) = (metrics.clone(), lost.clone());
    duties.start("leader lease", QUICK, move |stop| async move {
        let mut leading = election.is_leader.clone();
        let lease_lost = tokio::select! {
            _ = leading.wait_for(|l| !*l) => true,
            () = stop.wait() => false,
        };
        // the receiver would keep the lease manager from releasing
        drop(leading);
        if lease_lost {
            tracing::error!("leader lease lost, stopping");
            lost.trigger();
            metrics.leader.set(0);
            bail!("leader lease lost");
        }
        metrics.leader.set(0);
        election.release().await;
        Ok(())
    });
    Ok(true)
}
