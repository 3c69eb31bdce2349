//! The per-pool kata-deploy DaemonSet, following kata-deploy 4.1.0's pod without `privileged`:
//! precise hostPaths instead of the host root, systemd over its private socket, read-only root
//! filesystem. It still runs as root and can restart any host unit: effectively root on the node.
//! A node-labeler sidecar marks the node with one label per installed shim, which is what the
//! RuntimeClasses select on.

use super::names::*;
use super::pools::PoolInput;
use crate::api::kata_config::Shim;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    HostPathVolumeSource, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub const HEALTH_PORT: i32 = 8090;
/// The node labeler's `/healthz` and `/readyz`.
pub const LABELER_HEALTH_PORT: i32 = 8091;
const ARCHES: [&str; 2] = ["X86_64", "AARCH64"];
/// The kubelet's well-known label of the node's CPU architecture.
pub const ARCH_LABEL: &str = "kubernetes.io/arch";

/// The images the installer runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallerImages {
    pub kata_deploy: String,
    pub node_labeler: String,
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// An environment variable from a field of the pod (downward API).
fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node_name_env() -> EnvVar {
    field_env("NODE_NAME", "spec.nodeName")
}

fn pod_namespace_env() -> EnvVar {
    field_env("POD_NAMESPACE", "metadata.namespace")
}

/// kata-deploy's configuration; the Rust binary reads the architecture-suffixed names.
pub fn kata_deploy_env(pool: &PoolInput) -> Vec<EnvVar> {
    let c = &pool.config;
    let shims: Vec<&str> = c.hypervisors.iter().map(|s| s.as_str()).collect();
    let default = c.default_hypervisor.unwrap_or(c.hypervisors[0]);
    let mut out = vec![
        node_name_env(),
        env("DAEMONSET_NAME", daemonset(&pool.name)),
        env("K8S_DISTRIBUTION", "k8s"),
        env("DEBUG", if c.debug { "true" } else { "false" }),
    ];
    for arch in ARCHES {
        out.push(env(&format!("SHIMS_{arch}"), shims.join(" ")));
        out.push(env(&format!("DEFAULT_SHIM_{arch}"), default.as_str()));
        if c.has(Shim::Fc) {
            out.push(env(&format!("SNAPSHOTTER_HANDLER_MAPPING_{arch}"), "fc:devmapper"));
        }
        if !c.allowed_hypervisor_annotations.is_empty() {
            out.push(env(
                &format!("ALLOWED_HYPERVISOR_ANNOTATIONS_{arch}"),
                c.allowed_hypervisor_annotations.join(" "),
            ));
        }
    }
    out
}

/// The sidecar's arguments: the pool's shims (it labels those the node can run, and their debug
/// handlers on a debug pool) and its DaemonSet.
pub fn labeler_args(pool: &PoolInput) -> Vec<String> {
    let shims: Vec<&str> = pool.config.hypervisors.iter().map(|s| s.as_str()).collect();
    let mut args = vec!["node-labeler".to_string(), format!("--shims={}", shims.join(","))];
    if pool.config.debug {
        args.push("--debug".into());
    }
    if pool.config.hypervisors.contains(&Shim::Fc) {
        // a thin-pool the node could not make this large is reported on the node
        args.push(format!("--fc-data-size={}", pool.config.devmapper.data_size));
    }
    // on SIGTERM the labels stay while this DaemonSet still selects the node (rollout)
    args.push(format!("--daemonset={}", daemonset(&pool.name)));
    args.push(format!("--health-bind-address=:{LABELER_HEALTH_PORT}"));
    args
}

fn host_path(name: &str, path: &str, type_: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: Some(type_.into()),
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// (volume, mount) pairs of kata-deploy 4.1.0.
fn kata_deploy_volumes() -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    let mut mounts = vec![mount("tmp", "/tmp", false)];
    let rw = [
        ("crio-conf", "/etc/crio/", "/etc/crio/", "DirectoryOrCreate"),
        (
            "containerd-conf",
            "/etc/containerd/",
            "/etc/containerd/",
            "DirectoryOrCreate",
        ),
        ("kata-artifacts", "/opt/kata/", "/opt/kata/", "DirectoryOrCreate"),
        (
            "systemd-units",
            "/etc/systemd/system",
            "/etc/systemd/system",
            "DirectoryOrCreate",
        ),
        (
            "systemd-private",
            "/run/systemd/private",
            "/run/systemd/private",
            "Socket",
        ),
        ("run-lock", "/run/lock", "/host-run-lock", "Directory"),
    ];
    for (name, host, path, t) in rw {
        volumes.push(host_path(name, host, t));
        mounts.push(mount(name, path, false));
    }
    let ro = [
        ("boot", "/boot", "/boot", "Directory"),
        ("machine-id", "/etc/machine-id", "/host-machine-id", "File"),
        ("usr-bin", "/usr/bin", "/host-usr/bin", "Directory"),
        ("usr-sbin", "/usr/sbin", "/host-usr/sbin", "Directory"),
        (
            "usr-local-bin",
            "/usr/local/bin",
            "/host-usr-local/bin",
            "DirectoryOrCreate",
        ),
        (
            "usr-local-sbin",
            "/usr/local/sbin",
            "/host-usr-local/sbin",
            "DirectoryOrCreate",
        ),
        ("bin", "/bin", "/host-bin", "Directory"),
        ("sbin", "/sbin", "/host-sbin", "Directory"),
    ];
    for (name, host, path, t) in ro {
        volumes.push(host_path(name, host, t));
        mounts.push(mount(name, path, true));
    }
    (volumes, mounts)
}

fn quantities(cpu: &str, memory: &str) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".into(), Quantity(cpu.into())),
        ("memory".into(), Quantity(memory.into())),
    ])
}

fn probe(path: &str, port: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..Default::default()
        }),
        period_seconds: Some(10),
        failure_threshold: Some(6),
        ..Default::default()
    }
}

/// A stable digest of everything that configures the node, so a change rolls the pods.
fn config_checksum(pool: &PoolInput, images: &InstallerImages) -> String {
    let mut h = Sha256::new();
    for e in kata_deploy_env(pool) {
        h.update(e.name.as_bytes());
        h.update(b"=");
        h.update(e.value.unwrap_or_default().as_bytes());
        h.update(b"\n");
    }
    h.update(labeler_args(pool).join(" ").as_bytes());
    h.update(images.kata_deploy.as_bytes());
    hex::encode(h.finalize())
}

pub fn daemon_set(pool: &PoolInput, images: &InstallerImages) -> DaemonSet {
    let name = daemonset(&pool.name);
    let selector = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "kata-deploy".to_string()),
        (POOL_LABEL_KEY.to_string(), pool.name.clone()),
    ]);
    let mut labels = selector.clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let (volumes, mounts) = kata_deploy_volumes();
    let kata_deploy = Container {
        name: "kube-kata".into(),
        image: Some(images.kata_deploy.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["/usr/bin/kata-deploy".into(), "install".into()]),
        env: Some(kata_deploy_env(pool)),
        ports: Some(vec![ContainerPort {
            name: Some("health".into()),
            container_port: HEALTH_PORT,
            ..Default::default()
        }]),
        readiness_probe: Some(probe("/readyz", HEALTH_PORT)),
        liveness_probe: Some(probe("/healthz", HEALTH_PORT)),
        resources: Some(ResourceRequirements {
            requests: Some(quantities("25m", "64Mi")),
            ..Default::default()
        }),
        // root (it writes host configuration and talks to the host's systemd), but never more
        // than root: no setuid escalation, not privileged; the capabilities stay the runtime's
        // default set, because we cannot prove on a real node which of them kata-deploy's file
        // and systemd work needs
        security_context: Some(SecurityContext {
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_user: Some(0),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let labeler = Container {
        name: "node-labeler".into(),
        image: Some(images.node_labeler.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(labeler_args(pool)),
        env: Some(vec![node_name_env(), pod_namespace_env()]),
        ports: Some(vec![ContainerPort {
            name: Some("labeler-health".into()),
            container_port: LABELER_HEALTH_PORT,
            ..Default::default()
        }]),
        // not ready while the node can run none of the pool's shims: the DaemonSet is then not
        // fully available and gardener-resource-manager reports it
        readiness_probe: Some(probe("/readyz", LABELER_HEALTH_PORT)),
        liveness_probe: Some(probe("/healthz", LABELER_HEALTH_PORT)),
        resources: Some(ResourceRequirements {
            requests: Some(quantities("5m", "16Mi")),
            limits: Some(BTreeMap::from([("memory".into(), Quantity("64Mi".into()))])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    DaemonSet {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(SHOOT_NAMESPACE.into()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    ..Default::default()
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([(
                        "checksum/kata-deploy-config".into(),
                        config_checksum(pool, images),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(SERVICE_ACCOUNT.into()),
                    automount_service_account_token: Some(true),
                    priority_class_name: Some("system-node-critical".into()),
                    // kata-deploy cleans the node on SIGTERM; give it the time upstream gives it
                    termination_grace_period_seconds: Some(600),
                    // the images were chosen for the pool's architecture: never run them elsewhere
                    node_selector: Some(BTreeMap::from([
                        (crate::api::POOL_LABEL.into(), pool.name.clone()),
                        (KATA_NODE_LABEL.into(), "true".into()),
                        (ARCH_LABEL.into(), pool.architecture.clone()),
                    ])),
                    // every node of the pool needs kata, whatever its taints
                    tolerations: Some(vec![Toleration {
                        operator: Some("Exists".into()),
                        ..Default::default()
                    }]),
                    security_context: Some(PodSecurityContext {
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    containers: vec![kata_deploy, labeler],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kata_config::KataConfiguration;

    fn pool(config: serde_json::Value, arch: &str) -> PoolInput {
        let mut v = serde_json::json!({"apiVersion": "kata.runtime.extensions.config.gardener.cloud/v1alpha1", "kind": "KataConfiguration"});
        v.as_object_mut().unwrap().extend(config.as_object().cloned().unwrap());
        PoolInput {
            name: "a".into(),
            config: KataConfiguration::from_provider_config(Some(&v)).unwrap(),
            taints: vec![],
            architecture: arch.into(),
        }
    }

    /// `spec.selector` of a DaemonSet is immutable and is deliberately not marked
    /// delete-on-invalid-update (re-creating the installer would uninstall kata from every node):
    /// it must depend on the pool name alone, never on the configuration or the images.
    #[test]
    fn daemonset_selector_depends_on_the_pool_name_only() {
        let images = InstallerImages {
            kata_deploy: "a:1".into(),
            node_labeler: "b:1".into(),
        };
        let other_images = InstallerImages {
            kata_deploy: "a:2".into(),
            node_labeler: "b:2".into(),
        };
        let one = daemon_set(&pool(serde_json::json!({"hypervisors": ["qemu"]}), "amd64"), &images);
        let two = daemon_set(
            &pool(
                serde_json::json!({"hypervisors": ["clh", "fc"], "debug": true}),
                "arm64",
            ),
            &other_images,
        );
        let sel = |ds: &DaemonSet| ds.spec.as_ref().unwrap().selector.clone();
        assert_eq!(sel(&one), sel(&two));
        assert_ne!(one.spec.as_ref().unwrap().template, two.spec.as_ref().unwrap().template);
        assert!(
            one.metadata
                .annotations
                .as_ref()
                .is_none_or(|a| !a.contains_key(DELETE_ON_INVALID_UPDATE))
        );
    }

    /// Each pool's installer runs only on nodes of the architecture its images were chosen for.
    /// The node labeler knows the thin-pool size a pool with fc asked for; other pools pass none.
    #[test]
    fn the_labeler_gets_the_configured_thin_pool_size_of_a_pool_with_fc() {
        use crate::api::kata_config::KataConfiguration;
        let mut pool = PoolInput {
            name: "p".into(),
            config: KataConfiguration {
                hypervisors: vec![Shim::Qemu],
                ..Default::default()
            },
            taints: vec![],
            architecture: "amd64".into(),
        };
        assert!(!labeler_args(&pool).iter().any(|a| a.starts_with("--fc-data-size")));
        pool.config.hypervisors.push(Shim::Fc);
        pool.config.devmapper.data_size = 20 << 30;
        assert!(labeler_args(&pool).contains(&"--fc-data-size=21474836480".to_string()));
    }

    #[test]
    fn the_installer_selects_the_pools_architecture() {
        let images = InstallerImages {
            kata_deploy: "a:1".into(),
            node_labeler: "b:1".into(),
        };
        for arch in ["amd64", "arm64"] {
            let ds = daemon_set(&pool(serde_json::json!({"hypervisors": ["qemu"]}), arch), &images);
            let selector = ds.spec.unwrap().template.spec.unwrap().node_selector.unwrap();
            assert_eq!(selector[ARCH_LABEL], arch);
            assert_eq!(selector[crate::api::POOL_LABEL], "a");
        }
    }
}
