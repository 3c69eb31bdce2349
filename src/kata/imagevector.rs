//! The embedded image vector (`imagevector/images.yaml`) with Gardener's `IMAGEVECTOR_OVERWRITE`.

use serde::Deserialize;
use std::collections::BTreeMap;

pub const KATA_DEPLOY: &str = "kata-deploy";
pub const NODE_LABELER: &str = "runtime-kata-node-labeler";
pub const OVERWRITE_ENV: &str = "IMAGEVECTOR_OVERWRITE";

const EMBEDDED: &str = include_str!("../../imagevector/images.yaml");

#[derive(Debug, thiserror::Error)]
pub enum ImageVectorError {
    #[error("cannot read image vector overwrite {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot decode image vector {what}: {message}")]
    Decode { what: String, message: String },
    #[error("image vector has no image {0:?}")]
    Missing(String),
}

#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct ImageSource {
    name: String,
    #[serde(default)]
    repository: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Deserialize)]
struct ImageVectorFile {
    images: Vec<ImageSource>,
}

/// Image name → fully qualified reference.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageVector {
    images: BTreeMap<String, String>,
}

fn decode(what: &str, text: &str) -> Result<Vec<ImageSource>, ImageVectorError> {
    serde_saphyr::from_str::<ImageVectorFile>(text)
        .map(|f| f.images)
        .map_err(|e| ImageVectorError::Decode {
            what: what.into(),
            message: e.to_string(),
        })
}

impl ImageVector {
    /// The embedded vector, overwritten by `$IMAGEVECTOR_OVERWRITE` when set. Images without a
    /// tag get `default_tag` (the extension's version).
    pub fn load(default_tag: &str) -> Result<Self, ImageVectorError> {
        let overwrite = match std::env::var(OVERWRITE_ENV) {
            Ok(path) if !path.is_empty() => {
                Some(std::fs::read_to_string(&path).map_err(|source| ImageVectorError::Read {
                    path: path.clone(),
                    source,
                })?)
            }
            _ => None,
        };
        Self::from_sources(default_tag, overwrite.as_deref())
    }

    pub fn from_sources(default_tag: &str, overwrite: Option<&str>) -> Result<Self, ImageVectorError> {
        let mut sources: BTreeMap<String, ImageSource> = decode("(embedded)", EMBEDDED)?
            .into_iter()
            .map(|i| (i.name.clone(), i))
            .collect();
        if let Some(text) = overwrite {
            for o in decode(OVERWRITE_ENV, text)? {
                let entry = sources.entry(o.name.clone()).or_insert_with(|| o.clone());
                if o.repository.is_some() {
                    entry.repository = o.repository;
                }
                if o.tag.is_some() {
                    entry.tag = o.tag;
                }
            }
        }
        let mut images = BTreeMap::new();
        for (name, s) in sources {
            let Some(repo) = s.repository else {
                return Err(ImageVectorError::Decode {
                    what: name,
                    message: "no repository".into(),
                });
            };
            let tag = s.tag.unwrap_or_else(|| default_tag.to_string());
            // a digest reference is taken as it is
            let reference = if tag.starts_with("sha256:") {
                format!("{repo}@{tag}")
            } else {
                format!("{repo}:{tag}")
            };
            images.insert(name, reference);
        }
        Ok(Self { images })
    }

    pub fn image(&self, name: &str) -> Result<&str, ImageVectorError> {
        self.images
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| ImageVectorError::Missing(name.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kata_deploy_is_pinned() {
        let v = ImageVector::from_sources("v0.1.0", None).unwrap();
        assert_eq!(
            v.image(KATA_DEPLOY).unwrap(),
            "quay.io/kata-containers/kata-deploy:4.1.0"
        );
        assert!(v.image(NODE_LABELER).unwrap().ends_with("/runtime-kata:v0.1.0"));
        assert!(v.image("nope").is_err());
    }

    #[test]
    fn overwrite_replaces_by_name() {
        let o = "images:\n- name: kata-deploy\n  repository: registry.local/kata-deploy\n  tag: \"4.1.1\"\n- name: runtime-kata-node-labeler\n  tag: sha256:abc\n";
        let v = ImageVector::from_sources("v0.1.0", Some(o)).unwrap();
        assert_eq!(v.image(KATA_DEPLOY).unwrap(), "registry.local/kata-deploy:4.1.1");
        assert!(v.image(NODE_LABELER).unwrap().ends_with("/runtime-kata@sha256:abc"));
        assert!(ImageVector::from_sources("v", Some("images: 3")).is_err());
    }
}
