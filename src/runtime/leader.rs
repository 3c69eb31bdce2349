//! Leader election on a coordination.k8s.io Lease: only the leader runs controllers.

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// controller-runtime's defaults: 15 s lease, renewed well before it expires.
pub const LEASE_DURATION_SECONDS: u64 = 15;
pub const LEASE_GRACE_SECONDS: u64 = 5;

pub struct LeaderElection {
    pub is_leader: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, kube_lease_manager::LeaseManagerError>>,
}

impl LeaderElection {
    pub async fn start(
        client: Client,
        namespace: &str,
        lease: &str,
        identity: &str,
    ) -> Result<Self, kube_lease_manager::LeaseManagerError> {
        let manager = LeaseManagerBuilder::new(client, lease)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(LEASE_DURATION_SECONDS)
            .with_grace(LEASE_GRACE_SECONDS)
            .with_field_manager("gardener-extension-runtime-kata-leader-election")
            .build()
            .await?;
        let (is_leader, task) = manager.watch().await;
        Ok(Self { is_leader, task })
    }

    /// Gives the lease up at once, so that the next replica takes over without waiting for expiry.
    pub async fn release(self) {
        let Self { is_leader, task } = self;
        // closing the channel makes the manager release the lease and return
        drop(is_leader);
        match tokio::time::timeout(std::time::Duration::from_secs(5), task).await {
            Ok(Ok(Ok(_))) => tracing::info!("leader lease released"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the leader lease failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "leader election task failed"),
            Err(_) => tracing::warn!("releasing the leader lease timed out"),
        }
    }
}
