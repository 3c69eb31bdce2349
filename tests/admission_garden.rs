//! The garden admission end to end, behind a real gardener-apiserver: Projects, CloudProfiles,
//! CredentialsBindings and Shoots are real API objects that pass Gardener's own admission plugins
//! (defaults on), the admission server registers its ValidatingWebhookConfiguration with the
//! garden's kube-apiserver, and gardener-apiserver's ValidatingAdmissionWebhook plugin calls it.
//!
//! One garden and one admission server per test binary; every test uses its own project.

mod garden_fixtures;

use garden_fixtures::*;
use gardener_extension_runtime_kata::admission::validate::Rules;
use gardener_extension_runtime_kata::admission::{self, AdmissionOptions, registration};
use gardener_extension_runtime_kata::kata::requirements::Requirements;
use gardener_extension_runtime_kata::runtime::metrics::{Metrics, WebhookCodeLabels};
use gardener_extension_runtime_kata::testenv::GardenEnv;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The admission server, running for the whole test binary on its own thread, and the metrics
/// that count the requests it got.
struct Admission {
    metrics: Arc<Metrics>,
}

impl Admission {
    fn requests(&self) -> u64 {
        ["200", "400", "500"]
            .iter()
            .map(|code| {
                self.metrics
                    .webhook_requests_total
                    .get_or_create(&WebhookCodeLabels {
                        webhook: admission::PATH.into(),
                        code: (*code).into(),
                    })
                    .get()
            })
            .sum()
    }
}

/// The landscape's fixtures (once) and the admission server.
fn admission() -> &'static Admission {
    static SHARED: OnceLock<Admission> = OnceLock::new();
    SHARED.get_or_init(|| {
        let garden = GardenEnv::shared();
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(Metrics::new(&mut registry));
        let (tx, rx) = std::sync::mpsc::channel();
        let server_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("admission".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let client = garden.kube().client().await;
                    landscape(&client).await;
                    let opts = AdmissionOptions {
                        owner_namespace: Some("extension-admission-runtime-kata".into()),
                        rules: Rules {
                            requirements: Requirements {
                                supported_providers: vec!["local".into()],
                                supported_machine_images: vec!["gardenlinux".into()],
                            },
                            machine_type_capability: Some("nestedVirtualization=supported".parse().unwrap()),
                        },
                        ..Default::default()
                    };
                    let mut opts = opts;
                    opts.webhook.namespace = "garden".into();
                    opts.webhook.bind_address = "127.0.0.1".parse().unwrap();
                    opts.webhook.server_port = 0;
                    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
                    let server = admission::run(
                        client.clone(),
                        client,
                        opts,
                        Some(server_metrics),
                        Some(ready_tx),
                        None,
                        std::future::pending(),
                    );
                    tokio::pin!(server);
                    tokio::select! {
                        r = &mut server => panic!("admission server ended: {r:?}"),
                        addr = ready_rx => { tx.send(addr.unwrap()).unwrap(); }
                    }
                    if let Err(e) = server.await {
                        panic!("admission server failed: {e}");
                    }
                });
            })
            .unwrap();
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("admission server ready");
        eprintln!("admission server on {addr}");
        Admission { metrics }
    })
}

/// The request counter is shared by all tests of this binary: the test that counts runs alone
/// (write), the others side by side (read).
static COUNTING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

#[allow(dead_code)]
enum Turn {
    Shared(tokio::sync::RwLockReadGuard<'static, ()>),
    Alone(tokio::sync::RwLockWriteGuard<'static, ()>),
}

async fn setup_turn(name: &str, alone: bool) -> (kube::Client, String, &'static Admission, Turn) {
    let turn = if alone {
        Turn::Alone(COUNTING.write().await)
    } else {
        Turn::Shared(COUNTING.read().await)
    };
    let admission = admission();
    let client = GardenEnv::shared().kube().client().await;
    let ns = project(&client, name).await;
    wait_webhook_active(&client, &ns).await;
    (client, ns, admission, turn)
}

async fn setup(name: &str) -> (kube::Client, String, Turn) {
    let (client, ns, _, turn) = setup_turn(name, false).await;
    (client, ns, turn)
}

#[tokio::test]
async fn a_valid_kata_shoot_is_created() {
    let (client, ns, _turn) = setup("valid").await;
    let created = create(
        &shoots(&client, &ns),
        shoot(
            &ns,
            "valid",
            json!([
                pool(
                    "kata",
                    "metal",
                    "gardenlinux",
                    kata(json!({"hypervisors": ["qemu", "clh"], "defaultHypervisor": "clh"}))
                ),
                pool("plain", "small", "ubuntu", json!([]))
            ]),
        ),
    )
    .await
    .unwrap();
    // gardener-apiserver's ExtensionLabels plugin labelled it: that is what our object selector matches
    assert_eq!(
        created.metadata.labels.as_ref().unwrap()[registration::SHOOT_KATA_LABEL],
        "true"
    );
}

#[tokio::test]
async fn invalid_kata_shoots_are_rejected_with_the_field_path() {
    let (client, ns, _turn) = setup("invalid").await;
    let api = shoots(&client, &ns);
    let cases: [(&str, Value, &str, &str); 5] = [
        (
            "hypervisor",
            json!([
                pool("plain", "small", "gardenlinux", json!([])),
                pool(
                    "kata",
                    "metal",
                    "gardenlinux",
                    kata(json!({"hypervisors": ["qemu", "vmware"]}))
                )
            ]),
            "spec.provider.workers[1].cri.containerRuntimes[0].providerConfig.hypervisors[1]",
            "unknown hypervisor \"vmware\", supported: [qemu, qemu-runtime-rs, clh, clh-runtime-rs, fc, dragonball]",
        ),
        (
            "unknown-field",
            json!([pool(
                "kata",
                "metal",
                "gardenlinux",
                kata(json!({"hypervisor": "qemu"}))
            )]),
            "spec.provider.workers[0].cri.containerRuntimes[0].providerConfig",
            "unknown field `hypervisor`, expected one of `apiVersion`, `kind`, `hypervisors`, `defaultHypervisor`, `debug`, `allowedHypervisorAnnotations`, `devmapper`",
        ),
        (
            "default",
            json!([pool(
                "kata",
                "metal",
                "gardenlinux",
                kata(json!({"hypervisors": ["qemu"], "defaultHypervisor": "fc"}))
            )]),
            "spec.provider.workers[0].cri.containerRuntimes[0].providerConfig.defaultHypervisor",
            "\"fc\" is not one of the enabled hypervisors [qemu]",
        ),
        (
            "machine-type",
            json!([pool("kata", "small", "gardenlinux", kata(json!({})))]),
            "spec.provider.workers[0].machine.type",
            "machine type \"small\" cannot run kata: it does not have the capability nestedVirtualization=supported in CloudProfile \"kata-it\" (machine types that have it: metal)",
        ),
        (
            "image",
            json!([pool("kata", "metal", "ubuntu", kata(json!({})))]),
            "spec.provider.workers[0].machine.image.name",
            "kata is not enabled for machine image \"ubuntu\" of pool \"kata\" on this landscape (enabled: gardenlinux)",
        ),
    ];
    for (name, workers, field, message) in cases {
        let status = denial(create(&api, shoot(&ns, name, workers)).await);
        assert_eq!(status.code, 422, "{name}: {status:?}");
        assert_eq!(
            status.message,
            format!("{DENIED}: Shoot {name:?} is invalid for kata: {field}: {message}"),
            "{name}"
        );
        assert_eq!(status.reason, "Invalid", "{name}");
        assert!(
            api.get_opt(name).await.unwrap().is_none(),
            "{name}: a rejected Shoot must not be stored"
        );
    }
    // several violations are reported together, each with its path
    let status = denial(
        create(
            &api,
            shoot(
                &ns,
                "many",
                json!([pool("kata", "small", "ubuntu", kata(json!({"debug": "yes"})))]),
            ),
        )
        .await,
    );
    let fields: Vec<_> = status
        .message
        .split("; ")
        .map(|e| e.rsplit_once(" is invalid for kata: ").map_or(e, |(_, f)| f))
        .map(|e| e.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.provider.workers[0].cri.containerRuntimes[0].providerConfig.debug",
            "spec.provider.workers[0].machine.image.name",
            "spec.provider.workers[0].machine.type"
        ],
        "{}",
        status.message
    );
}

#[tokio::test]
async fn shoots_without_kata_never_reach_the_webhook() {
    let (client, ns, admission, _turn) = setup_turn("nokata", true).await;
    let before = admission.requests();
    create(
        &shoots(&client, &ns),
        shoot(&ns, "plain", json!([pool("plain", "small", "ubuntu", json!([]))])),
    )
    .await
    .unwrap();
    // and a kata Shoot's metadata-only updates (labels, annotations, finalizers) skip it too
    let api = shoots(&client, &ns);
    create(
        &api,
        shoot(
            &ns,
            "kata",
            json!([pool("kata", "metal", "gardenlinux", kata(json!({})))]),
        ),
    )
    .await
    .unwrap();
    let after_create = admission.requests();
    assert_eq!(
        after_create,
        before + 1,
        "only the kata Shoot's CREATE was sent to the webhook"
    );
    api.patch(
        "kata",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"labels": {"team": "a"}, "annotations": {"gardener.cloud/operation": "reconcile"}}}),
        ),
    )
    .await
    .unwrap();
    api.patch(
        "plain",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"provider": {"workers": [pool("plain", "small", "ubuntu", json!([]))]}}})),
    )
    .await
    .unwrap();
    assert_eq!(
        admission.requests(),
        after_create,
        "no request for metadata updates or Shoots without kata"
    );
}

/// PATCHes through the raw client, returning the status and the `Warning` headers.
async fn patch_with_warnings(client: &kube::Client, ns: &str, name: &str, patch: &Value) -> (u16, Vec<String>, String) {
    let req = http::Request::patch(format!(
        "/apis/core.gardener.cloud/v1beta1/namespaces/{ns}/shoots/{name}"
    ))
    .header("Content-Type", "application/merge-patch+json")
    .body(serde_json::to_vec(patch).unwrap())
    .unwrap();
    let resp = client.send(req.map(kube::client::Body::from)).await.unwrap();
    let status = resp.status().as_u16();
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .collect();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, warnings, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_rule_that_changed_later_warns_on_unrelated_updates_and_judges_related_ones() {
    let (client, ns, _turn) = setup("later").await;
    // a second profile, so that changing it does not disturb the other tests
    let profiles = core(&client, "CloudProfile", "cloudprofiles", None);
    let mut spec = profiles.get(PROFILE).await.unwrap().data["spec"].clone();
    let profile = "kata-later";
    create(
        &profiles,
        json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "CloudProfile", "metadata": {"name": profile}, "spec": spec.clone()}),
    )
    .await
    .unwrap();
    let mut s = shoot(
        &ns,
        "existing",
        json!([pool("kata", "metal", "gardenlinux", kata(json!({})))]),
    );
    s["spec"]["cloudProfile"]["name"] = json!(profile);
    create(&shoots(&client, &ns), s).await.unwrap();
    // the operator decides later that "metal" cannot run VMs after all
    spec["machineTypes"][0]["capabilities"]["nestedVirtualization"] = json!(["unsupported"]);
    profiles
        .patch(
            profile,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"machineTypes": spec["machineTypes"]}})),
        )
        .await
        .unwrap();
    // an unrelated spec change of the existing kata pool: allowed, with a warning
    let mut bigger = pool("kata", "metal", "gardenlinux", kata(json!({})));
    bigger["maximum"] = json!(3);
    let (status, warnings, body) = patch_with_warnings(
        &client,
        &ns,
        "existing",
        &json!({"spec": {"provider": {"workers": [bigger]}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("spec.provider.workers[0].machine.type: machine type \\\"metal\\\" cannot run kata")
            || warnings[0].contains("spec.provider.workers[0].machine.type: machine type \"metal\" cannot run kata"),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("not enforced"), "{warnings:?}");
    // a change the rule reads (the kata pool's providerConfig is unrelated, its machine type is
    // not): moving to another unmarked type is rejected
    let (status, _, body) = patch_with_warnings(
        &client,
        &ns,
        "existing",
        &json!({"spec": {"provider": {"workers": [pool("kata", "small", "gardenlinux", kata(json!({})))]}}}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("spec.provider.workers[0].machine.type: machine type \\\"small\\\" cannot run kata"),
        "{body}"
    );
}

/// A Shoot on a NamespacedCloudProfile: the machine types come from its merged
/// `status.cloudProfileSpec`, which gardener-controller-manager writes in a landscape; here the
/// test writes it (a stand-in: no controller manager runs), as the parent's spec plus the
/// namespaced machine type.
#[tokio::test]
async fn machine_types_of_a_namespaced_cloudprofile_are_judged_by_its_merged_spec() {
    let (client, ns, _turn) = setup("namespaced").await;
    let parent = core(&client, "CloudProfile", "cloudprofiles", None)
        .get(PROFILE)
        .await
        .unwrap();
    let custom_type = json!({"name": "custom-metal", "cpu": "8", "gpu": "0", "memory": "32Gi", "usable": true,
                              "capabilities": {"nestedVirtualization": ["supported"]}});
    let profiles = core(&client, "NamespacedCloudProfile", "namespacedcloudprofiles", Some(&ns));
    create(
        &profiles,
        json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "NamespacedCloudProfile",
               "metadata": {"name": "custom", "namespace": ns},
               "spec": {"parent": {"kind": "CloudProfile", "name": PROFILE}, "machineTypes": [custom_type]}}),
    )
    .await
    .unwrap();
    let mut merged = parent.data["spec"].clone();
    merged["machineTypes"].as_array_mut().unwrap().push(custom_type);
    profiles
        .patch_status(
            "custom",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"cloudProfileSpec": merged}})),
        )
        .await
        .unwrap();
    let on_custom = |name: &str, machine: &str| {
        let mut s = shoot(
            &ns,
            name,
            json!([pool("kata", machine, "gardenlinux", kata(json!({})))]),
        );
        s["spec"]["cloudProfile"] = json!({"kind": "NamespacedCloudProfile", "name": "custom"});
        s
    };
    create(&shoots(&client, &ns), on_custom("custom", "custom-metal"))
        .await
        .unwrap();
    let status = denial(create(&shoots(&client, &ns), on_custom("small", "small")).await);
    assert_eq!(
        status.message,
        format!(
            "{DENIED}: Shoot \"small\" is invalid for kata: spec.provider.workers[0].machine.type: machine type \"small\" cannot run kata: it does not have the capability nestedVirtualization=supported in NamespacedCloudProfile \"{ns}/custom\" (machine types that have it: custom-metal, metal)"
        )
    );
}

/// The shoot-wide rules are the seed's own (`kata::shootwide`): two pools that disagree on the
/// `kata` RuntimeClass are rejected at submission with the seed's message at each pool, instead of
/// failing every reconcile in the seed later.
#[tokio::test]
async fn pools_that_disagree_on_the_default_hypervisor_are_rejected_at_each_pool() {
    let (client, ns, _turn) = setup("shoot-wide").await;
    let api = shoots(&client, &ns);
    let workers = json!([
        pool(
            "b",
            "metal",
            "gardenlinux",
            kata(json!({"hypervisors": ["qemu", "clh"], "defaultHypervisor": "clh"}))
        ),
        pool("plain", "small", "gardenlinux", json!([])),
        pool(
            "a",
            "metal",
            "gardenlinux",
            kata(json!({"hypervisors": ["qemu"], "defaultHypervisor": "qemu"}))
        )
    ]);
    let status = denial(create(&api, shoot(&ns, "shoot-wide", workers)).await);
    let seed = "pools \"a\" and \"b\" set different defaultHypervisor values (qemu and clh), but the RuntimeClass \"kata\" can point to one handler only";
    assert_eq!(status.code, 422, "{status:?}");
    assert_eq!(
        status.message,
        format!(
            "{DENIED}: Shoot \"shoot-wide\" is invalid for kata: \
             spec.provider.workers[0].cri.containerRuntimes[0].providerConfig.defaultHypervisor: {seed}; \
             spec.provider.workers[2].cri.containerRuntimes[0].providerConfig.defaultHypervisor: {seed}"
        )
    );
    assert!(api.get_opt("shoot-wide").await.unwrap().is_none());
    // agreeing pools pass
    let workers = json!([
        pool(
            "b",
            "metal",
            "gardenlinux",
            kata(json!({"hypervisors": ["qemu", "clh"], "defaultHypervisor": "qemu"}))
        ),
        pool(
            "a",
            "metal",
            "gardenlinux",
            kata(json!({"hypervisors": ["qemu"], "defaultHypervisor": "qemu"}))
        )
    ]);
    create(&api, shoot(&ns, "shoot-wide", workers)).await.unwrap();
}
