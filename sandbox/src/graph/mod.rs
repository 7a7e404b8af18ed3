//! A stateful Microsoft Graph v1.0 + Entra ID token-endpoint emulator, written from
//! `graph-contract.md` (cited as "contract §n" throughout). It shares no types with the
//! operator's Graph client, so the two cannot be wrong the same way.
//!
//! One server answers both halves on one base URL:
//! * the token endpoints `/{tenant}/oauth2/v2.0/token` and `/{tenant}/oauth2/token`
//!   (client credentials with a secret or a federated client assertion), tenant by GUID or
//!   domain;
//! * Graph `/v1.0/applications`, `/servicePrincipals`, `/directory/deletedItems`, passwords,
//!   owners and federated identity credentials, with Graph's error envelope, headers,
//!   upsert, soft delete, `$filter`/paging/delta, replication lag and throttling;
//! * control and inspection endpoints under `/_emulator/` (see [`control`]).
//!
//! It is served over https with a test CA generated once per process ([`GraphEmulator::ca_pem`],
//! [`GraphEmulator::ca_path`]), or over plain http.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use sandbox::graph::{EmulatorConfig, GraphEmulator, GraphPermission};
//!
//! let (emu, admin) =
//!     GraphEmulator::start_with_admin(EmulatorConfig::default(), GraphPermission::ApplicationReadWriteOwnedBy).await?;
//! let http = emu.http_client(); // trusts the emulator's CA
//! let token: serde_json::Value = http
//!     .post(emu.token_url(&admin.tenant_id))
//!     .form(&[
//!         ("grant_type", "client_credentials"),
//!         ("client_id", admin.client_id.as_str()),
//!         ("client_secret", admin.client_secret.as_str()),
//!         ("scope", "https://graph.microsoft.com/.default"),
//!     ])
//!     .send()
//!     .await?
//!     .json()
//!     .await?;
//! let apps = http
//!     .get(format!("{}/applications", emu.graph_v1()))
//!     .bearer_auth(token["access_token"].as_str().unwrap())
//!     .send()
//!     .await?;
//! assert_eq!(apps.status(), 200);
//! println!("{:?}", emu.requests());
//! emu.shutdown().await;
//! # Ok(()) }
//! ```

mod applications;
mod clock;
mod config;
mod context;
pub mod control;
mod deleted_items;
mod delta;
mod errors;
mod faults;
mod federated;
mod issuers;
mod query;
mod requests;
mod routes;
mod seed;
mod server;
mod service_principals;
mod state;
mod throttle;
pub(crate) mod tls;
mod token;
mod validate;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::{DateTime, Utc};

pub use config::{
    Assumptions, EmulatorConfig, FaultConfig, FaultScope, InactiveSecretError, Limits, Quota, SpLagError,
    ThrottleConfig,
};
pub use issuers::TestIssuer;
pub use requests::{OperationCount, RequestRecord};
pub use seed::{AdminApp, AppSpec, GraphPermission, TenantInfo, TenantSpec};
pub use state::{
    ApplicationSnapshot, PasswordSnapshot, ServicePrincipalSnapshot, StateSnapshot, TenantSize,
    TenantSnapshot,
};
pub use token::GRAPH_APP_ID;

use server::Shared;

/// A running emulator. Cheap to start (the CA is generated once per process); one per test
/// is fine, and one can also be shared by concurrent tests (each seeding its own tenant).
/// Dropping it stops the server; [`GraphEmulator::shutdown`] also waits for it.
pub struct GraphEmulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    handle: axum_server::Handle,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    ca: &'static tls::TestCa,
}

impl std::fmt::Debug for GraphEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphEmulator")
            .field("base_url", &self.shared.base_url)
            .finish()
    }
}

impl GraphEmulator {
    /// Bind `cfg.listen` (default `127.0.0.1:0`, a free port) and serve. Must be called
    /// inside a tokio runtime.
    pub async fn start(cfg: EmulatorConfig) -> anyhow::Result<GraphEmulator> {
        Self::start_with_public_url(cfg, None).await
    }

    /// Like [`GraphEmulator::start`], advertising `public_url` (e.g.
    /// `https://graph-emulator:8443` in a docker network) as the base URL instead of the
    /// bound address. Links in responses follow the `Host` a client used either way.
    pub async fn start_with_public_url(
        cfg: EmulatorConfig,
        public_url: Option<String>,
    ) -> anyhow::Result<GraphEmulator> {
        cfg.validate().map_err(anyhow::Error::msg)?;
        // axum-server is built without a default provider; rustls must use ring here.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = tls::ca()?;
        if let Some(path) = &cfg.ca_out {
            ca.write_to(path)?;
        }
        let listener =
            std::net::TcpListener::bind(cfg.listen).with_context(|| format!("binding {}", cfg.listen))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let scheme = if cfg.tls { "https" } else { "http" };
        let host = match addr.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
            ip if ip.is_unspecified() => "[::1]".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let base_url = public_url
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("{scheme}://{host}:{}", addr.port()));
        let shared = Arc::new(Shared::new(cfg.clone(), base_url, ca.pem.clone()));
        let app = server::router(shared.clone()).into_make_service();
        let handle = axum_server::Handle::new();
        let task = if cfg.tls {
            let tls =
                axum_server::tls_rustls::RustlsConfig::from_config(ca.server_config(&cfg.tls_extra_names)?);
            tokio::spawn(
                axum_server::from_tcp_rustls(listener, tls)
                    .handle(handle.clone())
                    .serve(app),
            )
        } else {
            tokio::spawn(axum_server::from_tcp(listener).handle(handle.clone()).serve(app))
        };
        Ok(GraphEmulator {
            shared,
            addr,
            handle,
            task: Some(task),
            ca,
        })
    }

    /// Start, seed one tenant and one admin app holding `permission` (the operator's
    /// "initial client").
    pub async fn start_with_admin(
        cfg: EmulatorConfig,
        permission: GraphPermission,
    ) -> anyhow::Result<(GraphEmulator, AdminApp)> {
        let emu = Self::start(cfg).await?;
        let tenant = emu.seed_tenant(TenantSpec::default());
        let admin = emu.seed_admin_app(&tenant.id, permission);
        Ok((emu, admin))
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT` (no trailing slash): serves the token endpoints and Graph.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The authority host to configure in place of `https://login.microsoftonline.com`.
    pub fn authority_host(&self) -> String {
        self.base_url()
    }

    /// The Graph endpoint to configure in place of `https://graph.microsoft.com`
    /// (append `/v1.0`).
    pub fn graph_endpoint(&self) -> String {
        self.base_url()
    }

    /// `{graph_endpoint}/v1.0`.
    pub fn graph_v1(&self) -> String {
        format!("{}/v1.0", self.base_url())
    }

    /// The v2 token endpoint for a tenant (GUID or domain).
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.base_url())
    }

    /// The v1 token endpoint for a tenant (GUID or domain).
    pub fn token_url_v1(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/token", self.base_url())
    }

    /// The test CA certificate (PEM) that signs the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca.pem
    }

    /// A file holding [`GraphEmulator::ca_pem`] (per process, in the temp directory).
    pub fn ca_path(&self) -> &Path {
        &self.ca.path
    }

    /// A reqwest client that trusts the emulator's CA and bypasses proxies.
    pub fn http_client(&self) -> reqwest::Client {
        let cert = reqwest::Certificate::from_pem(self.ca.pem.as_bytes()).expect("the generated CA parses");
        reqwest::Client::builder()
            .add_root_certificate(cert)
            .no_proxy()
            .build()
            .expect("building a reqwest client")
    }

    /// Create a tenant.
    ///
    /// # Panics
    /// When the id or domain is already taken.
    pub fn seed_tenant(&self, spec: TenantSpec) -> TenantInfo {
        seed::tenant(&mut self.shared.dir.lock().unwrap(), spec)
            .unwrap_or_else(|e| panic!("seed_tenant: {e}"))
    }

    /// Create an application with a service principal and a known secret in `tenant`
    /// (GUID or domain), visible at once (no replication lag, no activation delay).
    ///
    /// # Panics
    /// When the tenant does not exist or the client id is taken.
    pub fn seed_app(&self, tenant: &str, spec: AppSpec) -> AdminApp {
        let now = self.shared.clock.now();
        seed::app(&mut self.shared.dir.lock().unwrap(), tenant, spec, now)
            .unwrap_or_else(|e| panic!("seed_app: {e}"))
    }

    /// The operator's initial client: an app holding one Microsoft Graph application
    /// permission (`Application.ReadWrite.OwnedBy` or `.All`), with a service principal and
    /// a known secret.
    ///
    /// # Panics
    /// When the tenant does not exist.
    pub fn seed_admin_app(&self, tenant: &str, permission: GraphPermission) -> AdminApp {
        self.seed_app(tenant, AppSpec::admin(permission))
    }

    /// Trust `issuer`'s JWKS for federated client assertions (as `PUT /_emulator/issuers`).
    ///
    /// # Panics
    /// When the issuer or the JWKS is invalid.
    pub fn register_issuer(&self, issuer: &str, jwks: &serde_json::Value) {
        control::register_issuer(&self.shared, issuer, jwks)
            .unwrap_or_else(|e| panic!("register_issuer: {e}"));
    }

    /// The current runtime configuration.
    pub fn config(&self) -> EmulatorConfig {
        self.shared.config()
    }

    /// Replace the runtime configuration (as `PUT /_emulator/config`). `listen`, `tls`,
    /// `tls_extra_names`, `ca_out` and `clock_behind` cannot change after start and are
    /// ignored.
    ///
    /// # Panics
    /// When the configuration is invalid (see [`EmulatorConfig::validate`]).
    pub fn set_config(&self, cfg: EmulatorConfig) {
        let v = serde_json::to_value(cfg).expect("config serializes");
        control::patch_config(&self.shared, &v).unwrap_or_else(|e| panic!("set_config: {e}"));
    }

    /// Change the runtime configuration in place.
    pub fn update_config(&self, f: impl FnOnce(&mut EmulatorConfig)) {
        let mut cfg = self.config();
        f(&mut cfg);
        self.set_config(cfg);
    }

    /// Replace the fault switches.
    pub fn set_faults(&self, faults: FaultConfig) {
        self.update_config(|c| c.faults = faults);
    }

    /// Set a tenant's password-lifetime policy (`None`: no cap for this tenant).
    ///
    /// # Panics
    /// When the tenant does not exist.
    pub fn set_tenant_password_policy(&self, tenant: &str, max_lifetime: Option<Duration>) {
        let mut dir = self.shared.dir.lock().unwrap();
        let id = dir
            .tenant_id_by_ref(tenant)
            .unwrap_or_else(|| panic!("unknown tenant '{tenant}'"));
        dir.tenants.get_mut(&id).expect("found").password_max_lifetime = Some(max_lifetime);
    }

    /// Move the emulated clock forward (expire tokens and passwords, end replication lag,
    /// refill throttling buckets) without sleeping.
    pub fn advance_clock(&self, by: Duration) {
        self.shared.clock.advance(by);
    }

    /// The emulated time.
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.clock.now()
    }

    /// Make every access token issued so far expire now (Graph answers 401
    /// "Access token has expired or is not yet valid."). Returns how many there were.
    pub fn expire_tokens(&self) -> usize {
        control::expire_tokens(&self.shared)
    }

    /// Refill all throttling buckets.
    pub fn reset_throttling(&self) {
        self.shared.throttle.lock().unwrap().reset();
    }

    /// Issue an access token for a seeded app directly (no HTTP, no faults, not logged):
    /// handy for out-of-band changes while faults are on.
    ///
    /// # Panics
    /// When the app or its service principal does not exist.
    pub fn mint_token(&self, app: &AdminApp) -> String {
        let now = self.shared.clock.now();
        let lifetime = self.config().token_lifetime;
        let mut dir = self.shared.dir.lock().unwrap();
        let tid = dir.tenant_id_by_ref(&app.tenant_id).expect("tenant exists");
        let app_id = uuid::Uuid::parse_str(&app.client_id).expect("client id is a GUID");
        let t = &dir.tenants[&tid];
        let sp = t.sp_by_app_id(app_id).expect("the app has a service principal");
        let (sp_id, roles) = (sp.id, sp.graph_roles.iter().cloned().collect());
        token::mint(&mut dir, tid, app_id, sp_id, roles, "seeded", "1", now, lifetime).0
    }

    /// Get a token for `app` through the v2 token endpoint over HTTP (subject to faults).
    pub async fn token(&self, app: &AdminApp) -> anyhow::Result<String> {
        let resp = self
            .http_client()
            .post(self.token_url(&app.tenant_id))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", app.client_id.as_str()),
                ("client_secret", app.client_secret.as_str()),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await?;
        match body.get("access_token").and_then(|t| t.as_str()) {
            Some(t) if status.is_success() => Ok(t.to_string()),
            _ => anyhow::bail!(
                "token request failed with {status}: {}",
                body["error_description"]
            ),
        }
    }

    /// Everything in the directory, without secret values.
    pub fn state(&self) -> StateSnapshot {
        control::snapshot(&self.shared)
    }

    /// [`GraphEmulator::state`] as JSON (the `GET /_emulator/state` body).
    pub fn state_json(&self) -> serde_json::Value {
        serde_json::to_value(self.state()).expect("snapshot serializes")
    }

    /// The request log (token and Graph requests, oldest first).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log.lock().unwrap().records()
    }

    /// Request counts per operation (`application.create`, `token.v2`, ...).
    pub fn request_counts(&self) -> BTreeMap<String, OperationCount> {
        self.shared.log.lock().unwrap().counts()
    }

    /// Clear the request log and counts.
    pub fn clear_requests(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// Poll `condition` every 10 ms until it holds or `timeout` passes; returns whether it
    /// held. For waiting on a state (a request logged, an object created) without sleeps.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&GraphEmulator) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How many answers are held back right now ([`FaultConfig::hold_after_apply`]).
    pub fn held_responses(&self) -> usize {
        self.shared.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stop accepting connections, send held answers, give in-flight requests 200 ms, and
    /// wait for the server.
    pub async fn shutdown(mut self) {
        self.shared.release_all_held();
        self.handle.graceful_shutdown(Some(Duration::from_millis(200)));
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for GraphEmulator {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.shared.release_all_held();
            self.handle.shutdown();
        }
    }
}
