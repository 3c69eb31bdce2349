//! Gardener's condition semantics (`v1beta1helper.ConditionBuilder`): `lastTransitionTime` moves
//! when the status changes, `lastUpdateTime` when reason, message or codes change; nothing moves
//! when nothing changed, so an unchanged verdict needs no write at all. gardenlet judges staleness
//! by the extension's heartbeat Lease, not by these timestamps.

use crate::api::common::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const PROGRESSING: &str = "Progressing";
pub const UNKNOWN: &str = "Unknown";

/// A verdict before timestamps are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub status: &'static str,
    pub reason: String,
    pub message: String,
    pub codes: Vec<String>,
}

/// The condition `type_` says `verdict`, carrying over the timestamps of `old` where nothing moved.
pub fn build(type_: &str, old: Option<&Condition>, verdict: &Verdict, now: &Time) -> Condition {
    let status_changed = old.is_none_or(|o| o.status != verdict.status);
    let content_changed =
        old.is_none_or(|o| o.reason != verdict.reason || o.message != verdict.message || o.codes != verdict.codes);
    Condition {
        type_: type_.into(),
        status: verdict.status.into(),
        last_transition_time: match old {
            Some(o) if !status_changed => o.last_transition_time.clone(),
            _ => now.clone(),
        },
        last_update_time: match old {
            Some(o) if !content_changed => o.last_update_time.clone(),
            _ => now.clone(),
        },
        reason: verdict.reason.clone(),
        message: verdict.message.clone(),
        codes: verdict.codes.clone(),
    }
}

/// `conditions` with `c` replacing the condition of its type (or appended), order kept.
pub fn merge(conditions: &[Condition], c: Condition) -> Vec<Condition> {
    let mut out: Vec<Condition> = conditions.iter().filter(|x| x.type_ != c.type_).cloned().collect();
    match conditions.iter().position(|x| x.type_ == c.type_) {
        Some(i) => out.insert(i, c),
        None => out.push(c),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn verdict(status: &'static str, message: &str) -> Verdict {
        Verdict {
            status,
            reason: "R".into(),
            message: message.into(),
            codes: vec![],
        }
    }

    #[test]
    fn timestamps_move_only_with_what_they_describe() {
        let (t0, t1, t2) = (
            time("2026-01-01T00:00:00Z"),
            time("2026-01-01T00:01:00Z"),
            time("2026-01-01T00:02:00Z"),
        );
        let c0 = build("X", None, &verdict(FALSE, "a"), &t0);
        assert_eq!(
            (c0.last_transition_time.clone(), c0.last_update_time.clone()),
            (t0.clone(), t0.clone())
        );
        // same verdict: nothing moves, the condition is byte-for-byte the old one
        assert_eq!(build("X", Some(&c0), &verdict(FALSE, "a"), &t1), c0);
        // new message, same status: only lastUpdateTime
        let c1 = build("X", Some(&c0), &verdict(FALSE, "b"), &t1);
        assert_eq!(
            (c1.last_transition_time.clone(), c1.last_update_time.clone()),
            (t0, t1.clone())
        );
        // new status: both
        let c2 = build("X", Some(&c1), &verdict(TRUE, "b"), &t2);
        assert_eq!((c2.last_transition_time, c2.last_update_time), (t2.clone(), t1));
    }

    #[test]
    fn merge_replaces_in_place_and_keeps_other_types() {
        let t = time("2026-01-01T00:00:00Z");
        let a = build("A", None, &verdict(TRUE, ""), &t);
        let b = build("B", None, &verdict(TRUE, ""), &t);
        let b2 = build("B", None, &verdict(FALSE, ""), &t);
        let merged = merge(&[b.clone(), a.clone()], b2.clone());
        assert_eq!(merged, vec![b2, a.clone()]);
        assert_eq!(merge(std::slice::from_ref(&a), b.clone()), vec![a, b]);
    }
}
