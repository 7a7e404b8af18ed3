//! `Application`: an app team's request for an OAuth client under an AuthStrategy.
//! Namespaced. The operator registers the client and writes its credentials to a Secret.

// NB: clippy reads kube's repeated `printcolumn(type_ = ..)` derive arguments as duplicated
// attributes; each is a separate column.
#![allow(clippy::duplicated_attributes)]

use super::common::{optional_duration_schema, GoDuration, LocalObjectRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An OAuth client registered for an app team, delivered as a Secret.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "dcr-operator.io",
    version = "v1alpha1",
    kind = "Application",
    doc = "An app team's OAuth client, registered at the provider of its AuthStrategy and delivered as a Secret.",
    plural = "applications",
    namespaced,
    shortname = "dcrapp",
    shortname = "dcrapps",
    category = "dcr",
    status = "ApplicationStatus",
    printcolumn(name = "Strategy", type_ = "string", json_path = ".spec.authStrategyRef.name"),
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
    printcolumn(name = "ClientID", type_ = "string", json_path = ".status.clientId"),
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".status.credential.expiresAt"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// The AuthStrategy to register under. Immutable: the client lives at its provider.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.authStrategyRef is immutable: create a new Application instead"))]
    pub auth_strategy_ref: LocalObjectRef,

    /// Display name of the client at the provider. Defaults to `<namespace>/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 120))]
    pub display_name: Option<String>,

    /// Description of the client at the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// Redirect URIs (web platform): https, or http on localhost for development.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(
            regex(pattern = r"^(https://[^\s]+|http://(localhost|127\.0\.0\.1)(:[0-9]{1,5})?(/[^\s]*)?)$"),
            length(max = 256)
        )
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub redirect_uris: Vec<String>,

    /// The Secret receiving the credentials.
    #[serde(default)]
    pub secret: SecretTarget,

    /// Credential lifetime overrides, within the AuthStrategy's bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialOverrides>,

    /// What happens at the provider when the Application is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// The Secret the credentials are written to.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretTarget {
    /// Name of the Secret, in the Application's namespace. Defaults to
    /// `<application name>-credentials`. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
        length(max = 253)
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.secret.name is immutable"))]
    pub name: Option<String>,

    /// Extra metadata for the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<SecretTemplate>,
}

/// A label value: empty, or letters, digits, `-`, `_`, `.` starting and ending alphanumeric.
const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
/// `Opaque`, or `<dns subdomain>/<name>`.
const SECRET_TYPE_PATTERN: &str = r"^(Opaque|[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$";
/// Every key of the map is a qualified name: an optional DNS-subdomain prefix and a name.
const QUALIFIED_KEYS_RULE: &str = "self.all(k, size(k) <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))";
/// No key uses the operator's or Kubernetes' prefixes (the recommended app labels are open).
const UNRESERVED_KEYS_RULE: &str = "self.all(k, !k.matches('^([^/]*[.])?(dcr-operator[.]io|kubernetes[.]io|k8s[.]io)/') || (k.startsWith('app.kubernetes.io/') && k != 'app.kubernetes.io/managed-by'))";

/// The shape of the credential Secret: metadata, type, key names and extra keys.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Labels to add (label syntax; the prefixes `dcr-operator.io/`, `kubernetes.io/` and
    /// `k8s.io/` are reserved, except the recommended `app.kubernetes.io/` labels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN}))]
    #[x_kube(validation = Rule::new(QUALIFIED_KEYS_RULE).message("secret.template.labels keys must be label keys ([prefix/]name)"))]
    #[x_kube(validation = Rule::new(UNRESERVED_KEYS_RULE).message("secret.template.labels may not use the reserved prefixes dcr-operator.io/, kubernetes.io/ and k8s.io/"))]
    pub labels: BTreeMap<String, String>,
    /// Annotations to add (same key rules as labels; at most 128 KiB in total).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 2048}))]
    #[x_kube(validation = Rule::new(QUALIFIED_KEYS_RULE).message("secret.template.annotations keys must be annotation keys ([prefix/]name)"))]
    #[x_kube(validation = Rule::new(UNRESERVED_KEYS_RULE).message("secret.template.annotations may not use the reserved prefixes dcr-operator.io/, kubernetes.io/ and k8s.io/"))]
    pub annotations: BTreeMap<String, String>,
    /// Secret type: `Opaque` (default), `kubernetes.io/basic-auth` (rename client_id and
    /// client_secret to username and password), or a type of your own domain such as
    /// `example.com/oauth-client`. Other built-in types are refused.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SECRET_TYPE_PATTERN), length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == 'kubernetes.io/basic-auth' || !self.matches('^([^/]*[.])?(kubernetes[.]io|k8s[.]io)/')").message("secret.template.type must be Opaque, kubernetes.io/basic-auth or a type of your own domain"))]
    pub type_: Option<String>,
    /// Other names for the standard keys, e.g. `{client_secret: CLIENT_SECRET}` for `envFrom`.
    /// Keys: client_id, client_secret, tenant_id, issuer, token_url, token_url_v1, scope,
    /// auth_methods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 8, "additionalProperties" = {"type": "string", "minLength": 1, "maxLength": 253, "pattern": r"^[-._a-zA-Z0-9]+$"}))]
    #[x_kube(validation = Rule::new("self.all(k, k in ['client_id', 'client_secret', 'tenant_id', 'issuer', 'token_url', 'token_url_v1', 'scope', 'auth_methods'])").message("secret.template.keys renames only client_id, client_secret, tenant_id, issuer, token_url, token_url_v1, scope and auth_methods"))]
    pub keys: BTreeMap<String, String>,
    /// Extra keys composed from the credential fields with `{{ field }}` placeholders (the
    /// same field names as `keys`), e.g. a `.env` file or a JSON document.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16, "additionalProperties" = {"type": "string", "maxLength": 8192}))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[-._a-zA-Z0-9]+$'))").message("secret.template.data keys must be valid Secret keys (letters, digits, '-', '_', '.')"))]
    pub data: BTreeMap<String, String>,
}

/// Per-Application credential settings.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.lifetime) || !has(self.renewBefore) || duration(self.renewBefore) < duration(self.lifetime)").message("credentials.renewBefore must be shorter than credentials.lifetime"))]
pub struct CredentialOverrides {
    /// Lifetime of issued secrets; at most the strategy's `maxLifetime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_duration_schema")]
    pub lifetime: Option<GoDuration>,
    /// How long before expiry to rotate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_duration_schema")]
    pub renew_before: Option<GoDuration>,
}

/// Whether deleting the Application deletes the client at the provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the client (and its credentials) at the provider.
    #[default]
    Delete,
    /// Leave the client at the provider, working.
    Orphan,
}

/// Observed state of an Application. Never holds a secret value.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    /// The generation the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and `Throttled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The OAuth client id issued by the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The provider-side idempotency key (Entra `uniqueName`), derived from the cluster name and this object's UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_name: Option<String>,
    /// Entra application object id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_object_id: Option<String>,
    /// Entra service principal object id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_principal_id: Option<String>,
    /// The Secret holding the credentials. Also what the controller holds
    /// `spec.secret.name` to where the apiserver does not enforce CEL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The AuthStrategy the Application was first reconciled under: the controller holds
    /// `spec.authStrategyRef` to it where the apiserver does not enforce CEL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_strategy: Option<String>,
    /// The credential the Secret holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialStatus>,
    /// Superseded credentials still valid at the provider, awaiting revocation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_credentials: Vec<PreviousCredential>,
    /// A secret issued by a rotation, delivered once the provider accepts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_credential: Option<PendingCredential>,
    /// The last value of the `dcr-operator.io/rotate` annotation acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotate_request: Option<String>,
    /// The last value of the `dcr-operator.io/revoke-all` annotation acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_revoke_all_request: Option<String>,
    /// The DcrProvider the credentials were issued through: what revocation and cleanup use
    /// once the AuthStrategy is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The strategy's `credentials.revokePreviousAfter` while it admitted the Application:
    /// how long the credentials keep working after access is removed, also once the
    /// strategy is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_duration_schema")]
    pub access_grace: Option<GoDuration>,
    /// Set while the AuthStrategy no longer admits the Application (namespace not allowed,
    /// strategy deleted): when its secrets are, or were, revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_removed: Option<AccessRemoved>,
}

/// Access was removed: the secrets are revoked at `revokeAt` unless access is restored.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessRemoved {
    /// When the operator first saw the Application refused.
    pub since: Time,
    /// When its secrets are revoked (`since` + the grace in effect).
    pub revoke_at: Time,
    /// When its secrets were revoked and its Secret deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Time>,
}

/// A rotation in progress: the new secret is issued and stored, and becomes the Secret's
/// `client_secret` once a token was obtained with it.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingCredential {
    /// Provider-side id of the new secret.
    pub key_id: String,
    /// When it was issued.
    pub issued_at: Time,
}

/// Metadata of an issued credential (never its value).
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialStatus {
    /// Provider-side id of the secret (Entra password keyId).
    pub key_id: String,
    /// When it was issued.
    pub issued_at: Time,
    /// When it stops working.
    pub expires_at: Time,
    /// When the operator will replace it.
    pub renew_at: Time,
}

/// A superseded credential awaiting revocation.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviousCredential {
    /// Provider-side id of the secret.
    pub key_id: String,
    /// Revoked at or after this time.
    pub revoke_after: Time,
}
