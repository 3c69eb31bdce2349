//! The verdict on one pool, from what gardener-resource-manager reports on the ManagedResources
//! that carry it (its installation and the shoot-wide RuntimeClasses/RBAC). Pure: the caller
//! brings the objects, the old condition and the clock.
//!
//! Mirrors Gardener's ManagedResource health check for extensions: not applied or unhealthy is
//! unsuccessful, an apply rejected as invalid carries `ERR_CONFIGURATION_PROBLEM`; a rollout in
//! progress is `Progressing`, but only for the progressing threshold after the condition last left
//! `True` (a rollout that never finishes becomes unsuccessful).

use super::condition::{FALSE, PROGRESSING, TRUE, UNKNOWN, Verdict};
use super::nodes::PoolNodes;
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
/// Gardener's reason for a check that could not be conducted.
pub const REASON_CHECK_ERROR: &str = "ConditionCheckError";
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
    /// The pool's nodes as the shoot reports them, or why the shoot could not be read.
    pub nodes: Result<&'a PoolNodes, &'a str>,
    pub old: Option<&'a Condition>,
    /// Time since `old` last changed status.
    pub since_transition: Duration,
    pub progressing_threshold: Duration,
}

/// Unhealthy (from the ManagedResources or the nodes) wins over a check that could not be
/// conducted (`Unknown`, as in Gardener), which wins over progressing.
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
    let mut codes = Vec::new();
    if let Ok(nodes) = input.nodes {
        if !nodes.failing.is_empty() {
            unhealthy.push(nodes_say(nodes, &nodes.failing, "cannot run every shim of the pool"));
            if nodes.configuration_problem {
                codes.push(CONFIGURATION_PROBLEM.to_string());
            }
        }
        if !nodes.settling.is_empty() {
            progressing.push(nodes_say(
                nodes,
                &nodes.settling,
                "cannot run every shim of the pool yet",
            ));
        }
    }
    let message = |parts: &[String]| truncate_for_status(&format!("pool {}: {}", input.pool, parts.join("; ")));
    if !unhealthy.is_empty() {
        if unhealthy.iter().any(|m| is_configuration_problem(m)) && codes.is_empty() {
            codes.push(CONFIGURATION_PROBLEM.to_string());
        }
        return verdict(FALSE, REASON_UNSUCCESSFUL, message(&unhealthy), codes);
    }
    if let Err(why) = input.nodes {
        let m = format!(
            "failed to execute 1 health check: pool {}: cannot read the shoot's nodes: {why}",
            input.pool
        );
        return verdict(UNKNOWN, REASON_CHECK_ERROR, truncate_for_status(&m), vec![]);
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
    match input.nodes {
        Ok(nodes) if !nodes.smaller_pools.is_empty() => {
            let note = nodes_say(
                nodes,
                &nodes.smaller_pools,
                "have a smaller devmapper thin-pool than configured",
            );
            verdict(
                TRUE,
                REASON_SUCCESSFUL,
                truncate_for_status(&format!("{ALL_SUCCESSFUL}; pool {}: {note}", input.pool)),
                vec![],
            )
        }
        _ => verdict(TRUE, REASON_SUCCESSFUL, ALL_SUCCESSFUL.into(), vec![]),
    }
}

/// "2 of 3 nodes <what>: node a: …; node b: …"
fn nodes_say(nodes: &PoolNodes, which: &[String], what: &str) -> String {
    format!("{} of {} nodes {what}: {}", which.len(), nodes.judged, which.join("; "))
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

    static NO_NODES: PoolNodes = PoolNodes {
        judged: 0,
        failing: Vec::new(),
        settling: Vec::new(),
        smaller_pools: Vec::new(),
        configuration_problem: false,
    };

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
            nodes: Ok(&NO_NODES),
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

    fn pool_nodes(failing: &[&str], settling: &[&str], smaller: &[&str], judged: usize) -> PoolNodes {
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect();
        PoolNodes {
            judged,
            failing: v(failing),
            settling: v(settling),
            smaller_pools: v(smaller),
            configuration_problem: false,
        }
    }

    #[test]
    fn nodes_that_cannot_run_the_pools_shims_fail_the_pool_after_settling() {
        let (i, s) = (healthy(), healthy());
        let mrs = || vec![("inst", Some(&i)), ("shared", Some(&s))];
        let failing = pool_nodes(&["node n1: cannot run fc: x"], &[], &[], 3);
        let mut inp = input(mrs(), None, 0);
        inp.nodes = Ok(&failing);
        let v = evaluate(&inp);
        assert_eq!((v.status, v.reason.as_str()), (FALSE, REASON_UNSUCCESSFUL));
        assert_eq!(
            v.message,
            "pool a: 1 of 3 nodes cannot run every shim of the pool: node n1: cannot run fc: x"
        );
        assert!(v.codes.is_empty());
        let mut no_virtualization = failing.clone();
        no_virtualization.configuration_problem = true;
        inp.nodes = Ok(&no_virtualization);
        assert_eq!(evaluate(&inp).codes, vec![CONFIGURATION_PROBLEM.to_string()]);

        let settling = pool_nodes(&[], &["node n2: y"], &[], 3);
        inp.nodes = Ok(&settling);
        let v = evaluate(&inp);
        assert_eq!((v.status, v.reason.as_str()), (PROGRESSING, REASON_PROGRESSING));
        assert!(v.message.ends_with("node n2: y"), "{}", v.message);
    }

    #[test]
    fn a_smaller_thin_pool_is_reported_on_a_healthy_pool() {
        let (i, s) = (healthy(), healthy());
        let smaller = pool_nodes(
            &[],
            &[],
            &["node n1: 25.3 GiB of 100.0 GiB", "node n2: 30.0 GiB of 100.0 GiB"],
            3,
        );
        let mut inp = input(vec![("inst", Some(&i)), ("shared", Some(&s))], None, 0);
        inp.nodes = Ok(&smaller);
        let v = evaluate(&inp);
        assert_eq!((v.status, v.reason.as_str()), (TRUE, REASON_SUCCESSFUL));
        assert_eq!(
            v.message,
            "All health checks successful; pool a: 2 of 3 nodes have a smaller devmapper thin-pool than configured: \
             node n1: 25.3 GiB of 100.0 GiB; node n2: 30.0 GiB of 100.0 GiB"
        );
    }

    #[test]
    fn an_unreadable_shoot_is_unknown_unless_something_is_known_to_fail() {
        let (i, s) = (healthy(), healthy());
        let mut inp = input(vec![("inst", Some(&i)), ("shared", Some(&s))], None, 0);
        inp.nodes = Err("no secret gardener-internal or gardener in the shoot namespace");
        let v = evaluate(&inp);
        assert_eq!((v.status, v.reason.as_str()), (UNKNOWN, REASON_CHECK_ERROR));
        assert_eq!(
            v.message,
            "failed to execute 1 health check: pool a: cannot read the shoot's nodes: no secret gardener-internal or gardener in the shoot namespace"
        );
        let mut inp = input(vec![("inst", None)], None, 0);
        inp.nodes = Err("timed out");
        assert_eq!(
            evaluate(&inp).status,
            FALSE,
            "a missing installation is known without the shoot"
        );
        inp.hibernated = true;
        assert_eq!(evaluate(&inp).status, TRUE, "a hibernated shoot's nodes do not count");
    }
}
