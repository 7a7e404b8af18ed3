//! Types shared by the three kinds: object and Secret references, durations, schema helpers.

use schemars::{json_schema, Schema, SchemaGenerator};
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

/// Regex of a Go-style duration as `metav1.Duration` accepts it ("2160h", "90m", "1h30m"),
/// the format CEL's `duration()` understands, so schema and CEL rules agree.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// Schema of a duration field: a string in Go duration syntax.
pub fn duration_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": DURATION_PATTERN,
    })
}

/// Schema of an optional duration field (the derive marks `Option` fields nullable itself).
pub fn optional_duration_schema(g: &mut SchemaGenerator) -> Schema {
    let mut schema = duration_schema(g);
    schema.insert("nullable".into(), true.into());
    schema
}

/// Regex of an https URL (issuers, authority hosts, Graph endpoints).
pub const HTTPS_URL_PATTERN: &str = r"^https://[^\s/?#]+([/?#][^\s]*)?$";

/// Regex of a GUID (Entra client ids, tenant ids, object ids).
pub const GUID_PATTERN: &str =
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Regex of a string without whitespace (tags, scopes, claim names).
pub const NO_WHITESPACE_PATTERN: &str = r"^\S+$";
