//! Gardener's image vector: the format of `images.yaml` and `IMAGEVECTOR_OVERWRITE`, validated,
//! merged and searched with the semantics of Gardener's `pkg/utils/imagevector`:
//!
//! - an entry names an image by `ref` (a complete reference) or by `repository` plus optional `tag`
//!   (a tag, a digest `sha256:…`, or both `v1@sha256:…`), never both;
//! - `targetVersion` / `runtimeVersion` constrain the Kubernetes version the image targets / runs on,
//!   `architectures` the CPU architectures it exists for (none: all);
//! - an overwrite entry merges into the entry with the same name, `runtimeVersion`, `targetVersion` and
//!   `architectures`; a `ref` in the overwrite replaces repository and tag, a `repository` in the
//!   overwrite drops an inherited `ref`; other entries are added;
//! - a search picks, among the entries of that name whose constraints hold, the most specific one
//!   (an exact version or a single architecture scores higher), the first of equals.
//!
//! What this extension does not understand (e.g. a `caBundle`, an unknown field, an architecture
//! other than amd64/arm64) is rejected with an error, never ignored.

pub mod constraint;

use constraint::{Constraint, Version};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ImageVectorError {
    #[error("cannot read image vector {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot decode image vector {what}: {message}")]
    Decode { what: String, message: String },
    #[error("invalid image vector {what}: images[{index}].{field}: {message}")]
    Invalid {
        what: String,
        index: usize,
        field: String,
        message: String,
    },
    #[error("the image vector has no image {name:?} for {wanted}")]
    NotFound { name: String, wanted: String },
}

pub const ARCHITECTURES: [&str; 2] = ["amd64", "arm64"];

/// One entry of an image vector.
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageSource {
    pub name: String,
    /// Informational (where the image is built from).
    #[serde(default)]
    pub source_repository: Option<String>,
    #[serde(default)]
    pub runtime_version: Option<String>,
    #[serde(default)]
    pub target_version: Option<String>,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    #[serde(default, rename = "ref")]
    pub reference: Option<String>,
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// Informational (Gardener's OCM labels).
    #[serde(default)]
    pub labels: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    images: Vec<ImageSource>,
}

/// A validated image vector.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ImageVector(Vec<ImageSource>);

impl ImageVector {
    /// Decodes and validates the YAML text of an image vector; `what` names it in errors.
    pub fn read(what: &str, text: &str) -> Result<Self, ImageVectorError> {
        let file: File = serde_saphyr::from_str(text).map_err(|e| ImageVectorError::Decode {
            what: what.into(),
            message: e.to_string(),
        })?;
        Self::new(what, file.images)
    }

    /// Validates entries built in code, with the same rules as a file; `what` names them in errors.
    pub fn new(what: &str, images: Vec<ImageSource>) -> Result<Self, ImageVectorError> {
        for (index, source) in images.iter().enumerate() {
            validate(source).map_err(|(field, message)| ImageVectorError::Invalid {
                what: what.into(),
                index,
                field: field.into(),
                message,
            })?;
        }
        Ok(Self(images))
    }

    /// Gardener's `MergeImageVectors(self, overwrite)`.
    pub fn merge(mut self, overwrite: ImageVector) -> Self {
        for image in overwrite.0 {
            match self.0.iter().position(|s| same_key(s, &image)) {
                Some(i) => self.0[i] = merge_sources(&self.0[i], image),
                None => self.0.push(image),
            }
        }
        self
    }

    /// Gardener's `FindImage`: the best matching entry for a target Kubernetes version and a
    /// CPU architecture (none: amd64, as Gardener assumes).
    pub fn find(
        &self,
        name: &str,
        target_version: Option<&str>,
        architecture: Option<&str>,
    ) -> Result<&ImageSource, ImageVectorError> {
        let target = target_version.and_then(Version::parse);
        let mut best: Option<(u32, &ImageSource)> = None;
        for source in self.0.iter().filter(|s| s.name == name) {
            let Some(score) = score(source, target, architecture.unwrap_or("amd64")) else {
                continue;
            };
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, source));
            }
        }
        best.map(|(_, s)| s).ok_or_else(|| ImageVectorError::NotFound {
            name: name.into(),
            wanted: format!(
                "Kubernetes {} on {}",
                target_version.unwrap_or("(any)"),
                architecture.unwrap_or("amd64")
            ),
        })
    }
}

impl ImageSource {
    /// The pullable reference (Gardener's `ToImage(..).String()`); `default_tag` applies to an
    /// entry with neither `ref` nor `tag`.
    pub fn reference(&self, default_tag: &str) -> String {
        if let Some(r) = &self.reference {
            return r.clone();
        }
        let repository = self.repository.as_deref().unwrap_or_default();
        let tag = self.tag.as_deref().unwrap_or(default_tag);
        if tag.starts_with("sha256:") {
            format!("{repository}@{tag}")
        } else {
            format!("{repository}:{tag}")
        }
    }
}

fn validate(s: &ImageSource) -> Result<(), (&'static str, String)> {
    let empty = |v: &Option<String>| v.as_deref().is_some_and(str::is_empty);
    if s.name.is_empty() {
        return Err(("name", "required".into()));
    }
    match (&s.reference, &s.repository) {
        (None, None) => {
            return Err((
                "ref/repository",
                "either ref or repository (and tag) is required".into(),
            ));
        }
        (Some(_), Some(_)) => return Err(("repository", "cannot be set together with ref".into())),
        (Some(_), None) if s.tag.is_some() => return Err(("tag", "cannot be set together with ref".into())),
        _ => {}
    }
    for (field, value) in [("ref", &s.reference), ("repository", &s.repository), ("tag", &s.tag)] {
        if empty(value) {
            return Err((field, "must not be empty when set".into()));
        }
    }
    for (field, value) in [
        ("runtimeVersion", &s.runtime_version),
        ("targetVersion", &s.target_version),
    ] {
        if let Some(c) = value {
            Constraint::parse(c).map_err(|e| (field, e.to_string()))?;
        }
    }
    for arch in s.architectures.iter().flatten() {
        if !ARCHITECTURES.contains(&arch.as_str()) {
            return Err(("architectures", format!("{arch:?} is not one of {ARCHITECTURES:?}")));
        }
    }
    Ok(())
}

fn same_key(a: &ImageSource, b: &ImageSource) -> bool {
    a.name == b.name
        && a.runtime_version.as_deref().unwrap_or_default() == b.runtime_version.as_deref().unwrap_or_default()
        && a.target_version.as_deref().unwrap_or_default() == b.target_version.as_deref().unwrap_or_default()
        && a.architectures.as_ref().map(|v| v.concat()) == b.architectures.as_ref().map(|v| v.concat())
}

/// Gardener's `mergeImageSources(old, override)`.
fn merge_sources(old: &ImageSource, new: ImageSource) -> ImageSource {
    let repository = new.repository.clone().or_else(|| old.repository.clone());
    let tag = new.tag.clone().or_else(|| old.tag.clone());
    let mut version = new.version.clone().or_else(|| old.version.clone());
    if version.is_none() && tag.is_some() {
        version = old.tag.clone();
    }
    let mut reference = new.reference.clone();
    if reference.is_none() && new.repository.is_none() {
        reference = old.reference.clone();
    }
    let (repository, tag) = if reference.is_some() {
        (None, None)
    } else {
        (repository, tag)
    };
    ImageSource {
        name: new.name,
        source_repository: new.source_repository.or_else(|| old.source_repository.clone()),
        runtime_version: new.runtime_version.or_else(|| old.runtime_version.clone()),
        target_version: new.target_version.or_else(|| old.target_version.clone()),
        architectures: new.architectures.or_else(|| old.architectures.clone()),
        reference,
        repository,
        tag,
        version,
        labels: new.labels.or_else(|| old.labels.clone()),
    }
}

/// Gardener prefers constraints that start with `=` or a complete version (`^(v?\d+\.\d+\.\d+|=)`).
fn pinned(constraint: &str) -> bool {
    if constraint.starts_with('=') {
        return true;
    }
    let mut rest = constraint.strip_prefix('v').unwrap_or(constraint);
    for i in 0..3 {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        if i < 2 {
            match rest.strip_prefix('.') {
                Some(r) => rest = r,
                None => return false,
            }
        }
    }
    true
}

/// Gardener's `match`: `None` if a constraint fails, else how specific the entry is.
fn score(source: &ImageSource, target: Option<Version>, architecture: &str) -> Option<u32> {
    let mut score = 0;
    // runtimeVersion: the extension runs in the seed; we search without a runtime version, for
    // which Gardener ignores the constraint
    if let (Some(c), Some(v)) = (&source.target_version, target) {
        // validated when read
        let constraint = Constraint::parse(c).ok()?;
        if !constraint.matches(v) {
            return None;
        }
        score += if pinned(c) { 2 } else { 1 };
    }
    let archs: Vec<&str> = match &source.architectures {
        Some(a) => a.iter().map(String::as_str).collect(),
        None => ARCHITECTURES.to_vec(),
    };
    if !archs.contains(&architecture) {
        return None;
    }
    score += if archs.len() == 1 { 2 } else { 1 };
    Some(score)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> ImageVector {
        ImageVector::read("test", text).unwrap()
    }

    /// The example of Gardener's image vector documentation: per-version and per-architecture
    /// entries of one image.
    const DOCUMENTED: &str = r#"
images:
- name: pause-container
  sourceRepository: github.com/kubernetes/kubernetes/blob/master/build/pause/Dockerfile
  repository: registry.k8s.io/pause
  tag: "3.4"
  targetVersion: "1.20.x"
  architectures:
  - amd64
- name: pause-container
  sourceRepository: github.com/kubernetes/kubernetes/blob/master/build/pause/Dockerfile
  repository: registry.k8s.io/pause
  tag: "3.5"
  targetVersion: ">= 1.21"
  architectures:
  - amd64
  - arm64
- name: pause-container
  repository: registry.k8s.io/pause
  tag: "3.5-arm"
  targetVersion: ">= 1.21"
  architectures:
  - arm64
"#;

    #[test]
    fn pinned_constraints_are_recognised_as_gardener_does() {
        for (c, want) in [
            ("1.33.4", true),
            ("v1.33.4", true),
            ("= 1.33", true),
            ("1.33.x", false),
            (">= 1.30", false),
            ("1.33", false),
        ] {
            assert_eq!(pinned(c), want, "{c}");
        }
    }

    #[test]
    fn the_most_specific_entry_wins() {
        let v = read(DOCUMENTED);
        let find = |t, a| v.find("pause-container", Some(t), Some(a)).map(|s| s.reference("x"));
        assert_eq!(find("1.20.3", "amd64").unwrap(), "registry.k8s.io/pause:3.4");
        assert_eq!(find("1.33.4", "amd64").unwrap(), "registry.k8s.io/pause:3.5");
        // the single-architecture entry is more specific than the multi-architecture one
        assert_eq!(find("1.33.4", "arm64").unwrap(), "registry.k8s.io/pause:3.5-arm");
        assert!(find("1.20.3", "arm64").is_err(), "no arm64 image for 1.20");
        assert!(v.find("nope", None, None).is_err());
    }

    #[test]
    fn an_overwrite_with_ref_replaces_repository_and_tag() {
        let base =
            read("images:\n- name: kata-deploy\n  repository: quay.io/kata-containers/kata-deploy\n  tag: \"4.1.0\"\n");
        let air_gapped = read("images:\n- name: kata-deploy\n  ref: registry.internal/mirror/kata-deploy:4.1.0\n");
        let v = base.clone().merge(air_gapped);
        let s = v.find("kata-deploy", Some("1.33.4"), Some("amd64")).unwrap();
        assert_eq!(s.reference("x"), "registry.internal/mirror/kata-deploy:4.1.0");
        assert_eq!((s.repository.as_ref(), s.tag.as_ref()), (None, None));
        // a repository in an overwrite drops an inherited ref; the ref had dropped the tag, so
        // the default tag applies, as in Gardener
        let with_ref = base.clone().merge(read("images:\n- name: kata-deploy\n  ref: a/b:1\n"));
        let v = with_ref.merge(read("images:\n- name: kata-deploy\n  repository: mirror/kata-deploy\n"));
        assert_eq!(
            v.find("kata-deploy", None, None).unwrap().reference("x"),
            "mirror/kata-deploy:x"
        );
        // a repository alone keeps the old tag
        let v = base.merge(read("images:\n- name: kata-deploy\n  repository: mirror/kata-deploy\n"));
        assert_eq!(
            v.find("kata-deploy", None, None).unwrap().reference("x"),
            "mirror/kata-deploy:4.1.0"
        );
    }

    #[test]
    fn overwrites_merge_by_name_versions_and_architectures() {
        let v = read(DOCUMENTED).merge(read(
            "images:\n- name: pause-container\n  repository: mirror/pause\n  targetVersion: \">= 1.21\"\n  architectures: [arm64]\n- name: pause-container\n  repository: mirror/other\n  tag: \"9\"\n",
        ));
        // only the entry with the same key changed; the entry without versions is added
        let find = |a| {
            v.find("pause-container", Some("1.33.4"), Some(a))
                .unwrap()
                .reference("x")
        };
        assert_eq!(find("arm64"), "mirror/pause:3.5-arm");
        assert_eq!(find("amd64"), "registry.k8s.io/pause:3.5");
        assert_eq!(v.0.len(), 4);
        // a digest is joined with '@', a tag with a digest with ':'
        let d = read(
            "images:\n- name: a\n  repository: r/a\n  tag: sha256:0123\n- name: b\n  repository: r/b\n  tag: v1@sha256:0123\n",
        );
        assert_eq!(d.find("a", None, None).unwrap().reference("x"), "r/a@sha256:0123");
        assert_eq!(d.find("b", None, None).unwrap().reference("x"), "r/b:v1@sha256:0123");
    }

    #[test]
    fn what_cannot_be_understood_is_rejected() {
        for (text, field) in [
            ("images:\n- name: a\n  ref: r:1\n  repository: r\n", "repository"),
            ("images:\n- name: a\n  ref: r:1\n  tag: \"1\"\n", "tag"),
            ("images:\n- name: a\n", "ref/repository"),
            (
                "images:\n- name: a\n  repository: r\n  targetVersion: \"=> 1.2\"\n",
                "targetVersion",
            ),
            (
                "images:\n- name: a\n  repository: r\n  architectures: [s390x]\n",
                "architectures",
            ),
            ("images:\n- name: \"\"\n  repository: r\n", "name"),
        ] {
            match ImageVector::read("t", text) {
                Err(ImageVectorError::Invalid { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        for text in [
            "images:\n- name: a\n  repository: r\n  repositry: typo\n",
            "images: []\ncaBundle:\n  inline: x\n",
            "images: 3",
        ] {
            assert!(
                matches!(ImageVector::read("t", text), Err(ImageVectorError::Decode { .. })),
                "{text}"
            );
        }
    }
}
