//! `DcrProvider`: an identity provider and the admin ("initial") client the operator uses
//! to register OAuth clients there. Cluster-scoped, owned by cluster admins.

// NB: clippy reads kube's repeated `printcolumn(type_ = ..)` derive arguments as duplicated
// attributes; each is a separate column.
#![allow(clippy::duplicated_attributes)]

use super::common::{SecretKeyRef, GUID_PATTERN, HTTPS_URL_PATTERN};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// An identity provider at which the operator registers OAuth clients.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "dcr-operator.io",
    version = "v1alpha1",
    kind = "DcrProvider",
    doc = "An identity provider and the admin client the operator registers OAuth clients with.",
    plural = "dcrproviders",
    shortname = "dcrp",
    category = "dcr",
    status = "DcrProviderStatus",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Issuer", type_ = "string", json_path = ".spec.issuer", priority = "1"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Active", type_ = "boolean", json_path = ".status.active"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self.type != 'AzureAD' || has(self.azureAD)").message("spec.azureAD is required when spec.type is AzureAD"))]
#[x_kube(validation = Rule::new("self.type != 'AzureAD' || has(self.initialClient)").message("spec.initialClient is required when spec.type is AzureAD"))]
#[x_kube(validation = Rule::new("self.type != 'OIDC' || has(self.oidc)").message("spec.oidc is required when spec.type is OIDC"))]
#[x_kube(validation = Rule::new("self.type == oldSelf.type").message("spec.type is immutable: create a new DcrProvider instead"))]
#[serde(rename_all = "camelCase")]
pub struct DcrProviderSpec {
    /// Kind of identity provider. Immutable.
    #[serde(rename = "type")]
    pub type_: ProviderType,

    /// Human-readable name shown in status and Events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 120))]
    pub display_name: Option<String>,

    /// The issuer tokens of this provider carry, e.g. `https://sts.windows.net/<tenant-id>/`
    /// (Entra v1 tokens, as Kong uses) or `https://login.microsoftonline.com/<tenant-id>/v2.0`.
    #[schemars(regex(pattern = HTTPS_URL_PATTERN), length(max = 2048))]
    pub issuer: String,

    /// Settings for `type: AzureAD`.
    #[serde(default, rename = "azureAD", skip_serializing_if = "Option::is_none")]
    pub azure_ad: Option<AzureAdProvider>,

    /// Settings for `type: OIDC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcProvider>,

    /// The admin client the operator authenticates as to register OAuth clients. Required
    /// for `type: AzureAD`; an `OIDC` provider authenticates with `spec.oidc.registrationAuth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_client: Option<InitialClient>,

    /// Client-side request budget towards the provider, shared by every object using it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_budget: Option<RequestBudget>,
}

impl DcrProvider {
    /// The immutable fields against what the status recorded, for clusters without CEL:
    /// the message users read when one changed. (`spec.type` is held by CEL only.)
    pub fn immutable_fields_changed(&self) -> Option<String> {
        let recorded = self.status.as_ref()?.tenant_id.as_deref()?;
        let tenant = self.spec.azure_ad.as_ref().map(|a| a.tenant_id.as_str());
        (tenant != Some(recorded)).then(|| {
            format!("spec.azureAD.tenantId is immutable: it was {recorded}; registered applications live in that tenant (create a new DcrProvider instead)")
        })
    }
}

impl DcrProvider {
    /// The Secret holding the credential the operator registers clients with: the admin
    /// client's secret (AzureAD) or the registration credential (OIDC, when it has one).
    pub fn admin_secret_ref(&self) -> Option<&SecretKeyRef> {
        match self.spec.type_ {
            ProviderType::AzureAD => self
                .spec
                .initial_client
                .as_ref()
                .and_then(InitialClient::secret_ref),
            ProviderType::Oidc => self
                .spec
                .oidc
                .as_ref()
                .and_then(|o| o.registration_auth.secret_ref.as_ref()),
        }
    }
}

/// Supported identity providers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ProviderType {
    /// Microsoft Entra ID (Azure AD), managed through Microsoft Graph.
    AzureAD,
    /// Any OpenID Connect / OAuth 2.0 server with RFC 7591 dynamic client registration and
    /// RFC 7592 management (Keycloak, Curity, Okta, Auth0, Ory Hydra, node-oidc-provider, ...).
    /// Spelled `OIDC`, upper case like `AzureAD`'s acronym, after the discovery document
    /// the provider is found by; the protocol spoken is the vendor-neutral RFC 7591/7592, so
    /// no vendor name (Kong's `okta`, `auth0`, `curity`) is needed for servers that speak it.
    #[serde(rename = "OIDC")]
    Oidc,
}

/// A generic OpenID Connect dynamic-registration provider. `spec.issuer` is where its
/// metadata is discovered (`/.well-known/openid-configuration`, else RFC 8414's
/// `oauth-authorization-server`); the document must name that issuer exactly.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OidcProvider {
    /// Used instead of the discovered `registration_endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = HTTPS_URL_PATTERN), length(max = 2048))]
    pub registration_endpoint: Option<String>,

    /// Used instead of the discovered `token_endpoint`. With both endpoints set, no
    /// discovery document is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = HTTPS_URL_PATTERN), length(max = 2048))]
    pub token_endpoint: Option<String>,

    /// How the operator authenticates to the registration endpoint.
    pub registration_auth: OidcRegistrationAuth,
}

/// The registration credential, always from a Secret (never inline).
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type == 'None' || has(self.secretRef)").message("spec.oidc.registrationAuth.secretRef is required unless type is None"))]
#[x_kube(validation = Rule::new("self.type == 'Header' || (!has(self.headerName) && !has(self.scheme))").message("headerName and scheme apply to type Header only"))]
pub struct OidcRegistrationAuth {
    /// `InitialAccessToken`, `Header` or `None`.
    #[serde(rename = "type")]
    pub type_: OidcRegistrationAuthType,

    /// The Secret key holding the token or API key. Read only from the namespaces the
    /// operator reads provider Secrets from (`--provider-secret-namespaces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,

    /// `Header` only: the header carrying the credential (default `Authorization`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"))]
    pub header_name: Option<String>,

    /// `Header` only: a scheme put before the value, e.g. `SSWS` for an Okta API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,32}$"))]
    pub scheme: Option<String>,
}

/// How registration requests are authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum OidcRegistrationAuthType {
    /// An RFC 7591 initial access token, sent as `Authorization: Bearer <token>`.
    InitialAccessToken,
    /// `<headerName>: [<scheme> ]<value>`: Okta's `SSWS` API token, a gateway's API key.
    Header,
    /// Open registration.
    None,
}

/// Microsoft Entra ID settings.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AzureAdProvider {
    /// Directory (tenant) id: a GUID, or a verified domain such as `contoso.onmicrosoft.com`.
    /// Immutable: the applications registered so far live in this tenant.
    #[schemars(regex(
        pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63})$"
    ))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.azureAD.tenantId is immutable: registered applications live in this tenant"))]
    pub tenant_id: String,

    /// National cloud; selects the default authority host and Graph endpoint.
    #[serde(default)]
    pub cloud: AzureCloud,

    /// Override of the authority host (token endpoints), e.g. for a proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = HTTPS_URL_PATTERN), length(max = 2048))]
    pub authority_host: Option<String>,

    /// Override of the Microsoft Graph endpoint, e.g. for a proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = HTTPS_URL_PATTERN), length(max = 2048))]
    pub graph_endpoint: Option<String>,

    /// What happens to an application deleted by the operator: Entra keeps it in deleted
    /// items for 30 days (it still counts against the directory quota) unless purged.
    #[serde(default)]
    pub deleted_applications: DeletedApplicationsPolicy,

    /// What happens to applications tagged by this cluster that no Application owns any
    /// more (left by a deletion while the operator was down, or by hand): always reported
    /// (status, metric, log); deleted only with `Delete`.
    #[serde(default)]
    pub orphaned_applications: OrphanedApplicationsPolicy,
}

/// Whether the operator deletes applications it tagged but no Application owns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum OrphanedApplicationsPolicy {
    /// Report them only.
    #[default]
    Report,
    /// Report and delete them.
    Delete,
}

/// Microsoft national clouds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum AzureCloud {
    /// login.microsoftonline.com / graph.microsoft.com
    #[default]
    AzurePublic,
    /// login.microsoftonline.us / graph.microsoft.us
    AzureUSGovernment,
    /// login.chinacloudapi.cn / microsoftgraph.chinacloudapi.cn
    AzureChina,
}

/// Whether the operator purges the applications it deletes from Entra's deleted items.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DeletedApplicationsPolicy {
    /// Leave them in deleted items (restorable for 30 days).
    #[default]
    Keep,
    /// Delete them permanently right after deletion.
    Purge,
}

/// The admin client: its id, and how it authenticates: a reference to the Secret holding its
/// secret (never inline), or the operator's federated token (workload identity). Exactly one.
// `oneOf` of `required` is a structural value validation, enforced by every apiserver with
// CRD v1 (1.16+); the controller checks it again (`InvalidSpec`).
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["clientSecretRef"]}, {"required": ["federatedToken"]}]))]
pub struct InitialClient {
    /// Application (client) id of the admin client.
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub client_id: String,
    /// Where the admin client's secret is stored. Exactly one of this and `federatedToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,
    /// Authenticate with the operator's own projected ServiceAccount token (workload
    /// identity): the admin app needs a federated identity credential for the operator's
    /// ServiceAccount. Exactly one of this and `clientSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_token: Option<FederatedToken>,
    /// Audience the admin client requests tokens for, when the provider needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub audience: Option<String>,
}

/// The federated-token credential. The token file is the operator's
/// (`--federated-token-file`, by default azure-workload-identity's
/// `AZURE_FEDERATED_TOKEN_FILE`), never named here: a DcrProvider cannot point the operator
/// at another file.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FederatedToken {}

/// How the admin client authenticates, once the spec has been checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminCredential<'a> {
    /// A client secret in this Secret.
    Secret(&'a SecretKeyRef),
    /// The operator's federated token file.
    FederatedToken,
}

impl InitialClient {
    /// The one credential the spec names, or the message for a spec naming none or both
    /// (possible where the schema's `oneOf` was not applied, e.g. an old CRD).
    pub fn credential(&self) -> Result<AdminCredential<'_>, &'static str> {
        match (&self.client_secret_ref, &self.federated_token) {
            (Some(r), None) => Ok(AdminCredential::Secret(r)),
            (None, Some(_)) => Ok(AdminCredential::FederatedToken),
            (None, None) => Err("spec.initialClient needs clientSecretRef or federatedToken"),
            (Some(_), Some(_)) => {
                Err("spec.initialClient.clientSecretRef and spec.initialClient.federatedToken are exclusive: set one")
            }
        }
    }

    /// The admin Secret, when the credential is a secret.
    pub fn secret_ref(&self) -> Option<&SecretKeyRef> {
        match self.credential() {
            Ok(AdminCredential::Secret(r)) => Some(r),
            _ => None,
        }
    }
}

/// The client-side request budget towards the provider, shaped like Graph's identity
/// throttling: a resource-unit bucket and a write bucket per app and tenant. Every field is
/// optional; the defaults sit just under Graph's documented limits for the tenant size.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestBudget {
    /// The tenant's size class, which fixes Graph's resource-unit quota: Small (under 50
    /// users, 3,500 per 10 s), Medium (50-500, 5,000), Large (over 500, 8,000). Default Small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_size: Option<TenantSize>,
    /// Resource units per 10 s (a GET costs 1-3, a write 1). Default: 95% of Graph's quota
    /// for the tenant size; a value above that quota is lowered to it, saying so in the
    /// Ready condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8000))]
    pub resource_units: Option<u32>,
    /// Writes (POST, PATCH, DELETE) per 150 s. Default 2,850; Graph allows 3,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3000))]
    pub writes: Option<u32>,
    /// An optional flat cap: sustained requests per second of any kind, on top of the
    /// buckets above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub qps: Option<u32>,
    /// Requests allowed back to back under `qps` (default: `qps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub burst: Option<u32>,
}

/// A tenant's size class (Graph's resource-unit quota depends on it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum TenantSize {
    /// Under 50 users.
    #[default]
    Small,
    /// 50 to 500 users.
    Medium,
    /// Over 500 users.
    Large,
}

/// Observed state of a DcrProvider.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DcrProviderStatus {
    /// The generation the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and `Throttled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Whether any AuthStrategy uses this provider (Kong's `active`).
    #[serde(default)]
    pub active: bool,
    /// How many AuthStrategies reference this provider.
    #[serde(default)]
    pub auth_strategies: u32,
    /// Object id of the admin client's service principal, bound as owner of every
    /// application the operator creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_principal_id: Option<String>,
    /// Applications tagged by this cluster at the provider that no Application owns.
    #[serde(default)]
    pub orphaned_applications: u32,
    /// The tenant the provider was first reconciled with: the controller holds
    /// `spec.azureAD.tenantId` to it where the apiserver does not enforce CEL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// When the admin credentials last obtained a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_time: Option<Time>,
}
