//! The extension's `status.providerStatus` on a ContainerRuntime: the pool's configuration as it
//! was last applied successfully. While the pool's providerConfig is invalid, the shoot-wide
//! objects keep what this pool contributed from here, so one typo never removes RuntimeClasses
//! other pods depend on.

use super::kata_config::{API_VERSION, KataConfiguration};
use serde_json::{Value, json};

pub const KIND: &str = "KataStatus";

/// The providerStatus recording `config` as applied.
pub fn provider_status(config: &KataConfiguration) -> Value {
    json!({"apiVersion": API_VERSION, "kind": KIND, "appliedConfiguration": config.to_provider_config()})
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
        assert_eq!(applied_configuration(Some(&provider_status(&c))), Some(c));
        assert_eq!(applied_configuration(None), None);
        assert_eq!(applied_configuration(Some(&json!({"kind": "Other"}))), None);
        assert_eq!(applied_configuration(Some(&json!({"kind": KIND}))), None);
    }
}
