//! Application property validation: limits and formats (contract §8), uniqueness of
//! `uniqueName` / `identifierUris` (contract §3.4), and the rule that an enabled scope or
//! app role cannot be removed or changed (contract §3.3).

use std::collections::HashSet;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    config::{Assumptions, Limits},
    errors::GraphError,
    state::{audience_is_personal, string_array, Tenant},
};

const AUDIENCES: &[&str] = &[
    "AzureADMyOrg",
    "AzureADMultipleOrgs",
    "AzureADandPersonalMicrosoftAccount",
    "PersonalMicrosoftAccount",
];

fn str_len(v: &Value) -> usize {
    v.as_str().map(|s| s.chars().count()).unwrap_or(0)
}

fn optional_string(props: &Map<String, Value>, name: &str, max: usize) -> Result<(), GraphError> {
    match props.get(name) {
        None | Some(Value::Null) => Ok(()),
        Some(v @ Value::String(_)) if str_len(v) <= max => Ok(()),
        Some(Value::String(_)) => Err(GraphError::invalid_value(
            name,
            format!("{name} must be at most {max} characters."),
        )),
        Some(_) => Err(GraphError::invalid_value(
            name,
            format!("{name} must be a string."),
        )),
    }
}

fn array<'a>(props: &'a Map<String, Value>, path: &[&str]) -> Result<Vec<&'a Value>, GraphError> {
    let mut cur = props.get(path[0]);
    for p in &path[1..] {
        cur = cur.and_then(|v| v.get(*p));
    }
    match cur {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a.iter().collect()),
        Some(_) => Err(GraphError::invalid_value(
            &path.join("."),
            format!("{} must be an array.", path.join(".")),
        )),
    }
}

/// Validate a complete application representation (after a create or a merge).
pub(crate) fn application(
    props: &Map<String, Value>,
    limits: &Limits,
    tenant: &Tenant,
) -> Result<(), GraphError> {
    let audience = match props.get("signInAudience") {
        Some(Value::String(a)) if AUDIENCES.contains(&a.as_str()) => a.as_str(),
        None | Some(Value::Null) => "AzureADMyOrg",
        Some(other) => {
            return Err(GraphError::invalid_value(
                "signInAudience",
                format!(
                    "signInAudience '{}' is not supported.",
                    other.as_str().unwrap_or("?")
                ),
            ))
        }
    };
    let personal = audience_is_personal(audience);

    match props.get("displayName") {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            let max = if personal {
                limits.display_name_max_personal
            } else {
                limits.display_name_max
            };
            if s.chars().count() > max {
                return Err(GraphError::invalid_value(
                    "displayName",
                    format!("displayName must be at most {max} characters for signInAudience {audience}."),
                ));
            }
        }
        _ => {
            return Err(GraphError::invalid_value(
                "displayName",
                "displayName is required.",
            ))
        }
    }
    optional_string(props, "description", limits.description_max)?;
    optional_string(props, "notes", limits.notes_max)?;
    optional_string(props, "serviceManagementReference", 1_024)?;

    if let Some(v) = props.get("uniqueName").filter(|v| !v.is_null()) {
        let s = v
            .as_str()
            .ok_or_else(|| GraphError::invalid_value("uniqueName", "uniqueName must be a string."))?;
        if s.is_empty()
            || s.chars().count() > limits.unique_name_max
            || s.chars()
                .any(|c| c.is_whitespace() || c == '\'' || c.is_control())
        {
            return Err(GraphError::invalid_value(
                "uniqueName",
                format!(
                    "uniqueName must be 1 to {} characters without whitespace or quotes.",
                    limits.unique_name_max
                ),
            ));
        }
    }

    let tags = array(props, &["tags"])?;
    let mut seen = HashSet::new();
    for t in tags {
        let s = t
            .as_str()
            .ok_or_else(|| GraphError::invalid_value("tags", "Each tag must be a string."))?;
        let n = s.chars().count();
        if n == 0 || n > limits.tag_max || s.chars().any(char::is_whitespace) {
            return Err(GraphError::invalid_value(
                "tags",
                format!(
                    "Tag '{s}' is invalid: tags are 1 to {} characters without whitespace.",
                    limits.tag_max
                ),
            ));
        }
        if !seen.insert(s.to_lowercase()) {
            return Err(GraphError::invalid_value(
                "tags",
                format!("Tag '{s}' is duplicated."),
            ));
        }
    }

    let uris = array(props, &["identifierUris"])?;
    if personal && uris.len() > limits.identifier_uris_count_personal {
        return Err(GraphError::invalid_value(
            "identifierUris",
            format!(
                "At most {} identifierUris are allowed for signInAudience {audience}.",
                limits.identifier_uris_count_personal
            ),
        ));
    }
    let max = if personal {
        limits.identifier_uri_max_personal
    } else {
        limits.identifier_uri_max
    };
    let mut seen = HashSet::new();
    for u in uris {
        let s = u.as_str().ok_or_else(|| {
            GraphError::invalid_value("identifierUris", "Each identifier URI must be a string.")
        })?;
        identifier_uri(s, max, tenant)?;
        if !seen.insert(s.to_lowercase()) {
            return Err(GraphError::invalid_value(
                "identifierUris",
                format!("Identifier URI '{s}' is duplicated."),
            ));
        }
    }

    for path in [
        &["web", "redirectUris"][..],
        &["spa", "redirectUris"],
        &["publicClient", "redirectUris"],
    ] {
        for u in array(props, path)? {
            let s = u.as_str().unwrap_or_default();
            if !s.contains("://") || s.chars().count() > 256 {
                return Err(GraphError::invalid_value(
                    &path.join("."),
                    format!("Redirect URI '{s}' is not a valid absolute URI."),
                ));
            }
        }
    }

    let rra = array(props, &["requiredResourceAccess"])?;
    if rra.len() > limits.required_resource_access_apis {
        return Err(GraphError::invalid_value(
            "requiredResourceAccess",
            format!(
                "At most {} APIs can be listed in requiredResourceAccess.",
                limits.required_resource_access_apis
            ),
        ));
    }
    let permissions: usize = rra
        .iter()
        .map(|r| {
            r.get("resourceAccess")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        })
        .sum();
    let max = if personal {
        limits.required_resource_access_permissions_personal
    } else {
        limits.required_resource_access_permissions
    };
    if permissions > max {
        return Err(GraphError::invalid_value(
            "requiredResourceAccess",
            format!("At most {max} permissions can be requested for signInAudience {audience}."),
        ));
    }
    for r in &rra {
        if r.get("resourceAppId").and_then(Value::as_str).is_none() {
            return Err(GraphError::invalid_value(
                "requiredResourceAccess",
                "resourceAppId is required.",
            ));
        }
    }

    let roles = array(props, &["appRoles"])?.len() + array(props, &["api", "oauth2PermissionScopes"])?.len();
    if roles > limits.app_roles_and_scopes {
        return Err(GraphError::invalid_value(
            "appRoles",
            format!(
                "appRoles and oauth2PermissionScopes together are limited to {}.",
                limits.app_roles_and_scopes
            ),
        ));
    }
    Ok(())
}

/// An identifier URI: no wildcard, within the length limit, in one of the accepted
/// schemes; an `https` URI must use a verified domain of the tenant (or a subdomain).
fn identifier_uri(s: &str, max: usize, tenant: &Tenant) -> Result<(), GraphError> {
    let bad = |why: &str| {
        GraphError::invalid_value(
            "identifierUris",
            format!("Identifier URI '{s}' is invalid: {why}"),
        )
    };
    if s.is_empty() || s.chars().count() > max {
        return Err(bad(&format!("it must be 1 to {max} characters.")));
    }
    if s.contains('*') {
        return Err(bad("wildcards are not allowed."));
    }
    let lower = s.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("https://") {
        let host = rest.split(['/', ':', '?', '#']).next().unwrap_or_default();
        let verified = tenant.domains.iter().any(|d| {
            let d = d.to_ascii_lowercase();
            host == d || host.ends_with(&format!(".{d}"))
        });
        if !verified {
            return Err(GraphError::bad_request(
                "Values of identifierUris property must use a verified domain of the organization or its subdomain",
            ));
        }
        return Ok(());
    }
    if lower.starts_with("api://") || lower.starts_with("urn:") || lower.starts_with("ms-appx://") {
        return Ok(());
    }
    Err(bad(
        "the scheme must be api://, https:// (verified domain), urn: or ms-appx://.",
    ))
}

/// `uniqueName` and `identifierUris` must not collide with another application (contract
/// §3.4: a soft-deleted app keeps its `uniqueName`, answered 400 not 409).
pub(crate) fn uniqueness(
    props: &Map<String, Value>,
    tenant: &Tenant,
    self_id: Option<Uuid>,
    assumptions: &Assumptions,
) -> Result<(), GraphError> {
    let others = || tenant.apps.values().filter(move |a| Some(a.id) != self_id);
    if let Some(name) = props.get("uniqueName").and_then(Value::as_str) {
        if others().any(|a| a.unique_name().is_some_and(|u| u.eq_ignore_ascii_case(name))) {
            return Err(GraphError::bad_request(
                "Another object with the same value for property uniqueName already exists.",
            ));
        }
    }
    let uris = string_array(props.get("identifierUris"));
    for u in &uris {
        let clash = others()
            .filter(|a| a.deleted.is_none() || assumptions.identifier_uris_reserved_after_delete)
            .any(|a| a.identifier_uris().iter().any(|x| x.eq_ignore_ascii_case(u)));
        if clash {
            return Err(GraphError::bad_request(
                "Another object with the same value for property identifierUris already exists.",
            ));
        }
    }
    Ok(())
}

/// An enabled scope or app role cannot be deleted or changed unless disabled first
/// (contract §3.3). `old` and `new` are whole application representations.
pub(crate) fn permission_changes(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) -> Result<(), GraphError> {
    let pick = |m: &Map<String, Value>, path: &[&str]| -> Vec<Value> {
        let mut cur = m.get(path[0]);
        for p in &path[1..] {
            cur = cur.and_then(|v| v.get(*p));
        }
        cur.and_then(Value::as_array).cloned().unwrap_or_default()
    };
    for path in [&["appRoles"][..], &["api", "oauth2PermissionScopes"]] {
        let before = pick(old, path);
        let after = pick(new, path);
        for b in before
            .iter()
            .filter(|b| b.get("isEnabled").and_then(Value::as_bool).unwrap_or(true))
        {
            let id = b.get("id");
            match after.iter().find(|a| a.get("id") == id) {
                Some(a) if a == b => {}
                // Disabling is the one allowed change of an enabled entry.
                Some(a) if a.get("isEnabled") == Some(&Value::Bool(false)) => {
                    let mut a2 = a.clone();
                    a2["isEnabled"] = Value::Bool(true);
                    if &a2 != b {
                        return Err(GraphError::bad_request(
                            "Permission (scope or role) cannot be deleted or updated unless disabled first.",
                        ));
                    }
                }
                _ => {
                    return Err(GraphError::bad_request(
                        "Permission (scope or role) cannot be deleted or updated unless disabled first.",
                    ))
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::state::TenantSize;
    use serde_json::json;

    fn tenant() -> Tenant {
        Tenant::new(
            Uuid::new_v4(),
            "contoso.onmicrosoft.com".into(),
            "Contoso".into(),
            TenantSize::Small,
        )
    }

    fn check(v: Value) -> Result<(), GraphError> {
        application(v.as_object().unwrap(), &Limits::default(), &tenant())
    }

    #[test]
    fn limits_and_formats() {
        assert!(check(json!({"displayName": "ok", "tags": ["a", "b"]})).is_ok());
        assert!(check(json!({"tags": ["a"]})).is_err(), "displayName required");
        assert!(check(json!({"displayName": "x".repeat(121)})).is_err());
        assert!(check(
            json!({"displayName": "x".repeat(91), "signInAudience": "AzureADandPersonalMicrosoftAccount"})
        )
        .is_err());
        assert!(check(json!({"displayName": "ok", "tags": ["a b"]})).is_err());
        assert!(check(json!({"displayName": "ok", "tags": ["a", "a"]})).is_err());
        assert!(check(json!({"displayName": "ok", "tags": ["t".repeat(257)]})).is_err());
        assert!(check(json!({"displayName": "ok", "signInAudience": "Everyone"})).is_err());
        assert!(check(json!({"displayName": "ok", "identifierUris": ["api://x/*"]})).is_err());
        assert!(check(json!({"displayName": "ok", "identifierUris": ["https://evil.example/x"]})).is_err());
        assert!(check(json!({"displayName": "ok", "identifierUris": ["https://api.contoso.onmicrosoft.com/x", "api://abc"]})).is_ok());
        assert!(check(json!({"displayName": "ok", "uniqueName": "has space"})).is_err());
        assert!(check(json!({"displayName": "ok", "description": "d".repeat(1025)})).is_err());
    }

    #[test]
    fn enabled_scopes_must_be_disabled_before_removal() {
        let scope = json!({"id": "1", "value": "read", "isEnabled": true});
        let old = json!({"api": {"oauth2PermissionScopes": [scope]}});
        let removed = json!({"api": {"oauth2PermissionScopes": []}});
        let disabled =
            json!({"api": {"oauth2PermissionScopes": [{"id": "1", "value": "read", "isEnabled": false}]}});
        let renamed =
            json!({"api": {"oauth2PermissionScopes": [{"id": "1", "value": "write", "isEnabled": true}]}});
        let o = old.as_object().unwrap();
        assert!(permission_changes(o, removed.as_object().unwrap()).is_err());
        assert!(permission_changes(o, renamed.as_object().unwrap()).is_err());
        assert!(permission_changes(o, disabled.as_object().unwrap()).is_ok());
        assert!(permission_changes(disabled.as_object().unwrap(), removed.as_object().unwrap()).is_ok());
    }
}
