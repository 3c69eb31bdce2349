//! The health loop: on the leader, every sync period, each kata ContainerRuntime gets a
//! `SystemComponentsHealthy` condition built from what gardener-resource-manager reports on the
//! ManagedResources carrying its pool and from what the pool's nodes say (`KataRuntimeReady`,
//! [`nodes`]). gardenlet's shoot care controller folds these conditions into the Shoot's own
//! `SystemComponentsHealthy` (and so into the dashboard).
//!
//! Of the seed it reads only caches (the controller's ContainerRuntime store and the watches of
//! ManagedResources, Clusters and shoot access secrets); each awake shoot with a due pool gets one
//! node list per round, several shoots at a time. It
//! writes a condition only when its status, reason, message or codes change, and never touches
//! `lastOperation`, generation or annotations, so it triggers no reconcile. gardenlet judges
//! staleness by the heartbeat Lease, so an unchanged condition needs no refresh. A hibernated shoot
//! is reported healthy before anything else is looked at, from a watch of the Clusters' hibernation
//! flags ([`hibernation`]).

pub mod check;
pub mod condition;
pub mod hibernation;
pub mod nodes;
pub mod shoot_access;

use crate::api::common::Condition;
use crate::api::{ContainerRuntime, OperationType};
use crate::extension::operation::{OP_MIGRATE, OP_RESTORE, operation_annotation};
use crate::extension::predicate::PredicateConfig;
use crate::kata::names::{SHARED_MR, installation_mr};
use crate::managedresources::ManagedResourceCache;
use check::{Input, SYSTEM_COMPONENTS_HEALTHY, evaluate};
use futures::StreamExt;
use hibernation::HibernationCache;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use nodes::KataNode;
use serde_json::json;
use shoot_access::ShootAccess;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct HealthOptions {
    /// How often every ContainerRuntime is checked.
    pub sync_period: Duration,
    /// How long a rollout may stay `Progressing` before it counts as unsuccessful.
    pub progressing_threshold: Duration,
    /// Which ContainerRuntimes are ours (type and classes).
    pub responsibility: PredicateConfig,
}

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub checked: usize,
    pub written: usize,
    pub failed: usize,
}

pub struct HealthChecker {
    client: Client,
    runtimes: Store<ContainerRuntime>,
    managed_resources: ManagedResourceCache,
    opts: HealthOptions,
    hibernation: HibernationCache,
    shoot_access: ShootAccess,
    /// The cached resourceVersion each of our condition writes was based on, until the cache
    /// shows a newer one: a round must not judge an object by a cache older than its own write
    /// (it would write the same condition again, with a new transition time).
    written_over: Mutex<HashMap<ObjectRef<ContainerRuntime>, String>>,
}

/// A check is not due on objects in flux: being deleted, migrated or restored, never reconciled,
/// or reconciled less than `settle` ago. The last keeps the checks' writes out of a burst of
/// reconciles (a seed starting up, many shoots created at once): the first condition of a new
/// object waits for the round after it settled, and no reconcile competes with it.
fn due(cr: &ContainerRuntime, settle: Duration) -> bool {
    if cr.metadata.deletion_timestamp.is_some() || matches!(operation_annotation(cr), Some(OP_MIGRATE | OP_RESTORE)) {
        return false;
    }
    match cr.status.as_ref().and_then(|s| s.last_operation.as_ref()) {
        None => false,
        Some(op) => op.type_ != OperationType::Migrate && since(&op.last_update_time) >= settle,
    }
}

/// Shoots read at once in a round: 1000 shoots at 100 ms each take 12.5 s of a 30 s round; each
/// read in flight holds a client, a TLS connection and a page of nodes.
const SHOOT_READS: usize = 8;
/// A shoot read that takes longer counts as failed (its pools are `Unknown` this round).
const SHOOT_READ_DEADLINE: Duration = Duration::from_secs(20);

/// The shoot's kata nodes, or why they could not be read.
type ShootNodes = Result<Vec<KataNode>, String>;

fn since(t: &Time) -> Duration {
    let elapsed = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
    Duration::try_from(elapsed).unwrap_or_default()
}

impl HealthChecker {
    pub fn new(
        client: Client,
        runtimes: Store<ContainerRuntime>,
        managed_resources: ManagedResourceCache,
        opts: HealthOptions,
    ) -> Self {
        Self {
            hibernation: HibernationCache::start(client.clone()),
            shoot_access: ShootAccess::start(client.clone()),
            client,
            runtimes,
            managed_resources,
            opts,
            written_over: Mutex::default(),
        }
    }

    /// Checks every sync period until `stop`.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        tracing::info!(sync_period = ?self.opts.sync_period, "starting the ContainerRuntime health checks");
        let mut tick = tokio::time::interval(self.opts.sync_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {}
            }
            let round = self.round().await;
            if round.written > 0 || round.failed > 0 {
                tracing::info!(
                    checked = round.checked,
                    written = round.written,
                    failed = round.failed,
                    "health checks done"
                );
            }
        }
    }

    /// One pass over every ContainerRuntime (nothing while the caches are still filling).
    pub async fn round(&self) -> Round {
        let mut round = Round::default();
        if !self.managed_resources.is_synced() || !self.hibernation.is_synced() || !self.shoot_access.is_synced() {
            return round;
        }
        let runtimes = self.runtimes.state();
        self.written_over
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|key, _| self.runtimes.get(key).is_some());
        let due_now: Vec<_> = runtimes
            .into_iter()
            .filter(|cr| {
                // a hibernated shoot's verdict does not depend on a rollout settling: at once
                let settle = if self.hibernation.hibernated(&cr.namespace().unwrap_or_default()) {
                    Duration::ZERO
                } else {
                    self.opts.sync_period
                };
                self.opts.responsibility.responsible_for(cr) && due(cr, settle) && !self.cache_behind_our_write(cr)
            })
            .collect();
        let awake: BTreeSet<String> = due_now
            .iter()
            .filter_map(|cr| cr.namespace())
            .filter(|ns| !self.hibernation.hibernated(ns))
            .collect();
        let shoots: HashMap<String, ShootNodes> = futures::stream::iter(awake)
            .map(|ns| async move {
                let nodes = self.shoot_nodes(&ns).await;
                (ns, nodes)
            })
            .buffer_unordered(SHOOT_READS)
            .collect()
            .await;
        for cr in due_now {
            round.checked += 1;
            let nodes = shoots.get(&cr.namespace().unwrap_or_default());
            match self.check(&cr, nodes).await {
                Ok(true) => round.written += 1,
                Ok(false) => {}
                Err(e) => {
                    round.failed += 1;
                    tracing::warn!(containerruntime = %cr.name_any(), namespace = %cr.namespace().unwrap_or_default(), error = %e, "cannot write the health condition");
                }
            }
        }
        round
    }

    /// The kata nodes of the shoot in `namespace`, within [`SHOOT_READ_DEADLINE`].
    async fn shoot_nodes(&self, namespace: &str) -> ShootNodes {
        // the deadline covers the access too: the fallback to `gardener` is a seed GET
        let read = async {
            let client = self.shoot_access.client(namespace).await.map_err(|e| e.to_string())?;
            nodes::read(client).await.map_err(|e| format!("listing nodes: {e}"))
        };
        tokio::time::timeout(SHOOT_READ_DEADLINE, read)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "listing nodes: no answer within {}s",
                    SHOOT_READ_DEADLINE.as_secs()
                ))
            })
    }

    /// Whether the cached `cr` is still the version our last condition write was based on (the
    /// watch has not delivered that write yet). Forgets the write once the cache moved on.
    fn cache_behind_our_write(&self, cr: &ContainerRuntime) -> bool {
        let key = ObjectRef::from_obj(cr);
        let mut written_over = self.written_over.lock().unwrap_or_else(|e| e.into_inner());
        match written_over.get(&key) {
            Some(base) if cr.metadata.resource_version.as_ref() == Some(base) => true,
            Some(_) => {
                written_over.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Evaluates one ContainerRuntime; writes its condition if it changed (returns whether it did).
    async fn check(&self, cr: &ContainerRuntime, shoot: Option<&ShootNodes>) -> Result<bool, kube::Error> {
        let ns = cr.namespace().unwrap_or_default();
        let pool = cr.spec.worker_pool.name.as_str();
        let conditions: &[Condition] = cr.status.as_ref().map_or(&[], |s| &s.conditions);
        let old = conditions.iter().find(|c| c.type_ == SYSTEM_COMPONENTS_HEALTHY);
        let installation = installation_mr(pool);
        let inst = self.managed_resources.get(&ns, &installation).flatten();
        let shared = self.managed_resources.get(&ns, SHARED_MR).flatten();
        let pool_nodes = match shoot {
            Some(Ok(all)) => Ok(nodes::judge(all, pool)),
            Some(Err(e)) => Err(e.as_str()),
            // hibernated: not read, not needed
            None => Ok(nodes::PoolNodes::default()),
        };
        let input = Input {
            pool,
            managed_resources: vec![(installation.as_str(), inst.as_deref()), (SHARED_MR, shared.as_deref())],
            hibernated: self.hibernation.hibernated(&ns),
            nodes: pool_nodes.as_ref().map_err(|e| *e),
            old,
            since_transition: old.map_or(Duration::ZERO, |o| since(&o.last_transition_time)),
            progressing_threshold: self.opts.progressing_threshold,
        };
        let verdict = evaluate(&input);
        let unchanged = old.is_some_and(|o| {
            o.status == verdict.status
                && o.reason == verdict.reason
                && o.message == verdict.message
                && o.codes == verdict.codes
        });
        if unchanged {
            return Ok(false);
        }
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let updated = condition::build(SYSTEM_COMPONENTS_HEALTHY, old, &verdict, &now);
        let all = condition::merge(conditions, updated);
        Api::<ContainerRuntime>::namespaced(self.client.clone(), &ns)
            .patch_status(
                &cr.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"conditions": all}})),
            )
            .await?;
        if let Some(base) = cr.metadata.resource_version.clone() {
            self.written_over
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(ObjectRef::from_obj(cr), base);
        }
        tracing::info!(containerruntime = %cr.name_any(), namespace = %ns, status = verdict.status, message = %verdict.message, "{SYSTEM_COMPONENTS_HEALTHY} changed");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::{DefaultStatus, LastOperation, OperationState};

    fn reconciled(seconds_ago: i64, type_: OperationType) -> ContainerRuntime {
        let mut cr = ContainerRuntime::for_pool("kata", "a", None);
        let at = k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(seconds_ago);
        cr.status = Some(DefaultStatus {
            last_operation: Some(LastOperation {
                type_: type_.into(),
                state: OperationState::Succeeded.into(),
                progress: 100,
                description: String::new(),
                last_update_time: Time(at),
            }),
            ..Default::default()
        });
        cr
    }

    #[test]
    fn checks_wait_until_an_object_settled_and_skip_objects_in_flux() {
        let settle = Duration::from_secs(30);
        assert!(!due(&reconciled(5, OperationType::Create), settle), "just reconciled");
        assert!(due(&reconciled(60, OperationType::Create), settle));
        assert!(!due(&reconciled(60, OperationType::Migrate), settle), "migrated away");
        assert!(
            !due(&ContainerRuntime::for_pool("kata", "a", None), settle),
            "never reconciled"
        );
        let mut restoring = reconciled(60, OperationType::Reconcile);
        restoring
            .annotations_mut()
            .insert(crate::api::OPERATION_ANNOTATION.into(), OP_RESTORE.into());
        assert!(!due(&restoring, settle));
        let mut deleting = reconciled(60, OperationType::Reconcile);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert!(!due(&deleting, settle));
    }
}
