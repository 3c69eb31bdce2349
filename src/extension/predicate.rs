//! Which watch events start a reconcile, mirroring Gardener's `HasClass`, `HasType` and
//! operation-annotation (or generation-changed) predicates. kube's watcher reports applied
//! objects without their previous version, so the filter remembers what it saw last.

use super::operation::{OP_MIGRATE, OP_RECONCILE, OP_RESTORE, OP_WAIT_FOR_STATE, operation_annotation};
use super::reconciler;
use crate::api::{ContainerRuntime, TIMESTAMP_ANNOTATION};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

#[derive(Clone, Debug)]
pub struct PredicateConfig {
    pub extension_type: String,
    /// Classes to serve; empty means `shoot`. A nil class on an object counts as `shoot`.
    pub classes: Vec<String>,
    pub ignore_operation_annotation: bool,
}

impl PredicateConfig {
    /// Gardener's `HasType` and `HasClass`: the object is ours to serve.
    pub fn responsible_for(&self, cr: &ContainerRuntime) -> bool {
        let class = cr.spec.class.as_deref().unwrap_or("shoot");
        let class_ok = if self.classes.is_empty() {
            class == "shoot"
        } else {
            self.classes.iter().any(|c| c == class)
        };
        cr.spec.type_ == self.extension_type && class_ok
    }
}

struct Seen {
    generation: Option<i64>,
    status: u64,
    /// gardenlet's request as last seen: operation annotation and timestamp.
    request: Option<(String, Option<String>)>,
}

pub struct EventFilter {
    config: PredicateConfig,
    seen: HashMap<ObjectRef<ContainerRuntime>, Seen>,
}

fn status_hash(cr: &ContainerRuntime) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_string(&cr.status).unwrap_or_default().hash(&mut h);
    h.finish()
}

impl EventFilter {
    pub fn new(config: PredicateConfig) -> Self {
        Self {
            config,
            seen: HashMap::new(),
        }
    }

    /// An object was created or updated: should it be reconciled?
    pub fn applied(&mut self, cr: &ContainerRuntime) -> bool {
        if !self.config.responsible_for(cr) {
            return false;
        }
        let now = Seen {
            generation: cr.metadata.generation,
            status: status_hash(cr),
            request: operation_annotation(cr).map(|op| {
                let timestamp = cr.annotations().get(TIMESTAMP_ANNOTATION).cloned();
                (op.to_string(), timestamp)
            }),
        };
        let deleting = cr.metadata.deletion_timestamp.is_some();
        let triggering_annotation = matches!(operation_annotation(cr), Some(OP_RECONCILE | OP_RESTORE | OP_MIGRATE));
        let pass = match self.seen.get(&ObjectRef::from_obj(cr)) {
            // a create event, or the first sight after a restart: whatever gardenlet would not yet
            // accept as done is work (a crash may have cut a reconcile short anywhere)
            None if self.config.ignore_operation_annotation => true,
            None => {
                let waiting = operation_annotation(cr) == Some(OP_WAIT_FOR_STATE);
                triggering_annotation || deleting || !waiting && !reconciler::up_to_date(cr)
            }
            Some(prev) if self.config.ignore_operation_annotation => {
                prev.generation != now.generation || deleting && prev.status == now.status
            }
            // A request passes once: the trigger stays on the object until the work is done, and
            // the status writes of that work must not start it again.
            Some(prev) => {
                triggering_annotation && (prev.request != now.request || prev.generation != now.generation)
                    || deleting && prev.status == now.status
            }
        };
        self.seen.insert(ObjectRef::from_obj(cr), now);
        pass
    }

    /// An object is gone: delete events never reconcile.
    pub fn deleted(&mut self, cr: &ContainerRuntime) {
        self.seen.remove(&ObjectRef::from_obj(cr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::OPERATION_ANNOTATION;
    use crate::api::OperationState;
    use crate::api::common::{DefaultStatus, LastOperation, OperationType};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::ResourceExt;

    fn cr(type_: &str, class: Option<&str>) -> ContainerRuntime {
        let mut cr = ContainerRuntime::for_pool(type_, "a", None);
        cr.spec.class = class.map(Into::into);
        cr.metadata.namespace = Some("shoot--p--s".into());
        cr.metadata.generation = Some(1);
        cr
    }

    fn succeeded(mut cr: ContainerRuntime) -> ContainerRuntime {
        cr.status = Some(DefaultStatus {
            observed_generation: cr.metadata.generation,
            last_operation: Some(LastOperation {
                type_: OperationType::Reconcile.into(),
                state: OperationState::Succeeded.into(),
                progress: 100,
                description: "ok".into(),
                last_update_time: Time(k8s_openapi::jiff::Timestamp::now()),
            }),
            ..Default::default()
        });
        cr
    }

    fn annotated(mut cr: ContainerRuntime, op: &str) -> ContainerRuntime {
        cr.annotations_mut().insert(OPERATION_ANNOTATION.into(), op.into());
        cr
    }

    fn filter(ignore: bool, classes: &[&str]) -> EventFilter {
        EventFilter::new(PredicateConfig {
            extension_type: "kata".into(),
            classes: classes.iter().map(|c| c.to_string()).collect(),
            ignore_operation_annotation: ignore,
        })
    }

    #[test]
    fn type_and_class_are_filtered() {
        let mut f = filter(false, &[]);
        assert!(!f.applied(&cr("gvisor", None)));
        assert!(f.applied(&cr("kata", None)));
        assert!(!filter(false, &[]).applied(&cr("kata", Some("seed"))));
        assert!(filter(false, &["seed"]).applied(&cr("kata", Some("seed"))));
        assert!(!filter(false, &["seed"]).applied(&cr("kata", None)));
    }

    #[test]
    fn create_passes_unless_succeeded_without_annotation() {
        assert!(filter(false, &[]).applied(&cr("kata", None)));
        assert!(!filter(false, &[]).applied(&succeeded(cr("kata", None))));
        assert!(filter(false, &[]).applied(&annotated(succeeded(cr("kata", None)), "reconcile")));
        assert!(!filter(false, &[]).applied(&annotated(succeeded(cr("kata", None)), "wait-for-state")));
    }

    #[test]
    fn updates_need_an_annotation_or_a_deletion_without_status_change() {
        let mut f = filter(false, &[]);
        let base = succeeded(cr("kata", None));
        assert!(!f.applied(&base));
        let mut spec_change = base.clone();
        spec_change.metadata.generation = Some(2);
        assert!(!f.applied(&spec_change), "spec changes wait for gardenlet's annotation");
        assert!(f.applied(&annotated(spec_change.clone(), "reconcile")));
        let mut deleting = spec_change.clone();
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert!(f.applied(&deleting));
        let mut status_write = deleting.clone();
        status_write.status.as_mut().unwrap().observed_generation = Some(9);
        assert!(
            !f.applied(&status_write),
            "our own status writes during deletion do not retrigger"
        );
    }

    #[test]
    fn ignore_mode_follows_generation() {
        let mut f = filter(true, &[]);
        let base = succeeded(cr("kata", None));
        assert!(f.applied(&base));
        assert!(!f.applied(&base));
        let mut changed = base.clone();
        changed.metadata.generation = Some(2);
        assert!(f.applied(&changed));
        f.deleted(&changed);
        assert!(f.applied(&changed), "forgotten objects count as new");
    }

    #[test]
    fn after_a_restart_whatever_gardenlet_would_not_accept_is_work() {
        // a crash after the trigger was consumed but before the status caught up
        let mut lagging = succeeded(cr("kata", None));
        lagging.metadata.generation = Some(2);
        assert!(filter(false, &[]).applied(&lagging), "observedGeneration < generation");
        let mut requested_later = succeeded(cr("kata", None));
        let later = k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(60);
        requested_later
            .annotations_mut()
            .insert(TIMESTAMP_ANNOTATION.into(), later.to_string());
        assert!(
            filter(false, &[]).applied(&requested_later),
            "last operation older than gardenlet's timestamp"
        );
        let mut processing = succeeded(cr("kata", None));
        processing
            .status
            .as_mut()
            .unwrap()
            .last_operation
            .as_mut()
            .unwrap()
            .state = OperationState::Processing.into();
        assert!(filter(false, &[]).applied(&processing));
    }

    #[test]
    fn a_request_passes_once_while_its_work_writes_the_status() {
        let mut f = filter(false, &[]);
        let base = succeeded(cr("kata", None));
        assert!(!f.applied(&base));
        let mut requested = annotated(base.clone(), "reconcile");
        requested.metadata.generation = Some(2);
        requested
            .annotations_mut()
            .insert(TIMESTAMP_ANNOTATION.into(), "2026-01-01T00:00:00Z".into());
        assert!(f.applied(&requested));
        let mut processing = requested.clone();
        processing
            .status
            .as_mut()
            .unwrap()
            .last_operation
            .as_mut()
            .unwrap()
            .state = OperationState::Processing.into();
        assert!(!f.applied(&processing), "our own Processing write");
        let mut done = processing.clone();
        done.status.as_mut().unwrap().observed_generation = Some(2);
        assert!(
            !f.applied(&done),
            "our own Succeeded write, before the trigger is removed"
        );
        let mut again = done.clone();
        again
            .annotations_mut()
            .insert(TIMESTAMP_ANNOTATION.into(), "2026-01-01T00:01:00Z".into());
        assert!(f.applied(&again), "gardenlet asked again");
        let mut spec_change = again.clone();
        spec_change.metadata.generation = Some(3);
        assert!(f.applied(&spec_change), "a spec change under the same trigger");
    }
}
