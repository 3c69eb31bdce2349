//! The OSC webhook end to end: registered with the real kube-apiserver in url mode
//! (https://127.0.0.1:<port>, TLS with the CA bundle from the certificate Secret), OSCs written
//! through the apiserver come back mutated, or unchanged where they must.
//!
//! The MutatingWebhookConfiguration is cluster-scoped: every test registers its own (unique name)
//! and deletes it at the end. All of them select every shoot namespace, so a test's OSCs may also
//! pass through another test's webhook; since all of them mutate identically and idempotently,
//! that does not change the outcome.

#[path = "../examples/probe/attack.rs"]
mod attack;
mod common;

use gardener_extension_runtime_kata::api::cluster::{Cluster, ClusterSpec};
use gardener_extension_runtime_kata::api::osc::OperatingSystemConfig;
use gardener_extension_runtime_kata::node::devmapper;
use gardener_extension_runtime_kata::testenv::TestEnv;
use gardener_extension_runtime_kata::webhook::certs::{CertOptions, CertStore};
use gardener_extension_runtime_kata::webhook::mutate::{DEVMAPPER_PLUGIN, MutationSettings, mutate_spec};
use gardener_extension_runtime_kata::webhook::{self, ConfigMode, WebhookOptions};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

struct Running {
    addr: SocketAddr,
    opts: WebhookOptions,
    /// The readiness check "webhook-registration".
    registered: tokio::sync::watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), webhook::WebhookError>>>,
}

impl Running {
    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            tx.send(()).ok();
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    async fn cleanup(mut self, client: kube::Client) {
        self.stop().await;
        Api::<MutatingWebhookConfiguration>::all(client)
            .delete(&self.opts.configuration_name, &DeleteParams::default())
            .await
            .unwrap();
    }
}

async fn plain_namespace(client: &kube::Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}-{}", std::process::id(), rand::random::<u16>());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    name
}

async fn start(client: &kube::Client, test: &str, tweak: impl FnOnce(&mut WebhookOptions)) -> Running {
    let mut opts = WebhookOptions {
        mode: ConfigMode::Url,
        url: None,
        namespace: plain_namespace(client, &format!("extension-{test}")).await,
        bind_address: "127.0.0.1".parse().unwrap(),
        server_port: 0,
        configuration_name: format!("gardener-extension-runtime-kata-{test}-{}", std::process::id()),
        certs: CertOptions {
            check_interval: Duration::from_millis(500),
            ca_switch_grace: Duration::from_secs(2),
            ..Default::default()
        },
        ..Default::default()
    };
    tweak(&mut opts);
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (registered_tx, registered) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(webhook::run(
        client.clone(),
        opts.clone(),
        None,
        Some(ready_tx),
        Some(registered_tx),
        async move {
            stop_rx.await.ok();
        },
    ));
    let addr = tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .expect("webhook ready within 30s")
        .expect("webhook task ended before it was ready");
    Running {
        addr,
        opts,
        registered,
        stop: Some(stop_tx),
        task: Some(task),
    }
}

fn fc_config() -> Value {
    json!({"apiVersion": "kata.runtime.extensions.config.gardener.cloud/v1alpha1", "kind": "KataConfiguration",
           "hypervisors": ["qemu", "fc"], "devmapper": {"dataSize": "50Gi", "metadataSize": "2Gi", "baseImageSize": "8Gi"}})
}

async fn create_cluster(client: &kube::Client, ns: &str) {
    let shoot = json!({
        "apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
        "metadata": {"name": "demo", "namespace": "garden-dev"},
        "spec": {"kubernetes": {"version": "1.33.4"}, "provider": {"type": "local", "workers": [
            {"name": "kata-fc", "cri": {"name": "containerd", "containerRuntimes": [{"type": "kata", "providerConfig": fc_config()}]}},
            {"name": "kata-qemu", "cri": {"name": "containerd", "containerRuntimes": [{"type": "kata", "providerConfig":
                {"apiVersion": "kata.runtime.extensions.config.gardener.cloud/v1alpha1", "kind": "KataConfiguration", "hypervisors": ["qemu"]}}]}},
            {"name": "plain", "cri": {"name": "containerd"}}
        ]}}
    });
    let spec = ClusterSpec {
        cloud_profile: json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "CloudProfile",
                              "metadata": {"name": "local"}, "spec": {"type": "local"}}),
        seed: None,
        shoot,
    };
    Api::<Cluster>::all(client.clone())
        .create(&PostParams::default(), &Cluster::new(ns, spec))
        .await
        .unwrap();
}

fn osc(name: &str, pool: &str) -> OperatingSystemConfig {
    serde_json::from_value(json!({
        "apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "OperatingSystemConfig",
        "metadata": {"name": name, "labels": {"worker.gardener.cloud/pool": pool}},
        "spec": {
            "type": "gardenlinux", "purpose": "reconcile",
            "units": [{"name": "kubelet.service", "command": "start", "enable": true, "content": "[Service]\n"}],
            "files": [{"path": "/etc/x", "permissions": 420, "content": {"inline": {"encoding": "", "data": "x"}}}],
            "criConfig": {"name": "containerd", "cgroupDriver": "systemd",
                          "containerd": {"sandboxImage": "registry.k8s.io/pause:3.10"}}
        }
    }))
    .unwrap()
}

fn is_mutated(o: &OperatingSystemConfig) -> bool {
    o.spec.units.iter().any(|u| u.name == devmapper::UNIT_NAME)
}

/// Waits until the apiserver calls this webhook (its configuration informer has caught up), using
/// server-side dry-run creations in `ns`.
async fn wait_effective(api: &Api<OperatingSystemConfig>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    loop {
        let o = api.create(&pp, &osc("probe", "kata-fc")).await.unwrap();
        if is_mutated(&o) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "webhook not called by the apiserver after 30s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn expected(o: &OperatingSystemConfig) -> OperatingSystemConfig {
    let mut want = o.clone();
    let dm =
        gardener_extension_runtime_kata::api::kata_config::KataConfiguration::from_provider_config(Some(&fc_config()))
            .unwrap()
            .devmapper;
    mutate_spec(&mut want.spec, &dm, &MutationSettings::default());
    want
}

#[tokio::test]
async fn kata_fc_oscs_are_mutated_on_create_and_update_and_others_are_not() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("wh-mutate").await;
    create_cluster(&client, &ns).await;
    let running = start(&client, "mutate", |_| {}).await;
    let api: Api<OperatingSystemConfig> = Api::namespaced(client.clone(), &ns);
    wait_effective(&api).await;

    // create: stored mutated
    let sent = osc("osc-kata-fc", "kata-fc");
    let created = api.create(&PostParams::default(), &sent).await.unwrap();
    assert_eq!(created.spec, expected(&sent).spec);
    let plugin = &created.spec.containerd_plugins()[0];
    assert_eq!(plugin.path, vec![DEVMAPPER_PLUGIN.to_string()]);
    assert_eq!(
        plugin.op.as_deref(),
        Some("remove"),
        "the table lives in the drop-in file"
    );
    assert!(
        created
            .spec
            .files
            .iter()
            .any(|f| f.path == devmapper::CONTAINERD_DROPIN_PATH)
    );

    // update with stale content of "an older version" and without the plugins: repaired, not duplicated
    let mut stale = created.clone();
    for u in &mut stale.spec.units {
        if u.name == devmapper::UNIT_NAME {
            u.content = Some("[Service]\nExecStart=/bin/true\n".into());
        }
    }
    stale
        .spec
        .cri_config
        .as_mut()
        .unwrap()
        .containerd
        .as_mut()
        .unwrap()
        .plugins
        .clear();
    stale
        .spec
        .units
        .push(gardener_extension_runtime_kata::webhook::mutate::setup_unit());
    // and a real change, as gardenlet makes it
    stale.spec.units[0].content = Some("[Service]\nExecStart=/opt/bin/kubelet --v=2\n".into());
    let updated = api
        .replace("osc-kata-fc", &PostParams::default(), &stale)
        .await
        .unwrap();
    let mut sent_update = stale.clone();
    sent_update.metadata = updated.metadata.clone();
    assert_eq!(updated.spec, expected(&sent_update).spec);
    assert_eq!(
        updated
            .spec
            .units
            .iter()
            .filter(|u| u.name == devmapper::UNIT_NAME)
            .count(),
        1
    );
    assert_eq!(
        updated.metadata.generation,
        Some(2),
        "the update changed the stored object"
    );

    // an update that changes nothing else stays a no-op (generation unchanged)
    let again = api
        .replace("osc-kata-fc", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert_eq!(again.metadata.generation, Some(2));

    // pools without kata-fc: stored exactly as sent
    for pool in ["plain", "kata-qemu", "not-in-shoot"] {
        let sent = osc(&format!("osc-{pool}"), pool);
        let stored = api.create(&PostParams::default(), &sent).await.unwrap();
        assert_eq!(stored.spec, sent.spec, "pool {pool}");
    }
    let mut provision = osc("osc-kata-fc-provision", "kata-fc");
    provision.spec.purpose = "provision".into();
    provision.spec.cri_config.as_mut().unwrap().containerd = None;
    let stored = api.create(&PostParams::default(), &provision).await.unwrap();
    assert_eq!(stored.spec, provision.spec);

    // a namespace that is not a shoot namespace is not selected at all
    let other = plain_namespace(&client, "not-a-shoot").await;
    create_cluster(&client, &other).await;
    let other_api: Api<OperatingSystemConfig> = Api::namespaced(client.clone(), &other);
    let sent = osc("osc-kata-fc", "kata-fc");
    let stored = other_api.create(&PostParams::default(), &sent).await.unwrap();
    assert_eq!(stored.spec, sent.spec);

    // a shoot namespace without a Cluster: allowed unchanged
    let no_cluster = env.namespace("wh-nocluster").await;
    let nc_api: Api<OperatingSystemConfig> = Api::namespaced(client.clone(), &no_cluster);
    let stored = nc_api.create(&PostParams::default(), &sent).await.unwrap();
    assert_eq!(stored.spec, sent.spec);

    // the configuration as registered
    let config = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(&running.opts.configuration_name)
        .await
        .unwrap();
    let w = &config.webhooks.as_ref().unwrap()[0];
    assert_eq!(w.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(
        w.client_config.url.as_deref(),
        Some(format!("https://{}/webhooks/operatingsystemconfig", running.addr).as_str())
    );
    running.cleanup(client).await;
}

#[tokio::test]
async fn with_the_server_down_oscs_can_still_be_written() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("wh-down").await;
    create_cluster(&client, &ns).await;
    let mut running = start(&client, "down", |_| {}).await;
    let api: Api<OperatingSystemConfig> = Api::namespaced(client.clone(), &ns);
    wait_effective(&api).await;
    running.stop().await;

    let started = Instant::now();
    let sent = osc("osc-plain", "plain");
    let stored = api.create(&PostParams::default(), &sent).await.unwrap();
    assert_eq!(stored.spec, sent.spec);
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "a refused connection must not wait for the timeout"
    );
    // with failurePolicy Ignore even a kata-fc OSC is stored (unmutated unless another test's
    // webhook is registered right now); it is repaired on its next update
    api.create(&PostParams::default(), &osc("osc-kata-fc", "kata-fc"))
        .await
        .unwrap();
    running.cleanup(client).await;
}

fn served_certificate(addr: SocketAddr, ca_bundle_pem: &str, tls12_only: bool) -> Result<Vec<u8>, String> {
    use std::net::TcpStream;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_bundle_pem.as_bytes()) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), ServerName::IpAddress(addr.ip().into()))
        .map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    Ok(conn.peer_certificates().ok_or("no peer certificate")?[0].to_vec())
}

async fn secret_value(client: &kube::Client, ns: &str, name: &str, key: &str) -> String {
    let s = Api::<Secret>::namespaced(client.clone(), ns).get(name).await.unwrap();
    String::from_utf8(s.data.unwrap()[key].0.clone()).unwrap()
}

#[tokio::test]
async fn certificate_rotation_is_picked_up_without_restart() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("wh-rotate").await;
    create_cluster(&client, &ns).await;
    let running = start(&client, "rotate", |_| {}).await;
    let api: Api<OperatingSystemConfig> = Api::namespaced(client.clone(), &ns);
    wait_effective(&api).await;
    let secret = &running.opts.certs.secret_name;
    let old_ca = secret_value(&client, &running.opts.namespace, secret, "ca.crt").await;
    let addr = running.addr;
    let ca = old_ca.clone();
    let old_leaf = tokio::task::spawn_blocking(move || served_certificate(addr, &ca, false))
        .await
        .unwrap()
        .unwrap();
    // TLS 1.2 works too
    let ca = old_ca.clone();
    tokio::task::spawn_blocking(move || served_certificate(addr, &ca, true))
        .await
        .unwrap()
        .unwrap();

    // a second replica (or an operator) rotates the CA in the Secret
    let store = CertStore::new(
        client.clone(),
        &running.opts.namespace,
        running.opts.certs.clone(),
        running.opts.identity(running.addr),
    );
    let rotated = store.rotate_ca().await.unwrap();
    assert!(rotated.ca_bundle_pem.contains(old_ca.trim()), "old CA stays trusted");
    let new_ca = secret_value(&client, &running.opts.namespace, secret, "ca.crt").await;
    assert_ne!(new_ca, old_ca);

    // admission keeps working while the server switches; the new leaf chains to the new CA only
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    let mut switched = false;
    while !switched || n < 3 {
        assert!(Instant::now() < deadline, "served certificate not rotated after 60s");
        let o = api
            .create(&PostParams::default(), &osc(&format!("osc-rot-{n}"), "kata-fc"))
            .await
            .unwrap();
        assert!(is_mutated(&o), "admission during the rotation (request {n})");
        n += 1;
        let ca = new_ca.clone();
        let served = tokio::task::spawn_blocking(move || served_certificate(addr, &ca, false))
            .await
            .unwrap();
        if let Ok(leaf) = served {
            assert_ne!(leaf, old_leaf);
            switched = true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let config = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(&running.opts.configuration_name)
        .await
        .unwrap();
    let bundle = String::from_utf8(config.webhooks.unwrap()[0].client_config.ca_bundle.clone().unwrap().0).unwrap();
    assert!(bundle.contains(new_ca.trim()) && bundle.contains(old_ca.trim()));
    running.cleanup(client).await;
}

/// Uninstall leaves nothing that could block the seed: the configuration is owned by the
/// extension's namespace, so deleting that namespace lets kube-controller-manager's garbage
/// collector remove it (a bare apiserver runs no garbage collector: the reference is asserted).
#[tokio::test]
async fn the_webhook_configuration_is_owned_by_the_extension_namespace() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let running = start(&client, "owner", |_| {}).await;
    let ns = Api::<Namespace>::all(client.clone())
        .get(&running.opts.namespace)
        .await
        .unwrap();
    let config = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(&running.opts.configuration_name)
        .await
        .unwrap();
    let owners = config.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    let owner = &owners[0];
    assert_eq!((owner.api_version.as_str(), owner.kind.as_str()), ("v1", "Namespace"));
    assert_eq!(Some(&owner.name), ns.metadata.name.as_ref());
    assert_eq!(
        Some(&owner.uid),
        ns.metadata.uid.as_ref(),
        "the uid of the live namespace"
    );
    running.cleanup(client).await;
}

/// A deleted MutatingWebhookConfiguration or certificate Secret comes back at once (not at the
/// next periodic check, here an hour away), and the registration readiness follows.
#[tokio::test]
async fn a_deleted_configuration_or_secret_is_repaired_at_once() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let mut running = start(&client, "repair", |o| {
        o.certs.check_interval = Duration::from_secs(3600)
    })
    .await;
    assert!(*running.registered.borrow(), "registered after start");
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let name = running.opts.configuration_name.clone();
    let before = configs.get(&name).await.unwrap();
    configs.delete(&name, &DeleteParams::default()).await.unwrap();
    let back = common::eventually(Duration::from_secs(15), "configuration re-created", || async {
        match configs.get_opt(&name).await.map_err(|e| e.to_string())? {
            Some(c) if c.metadata.uid != before.metadata.uid => Ok(c),
            other => Err(format!("{:?}", other.map(|c| c.metadata.uid))),
        }
    })
    .await;
    assert_eq!(back.webhooks, before.webhooks, "the same registration");
    common::eventually(Duration::from_secs(5), "registration ready again", || async {
        if *running.registered.borrow() {
            Ok(())
        } else {
            Err("not ready".to_string())
        }
    })
    .await;

    // the certificate Secret: re-created, and the configuration carries the CA that signs it
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &running.opts.namespace);
    let secret = running.opts.certs.secret_name.clone();
    secrets.delete(&secret, &DeleteParams::default()).await.unwrap();
    common::eventually(
        Duration::from_secs(15),
        "secret re-created and its CA registered",
        || async {
            let s = secrets
                .get_opt(&secret)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no secret")?;
            let c = configs.get(&name).await.map_err(|e| e.to_string())?;
            let bundle = c.webhooks.unwrap()[0].client_config.ca_bundle.clone().unwrap().0;
            let ca = s.data.unwrap_or_default().into_values().map(|v| v.0).find(|v| {
                let pem = String::from_utf8_lossy(v);
                pem.contains("BEGIN CERTIFICATE") && String::from_utf8_lossy(&bundle).contains(pem.trim())
            });
            ca.map(|_| ()).ok_or_else(|| "CA not in the bundle yet".to_string())
        },
    )
    .await;
    running.stop().await;
    configs.delete(&name, &DeleteParams::default()).await.unwrap();
}

/// Idle connections, half-sent handshakes and a crowd beyond the connection limit are cut off,
/// so they can neither exhaust the process's file descriptors nor keep the webhook from serving.
#[tokio::test]
async fn idle_and_slow_clients_are_cut_off_and_the_webhook_keeps_serving() {
    use gardener_extension_runtime_kata::webhook::limits::ConnectionLimits;
    use std::io::{Read, Write};
    let env = TestEnv::shared();
    let client = env.client().await;
    let running = start(&client, "limits", |o| {
        o.limits = ConnectionLimits {
            max_connections: 8,
            idle_timeout: Duration::from_secs(1),
            ..Default::default()
        }
    })
    .await;
    let addr = running.addr;
    let (closed_within, still_open) = tokio::task::spawn_blocking(move || {
        let mut socks = Vec::new();
        for i in 0..24 {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            if i % 3 == 0 {
                // a slow client: the first bytes of a TLS record, then nothing
                s.write_all(&[0x16, 0x03, 0x01]).unwrap();
            }
            socks.push(s);
        }
        let started = Instant::now();
        let mut still_open = 0;
        for mut s in socks {
            s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
            let mut b = [0u8; 64];
            match s.read(&mut b) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    still_open += 1
                }
                Err(_) => {}
            }
        }
        (started.elapsed(), still_open)
    })
    .await
    .unwrap();
    assert_eq!(still_open, 0, "every idle or slow connection is closed by the server");
    assert!(
        closed_within < Duration::from_secs(5),
        "within the idle timeout: {closed_within:?}"
    );
    // and the server still answers a real TLS client
    let ca = secret_value(
        &client,
        &running.opts.namespace,
        &running.opts.certs.secret_name,
        "ca.crt",
    )
    .await;
    tokio::task::spawn_blocking(move || served_certificate(addr, &ca, false))
        .await
        .unwrap()
        .expect("a TLS handshake after the crowd");
    running.cleanup(client).await;
}

/// Drift repair covers the whole configuration, not only its existence and CA: every field we set
/// that is changed by hand (failure policy, timeout, where the apiserver sends reviews, selectors,
/// rules, our label, the owner) is restored within seconds of the watch event (the periodic check
/// is an hour away), and the registration readiness is true again afterwards.
#[tokio::test]
async fn every_field_of_the_configuration_changed_by_hand_is_restored() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let mut running = start(&client, "drift", |o| o.certs.check_interval = Duration::from_secs(3600)).await;
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let name = running.opts.configuration_name.clone();
    let desired = configs.get(&name).await.unwrap();
    let view = |c: &MutatingWebhookConfiguration| json!({"webhooks": c.webhooks, "labels": c.metadata.labels, "owners": c.metadata.owner_references});
    let edits: [(&str, Value); 7] = [
        (
            "failurePolicy",
            json!([{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Fail"}]),
        ),
        (
            "timeoutSeconds",
            json!([{"op": "replace", "path": "/webhooks/0/timeoutSeconds", "value": 30}]),
        ),
        (
            "clientConfig.url",
            json!([{"op": "replace", "path": "/webhooks/0/clientConfig/url", "value": "https://127.0.0.1:1/elsewhere"}]),
        ),
        (
            "namespaceSelector",
            json!([{"op": "replace", "path": "/webhooks/0/namespaceSelector", "value": {}}]),
        ),
        (
            "rules",
            json!([{"op": "replace", "path": "/webhooks/0/rules/0/operations", "value": ["CREATE"]}]),
        ),
        ("labels", json!([{"op": "remove", "path": "/metadata/labels"}])),
        (
            "ownerReferences",
            json!([{"op": "remove", "path": "/metadata/ownerReferences"}]),
        ),
    ];
    for (what, patch) in edits {
        let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
        let edited = configs
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::<()>::Json(patch),
            )
            .await
            .unwrap();
        assert_ne!(view(&edited), view(&desired), "{what}: the edit changed something");
        let started = Instant::now();
        common::eventually(Duration::from_secs(10), &format!("{what} restored"), || async {
            let c = configs.get(&name).await.map_err(|e| e.to_string())?;
            if view(&c) == view(&desired) {
                Ok(())
            } else {
                Err(format!("{}", view(&c)))
            }
        })
        .await;
        println!("{what}: restored after {:?}", started.elapsed());
        common::eventually(Duration::from_secs(5), "registration ready again", || async {
            if *running.registered.borrow() {
                Ok(())
            } else {
                Err("not ready".to_string())
            }
        })
        .await;
    }
    running.stop().await;
    configs.delete(&name, &DeleteParams::default()).await.unwrap();
}

/// Clients that fill the connection cap by trickling bytes (and reconnecting as fast as they are
/// cut off) from a pod's address cannot starve the apiserver: its reviews still take a slot at
/// once, are answered and mutate the OSC, within a fraction of the webhook timeout. A client that trickles a request body is answered 408 at the
/// request deadline, however often it sends a byte.
#[tokio::test]
async fn trickling_clients_filling_the_cap_cannot_starve_valid_reviews() {
    use gardener_extension_runtime_kata::webhook::limits::ConnectionLimits;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("wh-starve").await;
    create_cluster(&client, &ns).await;
    let deadline = Duration::from_secs(2);
    let running = start(&client, "starve", |o| {
        // a short idle timeout closes the apiserver's kept-alive connection during the attack:
        // its reviews need a new slot
        o.limits = ConnectionLimits {
            max_connections: 16,
            idle_timeout: Duration::from_secs(1),
            request_deadline: deadline,
        }
    })
    .await;
    let api: Api<OperatingSystemConfig> = Api::namespaced(client.clone(), &ns);
    wait_effective(&api).await;

    // 48 tricklers for 16 slots from another address (a pod in the seed; the apiserver comes from
    // 127.0.0.1): a byte of a TLS record every 200 ms, reconnecting when cut off
    let stop = Arc::new(AtomicBool::new(false));
    let connects = Arc::new(AtomicUsize::new(0));
    let addr = running.addr;
    let tricklers = attack::tricklers(48, addr, stop.clone(), connects.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut slowest = Duration::ZERO;
    for i in 0..5 {
        let started = Instant::now();
        let created = api
            .create(&PostParams::default(), &osc(&format!("under-attack-{i}"), "kata-fc"))
            .await
            .unwrap();
        slowest = slowest.max(started.elapsed());
        assert!(is_mutated(&created), "review {i} answered during the attack");
    }
    println!(
        "slowest valid review under attack: {slowest:?} ({} trickler connections)",
        connects.load(Ordering::Relaxed)
    );
    assert!(
        slowest < Duration::from_secs(3),
        "well under the 10 s webhook timeout: {slowest:?}"
    );

    stop.store(true, Ordering::Relaxed);
    for t in tricklers {
        t.await.unwrap();
    }

    // a trickled body: answered 408 at the deadline, though never idle
    let ca = secret_value(
        &client,
        &running.opts.namespace,
        &running.opts.certs.secret_name,
        "ca.crt",
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let started = Instant::now();
    tls.write_all(
        format!(
            "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
            running.opts.path
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let trickle = async {
        loop {
            if tls.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut buf = [0u8; 512];
            match tokio::time::timeout(Duration::from_millis(1), tls.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => return String::from_utf8_lossy(&buf[..n]).to_string(),
                Err(_) => {}
            }
        }
        String::new()
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), trickle)
        .await
        .expect("the trickled request is cut off");
    let took = started.elapsed();
    println!("trickled body answered after {took:?}: {answer:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(took < deadline + Duration::from_secs(2), "{took:?}");
    running.cleanup(client).await;
}
