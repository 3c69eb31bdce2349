//! The node labeler (sidecar of every kata-deploy pod) against a real apiserver: it marks its node
//! with the pool's shims the node can run, which is what the RuntimeClasses select on, records why
//! as the node condition `KataRuntimeReady`, and removes both on SIGTERM. The node's sysfs and
//! procfs are fake trees (this machine has no KVM); the apiserver and the binary are real.

use gardener_extension_runtime_kata::testenv::TestEnv;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gardener-extension-runtime-kata");
const FC: &str = "kata.runtime.extensions.gardener.cloud/fc";
const CLH: &str = "kata.runtime.extensions.gardener.cloud/clh";

/// A node's sysfs and procfs as the labeler reads them.
struct HostTree(tempfile::TempDir);

impl HostTree {
    fn new() -> Self {
        let t = HostTree(tempfile::tempdir().unwrap());
        t.write("proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu lm vmx sse4_1\n");
        std::fs::create_dir_all(t.0.path().join("sys/block")).unwrap();
        t
    }
    /// KVM and the fc thin-pool: every shim can run.
    fn capable() -> Self {
        let t = Self::new();
        t.kvm(true);
        t.write("sys/block/dm-0/dm/name", "devpool\n");
        t
    }
    fn write(&self, rel: &str, content: &str) {
        let p = self.0.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    fn kvm(&self, present: bool) {
        let p = self.0.path().join("sys/class/misc/kvm");
        if present {
            std::fs::create_dir_all(p).unwrap();
        } else {
            std::fs::remove_dir_all(p).unwrap();
        }
    }
    fn args(&self) -> [String; 3] {
        [
            format!("--sysfs-root={}", self.0.path().join("sys").display()),
            format!("--procfs-root={}", self.0.path().join("proc").display()),
            "--check-seconds=1".into(),
        ]
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The HTTP status of the labeler's `/readyz` (what the kubelet's readiness probe sees).
fn readyz(port: u16) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

/// The node's `KataRuntimeReady` condition: (status, reason, message).
async fn kata_condition(nodes: &Api<Node>, name: &str) -> Option<(String, String, String)> {
    let node = nodes.get(name).await.unwrap();
    let c = node
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "KataRuntimeReady")?;
    Some((c.status, c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
}

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
    let host = HostTree::capable();
    let mut child = Command::new(BIN)
        .args(["node-labeler", "--shims=fc,clh", "--health-bind-address=127.0.0.1:0"])
        .args(host.args())
        .arg(format!("--kubeconfig={}", env.kubeconfig_path().display()))
        .env("NODE_NAME", &name)
        .env_remove("KUBECONFIG")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let l = labels(&nodes, &name).await;
        if l.get(FC).map(String::as_str) == Some("true")
            && l.get(CLH).map(String::as_str) == Some("true")
            && kata_condition(&nodes, &name).await.is_some()
        {
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
    assert_eq!(
        kata_condition(&nodes, &name).await,
        None,
        "the condition goes with kata"
    );
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

fn labeler(env: &TestEnv, host: &HostTree, node: &str, namespace: &str, shims: &str) -> std::process::Child {
    Command::new(BIN)
        .args([
            "node-labeler",
            &format!("--shims={shims}"),
            "--health-bind-address=127.0.0.1:0",
        ])
        .args(host.args())
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

    let host = HostTree::capable();
    let old = labeler(env, &host, &name, &ns, "fc,clh");
    wait_labels(&nodes, &name, |l| l.get(FC).is_some() && l.get(CLH).is_some()).await;
    terminate(old);
    let l = labels(&nodes, &name).await;
    assert!(l.contains_key(FC) && l.contains_key(CLH), "rollout: labels kept, {l:?}");

    // the new pod after the pool dropped fc: fc's mark goes at once, clh stays
    let new = labeler(env, &host, &name, &ns, "clh");
    wait_labels(&nodes, &name, |l| !l.contains_key(FC) && l.contains_key(CLH)).await;

    // uninstall: the DaemonSet is gone, the labels go with the pod
    daemonsets.delete("kata-deploy-a", &Default::default()).await.unwrap();
    terminate(new);
    let l = labels(&nodes, &name).await;
    assert!(!l.contains_key(FC) && !l.contains_key(CLH), "{l:?}");
    assert_eq!(l["worker.gardener.cloud/pool"], "a");
}

/// A predicate on a node's labels and its `KataRuntimeReady` condition.
type NodeState = dyn Fn(&std::collections::BTreeMap<String, String>, &Option<(String, String, String)>) -> bool;

/// What the node offers decides what is labelled, what the node condition says and whether the
/// pod is ready; each change on the node is picked up by the periodic re-check.
#[tokio::test]
async fn labels_condition_and_readiness_follow_what_the_node_can_run() {
    let env = TestEnv::shared();
    let nodes: Api<Node> = Api::all(env.client().await);
    let name = format!("node-capability-{}", std::process::id());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    nodes.create(&PostParams::default(), &node).await.unwrap();
    // the kubelet's own condition must survive our status writes
    let kubelet = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}]}});
    nodes
        .patch_status(&name, &Default::default(), &kube::api::Patch::Strategic(kubelet))
        .await
        .unwrap();

    let host = HostTree::new(); // virtualization in the CPU flags, but no KVM device yet
    let port = free_port();
    let child = Command::new(BIN)
        .args([
            "node-labeler",
            "--shims=clh,fc",
            // devmapper.dataSize: 20 GiB
            "--fc-data-size=21474836480",
            &format!("--health-bind-address=127.0.0.1:{port}"),
        ])
        .args(host.args())
        .arg(format!("--kubeconfig={}", env.kubeconfig_path().display()))
        .env("NODE_NAME", &name)
        .env_remove("KUBECONFIG")
        .env_remove("DAEMONSET_NAME")
        .spawn()
        .unwrap();

    let wait = |want: Box<NodeState>| {
        let nodes = nodes.clone();
        let name = name.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let (l, c) = (labels(&nodes, &name).await, kata_condition(&nodes, &name).await);
                if want(&l, &c) {
                    return c.unwrap();
                }
                assert!(Instant::now() < deadline, "node not as expected: {l:?} {c:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    let (_, reason, message) = wait(Box::new(|l, c| {
        !l.contains_key(CLH) && !l.contains_key(FC) && c.as_ref().is_some_and(|c| c.0 == "False")
    }))
    .await;
    assert_eq!(reason, "KVMUnavailable");
    assert!(
        message.contains("cannot run clh, fc: the kernel offers no KVM device"),
        "{message}"
    );
    assert_eq!(readyz(port), Some(503), "no shim can run: not ready");

    // kvm_intel loaded: clh runs, fc still lacks its thin-pool
    host.kvm(true);
    let (status, _, message) = wait(Box::new(|l, c| {
        l.contains_key(CLH) && !l.contains_key(FC) && c.as_ref().is_some_and(|c| c.1 == "DevmapperPoolMissing")
    }))
    .await;
    assert_eq!(status, "False", "not every requested shim can run");
    assert!(
        message.contains("can run: clh")
            && message.contains("cannot run fc: the devmapper thin-pool devpool is not active"),
        "{message}"
    );
    assert_eq!(readyz(port), Some(200), "clh can run: ready");

    // the setup unit created the pool, with 8 GiB: the file system could not hold 20
    host.write("sys/block/dm-2/size", &format!("{}\n", (8u64 << 30) / 512));
    host.write("sys/block/dm-2/dm/name", "devpool\n");
    let (status, reason, message) = wait(Box::new(|l, c| {
        l.contains_key(CLH) && l.contains_key(FC) && c.as_ref().is_some_and(|c| c.0 == "True")
    }))
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "DevmapperPoolSmallerThanConfigured"),
        "fc runs, on a smaller pool"
    );
    assert!(
        message.contains("devpool has 8.0 GiB of the 20.0 GiB configured (devmapper.dataSize)"),
        "{message}"
    );
    // the disk was enlarged and the pool grew at the next boot
    host.write("sys/block/dm-2/size", &format!("{}\n", (20u64 << 30) / 512));
    let (status, _, _) = wait(Box::new(|_, c| c.as_ref().is_some_and(|c| c.1 == "AllShimsRunnable"))).await;
    assert_eq!(status, "True");

    // KVM gone (module unloaded): nothing may be advertised any more
    host.kvm(false);
    wait(Box::new(|l, c| {
        !l.contains_key(CLH) && !l.contains_key(FC) && c.as_ref().is_some_and(|c| c.0 == "False")
    }))
    .await;
    assert_eq!(readyz(port), Some(503));

    let ready = nodes.get(&name).await.unwrap().status.unwrap().conditions.unwrap();
    assert!(
        ready.iter().any(|c| c.type_ == "Ready" && c.status == "True"),
        "{ready:?}"
    );
    terminate(child);
    assert_eq!(kata_condition(&nodes, &name).await, None);
}
