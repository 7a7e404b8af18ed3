//! Where the Graph client talks to and as whom: cloud, endpoints, trusted CAs, credential,
//! client-side rate limit and retry bounds.
//!
//! Everything the client needs is plain configuration (URLs, ids, a credential), so tests and
//! the sandbox point the same code at the Graph emulator by setting
//! [`GraphClientConfig::authority_host`], [`GraphClientConfig::graph_endpoint`] and
//! [`GraphClientConfig::extra_ca_pem`], never through mocks.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use url::Url;

use crate::sensitive::SecretString;

use super::error::ConfigError;

/// A Microsoft cloud: it fixes the default authority (token) host, the Graph host and the
/// `.default` scope requested for Graph.
///
/// Host names are the ones Microsoft documents for its national clouds ("national cloud
/// deployments" in the Graph docs); the contract in `shared/graph-contract.md` only covers the
/// public cloud.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AzureCloud {
    /// Global Azure: `login.microsoftonline.com`, `graph.microsoft.com`.
    #[default]
    AzurePublic,
    /// Azure US Government (L4): `login.microsoftonline.us`, `graph.microsoft.us`.
    AzureUSGovernment,
    /// Azure operated by 21Vianet: `login.chinacloudapi.cn`, `microsoftgraph.chinacloudapi.cn`.
    AzureChina,
}

impl AzureCloud {
    /// The Microsoft Entra authority host of this cloud (no trailing slash).
    pub fn authority_host(self) -> &'static str {
        match self {
            Self::AzurePublic => "https://login.microsoftonline.com",
            Self::AzureUSGovernment => "https://login.microsoftonline.us",
            Self::AzureChina => "https://login.chinacloudapi.cn",
        }
    }

    /// The Microsoft Graph endpoint (host root, without `/v1.0`) of this cloud.
    pub fn graph_endpoint(self) -> &'static str {
        match self {
            Self::AzurePublic => "https://graph.microsoft.com",
            Self::AzureUSGovernment => "https://graph.microsoft.us",
            Self::AzureChina => "https://microsoftgraph.chinacloudapi.cn",
        }
    }

    /// The client-credentials scope for Graph in this cloud: the Graph resource URI + `/.default`
    /// (contract §1.1).
    pub fn graph_scope(self) -> String {
        format!("{}/.default", self.graph_endpoint())
    }

    /// The stable name used in configuration (`AzurePublic`, `AzureUSGovernment`, `AzureChina`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AzurePublic => "AzurePublic",
            Self::AzureUSGovernment => "AzureUSGovernment",
            Self::AzureChina => "AzureChina",
        }
    }
}

impl fmt::Display for AzureCloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AzureCloud {
    type Err = ConfigError;

    /// Accepts the names above (case-insensitive) and the Azure CLI / SDK spellings
    /// (`AzureCloud`, `AzurePublicCloud`, `AzureUSGovernmentCloud`, `AzureChinaCloud`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "azurepublic" | "azurepubliccloud" | "azurecloud" | "public" => Ok(Self::AzurePublic),
            "azureusgovernment" | "azureusgovernmentcloud" | "usgovernment" => Ok(Self::AzureUSGovernment),
            "azurechina" | "azurechinacloud" | "china" => Ok(Self::AzureChina),
            _ => Err(ConfigError::UnknownCloud(s.to_string())),
        }
    }
}

/// How the client proves who it is at the token endpoint.
///
/// `Debug` never shows the secret (it is a [`SecretString`]); the assertion file's contents are
/// read at request time and never stored.
#[derive(Clone, Debug)]
pub enum ClientCredential {
    /// A client secret (`client_secret` form field, contract §1.1).
    Secret(SecretString),
    /// A federated client assertion (workload identity, contract §1.3): a JWT re-read from this
    /// file on every token request (the kubelet rotates the projected token), sent as
    /// `client_assertion` with the jwt-bearer assertion type.
    AssertionFile(PathBuf),
}

/// Graph's write window: 3,000 writes per 150 s per app and tenant (contract §2.2).
pub const WRITE_WINDOW: Duration = Duration::from_secs(150);
/// Graph's resource-unit window: 3,500-8,000 RU per 10 s per app and tenant by tenant size.
pub const RESOURCE_UNIT_WINDOW: Duration = Duration::from_secs(10);
/// Graph's write quota per [`WRITE_WINDOW`].
pub const GRAPH_WRITES: u32 = 3_000;

/// A tenant's size class, which fixes Graph's resource-unit quota (contract §2.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TenantSize {
    /// Under 50 users: 3,500 RU per 10 s.
    #[default]
    Small,
    /// 50-500 users: 5,000 RU per 10 s.
    Medium,
    /// Over 500 users: 8,000 RU per 10 s.
    Large,
}

impl TenantSize {
    /// Graph's resource-unit quota per [`RESOURCE_UNIT_WINDOW`] for this size.
    pub fn graph_resource_units(self) -> u32 {
        match self {
            Self::Small => 3_500,
            Self::Medium => 5_000,
            Self::Large => 8_000,
        }
    }
}

/// A flat cap on requests per second (any kind), on top of the Graph-shaped buckets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub qps: f64,
    /// Requests that may be sent back to back after an idle period.
    pub burst: u32,
}

/// The client-side request budget (token requests excluded), shaped like Graph's identity
/// throttling (contract §2.2): a resource-unit bucket and a write bucket per app and tenant,
/// each full at its limit and refilled over its window. See [`super::ratelimit`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestBudget {
    /// Resource units per [`RESOURCE_UNIT_WINDOW`].
    pub resource_units: u32,
    /// Writes per [`WRITE_WINDOW`].
    pub writes: u32,
    /// An optional flat request rate on top (none by default).
    pub requests: Option<RateLimit>,
}

impl RequestBudget {
    /// Just under Graph's documented per-app+tenant limits for a tenant of `size`: 95% of
    /// each, leaving a little for other callers of the same app registration and for the
    /// 429s Graph documents "below these limits under load". Apps whose `signInAudience`
    /// includes personal accounts are limited to 60 writes a minute by Graph: lower
    /// `writes` when managing those.
    pub fn documented(size: TenantSize) -> Self {
        Self {
            resource_units: size.graph_resource_units() / 20 * 19,
            writes: GRAPH_WRITES / 20 * 19,
            requests: None,
        }
    }

    /// The bucket sizes at most Graph's limits for `size`; returns what was lowered, for
    /// the message that says so.
    pub fn clamp_to_graph(&mut self, size: TenantSize) -> Vec<String> {
        let mut lowered = Vec::new();
        let ru_limit = size.graph_resource_units();
        if self.resource_units > ru_limit {
            lowered.push(format!(
                "resourceUnits {} is above Graph's {ru_limit} per 10 s for a {size:?} tenant; using {ru_limit}",
                self.resource_units
            ));
            self.resource_units = ru_limit;
        }
        if self.writes > GRAPH_WRITES {
            lowered.push(format!(
                "writes {} is above Graph's {GRAPH_WRITES} per 150 s; using {GRAPH_WRITES}",
                self.writes
            ));
            self.writes = GRAPH_WRITES;
        }
        lowered
    }
}

impl Default for RequestBudget {
    /// [`RequestBudget::documented`] for a small tenant (the smallest quota).
    fn default() -> Self {
        Self::documented(TenantSize::Small)
    }
}

/// Bounds of the retry policy (see [`super::retry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts per call, the first one included.
    pub max_attempts: u32,
    /// No retry is scheduled whose wait would end later than this after the call started.
    pub max_elapsed: Duration,
    /// First backoff step for 5xx and transport errors (doubled each attempt, full jitter).
    pub base_delay: Duration,
    /// First backoff step for replication errors on a just-created object (contract §7
    /// recommends 1, 2, 4, 8, 16 s).
    pub replication_base_delay: Duration,
    /// Largest single backoff step (a server's `Retry-After` is honoured even when longer, as
    /// long as it fits in `max_elapsed`).
    pub max_delay: Duration,
    /// How long after creating an application the client waits before creating its service
    /// principal (capped at `max_inline_wait`): Graph answers that create
    /// `NoBackingApplicationObject` until the application has replicated (contract §7). No
    /// SLA is documented; 2 s is the lag the suite emulates, and terraform's first retry
    /// step. Zero turns it off.
    pub replication_settle: Duration,
    /// Longest wait slept inside a call (throttling, backoff, the client-side budget). A
    /// longer one ends the call with `Throttled { retry_after }` (or the last error), so the
    /// reconcile gives its worker slot back and requeues instead of sleeping.
    pub max_inline_wait: Duration,
}

impl Default for RetryConfig {
    /// 8 attempts within 60 s; backoff from 500 ms (replication: 1 s), at most 16 s a step;
    /// at most 2 s slept inline (Graph's usual `Retry-After` is 1-3 s).
    fn default() -> Self {
        Self {
            max_attempts: 8,
            max_elapsed: Duration::from_secs(60),
            base_delay: Duration::from_millis(500),
            replication_base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(16),
            replication_settle: Duration::from_secs(2),
            max_inline_wait: Duration::from_secs(2),
        }
    }
}

/// Everything needed to build a [`super::GraphClient`].
///
/// Build it with [`GraphClientConfig::new`] and adjust the public fields. `Debug` is safe to
/// log: the credential is redacted and the CA bundle is shown by size only.
///
/// Outbound proxies are taken from the usual `HTTPS_PROXY` / `NO_PROXY` environment
/// variables; a TLS-inspecting proxy's CA goes into [`GraphClientConfig::extra_ca_pem`].
#[derive(Clone)]
pub struct GraphClientConfig {
    /// Directory (tenant) id: a GUID or a domain name such as `contoso.onmicrosoft.com`.
    pub tenant_id: String,
    /// The national cloud; picks default hosts and the Graph scope.
    pub cloud: AzureCloud,
    /// Overrides the cloud's authority host (token endpoint root), e.g. the emulator's
    /// `https://127.0.0.1:8443` or a proxy. May carry a path prefix.
    pub authority_host: Option<Url>,
    /// Overrides the cloud's Graph endpoint (root, `/v1.0` is appended). May carry a path prefix.
    pub graph_endpoint: Option<Url>,
    /// Overrides the scope requested at the token endpoint. By default the cloud's
    /// `https://graph.../.default`, also when the endpoints are overridden (a proxy or the
    /// emulator still issues tokens for the Graph resource).
    pub graph_scope: Option<String>,
    /// Extra CA certificates (PEM, one or more) trusted in addition to the built-in web PKI
    /// roots: the emulator's test CA, or a TLS-inspecting proxy's CA.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// The client (application) id the operator authenticates as.
    pub client_id: String,
    /// The operator's credential.
    pub credential: ClientCredential,
    /// Client-side request budget for Graph calls.
    pub budget: RequestBudget,
    /// Retry bounds.
    pub retry: RetryConfig,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of one HTTP exchange (one attempt).
    pub request_timeout: Duration,
    /// The token is refreshed this long before it expires (capped at half its lifetime).
    pub token_refresh_margin: Duration,
    /// Keep an inventory of the tagged objects with `/applications/delta`
    /// ([`super::GraphClient::known_application`]); none by default.
    pub inventory: Option<super::inventory::InventoryConfig>,
}

impl GraphClientConfig {
    /// A configuration for the public cloud with default limits.
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        credential: ClientCredential,
    ) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            cloud: AzureCloud::default(),
            authority_host: None,
            graph_endpoint: None,
            graph_scope: None,
            extra_ca_pem: None,
            client_id: client_id.into(),
            credential,
            budget: RequestBudget::default(),
            retry: RetryConfig::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            token_refresh_margin: Duration::from_secs(180),
            inventory: None,
        }
    }

    /// Checks ids, URLs and limits; called by [`super::GraphClient::new`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_tenant_id(&self.tenant_id)?;
        if self.client_id.trim().is_empty() {
            return Err(ConfigError::Invalid("client id is empty".into()));
        }
        if let ClientCredential::Secret(s) = &self.credential {
            if s.is_empty() {
                return Err(ConfigError::Invalid("client secret is empty".into()));
            }
        }
        for (name, url) in [
            ("authority host", &self.authority_host),
            ("graph endpoint", &self.graph_endpoint),
        ] {
            if let Some(url) = url {
                check_base_url(name, url)?;
            }
        }
        if self.budget.resource_units == 0 || self.budget.writes == 0 {
            return Err(ConfigError::Invalid(
                "request budget resource units and writes must be >= 1".into(),
            ));
        }
        if self.budget.resource_units > TenantSize::Large.graph_resource_units()
            || self.budget.writes > GRAPH_WRITES
        {
            return Err(ConfigError::Invalid(
                "request budget above Graph's documented limits".into(),
            ));
        }
        if let Some(flat) = self.budget.requests {
            if !(flat.qps.is_finite() && flat.qps > 0.0) {
                return Err(ConfigError::Invalid("rate limit qps must be > 0".into()));
            }
            if flat.burst == 0 {
                return Err(ConfigError::Invalid("rate limit burst must be >= 1".into()));
            }
        }
        if self.retry.max_attempts == 0 {
            return Err(ConfigError::Invalid("retry max_attempts must be >= 1".into()));
        }
        Ok(())
    }

    /// `{authority}/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self) -> Result<Url, ConfigError> {
        let host = match &self.authority_host {
            Some(u) => u.clone(),
            None => {
                Url::parse(self.cloud.authority_host()).map_err(|e| ConfigError::Invalid(e.to_string()))?
            }
        };
        validate_tenant_id(&self.tenant_id)?;
        join_segments(&host, &[&self.tenant_id, "oauth2", "v2.0", "token"])
    }

    /// The Graph v1.0 base, `{graph endpoint}/v1.0` (no trailing slash).
    pub fn graph_base(&self) -> Result<Url, ConfigError> {
        let root = match &self.graph_endpoint {
            Some(u) => u.clone(),
            None => {
                Url::parse(self.cloud.graph_endpoint()).map_err(|e| ConfigError::Invalid(e.to_string()))?
            }
        };
        join_segments(&root, &["v1.0"])
    }

    /// The scope requested for Graph tokens.
    pub fn scope(&self) -> String {
        self.graph_scope
            .clone()
            .unwrap_or_else(|| self.cloud.graph_scope())
    }
}

impl fmt::Debug for GraphClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphClientConfig")
            .field("tenant_id", &self.tenant_id)
            .field("cloud", &self.cloud)
            .field("authority_host", &self.authority_host.as_ref().map(Url::as_str))
            .field("graph_endpoint", &self.graph_endpoint.as_ref().map(Url::as_str))
            .field("graph_scope", &self.graph_scope)
            .field(
                "extra_ca_pem",
                &self.extra_ca_pem.as_ref().map(|p| format!("{} bytes", p.len())),
            )
            .field("client_id", &self.client_id)
            .field("credential", &self.credential)
            .field("budget", &self.budget)
            .field("retry", &self.retry)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("token_refresh_margin", &self.token_refresh_margin)
            .field("inventory", &self.inventory)
            .finish()
    }
}

/// A tenant is a GUID or a domain name; anything else (slashes, `..`, spaces) would change the
/// token URL's path and is refused.
pub fn validate_tenant_id(tenant: &str) -> Result<(), ConfigError> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 256
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        && !tenant.starts_with('.')
        && !tenant.contains("..");
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidTenant(tenant.to_string()))
    }
}

fn check_base_url(name: &str, url: &Url) -> Result<(), ConfigError> {
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(ConfigError::Invalid(format!(
            "{name} must be an http(s) URL with a host: {url}"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::Invalid(format!(
            "{name} must not carry a query or fragment: {url}"
        )));
    }
    Ok(())
}

/// Appends path segments to a base URL, keeping any path prefix of the base.
fn join_segments(base: &Url, segments: &[&str]) -> Result<Url, ConfigError> {
    let mut url = base.clone();
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|_| ConfigError::Invalid(format!("not a base URL: {base}")))?;
        path.pop_if_empty();
        for s in segments {
            path.push(s);
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GraphClientConfig {
        GraphClientConfig::new(
            "contoso.onmicrosoft.com",
            "11111111-2222-3333-4444-555555555555",
            ClientCredential::Secret(SecretString::new("s3cr3t-value-never-shown")),
        )
    }

    #[test]
    fn urls_for_each_cloud() {
        let cases = [
            (
                AzureCloud::AzurePublic,
                "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
                "https://graph.microsoft.com/v1.0",
                "https://graph.microsoft.com/.default",
            ),
            (
                AzureCloud::AzureUSGovernment,
                "https://login.microsoftonline.us/contoso.onmicrosoft.com/oauth2/v2.0/token",
                "https://graph.microsoft.us/v1.0",
                "https://graph.microsoft.us/.default",
            ),
            (
                AzureCloud::AzureChina,
                "https://login.chinacloudapi.cn/contoso.onmicrosoft.com/oauth2/v2.0/token",
                "https://microsoftgraph.chinacloudapi.cn/v1.0",
                "https://microsoftgraph.chinacloudapi.cn/.default",
            ),
        ];
        for (cloud, token, graph, scope) in cases {
            let mut c = cfg();
            c.cloud = cloud;
            assert_eq!(c.token_url().unwrap().as_str(), token);
            assert_eq!(c.graph_base().unwrap().as_str(), graph);
            assert_eq!(c.scope(), scope);
        }
    }

    #[test]
    fn overrides_keep_path_prefixes_and_the_cloud_scope() {
        let mut c = cfg();
        c.tenant_id = "8e2b7c6a-0000-4000-8000-000000000001".into();
        c.authority_host = Some(Url::parse("https://127.0.0.1:8443").unwrap());
        c.graph_endpoint = Some(Url::parse("https://proxy.example/graph/").unwrap());
        assert_eq!(
            c.token_url().unwrap().as_str(),
            "https://127.0.0.1:8443/8e2b7c6a-0000-4000-8000-000000000001/oauth2/v2.0/token"
        );
        assert_eq!(
            c.graph_base().unwrap().as_str(),
            "https://proxy.example/graph/v1.0"
        );
        assert_eq!(c.scope(), "https://graph.microsoft.com/.default");
        c.graph_scope = Some("api://custom/.default".into());
        assert_eq!(c.scope(), "api://custom/.default");
    }

    #[test]
    fn tenant_ids_that_would_change_the_path_are_refused() {
        for bad in ["", "a/b", "../x", "a b", "x?y", ".hidden", "a..b", "t%2F"] {
            assert!(validate_tenant_id(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "contoso.onmicrosoft.com",
            "8e2b7c6a-0000-4000-8000-000000000001",
            "common",
        ] {
            validate_tenant_id(good).unwrap();
        }
    }

    #[test]
    fn cloud_names_parse() {
        assert_eq!(
            "AzurePublic".parse::<AzureCloud>().unwrap(),
            AzureCloud::AzurePublic
        );
        assert_eq!(
            "azureusgovernmentcloud".parse::<AzureCloud>().unwrap(),
            AzureCloud::AzureUSGovernment
        );
        assert_eq!(
            "AzureChinaCloud".parse::<AzureCloud>().unwrap(),
            AzureCloud::AzureChina
        );
        assert!("AzureGermany".parse::<AzureCloud>().is_err());
    }

    #[test]
    fn validation() {
        cfg().validate().unwrap();
        let mut c = cfg();
        c.credential = ClientCredential::Secret(SecretString::new(""));
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.graph_endpoint = Some(Url::parse("https://graph.example/?x=1").unwrap());
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.budget.requests = Some(RateLimit { qps: 0.0, burst: 1 });
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.budget.writes = 3_001;
        assert!(c.validate().is_err());
    }

    #[test]
    fn the_default_budget_sits_just_under_graphs_limits() {
        let small = RequestBudget::default();
        assert_eq!((small.resource_units, small.writes), (3_325, 2_850));
        assert_eq!(small.requests, None);
        let large = RequestBudget::documented(TenantSize::Large);
        assert_eq!(large.resource_units, 7_600);
        let mut asked = RequestBudget {
            resource_units: 8_000,
            writes: 5_000,
            requests: None,
        };
        let lowered = asked.clamp_to_graph(TenantSize::Medium);
        assert_eq!((asked.resource_units, asked.writes), (5_000, 3_000));
        assert_eq!(lowered.len(), 2, "{lowered:?}");
        assert!(lowered[0].contains("Medium"), "{lowered:?}");
        let mut within = RequestBudget::default();
        assert!(within.clamp_to_graph(TenantSize::Small).is_empty());
    }

    #[test]
    fn debug_shows_no_secret() {
        let mut c = cfg();
        c.extra_ca_pem = Some(b"-----BEGIN CERTIFICATE-----".to_vec());
        let d = format!("{c:?}");
        assert!(!d.contains("s3cr3t"), "{d}");
        assert!(d.contains("redacted"));
        assert!(d.contains("27 bytes"));
    }
}
