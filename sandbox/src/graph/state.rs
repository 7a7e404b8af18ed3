//! The directory model: tenants, applications (with passwords, owners and federated
//! identity credentials), service principals, soft-deleted items, issued tokens, and the
//! change log behind `/applications/delta`.
//!
//! Objects keep their Graph representation in a JSON map (`props`), so PATCH semantics
//! and `$select` work on the same names the wire uses; credentials and bookkeeping live
//! in typed fields beside it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::errors::{graph_timestamp, graph_timestamp_precise};

/// Tenant size, which picks the app + tenant resource-unit quota (contract §2.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantSize {
    /// Fewer than 50 users: 3,500 RU per 10 s.
    #[default]
    Small,
    /// 50–500 users: 5,000 RU per 10 s.
    Medium,
    /// More than 500 users: 8,000 RU per 10 s.
    Large,
}

/// The whole emulated directory. One mutex guards it; handlers never hold it across an await.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    pub tenants: BTreeMap<Uuid, Tenant>,
    pub tokens: HashMap<String, IssuedToken>,
    /// Workload-identity issuers whose assertions can be verified (contract §1.3).
    pub issuers: super::issuers::Issuers,
    /// Monotonic sequence for creation order and the delta change log.
    pub seq: u64,
}

impl Directory {
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A tenant by GUID or by (case-insensitive) domain name.
    pub(crate) fn tenant_id_by_ref(&self, reference: &str) -> Option<Uuid> {
        if let Ok(id) = Uuid::parse_str(reference) {
            return self.tenants.contains_key(&id).then_some(id);
        }
        self.tenants
            .values()
            .find(|t| t.domains.iter().any(|d| d.eq_ignore_ascii_case(reference)))
            .map(|t| t.id)
    }

    /// Forget tokens expired for more than a day (called on issuance so the map stays
    /// small; recently expired ones are kept so Graph can say "expired").
    pub(crate) fn prune_tokens(&mut self, now: DateTime<Utc>) {
        let horizon = now - chrono::TimeDelta::days(1);
        self.tokens.retain(|_, t| t.expires > horizon);
    }
}

#[derive(Debug)]
pub(crate) struct Tenant {
    pub id: Uuid,
    /// Verified domains; the first is the initial `*.onmicrosoft.com` domain.
    pub domains: Vec<String>,
    pub display_name: String,
    pub size: TenantSize,
    /// Tenant password-lifetime policy; `None` follows the emulator-wide default.
    pub password_max_lifetime: Option<Option<Duration>>,
    /// Applications, live and soft-deleted, by object id.
    pub apps: BTreeMap<Uuid, App>,
    /// Service principals, live and soft-deleted, by object id.
    pub sps: BTreeMap<Uuid, Sp>,
    /// Change log for `/applications/delta`.
    pub changes: Vec<Change>,
}

impl Tenant {
    pub(crate) fn new(id: Uuid, domain: String, display_name: String, size: TenantSize) -> Tenant {
        Tenant {
            id,
            domains: vec![domain],
            display_name,
            size,
            password_max_lifetime: None,
            apps: BTreeMap::new(),
            sps: BTreeMap::new(),
            changes: Vec::new(),
        }
    }

    pub(crate) fn domain(&self) -> &str {
        &self.domains[0]
    }

    pub(crate) fn app_by_app_id(&self, app_id: Uuid) -> Option<&App> {
        self.apps
            .values()
            .find(|a| a.app_id == app_id && a.deleted.is_none())
    }

    pub(crate) fn sp_by_app_id(&self, app_id: Uuid) -> Option<&Sp> {
        self.sps
            .values()
            .find(|s| s.app_id == app_id && s.deleted.is_none())
    }

    /// Record an application change for delta queries, effective when the change becomes
    /// visible (after the replication lag for a new object).
    pub(crate) fn record_change(&mut self, seq: u64, effective: DateTime<Utc>, id: Uuid) {
        self.changes.push(Change {
            seq,
            effective,
            id,
            props: None,
        });
    }

    /// Record an update of an existing application that changed only `props` (delta then
    /// lists `id` plus those properties, contract §3.7).
    pub(crate) fn record_update(&mut self, seq: u64, effective: DateTime<Utc>, id: Uuid, props: Vec<String>) {
        self.changes.push(Change {
            seq,
            effective,
            id,
            props: Some(props),
        });
    }
}

/// One entry of the delta change log.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub seq: u64,
    pub effective: DateTime<Utc>,
    pub id: Uuid,
    /// The properties an update changed; `None` for a new, restored or removed object
    /// (listed whole, or as removed).
    pub props: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub(crate) struct App {
    pub id: Uuid,
    pub app_id: Uuid,
    /// Creation order (stable paging).
    pub seq: u64,
    /// The Graph representation except `id`, `appId`, `createdDateTime`,
    /// `deletedDateTime` and `passwordCredentials`, which are rendered from the fields.
    pub props: Map<String, Value>,
    pub created: DateTime<Utc>,
    /// Replication: invisible (404) before this instant.
    pub visible_at: DateTime<Utc>,
    pub deleted: Option<DateTime<Utc>>,
    /// Owner object ids (service principals).
    pub owners: Vec<Uuid>,
    pub passwords: Vec<Password>,
    /// Earlier password lists that reads still return while a change replicates, oldest
    /// first (see [`App::passwords_changing`]).
    pub stale_passwords: Vec<StalePasswords>,
    pub fics: Vec<Fic>,
}

/// A `passwordCredentials` list the directory's read replicas still serve until `until`.
#[derive(Debug, Clone)]
pub(crate) struct StalePasswords {
    pub until: DateTime<Utc>,
    pub passwords: Vec<Password>,
}

impl App {
    /// Call before `addPassword`/`removePassword` changes `passwords` at `now`: for `lag`
    /// after the change, reads return the list as it was (contract §7: "a fresh update may
    /// not be visible yet"; terraform polls until a new keyId shows, §4.1). The token
    /// endpoint and writes see the change at once.
    pub(crate) fn passwords_changing(&mut self, now: DateTime<Utc>, lag: chrono::TimeDelta) {
        self.stale_passwords.retain(|s| s.until > now);
        if lag > chrono::TimeDelta::zero() {
            self.stale_passwords.push(StalePasswords {
                until: now + lag,
                passwords: self.passwords.clone(),
            });
        }
    }

    /// The passwords a read at `now` returns: the state as of `lag` ago.
    pub(crate) fn passwords_read(&self, now: DateTime<Utc>) -> &[Password] {
        self.stale_passwords
            .iter()
            .find(|s| s.until > now)
            .map_or(&self.passwords, |s| &s.passwords)
    }

    /// [`App::render`] as a read at `now` sees it (passwords lagging behind changes).
    pub(crate) fn render_read(&self, now: DateTime<Utc>) -> Value {
        let mut v = self.render();
        v["passwordCredentials"] =
            Value::Array(self.passwords_read(now).iter().map(|p| p.render(false)).collect());
        v
    }

    pub(crate) fn visible(&self, now: DateTime<Utc>) -> bool {
        now >= self.visible_at
    }

    pub(crate) fn live_and_visible(&self, now: DateTime<Utc>) -> bool {
        self.deleted.is_none() && self.visible(now)
    }

    pub(crate) fn str_prop(&self, name: &str) -> Option<&str> {
        self.props.get(name).and_then(Value::as_str)
    }

    pub(crate) fn unique_name(&self) -> Option<&str> {
        self.str_prop("uniqueName")
    }

    pub(crate) fn sign_in_audience(&self) -> &str {
        self.str_prop("signInAudience").unwrap_or("AzureADMyOrg")
    }

    pub(crate) fn identifier_uris(&self) -> Vec<String> {
        string_array(self.props.get("identifierUris"))
    }

    /// The Graph JSON of the application.
    pub(crate) fn render(&self) -> Value {
        let mut m = self.props.clone();
        m.insert("id".into(), self.id.to_string().into());
        m.insert("appId".into(), self.app_id.to_string().into());
        m.insert("createdDateTime".into(), graph_timestamp(self.created).into());
        m.insert("deletedDateTime".into(), self.deleted.map(graph_timestamp).into());
        m.insert(
            "passwordCredentials".into(),
            Value::Array(self.passwords.iter().map(|p| p.render(false)).collect()),
        );
        Value::Object(m)
    }
}

/// Whether a `signInAudience` includes personal Microsoft accounts (contract §2.2, §8).
pub(crate) fn audience_is_personal(audience: &str) -> bool {
    matches!(
        audience,
        "AzureADandPersonalMicrosoftAccount" | "PersonalMicrosoftAccount"
    )
}

pub(crate) fn string_array(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[derive(Debug, Clone)]
pub(crate) struct Password {
    pub key_id: Uuid,
    pub display_name: Option<String>,
    pub hint: String,
    pub secret: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// When addPassword ran; the secret activates `secret_activation_delay` later.
    pub added: DateTime<Utc>,
    /// Activation instant at the token endpoint.
    pub active_at: DateTime<Utc>,
}

impl Password {
    /// The `passwordCredential` resource; `secretText` only in the addPassword response.
    pub(crate) fn render(&self, with_secret: bool) -> Value {
        json!({
            "customKeyIdentifier": null,
            "displayName": self.display_name,
            "endDateTime": graph_timestamp_precise(self.end),
            "hint": self.hint,
            "keyId": self.key_id.to_string(),
            "secretText": if with_secret { Value::from(self.secret.clone()) } else { Value::Null },
            "startDateTime": graph_timestamp_precise(self.start),
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Fic {
    pub id: Uuid,
    pub name: String,
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    pub description: Option<String>,
}

impl Fic {
    pub(crate) fn render(&self) -> Value {
        json!({
            "id": self.id.to_string(),
            "name": self.name,
            "issuer": self.issuer,
            "subject": self.subject,
            "audiences": self.audiences,
            "description": self.description,
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Sp {
    pub id: Uuid,
    pub app_id: Uuid,
    pub seq: u64,
    /// Graph representation except `id`, `appId`, `deletedDateTime`.
    pub props: Map<String, Value>,
    pub created: DateTime<Utc>,
    pub visible_at: DateTime<Utc>,
    pub deleted: Option<DateTime<Utc>>,
    /// Set when the SP was soft-deleted together with its application, so restoring the
    /// application restores it (contract §3.5).
    pub deleted_with_app: bool,
    /// Application permissions (app roles) granted on Microsoft Graph, e.g.
    /// `Application.ReadWrite.OwnedBy`. They end up in the token's `roles`.
    pub graph_roles: BTreeSet<String>,
}

impl Sp {
    pub(crate) fn visible(&self, now: DateTime<Utc>) -> bool {
        now >= self.visible_at
    }

    pub(crate) fn live_and_visible(&self, now: DateTime<Utc>) -> bool {
        self.deleted.is_none() && self.visible(now)
    }

    pub(crate) fn render(&self) -> Value {
        let mut m = self.props.clone();
        m.insert("id".into(), self.id.to_string().into());
        m.insert("appId".into(), self.app_id.to_string().into());
        m.insert("deletedDateTime".into(), self.deleted.map(graph_timestamp).into());
        Value::Object(m)
    }
}

/// A token issued by the emulated token endpoint.
#[derive(Debug, Clone)]
pub(crate) struct IssuedToken {
    pub tenant: Uuid,
    pub app_id: Uuid,
    pub sp_id: Uuid,
    pub roles: Vec<String>,
    pub not_before: DateTime<Utc>,
    pub expires: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------
// Public snapshot types (inspection).

/// Everything in the emulated directory, without secret values
/// (`GET /_emulator/state`, [`GraphEmulator::state`](super::GraphEmulator::state)).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateSnapshot {
    /// The emulated clock when the snapshot was taken.
    pub now: DateTime<Utc>,
    /// All tenants.
    pub tenants: Vec<TenantSnapshot>,
}

impl StateSnapshot {
    /// All applications of all tenants, live and soft-deleted.
    pub fn applications(&self) -> impl Iterator<Item = &ApplicationSnapshot> {
        self.tenants.iter().flat_map(|t| t.applications.iter())
    }

    /// All service principals of all tenants, live and soft-deleted.
    pub fn service_principals(&self) -> impl Iterator<Item = &ServicePrincipalSnapshot> {
        self.tenants.iter().flat_map(|t| t.service_principals.iter())
    }

    /// The application with this object id, application id or uniqueName (any tenant).
    pub fn application(&self, id_app_id_or_unique_name: &str) -> Option<&ApplicationSnapshot> {
        self.applications().find(|a| {
            a.id == id_app_id_or_unique_name
                || a.app_id == id_app_id_or_unique_name
                || a.unique_name.as_deref() == Some(id_app_id_or_unique_name)
        })
    }

    /// The service principal with this object id or application id (any tenant).
    pub fn service_principal(&self, id_or_app_id: &str) -> Option<&ServicePrincipalSnapshot> {
        self.service_principals()
            .find(|s| s.id == id_or_app_id || s.app_id == id_or_app_id)
    }

    /// Soft-deleted applications (the deleted-items container).
    pub fn deleted_applications(&self) -> impl Iterator<Item = &ApplicationSnapshot> {
        self.applications().filter(|a| a.deleted_date_time.is_some())
    }

    /// Live (not soft-deleted) applications.
    pub fn live_applications(&self) -> impl Iterator<Item = &ApplicationSnapshot> {
        self.applications().filter(|a| a.deleted_date_time.is_none())
    }
}

/// One tenant.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantSnapshot {
    /// Tenant id (GUID).
    pub id: String,
    /// Verified domains; the first is the initial domain.
    pub domains: Vec<String>,
    /// Display name.
    pub display_name: String,
    /// Size class (throttling quota).
    pub size: TenantSize,
    /// Effective password-lifetime cap in seconds, if any.
    pub password_max_lifetime_secs: Option<f64>,
    /// Applications, live and soft-deleted.
    pub applications: Vec<ApplicationSnapshot>,
    /// Service principals, live and soft-deleted.
    pub service_principals: Vec<ServicePrincipalSnapshot>,
}

/// One application, without secret values.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSnapshot {
    /// Object id.
    pub id: String,
    /// Application (client) id.
    pub app_id: String,
    /// `displayName`.
    pub display_name: String,
    /// `uniqueName`.
    pub unique_name: Option<String>,
    /// `tags`.
    pub tags: Vec<String>,
    /// Owner object ids.
    pub owners: Vec<String>,
    /// Password credentials by keyId, without values.
    pub passwords: Vec<PasswordSnapshot>,
    /// Federated identity credentials as Graph returns them.
    pub federated_identity_credentials: Vec<Value>,
    /// Creation time.
    pub created_date_time: DateTime<Utc>,
    /// End of the replication window (reads 404 before it).
    pub visible_at: DateTime<Utc>,
    /// Soft-deletion time, if in deleted items.
    pub deleted_date_time: Option<DateTime<Utc>>,
    /// The full Graph representation (passwords without `secretText`).
    pub object: Value,
}

/// One password credential, without its value.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordSnapshot {
    /// `keyId`.
    pub key_id: String,
    /// `displayName`.
    pub display_name: Option<String>,
    /// `hint` (first three characters).
    pub hint: String,
    /// `startDateTime`.
    pub start_date_time: DateTime<Utc>,
    /// `endDateTime`.
    pub end_date_time: DateTime<Utc>,
    /// When addPassword ran.
    pub added_date_time: DateTime<Utc>,
    /// When the secret starts working at the token endpoint (activation delay).
    pub active_at: DateTime<Utc>,
}

/// One service principal.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipalSnapshot {
    /// Object id.
    pub id: String,
    /// Application id.
    pub app_id: String,
    /// `displayName`.
    pub display_name: String,
    /// Microsoft Graph application permissions granted to it.
    pub graph_roles: Vec<String>,
    /// Creation time.
    pub created_date_time: DateTime<Utc>,
    /// End of the replication window.
    pub visible_at: DateTime<Utc>,
    /// Soft-deletion time, if in deleted items.
    pub deleted_date_time: Option<DateTime<Utc>>,
    /// The full Graph representation.
    pub object: Value,
}

impl Directory {
    pub(crate) fn snapshot(&self, now: DateTime<Utc>, default_cap: Option<Duration>) -> StateSnapshot {
        let tenants = self
            .tenants
            .values()
            .map(|t| TenantSnapshot {
                id: t.id.to_string(),
                domains: t.domains.clone(),
                display_name: t.display_name.clone(),
                size: t.size,
                password_max_lifetime_secs: t
                    .password_max_lifetime
                    .unwrap_or(default_cap)
                    .map(|d| d.as_secs_f64()),
                applications: t.apps.values().map(app_snapshot).collect(),
                service_principals: t
                    .sps
                    .values()
                    .map(|s| ServicePrincipalSnapshot {
                        id: s.id.to_string(),
                        app_id: s.app_id.to_string(),
                        display_name: s
                            .props
                            .get("displayName")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .into(),
                        graph_roles: s.graph_roles.iter().cloned().collect(),
                        created_date_time: s.created,
                        visible_at: s.visible_at,
                        deleted_date_time: s.deleted,
                        object: s.render(),
                    })
                    .collect(),
            })
            .collect();
        StateSnapshot { now, tenants }
    }
}

fn app_snapshot(a: &App) -> ApplicationSnapshot {
    ApplicationSnapshot {
        id: a.id.to_string(),
        app_id: a.app_id.to_string(),
        display_name: a.str_prop("displayName").unwrap_or_default().into(),
        unique_name: a.unique_name().map(str::to_string),
        tags: string_array(a.props.get("tags")),
        owners: a.owners.iter().map(Uuid::to_string).collect(),
        passwords: a
            .passwords
            .iter()
            .map(|p| PasswordSnapshot {
                key_id: p.key_id.to_string(),
                display_name: p.display_name.clone(),
                hint: p.hint.clone(),
                start_date_time: p.start,
                end_date_time: p.end,
                added_date_time: p.added,
                active_at: p.active_at,
            })
            .collect(),
        federated_identity_credentials: a.fics.iter().map(Fic::render).collect(),
        created_date_time: a.created,
        visible_at: a.visible_at,
        deleted_date_time: a.deleted,
        object: a.render(),
    }
}
