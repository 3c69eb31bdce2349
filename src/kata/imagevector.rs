//! The extension's images: the embedded image vector (`imagevector/images.yaml`), Gardener's
//! `IMAGEVECTOR_OVERWRITE`, and the images of one pool, chosen by the shoot's Kubernetes version
//! and the pool's CPU architecture.

use super::installer::InstallerImages;
use crate::imagevector::ImageVector;
pub use crate::imagevector::ImageVectorError;

pub const KATA_DEPLOY: &str = "kata-deploy";
pub const NODE_LABELER: &str = "runtime-kata-node-labeler";
pub const OVERWRITE_ENV: &str = "IMAGEVECTOR_OVERWRITE";

const EMBEDDED: &str = include_str!("../../imagevector/images.yaml");

/// The merged image vector and the extension's own version (the tag of its own image).
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    vector: ImageVector,
    own_tag: String,
}

impl Images {
    /// The embedded vector, merged with `$IMAGEVECTOR_OVERWRITE` when set. Fails (at start-up)
    /// on anything that cannot be understood.
    pub fn load(own_tag: &str) -> Result<Self, ImageVectorError> {
        let overwrite = match std::env::var(OVERWRITE_ENV) {
            Ok(path) if !path.is_empty() => Some((
                std::fs::read_to_string(&path).map_err(|source| ImageVectorError::Read {
                    path: path.clone(),
                    source,
                })?,
                path,
            )),
            _ => None,
        };
        Self::from_sources(
            own_tag,
            overwrite.as_ref().map(|(text, path)| (path.as_str(), text.as_str())),
        )
    }

    /// `overwrite`: (its name for errors, its text).
    pub fn from_sources(own_tag: &str, overwrite: Option<(&str, &str)>) -> Result<Self, ImageVectorError> {
        let mut vector = ImageVector::read("(embedded)", EMBEDDED)?;
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

    /// This release's own image is built for amd64 only: an arm64 pool has no node labeler
    /// unless the operator provides one.
    #[test]
    fn arm64_needs_an_arm64_node_labeler() {
        let v = Images::from_sources("v0.1.0", None).unwrap();
        let err = v.for_pool(Some("1.33.4"), "arm64").unwrap_err();
        assert!(err.to_string().contains(NODE_LABELER), "{err}");
        let o = "images:\n- name: runtime-kata-node-labeler\n  ref: registry.local/runtime-kata-arm64:v0.1.0\n  architectures: [arm64]\n";
        let v = Images::from_sources("v0.1.0", Some(("o", o))).unwrap();
        let arm = v.for_pool(Some("1.33.4"), "arm64").unwrap();
        assert_eq!(arm.node_labeler, "registry.local/runtime-kata-arm64:v0.1.0");
        assert_eq!(
            arm.kata_deploy, "quay.io/kata-containers/kata-deploy:4.1.0",
            "kata-deploy is multi-arch"
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
