//! gardenlet's readiness rule for extension objects (`health.CheckExtensionObject`), so tests,
//! benchmarks and the local demo judge the extension exactly as gardenlet does.

use crate::api::{ContainerRuntime, OPERATION_ANNOTATION, OperationState, TIMESTAMP_ANNOTATION};
use kube::ResourceExt;

/// `None` when gardenlet would consider the object ready, else why not.
pub fn not_ready_reason(cr: &ContainerRuntime) -> Option<String> {
    let Some(status) = &cr.status else {
        return Some("no status".into());
    };
    if let Some(e) = &status.last_error {
        return Some(format!("lastError: {}", e.description));
    }
    if status.observed_generation != cr.metadata.generation {
        return Some(format!(
            "observedGeneration {:?} != generation {:?}",
            status.observed_generation, cr.metadata.generation
        ));
    }
    if let Some(op) = cr.annotations().get(OPERATION_ANNOTATION) {
        return Some(format!("operation annotation {op:?} still present"));
    }
    let Some(last) = &status.last_operation else {
        return Some("no lastOperation".into());
    };
    if last.state != OperationState::Succeeded {
        return Some(format!("lastOperation {:?} is {:?}", last.type_, last.state));
    }
    if let Some(ts) = cr.annotations().get(TIMESTAMP_ANNOTATION) {
        match ts.parse::<k8s_openapi::jiff::Timestamp>() {
            // gardenlet compares at second precision
            Ok(ts) if last.last_update_time.0.as_second() < ts.as_second() => {
                return Some("lastOperation is older than the gardener.cloud/timestamp annotation".into());
            }
            Ok(_) => {}
            Err(_) => return Some(format!("unparsable timestamp annotation {ts:?}")),
        }
    }
    None
}
