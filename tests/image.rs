//! The release artefacts agree on one version, and the image `make image` built runs:
//! Cargo version = image tag in config/manager and the chart = chart appVersion = the
//! Dockerfile's default label; `dcr-operator --version` names the git commit; the image is
//! a static binary on scratch, non-root, with no shell. `make test` runs `make image` first.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const REPOSITORY: &str = "ghcr.io/dcr-operator/dcr-operator";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn image_ref() -> String {
    format!("{REPOSITORY}:{VERSION}")
}

fn head_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn one_version_everywhere() {
    let deployment = read("config/manager/deployment.yaml");
    assert!(
        deployment.contains(&format!("image: {}", image_ref())),
        "config/manager/deployment.yaml must run {}",
        image_ref()
    );
    let values = read("charts/dcr-operator/values.yaml");
    assert!(
        values.contains(&format!("repository: {REPOSITORY}")),
        "chart image.repository"
    );
    assert!(
        values.contains("tag: \"\""),
        "chart image.tag must default to appVersion"
    );
    let chart = read("charts/dcr-operator/Chart.yaml");
    assert!(
        chart.contains(&format!("appVersion: \"{VERSION}\"")),
        "chart appVersion"
    );
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains(&format!("ARG VERSION={VERSION}")),
        "Dockerfile VERSION default"
    );
}

#[test]
fn version_flag_prints_the_cargo_version_and_the_commit() {
    let out = Command::new(env!("CARGO_BIN_EXE_dcr-operator"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let commit = head_commit().unwrap_or_else(|| "unknown".into());
    assert_eq!(text.trim(), format!("dcr-operator {VERSION} (commit {commit})"));
}

/// podman from the private configuration `make image` wrote (sandbox/scripts/build-image.sh).
fn podman(args: &[&str]) -> Output {
    let cache = std::env::var_os("DCR_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/dcr-operator")
        });
    let conf = cache.join("containers");
    Command::new("podman")
        .args(args)
        .env("CONTAINERS_CONF", conf.join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", conf.join("storage.conf"))
        .env("TMPDIR", conf.join("tmp"))
        .output()
        .expect("podman is needed: run `make image` (it installs podman and builds the image)")
}

fn built_image() -> String {
    let reference = image_ref();
    let archive = repo().join("target/image/dcr-operator.oci.tar");
    assert!(
        archive.is_file(),
        "{} is missing: run `make image`",
        archive.display()
    );
    let exists = podman(&["image", "exists", &reference]);
    assert!(
        exists.status.success(),
        "{reference} is not in podman's storage: run `make image`"
    );
    reference
}

#[test]
fn image_runs_the_static_binary_and_prints_its_version() {
    let image = built_image();
    let out = podman(&["run", "--rm", "--network=none", &image, "--version"]);
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("dcr-operator {VERSION} (commit ")),
        "unexpected --version output: {text}"
    );
}

#[test]
fn image_is_non_root_without_a_shell_and_labelled() {
    let image = built_image();
    let format = "{{.Config.User}}|{{json .Config.Entrypoint}}|{{index .Labels \"org.opencontainers.image.version\"}}|{{index .Labels \"org.opencontainers.image.revision\"}}";
    let out = podman(&["image", "inspect", &image, "--format", format]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let fields: Vec<&str> = text.split('|').collect();
    assert_eq!(fields[0], "65532:65532", "numeric non-root user");
    assert_eq!(fields[1], "[\"/dcr-operator\"]");
    assert_eq!(fields[2], VERSION);
    assert_ne!(fields[3], "", "revision label");

    // Nothing but the binary and the CA bundle: no shell to exec into.
    let shell = podman(&[
        "run",
        "--rm",
        "--network=none",
        "--entrypoint",
        "/bin/sh",
        &image,
        "-c",
        "true",
    ]);
    let stderr = String::from_utf8_lossy(&shell.stderr);
    assert!(
        !shell.status.success() && stderr.contains("/bin/sh: no such file or directory"),
        "the image must not contain /bin/sh; podman said: {stderr}"
    );
}
