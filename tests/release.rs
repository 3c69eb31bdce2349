//! `make release` and the image build, as far as they run without a registry and without docker:
//! the artifacts reference exactly what is pushed, under the operator's REGISTRY, for both
//! architectures; the Dockerfile cross-compiles each architecture on the build platform.

use gardener_extension_runtime_kata::imagevector::ARCHITECTURES;
use gardener_extension_runtime_kata::kata::imagevector::{Images, OWN_IMAGE_ENV};
use gardener_extension_runtime_kata::testenv::Binaries;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The registry the sources name until `make release` writes the operator's.
const PLACEHOLDER: &str = "registry.invalid";
const REGISTRY: &str = "registry.example/team";
const IMAGE: &str = "registry.example/team/gardener/extensions/runtime-kata:v9.8.7";

fn helm(args: &[&str]) -> String {
    let bins = Binaries::locate().expect("test binaries");
    let out = Command::new(&bins.helm).args(args).output().expect("running helm");
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// hack/release.sh with these variables (VERSION, REGISTRY, …), writing to `dist`.
fn release(dist: &Path, vars: &[(&str, &str)]) -> Output {
    let bins = Binaries::locate().expect("test binaries");
    let mut cmd = Command::new("bash");
    cmd.arg(Path::new(REPO).join("hack/release.sh"))
        .env_remove("REGISTRY")
        .env_remove("VERSION")
        .env("DIST", dist)
        .env("HELM", &bins.helm);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn released(dist: &Path) {
    let out = release(dist, &[("VERSION", "v9.8.7"), ("REGISTRY", REGISTRY)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file of a chart package, by path.
fn chart_files(tgz: &Path) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(tgz)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.path().to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let name = path.strip_prefix(dir.path()).unwrap().display().to_string();
                files.insert(name, read(&path));
            }
        }
    }
    files
}

/// The image the `docker buildx` line of PUSH.md builds, and for which platforms.
fn buildx(push: &str) -> (Vec<String>, String) {
    let line = push
        .lines()
        .find(|l| l.contains("docker buildx build"))
        .unwrap_or_else(|| panic!("no buildx line: {push}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |flag: &str| {
        let i = words
            .iter()
            .position(|w| *w == flag)
            .unwrap_or_else(|| panic!("{flag}: {line}"));
        words[i + 1].to_string()
    };
    assert!(words.contains(&"--push"), "{line}");
    let platforms = after("--platform").split(',').map(String::from).collect();
    (platforms, after("-t"))
}

/// `make release`: the chart package, the registrations and the push steps agree, so that what
/// `helm push` and the image build publish is exactly what the registrations reference.
#[test]
fn release_artifacts_reference_what_is_pushed() {
    use base64::Engine as _;
    let dist = tempfile::tempdir().unwrap();
    released(dist.path());
    let tgz = dist.path().join("gardener-extension-runtime-kata-9.8.7.tgz");
    let chart = helm(&["show", "chart", tgz.to_str().unwrap()]);
    assert!(
        chart.contains("name: gardener-extension-runtime-kata") && chart.contains("version: 9.8.7"),
        "{chart}"
    );
    assert!(chart.contains("appVersion: v9.8.7"), "{chart}");
    // helm push oci://registry.example/team/charts/gardener/extensions publishes <repo>/<name>:<version>
    let extension = read(&dist.path().join("extension.yaml"));
    assert!(
        extension
            .contains("ref: registry.example/team/charts/gardener/extensions/gardener-extension-runtime-kata:9.8.7"),
        "{extension}"
    );
    let push = read(&dist.path().join("PUSH.md"));
    assert_eq!(buildx(&push).1, IMAGE);
    assert!(
        push.contains("oci://registry.example/team/charts/gardener/extensions"),
        "{push}"
    );

    // the embedded chart, rendered with the registration's values, runs the pushed image everywhere
    let registration = read(&dist.path().join("controller-registration.yaml"));
    let deployment: serde_json::Value = serde_saphyr::from_str(registration.split("\n---\n").nth(1).unwrap()).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(deployment["helm"]["rawChart"].as_str().unwrap())
        .unwrap();
    let chart_file = dist.path().join("embedded.tgz");
    std::fs::write(&chart_file, raw).unwrap();
    let values_file = dist.path().join("values.yaml");
    std::fs::write(
        &values_file,
        serde_saphyr::to_string(&deployment["helm"]["values"]).unwrap(),
    )
    .unwrap();
    let rendered = helm(&[
        "template",
        "x",
        chart_file.to_str().unwrap(),
        "--values",
        values_file.to_str().unwrap(),
    ]);
    assert!(rendered.contains(&format!("image: {IMAGE}")), "the seed Deployment");
    let own_image = rendered
        .split(&format!("- name: {OWN_IMAGE_ENV}\n"))
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|l| l.trim().strip_prefix("value: "))
        .expect("the node labeler image passed to the binary");
    let images = Images::from_parts("v0.0.0", Some(own_image), None).unwrap();
    for arch in ARCHITECTURES {
        assert_eq!(
            images.for_pool(Some("1.33.4"), arch).unwrap().node_labeler,
            IMAGE,
            "the node labeler in shoots on {arch}"
        );
    }
}

/// One manifest list for every architecture the image vector knows: PUSH.md builds both
/// platforms, and what the registrations deploy on either is that image.
#[test]
fn the_release_builds_and_references_both_architectures() {
    let dist = tempfile::tempdir().unwrap();
    released(dist.path());
    let push = read(&dist.path().join("PUSH.md"));
    let (platforms, image) = buildx(&push);
    let wanted: Vec<String> = ARCHITECTURES.iter().map(|a| format!("linux/{a}")).collect();
    assert_eq!(platforms, wanted, "{push}");
    assert!(
        push.contains(&format!("docker buildx imagetools inspect {image}")),
        "a way to check the manifest list: {push}"
    );
    // the released chart's defaults (what `helm install` of the pushed chart deploys)
    let files = chart_files(&dist.path().join("gardener-extension-runtime-kata-9.8.7.tgz"));
    let values = &files["gardener-extension-runtime-kata/values.yaml"];
    let rendered = helm(&[
        "template",
        "x",
        dist.path()
            .join("gardener-extension-runtime-kata-9.8.7.tgz")
            .to_str()
            .unwrap(),
    ]);
    assert!(rendered.contains(&format!("image: {image}")), "{values}");
    assert!(
        rendered.contains(&format!("- name: {OWN_IMAGE_ENV}\n          value: {image}\n")),
        "{rendered}"
    );
    // no overwrite pins the node labeler to one architecture any more
    for file in ["controller-registration.yaml", "extension.yaml"] {
        let text = read(&dist.path().join(file));
        assert!(!text.contains("architectures"), "{file}: {text}");
    }
}

/// The project publishes to no registry: nothing released may point at the placeholder, and a
/// release without REGISTRY is refused instead of naming one.
#[test]
fn the_operators_registry_replaces_the_placeholder_everywhere() {
    let dist = tempfile::tempdir().unwrap();
    released(dist.path());
    let mut texts = BTreeMap::new();
    for entry in std::fs::read_dir(dist.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".tgz") {
            for (inner, text) in chart_files(&path) {
                texts.insert(format!("{name}:{inner}"), text);
            }
        } else {
            texts.insert(name, read(&path));
        }
    }
    assert!(texts.len() > 10, "{:?}", texts.keys());
    for (name, text) in &texts {
        assert!(!text.contains(PLACEHOLDER), "{name} names the placeholder:\n{text}");
    }
    for part in ["runtime", "application"] {
        assert!(
            texts["extension.yaml"].contains(&format!(
                "ref: {REGISTRY}/charts/gardener/extensions/gardener-extension-admission-runtime-kata-{part}:9.8.7"
            )),
            "{part}"
        );
    }
    let admission = &texts["gardener-extension-admission-runtime-kata-runtime-9.8.7.tgz:gardener-extension-admission-runtime-kata-runtime/values.yaml"];
    assert!(
        admission.contains(&format!(
            "repository: {REGISTRY}/gardener/extensions/runtime-kata\n  tag: v9.8.7"
        )),
        "{admission}"
    );

    for vars in [vec![], vec![("REGISTRY", PLACEHOLDER)]] {
        let empty = tempfile::tempdir().unwrap();
        let out = release(empty.path(), &vars);
        assert_eq!(out.status.code(), Some(2), "{vars:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("set REGISTRY"));
        assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0, "nothing written");
    }
}

/// The defaults in the sources name either an upstream image the project does not build
/// (kata-deploy, published by Kata Containers) or the placeholder that `make release` replaces.
#[test]
fn source_defaults_name_only_the_placeholder_registry() {
    let mut files = vec![
        "imagevector/images.yaml".to_string(),
        "charts/gardener-extension-runtime-kata/values.yaml".into(),
        "charts/gardener-extension-admission-runtime-kata/charts/runtime/values.yaml".into(),
        "charts/gardener-extension-admission-runtime-kata/charts/application/values.yaml".into(),
    ];
    for entry in std::fs::read_dir(Path::new(REPO).join("example")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            files.push(format!("example/{}", path.file_name().unwrap().to_string_lossy()));
        }
    }
    let mut references = 0;
    for file in &files {
        for line in read(&Path::new(REPO).join(file)).lines() {
            let line = line.trim().trim_start_matches("- ");
            let Some(reference) = ["repository: ", "ref: "].iter().find_map(|k| line.strip_prefix(k)) else {
                continue;
            };
            references += 1;
            assert!(
                reference.starts_with(&format!("{PLACEHOLDER}/")) || reference == "quay.io/kata-containers/kata-deploy",
                "{file}: {line}"
            );
        }
    }
    assert!(references >= 8, "{references} references in {files:?}");
}

/// The builder stage runs on the build platform and cross-compiles for Docker's TARGETARCH; only
/// the final, static stage is per platform. Checked on the Dockerfile's text: there is no docker
/// on the build machines (docs/operations.md says what was not run).
#[test]
fn the_dockerfile_cross_compiles_on_the_build_platform() {
    let dockerfile = read(&Path::new(REPO).join("Dockerfile"));
    let stages: Vec<&str> = dockerfile.split("\nFROM ").skip(1).collect();
    assert_eq!(stages.len(), 2, "{dockerfile}");
    let (builder, last) = (stages[0], stages[1]);
    assert!(
        builder.starts_with("--platform=$BUILDPLATFORM rust:1.95-bookworm AS builder\n"),
        "{builder}"
    );
    assert!(builder.contains("\nARG TARGETARCH\n"), "{builder}");
    assert!(builder.contains("COPY hack/target-arch.sh "), "{builder}");
    let build = builder
        .split("\nRUN ")
        .find(|run| run.contains("cargo build"))
        .expect("a cargo build");
    for part in [". /usr/local/lib/target-arch.sh", "--target \"$RUST_TARGET\"", "/out/"] {
        assert!(build.contains(part), "{part}: {build}");
    }
    let install = builder
        .split("\nRUN ")
        .find(|run| run.contains("rustup target add"))
        .expect("the target's toolchain");
    assert!(
        install.contains("$CROSS_PACKAGES") && install.contains("\"$RUST_TARGET\""),
        "{install}"
    );
    // the final stage takes the platform of the image being built, and a path without a target
    assert!(
        last.starts_with("gcr.io/distroless/static-debian12:nonroot\n"),
        "{last}"
    );
    assert!(
        last.contains("COPY --from=builder /out/gardener-extension-runtime-kata /gardener-extension-runtime-kata"),
        "{last}"
    );
    assert!(last.contains("USER 65532:65532"), "{last}");
}

/// What the builder sets for each architecture, run with the shell the rust image's RUN uses.
#[test]
fn the_builder_targets_each_architecture_of_the_image_vector() {
    let script = Path::new(REPO).join("hack/target-arch.sh");
    let source = |arch: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!(". '{}' && env", script.display()))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("TARGETARCH", arch)
            .output()
            .unwrap()
    };
    for (arch, target, gnu, packages) in [
        (
            "amd64",
            "x86_64-unknown-linux-musl",
            "x86_64-linux-gnu",
            "gcc-x86-64-linux-gnu libc6-dev-amd64-cross",
        ),
        (
            "arm64",
            "aarch64-unknown-linux-musl",
            "aarch64-linux-gnu",
            "gcc-aarch64-linux-gnu libc6-dev-arm64-cross",
        ),
    ] {
        assert!(ARCHITECTURES.contains(&arch));
        let out = source(arch);
        assert!(out.status.success(), "{arch}: {}", String::from_utf8_lossy(&out.stderr));
        let env: BTreeMap<String, String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let var = target.replace('-', "_");
        let want = [
            ("RUST_TARGET".to_string(), target.to_string()),
            ("CROSS_PACKAGES".to_string(), packages.to_string()),
            (format!("CC_{var}"), format!("{gnu}-gcc")),
            (format!("AR_{var}"), format!("{gnu}-ar")),
            (
                format!("CARGO_TARGET_{}_LINKER", var.to_uppercase()),
                format!("{gnu}-gcc"),
            ),
        ];
        for (k, v) in want {
            assert_eq!(env.get(&k), Some(&v), "{arch}: {k}");
        }
    }
    let out = source("s390x");
    assert!(!out.status.success(), "an architecture the image vector does not know");
    assert!(String::from_utf8_lossy(&out.stderr).contains("amd64 or arm64"));
}
