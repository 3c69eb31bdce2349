//! The admission endpoint: AdmissionReview v1 in, AdmissionReview v1 out. Every request is
//! answered; nothing in the request can make it panic.
//!
//! Responses:
//! - body not JSON: HTTP 400;
//! - JSON but not an AdmissionReview with a request: HTTP 200, `allowed: false` (invalid request);
//! - an OSC we do not mutate, a missing Cluster, an invalid providerConfig: HTTP 200, allowed, no patch;
//! - a transient error reading the Cluster: HTTP 500, so that the apiserver applies the webhook's
//!   failure policy (Ignore by default: the OSC is stored unmutated and repaired on its next update);
//! - a kata-fc pool's OSC: HTTP 200, allowed, with a JSON patch (none if already mutated).

use super::mutate::{self, MutationSettings, Skip};
use crate::api::cluster::Cluster;
use crate::runtime::metrics::{Metrics, WebhookCodeLabels, WebhookLabels};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

/// Where the handler gets the Cluster of a namespace from.
pub trait ClusterSource: Send + Sync + 'static {
    /// `Ok(None)` if there is no such Cluster.
    fn get(&self, name: &str) -> BoxFuture<'_, Result<Option<Cluster>, kube::Error>>;
}

/// Reads Clusters from the API server (one GET per admission request: OSC writes are rare).
pub struct ApiClusters(pub kube::Api<Cluster>);

impl ClusterSource for ApiClusters {
    fn get(&self, name: &str) -> BoxFuture<'_, Result<Option<Cluster>, kube::Error>> {
        let name = name.to_string();
        Box::pin(async move { self.0.get_opt(&name).await })
    }
}

/// Fixed Clusters, for tests and benchmarks.
pub struct StaticClusters(pub std::collections::BTreeMap<String, Cluster>);

impl ClusterSource for StaticClusters {
    fn get(&self, name: &str) -> BoxFuture<'_, Result<Option<Cluster>, kube::Error>> {
        let found = self.0.get(name).cloned();
        Box::pin(async move { Ok(found) })
    }
}

/// Shared state of the admission handler.
pub struct HandlerState {
    pub clusters: Box<dyn ClusterSource>,
    pub settings: MutationSettings,
    pub metrics: Option<Arc<Metrics>>,
    /// The `webhook` label of the metrics (controller-runtime uses the path).
    pub webhook_label: String,
}

/// axum handler for POST `<path>`.
pub async fn admit(State(state): State<Arc<HandlerState>>, body: Bytes) -> Response {
    let started = Instant::now();
    let labels = WebhookLabels {
        webhook: state.webhook_label.clone(),
    };
    let in_flight = state
        .metrics
        .as_ref()
        .map(|m| m.webhook_requests_in_flight.get_or_create(&labels).clone());
    if let Some(g) = &in_flight {
        g.inc();
    }
    let (status, response) = review(&state, &body).await;
    if let Some(g) = &in_flight {
        g.dec();
    }
    if let Some(m) = &state.metrics {
        m.webhook_requests_total
            .get_or_create(&WebhookCodeLabels {
                webhook: state.webhook_label.clone(),
                code: status.as_u16().to_string(),
            })
            .inc();
        m.webhook_latency_seconds
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }
    response
}

fn json_response(status: StatusCode, review: &AdmissionReview<DynamicObject>) -> Response {
    match serde_json::to_vec(review) {
        Ok(body) => (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the review: {e}")).into_response(),
    }
}

fn plain(status: StatusCode, message: String) -> (StatusCode, Response) {
    (status, (status, message).into_response())
}

/// Answers one request body. Public for the in-process benchmark.
pub async fn review(state: &HandlerState, body: &[u8]) -> (StatusCode, Response) {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("request body is not JSON: {e}")),
    };
    let request = match parse_request(&value) {
        Ok(r) => r,
        Err(message) => {
            tracing::warn!(%message, "malformed AdmissionReview");
            let review = AdmissionResponse::invalid(message).into_review();
            return (StatusCode::OK, json_response(StatusCode::OK, &review));
        }
    };
    let raw_object = value.pointer("/request/object").filter(|o| !o.is_null());
    match respond(state, &request, raw_object).await {
        Ok(response) => (StatusCode::OK, json_response(StatusCode::OK, &response.into_review())),
        Err(message) => {
            tracing::warn!(uid = %request.uid, %message, "admission request failed; the failure policy applies");
            plain(StatusCode::INTERNAL_SERVER_ERROR, message)
        }
    }
}

fn parse_request(value: &Value) -> Result<AdmissionRequest<DynamicObject>, String> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(value.clone()).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        return Err(format!(
            "expected admission.k8s.io/v1 AdmissionReview, got {}/{}",
            review.types.api_version, review.types.kind
        ));
    }
    review
        .try_into()
        .map_err(|_| "AdmissionReview has no request".to_string())
}

/// Ok: the response to send (allowed, maybe with a patch). Err: a transient problem.
async fn respond(
    state: &HandlerState,
    request: &AdmissionRequest<DynamicObject>,
    raw_object: Option<&Value>,
) -> Result<AdmissionResponse, String> {
    let allow = AdmissionResponse::from(request);
    let Some(raw) = raw_object else {
        return Ok(allow);
    };
    if request.kind.kind != "OperatingSystemConfig" || request.kind.group != "extensions.gardener.cloud" {
        tracing::debug!(kind = %request.kind.kind, "not an OperatingSystemConfig, allowed unchanged");
        return Ok(allow);
    }
    let osc = match mutate::decode(raw) {
        Ok(o) => o,
        Err(e) => {
            tracing::info!(uid = %request.uid, error = %e, "allowed unchanged");
            return Ok(allow);
        }
    };
    let namespace = osc
        .metadata
        .namespace
        .clone()
        .or_else(|| request.namespace.clone())
        .unwrap_or_default();
    let name = osc.metadata.name.clone().unwrap_or_default();
    // Decide what we can without the Cluster first: most OSCs need no API call.
    if osc.spec.purpose != crate::api::osc::PURPOSE_RECONCILE || mutate::pool_of(&osc).is_none() {
        return Ok(allow);
    }
    let cluster = state
        .clusters
        .get(&namespace)
        .await
        .map_err(|e| format!("reading Cluster {namespace}: {e}"))?;
    let dm = match mutate::devmapper_for(&osc, cluster.as_ref()) {
        Ok(dm) => dm,
        Err(skip) => {
            log_skip(&namespace, &name, &skip);
            return Ok(allow);
        }
    };
    let mutation = mutate::mutate_raw(raw, &osc, &dm, &state.settings).map_err(|e| e.to_string())?;
    let mut response = allow;
    if !mutation.warnings.is_empty() {
        response.warnings = Some(mutation.warnings);
    }
    if mutation.patch.0.is_empty() {
        tracing::debug!(%namespace, %name, "already mutated");
        return Ok(response);
    }
    tracing::info!(%namespace, %name, ops = mutation.patch.0.len(), "adding the devmapper thin-pool setup");
    response
        .with_patch(mutation.patch)
        .map_err(|e| format!("encoding the patch: {e}"))
}

fn log_skip(namespace: &str, name: &str, skip: &Skip) {
    if skip.is_notable() {
        tracing::info!(%namespace, %name, reason = %skip, "allowed unchanged");
    } else {
        tracing::debug!(%namespace, %name, reason = %skip, "allowed unchanged");
    }
}
