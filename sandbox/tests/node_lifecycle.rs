//! The opt-in node: containerd, kubelet, kube-scheduler and kube-proxy beside the control
//! plane run a pod on the pod network that reaches the apiserver through the `kubernetes`
//! Service; stopping the node, or killing its owner, leaves nothing behind on the host.
//!
//! Needs root and `sandbox/scripts/build-node.sh` (`make node`). The killed-owner case runs
//! the owner in a child process: this test binary re-executed with `CHILD_ENV` set.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandbox::controlplane::node::{janitor, NodeOptions, PAUSE_IMAGE};
use sandbox::controlplane::{ControlPlane, ControlPlaneOptions};
use serde_json::{json, Value};

const CHILD_ENV: &str = "DCR_NODE_LIFECYCLE_CHILD";
const TIMEOUT: Duration = Duration::from_secs(120);

/// One node per machine: the two cases take turns (and compare host state around them).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn http(cp: &ControlPlane) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cp.ca_pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn start_node() -> ControlPlane {
    ControlPlane::start(ControlPlaneOptions {
        node: Some(NodeOptions::default()),
        ..Default::default()
    })
    .await
    .expect("start with a node (build it with `make node`)")
}

/// A pod running the pause image whose readiness needs nothing; with its ServiceAccount
/// token mounted (a tmpfs the teardown must unmount). Returns its IP once Running.
async fn run_pod(cp: &ControlPlane, name: &str) -> String {
    let http = http(cp);
    let pods = format!("{}/api/v1/namespaces/default/pods", cp.server_url());
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "pause", "image": PAUSE_IMAGE, "imagePullPolicy": "Never"}],
            "terminationGracePeriodSeconds": 0,
        }
    });
    let deadline = Instant::now() + TIMEOUT;
    // ServiceAccount admission refuses pods until the token controller made the token.
    loop {
        let resp = http
            .post(&pods)
            .bearer_auth(cp.admin_token())
            .json(&pod)
            .send()
            .await
            .unwrap();
        if resp.status().is_success() {
            break;
        }
        let body = resp.text().await.unwrap_or_default();
        assert!(Instant::now() < deadline, "creating the pod: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loop {
        let p: Value = http
            .get(format!("{pods}/{name}"))
            .bearer_auth(cp.admin_token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if p["status"]["phase"] == "Running" {
            return p["status"]["podIP"].as_str().unwrap_or_default().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "pod not Running within {TIMEOUT:?}: {}",
            p["status"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_clean(dir: &std::path::Path, before: &std::collections::BTreeMap<String, String>) {
    let left = janitor::leftovers(dir);
    assert!(left.is_empty(), "the node left behind: {left:#?}");
    let after = janitor::host_state();
    let changed: Vec<_> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {v} -> {:?}", after.get(k)))
        .collect();
    assert!(changed.is_empty(), "host state not restored: {changed:#?}");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[tokio::test]
async fn a_node_runs_a_pod_on_the_pod_network_and_leaves_nothing_behind() {
    let _serial = SERIAL.lock().await;
    let before = janitor::host_state();
    let t0 = Instant::now();
    let cp = start_node().await;
    let t = cp.node_timings().expect("node timings");
    eprintln!(
        "control plane + node Ready in {:.1?} (containerd and images {:.1?}, imports {:.1?}, kubelet to Ready {:.1?})",
        t0.elapsed(),
        t.runtime_and_images,
        t.images,
        t.node_ready
    );
    let dir = cp.node_dir().unwrap();
    let ip = run_pod(&cp, "pause").await;
    assert!(
        ip.starts_with("10.244.0."),
        "pod IP {ip:?} is not on the pod network"
    );

    // The `kubernetes` Service points at the host's own address, which pods can reach.
    let http = http(&cp);
    let ep: Value = http
        .get(format!(
            "{}/api/v1/namespaces/default/endpoints/kubernetes",
            cp.server_url()
        ))
        .bearer_auth(cp.admin_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let host = cp
        .server_url()
        .trim_start_matches("https://")
        .split(':')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], host.as_str(), "{ep}");
    assert!(
        !host.starts_with("127."),
        "node mode serves on the host's address, not {host}"
    );

    let t_stop = Instant::now();
    cp.stop();
    eprintln!("node teardown took {:.1?}", t_stop.elapsed());
    assert_clean(&dir, &before);
}

#[tokio::test]
#[ignore = "run in a child process by a_killed_owner_leaves_a_node_the_next_start_tears_down"]
async fn child_is_killed_while_holding_a_node() {
    if std::env::var(CHILD_ENV).as_deref() != Ok("killed") {
        return;
    }
    let cp = start_node().await;
    run_pod(&cp, "orphan").await;
    println!("DIR {}", cp.node_dir().unwrap().display());
    println!("READY");
    loop {
        std::thread::park(); // until SIGKILL
    }
}

#[tokio::test]
async fn a_killed_owner_leaves_a_node_the_next_start_tears_down() {
    let _serial = SERIAL.lock().await;
    let before = janitor::host_state();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_is_killed_while_holding_a_node",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, "killed")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut dir = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(d) = line.strip_prefix("DIR ") {
            dir = Some(PathBuf::from(d));
        }
        if line == "READY" {
            break;
        }
    }
    let dir = dir.expect("the child reported its node (see its output above)");
    child.kill().unwrap();
    child.wait().unwrap();
    // Containers, shims and mounts outlive a SIGKILLed owner ...
    assert!(
        !janitor::leftovers(&dir).is_empty(),
        "expected the killed owner's node to leave something for the sweep"
    );
    // ... until the next control-plane start (any, loopback-only included) sweeps them.
    let cp = ControlPlane::start(ControlPlaneOptions::default())
        .await
        .expect("start");
    cp.stop();
    assert_clean(&dir, &before);
}
