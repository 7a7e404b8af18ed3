//! The credential Secret: what an app team mounts, and the operator's durable record of
//! which provider-side keys are live.
//!
//! Data keys: `client_id`, `client_secret`, `tenant_id`, `issuer`, `token_url` (v2),
//! `token_url_v1`, `scope`, `auth_methods`. Annotations record the current key (id, issue
//! and expiry time, when it was proven to work) and the superseded keys awaiting
//! revocation, so a lost status can be rebuilt from the Secret and no live key is revoked by
//! mistake. A SHA-256 digest of `client_secret` reveals a hand edit of the value. An HMAC
//! under the operator's key ([`mac`]) covers the record, that digest and the staged value:
//! a record anyone else wrote is not trusted ([`RecordTrust`]).

use crate::crd::application::{Application, SecretTemplate};
use crate::sensitive::SecretString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::ByteString;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub mod mac;
pub mod validate;

use mac::{Binding, RecordKey, Signed};

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "dcr-operator";
pub const LABEL_APPLICATION: &str = "dcr-operator.io/application";
const ANNOTATION_CREDENTIAL: &str = "dcr-operator.io/credential";
const ANNOTATION_DIGEST: &str = "dcr-operator.io/client-secret-sha256";
const ANNOTATION_MAC: &str = "dcr-operator.io/credential-mac";

pub const KEY_CLIENT_ID: &str = "client_id";
pub const KEY_CLIENT_SECRET: &str = "client_secret";
/// A rotation's new secret, staged until the provider accepts it (a dotfile when mounted;
/// skipped by `envFrom`, whose variable names cannot start with a dot).
pub const KEY_PENDING_SECRET: &str = ".pending_client_secret";

/// Non-secret connection details delivered next to the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionDetails {
    pub client_id: String,
    pub tenant_id: String,
    pub issuer: String,
    pub token_url: String,
    pub token_url_v1: String,
    pub scope: String,
    pub auth_methods: String,
}

impl ConnectionDetails {
    fn entries(&self) -> [(&'static str, &str); 7] {
        [
            (KEY_CLIENT_ID, &self.client_id),
            ("tenant_id", &self.tenant_id),
            ("issuer", &self.issuer),
            ("token_url", &self.token_url),
            ("token_url_v1", &self.token_url_v1),
            ("scope", &self.scope),
            ("auth_methods", &self.auth_methods),
        ]
    }
}

/// The standard fields, by their default key names.
pub const FIELDS: [&str; 8] = [
    "client_id",
    "client_secret",
    "tenant_id",
    "issuer",
    "token_url",
    "token_url_v1",
    "scope",
    "auth_methods",
];

/// Where each field goes in the Secret, and what else is composed from them: the
/// Application's `secret.template`, checked once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretLayout {
    /// Field name -> key name, for all of [`FIELDS`].
    names: BTreeMap<&'static str, String>,
    /// Extra key -> template with `{{ field }}` placeholders.
    extra: BTreeMap<String, String>,
    type_: String,
}

impl Default for SecretLayout {
    fn default() -> Self {
        Self {
            names: FIELDS.iter().map(|f| (*f, f.to_string())).collect(),
            extra: BTreeMap::new(),
            type_: "Opaque".into(),
        }
    }
}

/// Longest client secret the size check allows for (Entra's are 40 characters).
const MAX_SECRET_VALUE: usize = 1024;

impl SecretLayout {
    /// The layout a template asks for, or why it cannot be built.
    pub fn new(template: Option<&SecretTemplate>) -> Result<Self, String> {
        let default = SecretTemplate::default();
        let t = template.unwrap_or(&default);
        let mut names = BTreeMap::new();
        for field in FIELDS {
            names.insert(
                field,
                t.keys.get(field).cloned().unwrap_or_else(|| field.to_string()),
            );
        }
        if let Some(unknown) = t.keys.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!(
                "secret.template.keys: {unknown} is not a credential field ({})",
                FIELDS.join(", ")
            ));
        }
        validate::template(t)?;
        let mut used: Vec<&str> = names.values().map(String::as_str).collect();
        used.extend(t.data.keys().map(String::as_str));
        used.push(KEY_PENDING_SECRET);
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = used.iter().find(|k| !seen.insert(**k)) {
            return Err(format!("secret.template: the key {dup} is used twice"));
        }
        for (key, template) in &t.data {
            if let Err(e) = compose(template, &|_| Some("")) {
                return Err(format!("secret.template.data.{key}: {e}"));
            }
        }
        let type_ = t.type_.clone().unwrap_or_else(|| "Opaque".into());
        validate::secret_type(&type_, &used)?;
        Ok(Self {
            names,
            extra: t.data.clone(),
            type_,
        })
    }

    fn key<'a>(&'a self, field: &'a str) -> &'a str {
        self.names.get(field).map_or(field, String::as_str)
    }

    /// Refuses a layout whose Secret would exceed the apiserver's 1 MiB of data with these
    /// details and the longest secret and staged secret, counted without rendering it (a
    /// template of 8 KiB of `{{ scope }}` would expand to megabytes).
    pub fn check_size(&self, details: &ConnectionDetails) -> Result<(), String> {
        let len = |field: &str| -> usize {
            if field == KEY_CLIENT_SECRET {
                return MAX_SECRET_VALUE;
            }
            details
                .entries()
                .iter()
                .find(|(k, _)| *k == field)
                .map_or(0, |(_, v)| v.len())
        };
        let mut total = KEY_PENDING_SECRET.len().saturating_add(MAX_SECRET_VALUE);
        for field in FIELDS {
            total = total
                .saturating_add(self.key(field).len())
                .saturating_add(len(field));
        }
        for (key, template) in &self.extra {
            total = total
                .saturating_add(key.len())
                .saturating_add(composed_len(template, &len)?);
        }
        if total > validate::MAX_SECRET_DATA_BYTES {
            return Err(format!(
                "spec.secret.template.data: the Secret would hold about {total} bytes, more than the {} Kubernetes allows",
                validate::MAX_SECRET_DATA_BYTES
            ));
        }
        Ok(())
    }

    /// The Secret's data for these values.
    fn data(
        &self,
        details: &ConnectionDetails,
        client_secret: &SecretString,
    ) -> BTreeMap<String, ByteString> {
        let value = |field: &str| -> Option<&str> {
            if field == KEY_CLIENT_SECRET {
                return Some(client_secret.expose());
            }
            details
                .entries()
                .iter()
                .find(|(k, _)| *k == field)
                .map(|(_, v)| *v)
        };
        let mut data: BTreeMap<String, ByteString> = FIELDS
            .iter()
            .filter_map(|f| value(f).map(|v| (self.key(f).to_string(), ByteString(v.as_bytes().to_vec()))))
            .collect();
        for (key, template) in &self.extra {
            // Checked when the layout was built; a template that fails is left out.
            if let Ok(text) = compose(template, &value) {
                data.insert(key.clone(), ByteString(text.into_bytes()));
            }
        }
        data
    }
}

/// Splits `rest` at its next `{{ field }}`: the text before, the field, and the rest.
fn next_placeholder(rest: &str) -> Result<Option<(&str, &str, &str)>, String> {
    let Some((before, after)) = rest.split_once("{{") else {
        return Ok(None);
    };
    let (field, tail) = after.split_once("}}").ok_or("an unclosed {{")?;
    let field = field.trim();
    if !FIELDS.contains(&field) {
        return Err(format!(
            "unknown field {{{{ {field} }}}} (known: {})",
            FIELDS.join(", ")
        ));
    }
    Ok(Some((before, field, tail)))
}

/// Replaces `{{ field }}` placeholders; an unknown field or an unclosed `{{` is an error.
fn compose<'a>(template: &str, value: &dyn Fn(&str) -> Option<&'a str>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some((before, field, tail)) = next_placeholder(rest)? {
        out.push_str(before);
        out.push_str(value(field).ok_or_else(|| format!("no value for {field}"))?);
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// The length `compose` would produce, given each field's length.
fn composed_len(template: &str, len: &dyn Fn(&str) -> usize) -> Result<usize, String> {
    let mut total = 0usize;
    let mut rest = template;
    while let Some((before, field, tail)) = next_placeholder(rest)? {
        total = total.saturating_add(before.len()).saturating_add(len(field));
        rest = tail;
    }
    Ok(total.saturating_add(rest.len()))
}

/// The credential bookkeeping stored on the Secret (never a secret value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRecord {
    pub key_id: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// When a token was obtained with this secret; revocation of older keys waits for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<Timestamp>,
    /// Superseded keys still valid at the provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<PreviousKey>,
    /// A rotation's new key, not delivered as `client_secret` until proven.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingKey>,
    /// The `dcr-operator.io/rotate` value a key was issued for. Kept here, written with the
    /// key, rather than only in status: status may be lost with a crash, or read stale from
    /// the cache, and the request must be served once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_request: Option<String>,
    /// The `dcr-operator.io/revoke-all` value a key was issued for (same reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_all_request: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingKey {
    pub key_id: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

impl CredentialRecord {
    /// Every key this record names: current, pending and superseded.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.key_id.as_str())
            .chain(self.pending.iter().map(|p| p.key_id.as_str()))
            .chain(self.previous.iter().map(|p| p.key_id.as_str()))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviousKey {
    pub key_id: String,
    pub revoke_after: Timestamp,
}

/// How far the record read from a Secret can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordTrust {
    /// No record, or one whose MAC verifies under the operator's key.
    Verified,
    /// A record without a MAC, as versions before the MAC wrote them: trusted only as far
    /// as the status corroborates it (`credential::vet`).
    Unsigned,
    /// A MAC that does not verify, or a record that does not parse: edited by someone
    /// else. The record is dropped.
    Forged,
}

/// What the operator reads back from an existing Secret.
#[derive(Clone, Debug)]
pub struct StoredCredential {
    /// The record, unless [`RecordTrust::Forged`].
    pub record: Option<CredentialRecord>,
    pub trust: RecordTrust,
    pub client_secret: Option<SecretString>,
    /// The staged value of a rotation in progress.
    pub pending_secret: Option<SecretString>,
    /// The value no longer matches the digest recorded when it was written.
    pub tampered: bool,
    /// Connection details differ from what they should be.
    pub details_stale: bool,
}

/// The Secret's name: `spec.secret.name`, else `<application name>-credentials`.
pub fn secret_name(app: &Application) -> String {
    app.spec
        .secret
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-credentials", app.name_any()))
}

/// Whether `secret` is controlled by `app` (controller owner reference with its UID).
pub fn is_owned_by(secret: &Secret, app: &Application) -> bool {
    let uid = app.uid();
    secret
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref() && o.kind == "Application")
}

/// The controller owner's UID (the Application's, for an owned Secret).
fn owner_uid(secret: &Secret) -> &str {
    secret
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map_or("", |o| o.uid.as_str())
}

/// The record of `secret` and how far it can be trusted (see [`RecordTrust`]).
fn read_record(
    secret: &Secret,
    pending_secret: Option<&SecretString>,
    key: &RecordKey,
) -> (Option<CredentialRecord>, RecordTrust) {
    let annotations = secret.annotations();
    let raw = annotations.get(ANNOTATION_CREDENTIAL);
    let parsed = raw.and_then(|a| serde_json::from_str::<CredentialRecord>(a).ok());
    let Some(mac) = annotations.get(ANNOTATION_MAC) else {
        return match (raw, parsed) {
            (None, _) => (None, RecordTrust::Verified),
            (Some(_), Some(record)) => (Some(record), RecordTrust::Unsigned),
            (Some(_), None) => (None, RecordTrust::Forged),
        };
    };
    let binding = Binding {
        namespace: secret.metadata.namespace.as_deref().unwrap_or_default(),
        secret_name: secret.metadata.name.as_deref().unwrap_or_default(),
        owner_uid: owner_uid(secret),
    };
    let pending_digest = pending_secret.map(digest);
    let signed = Signed {
        record_json: raw.map_or("", String::as_str),
        secret_digest: annotations.get(ANNOTATION_DIGEST).map_or("", String::as_str),
        pending_digest: pending_digest.as_deref(),
    };
    match parsed {
        Some(record) if key.verify(binding, signed, mac) => (Some(record), RecordTrust::Verified),
        _ => (None, RecordTrust::Forged),
    }
}

/// Reads the credential state from an owned Secret laid out as `layout`, trusting its
/// record only as far as `key` verifies it.
pub fn read(
    secret: &Secret,
    layout: &SecretLayout,
    expected: &ConnectionDetails,
    key: &RecordKey,
) -> StoredCredential {
    let data = secret.data.clone().unwrap_or_default();
    let value = |k: &str| data.get(k).and_then(|b| String::from_utf8(b.0.clone()).ok());
    let client_secret = value(layout.key(KEY_CLIENT_SECRET))
        .filter(|s| !s.is_empty())
        .map(SecretString::new);
    let pending_secret = value(KEY_PENDING_SECRET)
        .filter(|s| !s.is_empty())
        .map(SecretString::new);
    let annotations = secret.annotations();
    let (record, trust) = read_record(secret, pending_secret.as_ref(), key);
    let tampered = match (&client_secret, annotations.get(ANNOTATION_DIGEST)) {
        (Some(s), Some(d)) => digest(s) != *d,
        (None, _) => false,
        (Some(_), None) => true,
    };
    // Anything else differing from what the layout would write (a key edited or removed by
    // hand, a changed template or connection detail) is rewritten.
    let details_stale = match &client_secret {
        Some(s) => {
            let mut actual = data.clone();
            actual.remove(KEY_PENDING_SECRET);
            actual != layout.data(expected, s) || secret.type_.as_deref() != Some(layout.type_.as_str())
        }
        None => true,
    };
    StoredCredential {
        record,
        trust,
        client_secret,
        pending_secret,
        tampered,
        details_stale,
    }
}

/// Whether the existing Secret's type differs from the layout's (the type of a Secret
/// cannot change: it must be created again).
pub fn type_differs(secret: &Secret, layout: &SecretLayout) -> bool {
    secret.type_.as_deref().unwrap_or("Opaque") != layout.type_
}

/// What is written besides the values: the layout, details and record.
pub struct Contents<'a> {
    pub layout: &'a SecretLayout,
    pub details: &'a ConnectionDetails,
    pub record: &'a CredentialRecord,
}

/// Builds the whole Secret `name` for `app`, its record signed with `key`.
pub fn render(
    app: &Application,
    name: &str,
    contents: Contents<'_>,
    client_secret: &SecretString,
    pending_secret: Option<&SecretString>,
    key: &RecordKey,
) -> Secret {
    let Contents {
        layout,
        details,
        record,
    } = contents;
    let template = app.spec.secret.template.clone().unwrap_or_default();
    let mut labels = template.labels.clone();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels.insert(LABEL_APPLICATION.into(), app.name_any());
    let mut annotations = template.annotations.clone();
    // Strings and timestamps only: serializing cannot fail.
    let record_json = serde_json::to_string(record).unwrap_or_default();
    let secret_digest = digest(client_secret);
    let pending_digest = pending_secret.map(digest);
    let namespace = app.namespace().unwrap_or_default();
    let uid = app.uid().unwrap_or_default();
    let binding = Binding {
        namespace: &namespace,
        secret_name: name,
        owner_uid: &uid,
    };
    let signed = Signed {
        record_json: &record_json,
        secret_digest: &secret_digest,
        pending_digest: pending_digest.as_deref(),
    };
    annotations.insert(ANNOTATION_MAC.into(), key.sign(binding, signed));
    annotations.insert(ANNOTATION_CREDENTIAL.into(), record_json);
    annotations.insert(ANNOTATION_DIGEST.into(), secret_digest);
    let mut data = layout.data(details, client_secret);
    if let Some(pending) = pending_secret {
        data.insert(
            KEY_PENDING_SECRET.into(),
            ByteString(pending.expose().as_bytes().to_vec()),
        );
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: app.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: app.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some(layout.type_.clone()),
        data: Some(data),
        ..Default::default()
    }
}

/// Hex SHA-256 of the secret: detects hand edits without storing the value twice.
fn digest(secret: &SecretString) -> String {
    let hash = Sha256::digest(secret.expose().as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::application::ApplicationSpec;

    fn app() -> Application {
        let mut app = Application::new(
            "orders",
            serde_json::from_value::<ApplicationSpec>(serde_json::json!({"authStrategyRef": {"name": "s"}}))
                .unwrap(),
        );
        app.metadata.namespace = Some("team".into());
        app.metadata.uid = Some("uid-1".into());
        app
    }

    fn key() -> RecordKey {
        RecordKey::new(&[7; 32]).unwrap()
    }

    fn details() -> ConnectionDetails {
        ConnectionDetails {
            client_id: "cid".into(),
            tenant_id: "tid".into(),
            issuer: "https://sts.windows.net/tid/".into(),
            token_url: "https://login/tid/oauth2/v2.0/token".into(),
            token_url_v1: "https://login/tid/oauth2/token".into(),
            scope: "api://x/.default".into(),
            auth_methods: "client_credentials".into(),
        }
    }

    fn record() -> CredentialRecord {
        CredentialRecord {
            rotate_request: None,
            revoke_all_request: None,
            key_id: "k1".into(),
            issued_at: Timestamp::from_second(1_700_000_000).unwrap(),
            expires_at: Timestamp::from_second(1_710_000_000).unwrap(),
            verified_at: None,
            previous: vec![PreviousKey {
                key_id: "k0".into(),
                revoke_after: Timestamp::from_second(1_700_003_600).unwrap(),
            }],
            pending: None,
        }
    }

    /// `app()`'s Secret named `name`, as the operator renders it.
    fn rendered(
        name: &str,
        layout: &SecretLayout,
        record: &CredentialRecord,
        secret: &str,
        staged: Option<&str>,
    ) -> Secret {
        let staged = staged.map(SecretString::new);
        render(
            &app(),
            name,
            Contents {
                layout,
                details: &details(),
                record,
            },
            &SecretString::new(secret),
            staged.as_ref(),
            &key(),
        )
    }

    #[test]
    fn rendered_secret_is_owned_labelled_and_round_trips_its_record() {
        let app = app();
        let s = rendered(
            "orders-credentials",
            &SecretLayout::default(),
            &record(),
            "s3cr3t-value",
            None,
        );
        assert!(is_owned_by(&s, &app));
        assert_eq!(s.labels()[LABEL_MANAGED_BY], "dcr-operator");
        let stored = read(&s, &SecretLayout::default(), &details(), &key());
        assert_eq!(stored.record, Some(record()));
        assert_eq!(stored.client_secret.unwrap().expose(), "s3cr3t-value");
        assert!(!stored.tampered && !stored.details_stale);
        for key in [
            "client_id",
            "client_secret",
            "tenant_id",
            "issuer",
            "token_url",
            "token_url_v1",
            "scope",
            "auth_methods",
        ] {
            assert!(s.data.as_ref().unwrap().contains_key(key), "{key}");
        }
    }

    #[test]
    fn the_secret_value_appears_only_in_data() {
        let s = rendered("n", &SecretLayout::default(), &record(), "s3cr3t-value", None);
        let mut without_data = s.clone();
        without_data.data = None;
        assert!(!serde_json::to_string(&without_data)
            .unwrap()
            .contains("s3cr3t-value"));
    }

    #[test]
    fn a_staged_secret_travels_under_its_own_key() {
        let mut r = record();
        let ts = Timestamp::from_second(1_700_000_100).unwrap();
        r.pending = Some(PendingKey {
            key_id: "k2".into(),
            issued_at: ts,
            expires_at: ts,
        });
        let s = rendered("n", &SecretLayout::default(), &r, "old", Some("new"));
        let stored = read(&s, &SecretLayout::default(), &details(), &key());
        assert_eq!(stored.client_secret.unwrap().expose(), "old");
        assert_eq!(stored.pending_secret.unwrap().expose(), "new");
        assert_eq!(
            stored.record.unwrap().key_ids().collect::<Vec<_>>(),
            vec!["k1", "k2", "k0"]
        );
        assert!(!stored.tampered, "the digest covers client_secret only");
    }

    #[test]
    fn templates_rename_keys_and_compose_extra_ones() {
        let template: SecretTemplate = serde_json::from_value(serde_json::json!({
            "type": "example.com/oauth-client",
            "keys": {"client_id": "CLIENT_ID", "client_secret": "CLIENT_SECRET"},
            "data": {".env": "CLIENT_ID={{ client_id }}\nCLIENT_SECRET={{client_secret}}\n"}
        }))
        .unwrap();
        let layout = SecretLayout::new(Some(&template)).unwrap();
        let s = rendered("n", &layout, &record(), "v4lue", None);
        let data = s.data.clone().unwrap();
        let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
        assert_eq!(text("CLIENT_ID"), "cid");
        assert_eq!(text("CLIENT_SECRET"), "v4lue");
        assert_eq!(text(".env"), "CLIENT_ID=cid\nCLIENT_SECRET=v4lue\n");
        assert!(!data.contains_key("client_secret"));
        assert_eq!(s.type_.as_deref(), Some("example.com/oauth-client"));
        let stored = read(&s, &layout, &details(), &key());
        assert_eq!(stored.client_secret.unwrap().expose(), "v4lue");
        assert!(!stored.tampered && !stored.details_stale);
        assert!(
            read(&s, &SecretLayout::default(), &details(), &key()).details_stale,
            "a template change rewrites"
        );
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        let t =
            |v: serde_json::Value| SecretLayout::new(Some(&serde_json::from_value(v).unwrap())).unwrap_err();
        assert!(t(serde_json::json!({"data": {"x": "{{ password }}"}})).contains("unknown field"));
        assert!(t(serde_json::json!({"data": {"x": "{{ client_id"}})).contains("unclosed"));
        assert!(t(serde_json::json!({"keys": {"client_id": "scope"}})).contains("used twice"));
        assert!(t(serde_json::json!({"keys": {"password": "x"}})).contains("not a credential field"));
    }

    #[test]
    fn templates_the_apiserver_would_refuse_are_refused_before_issuing() {
        let t =
            |v: serde_json::Value| SecretLayout::new(Some(&serde_json::from_value(v).unwrap())).unwrap_err();
        assert!(t(serde_json::json!({"keys": {"client_secret": "a/b"}})).contains("keys.client_secret"));
        assert!(t(serde_json::json!({"labels": {"a/b/c": "x"}})).contains("labels"));
        assert!(t(serde_json::json!({"type": "kubernetes.io/service-account-token"})).contains("type"));
        assert!(t(serde_json::json!({
            "annotations": {"kubernetes.io/service-account.name": "default"}
        }))
        .contains("reserved prefix"));
        let basic = serde_json::json!({"type": "kubernetes.io/basic-auth", "keys": {"client_id": "username", "client_secret": "password"}});
        assert!(SecretLayout::new(Some(&serde_json::from_value(basic).unwrap())).is_ok());
    }

    #[test]
    fn a_secret_over_one_mebibyte_is_refused_without_rendering_it() {
        let mut d = details();
        d.scope = "s".repeat(16 * 1024);
        let data: BTreeMap<String, String> = (0..16)
            .map(|i| (format!("k{i}"), "{{ scope }}".repeat(744)))
            .collect();
        let template = SecretTemplate {
            data,
            ..Default::default()
        };
        let layout = SecretLayout::new(Some(&template)).unwrap();
        let err = layout.check_size(&d).unwrap_err();
        assert!(err.starts_with("spec.secret.template.data: "), "{err}");
        assert!(SecretLayout::default().check_size(&d).is_ok());
        let small = SecretTemplate {
            data: BTreeMap::from([("x".to_string(), "{{ scope }}".to_string())]),
            ..Default::default()
        };
        assert!(SecretLayout::new(Some(&small)).unwrap().check_size(&d).is_ok());
    }

    #[test]
    fn composed_len_matches_compose() {
        let template = "a{{ client_id }}b{{scope}}c";
        let d = details();
        let value = |f: &str| d.entries().iter().find(|(k, _)| *k == f).map(|(_, v)| *v);
        let len = |f: &str| value(f).map_or(0, str::len);
        assert_eq!(
            composed_len(template, &len).unwrap(),
            compose(template, &value).unwrap().len()
        );
    }

    #[test]
    fn hand_edits_are_detected() {
        let mut s = rendered("n", &SecretLayout::default(), &record(), "s3cr3t-value", None);
        s.data
            .as_mut()
            .unwrap()
            .insert(KEY_CLIENT_SECRET.into(), ByteString(b"edited".to_vec()));
        assert!(read(&s, &SecretLayout::default(), &details(), &key()).tampered);
        let mut s = rendered("n", &SecretLayout::default(), &record(), "s3cr3t-value", None);
        s.data
            .as_mut()
            .unwrap()
            .insert("token_url".into(), ByteString(b"https://evil".to_vec()));
        let stored = read(&s, &SecretLayout::default(), &details(), &key());
        assert!(stored.details_stale && !stored.tampered);
    }

    /// A rendered Secret of `app()` as the operator writes it, with a staged value.
    fn signed_secret() -> Secret {
        rendered(
            "orders-credentials",
            &SecretLayout::default(),
            &record(),
            "s3cr3t-value",
            Some("staged"),
        )
    }

    fn annotate(s: &mut Secret, key: &str, value: &str) {
        s.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(key.into(), value.into());
    }

    fn trust(s: &Secret) -> (RecordTrust, bool) {
        let stored = read(s, &SecretLayout::default(), &details(), &key());
        (stored.trust, stored.record.is_some())
    }

    #[test]
    fn a_record_the_operator_wrote_is_trusted() {
        assert_eq!(trust(&signed_secret()), (RecordTrust::Verified, true));
        let other_key = RecordKey::new(&[8; 32]).unwrap();
        let stored = read(&signed_secret(), &SecretLayout::default(), &details(), &other_key);
        assert_eq!(
            (stored.trust, stored.record),
            (RecordTrust::Forged, None),
            "another install's key"
        );
    }

    #[test]
    fn an_edited_record_is_forged_and_dropped() {
        let mut forged = record();
        forged.previous.push(PreviousKey {
            key_id: "someone-elses".into(),
            revoke_after: Timestamp::from_second(1).unwrap(),
        });
        let mut s = signed_secret();
        annotate(
            &mut s,
            ANNOTATION_CREDENTIAL,
            &serde_json::to_string(&forged).unwrap(),
        );
        assert_eq!(trust(&s), (RecordTrust::Forged, false));
        // Whitespace is an edit too: the MAC covers the stored text.
        let mut s = signed_secret();
        let json = s.annotations()[ANNOTATION_CREDENTIAL].replace(',', ", ");
        annotate(&mut s, ANNOTATION_CREDENTIAL, &json);
        assert_eq!(trust(&s), (RecordTrust::Forged, false));
        // A MAC made up, or the record gone with the MAC left.
        let mut s = signed_secret();
        annotate(&mut s, ANNOTATION_MAC, &format!("v1:{}", "0".repeat(64)));
        assert_eq!(trust(&s), (RecordTrust::Forged, false));
        let mut s = signed_secret();
        s.metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(ANNOTATION_CREDENTIAL);
        assert_eq!(trust(&s), (RecordTrust::Forged, false));
    }

    #[test]
    fn the_mac_covers_the_staged_value_and_the_digest() {
        let mut s = signed_secret();
        s.data
            .as_mut()
            .unwrap()
            .insert(KEY_PENDING_SECRET.into(), ByteString(b"attacker's".to_vec()));
        assert_eq!(trust(&s), (RecordTrust::Forged, false), "staged value swapped");
        let mut s = signed_secret();
        s.data.as_mut().unwrap().remove(KEY_PENDING_SECRET);
        assert_eq!(trust(&s), (RecordTrust::Forged, false), "staged value removed");
        // The value and its digest edited together.
        let mut s = signed_secret();
        let edited = SecretString::new("edited");
        s.data
            .as_mut()
            .unwrap()
            .insert(KEY_CLIENT_SECRET.into(), ByteString(b"edited".to_vec()));
        annotate(&mut s, ANNOTATION_DIGEST, &digest(&edited));
        assert_eq!(trust(&s), (RecordTrust::Forged, false));
        // The value alone: a hand edit of the value, the record still trusted.
        let mut s = signed_secret();
        s.data
            .as_mut()
            .unwrap()
            .insert(KEY_CLIENT_SECRET.into(), ByteString(b"edited".to_vec()));
        let stored = read(&s, &SecretLayout::default(), &details(), &key());
        assert!(stored.tampered);
        assert_eq!(stored.trust, RecordTrust::Verified);
    }

    #[test]
    fn a_record_copied_to_another_secret_is_forged() {
        let source = signed_secret();
        let mut other = signed_secret();
        other.metadata.name = Some("other-credentials".into());
        assert_eq!(trust(&other), (RecordTrust::Forged, false), "another name");
        let mut other = source.clone();
        other.metadata.namespace = Some("team-b".into());
        assert_eq!(trust(&other), (RecordTrust::Forged, false), "another namespace");
        let mut other = source;
        other.metadata.owner_references.as_mut().unwrap()[0].uid = "uid-2".into();
        assert_eq!(trust(&other), (RecordTrust::Forged, false), "another owner");
    }

    #[test]
    fn a_record_without_mac_is_unsigned_and_an_unreadable_one_forged() {
        let mut s = signed_secret();
        s.metadata.annotations.as_mut().unwrap().remove(ANNOTATION_MAC);
        assert_eq!(trust(&s), (RecordTrust::Unsigned, true));
        annotate(&mut s, ANNOTATION_CREDENTIAL, "{not json");
        assert_eq!(trust(&s), (RecordTrust::Forged, false));
        s.metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(ANNOTATION_CREDENTIAL);
        assert_eq!(trust(&s), (RecordTrust::Verified, false), "no record at all");
    }

    #[test]
    fn a_secret_of_another_application_is_not_owned() {
        let s = rendered("n", &SecretLayout::default(), &record(), "v", None);
        let mut other = app();
        other.metadata.uid = Some("uid-2".into());
        assert!(!is_owned_by(&s, &other));
    }
}
