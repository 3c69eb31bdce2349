//! Which watch events start a reconcile, mirroring Gardener's `HasClass`, `HasType` and
//! operation-annotation (or generation-changed) predicates. kube's watcher reports applied
//! objects without their previous version, so the filter remembers what it saw last.

use super::operation::{OP_MIGRATE, OP_RECONCILE, OP_RESTORE, operation_annotation};
use crate::api::{ContainerRuntime, OperationState};
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
        };
        let previous = self.seen.insert(ObjectRef::from_obj(cr), now);
        let deleting = cr.metadata.deletion_timestamp.is_some();
        let triggering_annotation = matches!(operation_annotation(cr), Some(OP_RECONCILE | OP_RESTORE | OP_MIGRATE));
        match previous {
            // a create event (or the first sight after a restart)
            None if self.config.ignore_operation_annotation => true,
            None => {
                let succeeded = cr
                    .status
                    .as_ref()
                    .and_then(|s| s.last_operation.as_ref())
                    .is_some_and(|op| op.state == OperationState::Succeeded);
                triggering_annotation || deleting || !succeeded
            }
            Some(prev) if self.config.ignore_operation_annotation => {
                prev.generation != cr.metadata.generation || deleting && prev.status == status_hash(cr)
            }
            Some(prev) => triggering_annotation || deleting && prev.status == status_hash(cr),
        }
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
}
