//! Prometheus metrics with controller-runtime's names, so Gardener's extension dashboards work.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub controller: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkqueueLabels {
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookCodeLabels {
    pub webhook: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: String,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]
    .into_iter()
}

pub struct Metrics {
    pub reconcile_total: Family<ResultLabels, Counter>,
    pub reconcile_errors_total: Family<ControllerLabels, Counter>,
    pub reconcile_time_seconds: Family<ControllerLabels, Histogram>,
    pub max_concurrent_reconciles: Family<ControllerLabels, Gauge>,
    pub active_workers: Family<ControllerLabels, Gauge>,
    pub workqueue_depth: Family<WorkqueueLabels, Gauge>,
    pub webhook_requests_total: Family<WebhookCodeLabels, Counter>,
    pub webhook_latency_seconds: Family<WebhookLabels, Histogram>,
    pub webhook_requests_in_flight: Family<WebhookLabels, Gauge>,
    /// Kubernetes API requests of this process by verb (rest_client_requests_total in client-go).
    pub rest_client_requests_total: Family<RestLabels, Counter>,
    pub leader: Gauge<i64, AtomicI64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestLabels {
    pub method: String,
    pub code: String,
}

impl Metrics {
    /// One answered admission request: its HTTP status and how long it took.
    pub fn record_webhook_request(&self, webhook: &str, status: u16, elapsed: Duration) {
        self.webhook_requests_total
            .get_or_create(&WebhookCodeLabels {
                webhook: webhook.into(),
                code: status.to_string(),
            })
            .inc();
        self.webhook_latency_seconds
            .get_or_create(&WebhookLabels {
                webhook: webhook.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn new(registry: &mut Registry) -> Self {
        let hist = || Histogram::new(latency_buckets());
        let m = Self {
            reconcile_total: Family::default(),
            reconcile_errors_total: Family::default(),
            reconcile_time_seconds: Family::new_with_constructor(hist),
            max_concurrent_reconciles: Family::default(),
            active_workers: Family::default(),
            workqueue_depth: Family::default(),
            webhook_requests_total: Family::default(),
            webhook_latency_seconds: Family::new_with_constructor(hist),
            webhook_requests_in_flight: Family::default(),
            rest_client_requests_total: Family::default(),
            leader: Gauge::default(),
        };
        // prometheus-client appends `_total` to counters itself
        registry.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            m.reconcile_total.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            m.reconcile_errors_total.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            m.reconcile_time_seconds.clone(),
        );
        registry.register(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            m.max_concurrent_reconciles.clone(),
        );
        registry.register(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            m.active_workers.clone(),
        );
        registry.register(
            "workqueue_depth",
            "Current depth of workqueue",
            m.workqueue_depth.clone(),
        );
        registry.register(
            "controller_runtime_webhook_requests",
            "Total number of admission requests by HTTP status code",
            m.webhook_requests_total.clone(),
        );
        registry.register(
            "controller_runtime_webhook_latency_seconds",
            "Histogram of the latency of processing admission requests",
            m.webhook_latency_seconds.clone(),
        );
        registry.register(
            "controller_runtime_webhook_requests_in_flight",
            "Current number of admission requests being served",
            m.webhook_requests_in_flight.clone(),
        );
        registry.register(
            "rest_client_requests",
            "Number of HTTP requests to the Kubernetes API, partitioned by method and status code",
            m.rest_client_requests_total.clone(),
        );
        registry.register(
            "leader_election_master_status",
            "1 while this replica is the leader",
            m.leader.clone(),
        );
        m
    }

    pub fn controller(&self, name: &str) -> ControllerLabels {
        ControllerLabels {
            controller: name.to_string(),
        }
    }

    pub fn observe_reconcile(&self, controller: &str, result: &str, took: Duration) {
        self.reconcile_total
            .get_or_create(&ResultLabels {
                controller: controller.into(),
                result: result.into(),
            })
            .inc();
        if result == "error" {
            self.reconcile_errors_total
                .get_or_create(&self.controller(controller))
                .inc();
        }
        self.reconcile_time_seconds
            .get_or_create(&self.controller(controller))
            .observe(took.as_secs_f64());
    }
}
