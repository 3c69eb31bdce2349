//! The seed's gardener-resource-manager (class `seed`, garbage collector on, as gardenlet runs it)
//! over the extension's live ManagedResource secrets. Its garbage collector deletes every secret
//! labelled `resources.gardener.cloud/garbage-collectable-reference=true` that no object
//! references by a `reference.resources.gardener.cloud/secret-<hash>` annotation, but only once
//! the secret is older than ten minutes (hard-coded in Gardener). So this test waits that long;
//! `hack/test.sh` runs it beside the other test binaries.

mod common;

use common::*;
use gardener_extension_runtime_kata::api::managedresource::ManagedResource;
use gardener_extension_runtime_kata::kata::requirements::Requirements;
use gardener_extension_runtime_kata::testenv::{ResourceManager, ResourceManagerOptions, TestEnv};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use std::collections::BTreeMap;
use std::time::Duration;

/// Gardener's `MinimumObjectLifetime` for garbage collection.
const MINIMUM_AGE: Duration = Duration::from_secs(600);

#[tokio::test]
async fn the_seeds_garbage_collector_leaves_live_managed_resource_secrets_alone() {
    let env = TestEnv::shared();
    let client = env.client().await;
    let ns = env.namespace("gc").await;
    let fc = kata_config(serde_json::json!({"hypervisors": ["qemu", "fc"]}));
    create_cluster(
        &client,
        &ns,
        shoot("local", &[pool("a", Some(fc.clone())), pool("b", None)], false),
    )
    .await;
    let _controller = start_controller(client.clone(), &ns, Requirements::default()).await;
    create_cr(&client, &ns, "a", Some(fc)).await;
    create_cr(&client, &ns, "b", None).await;
    wait_ready(&client, &ns, "kata-a").await;
    wait_ready(&client, &ns, "kata-b").await;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    // a control: collectable, referenced by nothing; it must go, or the collector never ran
    let orphan = Secret {
        metadata: ObjectMeta {
            name: Some("orphan".into()),
            labels: Some(BTreeMap::from([(
                "resources.gardener.cloud/garbage-collectable-reference".into(),
                "true".into(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &orphan).await.unwrap();
    let ours: Vec<String> = Api::<ManagedResource>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .flat_map(|mr| mr.spec.secret_refs.iter().map(|r| r.name.clone()))
        .collect();
    assert_eq!(ours.len(), 3, "{ours:?}");

    // wait until every secret is old enough to be a candidate
    let newest = secrets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|s| s.metadata.creation_timestamp.clone())
        .map(|t| t.0)
        .max()
        .unwrap();
    let due = newest + k8s_openapi::jiff::SignedDuration::try_from(MINIMUM_AGE + Duration::from_secs(5)).unwrap();
    let wait = due.duration_since(k8s_openapi::jiff::Timestamp::now());
    if wait.is_positive() {
        tokio::time::sleep(Duration::try_from(wait).unwrap()).await;
    }

    // the collector runs once at start-up
    let rm = ResourceManager::start(env, env, ResourceManagerOptions::for_seed(Duration::from_secs(3600)))
        .await
        .expect("the seed's gardener-resource-manager");
    eventually(Duration::from_secs(60), "the orphan collected", || async {
        match secrets.get_opt("orphan").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err(format!("still there; resource manager log:\n{}", rm.log_tail())),
        }
    })
    .await;
    let left: Vec<String> = secrets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| s.name_any())
        .collect();
    for s in &ours {
        assert!(left.contains(s), "live secret {s} was collected; left: {left:?}");
    }
    // and the pools keep reconciling on them
    annotate(&client, &ns, "kata-a", "reconcile", None).await;
    wait_ready(&client, &ns, "kata-a").await;
}
