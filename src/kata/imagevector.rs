//! The extension's images: the embedded image vector (`imagevector/images.yaml`), the image the
//! extension runs as (`NODE_LABELER_IMAGE`), Gardener's `IMAGEVECTOR_OVERWRITE`, and the images of
//! one pool, chosen by the shoot's Kubernetes version and the pool's CPU architecture.

use super::installer::InstallerImages;
pub use crate::imagevector::ImageVectorError;
use crate::imagevector::{ImageSource as Entry, ImageVector};

pub const KATA_DEPLOY: &str = "kata-deploy";
pub const NODE_LABELER: &str = "runtime-kata-node-labeler";
pub const OVERWRITE_ENV: &str = "IMAGEVECTOR_OVERWRITE";
/// The reference of the extension's own image, which is also the node labeler's. The chart sets
/// it from its `image` value, so the registry of a release decides the seed Deployment and the
/// node labeler alike; the embedded entry only names a placeholder registry.
pub const OWN_IMAGE_ENV: &str = "NODE_LABELER_IMAGE";

const EMBEDDED: &str = include_str!("../../imagevector/images.yaml");

/// The merged image vector and the extension's own version (the tag of its own image).
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    vector: ImageVector,
    own_tag: String,
}

impl Images {
    /// The embedded vector with `$NODE_LABELER_IMAGE` as the node labeler when set, merged with
    /// `$IMAGEVECTOR_OVERWRITE` when set. Fails (at start-up) on anything that cannot be understood.
    pub fn load(own_tag: &str) -> Result<Self, ImageVectorError> {
        let overwrite = match non_empty_env(OVERWRITE_ENV) {
            Some(path) => Some((
                std::fs::read_to_string(&path).map_err(|source| ImageVectorError::Read {
                    path: path.clone(),
                    source,
                })?,
                path,
            )),
            None => None,
        };
        Self::from_parts(
            own_tag,
            non_empty_env(OWN_IMAGE_ENV).as_deref(),
            overwrite.as_ref().map(|(text, path)| (path.as_str(), text.as_str())),
        )
    }

    /// `overwrite`: (its name for errors, its text).
    pub fn from_sources(own_tag: &str, overwrite: Option<(&str, &str)>) -> Result<Self, ImageVectorError> {
        Self::from_parts(own_tag, None, overwrite)
    }

    /// `own_image`: the node labeler's reference for every architecture, in place of the embedded
    /// entry. The overwrite is merged last, so an operator's entries win over both.
    pub fn from_parts(
        own_tag: &str,
        own_image: Option<&str>,
        overwrite: Option<(&str, &str)>,
    ) -> Result<Self, ImageVectorError> {
        let mut vector = ImageVector::read("(embedded)", EMBEDDED)?;
        if let Some(image) = own_image {
            vector = vector.merge(own_image_entry(image)?);
        }
        if let Some((what, text)) = overwrite {
            vector = vector.merge(ImageVector::read(what, text)?);
        }
        let images = Self {
            vector,
            own_tag: own_tag.to_string(),
        };
        // the default pool (amd64, any version) must resolve, or the vector is unusable
        images.for_pool(None, "amd64")?;
        Ok(images)
    }

    /// The images of a pool running Kubernetes `kubernetes_version` on `architecture`. An entry
    /// without tag gets the Kubernetes version (Gardener's rule) or, for the extension's own
    /// image, the extension's version.
    pub fn for_pool(
        &self,
        kubernetes_version: Option<&str>,
        architecture: &str,
    ) -> Result<InstallerImages, ImageVectorError> {
        let version_tag =
            kubernetes_version.map_or_else(|| self.own_tag.clone(), |v| format!("v{}", v.trim_start_matches('v')));
        Ok(InstallerImages {
            kata_deploy: self
                .vector
                .find(KATA_DEPLOY, kubernetes_version, Some(architecture))?
                .reference(&version_tag),
            node_labeler: self
                .vector
                .find(NODE_LABELER, kubernetes_version, Some(architecture))?
                .reference(&self.own_tag),
        })
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The node labeler as the extension's own image: the embedded entry's key (the name alone, so
/// every architecture), which makes the merge replace that entry rather than add one beside it.
fn own_image_entry(image: &str) -> Result<ImageVector, ImageVectorError> {
    let entry = Entry {
        name: NODE_LABELER.into(),
        reference: Some(image.into()),
        ..Default::default()
    };
    ImageVector::new(&format!("${OWN_IMAGE_ENV}"), vec![entry])
}

/// Where the actuator gets a pool's images from: the image vector, or fixed images (tests).
#[derive(Clone, Debug, PartialEq)]
pub enum ImageSource {
    Vector(Images),
    Fixed(InstallerImages),
}

impl ImageSource {
    pub fn for_pool(
        &self,
        kubernetes_version: Option<&str>,
        architecture: &str,
    ) -> Result<InstallerImages, ImageVectorError> {
        match self {
            ImageSource::Vector(v) => v.for_pool(kubernetes_version, architecture),
            ImageSource::Fixed(i) => Ok(i.clone()),
        }
    }
}

impl From<Images> for ImageSource {
    fn from(v: Images) -> Self {
        ImageSource::Vector(v)
    }
}

impl From<InstallerImages> for ImageSource {
    fn from(i: InstallerImages) -> Self {
        ImageSource::Fixed(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kata_deploy_is_pinned_and_the_node_labeler_is_ours() {
        let v = Images::from_sources("v0.1.0", None).unwrap();
        let amd = v.for_pool(Some("1.33.4"), "amd64").unwrap();
        assert_eq!(amd.kata_deploy, "quay.io/kata-containers/kata-deploy:4.1.0");
        assert!(
            amd.node_labeler.ends_with("/runtime-kata:v0.1.0"),
            "{}",
            amd.node_labeler
        );
    }

    /// The node labeler is a manifest list for amd64 and arm64: an arm64 pool gets the same
    /// reference as an amd64 pool, without any overwrite.
    #[test]
    fn an_arm64_pool_gets_the_node_labeler_by_default() {
        let v = Images::from_sources("v0.1.0", None).unwrap();
        let amd = v.for_pool(Some("1.33.4"), "amd64").unwrap();
        let arm = v.for_pool(Some("1.33.4"), "arm64").unwrap();
        assert_eq!(arm, amd, "kata-deploy and the node labeler are multi-arch");
        assert_eq!(
            arm.node_labeler,
            "registry.invalid/gardener/extensions/runtime-kata:v0.1.0"
        );
    }

    /// An operator's image for arm64 alone is more specific than the multi-arch entry, whether
    /// that comes from the embedded vector or from the chart's image.
    #[test]
    fn an_operator_overwrite_for_arm64_still_wins() {
        let o = "images:\n- name: runtime-kata-node-labeler\n  ref: registry.local/runtime-kata-arm64:v0.1.0\n  architectures: [arm64]\n";
        for own_image in [
            None,
            Some("registry.example/team/gardener/extensions/runtime-kata:v0.1.0"),
        ] {
            let v = Images::from_parts("v0.1.0", own_image, Some(("o", o))).unwrap();
            let arm = v.for_pool(Some("1.33.4"), "arm64").unwrap();
            assert_eq!(arm.node_labeler, "registry.local/runtime-kata-arm64:v0.1.0");
            assert_eq!(arm.kata_deploy, "quay.io/kata-containers/kata-deploy:4.1.0");
            let amd = v.for_pool(Some("1.33.4"), "amd64").unwrap();
            assert_ne!(amd.node_labeler, arm.node_labeler, "amd64 keeps the default");
        }
    }

    /// The chart's image replaces the placeholder for every architecture; an overwrite of the
    /// whole entry (same key: the name alone) still replaces it in turn.
    #[test]
    fn the_image_the_extension_runs_as_is_the_node_labeler() {
        let own = "registry.example/team/gardener/extensions/runtime-kata:v9.8.7";
        let v = Images::from_parts("v0.1.0", Some(own), None).unwrap();
        for arch in ["amd64", "arm64"] {
            assert_eq!(v.for_pool(Some("1.33.4"), arch).unwrap().node_labeler, own, "{arch}");
        }
        let mirror = "images:\n- name: runtime-kata-node-labeler\n  ref: registry.internal/runtime-kata:v9.8.7\n";
        let v = Images::from_parts("v0.1.0", Some(own), Some(("o", mirror))).unwrap();
        for arch in ["amd64", "arm64"] {
            assert_eq!(
                v.for_pool(Some("1.33.4"), arch).unwrap().node_labeler,
                "registry.internal/runtime-kata:v9.8.7",
                "{arch}"
            );
        }
        assert!(
            Images::from_parts("v0.1.0", Some(""), None).is_err(),
            "an empty reference"
        );
    }

    #[test]
    fn an_air_gapped_overwrite_with_ref_is_used() {
        let o = "images:\n- name: kata-deploy\n  ref: registry.internal/kata-deploy@sha256:0123\n";
        let v = Images::from_sources("v0.1.0", Some(("o", o))).unwrap();
        assert_eq!(
            v.for_pool(Some("1.33.4"), "amd64").unwrap().kata_deploy,
            "registry.internal/kata-deploy@sha256:0123"
        );
        assert!(Images::from_sources("v", Some(("o", "images: 3"))).is_err());
        assert!(Images::from_sources("v", Some(("o", "images:\n- name: kata-deploy\n  ref: a\n  tag: b\n"))).is_err());
    }
}
