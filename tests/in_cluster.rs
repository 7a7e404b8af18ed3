//! The operator installed for real: the container image (`make image`) on a real node
//! (`make node`, see `sandbox::controlplane::node`), installed the way the README's Install
//! section says, with Helm and with kustomize, against the Graph emulator on the host's own
//! address (pods cannot reach loopback).
//!
//! Only what points the operator at the stand-ins differs from a user's install: the
//! emulator's CA (the chart's `extraCA` value; for kustomize a ConfigMap and a patch adding
//! `--extra-ca-file`), and the sample DcrProvider's `authorityHost`/`graphEndpoint` and
//! admin secret. The operator pod runs on the pod network (no hostNetwork) and reaches the
//! apiserver through the `kubernetes` Service with its ServiceAccount token.
//!
//! One node per test binary, shared; the tests take turns (they install into the same
//! `dcr-system`) and each removes what it installed, in the README's order.
//!
//! On a cluster of your own (`DCR_TEST_KUBECONFIG`) these tests skip, saying so: they need
//! the image imported into the node's runtime and read the container's process on the host.

mod support;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sandbox::controlplane::node::{ImageArchive, NodeOptions};
use sandbox::controlplane::{ControlPlane, ControlPlaneOptions};
use sandbox::graph::{AppSpec, EmulatorConfig, GraphEmulator, GraphPermission, TenantSpec};
use serde_json::{json, Value};

const NS: &str = "dcr-system";
const RELEASE: &str = "dcr-operator";
const CHART: &str = "charts/dcr-operator";
const CA_CONFIGMAP: &str = "graph-emulator-ca";
/// As in config/samples.
const SAMPLE_TENANT: &str = "8a4b7e9c-2f5d-4c1e-9b3a-6d2e1f0c7a58";
const SAMPLE_CLIENT_ID: &str = "3f2c9d1e-7a6b-4e58-9c0d-1b2a3c4d5e6f";
const SAMPLE_NS: &str = "orders";
const SAMPLE_APP: &str = "orders-client";
const SAMPLE_SECRET: &str = "orders-client-credentials";
const TIMEOUT: Duration = Duration::from_secs(180);
/// The chart's and config/manager's leaderElection lease duration.
const LEASE_DURATION: Duration = Duration::from_secs(15);

/// The image `make image` builds, under the name config/manager and the chart use.
fn image_reference() -> String {
    format!("ghcr.io/dcr-operator/dcr-operator:{}", env!("CARGO_PKG_VERSION"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn image_archive() -> PathBuf {
    std::env::var_os("DCR_TEST_IMAGE_ARCHIVE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/image/dcr-operator.oci.tar"))
}

fn tool(name: &str) -> PathBuf {
    let cached = sandbox::controlplane::cache_root().join("tools/bin").join(name);
    if cached.exists() {
        cached
    } else {
        PathBuf::from(name)
    }
}

/// The shared node, the emulator, and the runtime the emulator serves on.
struct Env {
    cp: ControlPlane,
    emu: GraphEmulator,
    admin_secret: String,
    _rt: tokio::runtime::Runtime,
}

/// `None` (and a printed reason) on a cluster of the user's. Started once per test
/// binary, on a blocking thread (it runs its own runtime for the emulator).
async fn env() -> Option<&'static Env> {
    static ENV: OnceLock<Result<Option<Env>, String>> = OnceLock::new();
    let cell = tokio::task::spawn_blocking(|| {
        ENV.get_or_init(|| {
            if let Some(k) = support::cluster::external_kubeconfig() {
                eprintln!(
                    "in-cluster tests SKIPPED: they run on the local node only (the image is imported \
                     into its containerd, the container's process is read on the host), not on {}",
                    k.display()
                );
                return Ok(None);
            }
            start_env().map(Some)
        })
    })
    .await
    .expect("environment thread");
    match cell {
        Ok(env) => env.as_ref(),
        Err(e) => panic!("no in-cluster environment: {e}"),
    }
}

fn start_env() -> Result<Env, String> {
    let archive = image_archive();
    if !archive.is_file() {
        return Err(format!(
            "{} missing: build the operator image with `make image`",
            archive.display()
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let cp = rt
        .block_on(ControlPlane::start(ControlPlaneOptions {
            node: Some(NodeOptions {
                images: vec![ImageArchive {
                    archive,
                    reference: image_reference(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        }))
        .map_err(|e| format!("starting the control plane with a node (`make node`): {e}"))?;
    let t = cp.node_timings().expect("a node");
    eprintln!(
        "in-cluster: control plane + node Ready in {:.1?} (containerd + image imports {:.1?}, imports alone {:.1?}, kubelet to Ready {:.1?})",
        t0.elapsed(),
        t.runtime_and_images,
        t.images,
        t.node_ready
    );
    let host = sandbox::controlplane::node::host_address().map_err(|e| e.to_string())?;
    let emu = rt
        .block_on(GraphEmulator::start(EmulatorConfig {
            listen: std::net::SocketAddr::from((host, 0)),
            tls_extra_names: vec![host.to_string()],
            ..Default::default()
        }))
        .map_err(|e| format!("starting the Graph emulator: {e}"))?;
    let tenant = emu.seed_tenant(TenantSpec {
        id: Some(SAMPLE_TENANT.into()),
        ..Default::default()
    });
    let admin = emu.seed_app(
        &tenant.id,
        AppSpec {
            display_name: "dcr-operator admin".into(),
            client_id: Some(SAMPLE_CLIENT_ID.into()),
            graph_permissions: vec![GraphPermission::ApplicationReadWriteOwnedBy.as_str().into()],
            service_principal: true,
            ..Default::default()
        },
    );
    Ok(Env {
        cp,
        emu,
        admin_secret: admin.client_secret.clone(),
        _rt: rt,
    })
}

/// The tests install into the same namespace: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---- commands ------------------------------------------------------------------------

fn run(env: &Env, bin: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(tool(bin));
    cmd.args(args)
        .current_dir(repo())
        .env("KUBECONFIG", env.cp.kubeconfig_path())
        .env("HELM_CACHE_HOME", env.cp.state_dir().join("helm/cache"))
        .env("HELM_CONFIG_HOME", env.cp.state_dir().join("helm/config"))
        .env("HELM_DATA_HOME", env.cp.state_dir().join("helm/data"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("{bin}: {e}"))?;
    if let Some(input) = stdin {
        let _ = child.stdin.take().expect("piped").write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| format!("{bin}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{bin} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn kubectl(env: &Env, args: &[&str]) -> String {
    run(env, "kubectl", args, None).unwrap_or_else(|e| panic!("{e}"))
}

fn helm(env: &Env, args: &[&str]) -> String {
    run(env, "helm", args, None).unwrap_or_else(|e| panic!("{e}"))
}

fn get_json(env: &Env, args: &[&str]) -> Option<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    run(env, "kubectl", &a, None)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
}

/// Polls `f` until it returns `Some`, at most `timeout`.
async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ---- install steps -------------------------------------------------------------------

/// The emulator's CA as the ConfigMap the chart's `extraCA.configMap` names.
fn create_ca_configmap(env: &Env) {
    let ca = format!("--from-file=ca.crt={}", env.emu.ca_path().display());
    let cm = kubectl(
        env,
        &[
            "create",
            "configmap",
            CA_CONFIGMAP,
            "-n",
            NS,
            &ca,
            "--dry-run=client",
            "-o",
            "json",
        ],
    );
    run(env, "kubectl", &["apply", "-f", "-"], Some(&cm)).unwrap_or_else(|e| panic!("{e}"));
}

/// README "Install with Helm", with only the emulator's CA added.
fn helm_install(env: &Env, extra: &[&str]) -> Duration {
    let t0 = Instant::now();
    let _ = run(env, "kubectl", &["create", "namespace", NS], None);
    create_ca_configmap(env);
    let mut args = vec![
        "install",
        RELEASE,
        CHART,
        "--namespace",
        NS,
        "--create-namespace",
        "--set",
        "extraCA.configMap.name=graph-emulator-ca",
        "--wait",
        "--timeout",
        "3m",
    ];
    args.extend_from_slice(extra);
    helm(env, &args);
    t0.elapsed()
}

/// `kubectl apply -k config/samples`, with the provider pointed at the emulator and the
/// admin secret the emulator issued (what a user edits for their tenant).
fn apply_samples(env: &Env) {
    let text = kubectl(env, &["kustomize", "config/samples"]);
    let mut items = Vec::new();
    for doc in support::cluster::yaml_documents(&text).expect("samples parse") {
        let mut doc = doc;
        match doc["kind"].as_str() {
            Some("DcrProvider") => {
                doc["spec"]["azureAD"]["authorityHost"] = json!(env.emu.authority_host());
                doc["spec"]["azureAD"]["graphEndpoint"] = json!(env.emu.graph_endpoint());
            }
            Some("Secret") => doc["stringData"] = json!({"client_secret": env.admin_secret}),
            _ => {}
        }
        items.push(doc);
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
    run(env, "kubectl", &["apply", "-f", "-"], Some(&list)).unwrap_or_else(|e| panic!("{e}"));
}

fn condition(obj: &Value, type_: &str) -> Option<String> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

async fn wait_ready(env: &Env, kind: &str, name: &str, ns: Option<&str>) -> Duration {
    let t0 = Instant::now();
    let mut args = vec![kind, name];
    if let Some(ns) = ns {
        args.extend_from_slice(&["-n", ns]);
    }
    wait_for(&format!("{kind} {name} Ready"), TIMEOUT, || {
        let obj = get_json(env, &args)?;
        (condition(&obj, "Ready").as_deref() == Some("True")).then_some(())
    })
    .await;
    t0.elapsed()
}

async fn wait_samples_ready(env: &Env) -> Duration {
    let t0 = Instant::now();
    wait_ready(env, "dcrprovider", "entra", None).await;
    wait_ready(env, "authstrategy", "entra-client-credentials", None).await;
    wait_ready(env, "application", SAMPLE_APP, Some(SAMPLE_NS)).await;
    t0.elapsed()
}

fn secret_data(env: &Env, ns: &str, name: &str) -> std::collections::BTreeMap<String, String> {
    let s = get_json(env, &["secret", name, "-n", ns]).expect("the credential Secret");
    let s: k8s_openapi::api::core::v1::Secret = serde_json::from_value(s).expect("a Secret");
    s.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

/// The Secret's credentials obtain a token at the token URL the Secret names.
async fn assert_secret_gets_token(env: &Env) {
    let data = secret_data(env, SAMPLE_NS, SAMPLE_SECRET);
    let field = |k: &str| {
        data.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("the Secret has no {k}"))
    };
    let resp = env
        .emu
        .http_client()
        .post(field("token_url"))
        .form(&[
            ("grant_type", "client_credentials".to_string()),
            ("client_id", field("client_id")),
            ("client_secret", field("client_secret")),
            ("scope", "https://graph.microsoft.com/.default".to_string()),
        ])
        .send()
        .await
        .expect("token request");
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or_default();
    assert!(status.is_success(), "token request: {status} {}", body["error"]);
    assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
}

/// Live Entra applications besides the admin app, and every password of theirs that no
/// Secret records (keyId, previous keys, pending key).
fn provider_side(env: &Env) -> (usize, Vec<String>) {
    let state = env.emu.state();
    let apps: Vec<_> = state
        .live_applications()
        .filter(|a| a.app_id != SAMPLE_CLIENT_ID)
        .collect();
    let secrets = get_json(env, &["secrets", "-A"]).unwrap_or_default();
    let mut recorded = BTreeSet::new();
    for s in secrets["items"].as_array().into_iter().flatten() {
        let Some(rec) = s["metadata"]["annotations"]["dcr-operator.io/credential"].as_str() else {
            continue;
        };
        let rec: Value = serde_json::from_str(rec).unwrap_or_default();
        recorded.extend(rec["keyId"].as_str().map(str::to_string));
        recorded.extend(rec["pending"]["keyId"].as_str().map(str::to_string));
        for p in rec["previous"].as_array().into_iter().flatten() {
            recorded.extend(p["keyId"].as_str().map(str::to_string));
        }
    }
    let unrecorded = apps
        .iter()
        .flat_map(|a| a.passwords.iter())
        .filter(|p| !recorded.contains(&p.key_id))
        .map(|p| p.key_id.clone())
        .collect();
    (apps.len(), unrecorded)
}

/// How the operator was installed.
#[derive(Clone, Copy, Debug)]
enum Install {
    Helm,
    Kustomize,
}

/// The README's removal order: Applications first while the operator runs (their
/// finalizers delete the Entra applications), then the samples (strategy, provider), then
/// the operator (`helm uninstall` or `kubectl delete -k config/default`), then the CRDs.
async fn remove_everything(env: &Env, how: Install) {
    kubectl(env, &["delete", "applications", "--all", "-A", "--timeout=120s"]);
    kubectl(
        env,
        &[
            "delete",
            "-k",
            "config/samples",
            "--ignore-not-found",
            "--timeout=120s",
        ],
    );
    match how {
        Install::Helm => {
            helm(env, &["uninstall", RELEASE, "--namespace", NS, "--wait"]);
        }
        Install::Kustomize => {
            kubectl(
                env,
                &[
                    "delete",
                    "-k",
                    "config/default",
                    "--ignore-not-found",
                    "--timeout=120s",
                ],
            );
        }
    }
    kubectl(
        env,
        &[
            "delete",
            "-k",
            "config/crd",
            "--ignore-not-found",
            "--timeout=60s",
        ],
    );
    kubectl(
        env,
        &["delete", "namespace", NS, "--ignore-not-found", "--timeout=120s"],
    );
    wait_for("every pod to go", TIMEOUT, || {
        let pods = get_json(env, &["pods", "-A"])?;
        pods["items"].as_array()?.is_empty().then_some(())
    })
    .await;
}

// ---- the running container -----------------------------------------------------------

fn operator_pods(env: &Env) -> Vec<Value> {
    get_json(
        env,
        &["pods", "-n", NS, "-l", "app.kubernetes.io/name=dcr-operator"],
    )
    .and_then(|v| v["items"].as_array().cloned())
    .unwrap_or_default()
}

fn is_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null() && condition(pod, "Ready").as_deref() == Some("True")
}

/// The host pid of the operator process in the pod with this UID (found through its
/// cgroup, which names the pod).
fn container_pid(pod_uid: &str) -> Option<u32> {
    let needle = format!("pod{pod_uid}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cgroup = std::fs::read_to_string(e.path().join("cgroup")).ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let argv0 = cmdline.split(|b| *b == 0).next()?;
        (cgroup.contains(&needle) && String::from_utf8_lossy(argv0).ends_with("dcr-operator")).then_some(pid)
    })
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Non-root UID, no capabilities, seccomp filter, no new privileges, read-only root.
fn assert_hardened(pid: u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert_eq!(
        status_field(&status, "Uid"),
        "65532 65532 65532 65532",
        "{status}"
    );
    assert_eq!(
        status_field(&status, "Gid"),
        "65532 65532 65532 65532",
        "{status}"
    );
    for cap in ["CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&status, cap), "0000000000000000", "{cap}: {status}");
    }
    // 2 = SECCOMP_MODE_FILTER: the runtime's default profile is loaded.
    assert_eq!(status_field(&status, "Seccomp"), "2", "{status}");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1", "{status}");
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let root = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .expect("a root mount");
    let opts = root.split(' ').nth(5).unwrap_or_default();
    assert!(
        opts.split(',').any(|o| o == "ro"),
        "root filesystem not read-only: {root}"
    );
}

async fn assert_pod_runs_from_the_image_hardened(env: &Env) {
    let pod = wait_for("a Ready operator pod", TIMEOUT, || {
        operator_pods(env).into_iter().find(is_ready)
    })
    .await;
    let image = pod["spec"]["containers"][0]["image"].as_str().unwrap_or_default();
    assert_eq!(image, image_reference());
    assert!(pod["spec"]["hostNetwork"].is_null() || pod["spec"]["hostNetwork"] == false);
    let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
    assert!(ip.starts_with("10.244.0."), "pod IP {ip} not on the pod network");
    let uid = pod["metadata"]["uid"].as_str().expect("uid");
    let pid = container_pid(uid).expect("the operator's process on the host");
    assert_hardened(pid);
}

/// `kubectl logs` shows the operator's log, and `/metrics` answers at `metrics_path`
/// (an apiserver proxy path: the apiserver reaches the pod over the pod network, as a
/// scraper in the cluster would).
fn assert_logs_and_metrics(env: &Env, deployment: &str, metrics_path: &str) {
    let logs = kubectl(env, &["logs", "-n", NS, &format!("deployment/{deployment}")]);
    assert!(logs.contains("acquired leadership"), "kubectl logs: {logs}");
    let metrics = kubectl(env, &["get", "--raw", metrics_path]);
    let ready = format!("dcr_application_ready{{namespace=\"{SAMPLE_NS}\",name=\"{SAMPLE_APP}\"}} 1");
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("dcr_application_ready") && l.contains(SAMPLE_APP) && l.ends_with(" 1")),
        "no `{ready}` in /metrics:\n{metrics}"
    );
}

// ---- the tests -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_the_image_hardened_and_reconciles_the_samples() {
    let Some(env) = env().await else { return };
    let _serial = SERIAL.lock().await;
    let t0 = Instant::now();
    let installed = helm_install(env, &[]);
    assert_pod_runs_from_the_image_hardened(env).await;
    apply_samples(env);
    let ready = wait_samples_ready(env).await;
    assert_secret_gets_token(env).await;
    // Through the chart's Service.
    let metrics = format!("/api/v1/namespaces/{NS}/services/dcr-operator-metrics:metrics/proxy/metrics");
    assert_logs_and_metrics(env, RELEASE, &metrics);
    assert_eq!(
        provider_side(env),
        (1, vec![]),
        "one Entra application, every password recorded"
    );
    remove_everything(env, Install::Helm).await;
    assert_eq!(
        provider_side(env).0,
        0,
        "the Application's deletion removed its Entra application"
    );
    eprintln!(
        "helm install: {:.1?} to a Ready pod, samples Ready {:.1?} later; whole test {:.1?}",
        installed,
        ready,
        t0.elapsed()
    );
}

/// The emulator's CA for a kustomize install: a ConfigMap, and a patch mounting it and
/// passing `--extra-ca-file` (what the chart's `extraCA` value renders).
fn patch_in_extra_ca(env: &Env) {
    create_ca_configmap(env);
    let patch = json!([
        {"op": "add", "path": "/spec/template/spec/volumes", "value": [
            {"name": "extra-ca", "configMap": {"name": CA_CONFIGMAP}}
        ]},
        {"op": "add", "path": "/spec/template/spec/containers/0/volumeMounts", "value": [
            {"name": "extra-ca", "mountPath": "/etc/dcr-operator/extra-ca", "readOnly": true}
        ]},
        {"op": "add", "path": "/spec/template/spec/containers/0/args/-",
         "value": "--extra-ca-file=/etc/dcr-operator/extra-ca/ca.crt"},
    ])
    .to_string();
    kubectl(
        env,
        &[
            "patch",
            "deployment",
            "dcr-operator",
            "-n",
            NS,
            "--type=json",
            "-p",
            &patch,
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kustomize_install_gives_the_same_result() {
    let Some(env) = env().await else { return };
    let _serial = SERIAL.lock().await;
    let t0 = Instant::now();
    // README "Install"; --validate=false: kubectl's client-side schema check against a
    // server older than 1.25 does not know the CRDs' x-kubernetes-validations.
    kubectl(env, &["apply", "--validate=false", "-k", "config/default"]);
    kubectl(
        env,
        &[
            "rollout",
            "status",
            "deployment/dcr-operator",
            "-n",
            NS,
            "--timeout=180s",
        ],
    );
    let installed = t0.elapsed();
    patch_in_extra_ca(env);
    kubectl(
        env,
        &[
            "rollout",
            "status",
            "deployment/dcr-operator",
            "-n",
            NS,
            "--timeout=180s",
        ],
    );
    assert_pod_runs_from_the_image_hardened(env).await;
    apply_samples(env);
    let ready = wait_samples_ready(env).await;
    assert_secret_gets_token(env).await;
    // config/default has no metrics Service: the pod's port, through the apiserver.
    let pod = operator_pods(env)
        .into_iter()
        .find(is_ready)
        .expect("a Ready pod");
    let name = pod["metadata"]["name"].as_str().expect("name");
    let metrics = format!("/api/v1/namespaces/{NS}/pods/{name}:8080/proxy/metrics");
    assert_logs_and_metrics(env, "dcr-operator", &metrics);
    assert_eq!(
        provider_side(env),
        (1, vec![]),
        "one Entra application, every password recorded"
    );
    remove_everything(env, Install::Kustomize).await;
    assert_eq!(
        provider_side(env).0,
        0,
        "the Application's deletion removed its Entra application"
    );
    eprintln!(
        "kustomize install: {installed:.1?} to a Ready pod, samples Ready {ready:.1?} after the CA patch; whole test {:.1?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_uninstall_keeps_crds_and_applications() {
    let Some(env) = env().await else { return };
    let _serial = SERIAL.lock().await;
    let t0 = Instant::now();
    helm_install(env, &[]);
    apply_samples(env);
    wait_samples_ready(env).await;
    helm(env, &["uninstall", RELEASE, "--namespace", NS, "--wait"]);
    wait_for("the operator's pods to go", TIMEOUT, || {
        operator_pods(env).is_empty().then_some(())
    })
    .await;
    // As Helm does: CRDs from the chart's crds/ stay, and with them every custom resource.
    for crd in ["applications", "authstrategies", "dcrproviders"] {
        assert!(
            get_json(env, &["crd", &format!("{crd}.dcr-operator.io")]).is_some(),
            "CRD {crd} gone"
        );
    }
    let app = get_json(env, &["application", SAMPLE_APP, "-n", SAMPLE_NS]).expect("the Application stays");
    let finalizers = app["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !finalizers.is_empty(),
        "the Application carries the operator's finalizer: {app}"
    );
    assert_eq!(provider_side(env).0, 1, "its Entra application stays too");
    // Without the operator the finalizer holds a deleted Application: the README's order
    // deletes Applications while the operator runs. Install it again and follow it.
    helm_install(env, &[]);
    wait_ready(env, "application", SAMPLE_APP, Some(SAMPLE_NS)).await;
    remove_everything(env, Install::Helm).await;
    assert_eq!(provider_side(env).0, 0, "no Entra application left");
    for crd in ["applications", "authstrategies", "dcrproviders"] {
        assert!(
            get_json(env, &["crd", &format!("{crd}.dcr-operator.io")]).is_none(),
            "CRD {crd} left"
        );
    }
    eprintln!("helm uninstall and the removal order: {:.1?}", t0.elapsed());
}

// ---- leader election between pods ----------------------------------------------------

fn lease_holder(env: &Env) -> Option<String> {
    let lease = get_json(env, &["lease", "dcr-operator", "-n", NS])?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// Follows every operator pod's log (`kubectl logs -f --timestamps`) into a file per pod,
/// from the pod's first line, until stopped: old pods' logs survive their deletion.
struct LogFollower {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(String, String)>>>,
}

impl LogFollower {
    fn start(env: &'static Env) -> LogFollower {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let dir = env.cp.state_dir().join("pod-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let thread = std::thread::spawn(move || {
            let mut followers: std::collections::BTreeMap<String, std::process::Child> = Default::default();
            let mut done: BTreeSet<String> = BTreeSet::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for pod in operator_pods(env) {
                    let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
                    let started = pod["status"]["containerStatuses"][0]["state"]["running"].is_object()
                        || pod["status"]["containerStatuses"][0]["state"]["terminated"].is_object();
                    if name.is_empty() || !started || done.contains(&name) {
                        continue;
                    }
                    if let Some(child) = followers.get_mut(&name) {
                        match child.try_wait().ok().flatten() {
                            None => continue, // still following
                            // The container ended and its log is complete.
                            Some(status) if status.success() => {
                                done.insert(name);
                                continue;
                            }
                            Some(_) => {} // an error (e.g. not started yet): follow again
                        }
                    }
                    let file = std::fs::File::create(dir.join(&name)).expect("log file");
                    let child = Command::new(tool("kubectl"))
                        .args(["logs", "-f", "--timestamps", "-n", NS, &name])
                        .env("KUBECONFIG", env.cp.kubeconfig_path())
                        .stdout(file)
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("kubectl logs -f");
                    followers.insert(name, child);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let mut logs = Vec::new();
            for (name, mut child) in followers {
                let _ = child.kill();
                let _ = child.wait();
                logs.push((
                    name.clone(),
                    std::fs::read_to_string(dir.join(&name)).unwrap_or_default(),
                ));
            }
            logs
        });
        LogFollower {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops following; each pod's log.
    fn stop(mut self) -> Vec<(String, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().expect("once").join().expect("follower thread")
    }
}

/// Each pod's leadership as (from, to) by the log timestamps: from "acquired leadership"
/// to "released the leader-election lease", or to its last line if it never released.
fn leadership_intervals(logs: &[(String, String)]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (pod, log) in logs {
        let mut from: Option<String> = None;
        let mut last = String::new();
        for line in log.lines() {
            let Some((ts, text)) = line.split_once(' ') else {
                continue;
            };
            last = ts.to_string();
            if text.contains("acquired leadership") {
                from = Some(ts.to_string());
            } else if text.contains("released the leader-election lease") {
                if let Some(f) = from.take() {
                    out.push((pod.clone(), f, ts.to_string()));
                }
            }
        }
        if let Some(f) = from {
            out.push((pod.clone(), f, last));
        }
    }
    out
}

fn ts(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("log timestamp {s:?}: {e}"))
        .with_timezone(&chrono::Utc)
}

fn create_application(env: &Env, name: &str) {
    let app = json!({
        "apiVersion": "dcr-operator.io/v1alpha1", "kind": "Application",
        "metadata": {"name": name, "namespace": SAMPLE_NS},
        "spec": {
            "authStrategyRef": {"name": "entra-client-credentials"},
            "displayName": name,
            "secret": {"name": format!("{name}-credentials")},
        }
    })
    .to_string();
    run(env, "kubectl", &["apply", "-f", "-"], Some(&app)).unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_hand_over_and_roll_with_one_reconciler_at_a_time() {
    let Some(env) = env().await else { return };
    let _serial = SERIAL.lock().await;
    let t0 = Instant::now();
    helm_install(env, &["--set", "replicaCount=2"]);
    apply_samples(env);
    wait_samples_ready(env).await;
    let follower = LogFollower::start(env);

    // Deleting the leader pod: the standby takes over and reconciles within the lease
    // duration (the leader releases the Lease on SIGTERM).
    let leader = wait_for("a lease holder", TIMEOUT, || lease_holder(env)).await;
    let pods: Vec<String> = operator_pods(env)
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    assert!(
        pods.contains(&leader),
        "the holder {leader} is one of the pods {pods:?}"
    );
    let log_dir = env.cp.state_dir().join("pod-logs");
    wait_for("the log followers to attach", TIMEOUT, || {
        pods.iter()
            .all(|p| std::fs::read_to_string(log_dir.join(p)).is_ok_and(|l| !l.is_empty()))
            .then_some(())
    })
    .await;
    let deleted = Instant::now();
    kubectl(env, &["delete", "pod", &leader, "-n", NS, "--wait=false"]);
    create_application(env, "after-handover");
    let new_leader = wait_for("another lease holder", LEASE_DURATION * 2, || {
        lease_holder(env).filter(|h| *h != leader)
    })
    .await;
    let handover = deleted.elapsed();
    wait_ready(env, "application", "after-handover", Some(SAMPLE_NS)).await;
    let resumed = deleted.elapsed();
    // The standby or the replacement pod, whichever retried first.
    assert!(operator_pods(env)
        .iter()
        .any(|p| p["metadata"]["name"] == new_leader.as_str()));
    assert!(
        resumed < LEASE_DURATION,
        "reconciling resumed {resumed:?} after deleting the leader (lease duration {LEASE_DURATION:?})"
    );
    wait_for("two Ready replicas again", TIMEOUT, || {
        (operator_pods(env).iter().filter(|p| is_ready(p)).count() == 2).then_some(())
    })
    .await;

    // `helm upgrade` with a changed value rolls both pods.
    let before: BTreeSet<String> = operator_pods(env)
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let upgrade = Instant::now();
    helm(
        env,
        &[
            "upgrade",
            RELEASE,
            CHART,
            "--namespace",
            NS,
            "--reuse-values",
            "--set",
            "operator.logLevel=debug",
            "--wait",
            "--timeout",
            "3m",
        ],
    );
    wait_for("the old pods to go", TIMEOUT, || {
        let now: BTreeSet<String> = operator_pods(env)
            .iter()
            .filter(|p| is_ready(p))
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        (now.len() == 2 && now.is_disjoint(&before) && operator_pods(env).len() == 2).then_some(())
    })
    .await;
    let rolled = upgrade.elapsed();
    create_application(env, "after-upgrade");
    wait_ready(env, "application", "after-upgrade", Some(SAMPLE_NS)).await;
    let logs = follower.stop();

    // Never two reconcilers at once: the pods' leadership intervals do not overlap.
    let mut intervals = leadership_intervals(&logs);
    intervals.sort_by_key(|a| ts(&a.1));
    assert!(
        intervals.len() >= 3,
        "leaderships seen: {intervals:?} (logs: {logs:?})"
    );
    for w in intervals.windows(2) {
        assert!(
            ts(&w[0].2) <= ts(&w[1].1),
            "{} led until {} but {} from {}",
            w[0].0,
            w[0].2,
            w[1].0,
            w[1].1
        );
    }
    // No duplicate Entra application, no password that a Secret does not record.
    assert_eq!(
        provider_side(env),
        (3, vec![]),
        "three Applications, three Entra applications"
    );
    remove_everything(env, Install::Helm).await;
    eprintln!(
        "leader election: handover {handover:.1?}, reconciling resumed {resumed:.1?} after the delete; \
         helm upgrade rolled in {rolled:.1?}; whole test {:.1?}",
        t0.elapsed()
    );
}
