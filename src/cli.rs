//! Command-line flags, named as in Gardener's extension library so charts and operators find the
//! usual knobs.

use crate::runtime::logging::{LogFormat, LogLevel};
use crate::webhook::ConfigMode;
use crate::webhook::registration::FailurePolicy;
use clap::{ArgAction, Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "gardener-extension-runtime-kata",
    version,
    about = "Gardener extension: Kata Containers as a container runtime for shoot worker pools",
    long_about = "Runs the ContainerRuntime controller (type kata) and the OperatingSystemConfig webhook in a seed. \
Without a subcommand it runs the extension; the subcommands are operator tools."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Print every object the extension would deploy into the shoot for a ContainerRuntime.
    Render(RenderArgs),
    /// (Runs in the shoot, next to kata-deploy.) Label this node with the installed shims until SIGTERM.
    NodeLabeler(NodeLabelerArgs),
    /// (Runs in the garden runtime cluster.) Validate kata Shoots at admission until SIGTERM.
    Admission(crate::admission::AdmissionArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RenderArgs {
    /// The Cluster object (YAML or JSON) of the shoot namespace.
    #[arg(long)]
    pub cluster: PathBuf,
    /// The ContainerRuntime to render; repeat to add the shoot's other kata pools (the first one is rendered).
    #[arg(long = "container-runtime", required = true)]
    pub container_runtimes: Vec<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct NodeLabelerArgs {
    /// The pool's shims, separated by commas; each is labelled only while the node can run it.
    #[arg(long, value_delimiter = ',', required = true)]
    pub shims: Vec<String>,
    /// The pool registers debug handlers (`kata-<shim>-debug`) too.
    #[arg(long)]
    pub debug: bool,
    /// The pool's `devmapper.dataSize` in bytes (pools with fc): a thin-pool that the node's file
    /// system could not make this large is reported in the node condition.
    #[arg(long)]
    pub fc_data_size: Option<u64>,
    /// The node to label.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Re-apply the labels this often, in seconds (someone may remove them).
    #[arg(long, default_value_t = 300)]
    pub resync_seconds: u64,
    /// The DaemonSet this pod belongs to: on SIGTERM the labels stay while it still selects the
    /// node (a rolling update, not an uninstall).
    #[arg(long, env = "DAEMONSET_NAME")]
    pub daemonset: Option<String>,
    /// The namespace of that DaemonSet.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub namespace: String,
    /// Re-read the node's capabilities this often, in seconds.
    #[arg(long, default_value_t = 30)]
    pub check_seconds: u64,
    /// `/healthz` and `/readyz` (ready while the node can run at least one of the shims).
    #[arg(long, default_value = ":8091")]
    pub health_bind_address: String,
    /// Where the host's sysfs is mounted (tests point this at a fake tree).
    #[arg(long, default_value = "/sys")]
    pub sysfs_root: std::path::PathBuf,
    /// Where the host's procfs is mounted.
    #[arg(long, default_value = "/proc")]
    pub procfs_root: std::path::PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Kubeconfig of the seed (with `admission`: of the garden runtime cluster); in-cluster
    /// configuration when unset.
    #[arg(long, env = "KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// Run controllers only on the replica holding the leader Lease.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, default_value = "runtime-kata-leader-election")]
    pub leader_election_id: String,
    /// Namespace of the leader Lease (the extension's own namespace).
    #[arg(long, env = "LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// ContainerRuntimes reconciled in parallel (never the same one twice at once).
    #[arg(long, default_value_t = 5)]
    pub max_concurrent_reconciles: u16,
    /// Watch ContainerRuntimes of this namespace only (local runs and tests); all when unset.
    #[arg(long)]
    pub watch_namespace: Option<String>,
    /// Reconcile on every generation or Cluster change instead of gardenlet's operation annotation.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub ignore_operation_annotation: bool,
    /// Extension classes to serve (shoot, seed, garden); empty means shoot.
    #[arg(long, value_delimiter = ',')]
    pub extension_classes: Vec<String>,

    /// Namespace of the heartbeat Lease; defaults to the leader election namespace.
    #[arg(long)]
    pub heartbeat_namespace: Option<String>,
    /// How often the heartbeat Lease gardener-extension-heartbeat is renewed.
    #[arg(long, default_value_t = 30)]
    pub heartbeat_renew_interval_seconds: u64,

    /// How often each ContainerRuntime's SystemComponentsHealthy condition is re-evaluated
    /// (0 turns the health checks off).
    #[arg(long, default_value_t = 30)]
    pub health_check_sync_period_seconds: u64,
    /// How long a kata-deploy rollout may be reported Progressing before it counts as failed.
    #[arg(long, default_value_t = 1800)]
    pub health_check_progressing_threshold_seconds: u64,

    /// Gardener version of the landscape (injected by gardenlet).
    #[arg(long)]
    pub gardener_version: Option<String>,

    /// Provider types that may run kata (comma-separated); empty means all.
    #[arg(long, value_delimiter = ',', env = "KATA_SUPPORTED_PROVIDERS")]
    pub supported_providers: Vec<String>,
    /// Machine image names that may run kata (comma-separated); empty means all.
    #[arg(long, value_delimiter = ',', env = "KATA_SUPPORTED_MACHINE_IMAGES")]
    pub supported_machine_images: Vec<String>,

    /// Do not serve or register the OperatingSystemConfig webhook.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub disable_webhooks: bool,
    #[arg(long, value_enum, default_value_t = ConfigMode::Service)]
    pub webhook_config_mode: ConfigMode,
    /// With mode url: the host (and port) the apiserver calls, e.g. 127.0.0.1:9443.
    #[arg(long)]
    pub webhook_config_url: Option<String>,
    /// Namespace of the webhook Service and of the certificate Secret.
    #[arg(long, env = "WEBHOOK_CONFIG_NAMESPACE")]
    pub webhook_config_namespace: Option<String>,
    /// Port of the webhook Service (mode service).
    #[arg(long, default_value_t = 443)]
    pub webhook_config_service_port: u16,
    /// Address the HTTPS webhook server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub webhook_config_server_host: String,
    /// Port the HTTPS webhook server listens on (0: any free port, with mode url).
    #[arg(long, default_value_t = 10250)]
    pub webhook_config_server_port: u16,
    /// What the apiserver does when the webhook cannot be reached. Ignore keeps an outage of this
    /// extension from blocking any OperatingSystemConfig on the seed.
    #[arg(long, value_enum, default_value_t = FailurePolicy::Ignore)]
    pub webhook_failure_policy: FailurePolicy,
    /// On kata-fc nodes, let containerd 2.1/2.2 pull through the CRI's local pull path instead of the
    /// transfer service, whose unpack configuration knows no devmapper (see docs/webhook.md).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub webhook_local_image_pull: bool,
    /// Also select OSCs by the pool's container-runtime label (Gardener versions that set it).
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub webhook_object_selector: bool,

    /// Where /metrics is served (Prometheus text format).
    #[arg(long, default_value = ":8080")]
    pub metrics_bind_address: String,
    /// Where /healthz and /readyz are served.
    #[arg(long, default_value = ":8081")]
    pub health_bind_address: String,

    #[arg(long, value_enum, default_value_t = LogLevel::Info, global = true)]
    pub log_level: LogLevel,
    /// json: Gardener's fields (level, ts, logger, msg); text: for humans.
    #[arg(long, value_enum, default_value_t = LogFormat::Json, global = true)]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_parse_with_gardener_defaults() {
        Cli::command().debug_assert();
        let cli = Cli::parse_from(["x", "--leader-election=false", "--extension-classes=shoot,seed"]);
        assert!(cli.command.is_none());
        assert!(!cli.run.leader_election);
        assert_eq!(cli.run.extension_classes, ["shoot", "seed"]);
        assert_eq!(cli.run.leader_election_id, "runtime-kata-leader-election");
        assert_eq!(cli.run.metrics_bind_address, ":8080");
        assert_eq!(cli.run.health_bind_address, ":8081");
        assert_eq!(cli.run.heartbeat_renew_interval_seconds, 30);
        assert_eq!(cli.run.webhook_failure_policy, FailurePolicy::Ignore);
        let cli = Cli::parse_from(["x", "render", "--cluster", "c.yaml", "--container-runtime", "a.yaml"]);
        assert!(matches!(cli.command, Some(Command::Render(_))));
        // the process-wide flags apply to the subcommands too
        let cli = Cli::parse_from(["x", "admission", "--webhook-config-namespace=g", "--log-format=text"]);
        assert!(matches!(cli.command, Some(Command::Admission(_))));
        assert_eq!(cli.run.log_format, LogFormat::Text);
    }
}
