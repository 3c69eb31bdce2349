//! The validating endpoint for Shoots: AdmissionReview v1 in, AdmissionReview v1 out. Every
//! request is answered; nothing in it can make the handler panic.
//!
//! - body not JSON: HTTP 400;
//! - JSON but no AdmissionReview request: HTTP 200, `allowed: false`;
//! - not a Shoot CREATE/UPDATE, no kata pool, or an UPDATE that keeps the spec: allowed at once,
//!   nothing read;
//! - a kata Shoot: validated ([`super::validate`]); denied with HTTP 200 and a 422 status that
//!   lists every violation with its field path, or allowed with warnings;
//! - the CloudProfile cannot be read (transient): HTTP 500, so that the webhook's failure policy
//!   decides.

use super::validate::{self, MachineTypeCatalog, Rules, Verdict};
use crate::api::cluster::Shoot;
use crate::runtime::metrics::Metrics;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

/// Which profile a Shoot names: `spec.cloudProfile` (kind and name) or the older
/// `spec.cloudProfileName`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileRef {
    CloudProfile(String),
    /// In the Shoot's namespace.
    NamespacedCloudProfile(String),
}

impl ProfileRef {
    pub fn of(shoot: &Value) -> Option<Self> {
        let spec = shoot.get("spec")?;
        if let Some(r) = spec.get("cloudProfile") {
            let name = r.get("name")?.as_str()?.to_string();
            return match r.get("kind").and_then(Value::as_str) {
                Some("NamespacedCloudProfile") => Some(Self::NamespacedCloudProfile(name)),
                _ => Some(Self::CloudProfile(name)),
            };
        }
        spec.get("cloudProfileName")?
            .as_str()
            .map(|n| Self::CloudProfile(n.to_string()))
    }
}

/// Where the machine types come from.
pub trait ProfileSource: Send + Sync + 'static {
    /// `Ok(None)`: no such profile.
    fn machine_types<'a>(
        &'a self,
        shoot_namespace: &'a str,
        reference: &'a ProfileRef,
    ) -> BoxFuture<'a, Result<Option<MachineTypeCatalog>, kube::Error>>;
}

/// Reads (Namespaced)CloudProfiles from the garden: one GET per kata Shoot CREATE/UPDATE that
/// changes the spec (rare), only when the machine type rule is configured.
pub struct GardenProfiles(pub kube::Client);

fn core_api(client: &kube::Client, kind: &str, plural: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("core.gardener.cloud", "v1beta1", kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

impl ProfileSource for GardenProfiles {
    fn machine_types<'a>(
        &'a self,
        shoot_namespace: &'a str,
        reference: &'a ProfileRef,
    ) -> BoxFuture<'a, Result<Option<MachineTypeCatalog>, kube::Error>> {
        Box::pin(async move {
            Ok(match reference {
                ProfileRef::CloudProfile(name) => core_api(&self.0, "CloudProfile", "cloudprofiles", None)
                    .get_opt(name)
                    .await?
                    .map(|p| MachineTypeCatalog::from_spec(format!("CloudProfile {name:?}"), &p.data["spec"])),
                // the merged view of parent and namespaced profile
                ProfileRef::NamespacedCloudProfile(name) => core_api(
                    &self.0,
                    "NamespacedCloudProfile",
                    "namespacedcloudprofiles",
                    Some(shoot_namespace),
                )
                .get_opt(name)
                .await?
                .map(|p| {
                    MachineTypeCatalog::from_spec(
                        format!("NamespacedCloudProfile \"{shoot_namespace}/{name}\""),
                        &p.data["status"]["cloudProfileSpec"],
                    )
                }),
            })
        })
    }
}

/// Shared state of the handler.
pub struct AdmissionState {
    pub rules: Rules,
    pub profiles: Box<dyn ProfileSource>,
    pub metrics: Option<Arc<Metrics>>,
    /// The `webhook` label of the metrics (the path).
    pub webhook_label: String,
}

#[derive(Deserialize)]
struct Review {
    request: Option<Request>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    uid: String,
    #[serde(default)]
    resource: GroupResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    old_object: Option<Value>,
}

#[derive(Deserialize, Default)]
struct GroupResource {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resource: String,
}

/// axum handler for POST `<path>`.
pub async fn admit(State(state): State<Arc<AdmissionState>>, body: Bytes) -> Response {
    let started = Instant::now();
    let (status, response) = review(&state, &body).await;
    if let Some(m) = &state.metrics {
        m.record_webhook_request(&state.webhook_label, status.as_u16(), started.elapsed());
    }
    response
}

/// Answers one request body (public for tests).
pub async fn review(state: &AdmissionState, body: &[u8]) -> (StatusCode, Response) {
    let review: Review = match serde_json::from_slice::<Value>(body) {
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                (StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")).into_response(),
            );
        }
        Ok(v) => match serde_json::from_value(v) {
            Ok(r) => r,
            Err(e) => return ok(&invalid_request(&format!("not an AdmissionReview: {e}"))),
        },
    };
    let Some(request) = review.request else {
        return ok(&invalid_request("the AdmissionReview has no request"));
    };
    match decide(state, &request).await {
        Ok(answer) => ok(&answer.review(&request.uid)),
        Err(message) => {
            tracing::warn!(uid = %request.uid, %message, "admission request failed; the failure policy applies");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                (StatusCode::INTERNAL_SERVER_ERROR, message).into_response(),
            )
        }
    }
}

fn ok(value: &Value) -> (StatusCode, Response) {
    (StatusCode::OK, axum::Json(value.clone()).into_response())
}

fn invalid_request(message: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "", "allowed": false, "status": {"status": "Failure", "code": 400, "reason": "BadRequest", "message": message}}
    })
}

/// The answer to one request.
#[derive(Debug)]
enum Answer {
    /// Not ours to judge (no kata, no spec change, not a Shoot).
    Skip,
    Judged {
        name: String,
        verdict: Verdict,
    },
    /// A request we cannot read.
    Malformed(String),
}

impl Answer {
    fn review(&self, uid: &str) -> Value {
        let response = match self {
            Answer::Skip => json!({"uid": uid, "allowed": true}),
            Answer::Malformed(message) => json!({
                "uid": uid, "allowed": false,
                "status": {"status": "Failure", "code": 400, "reason": "BadRequest", "message": message}
            }),
            Answer::Judged { name, verdict } => {
                let mut r = if verdict.errors.is_empty() {
                    json!({"uid": uid, "allowed": true})
                } else {
                    let message = verdict
                        .errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ");
                    let causes: Vec<_> = verdict
                        .errors
                        .iter()
                        .map(|e| json!({"reason": "FieldValueInvalid", "field": e.field, "message": e.message}))
                        .collect();
                    json!({
                        "uid": uid, "allowed": false,
                        "status": {
                            "status": "Failure", "code": 422, "reason": "Invalid",
                            "message": format!("Shoot {name:?} is invalid for kata: {message}"),
                            "details": {"group": "core.gardener.cloud", "kind": "Shoot", "name": name, "causes": causes}
                        }
                    })
                };
                if !verdict.warnings.is_empty() {
                    r["warnings"] = json!(verdict.warnings);
                }
                r
            }
        };
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
    }
}

async fn decide(state: &AdmissionState, request: &Request) -> Result<Answer, String> {
    if request.resource.group != "core.gardener.cloud"
        || request.resource.resource != "shoots"
        || request.sub_resource.as_deref().is_some_and(|s| !s.is_empty())
        || !matches!(request.operation.as_str(), "CREATE" | "UPDATE")
    {
        return Ok(Answer::Skip);
    }
    let Some(raw) = &request.object else {
        return Ok(Answer::Malformed("the request has no object".into()));
    };
    let shoot: Shoot = match serde_json::from_value(raw.clone()) {
        Ok(s) => s,
        Err(e) => return Ok(Answer::Malformed(format!("cannot decode the Shoot: {e}"))),
    };
    // the cheap checks: nothing is read for Shoots without kata or updates that keep the spec
    if !validate::uses_kata(&shoot) {
        return Ok(Answer::Skip);
    }
    let old = match (&request.old_object, request.operation.as_str()) {
        (Some(old_raw), "UPDATE") => {
            if old_raw.get("spec") == raw.get("spec") {
                return Ok(Answer::Skip);
            }
            match serde_json::from_value::<Shoot>(old_raw.clone()) {
                Ok(s) => Some(s),
                Err(e) => return Ok(Answer::Malformed(format!("cannot decode the old Shoot: {e}"))),
            }
        }
        _ => None,
    };
    if shoot.metadata.deletion_timestamp.is_some() {
        return Ok(Answer::Skip);
    }
    let namespace = request
        .namespace
        .clone()
        .unwrap_or_else(|| shoot.metadata.namespace.clone());
    let catalog = if validate::needs_machine_types(&shoot, &state.rules) {
        match ProfileRef::of(raw) {
            Some(reference) => state
                .profiles
                .machine_types(&namespace, &reference)
                .await
                .map_err(|e| format!("reading the Shoot's {reference:?}: {e}"))?,
            None => None,
        }
    } else {
        None
    };
    let verdict = validate::validate_shoot(&shoot, old.as_ref(), &state.rules, catalog.as_ref());
    let name = shoot.metadata.name.clone();
    if verdict.errors.is_empty() {
        tracing::debug!(%namespace, %name, warnings = verdict.warnings.len(), "kata Shoot allowed");
    } else {
        tracing::info!(%namespace, %name, errors = ?verdict.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(), "kata Shoot denied");
    }
    Ok(Answer::Judged { name, verdict })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kata::requirements::Requirements;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        reads: Arc<AtomicUsize>,
        fail: bool,
    }

    impl ProfileSource for Counting {
        fn machine_types<'a>(
            &'a self,
            _ns: &'a str,
            reference: &'a ProfileRef,
        ) -> BoxFuture<'a, Result<Option<MachineTypeCatalog>, kube::Error>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let fail = self.fail;
            Box::pin(async move {
                if fail {
                    return Err(kube::Error::Service("connection refused".into()));
                }
                assert_eq!(reference, &ProfileRef::CloudProfile("aws".into()));
                Ok(Some(MachineTypeCatalog::from_spec(
                    "CloudProfile \"aws\"".into(),
                    &json!({"machineCapabilities": [{"name": "nestedVirtualization", "values": ["supported"]}],
                            "machineTypes": [{"name": "metal", "capabilities": {"nestedVirtualization": ["supported"]}}, {"name": "small"}]}),
                )))
            })
        }
    }

    fn state(fail: bool) -> (AdmissionState, Arc<AtomicUsize>) {
        let reads = Arc::new(AtomicUsize::new(0));
        (
            AdmissionState {
                rules: Rules {
                    requirements: Requirements::default(),
                    machine_type_capability: Some("nestedVirtualization=supported".parse().unwrap()),
                },
                profiles: Box::new(Counting {
                    reads: reads.clone(),
                    fail,
                }),
                metrics: None,
                webhook_label: "/webhooks/shoot".into(),
            },
            reads,
        )
    }

    fn shoot(machine: &str, runtimes: Value) -> Value {
        json!({
            "apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
            "metadata": {"name": "s1", "namespace": "garden-dev"},
            "spec": {"cloudProfile": {"kind": "CloudProfile", "name": "aws"}, "provider": {"type": "aws", "workers": [
                {"name": "w", "machine": {"type": machine, "image": {"name": "gardenlinux"}}, "cri": {"name": "containerd", "containerRuntimes": runtimes}}
            ]}}
        })
    }

    fn body(operation: &str, object: Value, old: Option<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "operation": operation, "namespace": "garden-dev", "name": "s1",
                "kind": {"group": "core.gardener.cloud", "version": "v1beta1", "kind": "Shoot"},
                "resource": {"group": "core.gardener.cloud", "version": "v1beta1", "resource": "shoots"},
                "object": object, "oldObject": old
            }
        }))
        .unwrap()
    }

    async fn answer(state: &AdmissionState, body: &[u8]) -> (StatusCode, Value) {
        let (status, response) = review(state, body).await;
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn shoots_without_kata_are_allowed_without_reading_anything() {
        let (state, reads) = state(true);
        let (status, v) = answer(
            &state,
            &body("CREATE", shoot("small", json!([{"type": "gvisor"}])), None),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["response"]["allowed"], true);
        assert_eq!(v["response"]["uid"], "u-1");
        assert_eq!(reads.load(Ordering::SeqCst), 0);
        // an UPDATE that keeps the spec (metadata only) is not judged either
        let s = shoot("small", json!([{"type": "kata"}]));
        let (_, v) = answer(&state, &body("UPDATE", s.clone(), Some(s))).await;
        assert_eq!(v["response"]["allowed"], true);
        assert_eq!(reads.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_skip_path_takes_well_under_a_millisecond() {
        let (state, reads) = state(true);
        let plain = body("CREATE", shoot("small", json!([{"type": "gvisor"}])), None);
        let n = 1000u32;
        let started = Instant::now();
        for _ in 0..n {
            let (status, _) = review(&state, &plain).await;
            assert_eq!(status, StatusCode::OK);
        }
        let each = started.elapsed() / n;
        eprintln!("skip path: {each:?} per review");
        assert!(each < std::time::Duration::from_millis(1), "{each:?} per review");
        assert_eq!(reads.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_denial_lists_causes_with_field_paths() {
        let (state, reads) = state(false);
        let bad = json!([{"type": "kata", "providerConfig": {"apiVersion": "kata.runtime.extensions.config.gardener.cloud/v1alpha1", "kind": "KataConfiguration", "debug": "yes"}}]);
        let (status, v) = answer(&state, &body("CREATE", shoot("small", bad), None)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        let r = &v["response"];
        assert_eq!(r["allowed"], false);
        assert_eq!(r["status"]["code"], 422);
        let causes = r["status"]["details"]["causes"].as_array().unwrap();
        let fields: Vec<_> = causes.iter().map(|c| c["field"].as_str().unwrap()).collect();
        assert_eq!(
            fields,
            [
                "spec.provider.workers[0].cri.containerRuntimes[0].providerConfig",
                "spec.provider.workers[0].machine.type"
            ]
        );
        assert!(r["status"]["message"].as_str().unwrap().starts_with("Shoot \"s1\" is invalid for kata: spec.provider.workers[0].cri.containerRuntimes[0].providerConfig: invalid type"), "{r}");
        // valid
        let (_, v) = answer(&state, &body("CREATE", shoot("metal", json!([{"type": "kata"}])), None)).await;
        assert_eq!(v["response"]["allowed"], true, "{v}");
    }

    #[tokio::test]
    async fn malformed_requests_get_answers_not_panics() {
        let (state, _) = state(false);
        assert_eq!(answer(&state, b"{not json").await.0, StatusCode::BAD_REQUEST);
        let (status, v) = answer(&state, br#"{"kind":"AdmissionReview"}"#).await;
        assert_eq!(
            (status, v["response"]["allowed"].clone()),
            (StatusCode::OK, json!(false))
        );
        let (_, v) = answer(
            &state,
            &body(
                "CREATE",
                json!({"spec": {"provider": {"workers": [{"noname": 1}]}}}),
                None,
            ),
        )
        .await;
        assert_eq!(v["response"]["allowed"], false);
        assert!(
            v["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .starts_with("cannot decode the Shoot")
        );
        let (_, v) = answer(&state, &body("DELETE", Value::Null, None)).await;
        assert_eq!(v["response"]["allowed"], true);
    }

    #[tokio::test]
    async fn an_unreadable_cloudprofile_leaves_the_decision_to_the_failure_policy() {
        let (state, _) = state(true);
        let (status, _) = answer(&state, &body("CREATE", shoot("metal", json!([{"type": "kata"}])), None)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn profile_references() {
        assert_eq!(
            ProfileRef::of(&json!({"spec": {"cloudProfileName": "aws"}})),
            Some(ProfileRef::CloudProfile("aws".into()))
        );
        assert_eq!(
            ProfileRef::of(
                &json!({"spec": {"cloudProfile": {"kind": "NamespacedCloudProfile", "name": "x"}, "cloudProfileName": "aws"}})
            ),
            Some(ProfileRef::NamespacedCloudProfile("x".into()))
        );
        assert_eq!(ProfileRef::of(&json!({"spec": {}})), None);
    }
}
