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
use crate::extension::truncate_for_status;
use crate::runtime::metrics::Metrics;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde::Deserialize;
use serde_json::value::RawValue;
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

/// Just the profile reference of a Shoot.
#[derive(Deserialize, Default)]
struct ProfileView {
    #[serde(default)]
    spec: ProfileSpecView,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ProfileSpecView {
    #[serde(default)]
    cloud_profile: Option<ProfileRefView>,
    #[serde(default)]
    cloud_profile_name: Option<String>,
}

#[derive(Deserialize)]
struct ProfileRefView {
    #[serde(default)]
    kind: Option<String>,
    name: String,
}

impl ProfileRef {
    /// The profile a Shoot (raw JSON) names.
    pub fn of(shoot: &str) -> Option<Self> {
        let spec = serde_json::from_str::<ProfileView>(shoot).ok()?.spec;
        match (spec.cloud_profile, spec.cloud_profile_name) {
            (Some(r), _) if r.kind.as_deref() == Some("NamespacedCloudProfile") => {
                Some(Self::NamespacedCloudProfile(r.name))
            }
            (Some(r), _) => Some(Self::CloudProfile(r.name)),
            (None, name) => name.map(Self::CloudProfile),
        }
    }

    fn name(&self) -> &str {
        match self {
            Self::CloudProfile(n) | Self::NamespacedCloudProfile(n) => n,
        }
    }
}

/// Whether `name` is a DNS subdomain (RFC 1123), as every name of a Gardener object is. Names go
/// into request paths: anything else (`/`, `?`, `#`, `%`, ...) could read another object.
pub fn is_dns_subdomain(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
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

/// The parts of an AdmissionReview the admission reads; the objects stay raw text of the body
/// until they are decoded into their typed views.
#[derive(Deserialize)]
struct Review<'a> {
    #[serde(borrow, default)]
    request: Option<Request<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    uid: String,
    #[serde(default)]
    resource: GroupResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    old_object: Option<&'a RawValue>,
}

/// Only the spec of a Shoot, raw: an UPDATE that keeps it is not ours to judge.
#[derive(Deserialize)]
struct SpecView<'a> {
    #[serde(borrow, default)]
    spec: Option<&'a RawValue>,
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
    let (status, response) = review(&state, body).await;
    if let Some(m) = &state.metrics {
        m.record_webhook_request(&state.webhook_label, status.as_u16(), started.elapsed());
    }
    response
}

/// What is known after reading the body once.
enum Decoded {
    Answer(StatusCode, Value),
    Shoot(Box<Judgeable>),
}

/// A kata Shoot CREATE/UPDATE that changes the spec, typed.
struct Judgeable {
    uid: String,
    namespace: String,
    shoot: Shoot,
    old: Option<Shoot>,
    profile: Option<ProfileRef>,
}

/// Reads the review straight from the body: the envelope, then only the typed views it needs (no
/// generic JSON tree, no copy of the objects).
fn decode(body: &[u8]) -> Decoded {
    let review: Review = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return Decoded::Answer(
                StatusCode::OK,
                invalid_request(&format!("not an AdmissionReview: {}", bounded(&e.to_string()))),
            );
        }
        Err(e) => {
            tracing::warn!(error = %bounded(&e.to_string()), "request body is not JSON");
            return Decoded::Answer(
                StatusCode::BAD_REQUEST,
                json!(format!("request body is not JSON: {}", bounded(&e.to_string()))),
            );
        }
    };
    let Some(request) = review.request else {
        return Decoded::Answer(StatusCode::OK, invalid_request("the AdmissionReview has no request"));
    };
    let answer = |a: Answer| Decoded::Answer(StatusCode::OK, a.review(&request.uid));
    if request.resource.group != "core.gardener.cloud"
        || request.resource.resource != "shoots"
        || request.sub_resource.as_deref().is_some_and(|s| !s.is_empty())
        || !matches!(request.operation.as_str(), "CREATE" | "UPDATE")
    {
        return answer(Answer::Skip);
    }
    let Some(raw) = request.object else {
        return answer(Answer::Malformed("the request has no object".into()));
    };
    let shoot: Shoot = match serde_json::from_str(raw.get()) {
        Ok(s) => s,
        Err(e) => {
            return answer(Answer::Malformed(format!(
                "cannot decode the Shoot: {}",
                decode_error(&e)
            )));
        }
    };
    // the cheap checks: nothing is read for Shoots without kata or updates that keep the spec
    if !validate::uses_kata(&shoot) || shoot.metadata.deletion_timestamp.is_some() {
        return answer(Answer::Skip);
    }
    let old = match (request.old_object, request.operation.as_str()) {
        (Some(old_raw), "UPDATE") => {
            if raw_spec(old_raw) == raw_spec(raw) {
                return answer(Answer::Skip);
            }
            match serde_json::from_str::<Shoot>(old_raw.get()) {
                Ok(s) => Some(s),
                Err(e) => {
                    return answer(Answer::Malformed(format!(
                        "cannot decode the old Shoot: {}",
                        decode_error(&e)
                    )));
                }
            }
        }
        _ => None,
    };
    let namespace = request
        .namespace
        .clone()
        .unwrap_or_else(|| shoot.metadata.namespace.clone());
    Decoded::Shoot(Box::new(Judgeable {
        uid: request.uid,
        namespace,
        profile: ProfileRef::of(raw.get()),
        shoot,
        old,
    }))
}

/// A decoding error in words a shoot owner understands.
fn decode_error(e: &serde_json::Error) -> String {
    if e.to_string().starts_with("recursion limit exceeded") {
        format!(
            "it is nested too deeply (more than 128 levels of objects and lists, at column {})",
            e.column()
        )
    } else {
        e.to_string()
    }
}

/// The spec of a raw Shoot, as text.
fn raw_spec(shoot: &RawValue) -> Option<&str> {
    serde_json::from_str::<SpecView>(shoot.get())
        .ok()?
        .spec
        .map(RawValue::get)
}

/// Answers one request body (public for tests and benchmarks).
pub async fn review(state: &AdmissionState, body: Bytes) -> (StatusCode, Response) {
    let Some(decoded) = crate::webhook::server::decode_body(body, decode).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            (StatusCode::INTERNAL_SERVER_ERROR, "decoding the review failed").into_response(),
        );
    };
    let judgeable = match decoded {
        Decoded::Answer(status, value) if status == StatusCode::OK => return ok(&value),
        Decoded::Answer(status, value) => {
            let message = value.as_str().unwrap_or_default().to_string();
            return (status, (status, message).into_response());
        }
        Decoded::Shoot(j) => j,
    };
    match decide(state, &judgeable).await {
        Ok(answer) => ok(&answer.review(&judgeable.uid)),
        Err(message) => {
            let message = bounded(&message);
            tracing::warn!(uid = %judgeable.uid, %message, "admission request failed; the failure policy applies");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                (StatusCode::INTERNAL_SERVER_ERROR, message).into_response(),
            )
        }
    }
}

/// Every text that can carry request content (messages, causes, warnings, logs) is cut here.
fn bounded(text: &str) -> String {
    truncate_for_status(text)
}

fn ok(value: &Value) -> (StatusCode, Response) {
    (StatusCode::OK, axum::Json(value).into_response())
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
                "status": {"status": "Failure", "code": 400, "reason": "BadRequest", "message": bounded(message)}
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
                        .map(|e| json!({"reason": "FieldValueInvalid", "field": bounded(&e.field), "message": bounded(&e.message)}))
                        .collect();
                    json!({
                        "uid": uid, "allowed": false,
                        "status": {
                            "status": "Failure", "code": 422, "reason": "Invalid",
                            "message": bounded(&format!("Shoot {name:?} is invalid for kata: {message}")),
                            "details": {"group": "core.gardener.cloud", "kind": "Shoot", "name": name, "causes": causes}
                        }
                    })
                };
                if !verdict.warnings.is_empty() {
                    let warnings: Vec<String> = verdict.warnings.iter().map(|w| bounded(w)).collect();
                    r["warnings"] = json!(warnings);
                }
                r
            }
        };
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
    }
}

async fn decide(state: &AdmissionState, j: &Judgeable) -> Result<Answer, String> {
    let (shoot, namespace) = (&j.shoot, &j.namespace);
    let catalog = if validate::needs_machine_types(shoot, &state.rules) {
        match &j.profile {
            Some(reference) if !is_dns_subdomain(reference.name()) || !is_dns_subdomain(namespace) => {
                return Ok(Answer::Malformed(format!(
                    "the Shoot's cloud profile {:?} in namespace {:?} is not a valid object name",
                    reference.name(),
                    namespace
                )));
            }
            Some(reference) => state
                .profiles
                .machine_types(namespace, reference)
                .await
                .map_err(|e| format!("reading the Shoot's {reference:?}: {e}"))?,
            None => None,
        }
    } else {
        None
    };
    let verdict = validate::validate_shoot(shoot, j.old.as_ref(), &state.rules, catalog.as_ref());
    let name = shoot.metadata.name.clone();
    if verdict.errors.is_empty() {
        tracing::debug!(%namespace, %name, warnings = verdict.warnings.len(), "kata Shoot allowed");
    } else {
        let errors: Vec<String> = verdict.errors.iter().map(|e| bounded(&e.to_string())).collect();
        tracing::info!(%namespace, %name, ?errors, "kata Shoot denied");
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
        let (status, response) = review(state, Bytes::copy_from_slice(body)).await;
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
            let (status, _) = review(&state, Bytes::from(plain.clone())).await;
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
                "spec.provider.workers[0].cri.containerRuntimes[0].providerConfig.debug",
                "spec.provider.workers[0].machine.type"
            ]
        );
        assert!(r["status"]["message"].as_str().unwrap().starts_with("Shoot \"s1\" is invalid for kata: spec.provider.workers[0].cri.containerRuntimes[0].providerConfig.debug: invalid type: string \"yes\", expected a boolean"), "{r}");
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
            ProfileRef::of(&json!({"spec": {"cloudProfileName": "aws"}}).to_string()),
            Some(ProfileRef::CloudProfile("aws".into()))
        );
        assert_eq!(
            ProfileRef::of(
                &json!({"spec": {"cloudProfile": {"kind": "NamespacedCloudProfile", "name": "x"}, "cloudProfileName": "aws"}}).to_string()
            ),
            Some(ProfileRef::NamespacedCloudProfile("x".into()))
        );
        assert_eq!(ProfileRef::of(&json!({"spec": {}}).to_string()), None);
    }

    #[test]
    fn only_dns_subdomains_name_profiles() {
        for ok in ["aws", "local-1", "a.b-c.d", &"x".repeat(253)] {
            assert!(is_dns_subdomain(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a/b",
            "a?watch=true",
            "a#b",
            "..",
            "-a",
            "a-",
            "a%2Fb",
            &"x".repeat(254),
        ] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_profile_name_that_is_no_object_name_is_refused_without_a_read() {
        let (state, reads) = state(false);
        let mut s = shoot("metal", json!([{"type": "kata"}]));
        s["spec"]["cloudProfile"]["name"] = json!("aws/../../namespaces?x=");
        let (status, v) = answer(&state, &body("CREATE", s, None)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(reads.load(Ordering::SeqCst), 0, "no request path is built from it");
        assert_eq!(v["response"]["allowed"], false);
        assert!(
            v["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("is not a valid object name"),
            "{v}"
        );
    }

    #[tokio::test]
    async fn long_values_are_never_echoed_whole() {
        let (state, _) = state(false);
        let long = "v".repeat(100_000);
        let bad = json!([{"type": "kata", "providerConfig": {"apiVersion": "kata.runtime.extensions.config.gardener.cloud/v1alpha1", "kind": "KataConfiguration", "hypervisors": [long.clone()]}}]);
        let request = body("CREATE", shoot("metal", bad), None);
        let (status, v) = answer(&state, &request).await;
        assert_eq!(status, StatusCode::OK);
        let response = v.to_string();
        assert!(
            response.len() < 8 << 10,
            "{} bytes answered for {} sent",
            response.len(),
            request.len()
        );
        assert!(
            v["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .ends_with("(truncated)")
        );
    }

    #[tokio::test]
    async fn a_too_deeply_nested_shoot_is_denied_with_the_reason() {
        let (state, _) = state(false);
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        let body = format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u-deep","operation":"CREATE","resource":{{"group":"core.gardener.cloud","version":"v1beta1","resource":"shoots"}},"object":{{"spec":{{"provider":{{"type":"aws","workers":[{{"name":"w","cri":{{"name":"containerd","containerRuntimes":[{{"type":"kata","providerConfig":{{"x":{deep}}}}}]}}}}]}}}}}}}}}}"#
        );
        let (status, v) = answer(&state, body.as_bytes()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "an admission answer, not a bare HTTP error: {v}"
        );
        assert_eq!(v["response"]["uid"], "u-deep");
        assert_eq!(v["response"]["allowed"], false);
        let message = v["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains("nested too deeply"), "{message}");
    }
}
