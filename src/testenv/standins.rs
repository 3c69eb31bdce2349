//! Explicit stand-ins for the parts of a real shoot that a bare kube-apiserver lacks. Each is
//! as small as the behaviour it replaces, and tests name it where they rely on it.

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

const FOREGROUND_DELETION: &str = "foregroundDeletion";

/// Stands in for kube-controller-manager's garbage collector in one narrow case:
/// gardener-resource-manager deletes DaemonSets with foreground propagation, so the apiserver
/// parks them behind the `foregroundDeletion` finalizer until the garbage collector has removed
/// their dependents. Without a DaemonSet controller there are no dependent pods, so the real
/// collector would release them at once; this does exactly that, and nothing else.
pub struct ForegroundDeletionStandIn {
    task: tokio::task::JoinHandle<()>,
}

impl ForegroundDeletionStandIn {
    pub fn start(client: Client) -> Self {
        let api: Api<DaemonSet> = Api::all(client);
        let task = tokio::spawn(async move {
            let events = watcher(api.clone(), watcher::Config::default())
                .default_backoff()
                .applied_objects();
            futures::pin_mut!(events);
            while let Some(event) = events.next().await {
                let Ok(ds) = event else { continue };
                if ds.metadata.deletion_timestamp.is_none() || !ds.finalizers().iter().any(|f| f == FOREGROUND_DELETION)
                {
                    continue;
                }
                let remaining: Vec<&String> = ds.finalizers().iter().filter(|f| *f != FOREGROUND_DELETION).collect();
                let patch = serde_json::json!({"metadata": {"finalizers": remaining}});
                let ns_api: Api<DaemonSet> =
                    Api::namespaced(api.clone().into_client(), &ds.namespace().unwrap_or_default());
                for _ in 0..5 {
                    match ns_api
                        .patch(&ds.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => break,
                        Err(kube::Error::Api(s)) if s.code == 404 => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "foreground-deletion stand-in: patch failed, retrying");
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        });
        Self { task }
    }
}

impl Drop for ForegroundDeletionStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}
