//! What each shim needs from its node, read from what an unprivileged container already sees:
//! sysfs and procfs of the host kernel (device classes, loaded modules, device-mapper names and CPU
//! flags are not namespaced). No hostPath, no device, no privilege.
//!
//! | shim | needs |
//! |---|---|
//! | qemu, qemu-runtime-rs | KVM; vhost-vsock is noted but not required (kata's own check marks it optional: `/dev/vhost-vsock` autoloads the module) |
//! | clh, clh-runtime-rs, dragonball | KVM (hybrid vsock over a unix socket, no vhost) |
//! | fc | KVM and the active devmapper thin-pool `devpool` (containerd's devmapper snapshotter) |

use crate::api::kata_config::Shim;
use crate::node::devmapper::POOL_NAME;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a shim cannot run on this node. The variant names are the node condition's reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Missing {
    /// The CPU offers no hardware virtualization to this machine (no nested virtualization).
    VirtualizationUnsupported,
    /// The CPU can virtualize, but the kernel exposes no KVM device (kvm_intel/kvm_amd not loaded).
    KvmUnavailable,
    /// The devmapper thin-pool that kata-fc's snapshotter needs is not active.
    DevmapperPoolMissing,
}

impl Missing {
    pub fn reason(self) -> &'static str {
        match self {
            Missing::VirtualizationUnsupported => "VirtualizationUnsupported",
            Missing::KvmUnavailable => "KVMUnavailable",
            Missing::DevmapperPoolMissing => "DevmapperPoolMissing",
        }
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Missing::VirtualizationUnsupported => {
                "the CPU offers no hardware virtualization (no vmx/svm flag in /proc/cpuinfo): \
                 the machine type needs nested virtualization"
            }
            Missing::KvmUnavailable => {
                "the kernel offers no KVM device (/sys/class/misc/kvm is absent): \
                 load kvm_intel or kvm_amd"
            }
            Missing::DevmapperPoolMissing => {
                "the devmapper thin-pool devpool is not active: see 'journalctl -u kata-devmapper' on the node"
            }
        })
    }
}

/// What the node offers, as read from sysfs and procfs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// `Some(true)` when /proc/cpuinfo shows vmx or svm; `None` where there is no such flag (arm64)
    /// or cpuinfo is unreadable.
    pub cpu_virtualization: Option<bool>,
    pub kvm: bool,
    pub vhost_vsock: bool,
    /// Names of the active device-mapper devices.
    pub dm_devices: Vec<String>,
    /// The data size of the active thin-pool `devpool` in bytes: the size of its device, as the
    /// pool's table spans its whole data device.
    pub devpool_bytes: Option<u64>,
}

/// Where the host's sysfs and procfs are mounted (`/sys`, `/proc`; fake trees in tests).
#[derive(Clone, Debug)]
pub struct Roots {
    pub sys: PathBuf,
    pub proc: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            sys: "/sys".into(),
            proc: "/proc".into(),
        }
    }
}

/// x86 CPUs announce hardware virtualization as a cpuinfo flag; other architectures do not.
fn cpu_virtualization(cpuinfo: &str) -> Option<bool> {
    let mut saw_flags = false;
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key.trim() != "flags" {
            continue;
        }
        saw_flags = true;
        if value.split_whitespace().any(|f| f == "vmx" || f == "svm") {
            return Some(true);
        }
    }
    saw_flags.then_some(false)
}

/// The active device-mapper devices: (name, size in bytes when readable).
fn dm_devices(sys: &Path) -> Vec<(String, Option<u64>)> {
    let Ok(entries) = std::fs::read_dir(sys.join("block")) else {
        return Vec::new();
    };
    let mut devices: Vec<(String, Option<u64>)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("dm-"))
        .filter_map(|e| {
            let name = std::fs::read_to_string(e.path().join("dm/name")).ok()?;
            // sysfs gives block device sizes in 512-byte sectors
            let sectors = std::fs::read_to_string(e.path().join("size"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            Some((name.trim().to_string(), sectors.map(|s| s.saturating_mul(512))))
        })
        .collect();
    devices.sort();
    devices
}

/// A thin-pool this much smaller than configured counts as smaller (the data file is whole
/// 64 KiB blocks; anything beyond rounding is the script giving up space it did not have).
const POOL_SIZE_TOLERANCE: u64 = 1 << 20;

/// Bytes for a person: GiB with one decimal from 1 GiB on, else MiB.
fn human(bytes: u64) -> String {
    const GI: f64 = (1u64 << 30) as f64;
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / GI)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

impl HostFacts {
    pub fn read(roots: &Roots) -> Self {
        let exists = |p: &str| roots.sys.join(p).exists();
        let devices = dm_devices(&roots.sys);
        Self {
            cpu_virtualization: std::fs::read_to_string(roots.proc.join("cpuinfo"))
                .ok()
                .and_then(|c| cpu_virtualization(&c)),
            kvm: exists("class/misc/kvm"),
            vhost_vsock: exists("class/misc/vhost-vsock") || exists("module/vhost_vsock"),
            devpool_bytes: devices.iter().find(|(n, _)| n == POOL_NAME).and_then(|(_, b)| *b),
            dm_devices: devices.into_iter().map(|(n, _)| n).collect(),
        }
    }

    /// Whether `shim` can run here, and if not the first thing it lacks.
    pub fn check(&self, shim: Shim) -> Result<(), Missing> {
        if !self.kvm {
            return Err(if self.cpu_virtualization == Some(false) {
                Missing::VirtualizationUnsupported
            } else {
                Missing::KvmUnavailable
            });
        }
        if shim == Shim::Fc && !self.dm_devices.iter().any(|d| d == POOL_NAME) {
            return Err(Missing::DevmapperPoolMissing);
        }
        Ok(())
    }

    /// Remarks that do not keep a shim from running.
    pub fn notes(&self, shims: &[Shim]) -> Vec<String> {
        let uses_vhost = shims.iter().any(|s| matches!(s, Shim::Qemu | Shim::QemuRuntimeRs));
        if uses_vhost && self.kvm && !self.vhost_vsock {
            vec!["vhost_vsock is not loaded yet (the kernel loads it when qemu first opens /dev/vhost-vsock)".into()]
        } else {
            Vec::new()
        }
    }

    /// The active thin-pool's size and the configured one, when the pool is smaller: the setup
    /// script keeps (or makes) a smaller pool rather than fill the node's file system.
    pub fn pool_shortfall(&self, configured: Option<u64>) -> Option<PoolShortfall> {
        let (have, configured) = (self.devpool_bytes?, configured?);
        (have.saturating_add(POOL_SIZE_TOLERANCE) < configured).then_some(PoolShortfall { have, configured })
    }
}

/// The active thin-pool is smaller than the pool's `devmapper.dataSize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShortfall {
    pub have: u64,
    pub configured: u64,
}

impl PoolShortfall {
    pub const REASON: &'static str = "DevmapperPoolSmallerThanConfigured";
}

impl fmt::Display for PoolShortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the devmapper thin-pool devpool has {} of the {} configured (devmapper.dataSize): the node's file system \
             cannot hold more, kata-fc runs with the smaller pool; see 'journalctl -u kata-devmapper' on the node",
            human(self.have),
            human(self.configured)
        )
    }
}

/// The verdict for a pool's shims on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub runnable: Vec<Shim>,
    pub blocked: Vec<(Shim, Missing)>,
    pub notes: Vec<String>,
    /// fc can run, on a thin-pool smaller than configured.
    pub pool_shortfall: Option<PoolShortfall>,
}

impl Verdict {
    /// `fc_data_size`: the pool's `devmapper.dataSize`, when it has fc.
    pub fn of(facts: &HostFacts, shims: &[Shim], fc_data_size: Option<u64>) -> Self {
        let mut runnable = Vec::new();
        let mut blocked = Vec::new();
        for &shim in shims {
            match facts.check(shim) {
                Ok(()) => runnable.push(shim),
                Err(m) => blocked.push((shim, m)),
            }
        }
        let pool_shortfall = runnable
            .contains(&Shim::Fc)
            .then(|| facts.pool_shortfall(fc_data_size))
            .flatten();
        Self {
            runnable,
            blocked,
            notes: facts.notes(shims),
            pool_shortfall,
        }
    }

    /// Every requested shim can run.
    pub fn all_runnable(&self) -> bool {
        self.blocked.is_empty()
    }

    /// The node condition's reason: the most basic thing missing, else a thin-pool smaller than
    /// configured, else success.
    pub fn reason(&self) -> &'static str {
        match self.blocked.iter().map(|(_, m)| *m).min() {
            Some(missing) => missing.reason(),
            None if self.pool_shortfall.is_some() => PoolShortfall::REASON,
            None => "AllShimsRunnable",
        }
    }

    /// One line for a person: what runs, what does not and why.
    pub fn message(&self) -> String {
        let mut parts = Vec::new();
        let names = |shims: &mut dyn Iterator<Item = Shim>| shims.map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        if !self.runnable.is_empty() {
            parts.push(format!("can run: {}", names(&mut self.runnable.iter().copied())));
        }
        let mut missing: Vec<Missing> = self.blocked.iter().map(|(_, m)| *m).collect();
        missing.sort();
        missing.dedup();
        for m in missing {
            let shims = names(&mut self.blocked.iter().filter(|(_, x)| *x == m).map(|(s, _)| *s));
            parts.push(format!("cannot run {shims}: {m}"));
        }
        parts.extend(self.pool_shortfall.iter().map(|p| p.to_string()));
        parts.extend(self.notes.iter().cloned());
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    struct Tree(tempfile::TempDir);

    impl Tree {
        fn new(tag: &str) -> Self {
            let t = Tree(tempfile::Builder::new().prefix(tag).tempdir().unwrap());
            fs::create_dir_all(t.0.path().join("sys/block")).unwrap();
            fs::create_dir_all(t.0.path().join("proc")).unwrap();
            t
        }
        fn roots(&self) -> Roots {
            Roots {
                sys: self.0.path().join("sys"),
                proc: self.0.path().join("proc"),
            }
        }
        fn file(&self, rel: &str, content: &str) -> &Self {
            let p = self.0.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
            self
        }
        fn dir(&self, rel: &str) -> &Self {
            fs::create_dir_all(self.0.path().join(rel)).unwrap();
            self
        }
    }

    const INTEL: &str =
        "processor\t: 0\nflags\t\t: fpu vme lm vmx sse4_1\n\nprocessor\t: 1\nflags\t\t: fpu vme lm vmx sse4_1\n";
    const NO_VIRT: &str = "processor\t: 0\nflags\t\t: fpu vme lm sse4_1 hypervisor\n";

    #[test]
    fn cpu_flags_tell_hardware_virtualization_apart_from_unknown() {
        assert_eq!(cpu_virtualization(INTEL), Some(true));
        assert_eq!(cpu_virtualization("flags : fpu svm lm"), Some(true));
        assert_eq!(cpu_virtualization(NO_VIRT), Some(false));
        // arm64 cpuinfo has "Features", no "flags"
        assert_eq!(cpu_virtualization("processor : 0\nFeatures : fp asimd\n"), None);
        // a flag that merely contains the letters does not count
        assert_eq!(cpu_virtualization("flags : vmx_x"), Some(false));
    }

    #[test]
    fn a_node_without_nested_virtualization_runs_no_shim() {
        let t = Tree::new("novirt");
        t.file("proc/cpuinfo", NO_VIRT);
        let v = Verdict::of(&HostFacts::read(&t.roots()), &[Shim::Qemu, Shim::Clh], None);
        assert!(v.runnable.is_empty());
        assert_eq!(v.reason(), "VirtualizationUnsupported");
        assert!(
            v.message()
                .contains("cannot run qemu, clh: the CPU offers no hardware virtualization"),
            "{}",
            v.message()
        );
    }

    #[test]
    fn virtualization_without_the_kvm_device_is_reported_as_kvm_unavailable() {
        let t = Tree::new("nokvm");
        t.file("proc/cpuinfo", INTEL);
        let v = Verdict::of(&HostFacts::read(&t.roots()), &[Shim::Dragonball], None);
        assert_eq!(v.blocked, vec![(Shim::Dragonball, Missing::KvmUnavailable)]);
        assert_eq!(v.reason(), "KVMUnavailable");
        // arm64: no flags to look at, so a missing KVM device is the reason
        let t = Tree::new("arm");
        t.file("proc/cpuinfo", "Features : fp asimd\n");
        assert_eq!(
            HostFacts::read(&t.roots()).check(Shim::Qemu),
            Err(Missing::KvmUnavailable)
        );
    }

    #[test]
    fn fc_needs_the_active_devpool_and_the_others_only_kvm() {
        let t = Tree::new("fc");
        t.file("proc/cpuinfo", INTEL)
            .dir("sys/class/misc/kvm")
            .file("sys/block/dm-0/dm/name", "other\n");
        let all = [
            Shim::Qemu,
            Shim::QemuRuntimeRs,
            Shim::Clh,
            Shim::ClhRuntimeRs,
            Shim::Dragonball,
            Shim::Fc,
        ];
        let v = Verdict::of(&HostFacts::read(&t.roots()), &all, None);
        assert_eq!(v.runnable, all[..5].to_vec());
        assert_eq!(v.blocked, vec![(Shim::Fc, Missing::DevmapperPoolMissing)]);
        assert_eq!(v.reason(), "DevmapperPoolMissing");
        assert!(!v.all_runnable());

        t.file("sys/block/dm-3/dm/name", "devpool\n");
        let v = Verdict::of(&HostFacts::read(&t.roots()), &all, None);
        assert!(v.all_runnable(), "{v:?}");
        assert_eq!(v.reason(), "AllShimsRunnable");
    }

    /// The setup script keeps (or makes) a pool smaller than `devmapper.dataSize` when the file
    /// system cannot hold it: fc still runs, and the condition says so with both sizes.
    #[test]
    fn a_thin_pool_smaller_than_configured_is_reported_with_both_sizes() {
        const GI: u64 = 1 << 30;
        let t = Tree::new("poolsize");
        t.file("proc/cpuinfo", INTEL)
            .dir("sys/class/misc/kvm")
            .dir("sys/class/misc/vhost-vsock")
            .file("sys/block/dm-3/dm/name", "devpool\n")
            // 8 GiB in 512-byte sectors
            .file("sys/block/dm-3/size", &format!("{}\n", 8 * GI / 512));
        let facts = HostFacts::read(&t.roots());
        assert_eq!(facts.devpool_bytes, Some(8 * GI));
        let v = Verdict::of(&facts, &[Shim::Fc, Shim::Qemu], Some(20 * GI));
        assert!(v.all_runnable(), "fc still runs: {v:?}");
        assert_eq!(v.reason(), "DevmapperPoolSmallerThanConfigured");
        assert_eq!(
            v.message(),
            "can run: fc, qemu; the devmapper thin-pool devpool has 8.0 GiB of the 20.0 GiB configured \
             (devmapper.dataSize): the node's file system cannot hold more, kata-fc runs with the smaller pool; \
             see 'journalctl -u kata-devmapper' on the node"
        );
        // the configured size (within block rounding), no size configured, a pool without fc
        for (shims, configured) in [
            (&[Shim::Fc][..], Some(8 * GI + 65536)),
            (&[Shim::Fc][..], None),
            (&[Shim::Qemu][..], Some(20 * GI)),
        ] {
            let v = Verdict::of(&facts, shims, configured);
            assert_eq!(v.reason(), "AllShimsRunnable", "{shims:?} {configured:?}");
            assert_eq!(v.pool_shortfall, None);
        }
        // a missing shim is the reason before the size
        t.file("sys/block/dm-3/dm/name", "other\n");
        let v = Verdict::of(&HostFacts::read(&t.roots()), &[Shim::Fc, Shim::Qemu], Some(20 * GI));
        assert_eq!(v.reason(), "DevmapperPoolMissing");
        assert_eq!(v.pool_shortfall, None);
    }

    #[test]
    fn a_missing_vhost_vsock_is_a_note_not_a_blocker() {
        let t = Tree::new("vsock");
        t.file("proc/cpuinfo", INTEL).dir("sys/class/misc/kvm");
        let v = Verdict::of(&HostFacts::read(&t.roots()), &[Shim::Qemu], None);
        assert!(v.all_runnable());
        assert!(v.message().contains("vhost_vsock is not loaded yet"), "{}", v.message());
        // clh does not use vhost-vsock
        assert!(
            Verdict::of(&HostFacts::read(&t.roots()), &[Shim::Clh], None)
                .notes
                .is_empty()
        );
        t.dir("sys/module/vhost_vsock");
        assert!(
            Verdict::of(&HostFacts::read(&t.roots()), &[Shim::Qemu], None)
                .notes
                .is_empty()
        );
    }

    #[test]
    fn unreadable_trees_mean_nothing_can_run() {
        let roots = Roots {
            sys: "/nonexistent/sys".into(),
            proc: "/nonexistent/proc".into(),
        };
        let v = Verdict::of(&HostFacts::read(&roots), &[Shim::Qemu], None);
        assert_eq!(v.blocked, vec![(Shim::Qemu, Missing::KvmUnavailable)]);
    }

    #[test]
    fn the_message_names_what_runs_and_groups_what_does_not() {
        let v = Verdict {
            runnable: vec![Shim::Qemu],
            blocked: vec![(Shim::Fc, Missing::DevmapperPoolMissing)],
            notes: vec![],
            pool_shortfall: None,
        };
        assert_eq!(
            v.message(),
            "can run: qemu; cannot run fc: the devmapper thin-pool devpool is not active: see 'journalctl -u kata-devmapper' on the node"
        );
    }
}
