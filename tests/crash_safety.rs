//! Crash injection: the extension dies right after each single write it makes in a flow (create,
//! spec change, a repeated request, delete, migrate, restore), and the next replica finishes the
//! flow on its own, with no new request from gardenlet.
//!
//! Stand-in for a killed process: the controller runs in-process on a client that lets exactly
//! `n` writes land and then fails every request, so the dead controller can neither write nor
//! observe anything more. A fresh controller with a fresh cache (a restarted replica) takes over.

mod common;

use common::*;
use gardener_extension_runtime_kata::api::OPERATION_ANNOTATION;
use gardener_extension_runtime_kata::api::containerruntime::ContainerRuntime;
use gardener_extension_runtime_kata::api::managedresource::ManagedResource;
use gardener_extension_runtime_kata::api::{OperationState, OperationType};
use gardener_extension_runtime_kata::kata::requirements::Requirements;
use gardener_extension_runtime_kata::testenv::TestEnv;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const SHARED: &str = "extension-runtime-kata";

/// Counts the writes that landed; once `crash_after` did, every request fails.
struct Crash {
    writes: AtomicUsize,
    crash_after: usize,
    dead: AtomicBool,
}

fn crashing_client(inner: Client, crash_after: usize) -> (Client, Arc<Crash>) {
    let crash = Arc::new(Crash {
        writes: AtomicUsize::new(0),
        crash_after,
        dead: AtomicBool::new(false),
    });
    let state = crash.clone();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let (inner, crash) = (inner.clone(), state.clone());
        async move {
            if crash.dead.load(Ordering::SeqCst) {
                return Err::<http::Response<kube::client::Body>, Box<dyn std::error::Error + Send + Sync>>(
                    "the extension process is dead".into(),
                );
            }
            let write = !matches!(*req.method(), http::Method::GET | http::Method::HEAD);
            let response = inner.send(req).await?;
            if write && response.status().is_success() {
                let landed = crash.writes.fetch_add(1, Ordering::SeqCst) + 1;
                if landed >= crash.crash_after {
                    crash.dead.store(true, Ordering::SeqCst);
                }
            }
            Ok(response)
        }
    });
    (Client::new(service, "default"), crash)
}

#[derive(Clone, Copy, Debug)]
enum Flow {
    Create,
    SpecChange,
    RepeatedRequest,
    Delete,
    Migrate,
    Restore,
}

fn qemu() -> serde_json::Value {
    kata_config(json!({"hypervisors": ["qemu"]}))
}

fn clh() -> serde_json::Value {
    kata_config(json!({"hypervisors": ["clh"]}))
}

fn last_operation(cr: &ContainerRuntime) -> Option<(OperationType, OperationState)> {
    let op = cr.status.as_ref()?.last_operation.as_ref()?;
    Some((op.type_.known()?, op.state.known()?))
}

async fn wait_last_operation(client: &Client, ns: &str, want: (OperationType, OperationState)) -> ContainerRuntime {
    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), ns);
    eventually(Duration::from_secs(30), &format!("kata-a {want:?}"), || async {
        let cr = api.get("kata-a").await.map_err(|e| e.to_string())?;
        let annotated = cr.annotations().get(OPERATION_ANNOTATION).cloned();
        match last_operation(&cr) {
            Some(op) if op == want && annotated.is_none() && cr.finalizers().is_empty() => Ok(cr),
            other => Err(format!(
                "{other:?}, annotation {annotated:?}, finalizers {:?}",
                cr.finalizers()
            )),
        }
    })
    .await
}

async fn managed_resource_exists(client: &Client, ns: &str, name: &str) -> bool {
    Api::<ManagedResource>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
        .is_some()
}

/// The shared ManagedResource's content, as the shoot would get it.
async fn shared_manifests(client: &Client, ns: &str) -> String {
    let mr = Api::<ManagedResource>::namespaced(client.clone(), ns)
        .get(SHARED)
        .await
        .unwrap();
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&mr.spec.secret_refs[0].name)
        .await
        .unwrap();
    let data = secret.data.unwrap_or_default();
    data.keys().cloned().collect::<Vec<_>>().join(",")
}

impl Flow {
    /// Brings the namespace to where the flow starts, with a controller that does not crash.
    async fn prepare(self, client: &Client, ns: &str) {
        if matches!(self, Flow::Create) {
            return;
        }
        let ctl = start_controller(client.clone(), ns, Requirements::default()).await;
        create_cr(client, ns, "a", Some(qemu())).await;
        wait_ready(client, ns, "kata-a").await;
        if matches!(self, Flow::Restore) {
            annotate(client, ns, "kata-a", "migrate", None).await;
            wait_last_operation(client, ns, (OperationType::Migrate, OperationState::Succeeded)).await;
        }
        drop(ctl);
        // the stopped controller's last events are out of the way; gardenlet compares timestamps
        // at second precision, so a request must come at least a second after the last operation
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    /// What gardenlet does to start the flow.
    async fn start(self, client: &Client, ns: &str) {
        match self {
            Flow::Create => drop(create_cr(client, ns, "a", Some(qemu())).await),
            Flow::SpecChange => annotate(client, ns, "kata-a", "reconcile", Some(clh())).await,
            Flow::RepeatedRequest => annotate(client, ns, "kata-a", "reconcile", None).await,
            Flow::Delete => {
                Api::<ContainerRuntime>::namespaced(client.clone(), ns)
                    .delete("kata-a", &DeleteParams::default())
                    .await
                    .unwrap();
            }
            Flow::Migrate => annotate(client, ns, "kata-a", "migrate", None).await,
            Flow::Restore => annotate(client, ns, "kata-a", "restore", None).await,
        }
    }

    /// Waits until the flow reached its end as gardenlet judges it.
    async fn finished(self, client: &Client, ns: &str) {
        match self {
            Flow::Create | Flow::SpecChange | Flow::RepeatedRequest | Flow::Restore => {
                let cr = wait_ready(client, ns, "kata-a").await;
                let want = match self {
                    Flow::Create => OperationType::Create,
                    Flow::Restore => OperationType::Restore,
                    _ => OperationType::Reconcile,
                };
                assert_eq!(last_operation(&cr), Some((want, OperationState::Succeeded)));
                let classes = shared_manifests(client, ns).await;
                let shim = if matches!(self, Flow::SpecChange) {
                    "clh"
                } else {
                    "qemu"
                };
                assert!(classes.contains(&format!("kata-{shim}")), "{classes}");
            }
            Flow::Delete => {
                let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), ns);
                eventually(Duration::from_secs(30), "kata-a gone", || async {
                    match api.get_opt("kata-a").await.map_err(|e| e.to_string())? {
                        None => Ok(()),
                        Some(cr) => Err(format!("{:?}", last_operation(&cr))),
                    }
                })
                .await;
                assert!(!managed_resource_exists(client, ns, SHARED).await);
            }
            Flow::Migrate => {
                wait_last_operation(client, ns, (OperationType::Migrate, OperationState::Succeeded)).await;
                assert!(!managed_resource_exists(client, ns, SHARED).await);
            }
        }
    }
}

/// Runs `flow` once without a crash and returns how many writes it took.
async fn writes_of(flow: Flow) -> usize {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("crash-count").await;
    create_cluster(&client, &ns, shoot("local", &[pool("a", Some(qemu()))], false)).await;
    flow.prepare(&client, &ns).await;
    let (crashing, crash) = crashing_client(client.clone(), usize::MAX);
    let ctl = start_controller(crashing, &ns, Requirements::default()).await;
    flow.start(&client, &ns).await;
    flow.finished(&client, &ns).await;
    // late writes (none expected) still count
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(ctl);
    crash.writes.load(Ordering::SeqCst)
}

/// Kills the extension after each single write of `flow`, then lets a new replica finish it.
async fn survives_a_crash_after_every_write(flow: Flow) {
    let total = writes_of(flow).await;
    assert!(total >= 3, "{flow:?} took only {total} writes");
    let env = TestEnv::shared();
    let client = env.client().await;
    for crash_after in 1..=total {
        let ns = env.namespace("crash").await;
        create_cluster(&client, &ns, shoot("local", &[pool("a", Some(qemu()))], false)).await;
        flow.prepare(&client, &ns).await;
        let (crashing, crash) = crashing_client(client.clone(), crash_after);
        let dying = start_controller(crashing, &ns, Requirements::default()).await;
        flow.start(&client, &ns).await;
        eventually(
            Duration::from_secs(30),
            &format!("{flow:?}: the crash after write {crash_after}"),
            || async {
                match crash.dead.load(Ordering::SeqCst) {
                    true => Ok(()),
                    false => Err(format!("{} writes", crash.writes.load(Ordering::SeqCst))),
                }
            },
        )
        .await;
        drop(dying);
        let _next_replica = start_controller(client.clone(), &ns, Requirements::default()).await;
        flow.finished(&client, &ns).await;
        eprintln!("{flow:?}: crash after write {crash_after} of {total}: finished by the next replica");
    }
}

#[tokio::test]
async fn a_create_survives_a_crash_after_every_write() {
    survives_a_crash_after_every_write(Flow::Create).await;
}

#[tokio::test]
async fn a_spec_change_survives_a_crash_after_every_write() {
    survives_a_crash_after_every_write(Flow::SpecChange).await;
}

#[tokio::test]
async fn a_repeated_request_survives_a_crash_after_every_write() {
    survives_a_crash_after_every_write(Flow::RepeatedRequest).await;
}

#[tokio::test]
async fn a_delete_survives_a_crash_after_every_write() {
    survives_a_crash_after_every_write(Flow::Delete).await;
}

#[tokio::test]
async fn a_migrate_survives_a_crash_after_every_write() {
    survives_a_crash_after_every_write(Flow::Migrate).await;
}

#[tokio::test]
async fn a_restore_survives_a_crash_after_every_write() {
    survives_a_crash_after_every_write(Flow::Restore).await;
}
