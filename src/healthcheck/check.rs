//! The verdict on one pool, from what gardener-resource-manager reports on the ManagedResources
//! that carry it (its installation and the shoot-wide RuntimeClasses/RBAC). Pure: the caller
//! brings the objects, the old condition and the clock.
//!
//! Mirrors Gardener's ManagedResource health check for extensions: not applied or unhealthy is
//! unsuccessful, an apply rejected as invalid carries `ERR_CONFIGURATION_PROBLEM`; a rollout in
//! progress is `Progressing`, but only for the progressing threshold after the condition last left
//! `True` (a rollout that never finishes becomes unsuccessful).

use super::condition::{FALSE, PROGRESSING, TRUE, Verdict};
use crate::api::ManagedResource;
use crate::api::common::Condition;
use crate::extension::status::truncate_for_status;
use std::time::Duration;

pub const SYSTEM_COMPONENTS_HEALTHY: &str = "SystemComponentsHealthy";
pub const REASON_SUCCESSFUL: &str = "HealthCheckSuccessful";
pub const REASON_UNSUCCESSFUL: &str = "HealthCheckUnsuccessful";
pub const REASON_PROGRESSING: &str = "HealthCheckProgressing";
pub const ALL_SUCCESSFUL: &str = "All health checks successful";
pub const HIBERNATED: &str = "Shoot is hibernated";
const CONFIGURATION_PROBLEM: &str = "ERR_CONFIGURATION_PROBLEM";

/// What one ManagedResource says.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Healthy,
    Progressing(String),
    Unhealthy(String),
}

fn condition<'a>(mr: &'a ManagedResource, type_: &str) -> Option<&'a Condition> {
    mr.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

fn state(name: &str, mr: Option<&ManagedResource>) -> State {
    let Some(mr) = mr else {
        return State::Unhealthy(format!("ManagedResource {name} not found"));
    };
    let said = |c: &Condition| format!("ManagedResource {name}: {} is {}: {}", c.type_, c.status, c.message);
    let applied = condition(mr, "ResourcesApplied");
    match applied {
        Some(c) if c.status == FALSE => return State::Unhealthy(said(c)),
        None => return State::Progressing(format!("ManagedResource {name} is not applied yet")),
        Some(c) if c.status != TRUE => return State::Progressing(said(c)),
        Some(_) => {}
    }
    // the resource manager writes observedGeneration only when an apply succeeded
    let observed = mr.status.as_ref().and_then(|s| s.observed_generation);
    if observed != mr.metadata.generation {
        return State::Progressing(format!(
            "ManagedResource {name}: generation {} is not applied yet (observed {})",
            mr.metadata.generation.unwrap_or_default(),
            observed.unwrap_or_default()
        ));
    }
    let progressing = condition(mr, "ResourcesProgressing").filter(|c| c.status == TRUE);
    match (condition(mr, "ResourcesHealthy"), progressing) {
        (None, _) => State::Progressing(format!("ManagedResource {name}: health not reported yet")),
        (Some(h), Some(p)) if h.status != TRUE => State::Progressing(format!("{}; {}", said(h), p.message)),
        (Some(h), None) if h.status != TRUE => State::Unhealthy(said(h)),
        (_, Some(p)) => State::Progressing(said(p)),
        _ => State::Healthy,
    }
}

/// Gardener's rule for an apply the target rejected as invalid.
fn is_configuration_problem(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower
        .find("error during apply of object")
        .is_some_and(|i| lower[i..].contains(" is invalid:"))
}

/// The inputs for one ContainerRuntime.
pub struct Input<'a> {
    pub pool: &'a str,
    /// (name, object) of each ManagedResource the pool depends on.
    pub managed_resources: Vec<(&'a str, Option<&'a ManagedResource>)>,
    pub hibernated: bool,
    pub old: Option<&'a Condition>,
    /// Time since `old` last changed status.
    pub since_transition: Duration,
    pub progressing_threshold: Duration,
}

pub fn evaluate(input: &Input) -> Verdict {
    if input.hibernated {
        return verdict(TRUE, REASON_SUCCESSFUL, HIBERNATED.into(), vec![]);
    }
    let mut unhealthy = Vec::new();
    let mut progressing = Vec::new();
    for (name, mr) in &input.managed_resources {
        match state(name, *mr) {
            State::Healthy => {}
            State::Progressing(m) => progressing.push(m),
            State::Unhealthy(m) => unhealthy.push(m),
        }
    }
    let message = |parts: &[String]| truncate_for_status(&format!("pool {}: {}", input.pool, parts.join("; ")));
    if !unhealthy.is_empty() {
        let codes = if unhealthy.iter().any(|m| is_configuration_problem(m)) {
            vec![CONFIGURATION_PROBLEM.to_string()]
        } else {
            vec![]
        };
        return verdict(FALSE, REASON_UNSUCCESSFUL, message(&unhealthy), codes);
    }
    if !progressing.is_empty() {
        let within = match input.old {
            None => true,
            Some(o) if o.status == TRUE => true,
            Some(o) if o.status == FALSE => false,
            Some(_) => input.since_transition <= input.progressing_threshold,
        };
        return if within {
            verdict(PROGRESSING, REASON_PROGRESSING, message(&progressing), vec![])
        } else {
            verdict(FALSE, REASON_UNSUCCESSFUL, message(&progressing), vec![])
        };
    }
    verdict(TRUE, REASON_SUCCESSFUL, ALL_SUCCESSFUL.into(), vec![])
}

fn verdict(status: &'static str, reason: &str, message: String, codes: Vec<String>) -> Verdict {
    Verdict {
        status,
        reason: reason.into(),
        message,
        codes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::managedresource::ManagedResourceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn cond(type_: &str, status: &str, message: &str) -> Condition {
        let t = Time("2026-01-01T00:00:00Z".parse().unwrap());
        Condition {
            type_: type_.into(),
            status: status.into(),
            last_transition_time: t.clone(),
            last_update_time: t,
            reason: "R".into(),
            message: message.into(),
            codes: vec![],
        }
    }

    fn mr(generation: i64, observed: i64, conditions: Vec<Condition>) -> ManagedResource {
        let mut mr = ManagedResource::new("x", Default::default());
        mr.metadata.generation = Some(generation);
        mr.status = Some(ManagedResourceStatus {
            conditions,
            observed_generation: Some(observed),
            ..Default::default()
        });
        mr
    }

    fn healthy() -> ManagedResource {
        mr(
            2,
            2,
            vec![
                cond("ResourcesApplied", TRUE, "All resources are applied."),
                cond("ResourcesHealthy", TRUE, "All resources are healthy."),
                cond("ResourcesProgressing", FALSE, "All resources are rolled out."),
            ],
        )
    }

    fn input<'a>(
        mrs: Vec<(&'a str, Option<&'a ManagedResource>)>,
        old: Option<&'a Condition>,
        since: u64,
    ) -> Input<'a> {
        Input {
            pool: "a",
            managed_resources: mrs,
            hibernated: false,
            old,
            since_transition: Duration::from_secs(since),
            progressing_threshold: Duration::from_secs(600),
        }
    }

    #[test]
    fn healthy_resources_are_a_success() {
        let (i, s) = (healthy(), healthy());
        let v = evaluate(&input(vec![("inst", Some(&i)), ("shared", Some(&s))], None, 0));
        assert_eq!(
            (v.status, v.reason.as_str(), v.message.as_str()),
            (TRUE, REASON_SUCCESSFUL, ALL_SUCCESSFUL)
        );
    }

    #[test]
    fn an_unhealthy_daemonset_names_the_pool_and_what_the_resource_manager_says() {
        let mut i = healthy();
        i.status.as_mut().unwrap().conditions[1] = cond(
            "ResourcesHealthy",
            FALSE,
            "DaemonSet \"kube-system/kata-deploy-a\" is unhealthy: too many unavailable pods found (1/3)",
        );
        let s = healthy();
        let v = evaluate(&input(vec![("inst", Some(&i)), ("shared", Some(&s))], None, 0));
        assert_eq!((v.status, v.reason.as_str()), (FALSE, REASON_UNSUCCESSFUL));
        assert_eq!(
            v.message,
            "pool a: ManagedResource inst: ResourcesHealthy is False: DaemonSet \"kube-system/kata-deploy-a\" is unhealthy: too many unavailable pods found (1/3)"
        );
        assert!(v.codes.is_empty());
    }

    #[test]
    fn an_invalid_object_is_a_configuration_problem_and_a_missing_resource_is_unsuccessful() {
        let i = mr(
            2,
            1,
            vec![cond(
                "ResourcesApplied",
                FALSE,
                "Could not apply all new resources: error during apply of object \"node.k8s.io/v1/RuntimeClass//kata\": RuntimeClass.node.k8s.io \"kata\" is invalid: handler: Invalid value",
            )],
        );
        let v = evaluate(&input(vec![("inst", Some(&i)), ("shared", None)], None, 0));
        assert_eq!(v.status, FALSE);
        assert_eq!(v.codes, vec![CONFIGURATION_PROBLEM.to_string()]);
        assert!(
            v.message.contains("ResourcesApplied is False") && v.message.contains("ManagedResource shared not found"),
            "{}",
            v.message
        );
    }

    #[test]
    fn a_rollout_is_progressing_until_the_threshold_then_unsuccessful() {
        let mut i = healthy();
        i.status.as_mut().unwrap().conditions[2] = cond(
            "ResourcesProgressing",
            TRUE,
            "DaemonSet \"kube-system/kata-deploy-a\" is progressing: 1 of 3 replica(s) have been updated",
        );
        let v = evaluate(&input(vec![("inst", Some(&i))], None, 0));
        assert_eq!((v.status, v.reason.as_str()), (PROGRESSING, REASON_PROGRESSING));
        assert!(v.message.contains("1 of 3 replica(s)"), "{}", v.message);
        let was_true = cond(SYSTEM_COMPONENTS_HEALTHY, TRUE, "");
        assert_eq!(
            evaluate(&input(vec![("inst", Some(&i))], Some(&was_true), 10_000)).status,
            PROGRESSING
        );
        let was_progressing = cond(SYSTEM_COMPONENTS_HEALTHY, PROGRESSING, "");
        assert_eq!(
            evaluate(&input(vec![("inst", Some(&i))], Some(&was_progressing), 60)).status,
            PROGRESSING
        );
        let late = evaluate(&input(vec![("inst", Some(&i))], Some(&was_progressing), 601));
        assert_eq!((late.status, late.reason.as_str()), (FALSE, REASON_UNSUCCESSFUL));
        // once unsuccessful, progress does not turn it back into Progressing; only health does
        let was_false = cond(SYSTEM_COMPONENTS_HEALTHY, FALSE, "");
        assert_eq!(
            evaluate(&input(vec![("inst", Some(&i))], Some(&was_false), 0)).status,
            FALSE
        );
    }

    #[test]
    fn a_new_generation_not_yet_applied_is_progressing() {
        let i = mr(3, 2, healthy().status.unwrap().conditions);
        let v = evaluate(&input(vec![("inst", Some(&i))], None, 0));
        assert_eq!(v.status, PROGRESSING);
        assert!(
            v.message.contains("generation 3 is not applied yet (observed 2)"),
            "{}",
            v.message
        );
        let fresh = ManagedResource::new("x", Default::default());
        assert_eq!(
            evaluate(&input(vec![("inst", Some(&fresh))], None, 0)).status,
            PROGRESSING
        );
    }

    #[test]
    fn a_hibernated_shoot_is_healthy_whatever_its_resources_say() {
        let mut inp = input(vec![("inst", None)], None, 0);
        inp.hibernated = true;
        let v = evaluate(&inp);
        assert_eq!((v.status, v.message.as_str()), (TRUE, HIBERNATED));
    }

    #[test]
    fn configuration_problems_are_recognised_like_gardener_does() {
        assert!(is_configuration_problem(
            "x: Error during apply of object \"a\": b is invalid: c"
        ));
        assert!(!is_configuration_problem(
            "error during apply of object \"a\": conflict"
        ));
        assert!(!is_configuration_problem("b is invalid: c"));
    }
}
