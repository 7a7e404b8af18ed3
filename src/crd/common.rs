//! Types shared by the three kinds: object and Secret references, durations, schema helpers.

use serde::{Deserialize, Serialize};

/// A reference to a cluster-scoped object by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LocalObjectRef {
    /// Name of the referenced object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A key in a Secret in a given namespace. The value is read by the operator and never
/// copied into status, Events or logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Namespace of the Secret (cluster-scoped objects must name it).
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[serde(default = "default_client_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_client_secret_key() -> String {
    "client_secret".to_string()
}

pub use super::duration::{duration_schema, optional_duration_schema, GoDuration, DURATION_PATTERN};

/// Regex of an https URL (issuers, authority hosts, Graph endpoints).
pub const HTTPS_URL_PATTERN: &str = r"^https://[^\s/?#]+([/?#][^\s]*)?$";

/// Regex of a GUID (Entra client ids, tenant ids, object ids).
pub const GUID_PATTERN: &str =
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Regex of a string without whitespace (tags, scopes, claim names).
pub const NO_WHITESPACE_PATTERN: &str = r"^\S+$";
