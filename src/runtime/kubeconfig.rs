//! Where a process's Kubernetes clients come from: a kubeconfig file, or the pod's service account.

use anyhow::Context;

/// The configuration from a kubeconfig file, or in-cluster without one; `what` names the cluster
/// in errors ("garden"), empty for the process's own.
pub async fn config_from(path: Option<&std::path::Path>, what: &str) -> anyhow::Result<kube::Config> {
    let kubeconfig = if what.is_empty() {
        "kubeconfig".to_string()
    } else {
        format!("{what} kubeconfig")
    };
    match path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading {kubeconfig} {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("loading {kubeconfig} {}", p.display()))
        }
        None => kube::Config::infer()
            .await
            .with_context(|| format!("no {kubeconfig} given and no in-cluster configuration")),
    }
}
