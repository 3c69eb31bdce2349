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
        self.check_provider(&cluster.shoot.spec.provider.type_)?;
        let image = cluster
            .shoot
            .worker(pool)
            .and_then(|w| w.machine.image.as_ref())
            .map(|i| i.name.as_str())
            .unwrap_or_default();
        self.check_machine_image(image, pool)
    }

    /// The provider rule alone (the garden admission reports it at `spec.provider.type`).
    pub fn check_provider(&self, provider: &str) -> Result<(), String> {
        if !self.supported_providers.is_empty() && !self.supported_providers.iter().any(|p| p == provider) {
            return Err(format!(
                "kata is not enabled for provider type {provider:?} on this landscape (enabled: {})",
                self.supported_providers.join(", ")
            ));
        }
        Ok(())
    }

    /// The machine image rule alone (the garden admission reports it at the pool's image name).
    pub fn check_machine_image(&self, image: &str, pool: &str) -> Result<(), String> {
        if !self.supported_machine_images.is_empty() && !self.supported_machine_images.iter().any(|i| i == image) {
            return Err(format!(
                "kata is not enabled for machine image {image:?} of pool {pool:?} on this landscape (enabled: {})",
                self.supported_machine_images.join(", ")
            ));
        }
        Ok(())
    }
}
