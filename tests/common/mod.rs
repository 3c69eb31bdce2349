//! Shared helpers of the integration tests: an in-process controller scoped to one namespace,
//! Gardener-like objects, and gardenlet's readiness rule.
#![allow(dead_code)]

use gardener_extension_runtime_kata::api::cluster::{Cluster, ClusterSpec};
use gardener_extension_runtime_kata::api::containerruntime::ContainerRuntime;
use gardener_extension_runtime_kata::api::{OPERATION_ANNOTATION, TIMESTAMP_ANNOTATION};
use gardener_extension_runtime_kata::extension::controller::ControllerOptions;
use gardener_extension_runtime_kata::extension::run_controller;
use gardener_extension_runtime_kata::kata::KataActuator;
use gardener_extension_runtime_kata::kata::installer::InstallerImages;
use gardener_extension_runtime_kata::kata::requirements::Requirements;
use gardener_extension_runtime_kata::runtime::metrics::Metrics;
use gardener_extension_runtime_kata::runtime::shutdown::Shutdown;
#[allow(unused_imports)]
use json_patch as _;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const KATA_API: &str = "kata.runtime.extensions.config.gardener.cloud/v1alpha1";

pub fn images() -> InstallerImages {
    InstallerImages {
        kata_deploy: "quay.io/kata-containers/kata-deploy:4.1.0".into(),
        node_labeler: "example.invalid/runtime-kata:v0.0.0-test".into(),
    }
}

pub fn kata_config(extra: Value) -> Value {
    let mut v = json!({"apiVersion": KATA_API, "kind": "KataConfiguration"});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    v
}

/// A controller for one namespace, stopped when dropped.
pub struct TestController {
    shutdown: Shutdown,
    pub metrics: Arc<Metrics>,
    client: Client,
    runtimes: kube::runtime::reflector::Store<ContainerRuntime>,
    managed_resources: Option<gardener_extension_runtime_kata::managedresources::ManagedResourceCache>,
    predicate: gardener_extension_runtime_kata::extension::predicate::PredicateConfig,
}

impl TestController {
    /// The health checks the extension runs on its leader, on the controller's caches, as an
    /// object the test drives round by round.
    pub fn health_checker(
        &self,
        progressing_threshold: Duration,
    ) -> gardener_extension_runtime_kata::healthcheck::HealthChecker {
        self.health_checker_over(self.runtimes.clone(), progressing_threshold)
    }

    /// The controller's ContainerRuntime cache.
    pub fn runtimes(&self) -> kube::runtime::reflector::Store<ContainerRuntime> {
        self.runtimes.clone()
    }

    /// The same health checks over another ContainerRuntime cache (one the test holds back).
    pub fn health_checker_over(
        &self,
        runtimes: kube::runtime::reflector::Store<ContainerRuntime>,
        progressing_threshold: Duration,
    ) -> gardener_extension_runtime_kata::healthcheck::HealthChecker {
        self.health_checker_with(runtimes, Duration::from_millis(200), progressing_threshold)
    }

    /// The health checks with their own sync period (which is also how long a check waits after
    /// an object's last operation).
    pub fn health_checker_with(
        &self,
        runtimes: kube::runtime::reflector::Store<ContainerRuntime>,
        sync_period: Duration,
        progressing_threshold: Duration,
    ) -> gardener_extension_runtime_kata::healthcheck::HealthChecker {
        use gardener_extension_runtime_kata::healthcheck::{HealthChecker, HealthOptions};
        HealthChecker::new(
            self.client.clone(),
            runtimes,
            self.managed_resources
                .clone()
                .expect("the actuator caches its ManagedResources"),
            HealthOptions {
                sync_period,
                progressing_threshold,
                responsibility: self.predicate.clone(),
            },
        )
    }
}

impl Drop for TestController {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub async fn start_controller(client: Client, namespace: &str, requirements: Requirements) -> TestController {
    start_controller_with(client, namespace, requirements, |_| {}).await
}

pub async fn start_controller_with(
    client: Client,
    namespace: &str,
    requirements: Requirements,
    tweak: impl FnOnce(&mut ControllerOptions),
) -> TestController {
    start_controller_with_images(client, namespace, requirements, images(), tweak).await
}

pub async fn start_controller_with_images(
    client: Client,
    namespace: &str,
    requirements: Requirements,
    images: impl Into<gardener_extension_runtime_kata::kata::imagevector::ImageSource>,
    tweak: impl FnOnce(&mut ControllerOptions),
) -> TestController {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let cache = kube::runtime::reflector::store();
    let actuator = KataActuator::new(client.clone(), cache.0.clone(), images, requirements);
    let managed_resources = actuator.managed_resource_cache();
    let runtimes = cache.0.clone();
    let mut opts = ControllerOptions::new("kata");
    opts.namespace = Some(namespace.into());
    opts.backoff_base = Duration::from_millis(200);
    opts.backoff_max = Duration::from_secs(2);
    tweak(&mut opts);
    let predicate = opts.predicate.clone();
    let shutdown = Shutdown::new();
    let (ready, mut ready_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(run_controller(
        client.clone(),
        actuator,
        cache,
        opts,
        metrics.clone(),
        ready,
        shutdown.wait(),
    ));
    tokio::time::timeout(Duration::from_secs(10), ready_rx.wait_for(|r| *r))
        .await
        .expect("controller cache synced")
        .unwrap();
    TestController {
        shutdown,
        metrics,
        client,
        runtimes,
        managed_resources,
        predicate,
    }
}

pub struct PoolSpec<'a> {
    pub name: &'a str,
    pub provider_config: Option<Value>,
    pub taints: Value,
}

pub fn pool<'a>(name: &'a str, provider_config: Option<Value>) -> PoolSpec<'a> {
    PoolSpec {
        name,
        provider_config,
        taints: json!([]),
    }
}

pub fn shoot(provider: &str, pools: &[PoolSpec], failed: bool) -> Value {
    let workers: Vec<Value> = pools
        .iter()
        .map(|p| {
            let mut rt = json!({"type": "kata"});
            if let Some(pc) = &p.provider_config {
                rt["providerConfig"] = pc.clone();
            }
            json!({"name": p.name, "machine": {"type": "m5.large", "image": {"name": "gardenlinux", "version": "1877.0"}},
                   "cri": {"name": "containerd", "containerRuntimes": [rt]}, "taints": p.taints})
        })
        .collect();
    json!({
        "apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
        "metadata": {"name": "demo", "namespace": "garden-dev"},
        "spec": {"kubernetes": {"version": "1.33.4"}, "provider": {"type": provider, "workers": workers}},
        "status": {"lastOperation": {"type": "Reconcile", "state": if failed { "Failed" } else { "Succeeded" }}}
    })
}

pub async fn create_cluster(client: &Client, namespace: &str, shoot: Value) {
    let spec = ClusterSpec {
        cloud_profile: json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "CloudProfile", "metadata": {"name": "local"}, "spec": {"type": "local"}}),
        seed: Some(json!({"metadata": {"name": "seed"}, "spec": {"provider": {"type": "local", "region": "local"}}})),
        shoot,
    };
    Api::<Cluster>::all(client.clone())
        .create(&PostParams::default(), &Cluster::new(namespace, spec))
        .await
        .expect("creating the Cluster");
}

pub fn timestamp_now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Creates `kata-<pool>` as gardenlet does: reconcile annotation plus timestamp.
pub async fn create_cr(
    client: &Client,
    namespace: &str,
    pool: &str,
    provider_config: Option<Value>,
) -> ContainerRuntime {
    let mut cr = ContainerRuntime::for_pool("kata", pool, provider_config);
    cr.annotations_mut()
        .insert(OPERATION_ANNOTATION.into(), "reconcile".into());
    cr.annotations_mut()
        .insert(TIMESTAMP_ANNOTATION.into(), timestamp_now());
    Api::<ContainerRuntime>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &cr)
        .await
        .expect("creating the ContainerRuntime")
}

/// Sets gardenlet's operation annotation (and a fresh timestamp), optionally replacing the
/// providerConfig in the same write.
pub async fn annotate(client: &Client, namespace: &str, name: &str, op: &str, provider_config: Option<Value>) {
    let mut ops = vec![
        json!({"op": "add", "path": "/metadata/annotations", "value": {}}),
        json!({"op": "add", "path": "/metadata/annotations/gardener.cloud~1operation", "value": op}),
        json!({"op": "add", "path": "/metadata/annotations/gardener.cloud~1timestamp", "value": timestamp_now()}),
    ];
    let api = Api::<ContainerRuntime>::namespaced(client.clone(), namespace);
    // keep other annotations: only create the map when there is none
    if !api
        .get(name)
        .await
        .expect("reading the ContainerRuntime")
        .annotations()
        .is_empty()
    {
        ops.remove(0);
    }
    if let Some(pc) = provider_config {
        ops.push(json!({"op": "add", "path": "/spec/providerConfig", "value": pc}));
    }
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .expect("annotating the ContainerRuntime");
}

pub use gardener_extension_runtime_kata::extension::readiness::not_ready_reason;

/// Polls `f` until it returns Some, or panics with the last observation after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => panic!("timed out waiting for {what}: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub async fn wait_ready(client: &Client, namespace: &str, name: &str) -> ContainerRuntime {
    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), namespace);
    eventually(Duration::from_secs(30), &format!("{name} ready"), || async {
        let cr = api.get(name).await.map_err(|e| e.to_string())?;
        match not_ready_reason(&cr) {
            None => Ok(cr),
            Some(r) => Err(r),
        }
    })
    .await
}

/// Waits until `name` reports a `lastError` with `ERR_CONFIGURATION_PROBLEM` and returns it.
pub async fn wait_configuration_problem(
    client: &Client,
    namespace: &str,
    name: &str,
) -> gardener_extension_runtime_kata::api::LastError {
    let api: Api<ContainerRuntime> = Api::namespaced(client.clone(), namespace);
    eventually(
        Duration::from_secs(20),
        &format!("{name}: a configuration problem"),
        || async {
            let cr = api.get(name).await.map_err(|e| e.to_string())?;
            match cr.status.and_then(|s| s.last_error) {
                Some(e) if e.codes.iter().any(|c| c == "ERR_CONFIGURATION_PROBLEM") => Ok(e),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}
