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
use super::server;
use crate::api::ContainerRuntime;
use crate::api::cluster::Cluster;
use crate::api::osc::OperatingSystemConfig;
use crate::extension::truncate_for_status;
use crate::runtime::metrics::{Metrics, WebhookLabels};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

/// Where the handler gets the Cluster of a namespace (and a pool's ContainerRuntime) from.
pub trait ClusterSource: Send + Sync + 'static {
    /// `Ok(None)` if there is no such Cluster.
    fn get(&self, name: &str) -> BoxFuture<'_, Result<Option<Cluster>, kube::Error>>;

    /// The ContainerRuntime `name` in `namespace`, read only for pools whose providerConfig names
    /// no hypervisors (their default depends on the pool's history). Default: none.
    fn container_runtime(
        &self,
        _namespace: &str,
        _name: &str,
    ) -> BoxFuture<'_, Result<Option<ContainerRuntime>, kube::Error>> {
        Box::pin(async { Ok(None) })
    }
}

/// Reads Clusters from the API server (one GET per admission request of a kata pool: OSC writes
/// are rare).
pub struct ApiClusters(pub kube::Client);

impl ClusterSource for ApiClusters {
    fn get(&self, name: &str) -> BoxFuture<'_, Result<Option<Cluster>, kube::Error>> {
        let name = name.to_string();
        Box::pin(async move { kube::Api::<Cluster>::all(self.0.clone()).get_opt(&name).await })
    }

    fn container_runtime(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<Option<ContainerRuntime>, kube::Error>> {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        Box::pin(async move {
            kube::Api::<ContainerRuntime>::namespaced(self.0.clone(), &namespace)
                .get_opt(&name)
                .await
        })
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
    let (status, response) = review(&state, body).await;
    if let Some(g) = &in_flight {
        g.dec();
    }
    if let Some(m) = &state.metrics {
        m.record_webhook_request(&state.webhook_label, status.as_u16(), started.elapsed());
    }
    response
}

fn json_body(status: StatusCode, value: &Value) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the review: {e}")).into_response(),
    }
}

/// An AdmissionReview v1 response. The patch goes out as a base64 string (Go's `[]byte`).
fn review_response(uid: &str, allowed: Allowed) -> Value {
    let mut response = json!({"uid": uid, "allowed": true});
    match allowed {
        Allowed::Unchanged => {}
        Allowed::Patched { patch, warnings } => {
            if let Some(patch) = patch {
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
            }
            if !warnings.is_empty() {
                response["warnings"] = json!(warnings);
            }
        }
        Allowed::Invalid(message) => {
            response["allowed"] = json!(false);
            response["status"] =
                json!({"status": "Failure", "message": message, "reason": "InvalidRequest", "code": 400});
        }
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

enum Allowed {
    Unchanged,
    Patched {
        patch: Option<Vec<u8>>,
        warnings: Vec<String>,
    },
    Invalid(String),
}

/// The parts of an AdmissionReview the webhook reads. The object stays raw text (parsed once,
/// below, and only as far as needed); `oldObject` and everything else is skipped unparsed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(borrow, default)]
    request: Option<RequestIn<'a>>,
}

#[derive(Deserialize)]
struct RequestIn<'a> {
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    kind: Option<GroupVersionKindIn>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct GroupVersionKindIn {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

/// Just enough of an OSC to decide whether it is a candidate and how to patch its arrays.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OscView {
    #[serde(default)]
    metadata: ViewMeta,
    #[serde(default)]
    spec: ViewSpec,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ViewMeta {
    #[serde(default)]
    labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    deletion_timestamp: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ViewSpec {
    #[serde(default)]
    purpose: String,
    #[serde(default)]
    files: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    units: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    cri_config: Option<ViewCri>,
}

#[derive(Deserialize, Default)]
struct ViewCri {
    #[serde(default)]
    containerd: Option<ViewContainerd>,
}

#[derive(Deserialize, Default)]
struct ViewContainerd {
    #[serde(default)]
    plugins: Option<serde::de::IgnoredAny>,
}

/// What the first look at a request decided.
enum FirstLook {
    /// Answer now.
    Answer(StatusCode, Value),
    /// A reconcile OSC of a labelled pool: the Cluster decides.
    Candidate {
        uid: String,
        namespace: String,
        osc: Box<OperatingSystemConfig>,
        presence: mutate::Presence,
    },
}

/// Parses the body once: the review's envelope, a light view of the object, and the typed
/// object only for candidates. Pure CPU work, run on a blocking thread for large bodies.
fn first_look(body: &[u8]) -> FirstLook {
    let review: ReviewIn = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return FirstLook::Answer(
                StatusCode::OK,
                review_response(
                    "",
                    Allowed::Invalid(format!(
                        "not an AdmissionReview: {}",
                        truncate_for_status(&e.to_string())
                    )),
                ),
            );
        }
        Err(e) => {
            return FirstLook::Answer(
                StatusCode::BAD_REQUEST,
                json!(format!(
                    "request body is not JSON: {}",
                    truncate_for_status(&e.to_string())
                )),
            );
        }
    };
    let invalid = |uid: &str, message: String| {
        tracing::warn!(%message, "malformed AdmissionReview");
        FirstLook::Answer(StatusCode::OK, review_response(uid, Allowed::Invalid(message)))
    };
    if review.api_version != "admission.k8s.io/v1" || review.kind != "AdmissionReview" {
        return invalid(
            "",
            format!(
                "expected admission.k8s.io/v1 AdmissionReview, got {}/{}",
                truncate_for_status(&review.api_version),
                truncate_for_status(&review.kind)
            ),
        );
    }
    let Some(request) = review.request else {
        return invalid("", "AdmissionReview has no request".into());
    };
    let Some(uid) = request.uid else {
        return invalid("", "AdmissionReview request has no uid".into());
    };
    let allow = |uid: &str| FirstLook::Answer(StatusCode::OK, review_response(uid, Allowed::Unchanged));
    let Some(raw) = request.object.filter(|o| o.get() != "null") else {
        return allow(&uid);
    };
    if !raw.get().starts_with('{') {
        return invalid(&uid, "request.object is not an object".into());
    }
    match &request.kind {
        Some(k) if k.kind == "OperatingSystemConfig" && k.group == "extensions.gardener.cloud" => {}
        _ => return allow(&uid),
    }
    // most OSCs are decided here, without decoding the whole object or reading anything
    let view: OscView = match serde_json::from_str(raw.get()) {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(%uid, error = %e, "allowed unchanged: not an OperatingSystemConfig");
            return allow(&uid);
        }
    };
    let pool = view
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::api::POOL_LABEL));
    if view.spec.purpose != crate::api::osc::PURPOSE_RECONCILE
        || pool.is_none()
        || view.metadata.deletion_timestamp.is_some()
    {
        return allow(&uid);
    }
    let osc = match mutate::decode(raw.get()) {
        Ok(o) => o,
        Err(e) => {
            tracing::info!(%uid, error = %e, "allowed unchanged");
            return allow(&uid);
        }
    };
    let namespace = osc.metadata.namespace.clone().or(request.namespace).unwrap_or_default();
    let presence = mutate::Presence {
        files: view.spec.files.is_some(),
        units: view.spec.units.is_some(),
        plugins: view
            .spec
            .cri_config
            .and_then(|c| c.containerd)
            .is_some_and(|c| c.plugins.is_some()),
    };
    FirstLook::Candidate {
        uid,
        namespace,
        osc: Box::new(osc),
        presence,
    }
}

/// Answers one request body. Public for the in-process benchmark.
pub async fn review(state: &HandlerState, body: Bytes) -> (StatusCode, Response) {
    let Some(look) = server::decode_body(body, first_look).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            (StatusCode::INTERNAL_SERVER_ERROR, "decoding the review failed").into_response(),
        );
    };
    let (uid, namespace, osc, presence) = match look {
        FirstLook::Answer(status, value) if status == StatusCode::OK => return (status, json_body(status, &value)),
        FirstLook::Answer(status, value) => {
            let message = value.as_str().unwrap_or_default().to_string();
            return (status, (status, message).into_response());
        }
        FirstLook::Candidate {
            uid,
            namespace,
            osc,
            presence,
        } => (uid, namespace, osc, presence),
    };
    match respond(state, &namespace, &osc, presence).await {
        Ok(allowed) => (
            StatusCode::OK,
            json_body(StatusCode::OK, &review_response(&uid, allowed)),
        ),
        Err(message) => {
            tracing::warn!(%uid, %message, "admission request failed; the failure policy applies");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                (StatusCode::INTERNAL_SERVER_ERROR, message).into_response(),
            )
        }
    }
}

/// Ok: the answer (allowed, maybe with a patch). Err: a transient problem.
async fn respond(
    state: &HandlerState,
    namespace: &str,
    osc: &OperatingSystemConfig,
    presence: mutate::Presence,
) -> Result<Allowed, String> {
    let name = osc.metadata.name.clone().unwrap_or_default();
    let cluster = state
        .clusters
        .get(namespace)
        .await
        .map_err(|e| format!("reading Cluster {namespace}: {e}"))?;
    // a pool that names no hypervisors gets its own default, which its ContainerRuntime records
    let defaults = match mutate::pool_without_hypervisors(osc, cluster.as_ref()) {
        Some(pool) => {
            let name = format!("kata-{pool}");
            let cr = state
                .clusters
                .container_runtime(namespace, &name)
                .await
                .map_err(|e| format!("reading ContainerRuntime {namespace}/{name}: {e}"))?;
            crate::kata::defaults::default_hypervisors(cr.as_ref())
        }
        None => crate::api::kata_config::DEFAULT_HYPERVISORS.to_vec(),
    };
    let dm = match mutate::devmapper_for(osc, cluster.as_ref(), &defaults) {
        Ok(dm) => dm,
        Err(skip) => {
            log_skip(namespace, &name, &skip);
            return Ok(Allowed::Unchanged);
        }
    };
    let mutation = mutate::mutate(osc, presence, &dm, &state.settings).map_err(|e| e.to_string())?;
    if mutation.patch.0.is_empty() {
        tracing::debug!(%namespace, %name, "already mutated");
        return Ok(Allowed::Patched {
            patch: None,
            warnings: mutation.warnings,
        });
    }
    tracing::info!(%namespace, %name, ops = mutation.patch.0.len(), "adding the devmapper thin-pool setup");
    let patch = serde_json::to_vec(&mutation.patch).map_err(|e| format!("encoding the patch: {e}"))?;
    Ok(Allowed::Patched {
        patch: Some(patch),
        warnings: mutation.warnings,
    })
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
                    {"name": "kata", "cri": {"name": "containerd", "containerRuntimes": [{"type": "kata", "providerConfig":
                        {"apiVersion": "kata.runtime.extensions.config.gardener.cloud/v1alpha1", "kind": "KataConfiguration", "hypervisors": ["qemu", "fc"]}}]}},
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
        let app = server::protected(
            server::router(state, PATH),
            server::DEFAULT_MAX_BODY_BYTES,
            &Default::default(),
        );
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

    /// The old object of an UPDATE is never decoded (it doubled the memory of every large
    /// review); whatever it holds, the new object alone decides.
    #[tokio::test]
    async fn the_old_object_is_not_decoded() {
        let (s, _) = static_state();
        let mut update = review_of(osc("kata"));
        update["request"]["operation"] = json!("UPDATE");
        update["request"]["oldObject"] = json!("not an object at all");
        let r = response_of(s, update).await;
        assert_eq!(r["allowed"], true);
        assert!(r["patch"].is_string(), "{r}");
    }

    /// Most OSCs (other pools, other purposes) are answered from a light view of the object; one
    /// that only a full decode would reject is therefore allowed without one.
    #[tokio::test]
    async fn other_pools_are_decided_without_decoding_the_object() {
        let (s, _) = state(Box::new(Failing));
        let mut plain = osc("plain");
        plain["spec"]["purpose"] = json!("provision");
        plain["spec"]["units"] = json!({"not": "a list"});
        let r = response_of(s, review_of(plain)).await;
        assert_eq!((r["allowed"].clone(), r.get("patch")), (json!(true), None));
    }

    /// A kata pool that names no hypervisors: whether it has Firecracker depends on the pool's
    /// own default, which its ContainerRuntime records (pools from before fc became opt-in keep it).
    #[tokio::test]
    async fn a_pool_without_hypervisors_follows_its_own_default() {
        struct WithRuntime(Option<ContainerRuntime>);
        impl ClusterSource for WithRuntime {
            fn get(&self, _: &str) -> BoxFuture<'_, Result<Option<Cluster>, kube::Error>> {
                let mut c = cluster();
                c.spec.shoot["spec"]["provider"]["workers"][0]["cri"]["containerRuntimes"][0] = json!({"type": "kata"});
                Box::pin(async move { Ok(Some(c)) })
            }
            fn container_runtime(
                &self,
                _: &str,
                name: &str,
            ) -> BoxFuture<'_, Result<Option<ContainerRuntime>, kube::Error>> {
                assert_eq!(name, "kata-kata");
                let cr = self.0.clone();
                Box::pin(async move { Ok(cr) })
            }
        }
        let mut legacy = ContainerRuntime::for_pool("kata", "kata", None);
        legacy.status = Some(crate::api::common::DefaultStatus {
            provider_status: Some(crate::api::kata_status::provider_status(
                &Default::default(),
                &crate::api::kata_config::LEGACY_DEFAULT_HYPERVISORS,
            )),
            ..Default::default()
        });
        let (s, _) = state(Box::new(WithRuntime(Some(legacy))));
        let r = response_of(s, review_of(osc("kata"))).await;
        assert!(r["patch"].is_string(), "the old default includes fc: {r}");
        let (s, _) = state(Box::new(WithRuntime(None)));
        let r = response_of(s, review_of(osc("kata"))).await;
        assert_eq!(
            (r["allowed"].clone(), r.get("patch")),
            (json!(true), None),
            "a new pool: no fc"
        );
    }

    #[tokio::test]
    async fn oversized_bodies_are_rejected() {
        let (s, _) = static_state();
        let (status, _) = call(s, vec![b' '; server::DEFAULT_MAX_BODY_BYTES + 1]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
