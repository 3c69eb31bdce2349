//! Leader election on a coordination.k8s.io Lease, with client-go's rules: only the leader runs
//! controllers, and a leader that cannot renew within the renew deadline steps down — before
//! any other replica may consider the lease expired.
//!
//! A standby judges expiry by its own clock: the lease is free once its record has not changed
//! for a whole lease duration since this replica last saw it change (clocks of different
//! machines are never compared). Because the renew deadline is shorter than the lease duration,
//! a cut-off leader stops at least `lease - renew deadline` before a standby can take over.
//! Standbys also watch the Lease, so a lease released by a leader that shut down cleanly is
//! taken at once.

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// controller-runtime's (and Gardener's) defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderElectionError {
    #[error("the renew deadline ({renew_deadline:?}) must be shorter than the lease duration ({lease_duration:?})")]
    Timing {
        renew_deadline: Duration,
        lease_duration: Duration,
    },
}

pub struct LeaderElection {
    pub is_leader: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

/// The parts of a lease record whose change proves its holder alive.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    holder: String,
    renew_time: Option<MicroTime>,
    acquire_time: Option<MicroTime>,
    transitions: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Self {
        Self {
            holder: spec.holder_identity.clone().unwrap_or_default(),
            renew_time: spec.renew_time.clone(),
            acquire_time: spec.acquire_time.clone(),
            transitions: spec.lease_transitions,
        }
    }
}

struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The last record seen and when this replica first saw it.
    observed: Option<(Record, Instant)>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Elector {
    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// One attempt: true when this replica holds the lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.lease_seconds()),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = Record::of(&spec);
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != record) {
            self.observed = Some((record.clone(), Instant::now()));
        }
        let mine = record.holder == self.identity;
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.timing.lease_duration, Duration::from_secs);
        let expired = record.holder.is_empty()
            || self
                .observed
                .as_ref()
                .is_some_and(|(_, seen)| seen.elapsed() >= duration);
        if !mine && !expired {
            return Ok(false);
        }
        let mut next = lease;
        next.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_seconds()),
            acquire_time: if mine { spec.acquire_time.clone() } else { Some(now()) },
            renew_time: Some(now()),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(!mine)),
            ..spec
        });
        match self.api.replace(&self.name, &PostParams::default(), &next).await {
            Ok(stored) => {
                if let Some(s) = &stored.spec {
                    self.observed = Some((Record::of(s), Instant::now()));
                }
                Ok(true)
            }
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Hands the lease over at once: empty holder, one-second duration (as client-go does).
    async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now()),
            renew_time: Some(now()),
            ..spec
        });
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

impl LeaderElection {
    pub async fn start(
        client: Client,
        namespace: &str,
        lease: &str,
        identity: &str,
    ) -> Result<Self, LeaderElectionError> {
        Self::start_with(client, namespace, lease, identity, Timing::default()).await
    }

    pub async fn start_with(
        client: Client,
        namespace: &str,
        lease: &str,
        identity: &str,
        timing: Timing,
    ) -> Result<Self, LeaderElectionError> {
        if timing.renew_deadline >= timing.lease_duration {
            return Err(LeaderElectionError::Timing {
                renew_deadline: timing.renew_deadline,
                lease_duration: timing.lease_duration,
            });
        }
        let api: Api<Lease> = Api::namespaced(client, namespace);
        let mut elector = Elector {
            api: api.clone(),
            name: lease.to_string(),
            identity: identity.to_string(),
            timing,
            observed: None,
        };
        let (tx, is_leader) = watch::channel(false);
        let config = watcher::Config::default().fields(&format!("metadata.name={lease}"));
        let task = tokio::spawn(async move {
            let mut changes = watcher(api, config).default_backoff().applied_objects().boxed();
            // standby: try every retry period, or at once when the lease changes
            loop {
                match elector.try_acquire_or_renew().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "acquiring the leader lease failed, retrying"),
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(timing.retry_period) => {}
                    Some(_) = changes.next() => {}
                }
            }
            drop(changes);
            tx.send_replace(true);
            // leader: renew every retry period; give up after the renew deadline
            let mut renewed = Instant::now();
            loop {
                tokio::select! {
                    _ = tx.closed() => break,
                    _ = tokio::time::sleep(timing.retry_period) => {}
                }
                let left = timing.renew_deadline.saturating_sub(renewed.elapsed());
                match tokio::time::timeout(left, elector.try_acquire_or_renew()).await {
                    Ok(Ok(true)) => renewed = Instant::now(),
                    Ok(Ok(false)) => {
                        tracing::error!("the leader lease was taken by another replica");
                        tx.send_replace(false);
                        return;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "renewing the leader lease failed, retrying"),
                    Err(_) => {}
                }
                if renewed.elapsed() >= timing.renew_deadline {
                    tracing::error!(deadline = ?timing.renew_deadline, "could not renew the leader lease within the renew deadline, stepping down");
                    tx.send_replace(false);
                    return;
                }
            }
            match tokio::time::timeout(Duration::from_secs(5), elector.release()).await {
                Ok(Ok(())) => tracing::info!("leader lease released"),
                Ok(Err(e)) => tracing::warn!(error = %e, "releasing the leader lease failed"),
                Err(_) => tracing::warn!("releasing the leader lease timed out"),
            }
        });
        Ok(Self { is_leader, task })
    }

    /// Gives the lease up at once, so that the next replica takes over without waiting for expiry.
    pub async fn release(self) {
        let Self { is_leader, task } = self;
        // closing the channel ends the loop, which releases the lease
        drop(is_leader);
        if tokio::time::timeout(Duration::from_secs(6), task).await.is_err() {
            tracing::warn!("releasing the leader lease timed out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renew_deadline_is_shorter_than_the_lease() {
        let t = Timing::default();
        assert!(t.renew_deadline < t.lease_duration);
        assert!(t.retry_period < t.renew_deadline);
    }
}
