//! The OperatingSystemConfig mutation: pure functions from (OSC, Cluster) to a JSON patch.
//!
//! For a `reconcile` OSC whose worker pool lists the `kata` container runtime with the Firecracker
//! shim (`fc`) enabled, the webhook ensures
//! - the devmapper setup script ([`node::devmapper::SCRIPT_PATH`]),
//! - the unit [`node::devmapper::UNIT_NAME`] that runs it before containerd,
//! - containerd's devmapper snapshotter configuration as the drop-in file
//!   [`node::devmapper::CONTAINERD_DROPIN_PATH`], which the script disables while the pool is
//!   missing (containerd 2.x runs no pod at all while a configured snapshotter fails to load),
//! - an `op: remove` entry for the devmapper table in `criConfig.containerd.plugins`: versions
//!   before the drop-in put the table into config.toml, where gardener-node-agent never removes it.
//!
//! "Ensure" means: an entry with our file path / unit name / plugin path is replaced by the current
//! content (stale content of an older extension version is replaced, never duplicated), so mutating
//! an already mutated OSC is a no-op and yields an empty patch.
//!
//! # containerd configuration (v2 and v3/v4 config files)
//!
//! gardener-node-agent writes each `plugins[]` entry at `plugins.<path>` of the node's
//! `/etc/containerd/config.toml`, whatever its version; it only translates the CRI *runtimes* path
//! for v3. We therefore add only what is valid for every config version and cannot break a node:
//!
//! - `[plugins."io.containerd.snapshotter.v1.devmapper"]` with `pool_name`, `root_path`,
//!   `base_image_size`, `discard_blocks = true` (in the drop-in, imported by every version; in
//!   config.toml only removed): the same key in v2, v3 and v4. It configures the
//!   snapshotter plugin only; the snapshotter is bound to the `kata-fc` handler alone by kata-deploy
//!   (`SNAPSHOTTER_HANDLER_MAPPING=fc:devmapper`, set by the controller), which writes the per-handler
//!   `snapshotter` (and for v3 the `cri.v1.images` `runtime_platforms` entry). We never touch the
//!   global/default snapshotter.
//! - `[plugins."io.containerd.cri.v1.images"] use_local_image_pull = true` (optional, on by default,
//!   [`MutationSettings::local_image_pull`]): containerd 2.1 and 2.2 pull through the transfer
//!   service, which unpacks only for snapshotters listed in `unpack_config`; a kata-fc image would
//!   fail with "no unpack platforms defined". The local (pre-2.1) pull path honours the per-handler
//!   snapshotter. containerd 1.7/2.0 ignore this key (a v2 file's `cri.v1.images` table is either
//!   migrated or ignored), 2.3+ handles it as well.
//!
//! Deliberately **not** added: `[[plugins."io.containerd.transfer.v1.local".unpack_config]]`
//! entries. They replace the built-in overlayfs default (so an overlayfs entry would have to be
//! repeated), need the node's platform (`linux/amd64` vs `arm64`), and before containerd 2.3 an entry
//! for a snapshotter that failed to load (for example the pool could not be created) makes the
//! transfer plugin fail, breaking *all* image pulls on the node. `discard_unpacked_layers` is left
//! at containerd's default (`false`), which mixed snapshotters need.
//!
//! If the OSC has no `criConfig.containerd` (Gardener before v1.100, or a pool whose containerd
//! config gardener-node-agent does not manage), only the file and the unit are added and the
//! response carries a warning: creating `criConfig.containerd` would make gardener-node-agent take
//! over the node's containerd configuration and needs the pause image (`sandboxImage`), which only
//! gardenlet knows.

use crate::api::POOL_LABEL;
use crate::api::cluster::{Cluster, DecodedCluster};
use crate::api::kata_config::{ConfigError, Devmapper, KataConfiguration};
use crate::api::osc::{
    ContainerdConfig, File, FileContent, InlineContent, OperatingSystemConfig, OperatingSystemConfigSpec,
    PURPOSE_RECONCILE, PluginConfig, Unit,
};
use crate::node::devmapper;
use base64::Engine;
use serde_json::{Value, json};

/// The container runtime type this extension serves.
pub const RUNTIME_TYPE: &str = "kata";
/// containerd plugin path of the devmapper snapshotter (same in config v2, v3, v4).
pub const DEVMAPPER_PLUGIN: &str = devmapper::DEVMAPPER_PLUGIN;
/// containerd plugin path of the CRI image service (config v3+).
pub const CRI_IMAGES_PLUGIN: &str = "io.containerd.cri.v1.images";

/// Knobs of the mutation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutationSettings {
    /// Add `use_local_image_pull = true` to containerd's CRI image service (see the module docs).
    pub local_image_pull: bool,
}

impl Default for MutationSettings {
    fn default() -> Self {
        Self { local_image_pull: true }
    }
}

/// Why an OSC is left unchanged.
#[derive(Debug, thiserror::Error)]
pub enum Skip {
    #[error("purpose is {0:?}, not reconcile")]
    NotReconcile(String),
    #[error("no {POOL_LABEL} label")]
    NoPoolLabel,
    #[error("the OperatingSystemConfig is being deleted")]
    Deleting,
    #[error("no Cluster {0}")]
    ClusterMissing(String),
    #[error("{0}")]
    ClusterUndecodable(String),
    #[error("worker pool {0} is not in the shoot")]
    PoolNotInShoot(String),
    #[error("worker pool {0} does not use the kata container runtime")]
    NoKata(String),
    #[error("worker pool {pool}: {source}")]
    InvalidProviderConfig { pool: String, source: ConfigError },
    #[error("worker pool {0} does not enable the Firecracker shim (fc)")]
    FcDisabled(String),
}

impl Skip {
    /// Whether the skip is worth a log line at info level (misconfiguration) rather than debug.
    pub fn is_notable(&self) -> bool {
        matches!(
            self,
            Skip::ClusterMissing(_) | Skip::ClusterUndecodable(_) | Skip::InvalidProviderConfig { .. }
        )
    }
}

/// The pool name of an OSC (its `worker.gardener.cloud/pool` label).
pub fn pool_of(osc: &OperatingSystemConfig) -> Option<&str> {
    osc.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(POOL_LABEL))
        .map(String::as_str)
}

/// The pool of an OSC, when it runs kata with a providerConfig that names no hypervisors (so the
/// pool's own default decides whether it has Firecracker).
pub fn pool_without_hypervisors(osc: &OperatingSystemConfig, cluster: Option<&Cluster>) -> Option<String> {
    let pool = pool_of(osc)?;
    let decoded = DecodedCluster::decode(cluster?).ok()?;
    let runtime = decoded.shoot.worker(pool)?.container_runtime(RUNTIME_TYPE)?;
    (!KataConfiguration::names_hypervisors(runtime.provider_config.as_ref())).then(|| pool.to_string())
}

/// Decides whether an OSC gets the devmapper prerequisites, and with which sizes;
/// `default_hypervisors` is the pool's default (see `kata::defaults`).
pub fn devmapper_for(
    osc: &OperatingSystemConfig,
    cluster: Option<&Cluster>,
    default_hypervisors: &[crate::api::kata_config::Shim],
) -> Result<Devmapper, Skip> {
    if osc.spec.purpose != PURPOSE_RECONCILE {
        return Err(Skip::NotReconcile(osc.spec.purpose.clone()));
    }
    let pool = pool_of(osc).ok_or(Skip::NoPoolLabel)?;
    if osc.metadata.deletion_timestamp.is_some() {
        return Err(Skip::Deleting);
    }
    let cluster = cluster.ok_or_else(|| Skip::ClusterMissing(osc.metadata.namespace.clone().unwrap_or_default()))?;
    let decoded = DecodedCluster::decode(cluster).map_err(|e| Skip::ClusterUndecodable(e.to_string()))?;
    let worker = decoded
        .shoot
        .worker(pool)
        .ok_or_else(|| Skip::PoolNotInShoot(pool.to_string()))?;
    let runtime = worker
        .container_runtime(RUNTIME_TYPE)
        .ok_or_else(|| Skip::NoKata(pool.to_string()))?;
    let config =
        KataConfiguration::from_provider_config_with_default(runtime.provider_config.as_ref(), default_hypervisors)
            .map_err(|source| Skip::InvalidProviderConfig {
                pool: pool.to_string(),
                source,
            })?;
    if !config.needs_devmapper() {
        return Err(Skip::FcDisabled(pool.to_string()));
    }
    Ok(config.devmapper)
}

/// The script file as it appears in the OSC.
pub fn script_file(dm: &Devmapper) -> File {
    File {
        path: devmapper::SCRIPT_PATH.to_string(),
        permissions: Some(devmapper::SCRIPT_PERMISSIONS),
        content: FileContent {
            inline: Some(InlineContent {
                encoding: "b64".into(),
                data: base64::engine::general_purpose::STANDARD.encode(devmapper::setup_script(dm)),
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// containerd's devmapper configuration as it appears in the OSC (see [`devmapper::containerd_dropin`]).
pub fn containerd_dropin_file(dm: &Devmapper) -> File {
    File {
        path: devmapper::CONTAINERD_DROPIN_PATH.to_string(),
        permissions: Some(devmapper::CONTAINERD_DROPIN_PERMISSIONS),
        content: FileContent {
            inline: Some(InlineContent {
                encoding: "b64".into(),
                data: base64::engine::general_purpose::STANDARD.encode(devmapper::containerd_dropin(dm)),
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The unit as it appears in the OSC. `filePaths` restarts it when the script or the drop-in
/// changes, which is harmless: the script is idempotent, and it re-disables a rewritten drop-in
/// while the pool is missing.
pub fn setup_unit() -> Unit {
    Unit {
        name: devmapper::UNIT_NAME.to_string(),
        command: Some("start".into()),
        enable: Some(true),
        content: Some(devmapper::unit()),
        file_paths: vec![
            devmapper::SCRIPT_PATH.to_string(),
            devmapper::CONTAINERD_DROPIN_PATH.to_string(),
        ],
        ..Default::default()
    }
}

/// A containerd plugin entry we own, and which existing entries count as ours (stale versions).
struct OwnedPlugin {
    entry: PluginConfig,
    /// Keys we own in a table other components may also write to. `None`: we own the whole path.
    shared_keys: Option<&'static [&'static str]>,
}

impl OwnedPlugin {
    fn owns(&self, other: &PluginConfig) -> bool {
        if other.path != self.entry.path {
            return false;
        }
        match self.shared_keys {
            // a whole table we own: whatever the op (older versions added it, we remove it)
            None => true,
            Some(_) if other.op.as_deref().is_some_and(|op| op != "add") => false,
            Some(keys) => match &other.values {
                Some(Value::Object(values)) => values.keys().all(|k| keys.contains(&k.as_str())),
                _ => false,
            },
        }
    }
}

fn owned_plugins(settings: &MutationSettings) -> Vec<OwnedPlugin> {
    // The table lives in the drop-in; config.toml must not keep one of an older version (it would
    // stay when the pool is missing, and break containerd 2.x).
    let mut plugins = vec![OwnedPlugin {
        entry: PluginConfig {
            op: Some("remove".into()),
            path: vec![DEVMAPPER_PLUGIN.into()],
            values: None,
        },
        shared_keys: None,
    }];
    if settings.local_image_pull {
        plugins.push(OwnedPlugin {
            entry: PluginConfig {
                op: Some("add".into()),
                path: vec![CRI_IMAGES_PLUGIN.into()],
                values: Some(json!({"use_local_image_pull": true})),
            },
            shared_keys: Some(&["use_local_image_pull"]),
        });
    }
    plugins
}

/// Puts `item` at the position of the first element matching `is_ours` (or appends it) and removes
/// further matches.
fn ensure<T: PartialEq>(items: &mut Vec<T>, item: T, is_ours: impl Fn(&T) -> bool) {
    match items.iter().position(&is_ours) {
        None => items.push(item),
        Some(first) => {
            items[first] = item;
            let mut i = 0;
            items.retain(|x| {
                let keep = i == first || !is_ours(x);
                i += 1;
                keep
            });
        }
    }
}

const NO_CONTAINERD_WARNING: &str = "runtime-kata: no criConfig.containerd in this OperatingSystemConfig, so the \
     containerd devmapper snapshotter is not configured; kata-fc pods will not start (needs Gardener >= v1.103)";

/// What the mutation did besides changing the spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Warnings for the admission response (shown to the client that wrote the OSC).
    pub warnings: Vec<String>,
}

/// Adds the devmapper prerequisites to an OSC spec. Idempotent.
pub fn mutate_spec(spec: &mut OperatingSystemConfigSpec, dm: &Devmapper, settings: &MutationSettings) -> Outcome {
    let mut outcome = Outcome::default();
    ensure(&mut spec.files, script_file(dm), |f| f.path == devmapper::SCRIPT_PATH);
    ensure(&mut spec.files, containerd_dropin_file(dm), |f| {
        f.path == devmapper::CONTAINERD_DROPIN_PATH
    });
    ensure(&mut spec.units, setup_unit(), |u| u.name == devmapper::UNIT_NAME);
    match spec.cri_config.as_mut().and_then(|c| c.containerd.as_mut()) {
        Some(containerd) => ensure_plugins(containerd, settings),
        None => outcome.warnings.push(NO_CONTAINERD_WARNING.to_string()),
    }
    outcome
}

fn ensure_plugins(containerd: &mut ContainerdConfig, settings: &MutationSettings) {
    for owned in owned_plugins(settings) {
        let entry = owned.entry.clone();
        ensure(&mut containerd.plugins, entry, |p| owned.owns(p));
    }
}

/// The result of mutating one object.
#[derive(Debug)]
pub struct Mutation {
    /// RFC 6902 patch against the object as received; empty if nothing changes.
    pub patch: json_patch::Patch,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MutateError {
    #[error("cannot decode the OperatingSystemConfig: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("cannot encode the OperatingSystemConfig: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Decodes a raw OSC as received in an AdmissionReview.
pub fn decode(raw: &str) -> Result<OperatingSystemConfig, MutateError> {
    serde_json::from_str(raw).map_err(MutateError::Decode)
}

/// Which of the arrays the mutation may touch exist in the object as received: a JSON patch must
/// `add` an absent array but append to a present one, and the typed model cannot tell an absent
/// array from an empty one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Presence {
    pub files: bool,
    pub units: bool,
    pub plugins: bool,
}

impl Presence {
    /// From the object as a JSON value (tests, tools).
    pub fn of_value(raw: &Value) -> Self {
        Self {
            files: raw.pointer("/spec/files").is_some(),
            units: raw.pointer("/spec/units").is_some(),
            plugins: raw.pointer("/spec/criConfig/containerd/plugins").is_some(),
        }
    }
}

fn op_value<T: serde::Serialize>(item: &T) -> Result<Value, MutateError> {
    serde_json::to_value(item).map_err(MutateError::Encode)
}

/// The JSON patch operations that do to `items` (at `path`, `present` in the received object)
/// what [`ensure`] does: replace the first of ours if it differs, remove the other ones of ours,
/// or append. Only the new item is encoded, never the existing array.
fn ensure_ops<T: PartialEq + serde::Serialize>(
    path: &str,
    items: &[T],
    present: &mut bool,
    item: &T,
    is_ours: impl Fn(&T) -> bool,
    ops: &mut Vec<json_patch::PatchOperation>,
) -> Result<(), MutateError> {
    use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
    let pointer = |suffix: &str| -> json_patch::jsonptr::PointerBuf {
        json_patch::jsonptr::PointerBuf::parse(format!("{path}{suffix}")).expect("static JSON pointers")
    };
    let ours: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, x)| is_ours(x))
        .map(|(i, _)| i)
        .collect();
    match ours.split_first() {
        None if *present => ops.push(PatchOperation::Add(AddOperation {
            path: pointer("/-"),
            value: op_value(item)?,
        })),
        None => {
            ops.push(PatchOperation::Add(AddOperation {
                path: pointer(""),
                value: Value::Array(vec![op_value(item)?]),
            }));
            *present = true;
        }
        Some((&first, rest)) => {
            // later duplicates first, from the end, so that no index moves under us
            for &i in rest.iter().rev() {
                ops.push(PatchOperation::Remove(RemoveOperation {
                    path: pointer(&format!("/{i}")),
                }));
            }
            if items[first] != *item {
                ops.push(PatchOperation::Replace(ReplaceOperation {
                    path: pointer(&format!("/{first}")),
                    value: op_value(item)?,
                }));
            }
        }
    }
    Ok(())
}

/// The minimal patch that adds the devmapper prerequisites to an OSC (what [`mutate_spec`] does
/// to the typed object), computed from the typed object without encoding it: only new entries
/// are encoded, so a large OSC is never copied.
pub fn mutate(
    osc: &OperatingSystemConfig,
    presence: Presence,
    dm: &Devmapper,
    settings: &MutationSettings,
) -> Result<Mutation, MutateError> {
    let mut presence = presence;
    let mut ops = Vec::new();
    let spec = &osc.spec;
    ensure_ops(
        "/spec/files",
        &spec.files,
        &mut presence.files,
        &script_file(dm),
        |f| f.path == devmapper::SCRIPT_PATH,
        &mut ops,
    )?;
    // each ensure sees the files as the previous one left them
    let mut files = spec.files.clone();
    ensure(&mut files, script_file(dm), |f| f.path == devmapper::SCRIPT_PATH);
    ensure_ops(
        "/spec/files",
        &files,
        &mut presence.files,
        &containerd_dropin_file(dm),
        |f| f.path == devmapper::CONTAINERD_DROPIN_PATH,
        &mut ops,
    )?;
    ensure_ops(
        "/spec/units",
        &spec.units,
        &mut presence.units,
        &setup_unit(),
        |u| u.name == devmapper::UNIT_NAME,
        &mut ops,
    )?;
    let mut warnings = Vec::new();
    match spec.cri_config.as_ref().and_then(|c| c.containerd.as_ref()) {
        Some(containerd) => {
            // each ensure sees the plugins as the previous one left them
            let mut plugins = containerd.plugins.clone();
            for owned in owned_plugins(settings) {
                ensure_ops(
                    "/spec/criConfig/containerd/plugins",
                    &plugins,
                    &mut presence.plugins,
                    &owned.entry,
                    |p| owned.owns(p),
                    &mut ops,
                )?;
                let entry = owned.entry.clone();
                ensure(&mut plugins, entry, |p| owned.owns(p));
            }
        }
        None => warnings.push(NO_CONTAINERD_WARNING.to_string()),
    }
    Ok(Mutation {
        patch: json_patch::Patch(ops),
        warnings,
    })
}

/// [`mutate`] for an object at hand as a JSON value (tests, benchmarks).
pub fn mutate_raw(
    raw: &Value,
    osc: &OperatingSystemConfig,
    dm: &Devmapper,
    settings: &MutationSettings,
) -> Result<Mutation, MutateError> {
    mutate(osc, Presence::of_value(raw), dm, settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::cluster::ClusterSpec;
    use crate::api::kata_config::{API_VERSION, KIND};
    use crate::api::osc::CriConfig;
    use proptest::prelude::*;

    fn cluster(ns: &str, workers: Value) -> Cluster {
        Cluster::new(
            ns,
            ClusterSpec {
                cloud_profile: json!({"metadata": {"name": "local"}, "spec": {"type": "local"}}),
                seed: None,
                shoot: json!({"metadata": {"name": "s", "namespace": "garden-x"},
                    "spec": {"provider": {"type": "local", "workers": workers}}}),
            },
        )
    }

    fn kata_worker(pool: &str, provider_config: Value) -> Value {
        json!({"name": pool, "cri": {"name": "containerd",
            "containerRuntimes": [{"type": "kata", "providerConfig": provider_config}]}})
    }

    fn fc_config() -> Value {
        json!({"apiVersion": API_VERSION, "kind": KIND, "hypervisors": ["qemu", "fc"],
            "devmapper": {"dataSize": "20Gi", "metadataSize": "1Gi", "baseImageSize": "5Gi"}})
    }

    fn osc(pool: &str, with_containerd: bool) -> OperatingSystemConfig {
        let mut o = OperatingSystemConfig::new(
            &format!("osc-{pool}"),
            OperatingSystemConfigSpec {
                type_: "gardenlinux".into(),
                purpose: PURPOSE_RECONCILE.into(),
                units: vec![Unit {
                    name: "kubelet.service".into(),
                    command: Some("start".into()),
                    enable: Some(true),
                    content: Some("[Service]\nExecStart=/opt/bin/kubelet\n".into()),
                    ..Default::default()
                }],
                files: vec![File {
                    path: "/etc/hosts.d/x".into(),
                    permissions: Some(0o644),
                    content: FileContent {
                        inline: Some(InlineContent {
                            encoding: String::new(),
                            data: "x".into(),
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                }],
                cri_config: Some(CriConfig {
                    name: "containerd".into(),
                    cgroup_driver: Some("systemd".into()),
                    containerd: with_containerd.then(|| ContainerdConfig {
                        sandbox_image: "registry.k8s.io/pause:3.10".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        o.metadata.namespace = Some("shoot--p--s".into());
        o.metadata.labels = Some([(POOL_LABEL.to_string(), pool.to_string())].into());
        o
    }

    fn dm() -> Devmapper {
        devmapper_for(
            &osc("a", true),
            Some(&cluster("shoot--p--s", json!([kata_worker("a", fc_config())]))),
            &crate::api::kata_config::DEFAULT_HYPERVISORS,
        )
        .unwrap()
    }

    fn apply(osc: &OperatingSystemConfig, settings: &MutationSettings) -> (Value, json_patch::Patch) {
        let raw = serde_json::to_value(osc).unwrap();
        let m = mutate_raw(&raw, osc, &dm(), settings).unwrap();
        let mut out = raw;
        json_patch::patch(&mut out, &m.patch).unwrap();
        (out, m.patch)
    }

    #[test]
    fn kata_fc_pool_gets_file_unit_and_plugins() {
        let (out, patch) = apply(&osc("a", true), &MutationSettings::default());
        assert!(!patch.0.is_empty());
        let o: OperatingSystemConfig = serde_json::from_value(out).unwrap();
        let f = o.spec.files.iter().find(|f| f.path == devmapper::SCRIPT_PATH).unwrap();
        assert_eq!(f.permissions, Some(0o755));
        let inline = f.content.inline.as_ref().unwrap();
        let script = base64::engine::general_purpose::STANDARD.decode(&inline.data).unwrap();
        assert!(String::from_utf8(script).unwrap().contains(&(20u64 << 30).to_string()));
        let u = o.spec.units.iter().find(|u| u.name == devmapper::UNIT_NAME).unwrap();
        assert_eq!(u.command.as_deref(), Some("start"));
        assert_eq!(u.enable, Some(true));
        let d = o
            .spec
            .files
            .iter()
            .find(|f| f.path == devmapper::CONTAINERD_DROPIN_PATH)
            .unwrap();
        assert_eq!(d.permissions, Some(0o644));
        let dropin = base64::engine::general_purpose::STANDARD
            .decode(&d.content.inline.as_ref().unwrap().data)
            .unwrap();
        let dropin = String::from_utf8(dropin).unwrap();
        assert!(dropin.contains("pool_name = \"devpool\""), "{dropin}");
        assert!(dropin.contains("base_image_size = \"5GB\""), "{dropin}");
        assert!(u.file_paths.contains(&devmapper::CONTAINERD_DROPIN_PATH.to_string()));
        let plugins = &o.spec.cri_config.unwrap().containerd.unwrap().plugins;
        assert_eq!(plugins.len(), 2);
        // the table of older versions leaves config.toml
        assert_eq!(plugins[0].path, vec![DEVMAPPER_PLUGIN.to_string()]);
        assert_eq!(plugins[0].op.as_deref(), Some("remove"));
        assert_eq!(plugins[0].values, None);
        assert_eq!(plugins[1].values, Some(json!({"use_local_image_pull": true})));
        // nothing else is touched
        assert_eq!(o.spec.units[0].name, "kubelet.service");
        assert_eq!(o.spec.files[0].path, "/etc/hosts.d/x");
    }

    #[test]
    fn local_image_pull_can_be_disabled() {
        let (out, _) = apply(
            &osc("a", true),
            &MutationSettings {
                local_image_pull: false,
            },
        );
        let o: OperatingSystemConfig = serde_json::from_value(out).unwrap();
        assert_eq!(o.spec.cri_config.unwrap().containerd.unwrap().plugins.len(), 1);
    }

    #[test]
    fn without_containerd_config_only_file_and_unit_and_a_warning() {
        let o = osc("a", false);
        let raw = serde_json::to_value(&o).unwrap();
        let m = mutate_raw(&raw, &o, &dm(), &MutationSettings::default()).unwrap();
        assert_eq!(m.warnings.len(), 1);
        let mut out = raw;
        json_patch::patch(&mut out, &m.patch).unwrap();
        let o: OperatingSystemConfig = serde_json::from_value(out).unwrap();
        assert!(o.spec.cri_config.unwrap().containerd.is_none());
        assert_eq!(o.spec.units.len(), 2);
    }

    #[test]
    fn mutating_twice_is_a_no_op() {
        let (once, _) = apply(&osc("a", true), &MutationSettings::default());
        let o: OperatingSystemConfig = serde_json::from_value(once.clone()).unwrap();
        let m = mutate_raw(&once, &o, &dm(), &MutationSettings::default()).unwrap();
        assert!(m.patch.0.is_empty(), "{:?}", m.patch);
    }

    #[test]
    fn stale_content_is_replaced_not_duplicated() {
        let mut o = osc("a", true);
        let mut old_file = script_file(&dm());
        old_file.content.inline.as_mut().unwrap().data = "b2xkCg==".into();
        o.spec.files.push(old_file.clone());
        o.spec.files.push(old_file);
        let mut old_unit = setup_unit();
        old_unit.content = Some("[Service]\nExecStart=/old\n".into());
        o.spec.units.insert(0, old_unit);
        let containerd = o.spec.cri_config.as_mut().unwrap().containerd.as_mut().unwrap();
        containerd.plugins = vec![
            PluginConfig {
                op: None,
                path: vec![DEVMAPPER_PLUGIN.into()],
                values: Some(json!({"pool_name": "contd-thin-pool"})),
            },
            // someone else's entry in a shared table stays
            PluginConfig {
                op: Some("add".into()),
                path: vec![CRI_IMAGES_PLUGIN.into()],
                values: Some(json!({"max_concurrent_downloads": 5})),
            },
        ];
        let (out, _) = apply(&o, &MutationSettings::default());
        let o: OperatingSystemConfig = serde_json::from_value(out).unwrap();
        let files: Vec<_> = o
            .spec
            .files
            .iter()
            .filter(|f| f.path == devmapper::SCRIPT_PATH)
            .collect();
        assert_eq!(files, vec![&script_file(&dm())]);
        assert_eq!(o.spec.units[0], setup_unit(), "replaced in place");
        assert_eq!(o.spec.units.len(), 2);
        let plugins = o.spec.cri_config.unwrap().containerd.unwrap().plugins;
        assert_eq!(plugins.len(), 3);
        assert_eq!(
            plugins[0].op.as_deref(),
            Some("remove"),
            "the old table is replaced by a remove"
        );
        assert_eq!(plugins[1].values, Some(json!({"max_concurrent_downloads": 5})));
        assert_eq!(plugins[2].values, Some(json!({"use_local_image_pull": true})));
    }

    #[test]
    fn skips() {
        let ns = "shoot--p--s";
        let check = |o: &OperatingSystemConfig, c: Option<&Cluster>, want: &str| {
            let err = devmapper_for(o, c, &crate::api::kata_config::DEFAULT_HYPERVISORS).unwrap_err();
            assert!(err.to_string().contains(want), "{err} vs {want}");
        };
        let with_fc = cluster(ns, json!([kata_worker("a", fc_config())]));
        let mut provision = osc("a", true);
        provision.spec.purpose = "provision".into();
        check(&provision, Some(&with_fc), "not reconcile");
        let mut unlabeled = osc("a", true);
        unlabeled.metadata.labels = None;
        check(&unlabeled, Some(&with_fc), "label");
        check(&osc("a", true), None, "no Cluster");
        let mut deleting = osc("a", true);
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        check(&deleting, Some(&with_fc), "being deleted");
        check(&osc("b", true), Some(&with_fc), "not in the shoot");
        let plain = cluster(ns, json!([{"name": "a", "cri": {"name": "containerd"}}]));
        check(&osc("a", true), Some(&plain), "does not use the kata");
        let no_cri = cluster(ns, json!([{"name": "a"}]));
        check(&osc("a", true), Some(&no_cri), "does not use the kata");
        let qemu_only = cluster(
            ns,
            json!([kata_worker(
                "a",
                json!({"apiVersion": API_VERSION, "kind": KIND, "hypervisors": ["qemu"]})
            )]),
        );
        check(&osc("a", true), Some(&qemu_only), "does not enable the Firecracker");
        let invalid = cluster(ns, json!([kata_worker("a", json!({"hypervisors": ["fc"]}))]));
        check(&osc("a", true), Some(&invalid), "apiVersion");
        // the default of a new pool does not enable fc; the old default of an existing pool does
        let defaults = cluster(ns, json!([kata_worker("a", Value::Null)]));
        use crate::api::kata_config::{DEFAULT_HYPERVISORS, LEGACY_DEFAULT_HYPERVISORS};
        assert!(devmapper_for(&osc("a", true), Some(&defaults), &DEFAULT_HYPERVISORS).is_err());
        assert!(devmapper_for(&osc("a", true), Some(&defaults), &LEGACY_DEFAULT_HYPERVISORS).is_ok());
        assert_eq!(
            pool_without_hypervisors(&osc("a", true), Some(&defaults)).as_deref(),
            Some("a")
        );
        assert_eq!(pool_without_hypervisors(&osc("a", true), Some(&qemu_only)), None);
    }

    fn arb_file() -> impl Strategy<Value = File> {
        let path = prop_oneof![
            Just(devmapper::SCRIPT_PATH.to_string()),
            Just(devmapper::CONTAINERD_DROPIN_PATH.to_string()),
            "/etc/[a-z]{1,6}".prop_map(|s| s),
        ];
        (path, "[a-zA-Z0-9 ]{0,12}", proptest::option::of(0i32..0o777)).prop_map(|(path, data, permissions)| File {
            path,
            permissions,
            content: FileContent {
                inline: Some(InlineContent {
                    encoding: String::new(),
                    data,
                }),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn arb_unit() -> impl Strategy<Value = Unit> {
        let name = prop_oneof![
            Just(devmapper::UNIT_NAME.to_string()),
            "[a-z]{1,8}\\.service".prop_map(|s| s),
        ];
        (
            name,
            proptest::option::of("[a-z\\n=]{0,20}"),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(|(name, content, enable)| Unit {
                name,
                content,
                enable,
                ..Default::default()
            })
    }

    fn arb_plugin() -> impl Strategy<Value = PluginConfig> {
        let path = prop_oneof![
            Just(vec![DEVMAPPER_PLUGIN.to_string()]),
            Just(vec![CRI_IMAGES_PLUGIN.to_string()]),
            Just(vec![
                "io.containerd.grpc.v1.cri".to_string(),
                "containerd".to_string(),
                "runtimes".to_string(),
                "kata".to_string()
            ]),
        ];
        let values = prop_oneof![
            Just(None),
            Just(Some(json!({"use_local_image_pull": false}))),
            Just(Some(json!({"pool_name": "x"}))),
            Just(Some(json!({"other": 1}))),
        ];
        let op = prop_oneof![
            Just(None),
            Just(Some("add".to_string())),
            Just(Some("remove".to_string()))
        ];
        (op, path, values).prop_map(|(op, path, values)| PluginConfig { op, path, values })
    }

    prop_compose! {
        fn arb_osc()(files in proptest::collection::vec(arb_file(), 0..5),
                     units in proptest::collection::vec(arb_unit(), 0..5),
                     plugins in proptest::collection::vec(arb_plugin(), 0..5),
                     containerd in any::<bool>(),
                     cri in any::<bool>()) -> OperatingSystemConfig {
            let mut o = osc("a", containerd);
            o.spec.files = files;
            o.spec.units = units;
            if !cri {
                o.spec.cri_config = None;
            } else if let Some(c) = o.spec.cri_config.as_mut().and_then(|c| c.containerd.as_mut()) {
                c.plugins = plugins;
            }
            o
        }
    }

    prop_compose! {
        fn arb_devmapper()(data_gi in 1u64..500, meta_mi in 2u64..4096, base_mi in 128u64..1024) -> Devmapper {
            Devmapper { data_size: data_gi << 30, metadata_size: meta_mi << 20, base_image_size: base_mi << 20 }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn mutation_is_idempotent(o in arb_osc(), dm in arb_devmapper(), local in any::<bool>()) {
            let settings = MutationSettings { local_image_pull: local };
            let raw = serde_json::to_value(&o).unwrap();
            let first = mutate_raw(&raw, &o, &dm, &settings).unwrap();
            let mut once = raw;
            json_patch::patch(&mut once, &first.patch).unwrap();
            let o1: OperatingSystemConfig = serde_json::from_value(once.clone()).unwrap();
            let second = mutate_raw(&once, &o1, &dm, &settings).unwrap();
            prop_assert!(second.patch.0.is_empty(), "second patch: {:?}", second.patch);
            // exactly one of each, with the current content
            prop_assert_eq!(o1.spec.files.iter().filter(|f| f.path == devmapper::SCRIPT_PATH).count(), 1);
            prop_assert_eq!(o1.spec.files.iter().filter(|f| f.path == devmapper::CONTAINERD_DROPIN_PATH).count(), 1);
            prop_assert_eq!(o1.spec.units.iter().filter(|u| u.name == devmapper::UNIT_NAME).count(), 1);
            if let Some(c) = o1.spec.cri_config.as_ref().and_then(|c| c.containerd.as_ref()) {
                let ours: Vec<_> = c.plugins.iter().filter(|p| p.path == vec![DEVMAPPER_PLUGIN.to_string()]).collect();
                prop_assert_eq!(ours.len(), 1);
                prop_assert_eq!(ours[0].op.as_deref(), Some("remove"));
            }
            // typed mutation agrees with the patched object
            let mut typed = o.clone();
            mutate_spec(&mut typed.spec, &dm, &settings);
            prop_assert_eq!(typed.spec, o1.spec);
        }
    }
}
