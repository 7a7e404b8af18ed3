//! What the apiserver would refuse in a Secret, checked before any password is issued: a
//! write refused after `addPassword` would leave a live key recorded nowhere.
//!
//! Each check returns the message users read, naming the field under `spec.secret`.

use crate::crd::application::SecretTemplate;

/// Longest Secret key, label or annotation key prefix, and Secret name (DNS subdomain).
const MAX_SUBDOMAIN: usize = 253;
/// Longest label value and name part of a qualified key.
const MAX_NAME: usize = 63;
/// Total size of the template's annotations; the apiserver allows 256 KiB for all of them,
/// and the operator adds its own record.
pub const MAX_TEMPLATE_ANNOTATIONS_BYTES: usize = 128 * 1024;
/// The apiserver's limit on a Secret's data (keys and values).
pub const MAX_SECRET_DATA_BYTES: usize = 1024 * 1024;

/// Secret types a credential Secret may have: `Opaque`, `kubernetes.io/basic-auth` (with
/// the keys renamed to `username`/`password`), or a type of the user's own domain.
/// Never `kubernetes.io/service-account-token` (Kubernetes would mint a token into it) nor
/// the other built-in types, whose required keys the operator does not write.
pub const BASIC_AUTH: &str = "kubernetes.io/basic-auth";

/// Label and annotation prefixes a template may not set: the operator's own, and
/// Kubernetes' (`kubernetes.io/service-account.name` and the like change what a Secret is).
/// `app.kubernetes.io/` (the recommended labels) stays open, except `managed-by`.
fn reserved(key: &str) -> bool {
    let Some((prefix, name)) = key.split_once('/') else {
        return false;
    };
    let kube_domain = |d: &str| {
        d == "kubernetes.io" || d == "k8s.io" || d.ends_with(".kubernetes.io") || d.ends_with(".k8s.io")
    };
    let own = prefix == "dcr-operator.io" || prefix.ends_with(".dcr-operator.io");
    let recommended = prefix == "app.kubernetes.io" && name != "managed-by";
    own || (kube_domain(prefix) && !recommended)
}

fn alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// A DNS-1123 subdomain: lower-case labels of `[a-z0-9-]`, dot-separated.
pub fn dns_subdomain(s: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !s.is_empty() && s.len() <= MAX_SUBDOMAIN && s.split('.').all(label_ok)
}

/// The name part of a qualified key, or a label value when non-empty:
/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn qualified_name_part(s: &str) -> bool {
    let (Some(first), Some(last)) = (s.chars().next(), s.chars().last()) else {
        return false;
    };
    s.len() <= MAX_NAME
        && alnum(first)
        && alnum(last)
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain.
fn qualified_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => dns_subdomain(prefix) && qualified_name_part(name),
        None => qualified_name_part(key),
    }
}

/// A Secret data key: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`.
pub fn secret_key(field: &str, key: &str) -> Result<(), String> {
    let chars_ok = key.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'));
    if key.is_empty() || key.len() > MAX_SUBDOMAIN || !chars_ok || key == "." || key.starts_with("..") {
        return Err(format!(
            "{field}: {key:?} is not a valid Secret key (letters, digits, '-', '_' and '.', at most 253, not '.' or '..')"
        ));
    }
    Ok(())
}

/// The Secret's name (`spec.secret.name`, or the default `<name>-credentials`).
pub fn secret_name(name: &str) -> Result<(), String> {
    if dns_subdomain(name) {
        return Ok(());
    }
    Err(format!(
        "spec.secret.name: {name:?} is not a valid Secret name (a DNS subdomain of at most 253 characters; the default is <application name>-credentials, so a long Application name needs spec.secret.name)"
    ))
}

fn labels(t: &SecretTemplate) -> Result<(), String> {
    for (key, value) in &t.labels {
        if !qualified_key(key) {
            return Err(format!(
                "spec.secret.template.labels: {key:?} is not a valid label key"
            ));
        }
        if reserved(key) {
            return Err(format!(
                "spec.secret.template.labels: {key:?} uses a reserved prefix"
            ));
        }
        if !value.is_empty() && !qualified_name_part(value) {
            return Err(format!(
                "spec.secret.template.labels.{key}: {value:?} is not a valid label value (at most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit)"
            ));
        }
    }
    Ok(())
}

fn annotations(t: &SecretTemplate) -> Result<(), String> {
    let mut total = 0usize;
    for (key, value) in &t.annotations {
        if !qualified_key(key) {
            return Err(format!(
                "spec.secret.template.annotations: {key:?} is not a valid annotation key"
            ));
        }
        if reserved(key) {
            return Err(format!(
                "spec.secret.template.annotations: {key:?} uses a reserved prefix"
            ));
        }
        total = total.saturating_add(key.len()).saturating_add(value.len());
    }
    if total > MAX_TEMPLATE_ANNOTATIONS_BYTES {
        return Err(format!(
            "spec.secret.template.annotations: {total} bytes, more than the {MAX_TEMPLATE_ANNOTATIONS_BYTES} allowed"
        ));
    }
    Ok(())
}

/// The type, given the data keys the Secret will have.
pub fn secret_type(type_: &str, keys: &[&str]) -> Result<(), String> {
    if type_ == "Opaque" {
        return Ok(());
    }
    if type_ == BASIC_AUTH {
        if keys.iter().any(|k| *k == "username" || *k == "password") {
            return Ok(());
        }
        return Err(format!(
            "spec.secret.template.type: {BASIC_AUTH} needs a username or password key (rename client_id and client_secret with spec.secret.template.keys)"
        ));
    }
    let custom = type_
        .split_once('/')
        .is_some_and(|(domain, name)| dns_subdomain(domain) && qualified_name_part(name));
    if custom && !reserved(type_) {
        return Ok(());
    }
    Err(format!(
        "spec.secret.template.type: {type_:?} is not allowed (Opaque, {BASIC_AUTH}, or a type of your own domain such as example.com/oauth-client)"
    ))
}

/// Labels, annotations and key syntax of a template (the type is checked with the keys).
pub fn template(t: &SecretTemplate) -> Result<(), String> {
    labels(t)?;
    annotations(t)?;
    for (field, key) in &t.keys {
        secret_key(&format!("spec.secret.template.keys.{field}"), key)?;
    }
    for key in t.data.keys() {
        secret_key("spec.secret.template.data", key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn with_labels(pairs: &[(&str, &str)]) -> SecretTemplate {
        SecretTemplate {
            labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn with_annotations(pairs: &[(&str, &str)]) -> SecretTemplate {
        SecretTemplate {
            annotations: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn secret_keys_follow_the_apiserver() {
        for ok in [
            "client_secret",
            "CLIENT_SECRET",
            ".env",
            "a.b-c_d",
            &"k".repeat(253),
        ] {
            assert!(secret_key("f", ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "a b", ".", "..", "..x", "é", &"k".repeat(254)] {
            let err = secret_key("spec.secret.template.keys.client_secret", bad).unwrap_err();
            assert!(
                err.starts_with("spec.secret.template.keys.client_secret: "),
                "{err}"
            );
        }
    }

    #[test]
    fn label_keys_and_values_follow_the_apiserver() {
        assert!(template(&with_labels(&[
            ("team", "orders"),
            ("example.com/tier", ""),
            ("app.kubernetes.io/name", "x")
        ]))
        .is_ok());
        for (k, v) in [
            ("a/b/c", "x"),
            ("-team", "x"),
            ("Example.com/x", "x"),
            ("team", "a/b"),
            ("team", "-x"),
            (&"n".repeat(64) as &str, "x"),
            ("team", &"v".repeat(64) as &str),
        ] {
            let err = template(&with_labels(&[(k, v)])).unwrap_err();
            assert!(err.starts_with("spec.secret.template.labels"), "{err}");
        }
    }

    #[test]
    fn reserved_prefixes_are_refused() {
        for key in [
            "dcr-operator.io/credential",
            "kubernetes.io/service-account.name",
            "kubernetes.io/service-account.uid",
            "node.kubernetes.io/x",
            "k8s.io/x",
            "app.kubernetes.io/managed-by",
        ] {
            let err = template(&with_annotations(&[(key, "x")])).unwrap_err();
            assert!(err.contains("reserved prefix"), "{key}: {err}");
            let err = template(&with_labels(&[(key, "x")])).unwrap_err();
            assert!(err.contains("reserved prefix"), "{key}: {err}");
        }
    }

    #[test]
    fn annotations_are_bounded_in_total() {
        let big = "v".repeat(MAX_TEMPLATE_ANNOTATIONS_BYTES);
        let err = template(&with_annotations(&[("a", &big)])).unwrap_err();
        assert!(err.contains("more than"), "{err}");
        assert!(template(&with_annotations(&[("a", "v")])).is_ok());
    }

    #[test]
    fn secret_types_are_an_allow_list() {
        assert!(secret_type("Opaque", &[]).is_ok());
        assert!(secret_type("example.com/oauth-client", &[]).is_ok());
        assert!(secret_type(BASIC_AUTH, &["username", "password"]).is_ok());
        assert!(secret_type(BASIC_AUTH, &["client_id"]).is_err());
        for bad in [
            "kubernetes.io/service-account-token",
            "kubernetes.io/tls",
            "kubernetes.io/dockerconfigjson",
            "bootstrap.kubernetes.io/token",
            "opaque",
            "a/b/c",
            "",
        ] {
            let err = secret_type(bad, &[]).unwrap_err();
            assert!(err.starts_with("spec.secret.template.type: "), "{bad}: {err}");
        }
    }

    #[test]
    fn secret_names_are_dns_subdomains() {
        assert!(secret_name("orders-credentials").is_ok());
        for bad in ["Orders", "a_b", &format!("{}-credentials", "a".repeat(250))] {
            assert!(secret_name(bad).unwrap_err().starts_with("spec.secret.name: "));
        }
    }

    #[test]
    fn data_keys_are_checked() {
        let t = SecretTemplate {
            data: BTreeMap::from([("a/b".to_string(), "x".to_string())]),
            ..Default::default()
        };
        assert!(template(&t)
            .unwrap_err()
            .starts_with("spec.secret.template.data: "));
    }
}
