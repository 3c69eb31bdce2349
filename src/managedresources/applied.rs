//! What gardener-resource-manager reported about applying a ManagedResource.
//!
//! The resource manager writes `status.observedGeneration` only after a successful apply; a
//! failure updates the `ResourcesApplied` condition alone. So a failure of the current generation
//! shows as an outdated observed generation plus a `False` condition that changed after the
//! generation was written.

use crate::api::ManagedResource;
use k8s_openapi::jiff::Timestamp;

pub const RESOURCES_APPLIED: &str = "ResourcesApplied";

/// A failure the resource manager reported, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub message: String,
    pub since: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppliedState {
    /// No resource manager has reported on this ManagedResource yet (or none runs for it).
    NeverObserved,
    /// The current generation is applied.
    Applied,
    /// The current generation is not applied yet; `failure` is the last failure reported, which
    /// may belong to an earlier generation (compare `since` with when this one was written).
    Pending { failure: Option<Failure> },
    /// The current generation was applied and applying it again now fails.
    Failed(Failure),
}

pub fn applied_state(mr: &ManagedResource) -> AppliedState {
    let Some(status) = mr
        .status
        .as_ref()
        .filter(|s| s.observed_generation.is_some() || !s.conditions.is_empty())
    else {
        return AppliedState::NeverObserved;
    };
    let condition = status.conditions.iter().find(|c| c.type_ == RESOURCES_APPLIED);
    let failure = condition.filter(|c| c.status == "False").map(|c| Failure {
        reason: c.reason.clone(),
        message: c.message.clone(),
        since: c.last_transition_time.0,
    });
    let current = status.observed_generation.is_some() && status.observed_generation == mr.metadata.generation;
    match (current, condition.map(|c| c.status.as_str()), failure) {
        (true, Some("True"), _) => AppliedState::Applied,
        (true, _, Some(f)) => AppliedState::Failed(f),
        (_, _, failure) => AppliedState::Pending { failure },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::Condition;
    use crate::api::managedresource::ManagedResourceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn mr(generation: i64, observed: Option<i64>, applied: Option<(&str, &str)>) -> ManagedResource {
        let mut mr = ManagedResource::new("mr", Default::default());
        mr.metadata.generation = Some(generation);
        let at = Time("2026-01-01T00:00:00Z".parse().unwrap());
        if observed.is_some() || applied.is_some() {
            mr.status = Some(ManagedResourceStatus {
                observed_generation: observed,
                conditions: applied
                    .map(|(status, reason)| Condition {
                        type_: RESOURCES_APPLIED.into(),
                        status: status.into(),
                        last_transition_time: at.clone(),
                        last_update_time: at.clone(),
                        reason: reason.into(),
                        message: "msg".into(),
                        codes: vec![],
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            });
        }
        mr
    }

    #[test]
    fn applied_counts_only_for_the_current_generation() {
        let failure = Failure {
            reason: "ApplyFailed".into(),
            message: "msg".into(),
            since: "2026-01-01T00:00:00Z".parse().unwrap(),
        };
        assert_eq!(applied_state(&mr(1, None, None)), AppliedState::NeverObserved);
        assert_eq!(
            applied_state(&mr(2, Some(1), Some(("True", "ApplySucceeded")))),
            AppliedState::Pending { failure: None }
        );
        assert_eq!(
            applied_state(&mr(2, Some(2), Some(("True", "ApplySucceeded")))),
            AppliedState::Applied
        );
        assert_eq!(
            applied_state(&mr(2, Some(2), Some(("False", "ApplyFailed")))),
            AppliedState::Failed(failure.clone())
        );
        // the resource manager never wrote observedGeneration 3: its failure may be about 3
        assert_eq!(
            applied_state(&mr(3, Some(2), Some(("False", "ApplyFailed")))),
            AppliedState::Pending {
                failure: Some(failure.clone())
            }
        );
        // first apply failed: conditions but no observedGeneration yet
        assert_eq!(
            applied_state(&mr(1, None, Some(("False", "ApplyFailed")))),
            AppliedState::Pending { failure: Some(failure) }
        );
        assert_eq!(
            applied_state(&mr(2, Some(2), Some(("Progressing", "ApplyProgressing")))),
            AppliedState::Pending { failure: None }
        );
    }
}
