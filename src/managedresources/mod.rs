//! ManagedResources for the shoot: manifests in immutable, content-hashed Secrets, applied into the
//! shoot by the shoot's gardener-resource-manager. Written declaratively on every reconcile, but
//! without any write when nothing changed.

use crate::api::ManagedResource;
use crate::api::managedresource::ManagedResourceSpec;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{LocalObjectReference, Secret};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use sha2::{Digest, Sha256};

mod applied;
mod cache;
mod wait;
pub use applied::{AppliedState, Failure, applied_state};
pub use cache::ManagedResourceCache;
use std::collections::BTreeMap;
pub use wait::{APPLY_TIMEOUT, ApplyCheck, ApplyTracker};

pub const ORIGIN_LABEL: &str = "origin";
pub const GARBAGE_COLLECTABLE_LABEL: &str = "resources.gardener.cloud/garbage-collectable-reference";
/// gardener-resource-manager's garbage collector keeps a labelled secret only while some object
/// carries `reference.resources.gardener.cloud/secret-<first 8 hex of sha256(name)>: <name>`.
pub const REFERENCE_ANNOTATION_PREFIX: &str = "reference.resources.gardener.cloud/";
pub const NO_CLEANUP_LABEL: &str = "shoot.gardener.cloud/no-cleanup";
pub const FIELD_MANAGER: &str = "gardener-extension-runtime-kata";

#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct ManagedResourceError {
    pub context: String,
    #[source]
    pub source: kube::Error,
}

fn ctx(context: String) -> impl FnOnce(kube::Error) -> ManagedResourceError {
    move |source| ManagedResourceError { context, source }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Manifests of one ManagedResource: data key → YAML document(s).
pub type Manifests = BTreeMap<String, String>;

/// `managedresource-<name>-<first 8 hex digits of the SHA-256 of the data>`.
pub fn secret_name(mr_name: &str, data: &Manifests) -> String {
    let mut h = Sha256::new();
    for (k, v) in data {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v.as_bytes());
    }
    let digest = hex::encode(h.finalize());
    format!("managedresource-{mr_name}-{}", &digest[..8])
}

/// The annotation key Gardener's ManagedResource builder writes for a referenced secret.
pub fn secret_reference_key(secret: &str) -> String {
    let digest = hex::encode(Sha256::digest(secret.as_bytes()));
    format!("{REFERENCE_ANNOTATION_PREFIX}secret-{}", &digest[..8])
}

fn reference_annotations(refs: &[LocalObjectReference]) -> BTreeMap<String, String> {
    refs.iter()
        .map(|r| (secret_reference_key(&r.name), r.name.clone()))
        .collect()
}

fn existing_reference_annotations(mr: &ManagedResource) -> BTreeMap<String, String> {
    mr.annotations()
        .iter()
        .filter(|(k, _)| k.starts_with(REFERENCE_ANNOTATION_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The immutable Secret holding the manifests.
pub fn build_secret(namespace: &str, mr_name: &str, origin: &str, data: &Manifests) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(mr_name, data)),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([
                (GARBAGE_COLLECTABLE_LABEL.into(), "true".into()),
                (ORIGIN_LABEL.into(), origin.into()),
            ])),
            ..Default::default()
        },
        immutable: Some(true),
        type_: Some("Opaque".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The ManagedResource pointing at `secret`; class nil means "apply into the shoot".
pub fn build_managed_resource(namespace: &str, name: &str, origin: &str, secret: &str) -> ManagedResource {
    let mut mr = ManagedResource::new(
        name,
        ManagedResourceSpec {
            secret_refs: vec![LocalObjectReference { name: secret.into() }],
            inject_labels: Some(BTreeMap::from([(NO_CLEANUP_LABEL.into(), "true".into())])),
            keep_objects: Some(false),
            ..Default::default()
        },
    );
    mr.metadata.namespace = Some(namespace.into());
    mr.metadata.labels = Some(BTreeMap::from([(ORIGIN_LABEL.into(), origin.into())]));
    // without these the seed's resource manager deletes the secret as unreferenced
    mr.metadata.annotations = Some(reference_annotations(&mr.spec.secret_refs));
    mr
}

/// True when the existing ManagedResource already is what we would write.
fn up_to_date(existing: &ManagedResource, desired: &ManagedResource) -> bool {
    existing.spec.secret_refs == desired.spec.secret_refs
        && existing.spec.inject_labels == desired.spec.inject_labels
        && existing.spec.keep_objects.unwrap_or(false) == desired.spec.keep_objects.unwrap_or(false)
        && existing.spec.class.is_none()
        && existing.labels().get(ORIGIN_LABEL) == desired.labels().get(ORIGIN_LABEL)
        && existing_reference_annotations(existing) == existing_reference_annotations(desired)
}

/// What `ensure` found and left behind.
#[derive(Clone, Debug)]
pub struct Ensured {
    /// The ManagedResource as last seen: the write's response, or the cached object.
    pub managed_resource: ManagedResource,
    /// Whether the ManagedResource was written.
    pub written: bool,
    /// Whether its secret was missing and had to be created again.
    pub secret_recreated: bool,
}

/// Reads and writes the ManagedResources of one extension (one `origin`).
#[derive(Clone)]
pub struct ManagedResources {
    client: Client,
    origin: String,
    cache: Option<ManagedResourceCache>,
}

impl ManagedResources {
    pub fn new(client: Client, origin: impl Into<String>) -> Self {
        Self {
            client,
            origin: origin.into(),
            cache: None,
        }
    }

    /// Compares against a watch-fed cache instead of reading each ManagedResource.
    pub fn with_cache(mut self) -> Self {
        self.cache = Some(ManagedResourceCache::start(self.client.clone(), &self.origin));
        self
    }

    /// The watch-fed cache, if enabled (the health checks read the same one).
    pub fn cache(&self) -> Option<&ManagedResourceCache> {
        self.cache.as_ref()
    }

    async fn current(&self, namespace: &str, name: &str) -> Result<Option<ManagedResource>, ManagedResourceError> {
        if let Some(cached) = self.cache.as_ref().and_then(|c| c.get(namespace, name)) {
            return Ok(cached.map(|mr| (*mr).clone()));
        }
        Api::<ManagedResource>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(ctx(format!("reading ManagedResource {namespace}/{name}")))
    }

    /// Creates or updates ManagedResource `name` with `data`. Secrets the ManagedResource
    /// referenced before are deleted after the switch.
    pub async fn ensure(&self, namespace: &str, name: &str, data: &Manifests) -> Result<Ensured, ManagedResourceError> {
        let mrs: Api<ManagedResource> = Api::namespaced(self.client.clone(), namespace);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = build_secret(namespace, name, &self.origin, data);
        let secret_name = secret.name_any();
        let desired = build_managed_resource(namespace, name, &self.origin, &secret_name);
        // The secret is created on every reconcile, whatever the cache says: it may have been
        // deleted behind our back, and a create that meets the existing one costs one request.
        let secret_recreated = match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => true,
            // same name means same content: the secret is immutable and content-addressed
            Err(kube::Error::Api(s)) if s.code == 409 => false,
            Err(e) => return Err(ctx(format!("creating Secret {namespace}/{secret_name}"))(e)),
        };
        // a lagging cache at worst causes an idempotent re-apply
        let existing = self.current(namespace, name).await?;
        if let Some(mr) = existing.as_ref().filter(|mr| up_to_date(mr, &desired)) {
            if secret_recreated {
                tracing::warn!(namespace, secret = %secret_name, managed_resource = name, "re-created a missing ManagedResource secret");
                // the resource manager reacts to secret updates, not creations: ask it to reconcile
                // the ManagedResource the Gardener way (it removes the annotation itself)
                let nudge = serde_json::json!({"metadata": {"annotations": {"gardener.cloud/operation": "reconcile"}}});
                mrs.patch(name, &PatchParams::default(), &Patch::Merge(&nudge))
                    .await
                    .map_err(ctx(format!(
                        "requesting a reconcile of ManagedResource {namespace}/{name}"
                    )))?;
            }
            return Ok(Ensured {
                managed_resource: mr.clone(),
                written: false,
                secret_recreated,
            });
        }
        let applied = mrs
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&desired),
            )
            .await
            .map_err(ctx(format!("applying ManagedResource {namespace}/{name}")))?;
        let stale = existing
            .map(|mr| mr.spec.secret_refs)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.name != secret_name);
        for old in stale {
            delete_ignoring_absence(&secrets, &old.name, namespace).await?;
        }
        Ok(Ensured {
            managed_resource: applied,
            written: true,
            secret_recreated: false,
        })
    }

    /// Deletes the ManagedResource and its secrets. Does not wait for gardener-resource-manager.
    pub async fn delete(&self, namespace: &str, name: &str) -> Result<(), ManagedResourceError> {
        let mrs: Api<ManagedResource> = Api::namespaced(self.client.clone(), namespace);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let Some(mr) = mrs
            .get_opt(name)
            .await
            .map_err(ctx(format!("reading ManagedResource {namespace}/{name}")))?
        else {
            return Ok(());
        };
        if mr.metadata.deletion_timestamp.is_none() {
            match mrs.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(ctx(format!("deleting ManagedResource {namespace}/{name}"))(e)),
            }
        }
        for r in mr.spec.secret_refs {
            delete_ignoring_absence(&secrets, &r.name, namespace).await?;
        }
        Ok(())
    }

    /// Names of our ManagedResources in `namespace` starting with `prefix`, deleting ones
    /// included, read from the apiserver (not the cache) because deletion order depends on it.
    pub async fn names_with_prefix(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, ManagedResourceError> {
        let mrs: Api<ManagedResource> = Api::namespaced(self.client.clone(), namespace);
        let params = kube::api::ListParams::default().labels(&format!("{ORIGIN_LABEL}={}", self.origin));
        Ok(mrs
            .list_metadata(&params)
            .await
            .map_err(ctx(format!("listing ManagedResources in {namespace}")))?
            .items
            .into_iter()
            .map(|m| m.name_any())
            .filter(|n| n.starts_with(prefix))
            .collect())
    }

    /// Whether the ManagedResource still exists (e.g. while the resource manager cleans up).
    pub async fn exists(&self, namespace: &str, name: &str) -> Result<bool, ManagedResourceError> {
        let mrs: Api<ManagedResource> = Api::namespaced(self.client.clone(), namespace);
        Ok(mrs
            .get_metadata_opt(name)
            .await
            .map_err(ctx(format!("reading ManagedResource {namespace}/{name}")))?
            .is_some())
    }

    /// Tells the resource manager to leave the shoot objects in place when the ManagedResource
    /// goes (control-plane migration).
    pub async fn set_keep_objects(&self, namespace: &str, name: &str) -> Result<(), ManagedResourceError> {
        let mrs: Api<ManagedResource> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({"spec": {"keepObjects": true}});
        match mrs.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(ctx(format!(
                "setting keepObjects on ManagedResource {namespace}/{name}"
            ))(e)),
        }
    }
}

async fn delete_ignoring_absence(
    secrets: &Api<Secret>,
    name: &str,
    namespace: &str,
) -> Result<(), ManagedResourceError> {
    match secrets.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(ctx(format!("deleting Secret {namespace}/{name}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_content_addressed() {
        let a = Manifests::from([("x.yaml".to_string(), "a: 1\n".to_string())]);
        let b = Manifests::from([("x.yaml".to_string(), "a: 2\n".to_string())]);
        assert_eq!(secret_name("mr", &a), secret_name("mr", &a.clone()));
        assert_ne!(secret_name("mr", &a), secret_name("mr", &b));
        assert!(secret_name("mr", &a).starts_with("managedresource-mr-"));
        assert_eq!(secret_name("mr", &a).len(), "managedresource-mr-".len() + 8);
        // key/value boundaries are part of the hash
        let c = Manifests::from([("x.yamla".to_string(), ": 1\n".to_string())]);
        assert_ne!(secret_name("mr", &a), secret_name("mr", &c));
    }

    #[test]
    fn secret_is_immutable_and_collectable() {
        let data = Manifests::from([("x.yaml".to_string(), "a: 1\n".to_string())]);
        let s = build_secret("ns", "mr", "extension-runtime-kata", &data);
        assert_eq!(s.immutable, Some(true));
        assert_eq!(s.labels()[GARBAGE_COLLECTABLE_LABEL], "true");
        let mr = build_managed_resource("ns", "mr", "extension-runtime-kata", &s.name_any());
        assert_eq!(mr.labels()[ORIGIN_LABEL], "extension-runtime-kata");
        assert_eq!(mr.spec.inject_labels.as_ref().unwrap()[NO_CLEANUP_LABEL], "true");
        assert!(up_to_date(&mr, &mr.clone()));
        let mut kept = mr.clone();
        kept.spec.keep_objects = Some(true);
        assert!(!up_to_date(&kept, &mr));
        // a ManagedResource written before the reference annotations existed is rewritten
        let mut unannotated = mr.clone();
        unannotated.metadata.annotations = None;
        assert!(!up_to_date(&unannotated, &mr));
    }

    #[test]
    fn reference_annotation_is_the_one_gardeners_builder_writes() {
        // Gardener: "reference.resources.gardener.cloud/" + kind + "-" + sha256hex(name)[:8];
        // the digest below is `echo -n <name> | sha256sum`
        let name = "managedresource-extension-runtime-kata-0123abcd";
        let key = secret_reference_key(name);
        assert_eq!(key, "reference.resources.gardener.cloud/secret-45e00c4f");
        let mr = build_managed_resource("ns", "mr", "o", name);
        assert_eq!(mr.annotations().get(&key).map(String::as_str), Some(name));
        assert_eq!(mr.annotations().len(), 1);
    }
}
