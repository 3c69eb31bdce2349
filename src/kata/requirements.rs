//! Which shoots may run kata on this landscape: operator configuration, not code. An unsupported
//! pool gets a clear error instead of a silent no-op.

use crate::api::DecodedCluster;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requirements {
    /// Provider types (e.g. `aws`, `gcp`); empty means every provider.
    pub supported_providers: Vec<String>,
    /// Machine image names (e.g. `gardenlinux`); empty means every image.
    pub supported_machine_images: Vec<String>,
}

impl Requirements {
    /// `Err(reason)` when the operator has not enabled kata for this pool's provider or image.
    pub fn check(&self, cluster: &DecodedCluster, pool: &str) -> Result<(), String> {
        let provider = &cluster.shoot.spec.provider.type_;
        if !self.supported_providers.is_empty() && !self.supported_providers.contains(provider) {
            return Err(format!(
                "kata is not enabled for provider type {provider:?} on this landscape (enabled: {})",
                self.supported_providers.join(", ")
            ));
        }
        if !self.supported_machine_images.is_empty() {
            let image = cluster
                .shoot
                .worker(pool)
                .and_then(|w| w.machine.image.as_ref())
                .map(|i| i.name.clone())
                .unwrap_or_default();
            if !self.supported_machine_images.contains(&image) {
                return Err(format!(
                    "kata is not enabled for machine image {image:?} of pool {pool:?} on this landscape (enabled: {})",
                    self.supported_machine_images.join(", ")
                ));
            }
        }
        Ok(())
    }
}
