//! No stray processes: a control plane held in a `static` (never dropped) is cleaned up at
//! process exit, and one whose owner is killed by SIGKILL dies with it (PDEATHSIG) and its
//! state directory is swept by the next start.
//!
//! Each case runs the owner in a child process: this test binary re-executed with
//! `CHILD_ENV` set, running one of the ignored `child_*` tests (which do nothing without it).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sandbox::controlplane::{ControlPlane, ControlPlaneOptions};

const CHILD_ENV: &str = "DCR_CONTROLPLANE_CLEANUP_CHILD";

fn alive(pid: u32) -> bool {
    // Orphans killed by PDEATHSIG are reaped by pid 1 (or not at all in some
    // containers): a zombie counts as dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a control plane, prints `PIDS <pid> <pid> <pid>` and `DIR <state dir>`.
async fn start_and_report() -> ControlPlane {
    let cp = ControlPlane::start(ControlPlaneOptions::default())
        .await
        .expect("start");
    let pids: Vec<String> = cp.pids().iter().map(u32::to_string).collect();
    println!("PIDS {}", pids.join(" "));
    println!("DIR {}", cp.state_dir().display());
    cp
}

#[tokio::test]
#[ignore = "run in a child process by a_control_plane_in_a_static_is_cleaned_up_at_exit"]
async fn child_exits_with_a_static_control_plane() {
    if std::env::var(CHILD_ENV).as_deref() != Ok("static") {
        return;
    }
    static CP: OnceLock<ControlPlane> = OnceLock::new();
    let cp = start_and_report().await;
    CP.set(cp).unwrap();
    // Returns: libtest exits the process without dropping CP.
}

#[tokio::test]
#[ignore = "run in a child process by a_killed_owner_takes_its_control_plane_with_it"]
async fn child_is_killed_while_holding_a_control_plane() {
    if std::env::var(CHILD_ENV).as_deref() != Ok("killed") {
        return;
    }
    let _cp = start_and_report().await;
    println!("READY");
    loop {
        std::thread::park(); // until SIGKILL
    }
}

struct Reported {
    child: std::process::Child,
    pids: Vec<u32>,
    dir: PathBuf,
}

/// Kills the child test process if the parent test fails before it is done with it.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run_child(mode: &str, test: &str) -> Reported {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([test, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut guard = KillOnDrop(Some(child));
    let mut lines = BufReader::new(stdout).lines();
    let (mut pids, mut dir) = (Vec::new(), None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        // libtest may print "test <name> ... " before the test's own first line.
        if let Some(i) = line.find("PIDS ") {
            pids = line[i + 5..]
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect();
        } else if let Some(i) = line.find("DIR ") {
            dir = Some(PathBuf::from(line[i + 4..].trim()));
            break;
        }
    }
    // Keep draining in the background so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    assert_eq!(pids.len(), 3, "the child reported its processes");
    Reported {
        child: guard.0.take().unwrap(),
        pids,
        dir: dir.expect("the child reported its state dir"),
    }
}

#[test]
fn a_control_plane_in_a_static_is_cleaned_up_at_exit() {
    let mut r = run_child("static", "child_exits_with_a_static_control_plane");
    let status = r.child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
    // The atexit hook killed and reaped them before the child exited.
    for pid in &r.pids {
        assert!(!alive(*pid), "pid {pid} outlived its owner's exit");
    }
    assert!(!r.dir.exists(), "{} outlived its owner's exit", r.dir.display());
}

#[test]
fn a_killed_owner_takes_its_control_plane_with_it() {
    let mut r = run_child("killed", "child_is_killed_while_holding_a_control_plane");
    r.child.kill().unwrap(); // SIGKILL: no destructor, no atexit
    r.child.wait().unwrap();
    let pids = r.pids.clone();
    wait_until(
        "etcd, kube-apiserver and kube-controller-manager to die with their owner",
        Duration::from_secs(10),
        || pids.iter().all(|&p| !alive(p)),
    );
    assert!(r.dir.exists(), "nothing could remove it yet");

    // The next start sweeps state directories of owners that are gone.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cp = rt
        .block_on(ControlPlane::start(ControlPlaneOptions::default()))
        .expect("start");
    assert!(!r.dir.exists(), "{} was not swept", r.dir.display());
    drop(cp);
}
