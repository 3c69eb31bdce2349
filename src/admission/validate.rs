//! The rules a Shoot's kata worker pools must follow, as pure functions: every error names the
//! Shoot field it is about.
//!
//! The providerConfig is decoded by [`KataConfiguration::from_provider_config`], the very decoder
//! the seed controller uses, and the provider / machine image rules are the seed's
//! [`Requirements`]: what the garden accepts here, the seed accepts later.
//!
//! On UPDATE a rule only rejects what the update changes: a pool that already runs kata and keeps
//! the fields a rule reads gets a warning from that rule instead of an error, so that a rule added
//! (or tightened) later never blocks unrelated changes of an existing shoot.

use crate::api::cluster::{Shoot, Worker};
use crate::api::kata_config::{KataConfiguration, LEGACY_DEFAULT_HYPERVISORS};
use crate::kata::names::EXTENSION_TYPE;
use crate::kata::requirements::Requirements;
use crate::kata::shootwide;
use std::collections::BTreeMap;
use std::fmt;

/// The only CRI kata runs with.
pub const CONTAINERD: &str = "containerd";

/// A machine type capability that marks the types able to run kata's VMs, e.g.
/// `nestedVirtualization=supported`. Parsed from `NAME=VALUE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapabilityRequirement {
    pub name: String,
    pub value: String,
}

impl std::str::FromStr for CapabilityRequirement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() && !value.trim().is_empty() => Ok(Self {
                name: name.trim().to_string(),
                value: value.trim().to_string(),
            }),
            _ => Err(format!("{s:?} is not NAME=VALUE (e.g. nestedVirtualization=supported)")),
        }
    }
}

impl fmt::Display for CapabilityRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.value)
    }
}

/// The operator's rules (flags of the `admission` subcommand).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// The seed's `--supported-providers` / `--supported-machine-images`.
    pub requirements: Requirements,
    /// `--machine-type-capability`; `None`: every machine type may run kata.
    pub machine_type_capability: Option<CapabilityRequirement>,
}

/// What the machine type rule needs from the Shoot's (Namespaced)CloudProfile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineTypeCatalog {
    /// `CloudProfile "x"` or `NamespacedCloudProfile "ns/x"`, for messages.
    pub profile: String,
    /// `spec.machineCapabilities[].name`.
    pub defined_capabilities: Vec<String>,
    /// `spec.machineTypes[]`: name → its own `capabilities` (not defaulted, see [`machine_type_error`]).
    pub machine_types: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl MachineTypeCatalog {
    /// Reads a CloudProfile spec (or a NamespacedCloudProfile's `status.cloudProfileSpec`).
    /// Lenient: what it cannot read counts as absent.
    pub fn from_spec(profile: String, spec: &serde_json::Value) -> Self {
        let defined_capabilities = spec
            .get("machineCapabilities")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
            .collect();
        let machine_types = spec
            .get("machineTypes")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let name = t.get("name")?.as_str()?.to_string();
                let caps = t
                    .get("capabilities")
                    .and_then(|c| serde_json::from_value::<BTreeMap<String, Vec<String>>>(c.clone()).ok())
                    .unwrap_or_default();
                Some((name, caps))
            })
            .collect();
        Self {
            profile,
            defined_capabilities,
            machine_types,
        }
    }
}

/// One violation: the Shoot field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The outcome for one Shoot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
}

/// Whether any pool of the Shoot lists kata: the cheap check before anything else.
pub fn uses_kata(shoot: &Shoot) -> bool {
    shoot
        .spec
        .provider
        .workers
        .iter()
        .any(|w| w.container_runtime(EXTENSION_TYPE).is_some())
}

/// Whether some kata pool needs the CloudProfile (the machine type rule is configured).
pub fn needs_machine_types(shoot: &Shoot, rules: &Rules) -> bool {
    rules.machine_type_capability.is_some() && uses_kata(shoot)
}

/// The rule outcome for one field: an error when the update touches what the rule reads, else a
/// warning.
struct Judge<'a> {
    verdict: &'a mut Verdict,
}

impl Judge<'_> {
    fn report(&mut self, field: String, message: String, enforced: bool) {
        if enforced {
            self.verdict.errors.push(FieldError { field, message });
        } else {
            self.verdict.warnings.push(format!(
                "{field}: {message} (not enforced: this kata pool existed before and the update does not change what this rule checks)"
            ));
        }
    }
}

/// Validates the kata pools of `shoot`. `old`: the stored Shoot on UPDATE. `catalog`: the machine
/// types of the Shoot's CloudProfile, when the machine type rule is configured.
pub fn validate_shoot(
    shoot: &Shoot,
    old: Option<&Shoot>,
    rules: &Rules,
    catalog: Option<&MachineTypeCatalog>,
) -> Verdict {
    let mut verdict = Verdict::default();
    let mut judge = Judge { verdict: &mut verdict };
    let had_kata = |w: &Worker| {
        old.and_then(|o| o.worker(&w.name))
            .is_some_and(|b| b.container_runtime(EXTENSION_TYPE).is_some())
    };
    // the provider rule, once per Shoot: the provider type is immutable, so only a pool that gets
    // kata with this request can break it
    let kata_pools: Vec<&Worker> = shoot
        .spec
        .provider
        .workers
        .iter()
        .filter(|w| w.container_runtime(EXTENSION_TYPE).is_some())
        .collect();
    if !kata_pools.is_empty()
        && let Err(message) = rules.requirements.check_provider(&shoot.spec.provider.type_)
    {
        judge.report(
            "spec.provider.type".into(),
            message,
            kata_pools.iter().any(|w| !had_kata(w)),
        );
    }
    let mut shoot_pools: Vec<DecodedPool> = Vec::new();
    for (i, worker) in shoot.spec.provider.workers.iter().enumerate() {
        let Some(cri) = &worker.cri else { continue };
        for (j, runtime) in cri.container_runtimes.iter().enumerate() {
            if runtime.type_ != EXTENSION_TYPE {
                continue;
            }
            let pool_path = format!("spec.provider.workers[{i}]");
            let runtime_path = format!("{pool_path}.cri.containerRuntimes[{j}]");
            // the same pool (by name) with kata in the stored Shoot
            let before: Option<&Worker> = old
                .and_then(|o| o.worker(&worker.name))
                .filter(|w| w.container_runtime(EXTENSION_TYPE).is_some());
            let changed = |read: &dyn Fn(&Worker) -> Option<String>| before.is_none_or(|b| read(b) != read(worker));

            // the providerConfig, strictly, with the seed's decoder
            let config_changed = before.is_none_or(|b| {
                b.container_runtime(EXTENSION_TYPE)
                    .and_then(|r| r.provider_config.as_ref())
                    != runtime.provider_config.as_ref()
            });
            let decoded = KataConfiguration::from_provider_config(runtime.provider_config.as_ref());
            if let Ok(config) = &decoded {
                shoot_pools.push(DecodedPool {
                    name: &worker.name,
                    path: format!("{runtime_path}.providerConfig"),
                    config: config.clone(),
                    default_changed: before.is_none_or(|b| default_hypervisor_of(b) != default_hypervisor_of(worker)),
                });
            }
            if let Err(e) = decoded {
                let field = if e.field == "providerConfig" {
                    format!("{runtime_path}.providerConfig")
                } else {
                    format!("{runtime_path}.providerConfig.{}", e.field)
                };
                // A pool reconciled by v0.1.0 keeps its old default hypervisors, which the seed
                // records and the garden cannot see: what is valid with them is the seed's call.
                let legacy = before.and_then(|_| {
                    KataConfiguration::from_provider_config_with_default(
                        runtime.provider_config.as_ref(),
                        &LEGACY_DEFAULT_HYPERVISORS,
                    )
                    .ok()
                });
                if let Some(config) = legacy {
                    shoot_pools.push(DecodedPool {
                        name: &worker.name,
                        path: format!("{runtime_path}.providerConfig"),
                        config,
                        default_changed: before
                            .is_none_or(|b| default_hypervisor_of(b) != default_hypervisor_of(worker)),
                    });
                    judge.report(
                        field,
                        format!(
                            "{} (valid only if this pool still has the hypervisor default of v0.1.0)",
                            e.message
                        ),
                        false,
                    );
                } else {
                    judge.report(field, e.message, config_changed);
                }
            }

            // kata is a containerd runtime
            if cri.name != CONTAINERD {
                judge.report(
                    format!("{pool_path}.cri.name"),
                    format!("kata needs cri.name {CONTAINERD:?}, not {:?}", cri.name),
                    changed(&|w| w.cri.as_ref().map(|c| c.name.clone())),
                );
            }

            // the operator's supported machine images
            let image = worker
                .machine
                .image
                .as_ref()
                .map(|i| i.name.as_str())
                .unwrap_or_default();
            if let Err(message) = rules.requirements.check_machine_image(image, &worker.name) {
                judge.report(
                    format!("{pool_path}.machine.image.name"),
                    message,
                    changed(&|w| w.machine.image.as_ref().map(|i| i.name.clone())),
                );
            }

            // machine types that can run VMs
            if let Some(required) = &rules.machine_type_capability
                && let Some(message) = machine_type_error(&worker.machine.type_, required, catalog)
            {
                judge.report(
                    format!("{pool_path}.machine.type"),
                    message,
                    changed(&|w| Some(w.machine.type_.clone())),
                );
            }
        }
    }
    shoot_wide_rules(&shoot_pools, &mut judge);
    verdict
}

/// A kata pool whose providerConfig decodes, for the shoot-wide rules.
struct DecodedPool<'a> {
    name: &'a str,
    /// `…containerRuntimes[j].providerConfig`
    path: String,
    config: KataConfiguration,
    /// New to kata, or its `defaultHypervisor` changes with this request.
    default_changed: bool,
}

fn default_hypervisor_of(worker: &Worker) -> Option<&serde_json::Value> {
    worker
        .container_runtime(EXTENSION_TYPE)?
        .provider_config
        .as_ref()?
        .get("defaultHypervisor")
}

/// The seed's shoot-wide rules ([`shootwide`]), each violation reported at every pool it involves,
/// with the seed's own message. Enforced when the request changes what the rule reads on one of
/// those pools.
fn shoot_wide_rules(pools: &[DecodedPool], judge: &mut Judge) {
    let views: Vec<shootwide::Pool> = pools
        .iter()
        .map(|p| shootwide::Pool {
            name: p.name,
            config: &p.config,
        })
        .collect();
    for violation in shootwide::violations(&views) {
        let involved: Vec<&DecodedPool> = pools.iter().filter(|p| violation.pools().contains(&p.name)).collect();
        let enforced = involved.iter().any(|p| p.default_changed);
        for pool in involved {
            let field = match violation {
                shootwide::Violation::DefaultConflict { .. } => format!("{}.defaultHypervisor", pool.path),
            };
            judge.report(field, violation.to_string(), enforced);
        }
    }
}

/// Why `machine_type` cannot run kata, if it cannot. The machine type must list the capability
/// value itself: Gardener's defaulting (a type without the capability has all of its values) would
/// make every unmarked type qualify, and kata needs a positive statement that VMs can start.
pub fn machine_type_error(
    machine_type: &str,
    required: &CapabilityRequirement,
    catalog: Option<&MachineTypeCatalog>,
) -> Option<String> {
    let Some(catalog) = catalog else {
        return Some(format!(
            "cannot check machine type {machine_type:?} for kata: the Shoot's CloudProfile was not found"
        ));
    };
    if !catalog.defined_capabilities.iter().any(|c| c == &required.name) {
        return Some(format!(
            "{} defines no machine capability {:?}, which this landscape uses to mark the machine types that can run kata (nested virtualization); ask the operator to add it",
            catalog.profile, required.name
        ));
    }
    let Some(capabilities) = catalog.machine_types.get(machine_type) else {
        return Some(format!("machine type {machine_type:?} is not in {}", catalog.profile));
    };
    let marked = capabilities
        .get(&required.name)
        .is_some_and(|values| values.iter().any(|v| v == &required.value));
    (!marked).then(|| {
        let with: Vec<_> = catalog
            .machine_types
            .iter()
            .filter(|(_, caps)| caps.get(&required.name).is_some_and(|v| v.contains(&required.value)))
            .map(|(name, _)| name.as_str())
            .collect();
        format!(
            "machine type {machine_type:?} cannot run kata: it does not have the capability {required} in {} (machine types that have it: {})",
            catalog.profile,
            if with.is_empty() { "none".to_string() } else { with.join(", ") }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const API: &str = "kata.runtime.extensions.config.gardener.cloud/v1alpha1";

    fn shoot(workers: Value) -> Shoot {
        serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "garden-dev"},
            "spec": {"provider": {"type": "aws", "workers": workers}}
        }))
        .unwrap()
    }

    fn pool(name: &str, machine: &str, cri: &str, provider_config: Value) -> Value {
        json!({
            "name": name,
            "machine": {"type": machine, "image": {"name": "gardenlinux", "version": "1.0.0"}},
            "cri": {"name": cri, "containerRuntimes": [{"type": "gvisor"}, {"type": "kata", "providerConfig": provider_config}]}
        })
    }

    fn cfg(extra: Value) -> Value {
        let mut v = json!({"apiVersion": API, "kind": "KataConfiguration"});
        v.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap());
        v
    }

    fn catalog() -> MachineTypeCatalog {
        MachineTypeCatalog::from_spec(
            "CloudProfile \"aws\"".into(),
            &json!({
                "machineCapabilities": [{"name": "architecture", "values": ["amd64"]}, {"name": "nestedVirtualization", "values": ["supported", "unsupported"]}],
                "machineTypes": [
                    {"name": "metal", "capabilities": {"nestedVirtualization": ["supported"]}},
                    {"name": "small"},
                    {"name": "no", "capabilities": {"nestedVirtualization": ["unsupported"]}}
                ]
            }),
        )
    }

    fn rules() -> Rules {
        Rules {
            requirements: Requirements {
                supported_providers: vec!["aws".into(), "gcp".into()],
                supported_machine_images: vec!["gardenlinux".into()],
            },
            machine_type_capability: Some("nestedVirtualization=supported".parse().unwrap()),
        }
    }

    fn fields(v: &Verdict) -> Vec<&str> {
        v.errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn a_valid_kata_pool_passes_and_other_pools_are_ignored() {
        let s = shoot(json!([
            {"name": "plain", "machine": {"type": "small"}},
            pool("kata", "metal", "containerd", cfg(json!({"hypervisors": ["qemu", "fc"], "defaultHypervisor": "fc"})))
        ]));
        assert!(uses_kata(&s));
        assert_eq!(validate_shoot(&s, None, &rules(), Some(&catalog())), Verdict::default());
        let plain = shoot(json!([{"name": "plain", "machine": {"type": "small"}}]));
        assert!(!uses_kata(&plain));
        assert!(!needs_machine_types(&plain, &rules()));
        assert_eq!(validate_shoot(&plain, None, &rules(), None), Verdict::default());
    }

    #[test]
    fn pools_that_disagree_on_the_default_are_rejected_with_the_seeds_message_at_each_pool() {
        let s = shoot(json!([
            pool(
                "b",
                "metal",
                "containerd",
                cfg(json!({"hypervisors": ["qemu", "clh"], "defaultHypervisor": "clh"}))
            ),
            pool(
                "a",
                "metal",
                "containerd",
                cfg(json!({"hypervisors": ["qemu"], "defaultHypervisor": "qemu"}))
            )
        ]));
        let v = validate_shoot(&s, None, &rules(), Some(&catalog()));
        let seed = "pools \"a\" and \"b\" set different defaultHypervisor values (qemu and clh), but the RuntimeClass \"kata\" can point to one handler only";
        assert_eq!(
            v.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            [
                format!("spec.provider.workers[0].cri.containerRuntimes[1].providerConfig.defaultHypervisor: {seed}"),
                format!("spec.provider.workers[1].cri.containerRuntimes[1].providerConfig.defaultHypervisor: {seed}"),
            ]
        );
        // the seed's own words for the same pools
        let (a, b) = (
            KataConfiguration::from_provider_config(Some(&cfg(
                json!({"hypervisors": ["qemu"], "defaultHypervisor": "qemu"}),
            )))
            .unwrap(),
            KataConfiguration::from_provider_config(Some(&cfg(
                json!({"hypervisors": ["qemu", "clh"], "defaultHypervisor": "clh"}),
            )))
            .unwrap(),
        );
        let pools = [
            crate::kata::pools::PoolInput {
                name: "a".into(),
                config: a,
                taints: vec![],
                architecture: "amd64".into(),
            },
            crate::kata::pools::PoolInput {
                name: "b".into(),
                config: b,
                taints: vec![],
                architecture: "amd64".into(),
            },
        ];
        assert_eq!(crate::kata::manifests::shared(&pools).unwrap_err().to_string(), seed);

        // an existing conflict that this update does not touch only warns
        let mut renamed = s.clone();
        renamed.spec.provider.workers[0].machine.type_ = "metal".into();
        let v = validate_shoot(&renamed, Some(&s), &rules(), Some(&catalog()));
        assert!(v.errors.is_empty(), "{v:?}");
        assert_eq!(v.warnings.len(), 2, "{v:?}");
        // one pool changing its default is enough to enforce it
        let fixed = shoot(json!([
            pool(
                "b",
                "metal",
                "containerd",
                cfg(json!({"hypervisors": ["qemu", "clh"], "defaultHypervisor": "qemu"}))
            ),
            pool(
                "a",
                "metal",
                "containerd",
                cfg(json!({"hypervisors": ["qemu"], "defaultHypervisor": "qemu"}))
            )
        ]));
        assert_eq!(
            validate_shoot(&fixed, Some(&s), &rules(), Some(&catalog())),
            Verdict::default()
        );
        let other = shoot(json!([
            pool(
                "b",
                "metal",
                "containerd",
                cfg(json!({"hypervisors": ["qemu", "fc"], "defaultHypervisor": "fc"}))
            ),
            pool(
                "a",
                "metal",
                "containerd",
                cfg(json!({"hypervisors": ["qemu"], "defaultHypervisor": "qemu"}))
            )
        ]));
        assert_eq!(
            validate_shoot(&other, Some(&s), &rules(), Some(&catalog()))
                .errors
                .len(),
            2
        );
    }

    #[test]
    fn provider_config_errors_carry_the_shoot_field_path() {
        let s = shoot(json!([
            {"name": "plain"},
            pool("kata", "metal", "containerd", cfg(json!({"hypervisors": ["qemu", "vmware"]})))
        ]));
        let v = validate_shoot(&s, None, &rules(), Some(&catalog()));
        assert_eq!(v.errors.len(), 1, "{v:?}");
        assert_eq!(
            v.errors[0].to_string(),
            "spec.provider.workers[1].cri.containerRuntimes[1].providerConfig.hypervisors[1]: unknown hypervisor \"vmware\", supported: [qemu, qemu-runtime-rs, clh, clh-runtime-rs, fc, dragonball]"
        );
        // unknown fields (strict decoding) and a non-object
        let s = shoot(json!([pool(
            "kata",
            "metal",
            "containerd",
            cfg(json!({"hypervisor": ["qemu"]}))
        )]));
        let v = validate_shoot(&s, None, &rules(), Some(&catalog()));
        assert_eq!(
            fields(&v),
            ["spec.provider.workers[0].cri.containerRuntimes[1].providerConfig"]
        );
        assert!(v.errors[0].message.contains("unknown field `hypervisor`"), "{v:?}");
        let s = shoot(json!([pool("kata", "metal", "containerd", json!("qemu"))]));
        let v = validate_shoot(&s, None, &rules(), Some(&catalog()));
        assert_eq!(v.errors[0].message, "must be an object");
        // no providerConfig at all is fine: the defaults apply
        let s = shoot(json!([pool("kata", "metal", "containerd", Value::Null)]));
        assert!(validate_shoot(&s, None, &rules(), Some(&catalog())).errors.is_empty());
    }

    #[test]
    fn environment_rules_name_their_fields() {
        let mut s = shoot(json!([pool("kata", "small", "cri-o", cfg(json!({})))]));
        s.spec.provider.type_ = "azure".into();
        s.spec.provider.workers[0].machine.image.as_mut().unwrap().name = "ubuntu".into();
        let v = validate_shoot(&s, None, &rules(), Some(&catalog()));
        assert_eq!(
            fields(&v),
            [
                "spec.provider.type",
                "spec.provider.workers[0].cri.name",
                "spec.provider.workers[0].machine.image.name",
                "spec.provider.workers[0].machine.type",
            ]
        );
        assert_eq!(
            v.errors[0].message,
            "kata is not enabled for provider type \"azure\" on this landscape (enabled: aws, gcp)"
        );
        assert_eq!(v.errors[1].message, "kata needs cri.name \"containerd\", not \"cri-o\"");
        assert_eq!(
            v.errors[3].message,
            "machine type \"small\" cannot run kata: it does not have the capability nestedVirtualization=supported in CloudProfile \"aws\" (machine types that have it: metal)"
        );
    }

    #[test]
    fn machine_types_need_an_explicit_capability() {
        let req: CapabilityRequirement = "nestedVirtualization=supported".parse().unwrap();
        let c = catalog();
        assert_eq!(machine_type_error("metal", &req, Some(&c)), None);
        // unmarked: Gardener's defaulting would give it every value; kata wants it explicit
        assert!(machine_type_error("small", &req, Some(&c)).is_some());
        assert!(machine_type_error("no", &req, Some(&c)).is_some());
        assert_eq!(
            machine_type_error("huge", &req, Some(&c)).unwrap(),
            "machine type \"huge\" is not in CloudProfile \"aws\""
        );
        let other: CapabilityRequirement = "kvm=true".parse().unwrap();
        assert!(
            machine_type_error("metal", &other, Some(&c))
                .unwrap()
                .starts_with("CloudProfile \"aws\" defines no machine capability \"kvm\"")
        );
        assert!(machine_type_error("metal", &req, None).is_some());
        assert!("novalue".parse::<CapabilityRequirement>().is_err());
        assert!("=x".parse::<CapabilityRequirement>().is_err());
    }

    #[test]
    fn updates_only_enforce_rules_on_what_they_change() {
        let old = shoot(json!([pool(
            "kata",
            "small",
            "containerd",
            cfg(json!({"hypervisors": ["qemu"]}))
        )]));
        // an unrelated change (another pool's machine) under a rule added later: warnings only
        let mut new = old.clone();
        new.spec
            .provider
            .workers
            .push(serde_json::from_value(json!({"name": "plain", "machine": {"type": "x"}})).unwrap());
        let v = validate_shoot(&new, Some(&old), &rules(), Some(&catalog()));
        assert!(v.errors.is_empty(), "{v:?}");
        assert_eq!(v.warnings.len(), 1, "{v:?}");
        assert!(
            v.warnings[0].starts_with("spec.provider.workers[0].machine.type: machine type \"small\" cannot run kata")
        );
        // moving the kata pool to another unmarked machine type is a change the rule judges
        let mut moved = old.clone();
        moved.spec.provider.workers[0].machine.type_ = "no".into();
        let v = validate_shoot(&moved, Some(&old), &rules(), Some(&catalog()));
        assert_eq!(fields(&v), ["spec.provider.workers[0].machine.type"]);
        // adding kata to an existing pool is new kata: every rule applies
        let mut without = old.clone();
        without.spec.provider.workers[0]
            .cri
            .as_mut()
            .unwrap()
            .container_runtimes
            .pop();
        let v = validate_shoot(&old, Some(&without), &rules(), Some(&catalog()));
        assert_eq!(fields(&v), ["spec.provider.workers[0].machine.type"]);
        // a changed providerConfig is decoded strictly
        let mut bad = old.clone();
        bad.spec.provider.workers[0].cri.as_mut().unwrap().container_runtimes[1].provider_config =
            Some(cfg(json!({"hypervisors": []})));
        let v = validate_shoot(&bad, Some(&old), &rules(), Some(&catalog()));
        assert_eq!(
            fields(&v),
            ["spec.provider.workers[0].cri.containerRuntimes[1].providerConfig.hypervisors"]
        );
        // ... but an unchanged one that a newer decoder rejects only warns
        let v = validate_shoot(&bad, Some(&bad), &rules(), Some(&catalog()));
        assert_eq!(fields(&v), Vec::<&str>::new());
        assert!(
            v.warnings.iter().any(|w| w.contains("providerConfig.hypervisors")),
            "{v:?}"
        );
    }

    #[test]
    fn a_provider_taken_off_the_list_warns_existing_pools_and_rejects_new_ones() {
        let mut rules = rules();
        rules.machine_type_capability = None;
        rules.requirements.supported_providers = vec!["gcp".into()];
        let old = shoot(json!([pool("a", "metal", "containerd", cfg(json!({})))]));
        let mut scaled = old.clone();
        scaled.spec.provider.workers[0].machine.type_ = "bigger".into();
        let v = validate_shoot(&scaled, Some(&old), &rules, None);
        assert!(v.errors.is_empty(), "{v:?}");
        assert!(v.warnings[0].starts_with("spec.provider.type: kata is not enabled for provider type \"aws\""));
        // a second kata pool is new kata on this provider, whichever pool comes first
        let mut grown = old.clone();
        grown
            .spec
            .provider
            .workers
            .push(serde_json::from_value(pool("b", "metal", "containerd", cfg(json!({})))).unwrap());
        let v = validate_shoot(&grown, Some(&old), &rules, None);
        assert_eq!(fields(&v), ["spec.provider.type"]);
    }

    #[test]
    fn the_legacy_default_of_an_existing_pool_is_the_seeds_call() {
        // fc as default without naming hypervisors: valid only with v0.1.0's default [qemu, clh, fc]
        let old = shoot(json!([pool("kata", "metal", "containerd", cfg(json!({})))]));
        let mut new = old.clone();
        new.spec.provider.workers[0].cri.as_mut().unwrap().container_runtimes[1].provider_config =
            Some(cfg(json!({"defaultHypervisor": "fc"})));
        let v = validate_shoot(&new, Some(&old), &rules(), Some(&catalog()));
        assert!(v.errors.is_empty(), "{v:?}");
        assert!(v.warnings[0].contains("hypervisor default of v0.1.0"), "{v:?}");
        // a new pool gets today's default, so the same config is an error there
        let v = validate_shoot(&new, None, &rules(), Some(&catalog()));
        assert_eq!(
            fields(&v),
            ["spec.provider.workers[0].cri.containerRuntimes[1].providerConfig.defaultHypervisor"]
        );
    }
}
