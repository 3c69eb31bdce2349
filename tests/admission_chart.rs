//! The admission charts as gardener-operator renders them: lint, server-side dry-run of every
//! object, and the `admission` subcommand, started with the rendered Deployment's arguments, working
//! under exactly the charts' RBAC (runtime part: its certificate Secret; application part: the
//! garden side) against a real gardener-apiserver.

mod common;
mod garden_fixtures;

use clap::Parser;
use garden_fixtures::*;
use gardener_extension_runtime_kata::admission;
use gardener_extension_runtime_kata::cli::{Cli, Command};
use gardener_extension_runtime_kata::runtime::shutdown::Shutdown;
use gardener_extension_runtime_kata::testenv::{Binaries, GardenEnv};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::{Scope, pinned_kind};
use serde_json::{Value, json};
use std::process::Command as Process;

const CHARTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/gardener-extension-admission-runtime-kata/charts"
);
/// Where gardener-operator installs admissions, and the names it injects.
const RUNTIME_NS: &str = "garden";
const OWNER_NS: &str = "extension-admission-runtime-kata";
const VIRTUAL_SA: (&str, &str) = ("kube-system", "extension-admission-runtime-kata");

fn helm(args: &[&str]) -> String {
    let bins = Binaries::locate().expect("test binaries");
    let out = Process::new(&bins.helm).args(args).output().expect("running helm");
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `helm template` of one part with the values gardener-operator injects.
fn render(part: &str, extra: &[&str]) -> Vec<DynamicObject> {
    let chart = format!("{CHARTS}/{part}");
    let owner = format!("gardener.virtualCluster.namespace={OWNER_NS}");
    let sa_name = format!("gardener.virtualCluster.serviceAccount.name={}", VIRTUAL_SA.1);
    let sa_ns = format!("gardener.virtualCluster.serviceAccount.namespace={}", VIRTUAL_SA.0);
    let mut args = vec![
        "template",
        "admission-runtime-kata",
        &chart,
        "--namespace",
        RUNTIME_NS,
        "--set",
        "gardener.runtimeCluster.priorityClassName=gardener-garden-system-400",
        "--set",
        &owner,
        "--set",
        &sa_name,
        "--set",
        &sa_ns,
    ];
    args.extend_from_slice(extra);
    helm(&args)
        .split("\n---")
        .filter(|doc| doc.lines().any(|l| l.starts_with("kind:")))
        .map(|doc| serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{e}: {doc}")))
        .collect()
}

fn kinds(objs: &[DynamicObject]) -> Vec<String> {
    objs.iter().map(|o| o.types.clone().unwrap().kind).collect()
}

async fn api_for(client: &kube::Client, obj: &DynamicObject) -> Api<DynamicObject> {
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

async fn namespace(client: &kube::Client, name: &str) {
    match Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn charts_lint_and_render_the_operator_layout() {
    for part in ["runtime", "application"] {
        helm(&["lint", &format!("{CHARTS}/{part}")]);
    }
    let runtime = kinds(&render("runtime", &[]));
    for kind in [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "VerticalPodAutoscaler",
    ] {
        assert!(runtime.contains(&kind.to_string()), "{kind} missing in {runtime:?}");
    }
    assert_eq!(
        kinds(&render("application", &[])),
        ["ClusterRole", "ClusterRoleBinding"]
    );
}

#[tokio::test]
async fn the_admission_works_under_the_charts_rbac() {
    let garden = GardenEnv::shared();
    let admin = garden.kube().client().await;
    for ns in [RUNTIME_NS, OWNER_NS] {
        namespace(&admin, ns).await;
    }
    let runtime = render(
        "runtime",
        &[
            "--set",
            "vpa.enabled=false",
            "--set",
            "kata.machineTypeCapability=nestedVirtualization=supported",
            "--set",
            "kata.supportedMachineImages={gardenlinux}",
        ],
    );
    let application = render("application", &[]);
    // every object passes the apiserver's validation
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    for obj in runtime.iter().chain(&application) {
        api_for(&admin, obj)
            .await
            .create(&dry, obj)
            .await
            .unwrap_or_else(|e| panic!("{:?} {:?}: {e}", obj.types, obj.metadata.name));
    }
    // the RBAC for real, and kubeconfigs of the two ServiceAccounts
    for obj in runtime.iter().chain(&application) {
        let kind = obj.types.clone().unwrap().kind;
        if [
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
        ]
        .contains(&kind.as_str())
        {
            api_for(&admin, obj)
                .await
                .create(&PostParams::default(), obj)
                .await
                .unwrap();
        }
    }
    let runtime_kc = garden
        .kube()
        .service_account_kubeconfig(RUNTIME_NS, admission::NAME)
        .await
        .unwrap();
    let garden_kc = garden
        .kube()
        .service_account_kubeconfig(VIRTUAL_SA.0, VIRTUAL_SA.1)
        .await
        .unwrap();

    // the Deployment's arguments, with only the addresses changed for a process on loopback
    let deployment: Deployment = serde_json::from_value(
        serde_json::to_value(
            runtime
                .iter()
                .find(|o| o.types.as_ref().unwrap().kind == "Deployment")
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let container = &deployment.spec.unwrap().template.spec.unwrap().containers[0];
    let local_only = [
        "--webhook-config-url=",
        "--webhook-config-server-port=",
        "--metrics-bind-address=",
        "--health-bind-address=",
    ];
    let mut args: Vec<String> = vec!["x".into()];
    args.extend(
        container
            .args
            .clone()
            .unwrap()
            .into_iter()
            .filter(|a| !local_only.iter().any(|p| a.starts_with(p))),
    );
    args.extend([
        format!("--kubeconfig={}", runtime_kc.display()),
        format!("--garden-kubeconfig={}", garden_kc.display()),
        "--webhook-config-server-host=127.0.0.1".into(),
        "--webhook-config-server-port=0".into(),
        "--metrics-bind-address=127.0.0.1:0".into(),
        "--health-bind-address=127.0.0.1:0".into(),
        "--log-format=text".into(),
    ]);
    let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{e}: {args:?}"));
    let Some(Command::Admission(admission_args)) = cli.command else {
        panic!("the chart does not run the admission subcommand: {args:?}")
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_test_writer()
        .try_init();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(admission::run_command(
        admission_args,
        cli.run.kubeconfig,
        shutdown.clone(),
    ));

    // a landscape and a project; the webhook is registered (with our CA) and called
    landscape(&admin).await;
    let ns = project(&admin, "rbac").await;
    wait_webhook_active(&admin, &ns).await;
    let vwc = Api::<ValidatingWebhookConfiguration>::all(admin.clone())
        .get(admission::registration::DEFAULT_CONFIGURATION_NAME)
        .await
        .unwrap();
    let owner = &vwc.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Namespace", OWNER_NS));
    let webhook = &vwc.webhooks.as_ref().unwrap()[0];
    assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(webhook.timeout_seconds, Some(5));
    // the certificate Secret lives in the runtime namespace
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), RUNTIME_NS)
        .get(&format!("{}-webhook-certs", admission::NAME))
        .await
        .unwrap();
    // the CloudProfile is readable with the garden ServiceAccount: a valid Shoot passes...
    create(
        &shoots(&admin, &ns),
        shoot(
            &ns,
            "ok",
            json!([pool("kata", "metal", "gardenlinux", kata(json!({})))]),
        ),
    )
    .await
    .unwrap();
    // ... and the machine type rule (which reads it) denies an unmarked one, not an RBAC error
    let status = denial(
        create(
            &shoots(&admin, &ns),
            shoot(
                &ns,
                "small",
                json!([pool("kata", "small", "gardenlinux", kata(json!({})))]),
            ),
        )
        .await,
    );
    assert!(
        status
            .message
            .contains("spec.provider.workers[0].machine.type: machine type \"small\" cannot run kata"),
        "{}",
        status.message
    );

    // a deleted configuration is repaired at once (the seed webhook's rotation loop, shared)
    let vwcs = Api::<ValidatingWebhookConfiguration>::all(admin.clone());
    vwcs.delete(admission::registration::DEFAULT_CONFIGURATION_NAME, &Default::default())
        .await
        .unwrap();
    // wait for the object itself: the apiserver's webhook cache may still hold the deleted one
    // for a moment, so a webhook call alone does not prove the repair
    let repaired = common::eventually(
        std::time::Duration::from_secs(15),
        "the configuration re-created",
        || async {
            match vwcs
                .get_opt(admission::registration::DEFAULT_CONFIGURATION_NAME)
                .await
                .map_err(|e| e.to_string())?
            {
                Some(c) if c.metadata.uid != vwc.metadata.uid => Ok(c),
                other => Err(format!("{:?}", other.map(|c| c.metadata.uid))),
            }
        },
    )
    .await;
    wait_webhook_active(&admin, &ns).await;
    assert_eq!(
        repaired.webhooks.clone().unwrap()[0].client_config.ca_bundle,
        webhook.client_config.ca_bundle,
        "re-registered with the same CA"
    );
    // ... and so is a configuration changed by hand: validation silently off, or every kata spec
    // change failing, would otherwise stay so while /readyz answers ok
    let name = admission::registration::DEFAULT_CONFIGURATION_NAME;
    let edits: [(&str, Value); 3] = [
        (
            "failurePolicy",
            json!([{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]),
        ),
        (
            "matchConditions",
            json!([{"op": "remove", "path": "/webhooks/0/matchConditions"}]),
        ),
        (
            "clientConfig.url",
            json!([{"op": "replace", "path": "/webhooks/0/clientConfig/url", "value": "https://127.0.0.1:1/elsewhere"}]),
        ),
    ];
    for (what, patch) in edits {
        let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
        vwcs.patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::<()>::Json(patch),
        )
        .await
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let current = vwcs.get(name).await.unwrap();
            if current.webhooks == repaired.webhooks {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what} not restored: {:?}",
                current.webhooks
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    shutdown.trigger();
    server.await.unwrap().unwrap();
}

/// `example/extension.yaml` (what `make generate` writes for the default release) is a valid
/// gardener-operator `Extension`, admission charts included: a server-side dry-run against
/// Gardener's own CRD (placed by hack/testbin.sh).
#[tokio::test]
async fn the_operator_extension_with_the_admission_is_valid() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let garden = GardenEnv::shared();
    let admin = garden.kube().client().await;
    let crd_file = Binaries::locate()
        .unwrap()
        .dir
        .join("operator-crds/10-crd-operator.gardener.cloud_extensions.yaml");
    let crd: CustomResourceDefinition = serde_saphyr::from_str(
        &std::fs::read_to_string(&crd_file)
            .unwrap_or_else(|e| panic!("{}: {e} (run hack/testbin.sh crds)", crd_file.display())),
    )
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        kube::runtime::wait::await_condition(
            crds,
            "extensions.operator.gardener.cloud",
            kube::runtime::conditions::is_crd_established(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/example/extension.yaml")).unwrap();
    let extension: DynamicObject = serde_saphyr::from_str(&text).unwrap();
    let admission = &extension.data["spec"]["deployment"]["admission"];
    for (part, key) in [("runtime", "runtimeCluster"), ("application", "virtualCluster")] {
        let reference = admission[key]["helm"]["ociRepository"]["ref"].as_str().unwrap();
        assert!(
            reference.contains(&format!("/gardener-extension-admission-runtime-kata-{part}:")),
            "{reference}"
        );
    }
    // the CRD prunes unknown fields: what comes back is what gardener-operator would read
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let stored = api_for(&admin, &extension)
        .await
        .create(&dry, &extension)
        .await
        .unwrap();
    assert_eq!(stored.data["spec"]["deployment"]["admission"], *admission);
}
