//! The operator under test: the real `dcr-operator` binary, started once per test binary
//! against the shared cluster, trusting the Graph emulator's test CA, logging at debug
//! level into a file that tests grep for leaked secrets. It dies with the test process.
#![allow(dead_code)]

use super::cluster::{cluster, wait_for, TIMEOUT};
use sandbox::graph::{EmulatorConfig, GraphEmulator};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use tokio::sync::OnceCell;

/// Name the operator under test registers applications under.
pub const CLUSTER_NAME: &str = "e2e";

pub struct Operator {
    pub log_path: PathBuf,
    pub ca_path: PathBuf,
    pub pid: u32,
}

impl Operator {
    /// Everything the operator logged so far.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

static OPERATOR: OnceCell<Operator> = OnceCell::const_new();
/// Keeps the emulator whose CA file the operator trusts; every emulator of this process
/// shares that CA.
static CA_HOLDER: OnceLock<PathBuf> = OnceLock::new();

/// The operator, started on first use.
pub async fn operator() -> &'static Operator {
    OPERATOR
        .get_or_init(|| async {
            let cluster = cluster().await;
            let ca_path = match CA_HOLDER.get() {
                Some(p) => p.clone(),
                None => {
                    let emu = GraphEmulator::start(EmulatorConfig::default())
                        .await
                        .expect("emulator");
                    let path = emu.ca_path().to_path_buf();
                    // The CA file outlives this emulator: it belongs to the process.
                    std::mem::forget(emu);
                    CA_HOLDER.get_or_init(|| path).clone()
                }
            };
            let dir = tempfile::Builder::new()
                .prefix("dcr-operator-e2e-")
                .tempdir()
                .expect("tempdir")
                .keep();
            let log_path = dir.join("operator.log");
            let pid = spawn(
                cluster.kubeconfig_path().to_path_buf(),
                ca_path.clone(),
                log_path.clone(),
            );
            let op = Operator {
                log_path,
                ca_path,
                pid,
            };
            wait_for("the operator to start its controllers", TIMEOUT, || {
                let logs = op.logs();
                async move {
                    if logs.contains("dcr-operator failed") {
                        Err(format!("operator exited: {logs}"))
                    } else {
                        Ok(logs.contains("dcr-operator starting").then_some(()))
                    }
                }
            })
            .await;
            eprintln!("operator pid {pid}, log {}", op.log_path.display());
            op
        })
        .await
}

/// Spawns the binary from a thread that lives as long as the process, so that
/// PR_SET_PDEATHSIG (which follows the spawning *thread*) kills it only when the test
/// process exits.
fn spawn(kubeconfig: PathBuf, ca: PathBuf, log: PathBuf) -> u32 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("dcr-operator-under-test".into())
        .spawn(move || {
            let log_file = std::fs::File::create(&log).expect("log file");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_dcr-operator"));
            cmd.arg("run")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .arg("--extra-ca-file")
                .arg(&ca)
                .args([
                    "--cluster-name",
                    CLUSTER_NAME,
                    "--resync-period",
                    "30s",
                    "--concurrency",
                    "8",
                ])
                .args(["--metrics-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0"])
                .args(["--activation-timeout", "30s"])
                .env(
                    "RUST_LOG",
                    "debug,dcr_operator=trace,hyper=info,h2=info,rustls=info,tower=info",
                )
                .env_remove("KUBECONFIG")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("log file"))
                .stderr(log_file);
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let mut child = cmd.spawn().expect("spawning dcr-operator");
            tx.send(child.id()).expect("reporting the pid");
            let _ = child.wait();
        })
        .expect("operator thread");
    rx.recv().expect("operator pid")
}
