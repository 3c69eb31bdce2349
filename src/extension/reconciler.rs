//! One reconcile of one ContainerRuntime, faithful to Gardener's generic reconciler
//! (`extensions/pkg/controller/containerruntime/reconciler.go` plus the operation-annotation
//! wrapper): annotation handling, Cluster, operation type, status and finalizer around the
//! actuator call.

use super::actuator::{Actuator, ActuatorError, ProviderStatus};
use super::operation::{OP_RECONCILE, OP_RESTORE, OP_WAIT_FOR_STATE, compute_operation_type};
use super::operation::{operation_annotation, should_skip_operation};
use super::{FINALIZER, status};
use crate::api::cluster::ClusterDecodeError;
use crate::api::{Cluster, ContainerRuntime, DecodedCluster, OPERATION_ANNOTATION, OperationType};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub const KIND: &str = "ContainerRuntime";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{context}: {source}")]
    Kube { context: String, source: kube::Error },
    #[error("cannot read the Cluster {name}: {source}")]
    ClusterRead { name: String, source: kube::Error },
    #[error(transparent)]
    ClusterDecode(#[from] ClusterDecodeError),
    #[error("{0}")]
    Actuator(#[from] ActuatorError),
}

fn kube_err(context: impl Into<String>) -> impl FnOnce(kube::Error) -> ReconcileError {
    let context = context.into();
    move |source| ReconcileError::Kube { context, source }
}

pub struct ReconcileContext<A> {
    pub client: Client,
    pub actuator: A,
    pub reconcile_timeout: Duration,
    /// Without `--ignore-operation-annotation`, work happens only when gardenlet asks for it.
    pub annotation_driven: bool,
}

/// Nothing asks for work: gardenlet would accept the object as it is (no operation annotation,
/// `observedGeneration == generation`, last operation succeeded and not older than the
/// `gardener.cloud/timestamp` annotation) and it is not being deleted. Our own writes during a
/// restore or migrate trigger such late events.
pub fn up_to_date(cr: &ContainerRuntime) -> bool {
    cr.metadata.deletion_timestamp.is_none() && super::readiness::not_ready_reason(cr).is_none()
}

fn last_operation_succeeded(cr: &ContainerRuntime) -> bool {
    cr.status
        .as_ref()
        .and_then(|s| s.last_operation.as_ref())
        .is_some_and(|op| op.state == crate::api::OperationState::Succeeded)
}

/// Runs one reconcile. `Ok(Action)` for success or a deliberate wait, `Err` to retry with backoff.
pub async fn reconcile<A: Actuator>(
    cr: Arc<ContainerRuntime>,
    ctx: &ReconcileContext<A>,
) -> Result<Action, ReconcileError> {
    let annotation = operation_annotation(&cr).map(str::to_owned);
    if annotation.as_deref() == Some(OP_WAIT_FOR_STATE) || (ctx.annotation_driven && up_to_date(&cr)) {
        return Ok(Action::await_change());
    }
    let ns = cr.namespace().unwrap_or_default();
    let name = cr.name_any();
    let api: Api<ContainerRuntime> = Api::namespaced(ctx.client.clone(), &ns);
    let op = compute_operation_type(&cr);
    let generation = cr.metadata.generation.unwrap_or(0);

    let cluster = read_cluster(&ctx.client, &ns).await;
    let shoot_failed = matches!(&cluster, Ok(c) if c.shoot.is_failed());
    let wants_finalizer = matches!(
        op,
        OperationType::Create | OperationType::Reconcile | OperationType::Restore
    ) && cluster.is_ok()
        && !shoot_failed
        && !should_skip_operation(op, &cr);
    // gardenlet's reconcile trigger stays until the final status is written, so that a crash at
    // any point leaves the request visible to the next replica. The one exception costs no write
    // and loses nothing: an object whose last operation did not succeed (a create) reads as work
    // without the trigger, so the trigger goes with the finalizer that must be added first.
    let trigger = annotation.as_deref() == Some(OP_RECONCILE);
    let add_finalizer = wants_finalizer && !has_finalizer(&cr);
    let trigger_consumed = trigger && add_finalizer && !last_operation_succeeded(&cr);
    if add_finalizer {
        patch_metadata(&api, &cr, trigger_consumed, Some(with_finalizer(&cr))).await?;
    }
    // work that is skipped consumes the trigger at once, as Gardener's annotation wrapper does
    let consume_trigger = async || {
        if trigger && !trigger_consumed {
            patch_metadata(&api, &cr, true, None).await?;
        }
        Ok::<_, ReconcileError>(())
    };

    // recorded with whichever status write comes first
    let first_provider_status = ctx.actuator.first_provider_status(&cr);
    let cluster = match cluster {
        Ok(c) => c,
        Err(e) => {
            let what = format!("error {} {KIND}", op.progressive().to_lowercase());
            let failed = status::error(op, &what, &e.to_string(), &[], generation);
            write_status(&api, &name, with_provider_status(failed, first_provider_status)).await?;
            return Err(e);
        }
    };
    if shoot_failed {
        tracing::info!(namespace = %ns, name = %name, "skipping: the shoot's last operation failed");
        consume_trigger().await?;
        return Ok(Action::await_change());
    }
    if should_skip_operation(op, &cr) {
        tracing::debug!(namespace = %ns, name = %name, ?op, "skipping: object was migrated away");
        consume_trigger().await?;
        return Ok(Action::await_change());
    }

    if op == OperationType::Delete && !has_finalizer(&cr) {
        return Ok(Action::await_change());
    }
    write_status(
        &api,
        &name,
        with_provider_status(status::processing(op, KIND), first_provider_status),
    )
    .await?;
    let work = async {
        match op {
            OperationType::Migrate => ctx.actuator.migrate(&cr, &cluster).await.map(|()| None),
            OperationType::Delete if cluster.shoot.is_force_deletion() => {
                ctx.actuator.force_delete(&cr, &cluster).await.map(|()| None)
            }
            OperationType::Delete => ctx.actuator.delete(&cr, &cluster).await.map(|()| None),
            OperationType::Restore => ctx.actuator.restore(&cr, &cluster).await,
            OperationType::Create | OperationType::Reconcile => ctx.actuator.reconcile(&cr, &cluster).await,
        }
    };
    let result = match tokio::time::timeout(ctx.reconcile_timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(ActuatorError::new(format!(
            "timed out after {:?}",
            ctx.reconcile_timeout
        ))),
    };
    let provider_status = match result {
        Ok(provider_status) => provider_status,
        Err(e) if e.requeue_after.is_some() => {
            tracing::info!(namespace = %ns, name = %name, reason = %e.description, "operation in progress, requeueing");
            return Ok(Action::requeue(e.requeue_after.unwrap_or_default()));
        }
        Err(e) => {
            let what = format!("error {} {KIND}", op.progressive().to_lowercase());
            write_status(
                &api,
                &name,
                status::error(op, &what, &e.description, &e.codes, generation),
            )
            .await?;
            return Err(e.into());
        }
    };
    let done = status::succeeded(op, KIND, generation);
    write_status(&api, &name, with_provider_status(done, provider_status)).await?;

    // Each flow's last write ends the request; until it lands, the request stays visible.
    match op {
        OperationType::Migrate => {
            // all finalizers go, then the migrate annotation (removed only at the end)
            let patch = json!({"metadata": {"finalizers": null, "annotations": {OPERATION_ANNOTATION: null}}});
            merge_patch(&api, &name, &patch, "removing finalizers after migration").await?;
        }
        OperationType::Delete => {
            let remaining: Vec<String> = cr.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
            patch_finalizers(&api, &cr, remaining).await?;
        }
        OperationType::Restore if annotation.as_deref() == Some(OP_RESTORE) => {
            let patch = json!({"metadata": {"annotations": {OPERATION_ANNOTATION: null}}});
            merge_patch(&api, &name, &patch, "removing the restore annotation").await?;
        }
        OperationType::Create | OperationType::Reconcile if trigger && !trigger_consumed => {
            return consume_request(&api, &cr).await;
        }
        _ => {}
    }
    Ok(Action::await_change())
}

/// Removes gardenlet's reconcile trigger after the work it asked for succeeded, guarded by what the
/// work was done for (trigger, timestamp, generation): a request that came in meanwhile fails the
/// guard and is reconciled again instead of being swallowed.
async fn consume_request(api: &Api<ContainerRuntime>, cr: &ContainerRuntime) -> Result<Action, ReconcileError> {
    let mut ops = vec![
        json!({"op": "test", "path": "/metadata/generation", "value": cr.metadata.generation}),
        json!({"op": "test", "path": "/metadata/annotations/gardener.cloud~1operation", "value": OP_RECONCILE}),
    ];
    if let Some(ts) = cr.annotations().get(crate::api::TIMESTAMP_ANNOTATION) {
        ops.push(json!({"op": "test", "path": "/metadata/annotations/gardener.cloud~1timestamp", "value": ts}));
    }
    ops.push(json!({"op": "remove", "path": "/metadata/annotations/gardener.cloud~1operation"}));
    match json_patch(api, &cr.name_any(), ops, "removing the operation annotation").await {
        Ok(()) => Ok(Action::await_change()),
        Err(ReconcileError::Kube {
            source: kube::Error::Api(e),
            ..
        }) if e.code == 409 || e.code == 422 => {
            tracing::info!(namespace = %cr.namespace().unwrap_or_default(), name = %cr.name_any(), "a new request arrived during the reconcile, reconciling again");
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        Err(e) => Err(e),
    }
}

async fn read_cluster(client: &Client, name: &str) -> Result<DecodedCluster, ReconcileError> {
    let cluster =
        Api::<Cluster>::all(client.clone())
            .get(name)
            .await
            .map_err(|source| ReconcileError::ClusterRead {
                name: name.to_string(),
                source,
            })?;
    Ok(DecodedCluster::decode(&cluster)?)
}

fn has_finalizer(cr: &ContainerRuntime) -> bool {
    cr.finalizers().iter().any(|f| f == FINALIZER)
}

fn with_finalizer(cr: &ContainerRuntime) -> Vec<String> {
    let mut f = cr.finalizers().to_vec();
    if !f.iter().any(|x| x == FINALIZER) {
        f.push(FINALIZER.to_string());
    }
    f
}

/// JSON patch guarded by a `test` of the current finalizers, so a concurrent change by another
/// controller makes the write fail (and retry) instead of being overwritten.
fn finalizer_ops(cr: &ContainerRuntime, finalizers: Vec<String>) -> Vec<serde_json::Value> {
    match &cr.metadata.finalizers {
        Some(current) => vec![
            json!({"op": "test", "path": "/metadata/finalizers", "value": current}),
            json!({"op": "replace", "path": "/metadata/finalizers", "value": finalizers}),
        ],
        None => vec![json!({"op": "add", "path": "/metadata/finalizers", "value": finalizers})],
    }
}

async fn patch_metadata(
    api: &Api<ContainerRuntime>,
    cr: &ContainerRuntime,
    remove_trigger: bool,
    finalizers: Option<Vec<String>>,
) -> Result<(), ReconcileError> {
    let mut ops = Vec::new();
    if remove_trigger {
        ops.push(json!({"op": "remove", "path": "/metadata/annotations/gardener.cloud~1operation"}));
    }
    if let Some(f) = finalizers
        && !has_finalizer(cr)
    {
        ops.extend(finalizer_ops(cr, f));
    }
    json_patch(
        api,
        &cr.name_any(),
        ops,
        "removing the operation annotation / adding the finalizer",
    )
    .await
}

async fn patch_finalizers(
    api: &Api<ContainerRuntime>,
    cr: &ContainerRuntime,
    finalizers: Vec<String>,
) -> Result<(), ReconcileError> {
    json_patch(
        api,
        &cr.name_any(),
        finalizer_ops(cr, finalizers),
        "removing the finalizer",
    )
    .await
}

async fn json_patch(
    api: &Api<ContainerRuntime>,
    name: &str,
    ops: Vec<serde_json::Value>,
    what: &str,
) -> Result<(), ReconcileError> {
    if ops.is_empty() {
        return Ok(());
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).expect("well-formed JSON patch");
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(kube_err(what))?;
    Ok(())
}

async fn merge_patch(
    api: &Api<ContainerRuntime>,
    name: &str,
    patch: &serde_json::Value,
    what: &str,
) -> Result<(), ReconcileError> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(kube_err(what))?;
    Ok(())
}

/// Adds `provider_status` to a status patch, as `providerStatus` and merged into `state`: gardenlet
/// carries only the state to the destination seed of a control-plane migration.
fn with_provider_status(mut patch: serde_json::Value, provider_status: ProviderStatus) -> serde_json::Value {
    if let Some(ps) = provider_status {
        patch["status"]["state"] = ps.clone();
        patch["status"]["providerStatus"] = ps;
    }
    patch
}

async fn write_status(api: &Api<ContainerRuntime>, name: &str, patch: serde_json::Value) -> Result<(), ReconcileError> {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_err("updating the status"))?;
    Ok(())
}
