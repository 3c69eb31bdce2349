//! The shoot owner's per-pool `KataConfiguration` providerConfig: strict decoding, defaults and
//! validation. Every violation names the field, because it ends up in the ContainerRuntime's
//! `lastError` and, from there, in the Shoot's status that the owner reads.

use serde::{Deserialize, Serialize};
use std::fmt;

pub const API_VERSION: &str = "kata.runtime.extensions.config.gardener.cloud/v1alpha1";
pub const KIND: &str = "KataConfiguration";

/// A kata shim: one containerd handler `kata-<shim>` and one RuntimeClass of the same name.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shim {
    #[serde(rename = "qemu")]
    Qemu,
    #[serde(rename = "qemu-runtime-rs")]
    QemuRuntimeRs,
    #[serde(rename = "clh")]
    Clh,
    #[serde(rename = "clh-runtime-rs")]
    ClhRuntimeRs,
    #[serde(rename = "fc")]
    Fc,
    #[serde(rename = "dragonball")]
    Dragonball,
}

impl Shim {
    pub const ALL: [Shim; 6] = [
        Shim::Qemu,
        Shim::QemuRuntimeRs,
        Shim::Clh,
        Shim::ClhRuntimeRs,
        Shim::Fc,
        Shim::Dragonball,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Shim::Qemu => "qemu",
            Shim::QemuRuntimeRs => "qemu-runtime-rs",
            Shim::Clh => "clh",
            Shim::ClhRuntimeRs => "clh-runtime-rs",
            Shim::Fc => "fc",
            Shim::Dragonball => "dragonball",
        }
    }

    pub fn parse(s: &str) -> Option<Shim> {
        Shim::ALL.into_iter().find(|shim| shim.as_str() == s)
    }

    /// The containerd handler and RuntimeClass name.
    pub fn handler(self) -> String {
        format!("kata-{}", self.as_str())
    }

    /// Pod overhead as kata-deploy 4.1.0's RuntimeClasses declare it: (memory, cpu).
    pub fn overhead(self) -> (&'static str, &'static str) {
        match self {
            Shim::Qemu | Shim::QemuRuntimeRs => ("320Mi", "250m"),
            Shim::Clh | Shim::ClhRuntimeRs | Shim::Fc | Shim::Dragonball => ("130Mi", "250m"),
        }
    }
}

impl fmt::Display for Shim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The providerConfig as the shoot owner writes it (all optional).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawKataConfiguration {
    api_version: Option<String>,
    kind: Option<String>,
    hypervisors: Option<Vec<String>>,
    default_hypervisor: Option<String>,
    debug: Option<bool>,
    allowed_hypervisor_annotations: Option<Vec<String>>,
    devmapper: Option<RawDevmapper>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDevmapper {
    data_size: Option<String>,
    metadata_size: Option<String>,
    base_image_size: Option<String>,
}

/// The defaulted and validated configuration of one kata pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KataConfiguration {
    /// Enabled shims, in the order given, without duplicates.
    pub hypervisors: Vec<Shim>,
    /// Also published as the RuntimeClass `kata`.
    pub default_hypervisor: Option<Shim>,
    pub debug: bool,
    pub allowed_hypervisor_annotations: Vec<String>,
    pub devmapper: Devmapper,
}

/// Thin-pool sizes in bytes (used only when `fc` is enabled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Devmapper {
    pub data_size: u64,
    pub metadata_size: u64,
    pub base_image_size: u64,
}

const GI: u64 = 1 << 30;
const MI: u64 = 1 << 20;

impl Default for Devmapper {
    fn default() -> Self {
        Self {
            data_size: 100 * GI,
            metadata_size: 10 * GI,
            base_image_size: 40 * GI,
        }
    }
}

/// The hypervisors of a pool whose providerConfig names none. Firecracker is opt-in: it needs a
/// thin-pool file on every node and a node-wide containerd setting.
pub const DEFAULT_HYPERVISORS: [Shim; 2] = [Shim::Qemu, Shim::Clh];
/// The default up to v0.1.0, kept for the pools that got it then.
pub const LEGACY_DEFAULT_HYPERVISORS: [Shim; 3] = [Shim::Qemu, Shim::Clh, Shim::Fc];

impl Default for KataConfiguration {
    fn default() -> Self {
        Self {
            hypervisors: DEFAULT_HYPERVISORS.to_vec(),
            default_hypervisor: None,
            debug: false,
            allowed_hypervisor_annotations: Vec::new(),
            devmapper: Devmapper::default(),
        }
    }
}

/// A providerConfig the extension cannot accept. Display: `providerConfig.<field>: <problem>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid providerConfig: {field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

/// Strict decoding straight from the tree (no copy). serde names the key only of an unknown
/// field; for a value of the wrong type, the key is found by decoding the keys one at a time.
fn decode_raw(raw: &serde_json::Value) -> Result<RawKataConfiguration, ConfigError> {
    RawKataConfiguration::deserialize(raw).map_err(|e| {
        let message = e.to_string();
        if message.starts_with("unknown field") {
            return invalid("providerConfig", message);
        }
        match wrong_key::<RawKataConfiguration>(raw) {
            Some(("devmapper", value)) => match wrong_key::<RawDevmapper>(value) {
                Some((inner, _)) => invalid(format!("devmapper.{inner}"), message),
                None => invalid("devmapper", message),
            },
            Some((key, _)) => invalid(key, message),
            None => invalid("providerConfig", message),
        }
    })
}

/// The first key of the object `raw` whose value alone does not decode as a `T`.
fn wrong_key<T: serde::de::DeserializeOwned>(raw: &serde_json::Value) -> Option<(&str, &serde_json::Value)> {
    raw.as_object()?.iter().find_map(|(key, value)| {
        let alone = serde_json::Value::Object([(key.clone(), value.clone())].into_iter().collect());
        T::deserialize(&alone).is_err().then_some((key.as_str(), value))
    })
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

impl KataConfiguration {
    /// Decodes, defaults and validates a providerConfig. `None` (or JSON null) yields the defaults.
    pub fn from_provider_config(raw: Option<&serde_json::Value>) -> Result<Self, ConfigError> {
        Self::from_provider_config_with_default(raw, &DEFAULT_HYPERVISORS)
    }

    /// As [`Self::from_provider_config`], with `default_hypervisors` for a providerConfig that
    /// names none (the pool's own default, see `kata::defaults`).
    pub fn from_provider_config_with_default(
        raw: Option<&serde_json::Value>,
        default_hypervisors: &[Shim],
    ) -> Result<Self, ConfigError> {
        let defaults = Self {
            hypervisors: default_hypervisors.to_vec(),
            ..Self::default()
        };
        let raw = match raw {
            None | Some(serde_json::Value::Null) => return Ok(defaults),
            Some(v) => v,
        };
        if !raw.is_object() {
            return Err(invalid("providerConfig", "must be an object"));
        }
        Self::validate(decode_raw(raw)?, defaults)
    }

    /// Whether a providerConfig names its hypervisors (else the pool's default applies).
    pub fn names_hypervisors(raw: Option<&serde_json::Value>) -> bool {
        raw.and_then(|v| v.get("hypervisors")).is_some_and(|h| !h.is_null())
    }

    fn validate(raw: RawKataConfiguration, defaults: Self) -> Result<Self, ConfigError> {
        match raw.api_version.as_deref() {
            Some(API_VERSION) => {}
            Some(other) => {
                return Err(invalid(
                    "apiVersion",
                    format!("unsupported value {other:?}, expected {API_VERSION:?}"),
                ));
            }
            None => return Err(invalid("apiVersion", format!("required, expected {API_VERSION:?}"))),
        }
        match raw.kind.as_deref() {
            Some(KIND) => {}
            Some(other) => {
                return Err(invalid(
                    "kind",
                    format!("unsupported value {other:?}, expected {KIND:?}"),
                ));
            }
            None => return Err(invalid("kind", format!("required, expected {KIND:?}"))),
        }
        let mut config = defaults;
        if let Some(names) = raw.hypervisors {
            if names.is_empty() {
                return Err(invalid("hypervisors", "must list at least one hypervisor"));
            }
            let mut shims = Vec::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                let shim = parse_shim(&format!("hypervisors[{i}]"), name)?;
                if shims.contains(&shim) {
                    return Err(invalid(
                        format!("hypervisors[{i}]"),
                        format!("duplicate value {name:?}"),
                    ));
                }
                shims.push(shim);
            }
            config.hypervisors = shims;
        }
        if let Some(name) = raw.default_hypervisor {
            let shim = parse_shim("defaultHypervisor", &name)?;
            if !config.hypervisors.contains(&shim) {
                return Err(invalid(
                    "defaultHypervisor",
                    format!(
                        "{name:?} is not one of the enabled hypervisors {}",
                        list(&config.hypervisors)
                    ),
                ));
            }
            config.default_hypervisor = Some(shim);
        }
        config.debug = raw.debug.unwrap_or(false);
        if let Some(entries) = raw.allowed_hypervisor_annotations {
            if entries.len() > MAX_ANNOTATION_ENTRIES {
                return Err(invalid(
                    "allowedHypervisorAnnotations",
                    format!(
                        "{} entries, at most {MAX_ANNOTATION_ENTRIES} are allowed",
                        entries.len()
                    ),
                ));
            }
            for (i, entry) in entries.iter().enumerate() {
                if entry.len() > MAX_ANNOTATION_ENTRY_LEN {
                    return Err(invalid(
                        format!("allowedHypervisorAnnotations[{i}]"),
                        format!(
                            "{} characters, at most {MAX_ANNOTATION_ENTRY_LEN} are allowed",
                            entry.len()
                        ),
                    ));
                }
                validate_annotation_entry(
                    &format!("allowedHypervisorAnnotations[{i}]"),
                    entry,
                    &config.hypervisors,
                )?;
            }
            config.allowed_hypervisor_annotations = entries;
        }
        if let Some(dm) = raw.devmapper {
            let defaults = Devmapper::default();
            let size = |field: &str, v: Option<String>, default: u64| match v {
                None => Ok(default),
                Some(s) => parse_quantity(&s).map_err(|m| invalid(format!("devmapper.{field}"), m)),
            };
            config.devmapper = Devmapper {
                data_size: size("dataSize", dm.data_size, defaults.data_size)?,
                metadata_size: size("metadataSize", dm.metadata_size, defaults.metadata_size)?,
                base_image_size: size("baseImageSize", dm.base_image_size, defaults.base_image_size)?,
            };
        }
        validate_devmapper(&config.devmapper)?;
        Ok(config)
    }

    /// This configuration as an explicit providerConfig (every default spelled out), which
    /// `from_provider_config` reads back to the same value whatever the defaults are then.
    pub fn to_provider_config(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "hypervisors": self.hypervisors.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "debug": self.debug,
            "allowedHypervisorAnnotations": self.allowed_hypervisor_annotations,
            "devmapper": {
                "dataSize": self.devmapper.data_size.to_string(),
                "metadataSize": self.devmapper.metadata_size.to_string(),
                "baseImageSize": self.devmapper.base_image_size.to_string(),
            },
        });
        // always present, also as null: a JSON merge patch must be able to clear it
        v["defaultHypervisor"] = self.default_hypervisor.map(|d| d.as_str()).into();
        v
    }

    pub fn has(&self, shim: Shim) -> bool {
        self.hypervisors.contains(&shim)
    }

    /// Firecracker needs the devmapper thin-pool on the node.
    pub fn needs_devmapper(&self) -> bool {
        self.has(Shim::Fc)
    }
}

fn list(shims: &[Shim]) -> String {
    let names: Vec<_> = shims.iter().map(|s| s.as_str()).collect();
    format!("[{}]", names.join(", "))
}

fn parse_shim(field: &str, name: &str) -> Result<Shim, ConfigError> {
    Shim::parse(name).ok_or_else(|| {
        invalid(
            field,
            format!("unknown hypervisor {name:?}, supported: {}", list(&Shim::ALL)),
        )
    })
}

/// kata-deploy's `ALLOWED_HYPERVISOR_ANNOTATIONS` entry: `annotation` or `shim:ann1,ann2`.
fn validate_annotation_entry(field: &str, entry: &str, enabled: &[Shim]) -> Result<(), ConfigError> {
    let valid_name = |a: &str| {
        !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    match entry.split_once(':') {
        None if valid_name(entry) => Ok(()),
        None => Err(invalid(
            field,
            format!("{entry:?} is not an annotation name (letters, digits, '_', '-', '.')"),
        )),
        Some((shim, names)) => {
            let shim = parse_shim(field, shim)?;
            if !enabled.contains(&shim) {
                return Err(invalid(
                    field,
                    format!("hypervisor {shim} is not enabled in hypervisors"),
                ));
            }
            match names.split(',').find(|a| !valid_name(a)) {
                Some(bad) => Err(invalid(field, format!("{bad:?} is not an annotation name"))),
                None => Ok(()),
            }
        }
    }
}

/// The kernel's thin-pool metadata device cannot usefully exceed ~15.8 GiB.
const MAX_METADATA: u64 = 15 * GI;
/// A sparse file on the node's disk: far beyond any worker disk, yet small enough that every
/// size computation on the node stays exact.
const MAX_DATA: u64 = 16 << 40;
/// kata-deploy joins them into one environment variable per architecture.
pub const MAX_ANNOTATION_ENTRIES: usize = 64;
const MAX_ANNOTATION_ENTRY_LEN: usize = 512;

fn validate_devmapper(dm: &Devmapper) -> Result<(), ConfigError> {
    if dm.data_size < GI || dm.data_size > MAX_DATA {
        return Err(invalid("devmapper.dataSize", "must be between 1Gi and 16Ti"));
    }
    if dm.metadata_size < 2 * MI || dm.metadata_size > MAX_METADATA {
        return Err(invalid("devmapper.metadataSize", "must be between 2Mi and 15Gi"));
    }
    if dm.base_image_size < 128 * MI {
        return Err(invalid("devmapper.baseImageSize", "must be at least 128Mi"));
    }
    if dm.base_image_size > dm.data_size {
        return Err(invalid("devmapper.baseImageSize", "must not exceed devmapper.dataSize"));
    }
    Ok(())
}

/// Parses a whole-number Kubernetes quantity in bytes (`100Gi`, `512Mi`, `10G`, `1073741824`).
pub fn parse_quantity(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    if digits.is_empty() {
        return Err(format!("{s:?} is not a size (expected e.g. 100Gi)"));
    }
    let factor: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit {suffix:?} (use Ki, Mi, Gi, Ti or k, M, G, T)"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Renders bytes as the largest exact binary unit (`107374182400` → `100Gi`).
pub fn format_quantity(bytes: u64) -> String {
    for (unit, factor) in [("Ti", 1u64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(v: serde_json::Value) -> Result<KataConfiguration, ConfigError> {
        KataConfiguration::from_provider_config(Some(&v))
    }

    fn with(extra: serde_json::Value) -> serde_json::Value {
        let mut v = json!({"apiVersion": API_VERSION, "kind": KIND});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v
    }

    #[test]
    fn absent_config_gets_defaults() {
        let c = KataConfiguration::from_provider_config(None).unwrap();
        assert_eq!(c.hypervisors, vec![Shim::Qemu, Shim::Clh], "Firecracker is opt-in");
        assert_eq!(c.default_hypervisor, None);
        assert!(!c.needs_devmapper());
        assert_eq!(c.devmapper.data_size, 100 * GI);
        // a pool that got the old default keeps it
        let legacy = with(json!({"debug": true}));
        let c =
            KataConfiguration::from_provider_config_with_default(Some(&legacy), &LEGACY_DEFAULT_HYPERVISORS).unwrap();
        assert!(c.needs_devmapper() && c.debug);
        assert!(!KataConfiguration::names_hypervisors(Some(&legacy)));
        assert!(KataConfiguration::names_hypervisors(Some(&with(
            json!({"hypervisors": ["qemu"]})
        ))));
    }

    #[test]
    fn full_config_decodes() {
        let c = decode(with(json!({
            "hypervisors": ["qemu", "qemu-runtime-rs"],
            "defaultHypervisor": "qemu-runtime-rs",
            "debug": true,
            "allowedHypervisorAnnotations": ["default_memory", "qemu:default_vcpus,kernel_params"],
            "devmapper": {"dataSize": "20Gi", "metadataSize": "1Gi", "baseImageSize": "10Gi"}
        })))
        .unwrap();
        assert_eq!(c.hypervisors, vec![Shim::Qemu, Shim::QemuRuntimeRs]);
        assert_eq!(c.default_hypervisor, Some(Shim::QemuRuntimeRs));
        assert!(c.debug && !c.needs_devmapper());
        assert_eq!(c.devmapper.base_image_size, 10 * GI);
    }

    #[test]
    fn violations_name_the_field() {
        let cases = [
            (json!({"foo": 1}), "providerConfig", "unknown field `foo`"),
            (
                json!({"hypervisors": ["qemu", "xen"]}),
                "hypervisors[1]",
                "unknown hypervisor \"xen\"",
            ),
            (json!({"hypervisors": []}), "hypervisors", "at least one"),
            (json!({"hypervisors": ["fc", "fc"]}), "hypervisors[1]", "duplicate"),
            (
                json!({"hypervisors": ["qemu"], "defaultHypervisor": "clh"}),
                "defaultHypervisor",
                "not one of",
            ),
            (
                json!({"devmapper": {"dataSize": "lots"}}),
                "devmapper.dataSize",
                "not a size",
            ),
            (
                json!({"devmapper": {"dataSize": "10Xi"}}),
                "devmapper.dataSize",
                "unknown unit",
            ),
            (
                json!({"devmapper": {"dataSize": "10Gi"}}),
                "devmapper.baseImageSize",
                "must not exceed",
            ),
            (
                json!({"devmapper": {"metadataSize": "20Gi"}}),
                "devmapper.metadataSize",
                "between",
            ),
            (
                json!({"devmapper": {"sizeOfData": "1Gi"}}),
                "providerConfig",
                "unknown field `sizeOfData`",
            ),
            (
                json!({"allowedHypervisorAnnotations": ["dragonball:x"]}),
                "allowedHypervisorAnnotations[0]",
                "not enabled",
            ),
            (
                json!({"allowedHypervisorAnnotations": ["a b"]}),
                "allowedHypervisorAnnotations[0]",
                "not an annotation",
            ),
            // a wrong type names its key
            (json!({"debug": "yes"}), "debug", "expected a boolean"),
            (json!({"hypervisors": "qemu"}), "hypervisors", "expected a sequence"),
            (
                json!({"devmapper": {"dataSize": 5}}),
                "devmapper.dataSize",
                "expected a string",
            ),
            (json!({"devmapper": "big"}), "devmapper", "expected struct"),
        ];
        for (extra, field, needle) in cases {
            let err = decode(with(extra.clone())).unwrap_err();
            assert_eq!(err.field, field, "{extra}: {err}");
            assert!(err.to_string().contains(needle), "{extra}: {err}");
        }
    }

    #[test]
    fn type_meta_is_required_and_checked() {
        assert_eq!(decode(json!({})).unwrap_err().field, "apiVersion");
        assert_eq!(decode(json!({"apiVersion": API_VERSION})).unwrap_err().field, "kind");
        assert_eq!(
            decode(json!({"apiVersion": "v1", "kind": KIND})).unwrap_err().field,
            "apiVersion"
        );
        assert_eq!(decode(json!([1])).unwrap_err().field, "providerConfig");
    }

    #[test]
    fn quantities_round_trip() {
        for s in ["100Gi", "512Mi", "3Ti", "1Ki"] {
            assert_eq!(format_quantity(parse_quantity(s).unwrap()), s);
        }
        assert_eq!(parse_quantity("10G").unwrap(), 10_000_000_000);
        assert!(parse_quantity("99999999999999Pi").is_err());
        assert!(parse_quantity("").is_err());
    }
}

#[cfg(test)]
mod round_trip_tests {
    use super::*;

    #[test]
    fn everything_a_user_can_make_too_big_is_rejected_up_front() {
        let with = |extra: serde_json::Value| {
            let mut v = serde_json::json!({"apiVersion": API_VERSION, "kind": KIND});
            v.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap());
            KataConfiguration::from_provider_config(Some(&v))
        };
        for size in ["16383Pi", "18446744073709551615", "17Ti"] {
            let e = with(serde_json::json!({"devmapper": {"dataSize": size}})).unwrap_err();
            assert_eq!(e.field, "devmapper.dataSize", "{size}: {e}");
        }
        assert!(with(serde_json::json!({"devmapper": {"dataSize": "16Ti"}})).is_ok());
        let many: Vec<String> = (0..40_000).map(|i| format!("a{i}")).collect();
        let e = with(serde_json::json!({"allowedHypervisorAnnotations": many})).unwrap_err();
        assert_eq!(e.field, "allowedHypervisorAnnotations");
        let long = "a".repeat(10_000);
        let e = with(serde_json::json!({"allowedHypervisorAnnotations": [long]})).unwrap_err();
        assert_eq!(e.field, "allowedHypervisorAnnotations[0]");
    }

    #[test]
    fn explicit_provider_config_reads_back_to_the_same_configuration() {
        let configs = [
            serde_json::json!({"apiVersion": API_VERSION, "kind": KIND}),
            serde_json::json!({"apiVersion": API_VERSION, "kind": KIND, "hypervisors": ["clh", "fc"], "defaultHypervisor": "fc",
                "debug": true, "devmapper": {"dataSize": "20Gi", "metadataSize": "1Gi", "baseImageSize": "10Gi"}}),
        ];
        for raw in configs {
            let c = KataConfiguration::from_provider_config(Some(&raw)).unwrap();
            let explicit = c.to_provider_config();
            assert_eq!(
                KataConfiguration::from_provider_config(Some(&explicit)).unwrap(),
                c,
                "{explicit}"
            );
            assert!(explicit["hypervisors"].is_array(), "defaults spelled out");
        }
    }
}
