//! `render`: what the extension would deploy for a ContainerRuntime, without a cluster.

use crate::api::{Cluster, ContainerRuntime, DecodedCluster};
use crate::kata::imagevector::ImageSource;
use crate::kata::names::{SHARED_MR, installation_mr};
use crate::kata::plan::plan;
use crate::kata::requirements::Requirements;
use anyhow::Context;
use std::fmt::Write;
use std::path::Path;

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str(&text).with_context(|| format!("decoding {}", path.display()))
}

/// Multi-document YAML of every shoot object, each headed by the ManagedResource that carries it.
pub fn render(
    cluster: &Path,
    container_runtimes: &[std::path::PathBuf],
    images: &ImageSource,
    requirements: &Requirements,
) -> anyhow::Result<String> {
    let cluster: Cluster = read(cluster)?;
    let cluster = DecodedCluster::decode(&cluster)?;
    let crs = container_runtimes
        .iter()
        .map(|p| read::<ContainerRuntime>(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (cr, others) = crs.split_first().context("no ContainerRuntime given")?;
    let plan = plan(cr, others, &cluster, images, requirements).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = String::new();
    for (mr, data) in [
        (SHARED_MR.to_string(), &plan.shared),
        (installation_mr(&plan.pool), &plan.installation),
    ] {
        for (key, yaml) in data {
            let _ = write!(out, "---\n# ManagedResource {mr}: {key}\n{yaml}");
        }
    }
    Ok(out)
}
