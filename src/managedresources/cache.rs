//! A watch-fed cache of our own ManagedResources (label `origin`), so that comparing desired with
//! existing costs no API request. Small objects (spec and metadata only), about 1 KiB each.

use crate::api::ManagedResource;
use crate::runtime::watch_cache::WatchCache;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client};
use std::sync::Arc;

#[derive(Clone)]
pub struct ManagedResourceCache(WatchCache<ManagedResource>);

impl ManagedResourceCache {
    /// Starts watching the ManagedResources labelled `origin=<origin>` in the background, until
    /// the last clone is dropped.
    pub fn start(client: Client, origin: &str) -> Self {
        let config = watcher::Config::default().labels(&format!("{}={origin}", super::ORIGIN_LABEL));
        Self(WatchCache::start(Api::all(client), config, "ManagedResource"))
    }

    /// Whether the first list is in.
    pub fn is_synced(&self) -> bool {
        self.0.is_synced()
    }

    /// `None` until the first list is in; then the cached object, if any.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Option<Arc<ManagedResource>>> {
        self.is_synced()
            .then(|| self.0.store().get(&ObjectRef::new(name).within(namespace)))
    }
}
