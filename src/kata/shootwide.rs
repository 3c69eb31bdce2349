//! The rules that span the kata pools of one shoot. The seed's actuator applies them to its view of
//! every ContainerRuntime of the shoot namespace, the garden admission to the Shoot's workers: one
//! set, so the garden never accepts a Shoot that every reconcile in the seed would then reject.

use crate::api::kata_config::{KataConfiguration, Shim};

/// One pool as the rules read it.
#[derive(Clone, Copy, Debug)]
pub struct Pool<'a> {
    pub name: &'a str,
    pub config: &'a KataConfiguration,
}

/// A rule that the pools of a shoot break together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// Two pools ask for different handlers behind the one `kata` RuntimeClass.
    #[error(
        "pools {first_pool:?} and {second_pool:?} set different defaultHypervisor values ({first} and {second}), but the RuntimeClass \"kata\" can point to one handler only"
    )]
    DefaultConflict {
        first_pool: String,
        first: Shim,
        second_pool: String,
        second: Shim,
    },
}

impl Violation {
    /// The pools involved, for the caller to point at.
    pub fn pools(&self) -> [&str; 2] {
        match self {
            Violation::DefaultConflict {
                first_pool,
                second_pool,
                ..
            } => [first_pool, second_pool],
        }
    }
}

/// Every violation among `pools`, in an order that does not depend on theirs (pools by name).
pub fn violations(pools: &[Pool]) -> Vec<Violation> {
    let mut by_name: Vec<&Pool> = pools.iter().collect();
    by_name.sort_by_key(|p| p.name);
    let mut out = Vec::new();
    let mut first: Option<(&str, Shim)> = None;
    for pool in by_name {
        let Some(shim) = pool.config.default_hypervisor else {
            continue;
        };
        match first {
            None => first = Some((pool.name, shim)),
            Some((first_pool, first_shim)) if first_shim != shim => out.push(Violation::DefaultConflict {
                first_pool: first_pool.into(),
                first: first_shim,
                second_pool: pool.name.into(),
                second: shim,
            }),
            Some(_) => {}
        }
    }
    out
}

/// All violations as one error, the way the seed reports them on a ContainerRuntime.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Violations(pub Vec<Violation>);

/// `Ok` when the pools break no shoot-wide rule.
pub fn check(pools: &[Pool]) -> Result<(), Violations> {
    let found = violations(pools);
    if found.is_empty() {
        Ok(())
    } else {
        Err(Violations(found))
    }
}

/// The hypervisor behind the `kata` RuntimeClass, for pools that passed [`check`].
pub fn default_hypervisor(pools: &[Pool]) -> Option<Shim> {
    pools
        .iter()
        .filter(|p| p.config.default_hypervisor.is_some())
        .min_by_key(|p| p.name)
        .and_then(|p| p.config.default_hypervisor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(default: Option<&str>) -> KataConfiguration {
        let mut v = serde_json::json!({
            "apiVersion": "kata.runtime.extensions.config.gardener.cloud/v1alpha1",
            "kind": "KataConfiguration",
            "hypervisors": ["qemu", "clh", "fc"],
        });
        if let Some(d) = default {
            v["defaultHypervisor"] = d.into();
        }
        KataConfiguration::from_provider_config(Some(&v)).unwrap()
    }

    #[test]
    fn every_pool_that_disagrees_with_the_first_default_is_named_whatever_the_order() {
        let (a, b, c, d) = (
            config(Some("qemu")),
            config(Some("clh")),
            config(None),
            config(Some("fc")),
        );
        let pools = [
            Pool { name: "d", config: &d },
            Pool { name: "c", config: &c },
            Pool { name: "b", config: &b },
            Pool { name: "a", config: &a },
        ];
        let found = violations(&pools);
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[0].to_string(),
            "pools \"a\" and \"b\" set different defaultHypervisor values (qemu and clh), but the RuntimeClass \"kata\" can point to one handler only"
        );
        assert_eq!(found[1].pools(), ["a", "d"]);
        let mut reversed = pools;
        reversed.reverse();
        assert_eq!(violations(&reversed), found);
        assert_eq!(
            check(&pools).unwrap_err().to_string(),
            format!("{}; {}", found[0], found[1])
        );
    }

    #[test]
    fn pools_that_agree_or_leave_it_open_pass() {
        let (a, b, c) = (config(Some("clh")), config(None), config(Some("clh")));
        let pools = [
            Pool { name: "b", config: &b },
            Pool { name: "c", config: &c },
            Pool { name: "a", config: &a },
        ];
        assert!(check(&pools).is_ok());
        assert_eq!(default_hypervisor(&pools), Some(Shim::Clh));
        assert_eq!(default_hypervisor(&pools[..1]), None);
    }
}
