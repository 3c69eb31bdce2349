//! A watch-fed cache of our own ManagedResources (label `origin`), so that comparing desired with
//! existing costs no API request. Small objects (spec and metadata only), about 1 KiB each.

use crate::api::ManagedResource;
use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone)]
pub struct ManagedResourceCache {
    store: Store<ManagedResource>,
    synced: Arc<AtomicBool>,
}

impl ManagedResourceCache {
    /// Starts watching the ManagedResources labelled `origin=<origin>` in the background.
    pub fn start(client: Client, origin: &str) -> Self {
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let config = watcher::Config::default().labels(&format!("{}={origin}", super::ORIGIN_LABEL));
        let flag = synced.clone();
        tokio::spawn(
            watcher(Api::<ManagedResource>::all(client), config)
                .default_backoff()
                .modify(|mr| mr.managed_fields_mut().clear())
                .reflect(writer)
                .for_each(move |event| {
                    match event {
                        Ok(watcher::Event::InitDone) => flag.store(true, Ordering::Release),
                        Err(e) => tracing::warn!(error = %e, "ManagedResource watch failed, retrying"),
                        _ => {}
                    }
                    futures::future::ready(())
                }),
        );
        Self { store, synced }
    }

    /// Whether the first list is in.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// `None` until the first list is in; then the cached object, if any.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Option<Arc<ManagedResource>>> {
        self.synced
            .load(Ordering::Acquire)
            .then(|| self.store.get(&ObjectRef::new(name).within(namespace)))
    }
}
