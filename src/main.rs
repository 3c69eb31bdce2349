use anyhow::Context;
use clap::Parser;
use gardener_extension_runtime_kata::cli::{Cli, Command};
use gardener_extension_runtime_kata::kata::imagevector::{ImageSource, Images};
use gardener_extension_runtime_kata::kata::requirements::Requirements;
use gardener_extension_runtime_kata::runtime::shutdown::Shutdown;
use gardener_extension_runtime_kata::runtime::{self, logging};
use gardener_extension_runtime_kata::{admission, app, node_labeler, render};
use std::process::ExitCode;
use std::time::Duration;

async fn main_inner(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => {
            let shutdown = Shutdown::new();
            shutdown.on_signals();
            app::run(cli.run, shutdown).await
        }
        Some(Command::Render(r)) => {
            let images: ImageSource = Images::load(&format!("v{}", env!("CARGO_PKG_VERSION")))?.into();
            let requirements = Requirements {
                supported_providers: cli.run.supported_providers,
                supported_machine_images: cli.run.supported_machine_images,
            };
            print!(
                "{}",
                render::render(&r.cluster, &r.container_runtimes, &images, &requirements)?
            );
            Ok(())
        }
        Some(Command::Admission(a)) => {
            let shutdown = Shutdown::new();
            shutdown.on_signals();
            admission::run_command(a, cli.run.kubeconfig, shutdown).await
        }
        Some(Command::NodeLabeler(n)) => {
            let client = app::kube_client(&cli.run).await?;
            let owner = n.daemonset.map(|name| node_labeler::Owner {
                namespace: n.namespace,
                name,
            });
            let health_address = runtime::health::parse_bind_address(&n.health_bind_address)
                .map_err(anyhow::Error::msg)
                .context("--health-bind-address")?;
            let cfg = node_labeler::LabelerConfig {
                shims: node_labeler::parse_shims(&n.shims)?,
                debug: n.debug,
                owner,
                resync: Duration::from_secs(n.resync_seconds),
                check_every: Duration::from_secs(n.check_seconds.max(1)),
                fc_data_size: n.fc_data_size,
                roots: node_labeler::capability::Roots {
                    sys: n.sysfs_root,
                    proc: n.procfs_root,
                },
                health_address: Some(health_address),
            };
            node_labeler::run(client, &n.node_name, cfg).await
        }
    }
}

/// glibc gives each thread that allocates under contention an arena of its own (up to 8 per core),
/// and keeps what each arena once held: bursts of reviews on the async workers and the blocking
/// threads leave memory resident in many arenas. Two arenas bound that at a small cost in
/// allocation contention, which this process (I/O-bound, 2 decoding threads) does not feel.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread is started
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    logging::init(cli.run.log_level, cli.run.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_inner(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
