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
