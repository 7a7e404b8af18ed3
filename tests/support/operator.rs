//! The operator under test: the real `dcr-operator` binary, started once per test binary
//! against the shared cluster, trusting the Graph emulator's test CA, logging at debug
//! level into a file that tests grep for leaked secrets. It dies with the test process.
//! [`OperatorProcess`] is one a test starts, kills and restarts itself.
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

/// The CA file every Graph emulator of this process is signed by.
pub async fn emulator_ca_path() -> PathBuf {
    match CA_HOLDER.get() {
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
    }
}

/// The identity the shared operator runs as. On the local control plane: the
/// `dcr-system/dcr-operator` ServiceAccount's user, bound to exactly the ClusterRole in
/// config/rbac, so every end-to-end test also proves the shipped RBAC is enough (a missing
/// verb fails the tests with a 403 in the operator's log). On your own cluster: its
/// kubeconfig (the admin's).
pub async fn operator_kubeconfig() -> PathBuf {
    // Once per process: the kubeconfig file is written in place, so concurrent writers
    // could hand a half-written file to an operator that is starting.
    static KUBECONFIG: OnceCell<PathBuf> = OnceCell::const_new();
    KUBECONFIG.get_or_init(write_operator_kubeconfig).await.clone()
}

async fn write_operator_kubeconfig() -> PathBuf {
    let cluster = cluster().await;
    if !cluster.is_local() {
        return cluster.kubeconfig_path().to_path_buf();
    }
    let admin = cluster.client().await;
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let role =
        std::fs::read_to_string(repo.join("config/rbac/cluster_role.yaml")).expect("config/rbac ClusterRole");
    let labels = std::collections::BTreeMap::new();
    super::cluster::apply_cluster_role_yaml(&admin, &role, None, &labels)
        .await
        .expect("applying the ClusterRole");
    let subject = super::cluster::user_subject(&super::cluster::operator_user());
    super::cluster::bind_cluster_role(&admin, "dcr-operator", "dcr-operator", subject, &labels)
        .await
        .expect("binding the ClusterRole");
    let local = cluster.local().await.expect("local control plane");
    local
        .kubeconfig_for_user(&super::cluster::operator_user())
        .expect("the operator's kubeconfig")
}

/// The operator, started on first use.
pub async fn operator() -> &'static Operator {
    OPERATOR
        .get_or_init(|| async {
            let ca_path = emulator_ca_path().await;
            let dir = tempfile::Builder::new()
                .prefix("dcr-operator-e2e-")
                .tempdir()
                .expect("tempdir")
                .keep();
            let log_path = dir.join("operator.log");
            let (pid, _exited) = spawn(
                operator_kubeconfig().await,
                ca_path.clone(),
                log_path.clone(),
                vec![],
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
/// process exits. `extra_args` follow the defaults and replace `--resync-period` and
/// `--concurrency` when they set them. The
/// log is appended to. The receiver fires when the process has exited.
fn spawn(
    kubeconfig: PathBuf,
    ca: PathBuf,
    log: PathBuf,
    extra_args: Vec<String>,
) -> (u32, tokio::sync::oneshot::Receiver<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (exited_tx, exited_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("dcr-operator-under-test".into())
        .spawn(move || {
            let log_file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("log file");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_dcr-operator"));
            cmd.arg("run")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .arg("--extra-ca-file")
                .arg(&ca)
                .args(["--cluster-name", CLUSTER_NAME])
                .args(unless_given(&extra_args, "--resync-period", "30s"))
                .args(unless_given(&extra_args, "--concurrency", "8"))
                .args(["--metrics-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0"])
                .args(["--activation-timeout", "30s"])
                .args([
                    "--provider-secret-namespaces",
                    super::scenario::PROVIDER_SECRET_NAMESPACE,
                ])
                .args(&extra_args)
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
            let _ = exited_tx.send(());
        })
        .expect("operator thread");
    (rx.recv().expect("operator pid"), exited_rx)
}

/// `[flag, default]`, unless `extra_args` set the flag themselves (clap refuses a flag
/// given twice).
fn unless_given(extra_args: &[String], flag: &'static str, default: &'static str) -> Vec<&'static str> {
    if extra_args.iter().any(|a| a == flag) {
        Vec::new()
    } else {
        vec![flag, default]
    }
}

/// Occurrences of `needle` in the log at `path`.
fn count_in_log(path: &std::path::Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.matches(needle).count())
        .unwrap_or(0)
}

/// An operator process of one test's own, which the test may kill (SIGKILL, no chance to
/// clean up, like a node failure or an OOM kill) and start again, e.g. to stop it at a
/// step boundary. Every run appends to the same log. Only for test binaries that do not
/// use the shared [`operator()`]: two operators on one cluster would race each other.
pub struct OperatorProcess {
    kubeconfig: PathBuf,
    ca_path: PathBuf,
    extra_args: Vec<String>,
    /// Describes the running process (the log is shared by all runs); leaked per run, so
    /// it can be handed to a [`super::scenario::Scenario`].
    current: &'static Operator,
    exited: Option<tokio::sync::oneshot::Receiver<()>>,
    starts: usize,
}

impl OperatorProcess {
    /// Starts the operator with the shared operator's flags plus `extra_args` (e.g.
    /// `--namespaces`), trusting the CA file `ca_path`, and waits until it has started its
    /// controllers.
    pub async fn start(ca_path: &std::path::Path, extra_args: &[&str]) -> OperatorProcess {
        let kubeconfig = cluster().await.kubeconfig_path().to_path_buf();
        Self::start_with_kubeconfig(kubeconfig, ca_path, extra_args).await
    }

    /// [`OperatorProcess::start`] with the identity of `kubeconfig`, e.g. the operator's
    /// own from [`operator_kubeconfig`] (config/rbac's ClusterRole only).
    pub async fn start_with_kubeconfig(
        kubeconfig: PathBuf,
        ca_path: &std::path::Path,
        extra_args: &[&str],
    ) -> OperatorProcess {
        let dir = tempfile::Builder::new()
            .prefix("dcr-operator-process-")
            .tempdir()
            .expect("tempdir")
            .keep();
        let log_path = dir.join("operator.log");
        let mut p = OperatorProcess {
            kubeconfig,
            ca_path: ca_path.to_path_buf(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            current: Box::leak(Box::new(Operator {
                log_path,
                ca_path: ca_path.to_path_buf(),
                pid: 0,
            })),
            exited: None,
            starts: 0,
        };
        p.launch().await;
        p
    }

    async fn launch(&mut self) {
        assert!(self.exited.is_none(), "the operator is running already");
        let log_path = self.current.log_path.clone();
        let (pid, exited) = spawn(
            self.kubeconfig.clone(),
            self.ca_path.clone(),
            log_path.clone(),
            self.extra_args.clone(),
        );
        self.starts += 1;
        self.exited = Some(exited);
        self.current = Box::leak(Box::new(Operator {
            log_path: log_path.clone(),
            ca_path: self.ca_path.clone(),
            pid,
        }));
        let starts = self.starts;
        wait_for(
            format!("the operator (run {starts}) to start its controllers"),
            TIMEOUT,
            || {
                let started = count_in_log(&log_path, "dcr-operator starting");
                let failed = count_in_log(&log_path, "dcr-operator failed");
                let logs = self.current.logs();
                async move {
                    if failed > 0 {
                        Err(format!("operator exited: {logs}"))
                    } else {
                        Ok((started >= starts).then_some(()))
                    }
                }
            },
        )
        .await;
        eprintln!("operator run {starts}: pid {pid}, log {}", log_path.display());
    }

    /// The running process (pid of the current run; the log of all runs).
    pub fn operator(&self) -> &'static Operator {
        self.current
    }

    pub fn pid(&self) -> u32 {
        self.current.pid
    }

    /// Everything every run logged so far.
    pub fn logs(&self) -> String {
        self.current.logs()
    }

    /// SIGKILLs the process and waits until it is gone.
    pub async fn kill(&mut self) {
        let Some(mut exited) = self.exited.take() else {
            return;
        };
        if exited.try_recv().is_err() {
            // SAFETY: kill(2) on a child the spawning thread has not reported reaped, so
            // (but for a reap in between, when the signal finds nobody) the pid is ours.
            let rc = unsafe { libc::kill(self.current.pid as libc::pid_t, libc::SIGKILL) };
            let err = std::io::Error::last_os_error();
            assert!(
                rc == 0 || err.raw_os_error() == Some(libc::ESRCH),
                "kill {}: {err}",
                self.current.pid
            );
            tokio::time::timeout(TIMEOUT, exited)
                .await
                .expect("the operator exits after SIGKILL")
                .ok();
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.current.log_path)
            .expect("log file");
        use std::io::Write;
        let _ = writeln!(f, "---- test: SIGKILLed pid {} ----", self.current.pid);
    }

    /// SIGTERMs the process (a graceful stop, as the kubelet asks for one) and waits until
    /// it is gone.
    pub async fn terminate(&mut self) {
        let Some(mut exited) = self.exited.take() else {
            return;
        };
        if exited.try_recv().is_err() {
            // SAFETY: as in `kill`.
            unsafe {
                libc::kill(self.current.pid as libc::pid_t, libc::SIGTERM);
            }
            if tokio::time::timeout(TIMEOUT, &mut exited).await.is_err() {
                // SAFETY: as in `kill`; no process of this test outlives it.
                unsafe {
                    libc::kill(self.current.pid as libc::pid_t, libc::SIGKILL);
                }
                panic!("the operator did not exit within {TIMEOUT:?} of SIGTERM");
            }
        }
    }

    /// Starts the operator again (after [`OperatorProcess::kill`]) with the same flags.
    pub async fn restart(&mut self) {
        self.launch().await;
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if self.exited.is_some() {
            // SAFETY: as in `kill`; nobody waits for it here, the spawning thread reaps it.
            unsafe {
                libc::kill(self.current.pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}
