//! Which operation an object asks for, computed exactly as Gardener's `ComputeOperationType`.

use crate::api::{OPERATION_ANNOTATION, OperationState, OperationType};
use kube::ResourceExt;

use crate::api::ContainerRuntime;

pub const OP_RECONCILE: &str = "reconcile";
pub const OP_MIGRATE: &str = "migrate";
pub const OP_RESTORE: &str = "restore";
pub const OP_WAIT_FOR_STATE: &str = "wait-for-state";

pub fn operation_annotation(cr: &ContainerRuntime) -> Option<&str> {
    cr.annotations().get(OPERATION_ANNOTATION).map(String::as_str)
}

/// Migrate, Delete, Restore, Create, Reconcile in this order of precedence; a Create, Migrate or
/// Restore that did not succeed is repeated.
pub fn compute_operation_type(cr: &ContainerRuntime) -> OperationType {
    let annotation = operation_annotation(cr);
    if annotation == Some(OP_MIGRATE) {
        return OperationType::Migrate;
    }
    if cr.metadata.deletion_timestamp.is_some() {
        return OperationType::Delete;
    }
    if annotation == Some(OP_RESTORE) {
        return OperationType::Restore;
    }
    let last = cr.status.as_ref().and_then(|s| s.last_operation.as_ref());
    match last {
        None => OperationType::Create,
        Some(op) => match op.type_.known() {
            Some(t @ (OperationType::Create | OperationType::Migrate | OperationType::Restore))
                if op.state != OperationState::Succeeded =>
            {
                t
            }
            _ => OperationType::Reconcile,
        },
    }
}

/// The object was migrated away from this seed: only a new migrate or restore may touch it.
pub fn should_skip_operation(operation: OperationType, cr: &ContainerRuntime) -> bool {
    let migrated = cr
        .status
        .as_ref()
        .and_then(|s| s.last_operation.as_ref())
        .is_some_and(|op| op.type_ == OperationType::Migrate && op.state == OperationState::Succeeded);
    migrated && !matches!(operation, OperationType::Migrate | OperationType::Restore)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::{DefaultStatus, LastOperation};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn cr(annotation: Option<&str>, deleting: bool, last: Option<(OperationType, OperationState)>) -> ContainerRuntime {
        let mut cr = ContainerRuntime::for_pool("kata", "a", None);
        if let Some(a) = annotation {
            cr.annotations_mut().insert(OPERATION_ANNOTATION.into(), a.into());
        }
        if deleting {
            cr.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        }
        cr.status = last.map(|(type_, state)| DefaultStatus {
            last_operation: Some(LastOperation {
                type_: type_.into(),
                state: state.into(),
                progress: 100,
                description: String::new(),
                last_update_time: Time(k8s_openapi::jiff::Timestamp::now()),
            }),
            ..Default::default()
        });
        cr
    }

    use OperationState::*;
    use OperationType::*;

    #[test]
    fn precedence_follows_gardener() {
        assert_eq!(compute_operation_type(&cr(Some("migrate"), true, None)), Migrate);
        assert_eq!(compute_operation_type(&cr(Some("restore"), true, None)), Delete);
        assert_eq!(
            compute_operation_type(&cr(Some("restore"), false, Some((Reconcile, Succeeded)))),
            Restore
        );
        assert_eq!(compute_operation_type(&cr(Some("reconcile"), false, None)), Create);
        assert_eq!(
            compute_operation_type(&cr(None, false, Some((Reconcile, Error)))),
            Reconcile
        );
        assert_eq!(
            compute_operation_type(&cr(None, false, Some((Delete, Succeeded)))),
            Reconcile
        );
    }

    #[test]
    fn failed_create_migrate_restore_are_repeated() {
        for t in [Create, Migrate, Restore] {
            assert_eq!(compute_operation_type(&cr(None, false, Some((t, Error)))), t);
            assert_eq!(compute_operation_type(&cr(None, false, Some((t, Processing)))), t);
        }
        assert_eq!(
            compute_operation_type(&cr(None, false, Some((Create, Succeeded)))),
            Reconcile
        );
    }

    #[test]
    fn migrated_objects_are_skipped_unless_migrate_or_restore() {
        let migrated = cr(None, false, Some((Migrate, Succeeded)));
        assert!(should_skip_operation(Reconcile, &migrated));
        assert!(should_skip_operation(Delete, &migrated));
        assert!(!should_skip_operation(Restore, &migrated));
        assert!(!should_skip_operation(Migrate, &migrated));
        assert!(!should_skip_operation(
            Reconcile,
            &cr(None, false, Some((Migrate, Error)))
        ));
    }
}
