//! Typed Graph v1.0 payloads for exactly what the operator uses (contract §3–§5).
//!
//! Response types tolerate missing fields (delta pages carry only changed properties, and
//! Graph adds properties over time); request types serialize only the fields that are set, so
//! a PATCH changes only what the caller gave (contract §3.3).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::sensitive::SecretString;

/// `signInAudience` values (contract §8). The operator always sends one explicitly (§3.1).
pub mod sign_in_audience {
    /// Single tenant.
    pub const AZURE_AD_MY_ORG: &str = "AzureADMyOrg";
    /// Any Entra tenant.
    pub const AZURE_AD_MULTIPLE_ORGS: &str = "AzureADMultipleOrgs";
    /// Any Entra tenant and personal Microsoft accounts (60 writes/min, 2 secrets max).
    pub const AZURE_AD_AND_PERSONAL: &str = "AzureADandPersonalMicrosoftAccount";
    /// Personal Microsoft accounts only.
    pub const PERSONAL_MICROSOFT_ACCOUNT: &str = "PersonalMicrosoftAccount";
}

/// An application object as Graph returns it. Every property but `id` is optional: a delta
/// page lists only what changed, and `$select` narrows answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    /// Object id (used in `/applications/{id}`), not the client id.
    pub id: String,
    /// Client id (`appId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Description (≤ 1,024 chars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Immutable alternate key set by the upsert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_name: Option<String>,
    /// Free-form tags (the operator records cluster, namespace, name, uid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_in_audience: Option<String>,
    /// Notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Application ID URIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier_uris: Option<Vec<String>>,
    /// Web platform settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebApplication>,
    /// API permissions the app asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_resource_access: Option<Vec<RequiredResourceAccess>>,
    /// Password credentials, without their values (`secretText` is always null here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_credentials: Option<Vec<PasswordCredential>>,
    /// Creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time: Option<DateTime<Utc>>,
    /// Set on soft-deleted applications (deleted items).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_date_time: Option<DateTime<Utc>>,
}

impl Application {
    /// The tags, or none.
    pub fn tags(&self) -> &[String] {
        self.tags.as_deref().unwrap_or_default()
    }

    /// The password credentials, or none.
    pub fn passwords(&self) -> &[PasswordCredential] {
        self.password_credentials.as_deref().unwrap_or_default()
    }
}

/// `web` of an application.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebApplication {
    /// Redirect URIs (replaced whole on PATCH).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
}

/// One API the application asks permissions for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequiredResourceAccess {
    /// The resource API's appId (Graph: `00000003-0000-0000-c000-000000000000`).
    pub resource_app_id: String,
    /// The scopes/roles.
    #[serde(default)]
    pub resource_access: Vec<ResourceAccess>,
}

/// A delegated scope (`Scope`) or application role (`Role`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAccess {
    /// The permission's id.
    pub id: String,
    /// `Scope` or `Role`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// A password credential as listed on an application (no secret value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordCredential {
    /// The credential's id.
    pub key_id: String,
    /// Its display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// First 3 characters of the secret.
    #[serde(default)]
    pub hint: Option<String>,
    /// Valid from.
    #[serde(default)]
    pub start_date_time: Option<DateTime<Utc>>,
    /// Valid until.
    #[serde(default)]
    pub end_date_time: Option<DateTime<Utc>>,
}

/// The fields of an application to create or change. Unset fields are not sent, so they keep
/// their current value; collections are replaced whole (contract §3.3).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationPatch {
    /// Display name (required by the upsert; ≤ 120 chars is safe, contract §8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Description (≤ 1,024 chars).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tags: 1–256 chars each, no whitespace, no duplicates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Always send one (the default differs between doc revisions, contract §3.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_in_audience: Option<String>,
    /// Notes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Application ID URIs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier_uris: Option<Vec<String>>,
    /// Web platform settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web: Option<WebApplication>,
    /// API permissions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_resource_access: Option<Vec<RequiredResourceAccess>>,
    /// Owners to add, as directory object URLs (see
    /// [`super::GraphClient::directory_object_url`]). Send on create: an
    /// `Application.ReadWrite.OwnedBy` caller must make itself an owner to manage the app later.
    #[serde(rename = "owners@odata.bind", skip_serializing_if = "Option::is_none")]
    pub owners_bind: Option<Vec<String>>,
}

/// The body of `addPassword`: all optional (contract §4.1); Entra defaults the start to now and
/// the end to two years later.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddPasswordRequest {
    /// Display name of the credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Valid from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_date_time: Option<DateTime<Utc>>,
    /// Valid until.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_date_time: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AddPasswordBody<'a> {
    pub password_credential: &'a AddPasswordRequest,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RemovePasswordBody<'a> {
    pub key_id: &'a str,
}

/// A password just issued by `addPassword`. The only time Graph returns `secretText`; `Debug`
/// redacts it.
#[derive(Debug, Clone)]
pub struct IssuedPassword {
    /// The credential's id (record it before anything else can fail).
    pub key_id: String,
    /// The secret.
    pub secret_text: SecretString,
    /// First 3 characters of the secret.
    pub hint: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Valid from.
    pub start_date_time: Option<DateTime<Utc>>,
    /// Valid until.
    pub end_date_time: Option<DateTime<Utc>>,
}

/// Wire form of [`IssuedPassword`]; never Debug-printed, converted at once.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IssuedPasswordWire {
    key_id: String,
    secret_text: Option<String>,
    #[serde(default)]
    hint: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    start_date_time: Option<DateTime<Utc>>,
    #[serde(default)]
    end_date_time: Option<DateTime<Utc>>,
}

impl IssuedPasswordWire {
    /// `None` when the answer carried no secret.
    pub(crate) fn into_issued(self) -> Option<IssuedPassword> {
        let secret = self.secret_text.filter(|s| !s.is_empty())?;
        Some(IssuedPassword {
            key_id: self.key_id,
            secret_text: SecretString::new(secret),
            hint: self.hint,
            display_name: self.display_name,
            start_date_time: self.start_date_time,
            end_date_time: self.end_date_time,
        })
    }
}

/// A service principal (the app's instance in the tenant).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipal {
    /// Object id (what `owners@odata.bind` refers to).
    pub id: String,
    /// The application's client id.
    #[serde(default)]
    pub app_id: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Enabled.
    #[serde(default)]
    pub account_enabled: Option<bool>,
    /// The tenant that owns the application.
    #[serde(default)]
    pub app_owner_organization_id: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateServicePrincipalBody<'a> {
    pub app_id: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub tags: &'a [String],
}

/// One page of a collection.
#[derive(Debug, Deserialize)]
pub(crate) struct Page<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    pub next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink", default)]
    pub delta_link: Option<String>,
}

/// Result of the upsert by `uniqueName` (contract §3.4).
#[derive(Debug, Clone, PartialEq)]
pub enum UpsertOutcome {
    /// 201: the application did not exist and was created; this is the full object. Treat it
    /// as just created ([`super::Freshness::JustCreated`]) for the next calls.
    Created(Box<Application>),
    /// 204: it existed and was updated; Graph returns no body (GET it to learn `id`/`appId`).
    Updated,
}

/// Result of [`super::GraphClient::ensure_application`].
#[derive(Debug, Clone, PartialEq)]
pub struct EnsuredApplication {
    /// The application (as created, or as read after the update).
    pub application: Application,
    /// True when this call created it.
    pub created: bool,
}

/// Where a delta query starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaCursor {
    /// A full initial round; `select` narrows the properties (`id` is always returned).
    Initial {
        /// `$select` properties.
        select: Vec<String>,
    },
    /// Only a deltaLink for "from now on" (`$deltatoken=latest`).
    Latest,
    /// Continue from a previous round's `@odata.deltaLink`.
    Link(String),
}

/// Why an object left the delta set (contract §3.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemovedReason {
    /// Soft-deleted, restorable.
    Changed,
    /// Permanently deleted.
    Deleted,
    /// Anything else Graph may send.
    Other(String),
}

/// One entry of a delta round.
#[derive(Debug, Clone, PartialEq)]
pub enum DeltaItem {
    /// A new object (whole) or an update (`id` plus at least the changed properties).
    Changed(Box<Application>),
    /// An object removed from the set.
    Removed {
        /// Object id.
        id: String,
        /// Soft or permanent deletion.
        reason: RemovedReason,
    },
}

impl DeltaItem {
    pub(crate) fn from_value(v: serde_json::Value) -> Result<Self, serde_json::Error> {
        if let Some(removed) = v.get("@removed") {
            let id = v
                .get("id")
                .and_then(|i| i.as_str())
                .unwrap_or_default()
                .to_string();
            let reason = match removed.get("reason").and_then(|r| r.as_str()) {
                Some("changed") => RemovedReason::Changed,
                Some("deleted") => RemovedReason::Deleted,
                Some(other) => RemovedReason::Other(other.to_string()),
                None => RemovedReason::Other(String::new()),
            };
            return Ok(Self::Removed { id, reason });
        }
        serde_json::from_value(v).map(|a| Self::Changed(Box::new(a)))
    }
}

/// All changes of one delta round and the link for the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaRound {
    /// Changes in arrival order (an object may appear more than once; order is not meaningful).
    pub items: Vec<DeltaItem>,
    /// Pass as [`DeltaCursor::Link`] next time.
    pub delta_link: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_serializes_only_given_fields() {
        let p = ApplicationPatch {
            display_name: Some("ns1-myclient".into()),
            tags: Some(vec!["k8s-operator".into()]),
            sign_in_audience: Some(sign_in_audience::AZURE_AD_MY_ORG.into()),
            web: Some(WebApplication {
                redirect_uris: vec!["https://app.example.com/cb".into()],
            }),
            owners_bind: Some(vec![
                "https://graph.microsoft.com/v1.0/directoryObjects/abc".into()
            ]),
            ..Default::default()
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "displayName": "ns1-myclient",
                "tags": ["k8s-operator"],
                "signInAudience": "AzureADMyOrg",
                "web": {"redirectUris": ["https://app.example.com/cb"]},
                "owners@odata.bind": ["https://graph.microsoft.com/v1.0/directoryObjects/abc"]
            })
        );
        assert_eq!(
            serde_json::to_value(ApplicationPatch::default()).unwrap(),
            serde_json::json!({})
        );
    }

    #[test]
    fn application_parses_the_documented_shape() {
        let app: Application = serde_json::from_str(
            r#"{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#applications/$entity",
            "id":"03ef14b0-ca33-4840-8f4f-d6e91916010e","deletedDateTime":null,
            "appId":"631a96bc-a705-4eda-9f99-fdaf9f54f6a2","displayName":"ns1-myclient",
            "uniqueName":"c1-uid","tags":["k8s-operator"],"signInAudience":"AzureADMyOrg",
            "requiredResourceAccess":[{"resourceAppId":"00000003-0000-0000-c000-000000000000",
              "resourceAccess":[{"id":"e1fe6dd8-ba31-4d61-89e7-88639da4683d","type":"Scope"}]}],
            "passwordCredentials":[{"customKeyIdentifier":null,"displayName":"k8s","endDateTime":"2027-01-01T00:00:00Z",
              "hint":"Abc","keyId":"f0b0b335-1d71-4883-8f98-567911bfdca6","secretText":null,"startDateTime":"2025-01-01T00:00:00.1234567Z"}],
            "web":{"redirectUris":[],"homePageUrl":null,"implicitGrantSettings":{"enableIdTokenIssuance":false}},
            "createdDateTime":"2025-01-01T00:00:00Z","isFallbackPublicClient":null}"#,
        )
        .unwrap();
        assert_eq!(
            app.app_id.as_deref(),
            Some("631a96bc-a705-4eda-9f99-fdaf9f54f6a2")
        );
        assert_eq!(app.passwords()[0].hint.as_deref(), Some("Abc"));
        assert_eq!(
            app.required_resource_access.as_ref().unwrap()[0].resource_access[0].kind,
            "Scope"
        );
        assert!(app.deleted_date_time.is_none());
    }

    #[test]
    fn issued_password_keeps_the_secret_out_of_debug() {
        let wire: IssuedPasswordWire = serde_json::from_str(
            r#"{"customKeyIdentifier":null,"displayName":"k8s ns1/myclient","endDateTime":"2027-01-01T00:00:00Z",
            "hint":"Abc","keyId":"f0b0b335-1d71-4883-8f98-567911bfdca6","secretText":"Abc~verysecretvalue123",
            "startDateTime":"2025-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let p = wire.into_issued().unwrap();
        assert_eq!(p.secret_text.expose(), "Abc~verysecretvalue123");
        let d = format!("{p:?}");
        assert!(!d.contains("verysecret"), "{d}");
        assert!(d.contains("f0b0b335"));
    }

    #[test]
    fn delta_items_parse_changes_and_removals() {
        let items: Vec<DeltaItem> = [
            r#"{"id":"a","displayName":"x"}"#,
            r#"{"id":"b","@removed":{"reason":"changed"}}"#,
            r#"{"id":"c","@removed":{"reason":"deleted"}}"#,
        ]
        .iter()
        .map(|s| DeltaItem::from_value(serde_json::from_str(s).unwrap()).unwrap())
        .collect();
        assert!(matches!(&items[0], DeltaItem::Changed(a) if a.id == "a" && a.tags.is_none()));
        assert_eq!(
            items[1],
            DeltaItem::Removed {
                id: "b".into(),
                reason: RemovedReason::Changed
            }
        );
        assert_eq!(
            items[2],
            DeltaItem::Removed {
                id: "c".into(),
                reason: RemovedReason::Deleted
            }
        );
    }
}
