//! The launcher itself: start, serve, authenticate, restart, stop, and its errors.
//! Needs the binaries from `sandbox/scripts/build-control-plane.sh` (or
//! `DCR_CONTROL_PLANE_BIN_DIR`).

use std::path::Path;
use std::time::Instant;

use sandbox::controlplane::{ControlPlane, ControlPlaneOptions, Error, UserSpec};

fn http(cp: &ControlPlane) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cp.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap()
}

fn alive(pid: u32) -> bool {
    // A killed child that nobody has reaped yet is a zombie: dead for our purposes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn starts_serves_authenticates_and_stops() {
    let t0 = Instant::now();
    let cp = ControlPlane::start(ControlPlaneOptions {
        extra_users: vec![UserSpec::service_account("dcr-system", "dcr-operator")],
        ..Default::default()
    })
    .await
    .expect("start");
    eprintln!("started in {:?} ({:?})", t0.elapsed(), cp.processes());
    let http = http(&cp);

    let version: serde_json::Value = http
        .get(format!("{}/version", cp.server_url()))
        .bearer_auth(cp.admin_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["gitVersion"], "v1.20.2", "{version}");

    // The admin kubeconfig names the server and embeds the CA.
    let kubeconfig = std::fs::read_to_string(cp.kubeconfig_path()).unwrap();
    assert!(kubeconfig.contains(cp.server_url()), "{kubeconfig}");
    assert!(kubeconfig.contains("certificate-authority-data"));

    // Admin may list namespaces; the operator's identity may not (no RBAC yet); an
    // unknown token is 401.
    let list = |token: String| {
        let http = http.clone();
        let url = format!("{}/api/v1/namespaces", cp.server_url());
        async move { http.get(url).bearer_auth(token).send().await.unwrap().status() }
    };
    assert_eq!(list(cp.admin_token().to_string()).await, 200);
    let sa = "system:serviceaccount:dcr-system:dcr-operator";
    let user = cp.users().iter().find(|u| u.spec.name == sa).unwrap();
    assert_eq!(list(user.token.clone()).await, 403);
    assert_eq!(list("not-a-token".to_string()).await, 401);
    let user_kubeconfig = std::fs::read_to_string(cp.kubeconfig_for_user(sa).unwrap()).unwrap();
    assert!(user_kubeconfig.contains(&user.token));
    assert!(matches!(
        cp.kubeconfig_for_user("nobody"),
        Err(Error::UnknownUser(_))
    ));

    // The controller manager runs: it created the default ServiceAccount (start waited
    // for that) and the token controller gave it a token Secret.
    let secrets: serde_json::Value = http
        .get(format!("{}/api/v1/namespaces/default/secrets", cp.server_url()))
        .bearer_auth(cp.admin_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(secrets["items"].is_array(), "{secrets}");

    let pids = cp.pids();
    let dir = cp.state_dir().to_path_buf();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|&p| alive(p)));
    cp.stop();
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived stop()");
    }
    assert!(!dir.exists(), "{} survived stop()", dir.display());
}

#[tokio::test]
async fn restart_apiserver_keeps_port_and_data() {
    let mut cp = ControlPlane::start(ControlPlaneOptions::default())
        .await
        .expect("start");
    let http = http(&cp);
    let url = format!("{}/api/v1/namespaces/default/configmaps", cp.server_url());
    let created = http
        .post(&url)
        .bearer_auth(cp.admin_token())
        .json(&serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "before-restart"}, "data": {"k": "v"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let old_pid = cp.processes().iter().find(|p| p.0 == "kube-apiserver").unwrap().1;
    let server = cp.server_url().to_string();

    let t0 = Instant::now();
    cp.restart_apiserver().await.expect("restart");
    eprintln!("apiserver restarted in {:?}", t0.elapsed());
    let new_pid = cp.processes().iter().find(|p| p.0 == "kube-apiserver").unwrap().1;
    assert_ne!(old_pid, new_pid);
    assert!(!alive(old_pid));
    assert_eq!(cp.server_url(), server);

    let got = http
        .get(format!("{url}/before-restart"))
        .bearer_auth(cp.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.status(),
        200,
        "data written before the restart is still there"
    );
}

fn fake_bin_dir(apiserver_script: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in [
        ("kube-apiserver", apiserver_script),
        ("kube-controller-manager", "#!/bin/sh\nexit 1\n"),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| alive(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test]
async fn a_failing_component_is_reported_with_its_log_and_nothing_is_left_running() {
    let bins = fake_bin_dir("#!/bin/sh\necho 'boom: flag provided but not defined' >&2\nexit 3\n");
    // etcd through the fake dir, so its command line names that dir.
    let etcd = ["/usr/bin/etcd"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("etcd installed (sandbox/scripts/build-control-plane.sh)");
    std::os::unix::fs::symlink(etcd, bins.path().join("etcd")).unwrap();

    let err = ControlPlane::start(ControlPlaneOptions {
        bin_dir: Some(bins.path().to_path_buf()),
        ..Default::default()
    })
    .await
    .expect_err("a kube-apiserver that exits must fail the start");
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::Exited {
                component: "kube-apiserver",
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("boom: flag provided but not defined"), "{msg}");
    assert!(
        processes_mentioning(bins.path()).is_empty(),
        "etcd survived a failed start"
    );
}

#[tokio::test]
async fn missing_binaries_point_to_the_build_script_and_the_alternative() {
    let empty = tempfile::tempdir().unwrap();
    let err = ControlPlane::start(ControlPlaneOptions {
        bin_dir: Some(empty.path().to_path_buf()),
        ..Default::default()
    })
    .await
    .expect_err("no binaries");
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::BinaryNotFound {
                binary: "kube-apiserver",
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("build-control-plane.sh"), "{msg}");
    assert!(msg.contains("DCR_TEST_KUBECONFIG"), "{msg}");
}

#[tokio::test]
async fn the_default_bin_dir_has_the_v1_20_2_binaries() {
    let dir = sandbox::controlplane::default_bin_dir();
    assert!(dir.ends_with("control-plane/v1.20.2"), "{}", dir.display());
    // The rest of this file passes only if they are there; say where we looked.
    if std::env::var_os(sandbox::controlplane::BIN_DIR_ENV).is_none() {
        assert!(
            dir.join("kube-apiserver").exists(),
            "run sandbox/scripts/build-control-plane.sh (looked in {})",
            dir.display()
        );
    }
}
