//! End to end through the real gardener-resource-manager: the extension writes ManagedResources
//! into the seed, the shoot's resource manager (built from the pinned Gardener module) applies
//! them into a second kube-apiserver that plays the shoot, and the assertions are on the shoot's
//! objects and on the resource manager's conditions.
//!
//! Stand-ins, because a bare apiserver runs no controllers: no kubelet and no DaemonSet
//! controller (DaemonSets get no pods and no status: only the health test writes a DaemonSet
//! status, standing in for the DaemonSet controller), and `ForegroundDeletionStandIn` for kube-controller-manager's garbage collector (the
//! resource manager deletes DaemonSets with foreground propagation).

mod common;

use common::*;
use gardener_extension_runtime_kata::api::cluster::Cluster;
use gardener_extension_runtime_kata::api::containerruntime::ContainerRuntime;
use gardener_extension_runtime_kata::api::managedresource::ManagedResource;
use gardener_extension_runtime_kata::api::{OperationState, OperationType};
use gardener_extension_runtime_kata::kata::requirements::Requirements;
use gardener_extension_runtime_kata::managedresources::{AppliedState, applied_state, secret_reference_key};
use gardener_extension_runtime_kata::testenv::{
    ForegroundDeletionStandIn, ResourceManager, ResourceManagerOptions, TestEnv, deploy_gardener_access,
};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const SHARED: &str = "extension-runtime-kata";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by=gardener-extension-runtime-kata";
const CLUSTER_ROLE: &str = "extensions.gardener.cloud:runtime-kata:kata-deploy";
const WAIT: Duration = Duration::from_secs(60);

fn installation(pool: &str) -> String {
    format!("extension-runtime-kata-installation-{pool}")
}

/// A seed namespace with its Cluster and controller, a shoot apiserver, and the shoot's
/// resource manager between them.
struct Landscape {
    seed: Client,
    shoot: Client,
    ns: String,
    _controller: TestController,
    shoot_env: TestEnv,
    rm: ResourceManager,
    _gc: ForegroundDeletionStandIn,
}

async fn landscape(prefix: &str, pools: &[PoolSpec<'_>]) -> Landscape {
    let seed_env = TestEnv::shared();
    let seed = seed_env.client().await;
    let ns = seed_env.namespace(prefix).await;
    create_cluster(&seed, &ns, shoot("local", pools, false)).await;
    let shoot_env = TestEnv::start_shoot().await.expect("shoot apiserver");
    let rm = ResourceManager::start(seed_env, &shoot_env, ResourceManagerOptions::for_shoot(&ns))
        .await
        .expect("the shoot's gardener-resource-manager");
    let shoot_client = shoot_env.client().await;
    let gc = ForegroundDeletionStandIn::start(shoot_client.clone());
    let controller = start_controller(seed.clone(), &ns, Requirements::default()).await;
    Landscape {
        seed,
        shoot: shoot_client,
        ns,
        _controller: controller,
        shoot_env,
        rm,
        _gc: gc,
    }
}

impl Landscape {
    fn crs(&self) -> Api<ContainerRuntime> {
        Api::namespaced(self.seed.clone(), &self.ns)
    }

    fn mrs(&self) -> Api<ManagedResource> {
        Api::namespaced(self.seed.clone(), &self.ns)
    }

    /// Waits until gardenlet's readiness rule holds for `kata-<pool>` and returns it.
    async fn ready(&self, pool: &str) -> ContainerRuntime {
        let name = format!("kata-{pool}");
        let api = self.crs();
        eventually(WAIT, &format!("{name} ready"), || async {
            let cr = api.get(&name).await.map_err(|e| e.to_string())?;
            match not_ready_reason(&cr) {
                None => Ok(cr),
                Some(r) => Err(format!("{r}; resource manager log:\n{}", self.rm.log_tail())),
            }
        })
        .await
    }

    /// Runs health rounds until `kata-<pool>` reports SystemComponentsHealthy `want` with a
    /// message containing `saying`, and returns that condition.
    async fn health(
        &self,
        checker: &gardener_extension_runtime_kata::healthcheck::HealthChecker,
        pool: &str,
        want: &str,
        saying: &str,
    ) -> gardener_extension_runtime_kata::api::common::Condition {
        let (crs, name) = (self.crs(), format!("kata-{pool}"));
        let what = format!("SystemComponentsHealthy {want} saying {saying:?}");
        eventually(WAIT, &what, || async {
            checker.round().await;
            let cr = crs.get(&name).await.map_err(|e| e.to_string())?;
            let c = cr
                .status
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "SystemComponentsHealthy"));
            match c {
                Some(c) if c.status == want && c.message.contains(saying) => Ok(c),
                other => Err(format!("{other:?}; resource manager log:\n{}", self.rm.log_tail())),
            }
        })
        .await
    }

    /// Stand-in for the DaemonSet controller: the status of `kata-deploy-<pool>` for `desired`
    /// nodes of which `ready` run an available pod.
    async fn daemonset_controller_says(&self, pool: &str, desired: i32, ready: i32) {
        let daemonsets: Api<DaemonSet> = Api::namespaced(self.shoot.clone(), "kube-system");
        let name = format!("kata-deploy-{pool}");
        let generation = daemonsets.get(&name).await.unwrap().metadata.generation;
        let status = json!({"status": {"observedGeneration": generation, "desiredNumberScheduled": desired,
            "currentNumberScheduled": desired, "updatedNumberScheduled": desired, "numberMisscheduled": 0,
            "numberReady": ready, "numberAvailable": ready, "numberUnavailable": desired - ready}});
        daemonsets
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
    }

    /// Waits until the resource manager reports the current generation of `mr` applied.
    async fn applied(&self, mr: &str) -> ManagedResource {
        let api = self.mrs();
        eventually(WAIT, &format!("{mr} applied"), || async {
            let m = api.get(mr).await.map_err(|e| e.to_string())?;
            match applied_state(&m) {
                AppliedState::Applied => Ok(m),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }

    async fn runtime_classes(&self) -> BTreeSet<String> {
        Api::<RuntimeClass>::all(self.shoot.clone())
            .list(&ListParams::default().labels(MANAGED_BY))
            .await
            .unwrap()
            .items
            .iter()
            .map(|r| r.name_any())
            .collect()
    }

    async fn daemon_sets(&self) -> BTreeSet<String> {
        Api::<DaemonSet>::namespaced(self.shoot.clone(), "kube-system")
            .list(&ListParams::default().labels(MANAGED_BY))
            .await
            .unwrap()
            .items
            .iter()
            .map(|r| r.name_any())
            .collect()
    }

    /// Waits until the shoot holds exactly these RuntimeClasses and DaemonSets of ours.
    async fn shoot_has(&self, classes: &[&str], daemon_sets: &[&str]) {
        let want_rc: BTreeSet<String> = classes.iter().map(|s| s.to_string()).collect();
        let want_ds: BTreeSet<String> = daemon_sets.iter().map(|s| s.to_string()).collect();
        eventually(WAIT, &format!("shoot objects {want_rc:?} {want_ds:?}"), || async {
            let (rc, ds) = (self.runtime_classes().await, self.daemon_sets().await);
            if rc == want_rc && ds == want_ds {
                Ok(())
            } else {
                Err(format!("RuntimeClasses {rc:?}, DaemonSets {ds:?}"))
            }
        })
        .await
    }

    async fn shoot_rbac_exists(&self) -> [bool; 3] {
        [
            Api::<ServiceAccount>::namespaced(self.shoot.clone(), "kube-system")
                .get_opt("kata-deploy")
                .await
                .unwrap()
                .is_some(),
            Api::<ClusterRole>::all(self.shoot.clone())
                .get_opt(CLUSTER_ROLE)
                .await
                .unwrap()
                .is_some(),
            Api::<ClusterRoleBinding>::all(self.shoot.clone())
                .get_opt(CLUSTER_ROLE)
                .await
                .unwrap()
                .is_some(),
        ]
    }

    async fn set_cluster_pools(&self, pools: &[PoolSpec<'_>]) {
        let patch = json!({"spec": {"shoot": shoot("local", pools, false)}});
        Api::<Cluster>::all(self.seed.clone())
            .patch(&self.ns, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn delete_and_wait_gone(&self, pool: &str) {
        let name = format!("kata-{pool}");
        self.crs().delete(&name, &DeleteParams::default()).await.unwrap();
        let api = self.crs();
        eventually(WAIT, &format!("{name} gone"), || async {
            match api.get_opt(&name).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(cr) => Err(format!("{:?}", cr.status.and_then(|s| s.last_operation))),
            }
        })
        .await;
    }
}

async fn shoot_runtime_class(shoot: &Client, name: &str) -> RuntimeClass {
    Api::<RuntimeClass>::all(shoot.clone()).get(name).await.unwrap()
}

#[tokio::test]
async fn two_pools_reach_the_shoot_follow_every_change_and_leave_nothing_behind() {
    let a = kata_config(json!({"hypervisors": ["qemu", "clh"], "defaultHypervisor": "qemu"}));
    let b = kata_config(json!({"hypervisors": ["fc"]}));
    let l = landscape("grm-flow", &[pool("a", Some(a.clone())), pool("b", Some(b.clone()))]).await;
    create_cr(&l.seed, &l.ns, "a", Some(a)).await;
    create_cr(&l.seed, &l.ns, "b", Some(b.clone())).await;
    l.ready("a").await;
    l.ready("b").await;

    // what landed in the shoot, as the resource manager applied it
    l.shoot_has(
        &["kata", "kata-clh", "kata-fc", "kata-qemu"],
        &["kata-deploy-a", "kata-deploy-b"],
    )
    .await;
    assert_eq!(l.shoot_rbac_exists().await, [true; 3]);
    assert_eq!(shoot_runtime_class(&l.shoot, "kata").await.handler, "kata-qemu");
    let fc = shoot_runtime_class(&l.shoot, "kata-fc").await;
    let selector = fc.scheduling.unwrap().node_selector.unwrap();
    assert_eq!(selector["kata.runtime.extensions.gardener.cloud/fc"], "true");
    let ds = Api::<DaemonSet>::namespaced(l.shoot.clone(), "kube-system")
        .get("kata-deploy-b")
        .await
        .unwrap();
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.node_selector.unwrap()["worker.gardener.cloud/pool"], "b");
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("quay.io/kata-containers/kata-deploy:4.1.0")
    );
    for mr in [SHARED.to_string(), installation("a"), installation("b")] {
        let m = l.applied(&mr).await;
        // the seed's garbage collector keeps only referenced secrets
        let secret = &m.spec.secret_refs[0].name;
        assert_eq!(m.annotations().get(&secret_reference_key(secret)), Some(secret), "{mr}");
    }

    // a new default: RuntimeClass `handler` is immutable, the resource manager re-creates `kata`
    let a2 = kata_config(json!({"hypervisors": ["qemu", "clh"], "defaultHypervisor": "clh"}));
    annotate(&l.seed, &l.ns, "kata-a", "reconcile", Some(a2)).await;
    l.ready("a").await;
    l.applied(SHARED).await;
    assert_eq!(shoot_runtime_class(&l.shoot, "kata").await.handler, "kata-clh");

    // a hypervisor removed: its class goes, nothing else
    let a3 = kata_config(json!({"hypervisors": ["qemu"], "defaultHypervisor": "qemu"}));
    annotate(&l.seed, &l.ns, "kata-a", "reconcile", Some(a3.clone())).await;
    l.ready("a").await;
    l.shoot_has(&["kata", "kata-fc", "kata-qemu"], &["kata-deploy-a", "kata-deploy-b"])
        .await;
    assert_eq!(shoot_runtime_class(&l.shoot, "kata").await.handler, "kata-qemu");

    // a taint on pool b reaches the tolerations of b's class
    let mut tainted = pool("b", Some(b.clone()));
    tainted.taints = json!([{"key": "sandbox", "value": "fc", "effect": "NoSchedule"}]);
    l.set_cluster_pools(&[pool("a", Some(a3.clone())), tainted]).await;
    annotate(&l.seed, &l.ns, "kata-b", "reconcile", None).await;
    l.ready("b").await;
    let shoot = l.shoot.clone();
    eventually(WAIT, "kata-fc tolerates the taint", || async {
        let rc = shoot_runtime_class(&shoot, "kata-fc").await;
        let tolerations = rc.scheduling.and_then(|s| s.tolerations).unwrap_or_default();
        if tolerations.iter().any(|t| t.key.as_deref() == Some("sandbox")) {
            Ok(())
        } else {
            Err(format!("{tolerations:?}"))
        }
    })
    .await;

    // one pool deleted: only its objects go
    l.delete_and_wait_gone("b").await;
    l.shoot_has(&["kata", "kata-qemu"], &["kata-deploy-a"]).await;
    assert_eq!(l.shoot_rbac_exists().await, [true; 3]);

    // the last pool deleted: nothing of ours is left in the shoot
    l.delete_and_wait_gone("a").await;
    l.shoot_has(&[], &[]).await;
    let l = &l;
    eventually(WAIT, "shoot RBAC gone", || async {
        match l.shoot_rbac_exists().await {
            [false, false, false] => Ok(()),
            left => Err(format!("{left:?}")),
        }
    })
    .await;
    let mrs = l.mrs().list(&ListParams::default()).await.unwrap();
    assert!(
        mrs.items.is_empty(),
        "{:?}",
        mrs.items.iter().map(|m| m.name_any()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn migrate_keeps_the_shoot_objects_and_restore_adopts_them() {
    let l = landscape("grm-migrate", &[pool("a", None)]).await;
    create_cr(&l.seed, &l.ns, "a", None).await;
    l.ready("a").await;
    l.shoot_has(&["kata-clh", "kata-qemu"], &["kata-deploy-a"]).await;
    let uid_before = Api::<DaemonSet>::namespaced(l.shoot.clone(), "kube-system")
        .get("kata-deploy-a")
        .await
        .unwrap()
        .uid();

    annotate(&l.seed, &l.ns, "kata-a", "migrate", None).await;
    let api = l.crs();
    eventually(WAIT, "migrated", || async {
        let cr = api.get("kata-a").await.map_err(|e| e.to_string())?;
        match cr.status.and_then(|s| s.last_operation) {
            Some(op) if op.type_ == OperationType::Migrate && op.state == OperationState::Succeeded => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // the resource manager lets the ManagedResources go (keepObjects) and leaves the shoot alone
    let mrs = l.mrs();
    eventually(WAIT, "ManagedResources gone from the seed", || async {
        let left = mrs.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        if left.items.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{:?}",
                left.items.iter().map(|m| m.name_any()).collect::<Vec<_>>()
            ))
        }
    })
    .await;
    l.shoot_has(&["kata-clh", "kata-qemu"], &["kata-deploy-a"]).await;
    assert_eq!(l.shoot_rbac_exists().await, [true; 3]);

    annotate(&l.seed, &l.ns, "kata-a", "restore", None).await;
    let cr = l.ready("a").await;
    assert_eq!(cr.status.unwrap().last_operation.unwrap().type_, OperationType::Restore);
    for mr in [SHARED.to_string(), installation("a")] {
        l.applied(&mr).await;
    }
    // adopted, not re-created
    let ds = Api::<DaemonSet>::namespaced(l.shoot.clone(), "kube-system")
        .get("kata-deploy-a")
        .await
        .unwrap();
    assert_eq!(ds.uid(), uid_before);
    l.shoot_has(&["kata-clh", "kata-qemu"], &["kata-deploy-a"]).await;
}

/// A secret deleted behind the extension's back (a garbage collector, a person) is re-created by
/// the next reconcile, and the resource manager applies from it again: a RuntimeClass removed
/// from the shoot meanwhile comes back, which it can only do by reading the secret.
#[tokio::test]
async fn a_deleted_managed_resource_secret_is_recreated_by_the_next_reconcile() {
    let l = landscape("grm-secret", &[pool("a", None)]).await;
    create_cr(&l.seed, &l.ns, "a", None).await;
    l.ready("a").await;
    let mr = l.applied(SHARED).await;
    let secret = mr.spec.secret_refs[0].name.clone();
    let secrets: Api<Secret> = Api::namespaced(l.seed.clone(), &l.ns);
    secrets.delete(&secret, &DeleteParams::default()).await.unwrap();
    // drift in the shoot, which only a resource manager that can read the secret repairs
    Api::<RuntimeClass>::all(l.shoot.clone())
        .delete("kata-qemu", &DeleteParams::default())
        .await
        .unwrap();

    annotate(&l.seed, &l.ns, "kata-a", "reconcile", None).await;
    let cr = l.ready("a").await;
    assert_eq!(
        cr.status.unwrap().last_operation.unwrap().state,
        OperationState::Succeeded
    );
    assert!(secrets.get_opt(&secret).await.unwrap().is_some(), "secret re-created");
    let m = l.applied(SHARED).await;
    assert_eq!(m.spec.secret_refs[0].name, secret);
    l.shoot_has(&["kata-clh", "kata-qemu"], &["kata-deploy-a"]).await;
}

/// When the resource manager cannot apply what the extension wrote, the ContainerRuntime says so
/// instead of Succeeded, with the resource manager's message.
#[tokio::test]
async fn a_manifest_the_shoot_rejects_is_an_error_not_a_success() {
    let l = landscape("grm-reject", &[pool("a", None)]).await;
    create_cr(&l.seed, &l.ns, "a", None).await;
    l.ready("a").await;
    l.applied(&installation("a")).await;
    // the shoot refuses DaemonSets in kube-system from now on (a stand-in for any apply error:
    // a webhook, a quota, a policy)
    let deny: Value = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "deny-daemonsets"},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["daemonsets"]}]},
                 "validations": [{"expression": "false", "message": "daemonsets are frozen"}]}
    });
    let binding: Value = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "deny-daemonsets"},
        "spec": {"policyName": "deny-daemonsets", "validationActions": ["Deny"]}
    });
    for (kind, plural, obj) in [
        ("ValidatingAdmissionPolicy", "validatingadmissionpolicies", deny),
        (
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
            binding,
        ),
    ] {
        let ar = kube::api::ApiResource {
            group: "admissionregistration.k8s.io".into(),
            version: "v1".into(),
            api_version: "admissionregistration.k8s.io/v1".into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        Api::<kube::api::DynamicObject>::all_with(l.shoot.clone(), &ar)
            .create(&Default::default(), &serde_json::from_value(obj).unwrap())
            .await
            .unwrap();
    }
    // policies take effect asynchronously: wait until an update is refused
    let daemon_sets: Api<DaemonSet> = Api::namespaced(l.shoot.clone(), "kube-system");
    eventually(WAIT, "the policy in force", || async {
        let patch = json!({"metadata": {"labels": {"probe": "1"}}});
        let params = PatchParams {
            dry_run: true,
            ..Default::default()
        };
        match daemon_sets.patch("kata-deploy-a", &params, &Patch::Merge(&patch)).await {
            Err(e) if e.to_string().contains("daemonsets are frozen") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let changed = kata_config(json!({"hypervisors": ["qemu"], "debug": true}));
    annotate(&l.seed, &l.ns, "kata-a", "reconcile", Some(changed)).await;
    let api = l.crs();
    let cr = eventually(WAIT, "an error naming the resource manager's message", || async {
        let cr = api.get("kata-a").await.map_err(|e| e.to_string())?;
        let err = cr.status.as_ref().and_then(|s| s.last_error.clone());
        match err {
            Some(e) if e.description.contains("daemonsets are frozen") => Ok(cr),
            _ => Err(format!("{:?}", cr.status.map(|s| s.last_operation))),
        }
    })
    .await;
    let last = cr.status.unwrap().last_operation.unwrap();
    assert_eq!(last.state, OperationState::Error);
    assert!(last.description.contains(&installation("a")), "{}", last.description);
}

/// The installer's ServiceAccount (kata-deploy and the node labeler share its pod) can change
/// only the node its pod runs on: RBAC grants node writes, the ValidatingAdmissionPolicy the
/// extension ships keeps them to the node named in the pod-bound token. Stand-in for the kubelet:
/// the test binds the Pod to a node itself and requests the pod-bound token the kubelet would.
#[tokio::test]
async fn the_installer_can_change_only_its_own_node() {
    use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::api::PostParams;
    let l = landscape("grm-ownnode", &[pool("a", None)]).await;
    create_cr(&l.seed, &l.ns, "a", None).await;
    l.ready("a").await;
    l.applied(SHARED).await;
    let nodes: Api<Node> = Api::all(l.shoot.clone());
    for n in ["node-own", "node-other"] {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": n}})).unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "kata-deploy-a-x", "namespace": "kube-system"},
        "spec": {"nodeName": "node-own", "serviceAccountName": "kata-deploy",
                 "containers": [{"name": "c", "image": "x"}]}
    }))
    .unwrap();
    let pod = Api::<Pod>::namespaced(l.shoot.clone(), "kube-system")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(l.shoot.clone(), "kube-system")
        .create_token_request("kata-deploy", &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let installer = l
        .shoot_env
        .client_with_token("system:serviceaccount:kube-system:kata-deploy", &token)
        .await
        .unwrap();
    let as_installer: Api<Node> = Api::all(installer);
    let label = |v: &str| json!({"metadata": {"labels": {"kata.runtime.extensions.gardener.cloud/qemu": v}}});
    // the policy takes effect asynchronously after the resource manager applied it: probe with
    // dry runs, then write for real
    let dry_run = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    eventually(WAIT, "a foreign node refused", || async {
        match as_installer
            .patch("node-other", &dry_run, &Patch::Merge(&label("true")))
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => Ok(s.message),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    as_installer
        .patch("node-own", &PatchParams::default(), &Patch::Merge(&label("true")))
        .await
        .expect("its own node");
    let refused = as_installer
        .patch("node-other", &PatchParams::default(), &Patch::Merge(&label("true")))
        .await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref s)) if s.code == 403 || s.code == 422),
        "{refused:?}"
    );
    assert!(
        !nodes
            .get("node-other")
            .await
            .unwrap()
            .labels()
            .contains_key("kata.runtime.extensions.gardener.cloud/qemu")
    );
    // on its own node: only the installer's label keys, nothing the kubelet itself may not set
    let refused_code = |r: Result<Node, kube::Error>| match r {
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => Ok(s.message),
        other => Err(format!("{other:?}")),
    };
    for (what, patch) in [
        (
            "kata-deploy's label",
            json!({"metadata": {"labels": {"katacontainers.io/kata-runtime": "true"}}}),
        ),
        (
            "kata-deploy's marker",
            json!({"metadata": {"labels": {"kata-deploy.katacontainers.io/default": "true"}}}),
        ),
        (
            "removing its label",
            json!({"metadata": {"labels": {"kata.runtime.extensions.gardener.cloud/qemu": null}}}),
        ),
    ] {
        as_installer
            .patch("node-own", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    for (what, patch) in [
        (
            "a node role",
            json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}),
        ),
        (
            "a node-restriction label",
            json!({"metadata": {"labels": {"node-restriction.kubernetes.io/x": "y"}}}),
        ),
        (
            "another label",
            json!({"metadata": {"labels": {"worker.gardener.cloud/pool": "other"}}}),
        ),
        ("an annotation", json!({"metadata": {"annotations": {"x": "y"}}})),
        (
            "a taint",
            json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        ),
        ("unschedulable", json!({"spec": {"unschedulable": true}})),
    ] {
        let r = as_installer
            .patch("node-own", &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        let message = refused_code(r).unwrap_or_else(|e| panic!("{what} on its own node must be refused: {e}"));
        assert!(message.contains("may change only the labels"), "{what}: {message}");
    }
    let ready =
        json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Nope", "message": "x"}]}});
    let message = refused_code(
        as_installer
            .patch_status("node-own", &PatchParams::default(), &Patch::Strategic(ready))
            .await,
    )
    .expect("the kubelet's conditions are not the installer's");
    assert!(message.contains("only the KataRuntimeReady condition"), "{message}");

    // the node-labeler's verdict (node condition KataRuntimeReady) goes through nodes/status,
    // under the same rule
    let verdict = json!({"status": {"conditions": [{"type": "KataRuntimeReady", "status": "True",
                          "reason": "AllShimsRunnable", "message": "can run: qemu"}]}});
    as_installer
        .patch_status("node-own", &PatchParams::default(), &Patch::Strategic(verdict.clone()))
        .await
        .expect("its own node's condition");
    let refused = as_installer
        .patch_status("node-other", &PatchParams::default(), &Patch::Strategic(verdict))
        .await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref s)) if s.code == 403 || s.code == 422),
        "{refused:?}"
    );
    // the kubelet's whole API through the apiserver proxy is not granted
    let proxy = http::Request::get("/api/v1/nodes/node-own/proxy/configz")
        .body(Vec::new())
        .unwrap();
    match Client::request_text(&as_installer.into_client(), proxy).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("nodes/proxy must be forbidden: {other:?}"),
    }
}

/// What the shoot owner sees: the resource manager's own verdict on the kata-deploy DaemonSet
/// becomes the ContainerRuntime's SystemComponentsHealthy, which gardenlet folds into the Shoot.
/// Stand-in for the DaemonSet controller: the test writes the DaemonSet's status, three nodes of
/// which one cannot run kata (its node-labeler is not ready, so its pod is unavailable).
#[tokio::test]
async fn the_resource_managers_verdict_on_the_installer_reaches_the_container_runtime() {
    let l = landscape("grm-health", &[pool("a", None)]).await;
    create_cr(&l.seed, &l.ns, "a", None).await;
    l.ready("a").await;
    l.applied(SHARED).await;
    l.applied(&installation("a")).await;
    l.shoot_env.grant_shoot_access(&l.seed, &l.ns).await.unwrap();
    let checker = l._controller.health_checker(Duration::from_secs(600));
    let condition = |want: &'static str, saying: &'static str| l.health(&checker, "a", want, saying);
    let daemonset_controller_says = |ready: i32| l.daemonset_controller_says("a", 3, ready);

    // before the DaemonSet controller (stand-in) reported anything: a rollout in progress
    let c = condition("Progressing", "is progressing: observed generation outdated (0/1)").await;
    assert_eq!(c.reason, "HealthCheckProgressing");
    daemonset_controller_says(2).await;
    let c = condition("False", "too many unavailable pods").await;
    assert_eq!(c.reason, "HealthCheckUnsuccessful");
    assert!(
        c.message.starts_with(
            "pool a: ManagedResource extension-runtime-kata-installation-a: ResourcesHealthy is False: \
             DaemonSet \"kube-system/kata-deploy-a\" is unhealthy: too many unavailable pods found (1/3)"
        ),
        "{}",
        c.message
    );

    daemonset_controller_says(3).await;
    let c = condition("True", "").await;
    assert_eq!(c.message, "All health checks successful");
}

/// What a node says reaches the pool's health: the node-labeler, run with exactly the arguments
/// of the installer DaemonSet the resource manager applied, judges a node whose thin-pool is
/// smaller than the pool's `devmapper.dataSize` and writes `KataRuntimeReady` into the shoot; the
/// health check reads it from the shoot (with the shoot access secret) and reports it on the
/// ContainerRuntime. The shoot access is Gardener's own: the secret `gardener-internal` and the
/// ManagedResource with its ClusterRoleBinding as gardenlet deploys them (`deploy_gardener_access`),
/// the token written by the resource manager's token requestor. Stand-ins: the kubelet (the test
/// registers the Node), the node's sysfs and procfs (a tree in a temp dir), and the DaemonSet
/// controller (its status).
#[tokio::test]
async fn what_the_nodes_say_reaches_the_container_runtime() {
    use k8s_openapi::api::core::v1::Node;
    const GI: u64 = 1 << 30;
    let fc = kata_config(json!({"hypervisors": ["fc"], "devmapper": {"dataSize": "20Gi", "baseImageSize": "10Gi"}}));
    let l = landscape("grm-nodes", &[pool("f", Some(fc.clone()))]).await;
    create_cr(&l.seed, &l.ns, "f", Some(fc)).await;
    l.ready("f").await;
    l.applied(SHARED).await;
    l.applied(&installation("f")).await;
    let ds = Api::<DaemonSet>::namespaced(l.shoot.clone(), "kube-system")
        .get("kata-deploy-f")
        .await
        .unwrap();
    // one node, its pod available
    l.daemonset_controller_says("f", 1, 1).await;
    // stand-in for the kubelet: the node registered and Ready
    let nodes: Api<Node> = Api::all(l.shoot.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "node-f-1", "labels": {
        "worker.gardener.cloud/pool": "f", "containerruntime.worker.gardener.cloud/kata": "true"}}}))
    .unwrap();
    nodes.create(&Default::default(), &node).await.unwrap();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    nodes
        .patch_status(
            "node-f-1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
             "lastHeartbeatTime": now, "lastTransitionTime": now}]}})),
        )
        .await
        .unwrap();

    // stand-in for the node: KVM, and an active thin-pool of 8 GiB
    let host = tempfile::tempdir().unwrap();
    let write = |rel: &str, content: &str| {
        let p = host.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    };
    write("proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu lm vmx\n");
    std::fs::create_dir_all(host.path().join("sys/class/misc/kvm")).unwrap();
    write("sys/block/dm-0/dm/name", "devpool\n");
    write("sys/block/dm-0/size", &format!("{}\n", 8 * GI / 512));
    let labeler_container = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.iter().find(|c| c.name == "node-labeler"))
        .cloned()
        .expect("the installer's node-labeler");
    let args: Vec<String> = labeler_container
        .args
        .unwrap_or_default()
        .into_iter()
        .filter(|a| !a.starts_with("--health-bind-address"))
        .collect();
    assert!(args.contains(&format!("--fc-data-size={}", 20 * GI)), "{args:?}");
    let kubeconfig = l.shoot_env.kubeconfig_path().display().to_string();
    let mut labeler = std::process::Command::new(env!("CARGO_BIN_EXE_gardener-extension-runtime-kata"))
        .args(&args)
        .args([
            "--health-bind-address=127.0.0.1:0".to_string(),
            format!("--sysfs-root={}", host.path().join("sys").display()),
            format!("--procfs-root={}", host.path().join("proc").display()),
            "--check-seconds=1".into(),
            format!("--kubeconfig={kubeconfig}"),
            "--namespace=kube-system".into(),
        ])
        .env("NODE_NAME", "node-f-1")
        .env_remove("KUBECONFIG")
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _labeler = Kill(&mut labeler);

    let checker = l._controller.health_checker(Duration::from_secs(600));
    let condition = |want: &'static str, saying: &'static str| l.health(&checker, "f", want, saying);

    // without the shoot access secret the nodes cannot be read: Gardener's ConditionCheckError
    let c = condition("Unknown", "cannot read the shoot's nodes: no secret gardener-internal").await;
    assert_eq!(c.reason, "ConditionCheckError");

    deploy_gardener_access(&l.seed, &l.ns, &l.shoot_env).await.unwrap();
    let c = condition("True", "smaller devmapper thin-pool").await;
    assert_eq!(c.reason, "HealthCheckSuccessful");
    assert!(
        c.message.starts_with(
            "All health checks successful; pool f: 1 of 1 nodes have a smaller devmapper thin-pool than configured: \
             node node-f-1: "
        ) && c
            .message
            .contains("the devmapper thin-pool devpool has 8.0 GiB of the 20.0 GiB configured"),
        "{}",
        c.message
    );

    // the node loses KVM: fc cannot run there; a node that just changed is still settling
    std::fs::remove_dir_all(host.path().join("sys/class/misc/kvm")).unwrap();
    let c = condition("Progressing", "cannot run every shim of the pool yet").await;
    assert!(c.message.contains("node node-f-1: "), "{}", c.message);
    assert!(c.message.contains("cannot run fc"), "{}", c.message);
}
