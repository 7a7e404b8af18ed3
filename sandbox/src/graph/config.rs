//! Emulator configuration: everything settable at start-up and (except the listener and TLS)
//! at run time through [`GraphEmulator::set_config`](super::GraphEmulator::set_config) or
//! `PUT /_emulator/config`.
//!
//! In JSON (control endpoint, `--config` file), field names are the Rust names and every
//! duration is a number of seconds (fractional allowed), `null` for "none".

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// The emulator's configuration. `Default` is: https on `127.0.0.1:0`, no replication lag,
/// no activation delay, no password policy, documented throttling on, no injected faults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatorConfig {
    /// Address to listen on (start-up only). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Serve https with the generated test CA (start-up only). `false` serves plain http.
    pub tls: bool,
    /// Extra DNS names or IP addresses for the server certificate, besides `127.0.0.1`,
    /// `::1` and `localhost` (start-up only), e.g. a docker service name.
    pub tls_extra_names: Vec<String>,
    /// Also write the CA certificate (PEM) to this file (start-up only). The CA is always
    /// written to a per-process temporary file too, see
    /// [`GraphEmulator::ca_path`](super::GraphEmulator::ca_path).
    pub ca_out: Option<PathBuf>,
    /// For this long after an application or service principal is created, reads, PATCH,
    /// addPassword (and other writes addressed to it) answer 404 `Request_ResourceNotFound`,
    /// a service principal create for the new app answers 400 `NoBackingApplicationObject`,
    /// and the token endpoint does not know it yet (contract §7, checklist 3). A new service
    /// principal is invisible as long: reads 404 and the token endpoint answers
    /// AADSTS7000229 for its app. After `addPassword`/`removePassword`, reads of the
    /// application show the earlier `passwordCredentials` as long (the token endpoint
    /// knows the change at once).
    #[serde(with = "secs")]
    pub replication_lag: Duration,
    /// For this long after an application or service principal is soft-deleted, deleted
    /// items do not show it yet: `GET`, `restore` and `DELETE` (purge) of
    /// `/directory/deletedItems/{id}` answer 404 and the lists omit it, while the live
    /// object is already gone. The directory replicates a deletion like a creation
    /// (contract §7); whether Entra's deleted items lag this way is UNVERIFIED. Zero (off)
    /// by default.
    #[serde(with = "secs")]
    pub deleted_items_lag: Duration,
    /// A new password works at the token endpoint only this long after `addPassword`
    /// (contract §4.1, checklist 4). Before that the token endpoint answers
    /// [`Assumptions::inactive_secret_error`].
    #[serde(with = "secs")]
    pub secret_activation_delay: Duration,
    /// Default tenant policy: the longest allowed password lifetime (`endDateTime -
    /// startDateTime`); `None` = no policy. A tenant can override it (contract §4.1, S44).
    #[serde(with = "opt_secs")]
    pub password_max_lifetime: Option<Duration>,
    /// `expires_in` of issued access tokens; 3599 s like Entra (contract §1.1).
    #[serde(with = "secs")]
    pub token_lifetime: Duration,
    /// Emulated seconds per real second. 1 = real time; 60 makes an hour pass in a minute;
    /// 0 freezes time so only [`GraphEmulator::advance_clock`](super::GraphEmulator::advance_clock)
    /// moves it. Token expiry, password validity, replication lag, activation delay and the
    /// throttling windows all run on this clock. `Retry-After` from the throttling buckets is
    /// converted to real seconds (at speed 0 it is reported in emulated seconds: advance the
    /// clock by that much).
    pub clock_speed: f64,
    /// Start the emulated clock this far behind real time (start-up only): clock skew
    /// between the provider and its client. Everything the emulator timestamps (creation
    /// times, password start dates) then looks that much older to a client that compares
    /// it with its own clock, e.g. a password just added looks older than the client's
    /// replication window. Inside the emulator nothing changes (all of it runs on this clock).
    #[serde(with = "secs")]
    pub clock_behind: Duration,
    /// The documented throttling token buckets (contract §2.2).
    pub throttling: ThrottleConfig,
    /// Injected faults: 429s, 503s, latency, dropped connections, lost responses.
    pub faults: FaultConfig,
    /// Choices made where the contract marks a fact UNVERIFIED (contract §10).
    pub assumptions: Assumptions,
    /// Limits and formats enforced on applications (contract §8).
    pub limits: Limits,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: true,
            tls_extra_names: Vec::new(),
            ca_out: None,
            replication_lag: Duration::ZERO,
            deleted_items_lag: Duration::ZERO,
            secret_activation_delay: Duration::ZERO,
            password_max_lifetime: None,
            token_lifetime: Duration::from_secs(3599),
            clock_speed: 1.0,
            clock_behind: Duration::ZERO,
            throttling: ThrottleConfig::default(),
            faults: FaultConfig::default(),
            assumptions: Assumptions::default(),
            limits: Limits::default(),
        }
    }
}

impl EmulatorConfig {
    /// Plain http instead of https (quick manual use; `azure_identity` refuses http authorities).
    pub fn plain_http(mut self) -> Self {
        self.tls = false;
        self
    }

    /// Set [`EmulatorConfig::replication_lag`].
    pub fn with_replication_lag(mut self, lag: Duration) -> Self {
        self.replication_lag = lag;
        self
    }

    /// Set [`EmulatorConfig::deleted_items_lag`].
    pub fn with_deleted_items_lag(mut self, lag: Duration) -> Self {
        self.deleted_items_lag = lag;
        self
    }

    /// Set [`EmulatorConfig::secret_activation_delay`].
    pub fn with_secret_activation_delay(mut self, delay: Duration) -> Self {
        self.secret_activation_delay = delay;
        self
    }

    /// Set [`EmulatorConfig::password_max_lifetime`].
    pub fn with_password_max_lifetime(mut self, max: Option<Duration>) -> Self {
        self.password_max_lifetime = max;
        self
    }

    /// Set [`EmulatorConfig::throttling`].
    pub fn with_throttling(mut self, throttling: ThrottleConfig) -> Self {
        self.throttling = throttling;
        self
    }

    /// Set [`EmulatorConfig::clock_behind`].
    pub fn with_clock_behind(mut self, behind: Duration) -> Self {
        self.clock_behind = behind;
        self
    }

    /// Set [`EmulatorConfig::faults`].
    pub fn with_faults(mut self, faults: FaultConfig) -> Self {
        self.faults = faults;
        self
    }

    /// Set [`EmulatorConfig::clock_speed`].
    pub fn with_clock_speed(mut self, speed: f64) -> Self {
        self.clock_speed = speed;
        self
    }

    /// Check values that would make the emulator misbehave (negative rates and so on).
    pub fn validate(&self) -> Result<(), String> {
        let rate = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be between 0 and 1, got {v}"))
            }
        };
        rate("faults.throttle_rate", self.faults.throttle_rate)?;
        rate("faults.error_rate", self.faults.error_rate)?;
        rate("faults.drop_rate", self.faults.drop_rate)?;
        rate("faults.latency_rate", self.faults.latency_rate)?;
        if !(self.clock_speed.is_finite() && self.clock_speed >= 0.0) {
            return Err(format!("clock_speed must be >= 0, got {}", self.clock_speed));
        }
        if !(self.throttling.scale.is_finite() && self.throttling.scale >= 1.0) {
            return Err(format!(
                "throttling.scale must be >= 1, got {}",
                self.throttling.scale
            ));
        }
        if ![403, 503, 504].contains(&self.faults.error_status) {
            return Err("faults.error_status must be 403, 503 or 504".into());
        }
        if self.token_lifetime.is_zero() {
            return Err("token_lifetime must be > 0".into());
        }
        Ok(())
    }
}

/// A quota: `limit` requests (or resource units) per `window`, enforced as a token bucket
/// of capacity `limit` refilled continuously at `limit / window`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Bucket capacity.
    pub limit: u32,
    /// Time to refill an empty bucket.
    #[serde(with = "secs")]
    pub window: Duration,
}

impl Quota {
    /// `limit` per `window_secs` seconds.
    pub const fn per_secs(limit: u32, window_secs: u64) -> Quota {
        Quota {
            limit,
            window: Duration::from_secs(window_secs),
        }
    }
}

/// The identity-and-access throttling buckets of contract §2.2 (source S21). Defaults are
/// the documented figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Enforce the buckets at all. Injected 429s ([`FaultConfig`]) work either way.
    pub enabled: bool,
    /// Shrink every bucket: capacity and window are both divided by `scale` (≥ 1), so the
    /// sustained rate stays as documented while a burst of `limit / scale` already throttles.
    /// E.g. 1000 turns "3,000 writes per 150 s" into "3 writes per 0.15 s".
    pub scale: f64,
    /// Writes per app + tenant: 3,000 per 2 min 30 s.
    pub app_tenant_writes: Quota,
    /// Resource units per app + tenant for a small tenant (< 50 users): 3,500 per 10 s.
    pub app_tenant_resource_units_small: Quota,
    /// Same, medium tenant (50–500 users): 5,000 per 10 s.
    pub app_tenant_resource_units_medium: Quota,
    /// Same, large tenant (> 500 users): 8,000 per 10 s.
    pub app_tenant_resource_units_large: Quota,
    /// Resource units per app across all tenants: 150,000 per 20 s.
    pub app_resource_units: Quota,
    /// Writes per app across all tenants: 70,000 per 5 min.
    pub app_writes: Quota,
    /// Writes per tenant across all apps: 18,000 per 5 min.
    pub tenant_writes: Quota,
    /// POST/PATCH/DELETE on applications whose `signInAudience` includes personal accounts,
    /// per app + tenant: 60 per minute.
    pub personal_account_app_writes: Quota,
    /// Requests with `$select=keyCredentials` per tenant: 150 per minute (S22).
    pub key_credentials_select: Quota,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            enabled: true,
            scale: 1.0,
            app_tenant_writes: Quota::per_secs(3_000, 150),
            app_tenant_resource_units_small: Quota::per_secs(3_500, 10),
            app_tenant_resource_units_medium: Quota::per_secs(5_000, 10),
            app_tenant_resource_units_large: Quota::per_secs(8_000, 10),
            app_resource_units: Quota::per_secs(150_000, 20),
            app_writes: Quota::per_secs(70_000, 300),
            tenant_writes: Quota::per_secs(18_000, 300),
            personal_account_app_writes: Quota::per_secs(60, 60),
            key_credentials_select: Quota::per_secs(150, 60),
        }
    }
}

impl ThrottleConfig {
    /// Throttling switched off.
    pub fn disabled() -> Self {
        ThrottleConfig {
            enabled: false,
            ..Self::default()
        }
    }

    /// The documented buckets, shrunk by `scale` (see [`ThrottleConfig::scale`]).
    pub fn scaled(scale: f64) -> Self {
        ThrottleConfig {
            scale,
            ..Self::default()
        }
    }
}

/// Which endpoints the 503 / latency / drop faults apply to. Injected 429s only ever
/// apply to Graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultScope {
    /// Graph `/v1.0` requests only.
    #[default]
    Graph,
    /// Token endpoint requests only.
    Token,
    /// Both.
    All,
}

/// Injected faults. Rates are probabilities in `[0, 1]` drawn from a seeded generator;
/// `*_next` counters hit the next N matching requests first and count down (the remaining
/// count is visible in `GET /_emulator/config`). The control endpoints are never faulted.
///
/// Order per request: latency, then drop, then 503, then (Graph, after authentication)
/// the injected 429, then the throttling buckets, then the request is processed, and last
/// a 2xx answer may be held ([`FaultConfig::hold_after_apply`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Where 503s, latency and drops apply.
    pub scope: FaultScope,
    /// Only requests whose operation name (as in the request log, e.g. `application.create`,
    /// `application.addPassword`, `token.v2`) is listed are faulted; empty = all.
    pub operations: Vec<String>,
    /// Fraction of Graph requests answered 429 `TooManyRequests`.
    pub throttle_rate: f64,
    /// Answer the next N Graph requests 429.
    pub throttle_next: u32,
    /// `Retry-After` on injected 429s (real seconds, sent with millisecond precision);
    /// `None` omits the header (whether identity 429s always carry it is UNVERIFIED, §10).
    #[serde(with = "opt_secs")]
    pub throttle_retry_after: Option<Duration>,
    /// Fraction of requests answered with `error_status`.
    pub error_rate: f64,
    /// Answer the next N requests with `error_status`.
    pub error_next: u32,
    /// 503 (default) or 504 (contract §2.1: 504 may occur together with 503), or 403
    /// `Authorization_RequestDenied` on Graph calls (a consent or policy withdrawn under
    /// the caller, say).
    pub error_status: u16,
    /// `Retry-After` on injected 503/504s; `None` omits it.
    #[serde(with = "opt_secs")]
    pub error_retry_after: Option<Duration>,
    /// Fraction of requests whose connection is dropped without a response. The request
    /// is not processed. Over HTTP/1.1 the client sees the connection close with no
    /// response ("empty reply"); over HTTP/2 the stream is reset.
    pub drop_rate: f64,
    /// Drop the next N requests.
    pub drop_next: u32,
    /// Fraction of requests delayed by `latency`.
    pub latency_rate: f64,
    /// Added latency (real time).
    #[serde(with = "secs")]
    pub latency: Duration,
    /// Seed for the fault dice; `None` = random. Fixing it makes a run reproducible: every
    /// configuration update that carries a seed restarts the sequence.
    pub seed: Option<u64>,
    /// Lost responses: a request whose operation (as in the request log) is listed here is
    /// processed as usual (the directory changes), and if its answer is 2xx that answer is
    /// held back: the client waits as if the response were lost on the way. The request
    /// log records it at once with fault `held`, so a test can wait for it and then, e.g.,
    /// kill the client between the change and its acknowledgement. A held answer is sent
    /// when a configuration update no longer holds it (its operation or caller removed
    /// from these lists), or when the emulator shuts down. Error answers are never held.
    /// Independent of `scope` and `operations`.
    pub hold_after_apply: Vec<String>,
    /// Lost responses without a hold: for each entry, the next request of that operation
    /// whose answer is 2xx is processed as usual (the directory changes) and its connection
    /// is then dropped instead of answered; the entry is used up. The request log records
    /// fault `lost`. Independent of `scope`, `operations` and `hold_callers`.
    pub lose_after_apply: Vec<String>,
    /// Hold only requests from these callers (the request log's `appId`: the bearer
    /// token's application for Graph, the `client_id` for token requests), compared
    /// case-insensitively; empty = any caller.
    pub hold_callers: Vec<String>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            scope: FaultScope::Graph,
            operations: Vec::new(),
            throttle_rate: 0.0,
            throttle_next: 0,
            // The sample value of the Graph throttling doc (S20).
            throttle_retry_after: Some(Duration::from_millis(2_128)),
            error_rate: 0.0,
            error_next: 0,
            error_status: 503,
            error_retry_after: None,
            drop_rate: 0.0,
            drop_next: 0,
            latency_rate: 0.0,
            latency: Duration::ZERO,
            seed: None,
            hold_after_apply: Vec::new(),
            lose_after_apply: Vec::new(),
            hold_callers: Vec::new(),
        }
    }
}

impl FaultConfig {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// Answer the next `n` Graph requests 429 with the given `Retry-After`.
    pub fn throttle_next(n: u32, retry_after: Duration) -> Self {
        FaultConfig {
            throttle_next: n,
            throttle_retry_after: Some(retry_after),
            ..Self::default()
        }
    }

    /// Answer the next `n` requests 503 (no `Retry-After`).
    pub fn error_next(n: u32) -> Self {
        FaultConfig {
            error_next: n,
            ..Self::default()
        }
    }

    /// Drop the next `n` connections.
    pub fn drop_next(n: u32) -> Self {
        FaultConfig {
            drop_next: n,
            ..Self::default()
        }
    }

    /// Restrict the faults to these operations (names as in the request log).
    pub fn only(mut self, operations: &[&str]) -> Self {
        self.operations = operations.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Apply the 503 / latency / drop faults to this scope.
    pub fn in_scope(mut self, scope: FaultScope) -> Self {
        self.scope = scope;
        self
    }

    /// Process requests of these operations and hold their 2xx answers (lost responses;
    /// see [`FaultConfig::hold_after_apply`]).
    pub fn hold_after_apply(operations: &[&str]) -> Self {
        FaultConfig {
            hold_after_apply: operations.iter().map(|s| s.to_string()).collect(),
            ..Self::default()
        }
    }

    /// Hold only requests from these callers (see [`FaultConfig::hold_callers`]).
    pub fn from_callers(mut self, callers: &[&str]) -> Self {
        self.hold_callers = callers.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// The token-endpoint error for a password that matches but is not active yet
/// (activation delay). Users report both (contract §4.1, S46); the contract's checklist
/// names both; which one Entra sends when is UNVERIFIED.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InactiveSecretError {
    /// 401 `invalid_client` AADSTS7000215 "Invalid client secret provided".
    #[default]
    InvalidSecret,
    /// 401 `invalid_client` AADSTS7000222 "The provided client secret keys ... are expired".
    KeysExpired,
}

/// What a service principal create answers while its application is still replicating
/// (contract §5: both are observed and both retryable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpLagError {
    /// 400 `Request_BadRequest` with `details[0].code = NoBackingApplicationObject`.
    #[default]
    NoBackingApplicationObject,
    /// 403 `Authorization_RequestDenied` "When using this permission, the backing
    /// application of the service principal being created must in the local tenant".
    /// Sent only to `Application.ReadWrite.OwnedBy` callers; others get the 400.
    LocalTenant403,
}

/// Choices for facts the contract marks UNVERIFIED (§10), each switchable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Assumptions {
    /// HTTP status for AADSTS700016 (unknown client id): 400 (default) or 401.
    pub unknown_client_status: u16,
    /// HTTP status for AADSTS7000218 (neither secret nor assertion): 401 (default) or 400.
    pub missing_credential_status: u16,
    /// See [`InactiveSecretError`].
    pub inactive_secret_error: InactiveSecretError,
    /// Whether an app created by an `Application.ReadWrite.OwnedBy` caller gets the caller
    /// as owner automatically. Default `false`: the caller must bind itself with
    /// `owners@odata.bind`, as terraform does, or it cannot manage the app afterwards.
    pub owned_by_auto_owner: bool,
    /// Status of removePassword with an unknown keyId: 400 `Request_BadRequest` (default),
    /// 404 `Request_ResourceNotFound`, or 204 (treated as success).
    pub remove_unknown_password_status: u16,
    /// Echo a client-supplied `client-request-id` header (default) instead of always
    /// setting it equal to `request-id`.
    pub echo_client_request_id: bool,
    /// See [`SpLagError`].
    pub sp_create_lag_error: SpLagError,
    /// A soft-deleted application keeps its `identifierUris` reserved like its
    /// `uniqueName` (default `true`).
    pub identifier_uris_reserved_after_delete: bool,
    /// Identity-service 429s from the throttling buckets carry `Retry-After` (default
    /// `true`). Injected 429s use [`FaultConfig::throttle_retry_after`].
    pub bucket_429_retry_after: bool,
}

impl Default for Assumptions {
    fn default() -> Self {
        Assumptions {
            unknown_client_status: 400,
            missing_credential_status: 401,
            inactive_secret_error: InactiveSecretError::InvalidSecret,
            owned_by_auto_owner: false,
            remove_unknown_password_status: 400,
            echo_client_request_id: true,
            sp_create_lag_error: SpLagError::NoBackingApplicationObject,
            identifier_uris_reserved_after_delete: true,
            bucket_429_retry_after: true,
        }
    }
}

/// Application limits and formats (contract §8).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// `displayName` maximum for AzureAD-only audiences. The sources conflict (256 on the
    /// Graph resource page vs 120 on the Entra validation page); default 120, the stricter.
    pub display_name_max: usize,
    /// `displayName` maximum for audiences that include personal accounts (90).
    pub display_name_max_personal: usize,
    /// `description` maximum (1,024).
    pub description_max: usize,
    /// `notes` maximum: undocumented, default 1,024 (UNVERIFIED).
    pub notes_max: usize,
    /// `uniqueName` maximum length: undocumented, default 120 (UNVERIFIED). Whitespace
    /// and `'` are rejected (charset UNVERIFIED).
    pub unique_name_max: usize,
    /// Each tag: 1..=256 characters.
    pub tag_max: usize,
    /// Each identifier URI for AzureAD audiences: 255.
    pub identifier_uri_max: usize,
    /// Each identifier URI for personal-account audiences: 120; at most 50 URIs.
    pub identifier_uri_max_personal: usize,
    /// Identifier URIs per app for personal-account audiences.
    pub identifier_uris_count_personal: usize,
    /// `requiredResourceAccess` entries (APIs).
    pub required_resource_access_apis: usize,
    /// Permissions across `requiredResourceAccess` (400; 200 for personal audiences).
    pub required_resource_access_permissions: usize,
    /// Same, personal-account audiences.
    pub required_resource_access_permissions_personal: usize,
    /// `appRoles` + `oauth2PermissionScopes` (700).
    pub app_roles_and_scopes: usize,
    /// Owners per app (100).
    pub owners: usize,
    /// `owners@odata.bind` entries on create (20, as terraform notes).
    pub owners_bind_on_create: usize,
    /// Passwords per app for personal-account audiences (2).
    pub passwords_personal: usize,
    /// Federated identity credentials per app (20).
    pub federated_credentials: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            display_name_max: 120,
            display_name_max_personal: 90,
            description_max: 1_024,
            notes_max: 1_024,
            unique_name_max: 120,
            tag_max: 256,
            identifier_uri_max: 255,
            identifier_uri_max_personal: 120,
            identifier_uris_count_personal: 50,
            required_resource_access_apis: 50,
            required_resource_access_permissions: 400,
            required_resource_access_permissions_personal: 200,
            app_roles_and_scopes: 700,
            owners: 100,
            owners_bind_on_create: 20,
            passwords_personal: 2,
            federated_credentials: 20,
        }
    }
}

/// Durations as fractional seconds in JSON.
pub(crate) mod secs {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(|e| D::Error::custom(format!("{v} s: {e}")))
    }
}

/// Optional durations as fractional seconds or `null` in JSON.
pub(crate) mod opt_secs {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<f64>::deserialize(d)? {
            Some(v) => Duration::try_from_secs_f64(v)
                .map(Some)
                .map_err(|e| D::Error::custom(format!("{v} s: {e}"))),
            None => Ok(None),
        }
    }
}

/// Merge a JSON patch (objects merged recursively, anything else replaced) into `base`.
pub(crate) fn merge_json(base: &mut serde_json::Value, patch: &serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge_json(existing, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_json_with_durations_in_seconds() {
        let cfg = EmulatorConfig::default().with_replication_lag(Duration::from_millis(1500));
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["replication_lag"], 1.5);
        assert_eq!(json["password_max_lifetime"], serde_json::Value::Null);
        let back: EmulatorConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, cfg);
    }

    /// `deleted_items_lag`: for that long a deleted application is neither live nor in
    /// deleted items (get and purge answer 404); afterwards it can be purged.
    #[tokio::test]
    async fn deleted_items_lag_hides_a_deletion_from_deleted_items_for_a_while() {
        use crate::graph::{GraphEmulator, GraphPermission, TenantSpec};
        let cfg = EmulatorConfig::default()
            .with_clock_speed(0.0)
            .with_deleted_items_lag(Duration::from_secs(5));
        assert_eq!(serde_json::to_value(&cfg).unwrap()["deleted_items_lag"], 5.0);
        let emu = GraphEmulator::start(cfg).await.unwrap();
        let tenant = emu.seed_tenant(TenantSpec::default());
        let admin = emu.seed_admin_app(&tenant.id, GraphPermission::ApplicationReadWriteAll);
        let http = emu.http_client();
        let token = emu.mint_token(&admin);
        let call = |method: reqwest::Method, path: &str| {
            http.request(method, format!("{}{path}", emu.graph_v1()))
                .bearer_auth(&token)
        };
        let created: serde_json::Value = call(reqwest::Method::POST, "/applications")
            .json(&serde_json::json!({"displayName": "lagging"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["id"].as_str().unwrap().to_string();
        let status = |r: reqwest::RequestBuilder| async move { r.send().await.unwrap().status().as_u16() };
        assert_eq!(
            status(call(reqwest::Method::DELETE, &format!("/applications/{id}"))).await,
            204
        );
        let item = format!("/directory/deletedItems/{id}");
        assert_eq!(
            status(call(reqwest::Method::GET, &format!("/applications/{id}"))).await,
            404
        );
        assert_eq!(
            status(call(reqwest::Method::GET, &item)).await,
            404,
            "not in deleted items yet"
        );
        assert_eq!(
            status(call(reqwest::Method::DELETE, &item)).await,
            404,
            "cannot be purged yet"
        );
        emu.advance_clock(Duration::from_secs(5));
        assert_eq!(status(call(reqwest::Method::GET, &item)).await, 200);
        assert_eq!(status(call(reqwest::Method::DELETE, &item)).await, 204);
        emu.shutdown().await;
    }

    #[test]
    fn merge_patches_nested_objects_only() {
        let mut base = serde_json::to_value(EmulatorConfig::default()).unwrap();
        merge_json(&mut base, &serde_json::json!({"faults": {"drop_next": 2}}));
        let cfg: EmulatorConfig = serde_json::from_value(base).unwrap();
        assert_eq!(cfg.faults.drop_next, 2);
        assert_eq!(cfg.faults.throttle_retry_after, Some(Duration::from_millis(2128)));
    }
}
