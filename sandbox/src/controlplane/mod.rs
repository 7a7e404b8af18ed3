//! The local Kubernetes control plane: a real etcd, kube-apiserver v1.20.2 and
//! kube-controller-manager on loopback, in the spirit of controller-runtime's envtest.
//!
//! The binaries come from `sandbox/scripts/build-control-plane.sh`, which builds
//! kube-apiserver and kube-controller-manager from Debian's `kubernetes` source package and
//! caches them in `${DCR_CACHE_DIR:-$HOME/.cache/dcr-operator}/control-plane/v1.20.2`
//! (with a link to Debian's etcd). [`ControlPlane::start`] looks there unless
//! [`ControlPlaneOptions::bin_dir`] or `DCR_CONTROL_PLANE_BIN_DIR` says otherwise.
//!
//! What runs:
//! - etcd with its own data dir on two free loopback ports;
//! - kube-apiserver with TLS on a free loopback port (a CA and serving certificate made
//!   per start), static token authentication (an admin in `system:masters` plus
//!   [`ControlPlaneOptions::extra_users`]), RBAC authorization, service-account token
//!   signing (so the TokenRequest API works) and the ServiceAccount admission plugin off;
//! - kube-controller-manager with every controller that makes sense without nodes
//!   (garbage collector, namespace deletion, service-account tokens, ...).
//!
//! There is no kubelet and no scheduler by default: Pods stay Pending. With
//! [`ControlPlaneOptions::node`] a real node joins (see the [`node`] module): the apiserver
//! then listens on the host's own address (pods reach it through the `kubernetes` Service),
//! runs the ServiceAccount admission plugin and Node,RBAC authorization, and holds a
//! client certificate for the kubelet. Version 1.20 ignores CRD CEL
//! rules (`x-kubernetes-validations`) and refuses them in server-side apply of a CRD: see
//! `shared/local-control-plane.md`.
//!
//! Nothing outlives the process that started it (see the `process` module): processes are
//! killed on drop, at process exit, and by the kernel (PDEATHSIG) when the process dies.

pub mod node;
mod pki;
mod process;

pub use process::spawn as spawn_tied_to_process;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::distributions::{Alphanumeric, DistString};

use process::Proc;

/// The Kubernetes version of the binaries this launcher expects.
pub const KUBERNETES_VERSION: &str = "v1.20.2";
/// Overrides the directory holding `etcd`, `kube-apiserver`, `kube-controller-manager`.
pub const BIN_DIR_ENV: &str = "DCR_CONTROL_PLANE_BIN_DIR";
/// Root of the build cache (same variable as the build script).
pub const CACHE_DIR_ENV: &str = "DCR_CACHE_DIR";
/// Set to `1` to keep the state directory (etcd data, logs, kubeconfigs) after stopping.
pub const KEEP_STATE_ENV: &str = "DCR_CONTROL_PLANE_KEEP";
/// The admin user's name in the token file.
pub const ADMIN_USER: &str = "dcr-admin";

const START_TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(100);
const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const KCM_CONTROLLERS: &str = "*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service,-route,-attachdetach,-persistentvolume-binder,-ttl";
/// With a node: also the node lifecycle controller, which lifts the `not-ready` taint the
/// kubelet registers with once the node is Ready (else nothing is ever scheduled).
const KCM_CONTROLLERS_WITH_NODE: &str =
    "*,-nodeipam,-cloud-node-lifecycle,-service,-route,-attachdetach,-persistentvolume-binder,-ttl";

/// Errors of [`ControlPlane`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{binary} not found (looked for {looked}). Build the local control plane with \
         `sandbox/scripts/build-control-plane.sh` (root, Debian-like), point {BIN_DIR_ENV} \
         at a directory holding etcd, kube-apiserver and kube-controller-manager, or run \
         the tests against your own cluster with DCR_TEST_KUBECONFIG=/path/to/kubeconfig"
    )]
    BinaryNotFound { binary: &'static str, looked: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{component} exited ({status}) while starting; last lines of {log}:\n{tail}")]
    Exited {
        component: &'static str,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("timed out after {secs}s waiting for {what}; last lines of {log}:\n{tail}")]
    Timeout {
        what: String,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
    #[error("user {0:?} is not in the token file; add it to ControlPlaneOptions::extra_users")]
    UnknownUser(String),
    #[error("generating certificates: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("local node: {0}")]
    Node(String),
}

impl Error {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    fn port_in_use(&self) -> bool {
        match self {
            Error::Exited { tail, .. } | Error::Timeout { tail, .. } => {
                tail.contains("address already in use")
            }
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Readiness {
    /// Answers HTTPS requests at all (its /readyz may still say no).
    Serving,
    /// /readyz says ok.
    Ready,
}

/// A static-token user of the apiserver (beside the admin).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSpec {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserSpec {
    pub fn new(name: impl Into<String>, groups: impl IntoIterator<Item = impl Into<String>>) -> Self {
        UserSpec {
            name: name.into(),
            groups: groups.into_iter().map(Into::into).collect(),
        }
    }

    /// The identity a ServiceAccount's token carries (`system:serviceaccount:<ns>:<name>`
    /// in the groups `system:serviceaccounts`, `system:serviceaccounts:<ns>`,
    /// `system:authenticated`), so RBAC subjects of kind ServiceAccount match it.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        UserSpec::new(
            format!("system:serviceaccount:{namespace}:{name}"),
            [
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_string(),
            ],
        )
    }
}

/// Options of [`ControlPlane::start`]. `Default` is what the tests use.
#[derive(Clone, Debug, Default)]
pub struct ControlPlaneOptions {
    /// Directory with `kube-apiserver`, `kube-controller-manager` and (optionally) `etcd`.
    /// Default: `$DCR_CONTROL_PLANE_BIN_DIR`, else the build script's cache directory.
    /// `etcd` falls back to `$PATH` and `/usr/bin/etcd`.
    pub bin_dir: Option<PathBuf>,
    /// Extra static-token users; tokens are generated.
    pub extra_users: Vec<UserSpec>,
    /// Where the process logs go (kept after stop). Default: the state directory.
    pub log_dir: Option<PathBuf>,
    /// Also run a real node (containerd, kubelet, kube-scheduler, kube-proxy). Off by
    /// default: the loopback-only control plane starts in seconds and changes nothing on
    /// the host; a node needs root, takes a machine-wide lock and changes iptables.
    pub node: Option<node::NodeOptions>,
}

/// A user from the token file.
#[derive(Clone, Debug)]
pub struct User {
    pub spec: UserSpec,
    pub token: String,
}

#[derive(Clone, Debug)]
struct Binaries {
    etcd: PathBuf,
    apiserver: PathBuf,
    kcm: PathBuf,
}

#[derive(Clone, Copy, Debug)]
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
    kcm: u16,
}

/// A running local control plane. Dropping it (or [`ControlPlane::stop`]) kills the three
/// processes and removes its state directory.
pub struct ControlPlane {
    id: u64,
    dir: PathBuf,
    log_dir: PathBuf,
    keep_state: bool,
    bins: Binaries,
    ports: Ports,
    server_url: String,
    ca_pem: String,
    admin: User,
    users: Vec<User>,
    kubeconfig: PathBuf,
    apiserver_args: Vec<OsString>,
    kcm_args: Vec<OsString>,
    etcd: Option<Proc>,
    apiserver: Option<Proc>,
    kcm: Option<Proc>,
    node: Option<node::Node>,
    started_in: Duration,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server_url", &self.server_url)
            .field("kubeconfig", &self.kubeconfig)
            .field("dir", &self.dir)
            .field("pids", &self.pids())
            .finish_non_exhaustive()
    }
}

/// Tears down what a process killed by a signal left behind: a node (processes, mounts,
/// cgroups, iptables chains, sysctls) and control-plane state directories. Every start
/// does this; never waits for a live node.
pub fn sweep_stale() {
    node::janitor::sweep_stale();
    process::sweep_stale_state_dirs(&std::env::temp_dir());
}

/// `${DCR_CACHE_DIR:-$HOME/.cache/dcr-operator}`.
pub fn cache_root() -> PathBuf {
    std::env::var_os(CACHE_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/dcr-operator")
        })
}

/// The default binary directory: `${DCR_CACHE_DIR:-$HOME/.cache/dcr-operator}/control-plane/v1.20.2`.
pub fn default_bin_dir() -> PathBuf {
    cache_root().join("control-plane").join(KUBERNETES_VERSION)
}

fn resolve_bin_dir(opts: &ControlPlaneOptions) -> PathBuf {
    opts.bin_dir
        .clone()
        .or_else(|| {
            std::env::var_os(BIN_DIR_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(default_bin_dir)
}

fn find_binaries(dir: &Path) -> Result<Binaries> {
    let exe = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
            .unwrap_or(false)
    };
    let in_dir = |name: &'static str| -> Result<PathBuf> {
        let p = dir.join(name);
        if exe(&p) {
            Ok(p)
        } else {
            Err(Error::BinaryNotFound {
                binary: name,
                looked: p.display().to_string(),
            })
        }
    };
    let apiserver = in_dir("kube-apiserver")?;
    let kcm = in_dir("kube-controller-manager")?;
    let mut candidates = vec![dir.join("etcd")];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("etcd")));
    }
    candidates.push(PathBuf::from("/usr/bin/etcd"));
    let etcd = candidates
        .iter()
        .find(|p| exe(p))
        .cloned()
        .ok_or_else(|| Error::BinaryNotFound {
            binary: "etcd",
            looked: format!("{}, $PATH, /usr/bin/etcd", dir.join("etcd").display()),
        })?;
    Ok(Binaries { etcd, apiserver, kcm })
}

fn free_ports() -> Result<Ports> {
    // Hold all listeners until every port is chosen, so the four differ.
    let listeners = (0..4)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(Error::io("binding 127.0.0.1:0 to find a free port"))?;
    let port = |i: usize| -> Result<u16> {
        Ok(listeners[i]
            .local_addr()
            .map_err(Error::io("reading a bound port"))?
            .port())
    };
    Ok(Ports {
        etcd_client: port(0)?,
        etcd_peer: port(1)?,
        apiserver: port(2)?,
        kcm: port(3)?,
    })
}

fn random_token() -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), 40)
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("string serialises")
}

fn write_file(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(Error::io(format!("writing {}", path.display())))
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager, waits until the apiserver
    /// is ready (`/readyz`) and the controller manager runs its controllers, and writes an
    /// admin kubeconfig. Retries with other ports if one was taken meanwhile.
    pub async fn start(opts: ControlPlaneOptions) -> Result<ControlPlane> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(&opts).await {
                Err(e) if attempt < 3 && e.port_in_use() => {
                    tracing::warn!("control plane: port taken while starting, retrying: {e}");
                }
                other => return other,
            }
        }
    }

    async fn start_once(opts: &ControlPlaneOptions) -> Result<ControlPlane> {
        let t0 = Instant::now();
        let bins = find_binaries(&resolve_bin_dir(opts))?;
        let base = std::env::temp_dir();
        // A node left by a killed process first: its mounts are inside its state dir.
        node::janitor::sweep_stale();
        process::sweep_stale_state_dirs(&base);
        // A node's apiserver is reached on the host's address (by the kubelet and, through
        // the `kubernetes` Service, by pods); a plain control plane on loopback only.
        let address = match &opts.node {
            Some(_) => Some(node::host_address()?),
            None => None,
        };
        let dir = process::create_state_dir(&base).map_err(Error::io(format!(
            "creating a state directory under {}",
            base.display()
        )))?;
        let log_dir = opts.log_dir.clone().unwrap_or_else(|| dir.join("logs"));
        std::fs::create_dir_all(&log_dir).map_err(Error::io(format!("creating {}", log_dir.display())))?;
        let ports = free_ports()?;
        let bind = address.map_or_else(|| "127.0.0.1".to_string(), |a| a.to_string());
        let server_url = format!("https://{bind}:{}", ports.apiserver);

        let extra_sans: Vec<String> = match address {
            Some(a) => vec![
                a.to_string(),
                "10.0.0.1".into(), // the `kubernetes` Service
                "kubernetes.default.svc.cluster.local".into(),
            ],
            None => Vec::new(),
        };
        let pki = pki::generate(&extra_sans)?;
        let pki_dir = dir.join("pki");
        std::fs::create_dir_all(&pki_dir).map_err(Error::io("creating pki dir"))?;
        for (name, pem) in [
            ("ca.crt", &pki.ca_pem),
            ("apiserver.crt", &pki.serving_cert_pem),
            ("apiserver.key", &pki.serving_key_pem),
            ("sa.key", &pki.sa_key_pem),
            ("sa.pub", &pki.sa_pub_pem),
            ("kubelet-client.crt", &pki.kubelet_client_cert_pem),
            ("kubelet-client.key", &pki.kubelet_client_key_pem),
        ] {
            write_file(&pki_dir.join(name), pem)?;
        }

        let admin = User {
            spec: UserSpec::new(ADMIN_USER, ["system:masters"]),
            token: random_token(),
        };
        let kcm_user = User {
            spec: UserSpec::new("system:kube-controller-manager", ["system:masters"]),
            token: random_token(),
        };
        let users: Vec<User> = opts
            .extra_users
            .iter()
            .map(|spec| User {
                spec: spec.clone(),
                token: random_token(),
            })
            .collect();
        // The node's components: the kubelet as `system:node:<name>` (the Node authorizer
        // grants it what it needs), the others as administrators (a test node).
        let node_users: Vec<User> = match &opts.node {
            Some(_) => [
                UserSpec::new(format!("system:node:{}", node::NODE_NAME), ["system:nodes"]),
                UserSpec::new("system:kube-scheduler", ["system:masters"]),
                UserSpec::new("system:kube-proxy", ["system:masters"]),
            ]
            .into_iter()
            .map(|spec| User {
                spec,
                token: random_token(),
            })
            .collect(),
            None => Vec::new(),
        };
        let mut csv = String::new();
        for (i, u) in [&admin, &kcm_user]
            .into_iter()
            .chain(&users)
            .chain(&node_users)
            .enumerate()
        {
            // token,user,uid,"group1,group2"
            let groups = u.spec.groups.join(",").replace('"', "");
            let _ = writeln!(csv, "{},{},uid-{i},\"{groups}\"", u.token, u.spec.name);
        }
        let token_file = dir.join("tokens.csv");
        write_file(&token_file, &csv)?;

        let kubeconfig = dir.join("kubeconfig");
        let kcm_kubeconfig = dir.join("kube-controller-manager.kubeconfig");
        write_file(
            &kubeconfig,
            &render_kubeconfig(&server_url, &pki.ca_pem, ADMIN_USER, &admin.token),
        )?;
        write_file(
            &kcm_kubeconfig,
            &render_kubeconfig(&server_url, &pki.ca_pem, &kcm_user.spec.name, &kcm_user.token),
        )?;

        let mut node_kubeconfigs = Vec::new();
        for u in &node_users {
            let file = dir.join(format!("{}.kubeconfig", u.spec.name.replace(':', "-")));
            write_file(
                &file,
                &render_kubeconfig(&server_url, &pki.ca_pem, &u.spec.name, &u.token),
            )?;
            node_kubeconfigs.push(file);
        }

        let p = |name: &str| pki_dir.join(name).into_os_string();
        let flag = |k: &str, v: &dyn AsRef<std::ffi::OsStr>| {
            let mut s = OsString::from(format!("--{k}="));
            s.push(v.as_ref());
            s
        };
        let mut apiserver_args = vec![
            flag("etcd-servers", &format!("http://127.0.0.1:{}", ports.etcd_client)),
            flag("bind-address", &bind),
            flag("advertise-address", &bind),
            flag("secure-port", &ports.apiserver.to_string()),
            flag("insecure-port", &"0"),
            flag("cert-dir", &dir.join("apiserver-certs")),
            flag("tls-cert-file", &p("apiserver.crt")),
            flag("tls-private-key-file", &p("apiserver.key")),
            flag("client-ca-file", &p("ca.crt")),
            flag("token-auth-file", &token_file),
            flag(
                "authorization-mode",
                &if address.is_some() { "Node,RBAC" } else { "RBAC" },
            ),
            flag("service-account-issuer", &SERVICE_ACCOUNT_ISSUER),
            flag("service-account-key-file", &p("sa.pub")),
            flag("service-account-signing-key-file", &p("sa.key")),
            flag("service-cluster-ip-range", &"10.0.0.0/24"),
            flag("allow-privileged", &"true"),
            flag("profiling", &"false"),
        ];
        if address.is_some() {
            // Pods get their ServiceAccount token; `kubectl logs` reaches the kubelet.
            apiserver_args.extend([
                flag("kubelet-client-certificate", &p("kubelet-client.crt")),
                flag("kubelet-client-key", &p("kubelet-client.key")),
                flag("kubelet-preferred-address-types", &"InternalIP"),
            ]);
        } else {
            // No pods run: admission would only demand ServiceAccounts that nothing uses.
            apiserver_args.push(flag("disable-admission-plugins", &"ServiceAccount"));
        }

        let mut cp = ControlPlane {
            id: process::next_id(),
            dir: dir.clone(),
            log_dir,
            keep_state: std::env::var(KEEP_STATE_ENV).is_ok_and(|v| v == "1"),
            bins,
            ports,
            server_url,
            ca_pem: pki.ca_pem.clone(),
            admin,
            users,
            kubeconfig,
            apiserver_args,
            kcm_args: Vec::new(),
            etcd: None,
            apiserver: None,
            kcm: None,
            node: None,
            started_in: Duration::ZERO,
        };
        // From here on, an early return drops `cp`, which kills what was started.
        cp.register();

        let etcd_peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
        let etcd_client = format!("http://127.0.0.1:{}", ports.etcd_client);
        let etcd_args: Vec<OsString> = vec![
            flag("name", &"default"),
            flag("data-dir", &dir.join("etcd")),
            flag("listen-client-urls", &etcd_client),
            flag("advertise-client-urls", &etcd_client),
            flag("listen-peer-urls", &etcd_peer),
            flag("initial-advertise-peer-urls", &etcd_peer),
            flag("initial-cluster", &format!("default={etcd_peer}")),
            flag("logger", &"zap"),
            flag("log-outputs", &"stderr"),
        ];
        cp.etcd = Some(cp.spawn("etcd", &cp.bins.etcd, &etcd_args)?);
        cp.register();
        // The apiserver retries etcd until it answers: no need to wait in between.
        cp.spawn_apiserver()?;
        // The controller manager starts while the apiserver finishes its post-start hooks
        // (saves a second or two); it waits for the apiserver's /healthz itself.
        cp.wait_apiserver(Readiness::Serving).await?;

        let kcm_args = vec![
            flag("kubeconfig", &kcm_kubeconfig),
            flag("bind-address", &"127.0.0.1"),
            flag("secure-port", &ports.kcm.to_string()),
            flag("port", &"0"),
            flag("cert-dir", &dir.join("kcm-certs")),
            flag("leader-elect", &"false"),
            flag(
                "controllers",
                &if address.is_some() {
                    KCM_CONTROLLERS_WITH_NODE
                } else {
                    KCM_CONTROLLERS
                },
            ),
            flag("service-account-private-key-file", &p("sa.key")),
            flag("root-ca-file", &p("ca.crt")),
            flag("use-service-account-credentials", &"false"),
            flag("profiling", &"false"),
        ];
        cp.kcm_args = kcm_args;
        cp.spawn_controller_manager()?;
        // kube-controller-manager gives up if the apiserver is not healthy within 10 s of
        // its own start, which a loaded machine can exceed: then start it once more.
        let mut respawns = 1;
        loop {
            let waited = match cp.wait_apiserver(Readiness::Ready).await {
                Ok(()) => cp.wait_controller_manager_ready().await,
                Err(e) => Err(e),
            };
            match waited {
                Err(Error::Exited {
                    component: "kube-controller-manager",
                    tail,
                    ..
                }) if respawns > 0 && !tail.contains("address already in use") => {
                    respawns -= 1;
                    tracing::warn!("kube-controller-manager exited while starting, starting it again");
                    cp.spawn_controller_manager()?;
                }
                other => break other?,
            }
        }
        if let Some(node_opts) = &opts.node {
            let ctx = node::NodeContext {
                opts: node_opts,
                dir: &cp.dir,
                log_dir: &cp.log_dir,
                address: address.expect("node mode has an address"),
                server_url: &cp.server_url,
                ca_file: pki_dir.join("ca.crt"),
                admin_token: &cp.admin.token,
                http: cp.http()?,
                kubelet_kubeconfig: node_kubeconfigs[0].clone(),
                scheduler_kubeconfig: node_kubeconfigs[1].clone(),
                proxy_kubeconfig: node_kubeconfigs[2].clone(),
            };
            let started = node::Node::start(ctx).await;
            // Registered even when it failed half-way: dropping `started` tears it down.
            let n = started?;
            cp.node = Some(n);
            cp.register();
        }
        cp.started_in = t0.elapsed();
        tracing::info!(
            "control plane {} ready in {:.1?} (kubeconfig {})",
            cp.server_url,
            cp.started_in,
            cp.kubeconfig.display()
        );
        Ok(cp)
    }

    fn register(&self) {
        let dir = (!self.keep_state).then(|| self.dir.clone());
        let node = self.node.as_ref().map(|n| n.record().clone());
        process::register(self.id, self.pids(), dir, node);
    }

    fn spawn(&self, name: &'static str, bin: &Path, args: &[OsString]) -> Result<Proc> {
        spawn_logged(&self.dir, &self.log_dir, name, bin, args)
    }

    fn spawn_apiserver(&mut self) -> Result<()> {
        let proc = self.spawn(
            "kube-apiserver",
            &self.bins.apiserver.clone(),
            &self.apiserver_args.clone(),
        )?;
        self.apiserver = Some(proc);
        self.register();
        Ok(())
    }

    fn spawn_controller_manager(&mut self) -> Result<()> {
        let proc = self.spawn(
            "kube-controller-manager",
            &self.bins.kcm.clone(),
            &self.kcm_args.clone(),
        )?;
        self.kcm = Some(proc);
        self.register();
        Ok(())
    }

    /// Fails fast when one of the processes died.
    fn check_alive(&mut self) -> Result<()> {
        for proc in [&mut self.etcd, &mut self.apiserver, &mut self.kcm]
            .into_iter()
            .flatten()
        {
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

    fn timeout(&self, what: &str, started: Instant, component: Option<&Proc>) -> Error {
        let log = component
            .map(|p| p.log.clone())
            .unwrap_or_else(|| self.log_dir.join("kube-apiserver.log"));
        Error::Timeout {
            what: what.to_string(),
            secs: started.elapsed().as_secs(),
            tail: process::log_tail(&log, 30),
            log,
        }
    }

    fn http(&self) -> Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes())?)
            .timeout(Duration::from_secs(5))
            .build()?)
    }

    async fn wait_apiserver(&mut self, until: Readiness) -> Result<()> {
        let http = self.http()?;
        let url = format!("{}/readyz", self.server_url);
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if let Ok(resp) = http.get(&url).bearer_auth(&self.admin.token).send().await {
                if until == Readiness::Serving || resp.status().is_success() {
                    return Ok(());
                }
            }
            if started.elapsed() > START_TIMEOUT {
                let what = match until {
                    Readiness::Serving => "kube-apiserver to serve HTTPS",
                    Readiness::Ready => "kube-apiserver /readyz",
                };
                return Err(self.timeout(what, started, self.apiserver.as_ref()));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Ready when its /healthz answers and its controllers run (the service-account
    /// controller has created the `default` ServiceAccount in `default`).
    async fn wait_controller_manager_ready(&mut self) -> Result<()> {
        let insecure = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(5))
            .build()?;
        let http = self.http()?;
        let healthz = format!("https://127.0.0.1:{}/healthz", self.ports.kcm);
        let sa = format!(
            "{}/api/v1/namespaces/default/serviceaccounts/default",
            self.server_url
        );
        let started = Instant::now();
        let mut healthy = false;
        loop {
            self.check_alive()?;
            if !healthy {
                healthy = matches!(insecure.get(&healthz).send().await, Ok(r) if r.status().is_success());
            }
            if healthy {
                if let Ok(resp) = http.get(&sa).bearer_auth(&self.admin.token).send().await {
                    if resp.status().is_success() {
                        return Ok(());
                    }
                }
            }
            if started.elapsed() > START_TIMEOUT {
                let what = if healthy {
                    "kube-controller-manager to create the default ServiceAccount"
                } else {
                    "kube-controller-manager /healthz"
                };
                return Err(self.timeout(what, started, self.kcm.as_ref()));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The admin kubeconfig (user in `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The CA certificate (PEM) that signed the apiserver's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The admin's bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin.token
    }

    /// The extra users of the token file, with their tokens.
    pub fn users(&self) -> &[User] {
        &self.users
    }

    /// The state directory (etcd data, pki, kubeconfigs, and logs unless `log_dir`).
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// Where the process logs are (`etcd.log`, `kube-apiserver.log`,
    /// `kube-controller-manager.log`).
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The pids of etcd, kube-apiserver and kube-controller-manager (those running), and
    /// of the node's processes.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = [&self.etcd, &self.apiserver, &self.kcm]
            .into_iter()
            .flatten()
            .map(Proc::pid)
            .collect();
        pids.extend(self.node.iter().flat_map(node::Node::pids));
        pids
    }

    /// (component name, pid) of the running processes.
    pub fn processes(&self) -> Vec<(&'static str, u32)> {
        let mut procs: Vec<(&'static str, u32)> = [&self.etcd, &self.apiserver, &self.kcm]
            .into_iter()
            .flatten()
            .map(|p| (p.name, p.pid()))
            .collect();
        procs.extend(self.node.iter().flat_map(node::Node::processes));
        procs
    }

    /// How long the node's steps took, when it runs one.
    pub fn node_timings(&self) -> Option<node::NodeTimings> {
        self.node.as_ref().map(|n| n.timings)
    }

    /// The node's directory (containerd, kubelet root, CNI), when it runs one; for
    /// [`node::janitor::leftovers`] after a stop.
    pub fn node_dir(&self) -> Option<PathBuf> {
        self.node.as_ref().map(|n| n.dir().to_path_buf())
    }

    /// How long [`ControlPlane::start`] took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Writes (once) and returns a kubeconfig for a user of the token file, e.g. one of
    /// [`ControlPlaneOptions::extra_users`]. Such a user has no permissions until RBAC
    /// grants some.
    pub fn kubeconfig_for_user(&self, user: &str) -> Result<PathBuf> {
        let u = self
            .users
            .iter()
            .chain(std::iter::once(&self.admin))
            .find(|u| u.spec.name == user)
            .ok_or_else(|| Error::UnknownUser(user.to_string()))?;
        let safe: String = user
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.dir.join(format!("kubeconfig-{safe}"));
        write_file(
            &path,
            &render_kubeconfig(&self.server_url, &self.ca_pem, user, &u.token),
        )?;
        Ok(path)
    }

    /// Stops kube-apiserver and starts it again on the same port with the same etcd data
    /// and flags, then waits until it is ready. etcd and kube-controller-manager keep
    /// running. For tests of clients that must survive an apiserver restart.
    ///
    /// The old process gets SIGTERM, then SIGKILL after 2 s: on SIGTERM kube-apiserver
    /// 1.20 stops accepting connections at once but waits up to 60 s for long-running
    /// requests (watches) to end; to clients both look like a crash.
    pub async fn restart_apiserver(&mut self) -> Result<()> {
        if let Some(mut old) = self.apiserver.take() {
            old.terminate(Duration::from_secs(2));
        }
        self.register();
        // The port is ours again as soon as the old process is gone; if someone else took
        // it meanwhile, the new process exits with "address already in use".
        self.spawn_apiserver()?;
        self.wait_apiserver(Readiness::Ready).await
    }

    /// Stops kube-apiserver (SIGTERM, SIGKILL after 2 s) and leaves it down until
    /// [`ControlPlane::start_apiserver`]: for tests of clients facing an apiserver outage.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut old) = self.apiserver.take() {
            old.terminate(Duration::from_secs(2));
        }
        self.register();
    }

    /// Starts kube-apiserver again after [`ControlPlane::stop_apiserver`] (same port, etcd
    /// data and flags) and waits until it is ready.
    pub async fn start_apiserver(&mut self) -> Result<()> {
        if self.apiserver.is_none() {
            self.spawn_apiserver()?;
        }
        self.wait_apiserver(Readiness::Ready).await
    }

    /// Restarts kube-controller-manager (same flags) and waits until it serves /healthz.
    ///
    /// Its garbage collector reads the API's resources at start and then only every 30 s:
    /// a Secret owned by a custom resource whose CRD appeared after the start is collected
    /// only after that rediscovery. Restarting it after installing CRDs makes ownerReference
    /// garbage collection of their objects immediate.
    pub async fn restart_controller_manager(&mut self) -> Result<()> {
        if let Some(mut old) = self.kcm.take() {
            old.terminate(Duration::from_secs(2));
        }
        self.register();
        self.spawn_controller_manager()?;
        self.wait_controller_manager_ready().await
    }

    /// Kills the three processes and removes the state directory (unless
    /// `DCR_CONTROL_PLANE_KEEP=1`). Same as dropping it.
    pub fn stop(self) {
        drop(self)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // The node first: its kubelet must not outlive the apiserver it reports to, and
        // its mounts are inside the state dir removed below.
        drop(self.node.take());
        for proc in [&mut self.kcm, &mut self.apiserver, &mut self.etcd]
            .into_iter()
            .flatten()
        {
            proc.kill();
        }
        process::unregister(self.id);
        if self.keep_state {
            eprintln!("control plane state kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A kubeconfig with one cluster, one bearer-token user and one context.
pub fn render_kubeconfig(server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: dcr-local\n  \
           cluster:\n    \
             server: {server}\n    \
             certificate-authority-data: {ca}\n\
         users:\n\
         - name: {user}\n  \
           user:\n    \
             token: {token}\n\
         contexts:\n\
         - name: dcr-local\n  \
           context:\n    \
             cluster: dcr-local\n    \
             user: {user}\n\
         current-context: dcr-local\n",
        server = q(server),
        ca = q(&ca),
        user = q(user),
        token = q(token),
    )
}

/// Starts `bin` tied to this process (see [`process`]), its output appended to
/// `<log_dir>/<name>.log`.
pub(crate) fn spawn_logged(
    cwd: &Path,
    log_dir: &Path,
    name: &'static str,
    bin: &Path,
    args: &[OsString],
) -> Result<Proc> {
    let log = log_dir.join(format!("{name}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(Error::io(format!("opening {}", log.display())))?;
    let err = file
        .try_clone()
        .map_err(Error::io("duplicating a log file handle"))?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err);
    let child = process::spawn(cmd).map_err(Error::io(format!("starting {}", bin.display())))?;
    Ok(Proc { name, child, log })
}
