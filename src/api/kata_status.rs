//! The extension's `status.providerStatus` on a ContainerRuntime: the pool's configuration as it
//! was last applied successfully. While the pool's providerConfig is invalid, the shoot-wide
//! objects keep what this pool contributed from here, so one typo never removes RuntimeClasses
//! other pods depend on.

use super::common::DefaultStatus;
use super::kata_config::{API_VERSION, KataConfiguration, Shim};
use serde_json::{Value, json};

pub const KIND: &str = "KataStatus";

/// The providerStatus recording `config` as applied, and the pool's default hypervisors (which
/// it keeps for good, see `kata::defaults`).
pub fn provider_status(config: &KataConfiguration, default_hypervisors: &[Shim]) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "appliedConfiguration": config.to_provider_config(),
        "defaultHypervisors": default_hypervisors.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    })
}

/// The providerStatus recording only the pool's default hypervisors, written with the first
/// status write on a pool (nothing is applied yet), so that a pool whose first operation fails is
/// never taken for one of v0.1.0 (`kata::defaults`).
pub fn default_only(default_hypervisors: &[Shim]) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "defaultHypervisors": default_hypervisors.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    })
}

/// What the extension recorded about a pool. Every providerStatus write is also merged into
/// `status.state`, the one field gardenlet carries through a control-plane migration; so the
/// state holds at least what the providerStatus holds, and after a restore it is all there is.
/// Objects written before the state was kept have only the providerStatus.
pub fn recorded(status: Option<&DefaultStatus>) -> Option<&Value> {
    let status = status?;
    [status.state.as_ref(), status.provider_status.as_ref()]
        .into_iter()
        .flatten()
        .find(|v| is_ours(Some(v)))
}

/// Whether `provider_status` was written by this extension.
pub fn is_ours(provider_status: Option<&Value>) -> bool {
    provider_status.and_then(|s| s.get("kind")).and_then(Value::as_str) == Some(KIND)
}

/// The default hypervisors recorded in `provider_status`, if any and readable.
pub fn recorded_default_hypervisors(provider_status: Option<&Value>) -> Option<Vec<Shim>> {
    if !is_ours(provider_status) {
        return None;
    }
    let names = provider_status?.get("defaultHypervisors")?.as_array()?;
    let shims: Option<Vec<Shim>> = names.iter().map(|n| n.as_str().and_then(Shim::parse)).collect();
    shims.filter(|s| !s.is_empty())
}

/// The last applied configuration recorded in `provider_status`, if any and readable.
pub fn applied_configuration(provider_status: Option<&Value>) -> Option<KataConfiguration> {
    let status = provider_status?;
    if status.get("kind").and_then(Value::as_str) != Some(KIND) {
        return None;
    }
    let applied = status.get("appliedConfiguration").filter(|v| v.is_object())?;
    KataConfiguration::from_provider_config(Some(applied)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_applied_configuration_reads_back() {
        let raw = json!({"apiVersion": API_VERSION, "kind": "KataConfiguration", "hypervisors": ["qemu"], "defaultHypervisor": "qemu"});
        let c = KataConfiguration::from_provider_config(Some(&raw)).unwrap();
        let status = provider_status(&c, &[Shim::Qemu]);
        assert_eq!(applied_configuration(Some(&status)), Some(c));
        assert_eq!(recorded_default_hypervisors(Some(&status)), Some(vec![Shim::Qemu]));
        assert_eq!(applied_configuration(None), None);
        assert_eq!(applied_configuration(Some(&json!({"kind": "Other"}))), None);
        assert_eq!(applied_configuration(Some(&json!({"kind": KIND}))), None);
    }
}
