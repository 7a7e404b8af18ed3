//! The Kubernetes cluster the integration tests run against.
//!
//! By default every test binary starts **one** local control plane (a real etcd,
//! kube-apiserver v1.20.2 and kube-controller-manager, see `sandbox::controlplane`) the
//! first time a test asks for [`cluster()`], installs every CRD in `crds/*.yaml` (and the
//! test CRD [`WIDGET_CRD_YAML`]), waits until they are established, restarts
//! kube-controller-manager so that its garbage collector knows them at once (it rediscovers
//! resources only every 30 s), and shares it with all tests of that binary (about 10 s on
//! a busy 2-core machine). Tests isolate themselves with a [`TestNamespace`] each and
//! build their own `kube::Client` ([`Cluster::client`]): each `#[tokio::test]` has its own
//! runtime. The processes die with the test process, however it ends.
//!
//! The suite is written for `cargo test` (libtest runs all tests of a binary in one
//! process, so they share one control plane). Under cargo-nextest every test is its own
//! process and would start its own control plane (correct, only slower).
//!
//! # Your own cluster instead
//! - `DCR_TEST_KUBECONFIG=/path/to/kubeconfig cargo test`: use that kubeconfig (its
//!   current context) and start nothing;
//! - `DCR_TEST_USE_KUBECONFIG=1 cargo test`: the same with `$KUBECONFIG` (first entry)
//!   or `~/.kube/config`.
//!
//! The identity needs cluster-admin (the tests install CRDs, ClusterRoles and
//! ClusterRoleBindings). CRDs are created or replaced, never server-side applied; their CEL
//! rules (`x-kubernetes-validations`) are stripped when the server is older than 1.25,
//! which does not know them (it would ignore them on create and refuse them in server-side
//! apply). Tests that need the local processes (an apiserver restart, static-token users)
//! skip themselves, saying so, on a cluster of your own.
//!
//! # Other knobs
//! - `DCR_TEST_KEEP_NAMESPACES=1`: keep each test's namespace (and its ClusterRoles and
//!   ClusterRoleBindings) for inspection;
//! - `DCR_CONTROL_PLANE_BIN_DIR`: binaries other than the build script's cache;
//! - `DCR_CONTROL_PLANE_KEEP=1`: keep the control plane's state dir (logs, etcd data).
#![allow(dead_code)]

use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions, Condition};
use kube::{Api, Client, Config, Resource, ResourceExt};
use sandbox::controlplane::{ControlPlane, ControlPlaneOptions, UserSpec};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type BoxResult<T> = Result<T, BoxError>;

/// Path of the kubeconfig of an existing cluster to use instead of a local control plane.
pub const TEST_KUBECONFIG_ENV: &str = "DCR_TEST_KUBECONFIG";
/// `1`: use `$KUBECONFIG` / `~/.kube/config` instead of a local control plane.
pub const USE_KUBECONFIG_ENV: &str = "DCR_TEST_USE_KUBECONFIG";
/// `1`: do not delete test namespaces.
pub const KEEP_NAMESPACES_ENV: &str = "DCR_TEST_KEEP_NAMESPACES";
/// Label on every test namespace (and the cluster-scoped objects made for it).
pub const TEST_LABEL: &str = "dcr-operator.io/test";
/// Label naming the test namespace a cluster-scoped test object belongs to.
pub const TEST_NAMESPACE_LABEL: &str = "dcr-operator.io/test-namespace";
/// The operator's identity; the local control plane knows it as a static-token user.
pub const OPERATOR_NAMESPACE: &str = "dcr-system";
pub const OPERATOR_SERVICE_ACCOUNT: &str = "dcr-operator";

/// How long cluster operations in tests may take before a test fails.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The repository's `crds/` directory.
pub fn crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crds")
}

/// `system:serviceaccount:dcr-system:dcr-operator`.
pub fn operator_user() -> String {
    format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}")
}

/// The server's version.
#[derive(Clone, Debug)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
    pub git_version: String,
}

impl ServerVersion {
    /// Whether CRD CEL rules (`x-kubernetes-validations`) are enforced (GA in 1.29,
    /// on by default from 1.25).
    pub fn supports_cel_rules(&self) -> bool {
        (self.major, self.minor) >= (1, 25)
    }
}

/// The cluster of this test binary.
pub struct Cluster {
    kubeconfig: PathBuf,
    /// Behind a lock because restarting the apiserver needs `&mut ControlPlane` and the
    /// cluster is a shared `&'static` (see [`Cluster::restart_apiserver`]). A tokio lock:
    /// it is held across the restart's awaits, and works from any test's runtime.
    local: Option<tokio::sync::Mutex<ControlPlane>>,
    version: ServerVersion,
    crds: Vec<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("kubeconfig", &self.kubeconfig)
            .field("local", &self.local.is_some())
            .field("version", &self.version.git_version)
            .field("crds", &self.crds)
            .finish()
    }
}

/// The shared cluster: started (or connected to) once per test binary, with `crds/`
/// installed. Panics, with the reason, if that failed (every test asking gets the same
/// message).
pub async fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    // Initialised on a blocking thread with its own runtime: each #[tokio::test] has its
    // own runtime, and nothing in `Cluster` may depend on one of them.
    let cell = tokio::task::spawn_blocking(|| CLUSTER.get_or_init(init_blocking))
        .await
        .expect("cluster initialisation thread");
    match cell {
        Ok(c) => c,
        Err(e) => panic!("no test cluster: {e}"),
    }
}

fn init_blocking() -> Result<Cluster, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(init()).map_err(|e| e.to_string())
}

/// The kubeconfig of a cluster of the user's, if the environment names one.
pub fn external_kubeconfig() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(TEST_KUBECONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if std::env::var(USE_KUBECONFIG_ENV).is_ok_and(|v| v == "1") {
        let from_env = std::env::var_os("KUBECONFIG")
            .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()));
        return Some(from_env.unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".kube/config")
        }));
    }
    None
}

async fn init() -> BoxResult<Cluster> {
    let (kubeconfig, mut local) = match external_kubeconfig() {
        Some(path) => {
            eprintln!("tests: using the cluster of {}", path.display());
            (path, None)
        }
        None => {
            let cp = ControlPlane::start(ControlPlaneOptions {
                extra_users: vec![UserSpec::service_account(
                    OPERATOR_NAMESPACE,
                    OPERATOR_SERVICE_ACCOUNT,
                )],
                ..Default::default()
            })
            .await?;
            eprintln!(
                "tests: local control plane {} ready in {:.1?}, kubeconfig {}",
                cp.server_url(),
                cp.started_in(),
                cp.kubeconfig_path().display()
            );
            (cp.kubeconfig_path().to_path_buf(), Some(cp))
        }
    };
    let client = client_from_kubeconfig(&kubeconfig).await?;
    let version = server_version(&client).await?;
    let crds = install_crds_from_dir(&client, &crds_dir(), &version).await?;
    if !crds.is_empty() {
        eprintln!(
            "tests: installed {} CRDs from crds/: {}",
            crds.len(),
            crds.join(", ")
        );
    }
    install_crd_yaml(&client, WIDGET_CRD_YAML, &version).await?;
    // The operator's own namespace: its record key Secret (and Leases) live there.
    ensure_namespace(&client, OPERATOR_NAMESPACE).await?;
    if let Some(cp) = local.as_mut() {
        // Its garbage collector discovers resources at start and then every 30 s only:
        // restart it so objects owned by the CRDs just installed are collected at once.
        let t0 = Instant::now();
        cp.restart_controller_manager().await?;
        eprintln!(
            "tests: kube-controller-manager restarted in {:.1?} to discover the CRDs",
            t0.elapsed()
        );
    }
    Ok(Cluster {
        kubeconfig,
        local: local.map(tokio::sync::Mutex::new),
        version,
        crds,
    })
}

impl Cluster {
    /// A new admin client (build one per test: clients belong to the test's runtime).
    pub async fn client(&self) -> Client {
        client_from_kubeconfig(&self.kubeconfig)
            .await
            .unwrap_or_else(|e| panic!("client for {}: {e}", self.kubeconfig.display()))
    }

    /// The admin kubeconfig (for kubectl and the like).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The local control plane (locked while in use), `None` on a cluster of the user's.
    pub async fn local(&self) -> Option<tokio::sync::MutexGuard<'_, ControlPlane>> {
        match &self.local {
            Some(cp) => Some(cp.lock().await),
            None => None,
        }
    }

    /// Whether the tests started the control plane (and so can restart its processes).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// Restarts kube-apiserver of the **shared** local control plane (same port, etcd
    /// data, flags and credentials; see `ControlPlane::restart_apiserver`) and waits until
    /// it is ready again; returns how long it was away. Every client and watcher of the
    /// test binary sees its connections drop, so only a test binary whose tests expect
    /// that may call it (e.g. `tests/soak.rs`, one test at a time); tests that want a
    /// restart without disturbing others use [`private_control_plane`].
    ///
    /// `None` on a cluster of the user's (nothing to restart): the caller skips, saying so.
    pub async fn restart_apiserver(&self) -> Option<BoxResult<Duration>> {
        let mut cp = self.local.as_ref()?.lock().await;
        let t0 = Instant::now();
        Some(
            cp.restart_apiserver()
                .await
                .map(|()| t0.elapsed())
                .map_err(Into::into),
        )
    }

    pub fn version(&self) -> &ServerVersion {
        &self.version
    }

    /// Names of the CRDs installed from `crds/`.
    pub fn installed_crds(&self) -> &[String] {
        &self.crds
    }

    /// A client for a static-token user of the local control plane (e.g.
    /// [`operator_user()`]). `None` on a cluster of the user's: use
    /// [`TestNamespace::service_account_client`] there.
    pub async fn client_for_user(&self, user: &str) -> Option<Client> {
        let path = self
            .local
            .as_ref()?
            .lock()
            .await
            .kubeconfig_for_user(user)
            .unwrap_or_else(|e| panic!("kubeconfig for {user}: {e}"));
        Some(
            client_from_kubeconfig(&path)
                .await
                .unwrap_or_else(|e| panic!("client for {user}: {e}")),
        )
    }

    /// A fresh namespace for one test; see [`TestNamespace`].
    pub async fn namespace(&self, test_name: &str) -> TestNamespace {
        TestNamespace::create(self, test_name).await
    }
}

/// A client from a kubeconfig file (its current context).
/// Creates namespace `name` unless it exists.
pub async fn ensure_namespace(client: &Client, name: &str) -> BoxResult<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub async fn client_from_kubeconfig(path: &Path) -> BoxResult<Client> {
    Ok(Client::try_from(config_from_kubeconfig(path).await?)?)
}

async fn config_from_kubeconfig(path: &Path) -> BoxResult<Config> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
}

/// A client for the cluster of `kubeconfig` authenticating with a bearer `token` instead
/// of the kubeconfig's credentials.
pub async fn client_with_token(kubeconfig: &Path, token: &str) -> BoxResult<Client> {
    let mut config = config_from_kubeconfig(kubeconfig).await?;
    config.auth_info = serde_json::from_value(serde_json::json!({ "token": token }))?;
    Ok(Client::try_from(config)?)
}

pub async fn server_version(client: &Client) -> BoxResult<ServerVersion> {
    let info = client.apiserver_version().await?;
    let num = |s: &str| -> u32 {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0)
    };
    Ok(ServerVersion {
        major: num(&info.major),
        minor: num(&info.minor),
        git_version: info.git_version,
    })
}

// ---- waiting -------------------------------------------------------------------------

/// What a [`wait_for`] condition returns: `bool`, `Option<T>` (done with `T`), or a
/// `Result` of either (an `Err` means "not yet", and is reported if time runs out).
pub trait Outcome {
    type Output;
    fn into_outcome(self) -> Result<Option<Self::Output>, String>;
}

impl Outcome for bool {
    type Output = ();
    fn into_outcome(self) -> Result<Option<()>, String> {
        Ok(self.then_some(()))
    }
}

impl<T> Outcome for Option<T> {
    type Output = T;
    fn into_outcome(self) -> Result<Option<T>, String> {
        Ok(self)
    }
}

impl<O: Outcome, E: Display> Outcome for Result<O, E> {
    type Output = O::Output;
    fn into_outcome(self) -> Result<Option<O::Output>, String> {
        self.map_err(|e| e.to_string())?.into_outcome()
    }
}

/// Polls `condition` (50 ms, backing off to 500 ms) until it holds, and returns what it
/// returned; panics after `timeout` naming `what` was awaited and the last error seen.
pub async fn wait_for<F, Fut>(
    what: impl Display,
    timeout: Duration,
    mut condition: F,
) -> <Fut::Output as Outcome>::Output
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Outcome,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(50);
    let mut last_error = None;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match condition().await.into_outcome() {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if started.elapsed() >= timeout {
            panic!(
                "timed out after {timeout:?} ({attempts} checks) waiting for {what}{}",
                last_error
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(delay.min(timeout.saturating_sub(started.elapsed()))).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// Watches one object until `condition` holds (kube-runtime's `await_condition`), with a
/// deadline; returns the object (`None` if it does not exist and the condition accepts
/// that). Panics naming `what` on timeout.
pub async fn wait_for_object<K>(
    api: &Api<K>,
    name: &str,
    what: impl Display,
    timeout: Duration,
    condition: impl Condition<K>,
) -> Option<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(obj)) => obj,
        Ok(Err(e)) => panic!("watching {name} for {what}: {e}"),
        Err(_) => panic!("timed out after {timeout:?} waiting for {what} ({name})"),
    }
}

/// Waits until `name` is gone (404).
pub async fn wait_deleted<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    wait_for(format!("{name} to be deleted"), timeout, || async move {
        api.get_opt(name).await.map(|o| o.is_none())
    })
    .await
}

// ---- namespaces ------------------------------------------------------------------------

/// A namespace of its own for one test: `t-<test name>-<random>`, labelled
/// `dcr-operator.io/test=true`, deleted (with the ClusterRoles and ClusterRoleBindings
/// labelled `dcr-operator.io/test-namespace=<it>`) when dropped, also when the test
/// panics, unless `DCR_TEST_KEEP_NAMESPACES=1`.
pub struct TestNamespace {
    name: String,
    kubeconfig: PathBuf,
}

impl TestNamespace {
    async fn create(cluster: &Cluster, test_name: &str) -> TestNamespace {
        let slug: String = test_name
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let slug: String = slug.trim_matches('-').chars().take(40).collect();
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let name = format!("t-{}-{suffix}", slug.trim_end_matches('-'));
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_LABEL.to_string(), "true".to_string())].into()),
                annotations: Some([("dcr-operator.io/test-name".to_string(), test_name.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let client = cluster.client().await;
        Api::<Namespace>::all(client)
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        TestNamespace {
            name,
            kubeconfig: cluster.kubeconfig.clone(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Labels for cluster-scoped objects made for this test, so they go with it.
    pub fn owned_labels(&self) -> std::collections::BTreeMap<String, String> {
        [
            (TEST_LABEL.to_string(), "true".to_string()),
            (TEST_NAMESPACE_LABEL.to_string(), self.name.clone()),
        ]
        .into()
    }

    /// An `Api<K>` in this namespace.
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(client.clone(), &self.name)
    }

    /// Creates ServiceAccount `name` here (if missing) and returns a client with a token
    /// for it from the TokenRequest API: a real, non-admin identity
    /// (`system:serviceaccount:<ns>:<name>`) on any cluster, with no permissions until
    /// RBAC grants some.
    pub async fn service_account_client(&self, client: &Client, name: &str) -> Client {
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &self.name);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        match sas.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("creating ServiceAccount {name}: {e}"),
        }
        let request: k8s_openapi::api::authentication::v1::TokenRequest =
            serde_json::from_value(serde_json::json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": { "audiences": [], "expirationSeconds": 3600 }
            }))
            .expect("TokenRequest");
        let token = sas
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("TokenRequest for {}/{name}: {e}", self.name))
            .status
            .expect("TokenRequest status")
            .token;
        client_with_token(&self.kubeconfig, &token)
            .await
            .unwrap_or_else(|e| panic!("client for ServiceAccount {name}: {e}"))
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var(KEEP_NAMESPACES_ENV).is_ok_and(|v| v == "1") {
            eprintln!("tests: keeping namespace {}", self.name);
            return;
        }
        let (name, kubeconfig) = (self.name.clone(), self.kubeconfig.clone());
        // Drop may run on the test's runtime, or while it unwinds: delete from a thread
        // with a runtime of its own, and wait for the request (not for the deletion).
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let client = client_from_kubeconfig(&kubeconfig).await.ok()?;
                let selector = format!("{TEST_NAMESPACE_LABEL}={name}");
                let lp = ListParams::default().labels(&selector);
                let dp = DeleteParams::background();
                let _ = Api::<ClusterRoleBinding>::all(client.clone())
                    .delete_collection(&dp, &lp)
                    .await;
                let _ = Api::<ClusterRole>::all(client.clone())
                    .delete_collection(&dp, &lp)
                    .await;
                Api::<Namespace>::all(client).delete(&name, &dp).await.ok()
            })
        });
        let _ = done.join();
    }
}

// ---- create or replace -------------------------------------------------------------------

/// Creates `obj`, or replaces the existing object of that name (retrying on conflicts):
/// what `kubectl create`/`replace` do, without server-side apply.
pub async fn create_or_replace<K>(api: &Api<K>, obj: &K) -> kube::Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = obj.name_any();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match api.create(&PostParams::default(), obj).await {
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            other => return other,
        }
        let mut desired = obj.clone();
        if let Some(current) = api.get_opt(&name).await? {
            desired.meta_mut().resource_version = current.meta().resource_version.clone();
            match api.replace(&name, &PostParams::default(), &desired).await {
                Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => continue,
                other => return other,
            }
        }
    }
}

// ---- CRDs ---------------------------------------------------------------------------------

/// The YAML documents of a file as JSON values (empty documents skipped).
pub fn yaml_documents(text: &str) -> BoxResult<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// Every CustomResourceDefinition in `dir/*.yaml` (and `*.yml`), sorted by file name.
pub fn read_crd_dir(dir: &Path) -> BoxResult<Vec<(PathBuf, Value)>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("reading {}: {e}", dir.display()).into()),
    };
    files.sort();
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for doc in yaml_documents(&text).map_err(|e| format!("{}: {e}", file.display()))? {
            if doc["kind"] == "CustomResourceDefinition" {
                crds.push((file.clone(), doc));
            }
        }
    }
    Ok(crds)
}

/// Removes every `x-kubernetes-validations` (CEL rules) from a CRD or schema; returns how
/// many were removed. Keys under `properties` are field names, not keywords, and are kept.
pub fn strip_cel_rules(v: &mut Value) -> usize {
    fn walk(v: &mut Value, keys_are_fields: bool) -> usize {
        match v {
            Value::Object(map) => {
                let mut n = 0;
                if !keys_are_fields && map.remove("x-kubernetes-validations").is_some() {
                    n += 1;
                }
                for (k, child) in map.iter_mut() {
                    let fields = !keys_are_fields
                        && matches!(k.as_str(), "properties" | "patternProperties" | "definitions");
                    n += walk(child, fields);
                }
                n
            }
            Value::Array(items) => items.iter_mut().map(|i| walk(i, false)).sum(),
            _ => 0,
        }
    }
    walk(v, false)
}

/// The CRD as this server accepts it: CEL rules stripped below 1.25.
pub fn crd_for_server(mut crd: Value, version: &ServerVersion) -> Value {
    if !version.supports_cel_rules() {
        strip_cel_rules(&mut crd);
    }
    crd
}

/// Creates or replaces a CRD and waits until it is established; the CRD as stored.
pub async fn install_crd(
    client: &Client,
    crd: Value,
    version: &ServerVersion,
) -> BoxResult<CustomResourceDefinition> {
    let crd: CustomResourceDefinition = serde_json::from_value(crd_for_server(crd, version))?;
    let name = crd.name_any();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    create_or_replace(&api, &crd)
        .await
        .map_err(|e| format!("installing CRD {name}: {e}"))?;
    let established = tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(api.clone(), &name, conditions::is_crd_established()),
    )
    .await;
    match established {
        Ok(Ok(Some(crd))) => Ok(crd),
        Ok(Ok(None)) => Err(format!("CRD {name} vanished").into()),
        Ok(Err(e)) => Err(format!("watching CRD {name}: {e}").into()),
        Err(_) => {
            let conds = api
                .get(&name)
                .await
                .ok()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .map(|c| format!("{c:?}"))
                .unwrap_or_default();
            Err(format!("CRD {name} not established after 30s: {conds}").into())
        }
    }
}

/// Installs a CRD given as YAML (see [`install_crd`]).
pub async fn install_crd_yaml(
    client: &Client,
    yaml: &str,
    version: &ServerVersion,
) -> BoxResult<CustomResourceDefinition> {
    let doc = yaml_documents(yaml)?.into_iter().next().ok_or("empty CRD YAML")?;
    install_crd(client, doc, version).await
}

/// Installs every CRD of `dir/*.yaml`; returns their names.
pub async fn install_crds_from_dir(
    client: &Client,
    dir: &Path,
    version: &ServerVersion,
) -> BoxResult<Vec<String>> {
    let mut names = Vec::new();
    for (file, crd) in read_crd_dir(dir)? {
        let installed = install_crd(client, crd, version)
            .await
            .map_err(|e| format!("{}: {e}", file.display()))?;
        names.push(installed.name_any());
    }
    Ok(names)
}

// ---- RBAC -----------------------------------------------------------------------------------

/// Creates or replaces the ClusterRole(s) in `yaml` (other kinds in it are ignored),
/// adding `labels` (e.g. [`TestNamespace::owned_labels`], so the role goes with the test);
/// with `rename`, the (single) role is stored under that name. Returns the roles stored.
pub async fn apply_cluster_role_yaml(
    client: &Client,
    yaml: &str,
    rename: Option<&str>,
    labels: &std::collections::BTreeMap<String, String>,
) -> BoxResult<Vec<ClusterRole>> {
    let api: Api<ClusterRole> = Api::all(client.clone());
    let mut stored = Vec::new();
    for doc in yaml_documents(yaml)? {
        if doc["kind"] != "ClusterRole" {
            continue;
        }
        let mut role: ClusterRole = serde_json::from_value(doc)?;
        if let Some(name) = rename {
            role.metadata.name = Some(name.to_string());
        }
        role.metadata
            .labels
            .get_or_insert_with(Default::default)
            .extend(labels.clone());
        stored.push(create_or_replace(&api, &role).await?);
    }
    if stored.is_empty() {
        return Err("no ClusterRole in the YAML".into());
    }
    if rename.is_some() && stored.len() > 1 {
        return Err("rename needs a single ClusterRole".into());
    }
    Ok(stored)
}

/// RBAC subject for a user name (static token users, or any authenticated name).
pub fn user_subject(name: &str) -> Subject {
    Subject {
        kind: "User".into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        name: name.into(),
        namespace: None,
    }
}

/// RBAC subject for a ServiceAccount.
pub fn service_account_subject(namespace: &str, name: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        api_group: None,
        name: name.into(),
        namespace: Some(namespace.into()),
    }
}

/// Binds ClusterRole `role` to `subject` cluster-wide (ClusterRoleBinding `binding`).
pub async fn bind_cluster_role(
    client: &Client,
    binding: &str,
    role: &str,
    subject: Subject,
    labels: &std::collections::BTreeMap<String, String>,
) -> BoxResult<ClusterRoleBinding> {
    let crb = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(binding.into()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![subject]),
    };
    Ok(create_or_replace(&Api::all(client.clone()), &crb).await?)
}

/// Applies the ClusterRole in `yaml` under `<namespace>-<role>` and binds it to `subject`,
/// both labelled to go with the test namespace. Returns the role's name.
pub async fn grant_cluster_role_yaml(
    client: &Client,
    ns: &TestNamespace,
    yaml: &str,
    subject: Subject,
) -> BoxResult<String> {
    let first = yaml_documents(yaml)?
        .into_iter()
        .find(|d| d["kind"] == "ClusterRole")
        .ok_or("no ClusterRole in the YAML")?;
    let base = first["metadata"]["name"].as_str().unwrap_or("role").to_string();
    let name = format!("{}-{base}", ns.name());
    apply_cluster_role_yaml(client, yaml, Some(&name), &ns.owned_labels()).await?;
    bind_cluster_role(client, &name, &name, subject, &ns.owned_labels()).await?;
    Ok(name)
}

/// Whether `err` is the API's 403 Forbidden.
pub fn is_forbidden(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 403)
}

/// Whether `err` is the API's 404 Not Found.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

// ---- a private control plane -------------------------------------------------------------

/// A control plane of the caller's own, not shared (for tests that restart the apiserver).
/// `None`, after printing that the test is skipped, when the tests run against a cluster
/// of the user's.
pub async fn private_control_plane(test: &str) -> Option<ControlPlane> {
    if let Some(path) = external_kubeconfig() {
        eprintln!(
            "SKIPPED {test}: it needs a local control plane it can restart; the tests run against {}",
            path.display()
        );
        return None;
    }
    Some(
        ControlPlane::start(ControlPlaneOptions::default())
            .await
            .unwrap_or_else(|e| panic!("starting a private control plane: {e}")),
    )
}

// ---- a test CRD ---------------------------------------------------------------------------

/// Group of the test CRD [`WIDGET_CRD_YAML`].
pub const WIDGET_GROUP: &str = "tests.dcr-operator.io";

/// A namespaced test CRD exercising what the operator's CRDs rely on: a structural schema
/// with `required`, `enum`, `maxLength`, `minimum`, defaults, pruning of unknown fields, a
/// CEL rule (enforced from 1.25 on, stripped for older servers), the status subresource,
/// printer columns, a short name and a category. Cluster-scoped and shared by all tests
/// (installing it is idempotent).
pub const WIDGET_CRD_YAML: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.tests.dcr-operator.io
spec:
  group: tests.dcr-operator.io
  scope: Namespaced
  names:
    kind: Widget
    plural: widgets
    singular: widget
    listKind: WidgetList
    shortNames: [wdg]
    categories: [dcrtest]
  versions:
    - name: v1
      served: true
      storage: true
      subresources:
        status: {}
      additionalPrinterColumns:
        - name: Size
          type: string
          jsonPath: .spec.size
        - name: Phase
          type: string
          jsonPath: .status.phase
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            spec:
              type: object
              required: [size]
              x-kubernetes-validations:
                - rule: "self.replicas <= 10"
                  message: "replicas must be at most 10"
              properties:
                size:
                  type: string
                  enum: [small, medium, large]
                label:
                  type: string
                  maxLength: 10
                replicas:
                  type: integer
                  minimum: 0
                  default: 1
                color:
                  type: string
                  default: blue
            status:
              type: object
              properties:
                phase:
                  type: string
                observedGeneration:
                  type: integer
"#;

/// The `ApiResource` of the test Widget kind.
pub fn widget_resource() -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(WIDGET_GROUP, "v1", "Widget"),
        "widgets",
    )
}

/// Installs the test Widget CRD (idempotent) and returns an `Api` for Widgets in `ns`.
pub async fn widgets(client: &Client, cluster: &Cluster, ns: &str) -> Api<kube::api::DynamicObject> {
    install_crd_yaml(client, WIDGET_CRD_YAML, cluster.version())
        .await
        .unwrap_or_else(|e| panic!("installing the Widget CRD: {e}"));
    Api::namespaced_with(client.clone(), ns, &widget_resource())
}

/// A Widget object with the given spec.
pub fn widget(name: &str, spec: Value) -> kube::api::DynamicObject {
    kube::api::DynamicObject::new(name, &widget_resource()).data(serde_json::json!({ "spec": spec }))
}
