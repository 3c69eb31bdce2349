//! The node labeler (sidecar of every kata-deploy pod) against a real apiserver: it marks its node
//! with the pool's shims, which is what the RuntimeClasses select on, and removes the marks on SIGTERM.

use gardener_extension_runtime_kata::testenv::TestEnv;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gardener-extension-runtime-kata");
const FC: &str = "kata.runtime.extensions.gardener.cloud/fc";
const CLH: &str = "kata.runtime.extensions.gardener.cloud/clh";

async fn labels(nodes: &Api<Node>, name: &str) -> std::collections::BTreeMap<String, String> {
    nodes.get(name).await.unwrap().labels().clone()
}

#[tokio::test]
async fn labels_the_node_while_running_and_cleans_up_on_sigterm() {
    let env = TestEnv::shared();
    let nodes: Api<Node> = Api::all(env.client().await);
    let name = format!("node-{}", std::process::id());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([("worker.gardener.cloud/pool".to_string(), "fc".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let mut child = Command::new(BIN)
        .args(["node-labeler", &format!("--labels={FC}=true,{CLH}=true")])
        .arg(format!("--kubeconfig={}", env.kubeconfig_path().display()))
        .env("NODE_NAME", &name)
        .env_remove("KUBECONFIG")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let l = labels(&nodes, &name).await;
        if l.get(FC).map(String::as_str) == Some("true") && l.get(CLH).map(String::as_str) == Some("true") {
            break;
        }
        assert!(Instant::now() < deadline, "labels not set: {l:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SAFETY: plain kill(2) on our child
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let l = labels(&nodes, &name).await;
    assert!(!l.contains_key(FC) && !l.contains_key(CLH), "{l:?}");
    assert_eq!(l["worker.gardener.cloud/pool"], "fc", "other labels stay");
}

async fn wait_labels(
    nodes: &Api<Node>,
    name: &str,
    want: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let l = labels(nodes, name).await;
        if want(&l) {
            return;
        }
        assert!(Instant::now() < deadline, "labels not as expected: {l:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn labeler(env: &TestEnv, node: &str, namespace: &str, labels: &str) -> std::process::Child {
    Command::new(BIN)
        .args(["node-labeler", &format!("--labels={labels}")])
        .arg("--daemonset=kata-deploy-a")
        .arg(format!("--namespace={namespace}"))
        .arg(format!("--kubeconfig={}", env.kubeconfig_path().display()))
        .env("NODE_NAME", node)
        .env_remove("KUBECONFIG")
        .env_remove("DAEMONSET_NAME")
        .env_remove("POD_NAMESPACE")
        .spawn()
        .unwrap()
}

fn terminate(mut child: std::process::Child) {
    // SAFETY: plain kill(2) on our child
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// A rollout of the kata-deploy DaemonSet replaces its pods one node at a time; kata stays
/// installed, so the node must stay schedulable for kata pods: the labels stay while the
/// DaemonSet still selects the node, and go only when it no longer does (uninstall).
#[tokio::test]
async fn a_rolling_update_keeps_the_labels_and_an_uninstall_removes_them() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    let env = TestEnv::shared();
    let client = env.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let ns = env.namespace("labeler-rollout").await;
    let name = format!("node-rollout-{}", std::process::id());
    let pool_labels = [
        ("worker.gardener.cloud/pool".to_string(), "a".to_string()),
        (
            "containerruntime.worker.gardener.cloud/kata".to_string(),
            "true".to_string(),
        ),
    ];
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(pool_labels.clone().into()),
            ..Default::default()
        },
        ..Default::default()
    };
    nodes.create(&PostParams::default(), &node).await.unwrap();
    // the real DaemonSet object the extension ships (only its selector and template matter here)
    let ds: DaemonSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kata-deploy-a"},
        "spec": {"selector": {"matchLabels": {"app": "kata-deploy"}},
                 "template": {"metadata": {"labels": {"app": "kata-deploy"}},
                              "spec": {"nodeSelector": {"worker.gardener.cloud/pool": "a", "containerruntime.worker.gardener.cloud/kata": "true"},
                                       "containers": [{"name": "c", "image": "x"}]}}}
    }))
    .unwrap();
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    daemonsets.create(&PostParams::default(), &ds).await.unwrap();

    let old = labeler(env, &name, &ns, &format!("{FC}=true,{CLH}=true"));
    wait_labels(&nodes, &name, |l| l.get(FC).is_some() && l.get(CLH).is_some()).await;
    terminate(old);
    let l = labels(&nodes, &name).await;
    assert!(l.contains_key(FC) && l.contains_key(CLH), "rollout: labels kept, {l:?}");

    // the new pod after the pool dropped fc: fc's mark goes at once, clh stays
    let new = labeler(env, &name, &ns, &format!("{CLH}=true"));
    wait_labels(&nodes, &name, |l| !l.contains_key(FC) && l.contains_key(CLH)).await;

    // uninstall: the DaemonSet is gone, the labels go with the pod
    daemonsets.delete("kata-deploy-a", &Default::default()).await.unwrap();
    terminate(new);
    let l = labels(&nodes, &name).await;
    assert!(!l.contains_key(FC) && !l.contains_key(CLH), "{l:?}");
    assert_eq!(l["worker.gardener.cloud/pool"], "a");
}
