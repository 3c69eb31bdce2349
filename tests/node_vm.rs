//! The Firecracker node preparation on a real kernel with systemd and containerd: Debian VMs under
//! `qemu-system-x86_64 -accel tcg` (`make test-node`).
//!
//! Each chain of boots gets a disk image holding a Debian rootfs (`hack/node-vm.sh`), containerd
//! 1.7 or 2.2, and exactly what the webhook puts into a mutated OperatingSystemConfig: the crate's
//! mutation runs on an OSC here, `nodeagent-apply` writes the result the way gardener-node-agent
//! does (files, units enabled, containerd plugin entries merged into `containerd config default`).
//! The guest agent (`hack/node-vm/guest-agent.sh`) records what it finds per phase; after the VM is
//! off, the results are read back from the image with `debugfs` and asserted here.
//!
//! - main chain (per containerd version): first boot, clean reboot, unclean stop (qemu killed),
//!   then in that boot a raised `dataSize` and fc removed, and a last boot without fc.
//! - faults chain (per containerd version): `dm_thin_pool` hidden, then a full disk, then both
//!   fixed, on a disk far smaller than the default `dataSize`; then the pool is written full.
//!
//! The chains run once per test binary and are shared by the tests of their version. Without the
//! VM parts (`hack/node-vm.sh build`, qemu, debugfs, root) the tests fail in CI (`CI` set) and are
//! skipped with a message elsewhere.

use gardener_extension_runtime_kata::api::POOL_LABEL;
use gardener_extension_runtime_kata::api::cluster::{Cluster, ClusterSpec};
use gardener_extension_runtime_kata::api::kata_config::{API_VERSION, DEFAULT_HYPERVISORS, KIND, Shim};
use gardener_extension_runtime_kata::api::osc::OperatingSystemConfig;
use gardener_extension_runtime_kata::node::devmapper::SCRIPT_PATH;
use gardener_extension_runtime_kata::node_labeler::capability::{HostFacts, Verdict};
use gardener_extension_runtime_kata::webhook::mutate::{self, MutationSettings};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const GI: u64 = 1 << 30;
const MI: u64 = 1 << 20;
/// The main chain's disk and pool: the pool fits, with room to grow.
const MAIN_DISK: u64 = 6 * GI;
const MAIN_DATA: &str = "2Gi";
const MAIN_DATA_RAISED: &str = "3Gi";
/// The faults chain's disk: far smaller than the default dataSize (100Gi) it is configured with.
const FAULTS_DISK: u64 = 3 * GI;
const KILL_MARKER: &str = "KATA-NODE-TEST-KILL-ME";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn vm_dir() -> PathBuf {
    std::env::var_os("TESTBIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".testbin"))
        .join("node-vm")
}

fn containerd_dir(variant: &str) -> PathBuf {
    let version = match variant {
        "1.7" => "1.7.35",
        "2.2" => "2.2.9",
        _ => unreachable!(),
    };
    vm_dir().join(format!("containerd-{version}"))
}

/// Why the VM tests cannot run here, if they cannot.
fn unavailable(variant: &str) -> Option<String> {
    // SAFETY: geteuid has no preconditions
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (the rootfs is assembled with chroot and owned by root)".into());
    }
    for tool in ["qemu-system-x86_64", "debugfs", "mkfs.ext4"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            return Some(format!("{tool} is missing (make tools)"));
        }
    }
    let dir = vm_dir();
    for need in [
        dir.join("rootfs/usr/bin/systemctl"),
        dir.join("nodeagent-apply"),
        containerd_dir(variant).join("containerd"),
    ] {
        if !need.exists() {
            return Some(format!("{} is missing (hack/node-vm.sh build)", need.display()));
        }
    }
    None
}

/// Whether the VM tests with containerd `variant` can run; fails in CI when they cannot.
fn vm_available(variant: &str) -> bool {
    match unavailable(variant) {
        None => true,
        Some(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "the node VM tests must run in CI: {why}"
            );
            eprintln!("SKIPPED node VM test: {why}");
            false
        }
    }
}

// --- the OperatingSystemConfigs: the webhook's mutation on a gardenlet-like OSC -------------------

fn cluster(data_size: &str, with_fc: bool) -> Cluster {
    let hypervisors = if with_fc {
        json!(["qemu", "fc"])
    } else {
        json!(["qemu"])
    };
    let mut provider_config = json!({"apiVersion": API_VERSION, "kind": KIND, "hypervisors": hypervisors});
    if !data_size.is_empty() {
        provider_config["devmapper"] = json!({"dataSize": data_size, "metadataSize": "64Mi", "baseImageSize": "512Mi"});
    }
    Cluster::new(
        "shoot--p--s",
        ClusterSpec {
            cloud_profile: json!({"metadata": {"name": "local"}, "spec": {"type": "local"}}),
            seed: None,
            shoot: json!({"metadata": {"name": "s", "namespace": "garden-p"},
                "spec": {"provider": {"type": "local", "workers": [{"name": "kata", "cri": {"name": "containerd",
                    "containerRuntimes": [{"type": "kata", "providerConfig": provider_config}]}}]}}}),
        },
    )
}

/// An OSC as gardenlet writes it for a containerd pool (trimmed to what matters here).
fn gardenlet_osc() -> Value {
    json!({
        "apiVersion": "extensions.gardener.cloud/v1alpha1",
        "kind": "OperatingSystemConfig",
        "metadata": {"name": "osc-kata", "namespace": "shoot--p--s", "labels": {POOL_LABEL: "kata"}},
        "spec": {
            "type": "debian",
            "purpose": "reconcile",
            "criConfig": {"name": "containerd", "cgroupDriver": "systemd",
                "containerd": {"sandboxImage": "registry.k8s.io/pause:3.10"}},
            "files": [{"path": "/etc/sysctl.d/99-k8s-general.conf", "permissions": 420,
                "content": {"inline": {"encoding": "", "data": "vm.max_map_count = 135217728\n"}}}],
            "units": []
        }
    })
}

/// The OSC after the webhook: mutated when the pool has fc, unchanged otherwise (the webhook skips).
///
/// `KATA_NODE_VM_SCRIPT=<file>` puts that script template (with the `@…@` placeholders of
/// `src/node/kata-devmapper-setup.sh`) in place of the setup script, to see which tests catch a
/// defective or older script.
fn webhook_osc(data_size: &str, with_fc: bool) -> Value {
    let raw = gardenlet_osc();
    let osc: OperatingSystemConfig = serde_json::from_value(raw.clone()).unwrap();
    let cluster = cluster(data_size, with_fc);
    match mutate::devmapper_for(&osc, Some(&cluster), &DEFAULT_HYPERVISORS) {
        Ok(dm) => {
            let m = mutate::mutate_raw(&raw, &osc, &dm, &MutationSettings::default()).unwrap();
            let mut out = raw;
            json_patch::patch(&mut out, &m.patch).unwrap();
            if let Some(path) = std::env::var_os("KATA_NODE_VM_SCRIPT") {
                use base64::Engine;
                use gardener_extension_runtime_kata::node::devmapper as d;
                let script = std::fs::read_to_string(&path)
                    .expect("KATA_NODE_VM_SCRIPT")
                    .replace("@POOL_NAME@", d::POOL_NAME)
                    .replace("@DATA_SIZE@", &dm.data_size.to_string())
                    .replace("@METADATA_SIZE@", &dm.metadata_size.to_string())
                    .replace("@SNAPSHOTTER_ROOT@", d::SNAPSHOTTER_ROOT)
                    .replace("@DATA_DIR@", d::DATA_DIR)
                    .replace("@UNIT_NAME@", d::UNIT_NAME)
                    .replace("@CONTAINERD_DROPIN@", d::CONTAINERD_DROPIN_PATH);
                let data = base64::engine::general_purpose::STANDARD.encode(script);
                let files = out["spec"]["files"].as_array_mut().unwrap();
                let file = files.iter_mut().find(|f| f["path"] == SCRIPT_PATH).unwrap();
                file["content"]["inline"]["data"] = Value::String(data);
            }
            out
        }
        Err(skip) => {
            assert!(!with_fc, "the webhook skipped an fc pool: {skip}");
            raw
        }
    }
}

// --- chains of boots -------------------------------------------------------------------------------

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Chain {
    dir: PathBuf,
    name: String,
}

impl Chain {
    fn disk(&self) -> PathBuf {
        self.dir.join("disk.img")
    }

    /// Assembles the node's disk: rootfs, containerd `variant`, the webhook's OSC applied by
    /// nodeagent-apply, and the OSCs the guest applies later.
    fn new(
        name: &str,
        variant: &str,
        disk_size: u64,
        oscs: &[(&str, Value)],
        hide_thin_pool: bool,
    ) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("kata-node-vm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let root = dir.join("root");
        run(Command::new("bash")
            .arg(repo().join("hack/node-vm.sh"))
            .args(["assemble"])
            .arg(&root)
            .arg(variant))?;
        let state = root.join("var/lib/kata-node-test");
        std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
        for (file, osc) in oscs {
            std::fs::write(state.join(file), serde_json::to_vec_pretty(osc).unwrap()).map_err(|e| e.to_string())?;
        }
        run(Command::new(vm_dir().join("nodeagent-apply"))
            .arg("-root")
            .arg(&root)
            .arg("-osc")
            .arg(state.join(oscs[0].0))
            .arg("-containerd")
            .arg(containerd_dir(variant).join("containerd")))?;
        if hide_thin_pool {
            run(Command::new("sh").arg("-c").arg(format!(
                "set -e; n=0; for f in $(find '{}/lib/modules' -name 'dm-thin-pool.ko*'); do mv \"$f\" \"$f.hidden\"; n=$((n+1)); done; [ $n -gt 0 ]",
                root.display()
            )))?;
        }
        let disk = dir.join("disk.img");
        run(Command::new("truncate").arg("-s").arg(disk_size.to_string()).arg(&disk))?;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "kata-node", "-d"])
            .arg(&root)
            .arg(&disk))?;
        std::fs::remove_dir_all(&root).map_err(|e| e.to_string())?;
        Ok(Chain {
            dir,
            name: name.to_string(),
        })
    }

    /// Boots the VM into `phase` until it powers off (or, with `kill`, until the guest asks to be
    /// killed: then qemu is killed, the unclean stop). Returns the seconds it took.
    fn boot(&self, phase: &str, kill: bool) -> Result<u64, String> {
        let start = Instant::now();
        let log_path = self.dir.join(format!("{phase}.console"));
        let mut log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-m", "1024", "-smp", "1", "-no-reboot"])
            // no VGA, CD-ROM, parallel port or NIC to probe at boot: the disk and a serial console
            .args([
                "-nodefaults",
                "-display",
                "none",
                "-monitor",
                "none",
                "-serial",
                "stdio",
            ])
            .arg("-kernel")
            .arg(self.dir.join("vmlinuz"))
            .arg("-initrd")
            .arg(self.dir.join("initrd.img"))
            .arg("-append")
            .arg(format!(
                "root=/dev/vda rw console=ttyS0 panic=-1 quiet systemd.show_status=0 kata_test={phase}"
            ))
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=raw,cache=writeback",
                self.disk().display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("qemu: {e}"))?;
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let timeout = Duration::from_secs(900);
        let mut killed = false;
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(line) => {
                    let _ = writeln!(log, "{line}");
                    if kill && line.contains(KILL_MARKER) && !line.contains("say ") {
                        // the unclean stop: no shutdown, no dm teardown, no unmount
                        let _ = child.kill();
                        killed = true;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{}: boot {phase} timed out; console: {}",
                    self.name,
                    log_path.display()
                ));
            }
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        if kill && !killed {
            return Err(format!(
                "{}: {phase} never asked to be killed; console: {}",
                self.name,
                log_path.display()
            ));
        }
        if !kill && !status.success() {
            return Err(format!(
                "{}: qemu exited with {status}; console: {}",
                self.name,
                log_path.display()
            ));
        }
        let secs = start.elapsed().as_secs();
        eprintln!("[node-vm] {}: boot {phase} took {secs}s", self.name);
        Ok(secs)
    }

    /// The guest's results of `phase`, read from the powered-off disk image.
    fn results(&self, phase: &str) -> Result<Phase, String> {
        let dest = self.dir.join("results");
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::create_dir_all(&dest).map_err(|e| e.to_string())?;
        run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump /var/lib/kata-node-test/results {}", dest.display()))
            .arg(self.disk()))?;
        let dir = dest.join("results").join(phase);
        let facts = std::fs::read_to_string(dir.join("facts")).map_err(|e| {
            format!(
                "{}: no results of {phase} ({e}); console: {}",
                self.name,
                self.dir.join(format!("{phase}.console")).display()
            )
        })?;
        let mut files = HashMap::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| e.to_string())? {
            let entry = entry.map_err(|e| e.to_string())?;
            files.insert(
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(entry.path()).unwrap_or_default(),
            );
        }
        let facts = facts
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        Ok(Phase {
            name: format!("{}/{phase}", self.name),
            facts,
            files,
        })
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        if std::env::var_os("KATA_NODE_VM_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[derive(Debug)]
struct Phase {
    name: String,
    facts: HashMap<String, String>,
    files: HashMap<String, String>,
}

impl Phase {
    fn fact(&self, key: &str) -> &str {
        self.facts
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{}: no fact {key}; facts: {:#?}", self.name, self.facts))
    }
    fn num(&self, key: &str) -> u64 {
        self.fact(key)
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {key}={:?}: {e}", self.name, self.fact(key)))
    }
    fn file(&self, name: &str) -> &str {
        self.files.get(name).map(String::as_str).unwrap_or("")
    }
    /// `name:inode:size:blocks` of a backing file, from the `files` fact.
    fn backing(&self, key: &str, file: &str) -> Option<(u64, u64, u64)> {
        self.fact(key).split_whitespace().find_map(|entry| {
            let parts: Vec<&str> = entry.split(':').collect();
            (parts.len() == 4 && parts[0] == file).then(|| {
                (
                    parts[1].parse().unwrap(),
                    parts[2].parse().unwrap(),
                    parts[3].parse::<u64>().unwrap() * 512,
                )
            })
        })
    }
    /// Data sectors of the pool table.
    fn pool_sectors(&self, key: &str) -> u64 {
        let table = self.fact(key);
        let fields: Vec<&str> = table.split_whitespace().collect();
        assert!(
            fields.len() > 2 && fields[2] == "thin-pool",
            "{}: {key}={table:?}",
            self.name
        );
        fields[1].parse().unwrap()
    }
}

struct MainChain {
    first: Phase,
    reboot: Phase,
    after_kill: Phase,
    after_removal: Phase,
}

struct FaultsChain {
    faults: Phase,
}

fn main_chain(variant: &'static str) -> &'static MainChain {
    static V17: OnceLock<Result<MainChain, String>> = OnceLock::new();
    static V22: OnceLock<Result<MainChain, String>> = OnceLock::new();
    let cell = if variant == "1.7" { &V17 } else { &V22 };
    let chain = cell.get_or_init(|| {
        let oscs = [
            ("osc-fc.json", webhook_osc(MAIN_DATA, true)),
            ("osc-raised.json", webhook_osc(MAIN_DATA_RAISED, true)),
            ("osc-nofc.json", webhook_osc("", false)),
        ];
        let c = Chain::new(&format!("main-{variant}"), variant, MAIN_DISK, &oscs, false)?;
        c.boot("first-boot", false)?;
        c.boot("reboot", true)?;
        c.boot("after-kill", false)?;
        c.boot("after-removal", false)?;
        Ok(MainChain {
            first: c.results("first-boot")?,
            reboot: c.results("reboot")?,
            after_kill: c.results("after-kill")?,
            after_removal: c.results("after-removal")?,
        })
    });
    chain
        .as_ref()
        .unwrap_or_else(|e| panic!("main chain with containerd {variant}: {e}"))
}

fn faults_chain(variant: &'static str) -> &'static FaultsChain {
    static V17: OnceLock<Result<FaultsChain, String>> = OnceLock::new();
    static V22: OnceLock<Result<FaultsChain, String>> = OnceLock::new();
    let cell = if variant == "1.7" { &V17 } else { &V22 };
    let chain = cell.get_or_init(|| {
        // no devmapper sizes: the defaults (dataSize 100Gi) on a 3 GiB disk
        let oscs = [("osc-fc.json", webhook_osc("", true))];
        let c = Chain::new(&format!("faults-{variant}"), variant, FAULTS_DISK, &oscs, true)?;
        c.boot("faults", false)?;
        Ok(FaultsChain {
            faults: c.results("faults")?,
        })
    });
    chain
        .as_ref()
        .unwrap_or_else(|e| panic!("faults chain with containerd {variant}: {e}"))
}

/// The default snapshotter of the CRI plugin, from `containerd config dump`.
fn default_snapshotter(config_dump: &str) -> Option<String> {
    let mut section = String::new();
    for line in config_dump.lines() {
        // containerd 2.x dumps with single quotes
        let line = line.trim().replace('\'', "\"");
        let line = line.as_str();
        if line.starts_with('[') {
            section = line.to_string();
        } else if let Some(v) = line.strip_prefix("snapshotter = ") {
            // 1.7: [plugins."io.containerd.grpc.v1.cri".containerd]; 2.x: [plugins."io.containerd.cri.v1.images"]
            if section == r#"[plugins."io.containerd.grpc.v1.cri".containerd]"#
                || section == r#"[plugins."io.containerd.cri.v1.images"]"#
            {
                return Some(v.trim_matches('"').to_string());
            }
        }
    }
    None
}

// --- the tests -------------------------------------------------------------------------------------

macro_rules! node_tests {
    ($module:ident, $variant:literal) => {
        mod $module {
            use super::*;

            #[test]
            fn first_boot_creates_the_pool_before_containerd_starts() {
                if !vm_available($variant) {
                    return;
                }
                let p = &main_chain($variant).first;
                assert_eq!(
                    p.fact("unit_result"),
                    "success",
                    "{}",
                    p.file("devmapper.journal")
                );
                assert_eq!(p.fact("unit_active"), "active");
                assert!(
                    p.file("devmapper.journal").contains("creating"),
                    "{}",
                    p.file("devmapper.journal")
                );
                let (exit, start) = (p.num("unit_exit_mono"), p.num("containerd_start_mono"));
                assert!(
                    exit > 0 && exit <= start,
                    "the script ended at {exit}, containerd started at {start}"
                );
                assert_eq!(p.pool_sectors("pool_table") * 512, 2 * GI);
            }

            #[test]
            fn devmapper_snapshotter_is_ok_and_overlayfs_stays_the_default() {
                if !vm_available($variant) {
                    return;
                }
                let p = &main_chain($variant).first;
                assert_eq!(p.fact("devmapper_plugin"), "ok", "{}", p.file("plugins"));
                assert_eq!(p.fact("overlayfs_plugin"), "ok", "{}", p.file("plugins"));
                assert_eq!(p.fact("cri_plugin"), "ok", "{}", p.file("plugins"));
                assert_eq!(
                    default_snapshotter(p.file("config-dump")).as_deref(),
                    Some("overlayfs"),
                    "{}",
                    p.file("config-dump")
                );
                // the table comes from the drop-in; config.toml has none (node-agent removed the
                // default one)
                assert_eq!(p.fact("dropin"), "present");
                let (toml, dump) = (p.file("config.toml"), p.file("config-dump"));
                assert!(!toml.contains("io.containerd.snapshotter.v1.devmapper"), "{toml}");
                assert!(
                    dump.replace('\'', "\"").contains("pool_name = \"devpool\""),
                    "{dump}"
                );
                assert_eq!(p.fact("overlay_works"), "yes");
            }

            #[test]
            fn a_devmapper_snapshot_can_be_prepared_mounted_and_written() {
                if !vm_available($variant) {
                    return;
                }
                let p = &main_chain($variant).first;
                assert_eq!(p.fact("snap_mounted"), "yes", "{}", p.file("snapshots.log"));
                assert_eq!(p.fact("sum_first").len(), 64);
                assert_eq!(p.fact("sum_first"), p.fact("sum_first_reread"));
            }

            #[test]
            fn after_a_reboot_the_same_pool_is_reattached_and_the_data_is_intact() {
                if !vm_available($variant) {
                    return;
                }
                let c = main_chain($variant);
                let (first, p) = (&c.first, &c.reboot);
                let journal = p.file("devmapper.journal");
                assert!(journal.contains("re-attaching"), "{journal}");
                assert!(
                    !journal.contains("creating sparse") && !journal.contains("creating backing"),
                    "{journal}"
                );
                assert_eq!(p.fact("devmapper_plugin"), "ok");
                assert_eq!(p.fact("snap_mounted"), "yes", "{}", p.file("snapshots.log"));
                assert_eq!(
                    p.fact("sum_first"),
                    first.fact("sum_first"),
                    "the file written before the reboot"
                );
                assert_eq!(
                    p.backing("files", "data").unwrap().0,
                    first.backing("files", "data").unwrap().0,
                    "same data file"
                );
            }

            #[test]
            fn after_an_unclean_stop_the_next_boot_recovers_without_wiping() {
                if !vm_available($variant) {
                    return;
                }
                let c = main_chain($variant);
                let p = &c.after_kill;
                let journal = p.file("devmapper.journal");
                assert_eq!(p.fact("unit_result"), "success", "{journal}");
                assert!(journal.contains("re-attaching"), "{journal}");
                assert_eq!(p.fact("devmapper_plugin"), "ok", "{}", p.file("plugins"));
                assert_eq!(p.fact("snap_mounted"), "yes", "{}", p.file("snapshots.log"));
                assert_eq!(p.fact("sum_first"), c.first.fact("sum_first"));
                assert_eq!(
                    p.fact("sum_second"),
                    c.reboot.fact("sum_second"),
                    "synced before the kill"
                );
                for f in ["data", "metadata"] {
                    assert_eq!(
                        p.backing("files", f).unwrap().0,
                        c.first.backing("files", f).unwrap().0,
                        "{f} kept"
                    );
                }
            }

            #[test]
            fn the_pool_is_backed_by_reserved_disk_space() {
                if !vm_available($variant) {
                    return;
                }
                let p = &main_chain($variant).first;
                let (_, size, allocated) = p.backing("files", "data").unwrap();
                assert_eq!(size, 2 * GI);
                assert!(
                    allocated >= size,
                    "data file: {size} bytes, only {allocated} allocated: the pool overcommits the disk"
                );
                // the metadata file stays sparse (about 64 bytes per data block in use)
            }

            #[test]
            fn a_raised_data_size_grows_the_active_pool_and_keeps_the_data() {
                if !vm_available($variant) {
                    return;
                }
                let p = &main_chain($variant).after_kill;
                let journal = p.file("devmapper-raised.journal");
                assert_eq!(p.fact("unit_result-raised"), "success", "{journal}");
                assert_eq!(p.pool_sectors("pool_table") * 512, 2 * GI);
                assert_eq!(p.pool_sectors("pool_table-raised") * 512, 3 * GI, "{journal}");
                let (_, size, allocated) = p.backing("files-raised", "data").unwrap();
                assert_eq!(size, 3 * GI);
                assert!(allocated >= size, "grown space is reserved too");
                assert!(journal.contains("growing"), "{journal}");
                assert_eq!(p.fact("devmapper_plugin-raised"), "ok");
                assert_eq!(
                    p.fact("sum_first_raised"),
                    main_chain($variant).first.fact("sum_first")
                );
            }

            #[test]
            fn removing_fc_leaves_a_node_containerd_starts_from() {
                if !vm_available($variant) {
                    return;
                }
                let c = main_chain($variant);
                let (now, next) = (&c.after_kill, &c.after_removal);
                assert_eq!(now.fact("containerd_active-removed"), "active");
                assert_eq!(now.fact("overlay_works_removed"), "yes");
                assert_eq!(next.fact("containerd_active"), "active");
                assert_eq!(next.fact("overlay_works"), "yes");
                assert_eq!(
                    default_snapshotter(next.file("config-dump")).as_deref(),
                    Some("overlayfs")
                );
                // script, unit and drop-in are gone with the OSC entries; containerd does not try
                // to load the devmapper snapshotter any more
                assert_eq!(next.fact("unit_active"), "inactive");
                assert_eq!(next.fact("script"), "absent");
                assert_eq!(next.fact("dropin"), "absent");
                assert_eq!(next.fact("cri_plugin"), "ok", "{}", next.file("plugins"));
                assert_ne!(next.fact("devmapper_plugin"), "error", "{}", next.file("plugins"));
                assert_ne!(
                    now.fact("devmapper_plugin-removed"),
                    "error",
                    "{}",
                    now.file("plugins-removed")
                );
            }

            #[test]
            fn without_dm_thin_pool_the_unit_fails_clearly_and_containerd_starts() {
                if !vm_available($variant) {
                    return;
                }
                let p = &faults_chain($variant).faults;
                let journal = p.file("devmapper.journal");
                assert_eq!(p.fact("unit_result"), "exit-code", "{journal}");
                assert!(journal.contains("no device-mapper thin-pool target"), "{journal}");
                assert_eq!(p.fact("containerd_active"), "active");
                assert_eq!(p.fact("overlay_works"), "yes", "non-fc pods keep working");
                assert_eq!(p.fact("dropin"), "disabled", "{journal}");
                assert_eq!(p.fact("cri_plugin"), "ok", "{}", p.file("plugins"));
                assert_ne!(p.fact("devmapper_plugin"), "error", "{}", p.file("plugins"));
                assert!(p.backing("files", "data").is_none(), "nothing created");
            }

            #[test]
            fn a_full_disk_fails_safely() {
                if !vm_available($variant) {
                    return;
                }
                let p = &faults_chain($variant).faults;
                let journal = p.file("devmapper-full.journal");
                assert_eq!(p.fact("rerun_full"), "failed", "the unit is retried; {journal}");
                assert!(journal.contains("not enough free space"), "{journal}");
                assert!(
                    p.backing("files-full", "data").is_none(),
                    "{}",
                    p.fact("files-full")
                );
                assert!(
                    p.backing("files-full", "data.new").is_none(),
                    "{}",
                    p.fact("files-full")
                );
                assert_eq!(p.fact("containerd_active-full"), "active");
            }

            #[test]
            fn a_later_success_takes_effect_without_a_manual_containerd_restart() {
                if !vm_available($variant) {
                    return;
                }
                let p = &faults_chain($variant).faults;
                let journal = p.file("devmapper-fixed.journal");
                assert_eq!(p.fact("rerun_fixed"), "active", "{journal}");
                assert_eq!(p.fact("plugin_after_fix"), "ok", "{}", p.file("plugins-fixed"));
                assert!(
                    p.num("containerd_start_mono-fixed") > p.num("containerd_start_mono"),
                    "containerd was restarted"
                );
                assert!(journal.contains("restarting containerd"), "{journal}");
                assert_eq!(p.fact("dropin-fixed"), "present");
                assert_eq!(p.fact("sum_fixed"), p.fact("sum_fixed_reread"));
            }

            #[test]
            fn a_full_pool_fails_writes_at_once_and_the_disk_does_not_notice() {
                if !vm_available($variant) {
                    return;
                }
                let p = &faults_chain($variant).faults;
                assert_ne!(
                    p.fact("fill_rc"),
                    "0",
                    "writing 4 GiB into a smaller pool must fail"
                );
                let status = p.fact("pool_status_full");
                assert!(status.contains("out_of_data_space"), "{status}");
                // error_if_no_space: no 60-second queueing before the error
                assert!(p.num("fill_secs") < 600, "{:?}", p.facts);
                // the pool's blocks were reserved up front: the file system keeps its free space
                let (before, after) = (p.num("fs_avail-fixed"), p.num("fs_avail-pool-full"));
                assert!(after + 64 * MI >= before, "free space {before} -> {after}");
                assert_eq!(p.fact("fs_errors"), "0");
                assert_eq!(p.fact("fs_writable"), "yes");
                assert_eq!(p.fact("cri_plugin-pool-full"), "ok");
            }

            #[test]
            fn the_default_data_size_on_a_small_disk_is_clamped_to_reserved_space() {
                if !vm_available($variant) {
                    return;
                }
                let p = &faults_chain($variant).faults;
                let journal = p.file("devmapper-fixed.journal");
                let (_, size, allocated) = p.backing("files-fixed", "data").expect("a data file");
                assert!(
                    size < FAULTS_DISK,
                    "a {size}-byte pool on a {FAULTS_DISK}-byte disk"
                );
                assert!(
                    allocated >= size,
                    "data file: {size} bytes, {allocated} allocated"
                );
                assert!(size >= GI / 4 && size % MI == 0, "{size}");
                assert_eq!(p.pool_sectors("pool_table-fixed") * 512, size);
                assert!(journal.contains("does not fit"), "{journal}");
                // the node labeler's verdict from what this kernel's sysfs shows of the pool: fc
                // runs, and the node condition names the smaller size against the configured one
                let sysfs_bytes = p.num("pool_sysfs_sectors-fixed") * 512;
                assert_eq!(sysfs_bytes, size, "sysfs shows the pool's data size");
                let facts = HostFacts {
                    kvm: true,
                    dm_devices: vec!["devpool".into()],
                    devpool_bytes: Some(sysfs_bytes),
                    ..Default::default()
                };
                let verdict = Verdict::of(&facts, &[Shim::Fc], Some(100 * GI));
                assert!(verdict.all_runnable());
                assert_eq!(verdict.reason(), "DevmapperPoolSmallerThanConfigured");
                assert!(
                    verdict
                        .message()
                        .contains("of the 100.0 GiB configured (devmapper.dataSize)"),
                    "{}",
                    verdict.message()
                );
                // the node keeps about a fifth of its disk free (less what the guest wrote since)
                assert!(
                    p.num("fs_avail-fixed") * 100 >= p.num("fs_size-fixed") * 15,
                    "{:?}",
                    p.facts
                );
            }
        }
    };
}

node_tests!(containerd_1_7, "1.7");
node_tests!(containerd_2_2, "2.2");
