//! A cache fed by a watch in the background: the reflector store, whether the first list is in,
//! and a watch that stops with the last holder of the cache (nothing logs after the process said
//! it stopped).

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct WatchCache<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    synced: Arc<AtomicBool>,
    _watch: Arc<StopOnDrop>,
}

impl<K: Resource + 'static> Clone for WatchCache<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            synced: self.synced.clone(),
            _watch: self._watch.clone(),
        }
    }
}

struct StopOnDrop(tokio::task::AbortHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<K> WatchCache<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    /// Starts watching `api` with `config` (managedFields are dropped); `what` names the objects
    /// in the log line of a failing watch.
    pub fn start(api: Api<K>, config: watcher::Config, what: &'static str) -> Self {
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let first_list = synced.clone();
        let watch = watcher(api, config)
            .default_backoff()
            .modify(|o| o.managed_fields_mut().clear())
            .reflect(writer)
            .for_each(move |event| {
                match event {
                    Ok(watcher::Event::InitDone) => first_list.store(true, Ordering::Release),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "{what} watch failed, retrying"),
                }
                futures::future::ready(())
            });
        Self {
            store,
            synced,
            _watch: Arc::new(StopOnDrop(tokio::spawn(watch).abort_handle())),
        }
    }

    /// Whether the first list is in.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn store(&self) -> &Store<K> {
        &self.store
    }
}
