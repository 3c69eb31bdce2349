//! Status patches as Gardener's `StatusUpdater` writes them (merge patches on the status
//! subresource).

use crate::api::{LastError, LastOperation, OperationState, OperationType};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Processing, progress 1; `observedGeneration` untouched.
pub fn processing(op: OperationType, kind: &str) -> Value {
    let last = LastOperation {
        type_: op.into(),
        state: OperationState::Processing.into(),
        progress: 1,
        description: format!("{} the {kind}", op.progressive()),
        last_update_time: now(),
    };
    json!({"status": {"lastOperation": last}})
}

/// Succeeded, progress 100, `lastError` cleared, `observedGeneration` = generation.
pub fn succeeded(op: OperationType, kind: &str, generation: i64) -> Value {
    let last = LastOperation {
        type_: op.into(),
        state: OperationState::Succeeded.into(),
        progress: 100,
        description: format!("{kind} successfully {}", op.past()),
        last_update_time: now(),
    };
    json!({"status": {"lastOperation": last, "lastError": null, "observedGeneration": generation}})
}

/// The longest message written into a status: user input quoted in an error (a field name, a
/// resource manager message) must never make the status write itself too large to be accepted.
pub const MAX_STATUS_MESSAGE: usize = 2048;

/// `msg`, cut at a character boundary to at most `MAX_STATUS_MESSAGE` bytes, marked when cut.
pub fn truncate_for_status(msg: &str) -> String {
    if msg.len() <= MAX_STATUS_MESSAGE {
        return msg.to_string();
    }
    const MARK: &str = "… (truncated)";
    let mut end = MAX_STATUS_MESSAGE - MARK.len();
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &msg[..end])
}

/// Error, progress 50, `lastError` with description and codes, `observedGeneration` = generation.
pub fn error(op: OperationType, what_failed: &str, err: &str, codes: &[String], generation: i64) -> Value {
    let description = truncate_for_status(&upper_first(&format!("{what_failed}: {err}")));
    let last = LastOperation {
        type_: op.into(),
        state: OperationState::Error.into(),
        progress: 50,
        description: description.clone(),
        last_update_time: now(),
    };
    let last_error = LastError {
        description,
        task_id: None,
        codes: codes.to_vec(),
        last_update_time: Some(now()),
    };
    json!({"status": {"lastOperation": last, "lastError": last_error, "observedGeneration": generation}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_patch_carries_codes_and_generation() {
        let p = error(
            OperationType::Reconcile,
            "error reconciling ContainerRuntime",
            "bad",
            &["ERR_CONFIGURATION_PROBLEM".into()],
            3,
        );
        let s = &p["status"];
        assert_eq!(s["lastOperation"]["state"], "Error");
        assert_eq!(s["lastOperation"]["progress"], 50);
        assert_eq!(s["lastError"]["description"], "Error reconciling ContainerRuntime: bad");
        assert_eq!(s["lastError"]["codes"], json!(["ERR_CONFIGURATION_PROBLEM"]));
        assert_eq!(s["observedGeneration"], 3);
    }

    #[test]
    fn success_clears_last_error() {
        let p = succeeded(OperationType::Create, "ContainerRuntime", 2);
        assert_eq!(p["status"]["lastError"], Value::Null);
        assert!(p["status"].as_object().unwrap().contains_key("lastError"));
        assert_eq!(p["status"]["lastOperation"]["type"], "Create");
        assert_eq!(p["status"]["lastOperation"]["progress"], 100);
        let p = processing(OperationType::Delete, "ContainerRuntime");
        assert_eq!(
            p["status"]["lastOperation"]["description"],
            "Deleting the ContainerRuntime"
        );
        assert!(p["status"].get("observedGeneration").is_none());
    }
}

#[cfg(test)]
mod truncation_tests {
    use super::*;

    #[test]
    fn huge_user_input_in_an_error_is_cut() {
        let field = "x".repeat(700 * 1024);
        let p = error(
            OperationType::Reconcile,
            "error reconciling",
            &format!("unknown field `{field}`"),
            &[],
            1,
        );
        let d = p["status"]["lastError"]["description"].as_str().unwrap();
        assert!(d.len() <= MAX_STATUS_MESSAGE, "{}", d.len());
        assert!(d.ends_with("(truncated)"));
        assert!(d.starts_with("Error reconciling: unknown field `xxx"));
        // multi-byte characters are never split
        let t = truncate_for_status(&"é".repeat(5000));
        assert!(t.len() <= MAX_STATUS_MESSAGE);
        assert_eq!(truncate_for_status("short"), "short");
    }
}
