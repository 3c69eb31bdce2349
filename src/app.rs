//! The extension process: health and metrics servers, leader election, the ContainerRuntime
//! controller with its heartbeat on the leader, and a graceful shutdown.

use crate::cli::{FailurePolicy, RunArgs, WebhookMode};
use crate::extension::controller::ControllerOptions;
use crate::extension::run_controller;
use crate::healthcheck::{HealthChecker, HealthOptions};
use crate::kata::names::{EXTENSION_NAME, EXTENSION_TYPE};
use crate::kata::requirements::Requirements;
use crate::kata::{KataActuator, imagevector};
use crate::runtime::client_metrics::CountRequestsLayer;
use crate::runtime::health::{self, Readiness};
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

pub async fn kube_config(args: &RunArgs) -> anyhow::Result<kube::Config> {
    config_from(args.kubeconfig.as_deref(), "").await
}

/// The configuration from a kubeconfig file, or in-cluster without one; `what` names the cluster
/// in errors ("garden"), empty for the extension's own.
pub async fn config_from(path: Option<&std::path::Path>, what: &str) -> anyhow::Result<kube::Config> {
    let kubeconfig = if what.is_empty() {
        "kubeconfig".to_string()
    } else {
        format!("{what} kubeconfig")
    };
    match path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading {kubeconfig} {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("loading {kubeconfig} {}", p.display()))
        }
        None => kube::Config::infer()
            .await
            .with_context(|| format!("no {kubeconfig} given and no in-cluster configuration")),
    }
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
        mode: match args.webhook_config_mode {
            WebhookMode::Service => webhook::ConfigMode::Service,
            WebhookMode::Url => webhook::ConfigMode::Url,
        },
        url: args.webhook_config_url.clone(),
        namespace,
        server_port: args.webhook_config_server_port,
        service_port: args.webhook_config_service_port,
        failure_policy: match args.webhook_failure_policy {
            FailurePolicy::Ignore => webhook::registration::FailurePolicy::Ignore,
            FailurePolicy::Fail => webhook::registration::FailurePolicy::Fail,
        },
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
    let config = kube_config(&args).await?;
    let installer_images =
        imagevector::Images::load(&format!("v{}", env!("CARGO_PKG_VERSION"))).context("reading the image vector")?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let client = counted_client(config, &metrics)?;
    process_metrics::register(&mut registry);
    let registry = Arc::new(registry);

    let readiness = Readiness::default();
    let controller_ready = readiness.check("controller-cache");

    let health_addr = health::parse_bind_address(&args.health_bind_address).map_err(anyhow::Error::msg)?;
    let metrics_addr = health::parse_bind_address(&args.metrics_bind_address).map_err(anyhow::Error::msg)?;
    let (_, health_task) = health::serve(
        "health",
        health_addr,
        health::health_router(readiness.clone()),
        shutdown.wait(),
    )
    .await
    .with_context(|| format!("binding the health address {health_addr}"))?;
    let (_, metrics_task) = health::serve(
        "metrics",
        metrics_addr,
        health::metrics_router(registry),
        shutdown.wait(),
    )
    .await
    .with_context(|| format!("binding the metrics address {metrics_addr}"))?;

    let webhook_task = if args.disable_webhooks {
        None
    } else {
        let ready = readiness.check("webhook");
        // false while the MutatingWebhookConfiguration is missing or stale, until repaired
        let registered = readiness.check("webhook-registration");
        let opts = webhook_options(&args, namespace_of(&args))?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if let Ok(addr) = ready_rx.await {
                tracing::info!(address = %addr, "webhook serving and registered");
                ready.send_replace(true);
            }
        });
        let (client, metrics, stop, fatal) = (client.clone(), metrics.clone(), shutdown.wait(), shutdown.clone());
        Some(tokio::spawn(async move {
            let result = webhook::run(client, opts, Some(metrics), Some(ready_tx), Some(registered), stop).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "webhook server failed");
                fatal.trigger();
            }
            result
        }))
    };

    let namespace = args.leader_election_namespace.clone();
    let heartbeat_namespace = args.heartbeat_namespace.clone().or_else(|| namespace.clone());

    // Standby replicas are ready: they serve the webhook and wait for the lease.
    let election = if args.leader_election {
        let Some(ns) = &namespace else {
            bail!("--leader-election needs --leader-election-namespace (or LEADER_ELECTION_NAMESPACE)");
        };
        controller_ready.send_replace(true);
        let mut election = LeaderElection::start(client.clone(), ns, &args.leader_election_id, &identity())
            .await
            .context("starting leader election")?;
        tracing::info!(lease = %args.leader_election_id, namespace = %ns, "waiting to become leader");
        let became_leader = tokio::select! {
            r = election.is_leader.wait_for(|l| *l) => { r.map(|_| true).context("leader election stopped")? }
            _ = shutdown.wait() => false,
        };
        if !became_leader {
            election.release().await;
            let _ = tokio::join!(health_task, metrics_task);
            if let Some(task) = webhook_task {
                task.await.context("webhook task")?.context("webhook server")?;
            }
            return Ok(());
        }
        tracing::info!("became leader");
        metrics.leader.set(1);
        controller_ready.send_replace(false);
        Some(election)
    } else {
        None
    };

    // Losing the lease stops the controllers at once: another replica may already be leading.
    let lost_lease = Shutdown::new();
    let lease_monitor = election.as_ref().map(|election| {
        let mut rx = election.is_leader.clone();
        let (lost, stop) = (lost_lease.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _ = rx.wait_for(|l| !*l).await;
            if !stop.is_triggered() {
                tracing::error!("leader lease lost, stopping");
                lost.trigger();
                stop.trigger();
            }
        })
    });

    let heartbeat_task = heartbeat_namespace.map(|ns| {
        let stop = shutdown.wait();
        tokio::spawn(heartbeat::run(
            client.clone(),
            ns,
            EXTENSION_NAME.into(),
            Duration::from_secs(args.heartbeat_renew_interval_seconds),
            stop,
        ))
    });

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
    let health_checks = match actuator.managed_resource_cache() {
        Some(mrs) if args.health_check_sync_period_seconds > 0 => {
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
            Some(tokio::spawn(checker.run(shutdown.wait())))
        }
        _ => None,
    };
    tracing::info!(
        gardener_version = args.gardener_version.as_deref().unwrap_or("unknown"),
        max_concurrent_reconciles = opts.max_concurrent_reconciles,
        "starting the ContainerRuntime controller"
    );
    let controller = tokio::spawn(run_controller(
        client.clone(),
        actuator,
        cache,
        opts,
        metrics.clone(),
        controller_ready,
        shutdown.wait(),
    ));

    shutdown.wait().await;
    if lost_lease.is_triggered() {
        // another replica may be leading already: no in-flight write may land after this
        controller.abort();
    } else if tokio::time::timeout(SHUTDOWN_GRACE, controller).await.is_err() {
        tracing::warn!("in-flight reconciles did not finish within {SHUTDOWN_GRACE:?}");
    }
    if let Some(t) = heartbeat_task {
        t.abort();
    }
    if let Some(t) = health_checks {
        t.abort();
    }
    if let Some(monitor) = lease_monitor {
        // its receiver would keep the lease manager from releasing
        monitor.abort();
        let _ = monitor.await;
    }
    if let Some(election) = election {
        metrics.leader.set(0);
        election.release().await;
    }
    let _ = tokio::join!(health_task, metrics_task);
    if lost_lease.is_triggered() {
        bail!("leader lease lost");
    }
    if let Some(task) = webhook_task {
        task.await.context("webhook task")?.context("webhook server")?;
    }
    tracing::info!("stopped");
    Ok(())
}
