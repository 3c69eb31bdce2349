//! Leader election on a coordination.k8s.io Lease: only the leader runs controllers.
//!
//! kube-lease-manager renews and acquires the lease; a standby there sleeps until the holder's
//! lease would expire. We also watch the Lease, so that a lease released by a leader that shut
//! down cleanly is taken over at once instead of after the lease duration.

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// controller-runtime's defaults: 15 s lease, renewed well before it expires.
pub const LEASE_DURATION_SECONDS: u64 = 15;
pub const LEASE_GRACE_SECONDS: u64 = 5;

pub struct LeaderElection {
    pub is_leader: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

fn released(lease: &Lease) -> bool {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .is_none_or(str::is_empty)
}

impl LeaderElection {
    pub async fn start(
        client: Client,
        namespace: &str,
        lease: &str,
        identity: &str,
    ) -> Result<Self, kube_lease_manager::LeaseManagerError> {
        let builder = {
            let (client, lease, namespace, identity) = (
                client.clone(),
                lease.to_string(),
                namespace.to_string(),
                identity.to_string(),
            );
            move || {
                LeaseManagerBuilder::new(client.clone(), lease.clone())
                    .with_namespace(namespace.clone())
                    .with_identity(identity.clone())
                    .with_duration(LEASE_DURATION_SECONDS)
                    .with_grace(LEASE_GRACE_SECONDS)
                    .with_field_manager("gardener-extension-runtime-kata-leader-election")
            }
        };
        let mut manager: Arc<LeaseManager> = Arc::new(builder().build().await?);
        let (tx, is_leader) = watch::channel(false);
        let leases: Api<Lease> = Api::namespaced(client, namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={lease}"));
        let task = tokio::spawn(async move {
            let mut changes = watcher(leases, config).default_backoff().applied_objects().boxed();
            loop {
                tokio::select! {
                    biased;
                    _ = tx.closed() => break,
                    r = manager.changed() => match r {
                        Ok(leader) => { tx.send_replace(leader); }
                        Err(e) => {
                            tracing::warn!(error = %e, "leader election error, retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    },
                    // the manager caches the lease; a fresh one sees the release and acquires
                    Some(Ok(lease)) = changes.next(), if !*tx.borrow() => {
                        if released(&lease) {
                            tracing::info!("leader lease was released, trying to acquire it");
                            match builder().build().await {
                                Ok(m) => manager = Arc::new(m),
                                Err(e) => tracing::warn!(error = %e, "re-reading the leader lease failed"),
                            }
                        }
                    }
                }
            }
            match manager.release().await {
                Ok(()) => tracing::info!("leader lease released"),
                Err(e) => tracing::warn!(error = %e, "releasing the leader lease failed"),
            }
        });
        Ok(Self { is_leader, task })
    }

    /// Gives the lease up at once, so that the next replica takes over without waiting for expiry.
    pub async fn release(self) {
        let Self { is_leader, task } = self;
        // closing the channel ends the loop, which releases the lease
        drop(is_leader);
        if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
            tracing::warn!("releasing the leader lease timed out");
        }
    }
}
