//! The `gardener-extension-heartbeat` Lease: gardenlet reports the extension's conditions as
//! Unknown when it is not renewed.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use std::time::Duration;

pub const HEARTBEAT_LEASE: &str = "gardener-extension-heartbeat";

pub fn heartbeat_lease(namespace: &str, holder: &str, interval: Duration) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(HEARTBEAT_LEASE.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(interval.as_secs() as i32),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        }),
    }
}

/// Renews the heartbeat every `interval` until `stop` resolves.
pub async fn run(
    client: Client,
    namespace: String,
    holder: String,
    interval: Duration,
    stop: impl Future<Output = ()> + Send,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let params = PatchParams::apply("gardener-extension-runtime-kata-heartbeat").force();
    tokio::pin!(stop);
    loop {
        let lease = heartbeat_lease(&namespace, &holder, interval);
        match api.patch(HEARTBEAT_LEASE, &params, &Patch::Apply(&lease)).await {
            Ok(_) => tracing::debug!(namespace = %namespace, "heartbeat renewed"),
            Err(e) => tracing::warn!(namespace = %namespace, error = %e, "cannot renew the heartbeat lease"),
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
