//! Waiting, within a reconcile, for gardener-resource-manager to apply what was written.
//!
//! A reconcile succeeds once the resource manager has applied the current generation of the
//! ManagedResources, as Gardener's own control-plane actuator waits for its ManagedResources. It
//! does not wait while the shoot is hibernated (its resource manager is scaled down) nor for a
//! ManagedResource no resource manager has ever reported on. A failure of the current
//! generation is reported at once; without any answer the wait ends after `APPLY_TIMEOUT` with
//! what the resource manager said last.

use super::Ensured;
use super::applied::{AppliedState, Failure, applied_state};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a reconcile waits for the resource manager before it reports an error.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyCheck {
    /// Applied, or nothing to wait for.
    Done,
    /// Look again shortly.
    Wait(String),
    /// Report this error.
    Failed(String),
}

/// A generation of a ManagedResource and when it was first seen pending (wall clock, to compare
/// with the resource manager's condition times, and monotonic, to time the wait).
type FirstSeen = (i64, Timestamp, Instant);

/// When each pending generation was first seen (written, or found pending), per ManagedResource.
#[derive(Default)]
pub struct ApplyTracker {
    pending: Mutex<HashMap<(String, String), FirstSeen>>,
}

fn describe(name: &str, f: &Failure) -> String {
    format!(
        "gardener-resource-manager could not apply ManagedResource {name} ({}): {}",
        f.reason,
        crate::extension::truncate_for_status(&f.message)
    )
}

impl ApplyTracker {
    pub fn check(&self, ensured: &Ensured, hibernated: bool) -> ApplyCheck {
        let mr = &ensured.managed_resource;
        let name = mr.name_any();
        let key = (mr.namespace().unwrap_or_default(), name.clone());
        let generation = mr.metadata.generation.unwrap_or(0);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let state = applied_state(mr);
        if matches!(state, AppliedState::Applied | AppliedState::NeverObserved) {
            pending.remove(&key);
            return ApplyCheck::Done;
        }
        let first_seen = pending
            .entry(key)
            .and_modify(|e| {
                if e.0 != generation {
                    *e = (generation, Timestamp::now(), Instant::now());
                }
            })
            .or_insert_with(|| (generation, Timestamp::now(), Instant::now()));
        let (_, written_at, since) = *first_seen;
        match state {
            // the secret it could not read is back; it re-applies on the secret event
            _ if ensured.secret_recreated => ApplyCheck::Wait(format!(
                "re-created the secret of ManagedResource {name}; waiting for gardener-resource-manager"
            )),
            AppliedState::Failed(f) => ApplyCheck::Failed(describe(&name, &f)),
            _ if hibernated => ApplyCheck::Done,
            // a failure that happened after this generation was written is about this generation
            AppliedState::Pending { failure: Some(f) } if f.since >= written_at => {
                ApplyCheck::Failed(describe(&name, &f))
            }
            AppliedState::Pending { failure } if since.elapsed() >= APPLY_TIMEOUT => {
                ApplyCheck::Failed(match failure {
                    Some(f) => format!("{} (not applied after {APPLY_TIMEOUT:?})", describe(&name, &f)),
                    None => format!(
                        "gardener-resource-manager has not applied generation {generation} of ManagedResource {name} after {APPLY_TIMEOUT:?}"
                    ),
                })
            }
            _ => ApplyCheck::Wait(format!(
                "waiting for gardener-resource-manager to apply generation {generation} of ManagedResource {name}"
            )),
        }
    }
}
