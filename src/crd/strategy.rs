//! `AuthStrategy`: how applications authenticate against a provider (issuer, scopes,
//! claims, auth methods), who may use it, and the credential policy. Cluster-scoped.

// NB: clippy reads kube's repeated `printcolumn(type_ = ..)` derive arguments as duplicated
// attributes; each is a separate column.
#![allow(clippy::duplicated_attributes)]

use super::common::{
    duration_schema, optional_duration_schema, GoDuration, LocalObjectRef, GUID_PATTERN, HTTPS_URL_PATTERN,
    NO_WHITESPACE_PATTERN,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// An auth strategy on a DcrProvider, which Applications reference.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "dcr-operator.io",
    version = "v1alpha1",
    kind = "AuthStrategy",
    doc = "How Applications authenticate against a DcrProvider: issuer, scopes, claims, auth methods, who may use it and the credential policy.",
    plural = "authstrategies",
    shortname = "dcras",
    category = "dcr",
    status = "AuthStrategyStatus",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.providerRef.name"),
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
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct AuthStrategySpec {
    /// The DcrProvider this strategy registers clients at. Immutable: the clients registered
    /// so far live at that provider.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.providerRef is immutable: create a new AuthStrategy instead"))]
    pub provider_ref: LocalObjectRef,

    /// Name shown to app teams.
    #[schemars(length(min = 1, max = 120))]
    pub display_name: String,

    /// The OpenID Connect settings handed to applications.
    #[serde(rename = "openIDConnect")]
    pub open_id_connect: OpenIdConnect,

    /// Which namespaces may use this strategy. Absent: every namespace (like a cert-manager
    /// ClusterIssuer); present: a namespace must match `names` or `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,

    /// Lifetime and rotation of issued credentials.
    #[serde(default)]
    pub credentials: CredentialPolicy,

    /// Defaults for the provider-side client of every Application using this strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_template: Option<ApplicationTemplate>,
}

/// OpenID Connect settings (Kong's `openid-connect` strategy config).
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenIdConnect {
    /// Issuer of the tokens the gateway accepts. Defaults to the provider's issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = HTTPS_URL_PATTERN), length(max = 2048))]
    pub issuer: Option<String>,

    /// Token claims that identify the client (Entra v1 tokens: `appid`).
    #[serde(default = "default_credential_claims")]
    #[schemars(length(min = 1, max = 16), inner(regex(pattern = NO_WHITESPACE_PATTERN), length(max = 256)))]
    pub credential_claims: Vec<String>,

    /// Scopes applications request, e.g. `api://my-api/.default`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = NO_WHITESPACE_PATTERN), length(max = 256)))]
    pub scopes: Vec<String>,

    /// How applications authenticate at the gateway.
    #[serde(default = "default_auth_methods")]
    #[schemars(length(min = 1, max = 3))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub auth_methods: Vec<AuthMethod>,
}

fn default_credential_claims() -> Vec<String> {
    vec!["appid".to_string()]
}

fn default_auth_methods() -> Vec<AuthMethod> {
    vec![AuthMethod::ClientCredentials]
}

/// Auth methods Kong's OIDC strategy supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// OAuth 2.0 client credentials grant.
    ClientCredentials,
    /// A bearer token obtained elsewhere.
    Bearer,
    /// A session cookie.
    Session,
}

impl AuthMethod {
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientCredentials => "client_credentials",
            AuthMethod::Bearer => "bearer",
            AuthMethod::Session => "session",
        }
    }
}

/// Namespaces admitted by a strategy: listed by name, or matched by labels.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.names) > 0 || has(self.selector)").message("allowedNamespaces needs names or a selector (omit it to allow every namespace)"))]
pub struct AllowedNamespaces {
    /// Namespaces admitted by name.
    #[serde(default)]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 63)))]
    pub names: Vec<String>,
    /// Namespaces admitted by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Credential lifetime and rotation policy.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.renewBefore) < duration(self.lifetime)").message("credentials.renewBefore must be shorter than credentials.lifetime"))]
#[x_kube(validation = Rule::new("!has(self.maxLifetime) || duration(self.lifetime) <= duration(self.maxLifetime)").message("credentials.lifetime must not exceed credentials.maxLifetime"))]
pub struct CredentialPolicy {
    /// How long an issued secret is valid (Go duration, e.g. `2160h` = 90 days).
    #[serde(default = "default_lifetime")]
    #[schemars(schema_with = "duration_schema")]
    pub lifetime: GoDuration,
    /// How long before expiry a new secret is issued.
    #[serde(default = "default_renew_before")]
    #[schemars(schema_with = "duration_schema")]
    pub renew_before: GoDuration,
    /// Longest lifetime an Application may ask for. Absent: `lifetime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_duration_schema")]
    pub max_lifetime: Option<GoDuration>,
    /// How long a superseded secret keeps working after its successor was delivered and
    /// proven, so pods holding the old value can pick up the new one.
    #[serde(default = "default_revoke_after")]
    #[schemars(schema_with = "duration_schema")]
    pub revoke_previous_after: GoDuration,
    /// The shortest renewal interval (`lifetime - renewBefore`) an Application's own
    /// `credentials` may ask for, so no app team can make the operator issue secrets every
    /// few seconds. The strategy's own interval applies when it is shorter.
    #[serde(default = "default_min_renewal_interval")]
    #[schemars(schema_with = "duration_schema")]
    pub min_renewal_interval: GoDuration,
}

fn default_lifetime() -> GoDuration {
    GoDuration::from_hours(90 * 24)
}
fn default_renew_before() -> GoDuration {
    GoDuration::from_hours(30 * 24)
}
fn default_revoke_after() -> GoDuration {
    GoDuration::from_hours(1)
}
fn default_min_renewal_interval() -> GoDuration {
    GoDuration::from_hours(1)
}

impl Default for CredentialPolicy {
    fn default() -> Self {
        Self {
            lifetime: default_lifetime(),
            renew_before: default_renew_before(),
            max_lifetime: None,
            revoke_previous_after: default_revoke_after(),
            min_renewal_interval: default_min_renewal_interval(),
        }
    }
}

/// Defaults for the provider-side client.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationTemplate {
    /// Entra ID application settings.
    #[serde(default, rename = "azureAD", skip_serializing_if = "Option::is_none")]
    pub azure_ad: Option<AzureAdApplicationTemplate>,
}

/// Entra application settings every Application of the strategy gets.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AzureAdApplicationTemplate {
    /// Who may sign in to the application.
    #[serde(default)]
    pub sign_in_audience: SignInAudience,
    /// API permissions the application requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub required_resource_access: Vec<RequiredResourceAccess>,
    /// Extra tags on the application (the operator adds its own ownership tags).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(regex(pattern = NO_WHITESPACE_PATTERN), length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub tags: Vec<String>,
}

/// Entra sign-in audiences.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SignInAudience {
    #[default]
    AzureADMyOrg,
    AzureADMultipleOrgs,
    AzureADandPersonalMicrosoftAccount,
    PersonalMicrosoftAccount,
}

impl SignInAudience {
    pub const fn as_str(self) -> &'static str {
        match self {
            SignInAudience::AzureADMyOrg => "AzureADMyOrg",
            SignInAudience::AzureADMultipleOrgs => "AzureADMultipleOrgs",
            SignInAudience::AzureADandPersonalMicrosoftAccount => "AzureADandPersonalMicrosoftAccount",
            SignInAudience::PersonalMicrosoftAccount => "PersonalMicrosoftAccount",
        }
    }
}

/// Permissions requested from one resource API.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequiredResourceAccess {
    /// The resource application's appId (e.g. Microsoft Graph: 00000003-0000-0000-c000-000000000000).
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub resource_app_id: String,
    /// The scopes and app roles requested.
    #[schemars(length(min = 1, max = 400))]
    pub resource_access: Vec<ResourceAccess>,
}

/// One requested permission.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAccess {
    /// Id of the scope or app role.
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub id: String,
    /// `Scope` (delegated) or `Role` (application).
    #[serde(rename = "type")]
    pub type_: ResourceAccessType,
}

/// Kind of permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ResourceAccessType {
    Scope,
    Role,
}

/// Observed state of an AuthStrategy.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthStrategyStatus {
    /// The generation the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The issuer in effect (spec or the provider's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The DcrProvider the strategy was first reconciled with: the controller holds
    /// `spec.providerRef` to it where the apiserver does not enforce CEL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}
