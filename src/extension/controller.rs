//! Wires the reconciler to the API: a filtered watch of ContainerRuntimes feeding kube's
//! controller (deduplicated queue, no concurrent reconciles of one object, bounded concurrency),
//! per-object exponential backoff, and controller-runtime metrics.

use super::actuator::Actuator;
use super::predicate::{EventFilter, PredicateConfig};
use super::reconciler::{ReconcileContext, ReconcileError, reconcile};
use crate::api::{Cluster, ContainerRuntime};
use crate::runtime::metrics::{Metrics, WorkqueueLabels};
use futures::{Stream, StreamExt};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CONTROLLER_NAME: &str = "containerruntime";

#[derive(Clone, Debug)]
pub struct ControllerOptions {
    pub predicate: PredicateConfig,
    pub max_concurrent_reconciles: u16,
    pub reconcile_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Watch only this namespace (tests, local runs); all namespaces when unset.
    pub namespace: Option<String>,
}

impl ControllerOptions {
    pub fn new(extension_type: &str) -> Self {
        Self {
            predicate: PredicateConfig {
                extension_type: extension_type.into(),
                classes: Vec::new(),
                ignore_operation_annotation: false,
            },
            max_concurrent_reconciles: 5,
            reconcile_timeout: Duration::from_secs(180),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            namespace: None,
        }
    }
}

struct Ctx<A> {
    inner: ReconcileContext<A>,
    metrics: Arc<Metrics>,
    failures: Mutex<HashMap<ObjectRef<ContainerRuntime>, u32>>,
    pending: Arc<Mutex<HashSet<ObjectRef<ContainerRuntime>>>>,
    opts: ControllerOptions,
}

impl<A> Ctx<A> {
    fn set_depth(&self, depth: usize) {
        self.metrics
            .workqueue_depth
            .get_or_create(&WorkqueueLabels {
                name: CONTROLLER_NAME.into(),
            })
            .set(depth as i64);
    }
}

/// Exponential per-object backoff: base·2^(failures-1), capped.
pub fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(max)
}

/// The filtered trigger stream: watch events that pass Gardener's predicates. The reflector's
/// store gets every object (without managedFields, which we never read).
fn triggers(
    api: Api<ContainerRuntime>,
    writer: Writer<ContainerRuntime>,
    predicate: PredicateConfig,
    pending: Arc<Mutex<HashSet<ObjectRef<ContainerRuntime>>>>,
    ready: tokio::sync::watch::Sender<bool>,
) -> impl Stream<Item = Result<ContainerRuntime, watcher::Error>> + Send + 'static {
    let mut filter = EventFilter::new(predicate);
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|cr| cr.managed_fields_mut().clear())
        .reflect(writer)
        .filter_map(move |event| {
            let out = match event {
                Ok(watcher::Event::Apply(cr) | watcher::Event::InitApply(cr)) => {
                    if filter.applied(&cr) {
                        pending
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(ObjectRef::from_obj(&cr));
                        Some(Ok(cr))
                    } else {
                        None
                    }
                }
                Ok(watcher::Event::Delete(cr)) => {
                    filter.deleted(&cr);
                    None
                }
                // the first complete list is in the cache (Store::wait_until_ready wakes one waiter only)
                Ok(watcher::Event::InitDone) => {
                    if !*ready.borrow() {
                        tracing::info!("ContainerRuntime cache synced");
                    }
                    ready.send_replace(true);
                    None
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "ContainerRuntime watch failed, retrying");
                    None
                }
            };
            futures::future::ready(out)
        })
}

/// Runs the ContainerRuntime controller until `shutdown` resolves; in-flight reconciles finish
/// first. `ready` is set once the cache has synced.
pub async fn run_controller<A: Actuator>(
    client: Client,
    actuator: A,
    (reader, writer): (Store<ContainerRuntime>, Writer<ContainerRuntime>),
    opts: ControllerOptions,
    metrics: Arc<Metrics>,
    ready: tokio::sync::watch::Sender<bool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let pending = Arc::new(Mutex::new(HashSet::new()));
    let api = match &opts.namespace {
        Some(ns) => Api::<ContainerRuntime>::namespaced(client.clone(), ns),
        None => Api::<ContainerRuntime>::all(client.clone()),
    };
    let trigger = triggers(api, writer, opts.predicate.clone(), pending.clone(), ready);
    let labels = metrics.controller(CONTROLLER_NAME);
    metrics
        .max_concurrent_reconciles
        .get_or_create(&labels)
        .set(i64::from(opts.max_concurrent_reconciles));
    let mut controller = Controller::for_stream(trigger, reader.clone())
        .with_config(ControllerConfig::default().concurrency(opts.max_concurrent_reconciles));
    if opts.predicate.ignore_operation_annotation {
        // Gardener also reconciles on every Cluster change in this mode.
        let store = reader.clone();
        let clusters = watcher(
            Api::<PartialObjectMeta<Cluster>>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .touched_objects()
        .filter_map(|r| futures::future::ready(r.ok().map(Ok)));
        controller = controller.watches_stream(clusters, move |cluster| {
            let ns = cluster.name_any();
            store
                .state()
                .into_iter()
                .filter(|cr| cr.namespace().as_deref() == Some(ns.as_str()))
                .map(|cr| ObjectRef::from_obj(&*cr))
                .collect::<Vec<_>>()
        });
    }
    let ctx = Arc::new(Ctx {
        inner: ReconcileContext {
            client,
            actuator,
            reconcile_timeout: opts.reconcile_timeout,
            annotation_driven: !opts.predicate.ignore_operation_annotation,
        },
        metrics: metrics.clone(),
        failures: Mutex::new(HashMap::new()),
        pending,
        opts,
    });
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile_observed, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    tracing::info!("ContainerRuntime controller stopped");
}

async fn reconcile_observed<A: Actuator>(
    cr: Arc<ContainerRuntime>,
    ctx: Arc<Ctx<A>>,
) -> Result<Action, ReconcileError> {
    let key = ObjectRef::from_obj(&*cr);
    let depth = {
        let mut pending = ctx.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.remove(&key);
        pending.len()
    };
    ctx.set_depth(depth);
    let labels = ctx.metrics.controller(CONTROLLER_NAME);
    let workers = ctx.metrics.active_workers.get_or_create(&labels).clone();
    workers.inc();
    let started = Instant::now();
    let result = reconcile(cr.clone(), &ctx.inner).await;
    workers.dec();
    let outcome = match &result {
        Ok(a) if *a == Action::await_change() => "success",
        Ok(_) => "requeue_after",
        Err(_) => "error",
    };
    ctx.metrics
        .observe_reconcile(CONTROLLER_NAME, outcome, started.elapsed());
    match &result {
        Ok(_) => {
            ctx.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            tracing::debug!(namespace = %key.namespace.as_deref().unwrap_or(""), name = %key.name, outcome, "reconciled");
        }
        Err(e) => {
            tracing::warn!(namespace = %key.namespace.as_deref().unwrap_or(""), name = %key.name, error = %e, "reconcile failed")
        }
    }
    result
}

fn error_policy<A: Actuator>(cr: Arc<ContainerRuntime>, _err: &ReconcileError, ctx: Arc<Ctx<A>>) -> Action {
    let failures = {
        let mut f = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(ObjectRef::from_obj(&*cr)).or_insert(0);
        *n += 1;
        *n
    };
    Action::requeue(backoff(ctx.opts.backoff_base, ctx.opts.backoff_max, failures))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let (b, m) = (Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(backoff(b, m, 1), Duration::from_secs(1));
        assert_eq!(backoff(b, m, 4), Duration::from_secs(8));
        assert_eq!(backoff(b, m, 40), m);
    }
}
