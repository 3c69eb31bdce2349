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
use base64::Engine as _;
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

/// Encodes a review; the patch goes out as a base64 string (Go's `[]byte` encoding), which is what
/// Kubernetes documents, rather than kube-core's array of numbers.
fn encode_review(review: &AdmissionReview<DynamicObject>) -> Result<Vec<u8>, serde_json::Error> {
    let mut value = serde_json::to_value(review)?;
    if let Some(patch) = value.pointer_mut("/response/patch")
        && let Some(bytes) = patch.as_array()
    {
        let raw: Vec<u8> = bytes.iter().filter_map(|b| b.as_u64()).map(|b| b as u8).collect();
        *patch = Value::String(base64::engine::general_purpose::STANDARD.encode(raw));
    }
    serde_json::to_vec(&value)
}

fn json_response(status: StatusCode, review: &AdmissionReview<DynamicObject>) -> Response {
    match encode_review(review) {
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
    if osc.spec.purpose != crate::api::osc::PURPOSE_RECONCILE
        || mutate::pool_of(&osc).is_none()
        || osc.metadata.deletion_timestamp.is_some()
    {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::cluster::ClusterSpec;
    use crate::webhook::server;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use prometheus_client::registry::Registry;
    use serde_json::json;
    use tower::ServiceExt;

    const PATH: &str = "/webhooks/operatingsystemconfig";

    struct Failing;
    impl ClusterSource for Failing {
        fn get(&self, _: &str) -> BoxFuture<'_, Result<Option<Cluster>, kube::Error>> {
            Box::pin(async { Err(kube::Error::LinesCodecMaxLineLengthExceeded) })
        }
    }

    fn cluster() -> Cluster {
        Cluster::new(
            "shoot--p--s",
            ClusterSpec {
                cloud_profile: json!({}),
                seed: None,
                shoot: json!({"spec": {"provider": {"workers": [
                    {"name": "kata", "cri": {"name": "containerd", "containerRuntimes": [{"type": "kata"}]}},
                    {"name": "plain", "cri": {"name": "containerd"}}
                ]}}}),
            },
        )
    }

    fn state(clusters: Box<dyn ClusterSource>) -> (Arc<HandlerState>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new(&mut Registry::default()));
        let state = Arc::new(HandlerState {
            clusters,
            settings: MutationSettings::default(),
            metrics: Some(metrics.clone()),
            webhook_label: PATH.into(),
        });
        (state, metrics)
    }

    fn static_state() -> (Arc<HandlerState>, Arc<Metrics>) {
        state(Box::new(StaticClusters(
            [("shoot--p--s".to_string(), cluster())].into(),
        )))
    }

    fn osc(pool: &str) -> Value {
        json!({
            "apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "OperatingSystemConfig",
            "metadata": {"name": format!("osc-{pool}"), "namespace": "shoot--p--s",
                         "labels": {"worker.gardener.cloud/pool": pool}},
            "spec": {"type": "gardenlinux", "purpose": "reconcile",
                     "criConfig": {"name": "containerd", "containerd": {"sandboxImage": "pause"}}}
        })
    }

    fn review_of(object: Value) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "e911857d-c318-11e8-bbad-025000000001",
                "kind": {"group": "extensions.gardener.cloud", "version": "v1alpha1", "kind": "OperatingSystemConfig"},
                "resource": {"group": "extensions.gardener.cloud", "version": "v1alpha1", "resource": "operatingsystemconfigs"},
                "namespace": "shoot--p--s", "operation": "CREATE",
                "userInfo": {"username": "gardenlet"},
                "object": object, "dryRun": false
            }
        })
    }

    async fn call(state: Arc<HandlerState>, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let app = server::router(state, PATH, server::DEFAULT_MAX_BODY_BYTES);
        let response = app
            .oneshot(
                Request::post(PATH)
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes().to_vec(),
        )
    }

    async fn response_of(state: Arc<HandlerState>, body: Value) -> Value {
        let (status, bytes) = call(state, serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        let review: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["kind"], "AdmissionReview");
        review["response"].clone()
    }

    #[tokio::test]
    async fn kata_fc_pool_is_patched_and_others_are_not() {
        let (s, metrics) = static_state();
        let r = response_of(s.clone(), review_of(osc("kata"))).await;
        assert_eq!(r["allowed"], true);
        assert_eq!(r["uid"], "e911857d-c318-11e8-bbad-025000000001");
        assert_eq!(r["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(r["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut object = osc("kata");
        json_patch::patch(&mut object, &patch).unwrap();
        assert_eq!(object["spec"]["units"][0]["name"], "kata-devmapper.service");

        // the mutated object again: allowed without a patch
        let r = response_of(s.clone(), review_of(object)).await;
        assert_eq!((r["allowed"].clone(), r.get("patch")), (json!(true), None));

        for o in [osc("plain"), osc("unknown-pool")] {
            let r = response_of(s.clone(), review_of(o)).await;
            assert_eq!((r["allowed"].clone(), r.get("patch")), (json!(true), None));
        }
        let mut provision = osc("kata");
        provision["spec"]["purpose"] = json!("provision");
        let r = response_of(s.clone(), review_of(provision)).await;
        assert_eq!(r.get("patch"), None);

        let labels = crate::runtime::metrics::WebhookCodeLabels {
            webhook: PATH.into(),
            code: "200".into(),
        };
        assert_eq!(metrics.webhook_requests_total.get_or_create(&labels).get(), 5);
    }

    #[tokio::test]
    async fn missing_cluster_allows_and_a_failing_api_returns_500() {
        let (s, _) = state(Box::new(StaticClusters(Default::default())));
        let r = response_of(s, review_of(osc("kata"))).await;
        assert_eq!((r["allowed"].clone(), r.get("patch")), (json!(true), None));
        let (s, metrics) = state(Box::new(Failing));
        let (status, _) = call(s, serde_json::to_vec(&review_of(osc("kata"))).unwrap()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let labels = crate::runtime::metrics::WebhookCodeLabels {
            webhook: PATH.into(),
            code: "500".into(),
        };
        assert_eq!(metrics.webhook_requests_total.get_or_create(&labels).get(), 1);
    }

    #[tokio::test]
    async fn malformed_reviews_get_admission_errors() {
        let (s, _) = static_state();
        let (status, body) = call(s.clone(), b"{not json".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&body));
        let (status, _) = call(s.clone(), Vec::new()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let mut wrong_version = review_of(osc("kata"));
        wrong_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let mut no_uid = review_of(osc("kata"));
        no_uid["request"].as_object_mut().unwrap().remove("uid");
        let mut bad_object = review_of(osc("kata"));
        bad_object["request"]["object"] = json!("a string");
        for body in [
            json!({}),
            json!([1, 2, 3]),
            json!(null),
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
            wrong_version,
            no_uid,
            bad_object,
        ] {
            let r = response_of(s.clone(), body.clone()).await;
            assert_eq!(r["allowed"], false, "{body}");
            assert_eq!(r["status"]["reason"], "InvalidRequest", "{body}");
        }

        // an OSC that does not decode (units is not a list) is allowed unchanged
        let mut odd = osc("kata");
        odd["spec"]["units"] = json!({"not": "a list"});
        let r = response_of(s.clone(), review_of(odd)).await;
        assert_eq!((r["allowed"].clone(), r.get("patch")), (json!(true), None));

        // DELETE-like request without an object
        let mut no_object = review_of(Value::Null);
        no_object["request"]["operation"] = json!("DELETE");
        let r = response_of(s.clone(), no_object).await;
        assert_eq!(r["allowed"], true);
    }

    #[tokio::test]
    async fn oversized_bodies_are_rejected() {
        let (s, _) = static_state();
        let (status, _) = call(s, vec![b' '; server::DEFAULT_MAX_BODY_BYTES + 1]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
