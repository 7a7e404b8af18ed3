//! A real node beside the local control plane (opt-in, [`super::ControlPlaneOptions::node`]):
//! containerd from a private configuration, a CNI bridge, kubelet, kube-scheduler and
//! kube-proxy v1.20.2 (iptables mode), with the pause image and the caller's images
//! imported into containerd so nothing is pulled.
//!
//! The binaries and the pause image come from `sandbox/scripts/build-node.sh`, cached in
//! `${DCR_CACHE_DIR:-$HOME/.cache/dcr-operator}/node/v1.20.2`. Facts behind the settings:
//! `shared/local-node.md`. Teardown (also after the test process was killed): see
//! [`janitor`].

mod config;
pub mod janitor;

pub use config::PAUSE_IMAGE;

use std::ffi::OsString;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::{self, Proc};
use super::{Error, Result};

/// Overrides the directory holding `kubelet`, `kube-scheduler`, `kube-proxy`, `pause.oci.tar`.
pub const NODE_BIN_DIR_ENV: &str = "DCR_NODE_BIN_DIR";
/// Overrides the host address the apiserver and kubelet use (default: the source address
/// of the default route).
pub const NODE_ADDRESS_ENV: &str = "DCR_NODE_ADDRESS";
/// The node's name.
pub const NODE_NAME: &str = "dcr-node";

const READY_TIMEOUT: Duration = Duration::from_secs(120);
const LOCK_WAIT: Duration = Duration::from_secs(15 * 60);
const IMPORT_TIMEOUT: Duration = Duration::from_secs(120);

/// An OCI archive to import into the node's containerd under `reference`.
#[derive(Clone, Debug)]
pub struct ImageArchive {
    pub archive: PathBuf,
    pub reference: String,
}

/// Options of the node.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// Default: `$DCR_NODE_BIN_DIR`, else the build script's cache directory.
    pub bin_dir: Option<PathBuf>,
    /// Images to import (the pause image is always imported).
    pub images: Vec<ImageArchive>,
}

/// How long the node's steps took.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeTimings {
    /// containerd answering and every image imported.
    pub runtime_and_images: Duration,
    /// Only the image imports.
    pub images: Duration,
    /// From the kubelet's start until the Node is Ready.
    pub node_ready: Duration,
}

/// The node's binaries.
#[derive(Clone, Debug)]
struct Binaries {
    kubelet: PathBuf,
    scheduler: PathBuf,
    proxy: PathBuf,
    pause: PathBuf,
    containerd: PathBuf,
    ctr: PathBuf,
}

/// `${DCR_CACHE_DIR:-$HOME/.cache/dcr-operator}/node/v1.20.2`.
pub fn default_bin_dir() -> PathBuf {
    super::cache_root().join("node").join(super::KUBERNETES_VERSION)
}

fn find_binaries(opts: &NodeOptions) -> Result<Binaries> {
    let dir = opts
        .bin_dir
        .clone()
        .or_else(|| {
            std::env::var_os(NODE_BIN_DIR_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(default_bin_dir);
    let need = |binary: &'static str, p: PathBuf| -> Result<PathBuf> {
        if p.is_file() {
            Ok(p)
        } else {
            Err(Error::BinaryNotFound {
                binary,
                looked: p.display().to_string(),
            })
        }
    };
    Ok(Binaries {
        kubelet: need("kubelet", dir.join("kubelet"))?,
        scheduler: need("kube-scheduler", dir.join("kube-scheduler"))?,
        proxy: need("kube-proxy", dir.join("kube-proxy"))?,
        pause: need("pause.oci.tar", dir.join("pause.oci.tar"))?,
        containerd: need("containerd", PathBuf::from("/usr/bin/containerd"))?,
        ctr: need("ctr", PathBuf::from("/usr/bin/ctr"))?,
    })
}

/// The host's own (non-loopback) IPv4 address: pods reach the apiserver and the test
/// stand-ins there (the kubelet's KUBE-FIREWALL drops pod traffic to 127.0.0.0/8).
pub fn host_address() -> Result<Ipv4Addr> {
    if let Ok(v) = std::env::var(NODE_ADDRESS_ENV) {
        return v
            .parse()
            .map_err(|e| Error::Node(format!("{NODE_ADDRESS_ENV}={v:?}: {e}")));
    }
    // Connecting a UDP socket sends nothing; it only picks the route's source address.
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(Error::io("binding a UDP socket"))?;
    sock.connect("192.0.2.255:9")
        .or_else(|_| sock.connect("203.0.113.1:9"))
        .map_err(Error::io(format!(
            "finding the host's address (no default route?); set {NODE_ADDRESS_ENV}"
        )))?;
    match sock
        .local_addr()
        .map_err(Error::io("reading a socket address"))?
        .ip()
    {
        std::net::IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Ok(ip),
        other => Err(Error::Node(format!(
            "the host's route source address {other} is not usable; set {NODE_ADDRESS_ENV}"
        ))),
    }
}

/// What the node needs from its control plane.
pub(crate) struct NodeContext<'a> {
    pub opts: &'a NodeOptions,
    pub dir: &'a Path,
    pub log_dir: &'a Path,
    pub address: Ipv4Addr,
    pub server_url: &'a str,
    pub ca_file: PathBuf,
    pub admin_token: &'a str,
    pub http: reqwest::Client,
    pub kubelet_kubeconfig: PathBuf,
    pub scheduler_kubeconfig: PathBuf,
    pub proxy_kubeconfig: PathBuf,
}

/// A running node. Dropping it tears it down.
pub(crate) struct Node {
    _lock: janitor::NodeLock,
    record: janitor::Record,
    procs: Vec<Proc>,
    pub timings: NodeTimings,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("dir", &self.record.dir)
            .field("pids", &self.pids())
            .finish_non_exhaustive()
    }
}

fn flag(k: &str, v: impl AsRef<std::ffi::OsStr>) -> OsString {
    let mut s = OsString::from(format!("--{k}="));
    s.push(v.as_ref());
    s
}

fn free_loopback_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("binding 127.0.0.1:0"))?;
    Ok(l.local_addr().map_err(Error::io("reading a bound port"))?.port())
}

fn write(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io(format!("creating {}", parent.display())))?;
    }
    std::fs::write(path, contents).map_err(Error::io(format!("writing {}", path.display())))
}

impl Node {
    /// Starts containerd, imports the images, starts kubelet, kube-proxy and
    /// kube-scheduler, and waits until the Node is Ready. Blocks (at most 15 min) while
    /// another node runs on this machine.
    pub(crate) async fn start(ctx: NodeContext<'_>) -> Result<Node> {
        let bins = find_binaries(ctx.opts)?;
        let dir = ctx.dir.join("node");
        let lock = tokio::task::spawn_blocking(|| janitor::lock(LOCK_WAIT))
            .await
            .map_err(|e| Error::Node(format!("node lock thread: {e}")))?
            .map_err(Error::io("taking the node lock"))?;
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let record = janitor::record(&lock, &dir).map_err(Error::io("recording the host's state"))?;
        let mut node = Node {
            _lock: lock,
            record,
            procs: Vec::new(),
            timings: NodeTimings::default(),
        };
        node.start_runtime(&ctx, &bins, &dir).await?;
        node.start_kubernetes(&ctx, &bins, &dir)?;
        let t0 = Instant::now();
        node.wait_ready(&ctx).await?;
        node.timings.node_ready = t0.elapsed();
        Ok(node)
    }

    fn spawn(
        &mut self,
        ctx: &NodeContext<'_>,
        name: &'static str,
        bin: &Path,
        args: &[OsString],
    ) -> Result<()> {
        let proc = super::spawn_logged(ctx.dir, ctx.log_dir, name, bin, args)?;
        self.procs.push(proc);
        Ok(())
    }

    async fn start_runtime(&mut self, ctx: &NodeContext<'_>, bins: &Binaries, dir: &Path) -> Result<()> {
        let t0 = Instant::now();
        let cfg = dir.join("containerd.toml");
        write(&cfg, &config::containerd(dir))?;
        write(
            &dir.join("cni/10-dcr-node.conflist"),
            &config::cni_conflist(&dir.join("cni-ipam")),
        )?;
        self.spawn(ctx, "containerd", &bins.containerd, &[flag("config", &cfg)])?;
        let sock = dir.join("containerd.sock");
        let ctr = |args: &[&std::ffi::OsStr]| {
            let mut c = Command::new(&bins.ctr);
            c.arg("--address")
                .arg(&sock)
                .args(["--namespace", "k8s.io"])
                .args(args);
            c
        };
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if ctr(&["version".as_ref()])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                break;
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(self.timeout("containerd to answer", started, "containerd"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let t_images = Instant::now();
        let pause = ImageArchive {
            archive: bins.pause.clone(),
            reference: PAUSE_IMAGE.to_string(),
        };
        for image in std::iter::once(&pause).chain(&ctx.opts.images) {
            import_image(&ctr, image).await?;
        }
        self.timings.images = t_images.elapsed();
        self.timings.runtime_and_images = t0.elapsed();
        Ok(())
    }

    fn start_kubernetes(&mut self, ctx: &NodeContext<'_>, bins: &Binaries, dir: &Path) -> Result<()> {
        let root = dir.join("kubelet");
        let ports = config::KubeletPorts {
            server: free_loopback_port()?,
            healthz: free_loopback_port()?,
        };
        let kubelet_cfg = dir.join("kubelet.json");
        write(
            &kubelet_cfg,
            &config::kubelet(ctx.address, &ports, &ctx.ca_file, &root),
        )?;
        let sock = dir.join("containerd.sock");
        let kubelet_args = vec![
            flag("config", &kubelet_cfg),
            flag("kubeconfig", &ctx.kubelet_kubeconfig),
            flag("root-dir", &root),
            flag("cert-dir", root.join("pki")),
            flag("container-runtime", "remote"),
            flag("container-runtime-endpoint", format!("unix://{}", sock.display())),
            flag("node-ip", ctx.address.to_string()),
            flag("hostname-override", NODE_NAME),
        ];
        self.spawn(ctx, "kubelet", &bins.kubelet, &kubelet_args)?;
        let proxy_args = vec![
            flag("kubeconfig", &ctx.proxy_kubeconfig),
            flag("hostname-override", NODE_NAME),
            flag("proxy-mode", "iptables"),
            // Sysctls it cannot set on these machines: leave conntrack alone.
            flag("conntrack-max-per-core", "0"),
            flag("conntrack-tcp-timeout-established", "0"),
            flag("conntrack-tcp-timeout-close-wait", "0"),
            flag(
                "healthz-bind-address",
                format!("127.0.0.1:{}", free_loopback_port()?),
            ),
            flag(
                "metrics-bind-address",
                format!("127.0.0.1:{}", free_loopback_port()?),
            ),
        ];
        self.spawn(ctx, "kube-proxy", &bins.proxy, &proxy_args)?;
        let scheduler_args = vec![
            flag("kubeconfig", &ctx.scheduler_kubeconfig),
            flag("authentication-kubeconfig", &ctx.scheduler_kubeconfig),
            flag("authorization-kubeconfig", &ctx.scheduler_kubeconfig),
            flag("leader-elect", "false"),
            flag("bind-address", "127.0.0.1"),
            flag("secure-port", free_loopback_port()?.to_string()),
            flag("port", "0"),
        ];
        self.spawn(ctx, "kube-scheduler", &bins.scheduler, &scheduler_args)?;
        Ok(())
    }

    async fn wait_ready(&mut self, ctx: &NodeContext<'_>) -> Result<()> {
        let url = format!("{}/api/v1/nodes/{NODE_NAME}", ctx.server_url);
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if let Ok(resp) = ctx.http.get(&url).bearer_auth(ctx.admin_token).send().await {
                if let Ok(node) = resp.json::<serde_json::Value>().await {
                    let ready = node["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True");
                    if ready {
                        return Ok(());
                    }
                }
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(self.timeout("the Node to become Ready", started, "kubelet"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn check_alive(&mut self) -> Result<()> {
        for proc in &mut self.procs {
            if let Some(status) = proc.exited() {
                return Err(Error::Exited {
                    component: proc.name,
                    status: status.to_string(),
                    log: proc.log.clone(),
                    tail: process::log_tail(&proc.log, 30),
                });
            }
        }
        Ok(())
    }

    fn timeout(&self, what: &str, started: Instant, component: &str) -> Error {
        let log = self
            .procs
            .iter()
            .find(|p| p.name == component)
            .map(|p| p.log.clone())
            .unwrap_or_default();
        Error::Timeout {
            what: what.to_string(),
            secs: started.elapsed().as_secs(),
            tail: process::log_tail(&log, 30),
            log,
        }
    }

    /// The pids of containerd, kubelet, kube-proxy and kube-scheduler.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Proc::pid).collect()
    }

    /// (component, pid) of the node's processes.
    pub(crate) fn processes(&self) -> Vec<(&'static str, u32)> {
        self.procs.iter().map(|p| (p.name, p.pid())).collect()
    }

    /// The record the exit-time cleanup needs.
    pub(crate) fn record(&self) -> &janitor::Record {
        &self.record
    }

    /// The node's directory (for [`janitor::leftovers`]).
    pub(crate) fn dir(&self) -> &Path {
        &self.record.dir
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Reverse start order: the kubelet goes before containerd, so nothing restarts.
        for proc in self.procs.iter_mut().rev() {
            proc.kill();
        }
        janitor::teardown(&self.record);
    }
}

/// Runs `cmd` to completion, killing it after `limit`.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<std::process::Output> {
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(Error::io("starting ctr"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.map_err(Error::io("running ctr")),
        Err(_) => {
            // SAFETY: plain kill(2) of our child.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            Err(Error::Node(format!(
                "ctr did not finish within {}s",
                limit.as_secs()
            )))
        }
    }
}

/// How many times an image import is tried. containerd 1.6 right after its start now and
/// then answers an import of an unchanged archive with "content digest ...: not found"
/// (seen in 2 of some 40 node starts here); the same import then succeeds. An import is
/// idempotent, so it is retried, a bounded number of times.
const IMPORT_ATTEMPTS: u32 = 3;

async fn import_image(ctr: &impl Fn(&[&std::ffi::OsStr]) -> Command, image: &ImageArchive) -> Result<()> {
    let mut attempt = 1;
    loop {
        let mut cmd = ctr(&[
            "images".as_ref(),
            "import".as_ref(),
            "--index-name".as_ref(),
            image.reference.as_ref(),
            image.archive.as_os_str(),
        ]);
        let out = run_bounded(&mut cmd, IMPORT_TIMEOUT)?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if attempt >= IMPORT_ATTEMPTS || !stderr.contains("not found") {
            return Err(Error::Node(format!(
                "importing {} as {} (attempt {attempt} of {IMPORT_ATTEMPTS}): {stderr}",
                image.archive.display(),
                image.reference,
            )));
        }
        eprintln!(
            "node: importing {} failed ({stderr}); trying again",
            image.reference
        );
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
