//! The devmapper thin-pool that containerd's devmapper snapshotter (and with it Kata's Firecracker
//! shim) needs: an idempotent, reboot-safe setup script and a oneshot unit ordered before containerd.
//!
//! The script's behaviour is documented in its header (`kata-devmapper-setup.sh`). Data safety is
//! the main design constraint: the backing files are created only when absent, never truncated, and
//! thin-pool metadata is zeroed only in a metadata file created by the same run.

use crate::api::kata_config::Devmapper;

/// Where the script lands on the node.
pub const SCRIPT_PATH: &str = "/opt/bin/kata-devmapper-setup.sh";
/// File mode of the script (0755).
pub const SCRIPT_PERMISSIONS: i32 = 0o755;
/// The systemd unit that runs the script before containerd.
pub const UNIT_NAME: &str = "kata-devmapper.service";
/// The thin-pool's name under `/dev/mapper/`, also containerd's `pool_name`.
pub const POOL_NAME: &str = "devpool";
/// Directory holding the sparse backing files `data` and `metadata`.
pub const DATA_DIR: &str = "/var/lib/kata-devmapper";
/// containerd's devmapper snapshotter state (`root_path`).
pub const SNAPSHOTTER_ROOT: &str = "/var/lib/containerd/io.containerd.snapshotter.v1.devmapper";
/// containerd drop-in with the devmapper snapshotter's configuration. gardener-node-agent makes
/// containerd import `/etc/containerd/conf.d/*.toml`; the script renames the file to `*.disabled`
/// while the pool is missing (see [`containerd_dropin`]).
pub const CONTAINERD_DROPIN_PATH: &str = "/etc/containerd/conf.d/kata-devmapper.toml";
/// File mode of the drop-in (0644, like containerd's config.toml).
pub const CONTAINERD_DROPIN_PERMISSIONS: i32 = 0o644;
/// containerd plugin path of the devmapper snapshotter (same in config v2, v3, v4).
pub const DEVMAPPER_PLUGIN: &str = "io.containerd.snapshotter.v1.devmapper";

const SCRIPT_TEMPLATE: &str = include_str!("kata-devmapper-setup.sh");

/// The setup script with the pool sizes of a pool's providerConfig baked in as defaults.
pub fn setup_script(dm: &Devmapper) -> String {
    SCRIPT_TEMPLATE
        .replace("@POOL_NAME@", POOL_NAME)
        .replace("@DATA_SIZE@", &dm.data_size.to_string())
        .replace("@METADATA_SIZE@", &dm.metadata_size.to_string())
        .replace("@SNAPSHOTTER_ROOT@", SNAPSHOTTER_ROOT)
        .replace("@DATA_DIR@", DATA_DIR)
        .replace("@UNIT_NAME@", UNIT_NAME)
        .replace("@CONTAINERD_DROPIN@", CONTAINERD_DROPIN_PATH)
}

/// containerd's devmapper snapshotter configuration, as a drop-in rather than in config.toml:
/// containerd 2.x (unlike 1.7) fails its metadata plugin, and with it images, containers and CRI
/// for *all* pods, when a configured snapshotter cannot load (`ic.GetByType` in containerd/plugin
/// 1.0 returns the first error). Only a file can be taken away while the pool is missing; a table
/// in config.toml could not (gardener-node-agent never removes keys). The file has no `version`:
/// containerd 1.7 then keeps the main file's version 2, and 2.x migrates it to the main file's
/// version; the plugin key is the same in all versions.
pub fn containerd_dropin(dm: &Devmapper) -> String {
    format!(
        "# Managed by gardener-extension-runtime-kata (OperatingSystemConfig webhook). {SCRIPT_PATH}\n\
         # renames this file to *.disabled while the thin-pool {POOL_NAME} is missing.\n\
         [plugins.\"{DEVMAPPER_PLUGIN}\"]\n\
         \x20 pool_name = \"{POOL_NAME}\"\n\
         \x20 root_path = \"{SNAPSHOTTER_ROOT}\"\n\
         \x20 base_image_size = \"{}\"\n\
         \x20 discard_blocks = true\n",
        containerd_size(dm.base_image_size)
    )
}

/// The unit: a oneshot that stays "active" after the script ran, ordered before containerd and
/// pulled in by it.
///
/// `WantedBy=containerd.service` rather than `RequiredBy=`: if the thin-pool cannot be set up (for
/// example the kernel lacks `dm_thin_pool`), containerd must still start, so that only kata-fc pods
/// fail and the node with all its other workloads keeps running.
pub fn unit() -> String {
    format!(
        "[Unit]\n\
         Description=Devmapper thin-pool for Kata Containers' Firecracker shim (gardener-extension-runtime-kata)\n\
         After=local-fs.target\n\
         Before=containerd.service\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         ExecStart={SCRIPT_PATH}\n\
         \n\
         [Install]\n\
         WantedBy=containerd.service\n"
    )
}

/// `base_image_size` as containerd's devmapper snapshotter parses it (go-units `RAMInBytes`, where
/// `GB` means 2^30 bytes): the exact size in the largest binary unit that divides it.
pub fn containerd_size(bytes: u64) -> String {
    for (unit, factor) in [("TB", 1u64 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dm() -> Devmapper {
        Devmapper {
            data_size: 20 << 30,
            metadata_size: 1 << 30,
            base_image_size: 10 << 30,
        }
    }

    #[test]
    fn script_bakes_in_sizes_and_defaults() {
        let s = setup_script(&dm());
        assert!(s.starts_with("#!/usr/bin/env bash\n"));
        assert!(s.contains("DATA_SIZE=\"${KATA_DEVMAPPER_DATA_SIZE:-21474836480}\""));
        assert!(s.contains("METADATA_SIZE=\"${KATA_DEVMAPPER_METADATA_SIZE:-1073741824}\""));
        assert!(s.contains("POOL_NAME=\"${KATA_DEVMAPPER_POOL:-devpool}\""));
        assert!(s.contains(&format!("KATA_DEVMAPPER_SNAPSHOTTER_ROOT:-{SNAPSHOTTER_ROOT}}}")));
        assert!(s.contains(&format!("KATA_DEVMAPPER_DIR:-{DATA_DIR}}}")));
        for placeholder in [
            "@DATA_DIR@",
            "@POOL_NAME@",
            "@DATA_SIZE@",
            "@METADATA_SIZE@",
            "@SNAPSHOTTER_ROOT@",
            "@UNIT_NAME@",
            "@CONTAINERD_DROPIN@",
        ] {
            assert!(!s.contains(placeholder), "unreplaced {placeholder}");
        }
        // the only truncate calls work on freshly created *.new files
        for line in s.lines().filter(|l| l.trim_start().starts_with("truncate")) {
            assert!(line.contains(".new\""), "{line}");
        }
    }

    #[test]
    fn unit_runs_once_before_containerd_without_blocking_it() {
        let u = unit();
        for needle in [
            "Type=oneshot",
            "RemainAfterExit=yes",
            "Before=containerd.service",
            "WantedBy=containerd.service",
            &format!("ExecStart={SCRIPT_PATH}"),
        ] {
            assert!(u.contains(needle), "missing {needle} in\n{u}");
        }
        assert!(
            !u.contains("RequiredBy"),
            "a failing pool setup must not block containerd"
        );
    }

    #[test]
    fn containerd_dropin_configures_only_the_devmapper_snapshotter() {
        let d = containerd_dropin(&dm());
        assert!(
            d.contains("[plugins.\"io.containerd.snapshotter.v1.devmapper\"]\n  pool_name = \"devpool\"\n"),
            "{d}"
        );
        assert!(d.contains("  base_image_size = \"10GB\"\n"), "{d}");
        assert!(d.contains("  discard_blocks = true\n"), "{d}");
        assert!(
            !d.contains("version"),
            "a version would override the main config's: {d}"
        );
        assert_eq!(d.lines().filter(|l| l.starts_with('[')).count(), 1);
    }

    #[test]
    fn containerd_sizes() {
        assert_eq!(containerd_size(40 << 30), "40GB");
        assert_eq!(containerd_size(512 << 20), "512MB");
        assert_eq!(containerd_size(3 << 40), "3TB");
        assert_eq!(containerd_size((1 << 30) + 1), "1073741825");
    }

    /// shellcheck is installed by hack/install-tools.sh (called by `make test`); without it the
    /// check is skipped locally, but fails in CI.
    #[test]
    fn script_is_shellcheck_clean() {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(setup_script(&dm()).as_bytes()).unwrap();
        let out = match std::process::Command::new("shellcheck").arg(f.path()).output() {
            Ok(out) => out,
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "shellcheck is required in CI (hack/install-tools.sh): {e}"
                );
                eprintln!("SKIPPED: shellcheck not found ({e}); run hack/install-tools.sh");
                return;
            }
        };
        assert!(
            out.status.success(),
            "shellcheck findings:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
