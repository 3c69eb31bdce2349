//! The seed chart as gardenlet would render it: lint, render with injected values, server-side
//! dry-run of every object, and the extension running under exactly the chart's RBAC.

mod common;

use clap::Parser;
use common::*;
use gardener_extension_runtime_kata::api::containerruntime::ContainerRuntime;
use gardener_extension_runtime_kata::api::osc::OperatingSystemConfig;
use gardener_extension_runtime_kata::app;
use gardener_extension_runtime_kata::cli::Cli;
use gardener_extension_runtime_kata::kata::requirements::Requirements;
use gardener_extension_runtime_kata::runtime::shutdown::Shutdown;
use gardener_extension_runtime_kata::testenv::{Binaries, TestEnv};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, GroupVersionKind, ObjectMeta, PostParams};
use kube::discovery::{Scope, pinned_kind};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/gardener-extension-runtime-kata");

/// helm's stdout and stderr (warnings); fails on a non-zero exit.
fn helm_output(args: &[&str]) -> (String, String) {
    let bins = Binaries::locate().expect("test binaries");
    let out = Command::new(&bins.helm).args(args).output().expect("running helm");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "helm {args:?}: {stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

fn helm(args: &[&str]) -> String {
    helm_output(args).0
}

/// `helm template` with the values gardenlet injects, as objects.
fn render(namespace: &str, extra: &[&str]) -> Vec<DynamicObject> {
    render_with_stderr(namespace, extra).0
}

/// `render`, and what helm printed to stderr.
fn render_with_stderr(namespace: &str, extra: &[&str]) -> (Vec<DynamicObject>, String) {
    let mut args = vec![
        "template",
        "gardener-extension-runtime-kata",
        CHART,
        "--namespace",
        namespace,
        "--set",
        "gardener.version=v1.149.3",
        "--set",
        "gardener.garden.clusterIdentity=garden",
        "--set",
        "gardener.seed.name=seed-1",
        "--set",
        "gardener.seed.provider=aws",
        "--set",
        "gardener.seed.region=eu-west-1",
        "--set-string",
        "gardener.seed.labels.environment=test",
    ];
    args.extend_from_slice(extra);
    let (stdout, stderr) = helm_output(&args);
    let objects = stdout
        .split("\n---")
        .filter(|doc| doc.lines().any(|l| l.starts_with("kind:")))
        .map(|doc| serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{e}: {doc}")))
        .collect();
    (objects, stderr)
}

fn typed<T: serde::de::DeserializeOwned>(objs: &[DynamicObject], kind: &str) -> Vec<T> {
    objs.iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == kind))
        .map(|o| serde_json::from_value(serde_json::to_value(o).unwrap()).unwrap())
        .collect()
}

async fn api_for(client: &Client, obj: &DynamicObject) -> Api<DynamicObject> {
    let tm = obj.types.clone().unwrap();
    let (group, version) = tm.api_version.rsplit_once('/').unwrap_or(("", &tm.api_version));
    let (ar, caps) = pinned_kind(client, &GroupVersionKind::gvk(group, version, &tm.kind))
        .await
        .unwrap_or_else(|e| panic!("{} unknown to the apiserver: {e}", tm.kind));
    match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), obj.metadata.namespace.as_deref().unwrap(), &ar),
        Scope::Cluster => Api::all_with(client.clone(), &ar),
    }
}

/// A minimal VerticalPodAutoscaler CRD (a bare apiserver has no VPA).
async fn install_vpa_crd(client: &Client) {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "verticalpodautoscalers.autoscaling.k8s.io",
                     "annotations": {"api-approved.kubernetes.io": "https://github.com/kubernetes/kubernetes/pull/63797"}},
        "spec": {"group": "autoscaling.k8s.io", "scope": "Namespaced",
                 "names": {"plural": "verticalpodautoscalers", "singular": "verticalpodautoscaler", "kind": "VerticalPodAutoscaler"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    match api.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("{e}"),
    }
    let cond = kube::runtime::conditions::is_crd_established();
    tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(api, "verticalpodautoscalers.autoscaling.k8s.io", cond),
    )
    .await
    .unwrap()
    .unwrap();
}

#[test]
fn chart_lints() {
    let out = helm(&["lint", CHART, "--set", "gardener.version=v1.149.3"]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

/// The image vector overwrite as a map (as other Gardener extensions take it) or as text: both
/// end up as the same file, which the extension's own reader accepts, and helm merges either
/// into the chart's default without a warning (a string default made the map "Not a table").
#[test]
fn image_vector_overwrite_as_map_or_text() {
    use gardener_extension_runtime_kata::kata::imagevector::Images;
    use k8s_openapi::api::core::v1::ConfigMap;
    let dir = tempfile::tempdir().unwrap();
    let as_map = dir.path().join("map.yaml");
    std::fs::write(
        &as_map,
        "imageVectorOverwrite:\n  images:\n  - name: kata-deploy\n    ref: registry.internal/kata-deploy:4.1.0\n  - name: runtime-kata-node-labeler\n    architectures: [arm64]\n    ref: registry.internal/runtime-kata:v0.1.0-arm64\n",
    )
    .unwrap();
    let as_text = dir.path().join("text.yaml");
    std::fs::write(
        &as_text,
        "imageVectorOverwrite: |\n  images:\n  - name: kata-deploy\n    ref: registry.internal/kata-deploy:4.1.0\n  - name: runtime-kata-node-labeler\n    architectures: [arm64]\n    ref: registry.internal/runtime-kata:v0.1.0-arm64\n",
    )
    .unwrap();
    for values in [&as_map, &as_text] {
        let (objs, stderr) = render_with_stderr("ext", &["--values", values.to_str().unwrap()]);
        assert!(
            !stderr.contains("Not a table") && !stderr.to_lowercase().contains("warning"),
            "{values:?}: {stderr}"
        );
        let cm: ConfigMap = typed(&objs, "ConfigMap").remove(0);
        let file = &cm.data.unwrap()["images_overwrite.yaml"];
        let images = Images::from_sources("v0.1.0", Some(("chart", file))).unwrap_or_else(|e| panic!("{e}: {file}"));
        let amd = images.for_pool(Some("1.33.4"), "amd64").unwrap();
        let arm = images.for_pool(Some("1.33.4"), "arm64").unwrap();
        assert_eq!(amd.kata_deploy, "registry.internal/kata-deploy:4.1.0", "{values:?}");
        assert_eq!(
            arm.node_labeler, "registry.internal/runtime-kata:v0.1.0-arm64",
            "{values:?}"
        );
        let env = deployment_env(&objs);
        assert_eq!(
            env.get("IMAGEVECTOR_OVERWRITE").map(String::as_str),
            Some("/charts_overwrite/images_overwrite.yaml")
        );
    }
    // without an overwrite: no ConfigMap, no variable, and no warning either
    let (objs, stderr) = render_with_stderr("ext", &[]);
    assert!(stderr.is_empty(), "{stderr}");
    assert!(typed::<ConfigMap>(&objs, "ConfigMap").is_empty());
    assert!(!deployment_env(&objs).contains_key("IMAGEVECTOR_OVERWRITE"));
}

/// The extension container's plain environment variables.
fn deployment_env(objs: &[DynamicObject]) -> std::collections::BTreeMap<String, String> {
    let deploy: Deployment = typed(objs, "Deployment").remove(0);
    deploy.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect()
}

/// The node labeler in shoots is the image the chart deploys, for every architecture: the chart
/// passes its `image` value to the binary, so one registry (and tag) decides both.
#[test]
fn the_node_labeler_is_the_charts_image() {
    use gardener_extension_runtime_kata::kata::imagevector::{Images, OWN_IMAGE_ENV};
    let objs = render(
        "ext",
        &[
            "--set",
            "image.repository=registry.example/team/gardener/extensions/runtime-kata",
            "--set",
            "image.tag=v9.8.7",
        ],
    );
    let env = deployment_env(&objs);
    let own = &env[OWN_IMAGE_ENV];
    let deploy: Deployment = typed(&objs, "Deployment").remove(0);
    let image = deploy.spec.unwrap().template.spec.unwrap().containers[0].image.clone();
    assert_eq!(Some(own), image.as_ref());
    assert_eq!(own, "registry.example/team/gardener/extensions/runtime-kata:v9.8.7");
    let images = Images::from_parts("v0.1.0", Some(own), None).unwrap();
    for arch in ["amd64", "arm64"] {
        assert_eq!(
            &images.for_pool(Some("1.33.4"), arch).unwrap().node_labeler,
            own,
            "{arch}"
        );
    }
}

#[tokio::test]
async fn rendered_chart_passes_a_server_side_dry_run() {
    let env = TestEnv::shared();
    let client = env.client().await;
    install_vpa_crd(&client).await;
    let ns = env.namespace("ext-dryrun").await;
    let objs = render(&ns, &["--set", "imageVectorOverwrite=images: []"]);
    let kinds: Vec<String> = objs.iter().map(|o| o.types.clone().unwrap().kind).collect();
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "VerticalPodAutoscaler",
        "ConfigMap",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} missing in {kinds:?}");
    }
    for obj in &objs {
        api_for(&client, obj)
            .await
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                obj,
            )
            .await
            .unwrap_or_else(|e| panic!("{} {} rejected: {e}", obj.types.clone().unwrap().kind, obj.name_any()));
    }
    let deploy: Deployment = typed(&objs, "Deployment").remove(0);
    // the registration asks for Pod Security `restricted`: the pod passes it for real
    let restricted = env.namespace("ext-restricted").await;
    let label = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(
            &restricted,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&label),
        )
        .await
        .unwrap();
    let mut template = deploy.spec.clone().unwrap().template;
    // the seed's PriorityClass does not exist in the test apiserver; it plays no part in Pod Security
    template.spec.as_mut().unwrap().priority_class_name = None;
    let pod = k8s_openapi::api::core::v1::Pod {
        metadata: ObjectMeta {
            name: Some("restricted-probe".into()),
            ..Default::default()
        },
        spec: template.spec.clone(),
        ..Default::default()
    };
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &restricted)
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &pod,
        )
        .await
        .expect("the extension's pod passes Pod Security restricted");
    let pod = deploy.spec.unwrap().template;
    let labels = pod.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["networking.gardener.cloud/to-runtime-apiserver"], "allowed");
    // the health checks read the shoots' nodes
    assert_eq!(
        labels["networking.resources.gardener.cloud/to-all-shoots-kube-apiserver-tcp-443"],
        "allowed"
    );
    let spec = pod.spec.unwrap();
    assert_eq!(spec.priority_class_name.as_deref(), Some("gardener-system-900"));
    assert!(spec.affinity.is_some(), "anti-affinity with 2 replicas");
    let c = &spec.containers[0];
    let args = c.args.clone().unwrap();
    assert!(args.contains(&"--gardener-version=v1.149.3".to_string()), "{args:?}");
    assert!(
        args.contains(&"--webhook-failure-policy=ignore".to_string()),
        "{args:?}"
    );
    let sc = c.security_context.clone().unwrap();
    assert_eq!(
        (sc.allow_privilege_escalation, sc.read_only_root_filesystem),
        (Some(false), Some(true))
    );
    assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
    // the binary accepts exactly these flags
    let mut argv = vec!["gardener-extension-runtime-kata".to_string()];
    argv.extend(args);
    Cli::try_parse_from(argv).expect("chart args parse");
    // every ClusterRole rule names its verbs; no wildcards
    for role in typed::<ClusterRole>(&objs, "ClusterRole") {
        for rule in role.rules.unwrap() {
            assert!(!rule.verbs.contains(&"*".to_string()));
            assert!(!rule.resources.unwrap_or_default().contains(&"*".to_string()));
        }
    }
}

/// Applies the chart's ServiceAccount, Roles, bindings and admission policy for real.
async fn apply_rbac(client: &Client, objs: &[DynamicObject]) {
    for obj in objs {
        let kind = obj.types.clone().unwrap().kind;
        if [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
        .contains(&kind.as_str())
        {
            api_for(client, obj)
                .await
                .create(&PostParams::default(), obj)
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn the_extension_works_under_the_charts_rbac() {
    let env = TestEnv::shared();
    let admin = env.client().await;
    let ext_ns = env.namespace("ext-rbac").await;
    apply_rbac(&admin, &render(&ext_ns, &[])).await;
    let kubeconfig = env
        .service_account_kubeconfig(&ext_ns, "gardener-extension-runtime-kata")
        .await
        .unwrap();
    let shoot_ns = env.namespace("rbac-shoot").await;
    let fc = kata_config(json!({"hypervisors": ["fc"]}));
    create_cluster(
        &admin,
        &shoot_ns,
        shoot("local", &[pool("fc", Some(fc.clone()))], false),
    )
    .await;

    let (kc, le, watch) = (
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--leader-election-namespace={ext_ns}"),
        format!("--watch-namespace={shoot_ns}"),
    );
    let args = Cli::parse_from([
        "x",
        &kc,
        &le,
        &watch,
        "--heartbeat-renew-interval-seconds=1",
        "--webhook-config-mode=url",
        "--webhook-config-server-host=127.0.0.1",
        "--webhook-config-server-port=0",
        "--metrics-bind-address=127.0.0.1:0",
        "--health-bind-address=127.0.0.1:0",
        "--health-check-sync-period-seconds=1",
    ])
    .run;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let shutdown = Shutdown::new();
    let extension = tokio::spawn(app::run(args, shutdown.clone()));

    // controller: create, ready, delete
    create_cr(&admin, &shoot_ns, "fc", Some(fc)).await;
    wait_ready(&admin, &shoot_ns, "kata-fc").await;
    // health checks: the shoot access secrets (named in the rules) are read and the shoot's nodes
    // listed. Only the external `gardener` is there, so this takes both rules: the watch of
    // `gardener-internal` must sync before any round, and Gardener's fallback GETs `gardener`.
    // Without either, the pool would say Unknown (or nothing: the watch never syncs).
    env.grant_shoot_access_as(&admin, &shoot_ns, "gardener").await.unwrap();
    eventually(
        Duration::from_secs(30),
        "a health report read with the shoot",
        || async {
            let cr = Api::<ContainerRuntime>::namespaced(admin.clone(), &shoot_ns)
                .get("kata-fc")
                .await
                .map_err(|e| e.to_string())?;
            let c = cr
                .status
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "SystemComponentsHealthy"));
            match c {
                // nothing applies the ManagedResources here
                Some(c) if c.status == "Progressing" && c.message.contains("not applied yet") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // webhook: registered and mutating through the apiserver
    let webhooks: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
        Api::all(admin.clone());
    eventually(Duration::from_secs(30), "webhook registered", || async {
        webhooks
            .get_opt("gardener-extension-runtime-kata")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("not yet".to_string())
    })
    .await;
    let osc: OperatingSystemConfig = serde_json::from_value(json!({
        "apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "OperatingSystemConfig",
        "metadata": {"name": "osc-fc", "labels": {"worker.gardener.cloud/pool": "fc"}},
        "spec": {"type": "gardenlinux", "purpose": "reconcile",
                 "criConfig": {"name": "containerd", "containerd": {"sandboxImage": "pause"}}}
    }))
    .unwrap();
    let stored = eventually(Duration::from_secs(30), "mutated OSC", || async {
        let api: Api<OperatingSystemConfig> = Api::namespaced(admin.clone(), &shoot_ns);
        let _ = api.delete("osc-fc", &DeleteParams::default()).await;
        let o = api
            .create(&PostParams::default(), &osc)
            .await
            .map_err(|e| e.to_string())?;
        if o.spec.units.iter().any(|u| u.name == "kata-devmapper.service") {
            Ok(o)
        } else {
            Err("not mutated".into())
        }
    })
    .await;
    assert!(stored.spec.files.iter().any(|f| f.path.contains("devmapper")));
    // heartbeat and leader lease in the extension namespace
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &ext_ns);
    assert!(leases.get_opt("gardener-extension-heartbeat").await.unwrap().is_some());
    assert!(leases.get_opt("runtime-kata-leader-election").await.unwrap().is_some());
    Api::<ContainerRuntime>::namespaced(admin.clone(), &shoot_ns)
        .delete("kata-fc", &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "kata-fc deleted", || async {
        match Api::<ContainerRuntime>::namespaced(admin.clone(), &shoot_ns)
            .get_opt("kata-fc")
            .await
        {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|o| o.map(|c| c.status)))),
        }
    })
    .await;

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(40), extension)
        .await
        .expect("shutdown in time")
        .unwrap()
        .expect("no error under the chart's RBAC (lease release included)");

    // what RBAC alone would allow, the chart's admission policy refuses: Secrets and
    // ManagedResources of other names, or outside shoot namespaces
    let sa = env
        .service_account_client(&ext_ns, "gardener-extension-runtime-kata")
        .await
        .unwrap();
    let plain_ns = "default";
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let secret = |ns: &str, name: &str| -> (String, k8s_openapi::api::core::v1::Secret) {
        (
            ns.to_string(),
            serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
    };
    let own = secret(&shoot_ns, "managedresource-extension-runtime-kata-0123abcd");
    eventually(Duration::from_secs(30), "the policy in force", || async {
        let (ns, s) = secret(&shoot_ns, "someone-elses");
        match Api::namespaced(sa.clone(), &ns).create(&dry_run, &s).await {
            Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    for (ns, s) in [secret(plain_ns, "managedresource-extension-runtime-kata-0123abcd")] {
        let refused = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(sa.clone(), &ns)
            .create(&dry_run, &s)
            .await;
        assert!(refused.is_err(), "outside shoot namespaces: {refused:?}");
    }
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(sa.clone(), &own.0)
        .create(&dry_run, &own.1)
        .await
        .expect("its own kind of secret in a shoot namespace");
}

#[tokio::test]
async fn a_missing_rule_is_caught() {
    let env = TestEnv::shared();
    let admin = env.client().await;
    let ext_ns = env.namespace("ext-missing").await;
    let objs = render(&ext_ns, &[]);
    // the chart's ClusterRole without the ManagedResource rule, bound to another ServiceAccount
    let mut role: ClusterRole = typed(&objs, "ClusterRole").remove(0);
    role.metadata = kube::api::ObjectMeta {
        name: Some(format!("missing-rule-{ext_ns}")),
        ..Default::default()
    };
    let before = role.rules.as_ref().unwrap().len();
    role.rules.as_mut().unwrap().retain(|r| {
        !r.resources
            .clone()
            .unwrap_or_default()
            .contains(&"managedresources".to_string())
    });
    assert_eq!(role.rules.as_ref().unwrap().len(), before - 1);
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let mut binding: ClusterRoleBinding = typed(&objs, "ClusterRoleBinding").remove(0);
    binding.metadata = role.metadata.clone();
    binding.role_ref.name = role.name_any();
    binding.subjects.as_mut().unwrap()[0].name = "missing-rule".into();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let shoot_ns = env.namespace("missing-shoot").await;
    create_cluster(&admin, &shoot_ns, shoot("local", &[pool("a", None)], false)).await;
    let restricted = env.service_account_client(&ext_ns, "missing-rule").await.unwrap();
    let _c = start_controller(restricted, &shoot_ns, Requirements::default()).await;
    create_cr(&admin, &shoot_ns, "a", None).await;
    let api: Api<ContainerRuntime> = Api::namespaced(admin.clone(), &shoot_ns);
    let err = eventually(Duration::from_secs(30), "a Forbidden error", || async {
        let cr = api.get("kata-a").await.map_err(|e| e.to_string())?;
        cr.status.and_then(|s| s.last_error).ok_or("no error yet".to_string())
    })
    .await;
    assert!(err.description.contains("forbidden"), "{}", err.description);
    assert!(err.description.contains("managedresources"), "{}", err.description);
}
