//! Seeding tenants and apps directly (no HTTP, no lag, no faults): the tenants a test
//! needs and the operator's "initial client", an app with a known secret, a service
//! principal and a Microsoft Graph application permission.

use std::{collections::BTreeSet, fmt, time::Duration};

use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    applications::{default_props, generate_secret, push_password},
    config::opt_secs,
    service_principals,
    state::{App, Directory, Sp, Tenant, TenantSize},
};

/// A tenant to create. Everything is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantSpec {
    /// Tenant id (a GUID); random when `None`.
    pub id: Option<String>,
    /// Initial domain; `tenant-<first 8 hex digits of the id>.onmicrosoft.com` when `None`.
    pub domain: Option<String>,
    /// Further verified domains (allowed as `https://` identifier URI hosts).
    pub extra_domains: Vec<String>,
    /// Display name (also the service principals' `publisherName`).
    pub display_name: Option<String>,
    /// Size class (throttling quota).
    pub size: TenantSize,
    /// Tenant password-lifetime policy; `None` follows
    /// [`EmulatorConfig::password_max_lifetime`](super::EmulatorConfig::password_max_lifetime).
    /// In JSON: seconds.
    #[serde(with = "opt_secs")]
    pub password_max_lifetime: Option<Duration>,
}

impl TenantSpec {
    /// A tenant with this id (GUID).
    pub fn with_id(id: &str) -> TenantSpec {
        TenantSpec {
            id: Some(id.to_string()),
            ..Default::default()
        }
    }

    /// Set the initial domain.
    pub fn domain(mut self, domain: &str) -> TenantSpec {
        self.domain = Some(domain.to_string());
        self
    }
}

/// A created tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantInfo {
    /// Tenant id (GUID); usable in token URLs.
    pub id: String,
    /// Initial domain; also usable in token URLs.
    pub domain: String,
}

/// Microsoft Graph application permissions the emulator understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GraphPermission {
    /// `Application.ReadWrite.OwnedBy`: create apps, manage only owned ones, read all.
    ApplicationReadWriteOwnedBy,
    /// `Application.ReadWrite.All`: manage all apps and service principals.
    ApplicationReadWriteAll,
    /// `Application.Read.All`: read only.
    ApplicationReadAll,
}

impl GraphPermission {
    /// The app role value, as in a token's `roles` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            GraphPermission::ApplicationReadWriteOwnedBy => "Application.ReadWrite.OwnedBy",
            GraphPermission::ApplicationReadWriteAll => "Application.ReadWrite.All",
            GraphPermission::ApplicationReadAll => "Application.Read.All",
        }
    }
}

impl fmt::Display for GraphPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An application to seed (with its service principal and one password).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct AppSpec {
    /// `displayName`.
    pub display_name: String,
    /// Fixed client id (`appId`, a GUID); random when `None`.
    pub client_id: Option<String>,
    /// Fixed secret; an Entra-looking random one when `None`.
    pub client_secret: Option<String>,
    /// Microsoft Graph application permissions (app role values), e.g.
    /// `["Application.ReadWrite.OwnedBy"]`.
    pub graph_permissions: Vec<String>,
    /// Create the service principal too (default `true`); without it the token endpoint
    /// answers AADSTS7000229.
    pub service_principal: bool,
    /// `uniqueName`, if any.
    pub unique_name: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
}

impl Default for AppSpec {
    fn default() -> Self {
        AppSpec {
            display_name: "graph-emulator admin".into(),
            client_id: None,
            client_secret: None,
            graph_permissions: Vec::new(),
            service_principal: true,
            unique_name: None,
            tags: Vec::new(),
        }
    }
}

impl fmt::Debug for AppSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppSpec")
            .field("display_name", &self.display_name)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("graph_permissions", &self.graph_permissions)
            .field("service_principal", &self.service_principal)
            .finish()
    }
}

impl AppSpec {
    /// An admin app holding one Graph permission.
    pub fn admin(permission: GraphPermission) -> AppSpec {
        AppSpec {
            graph_permissions: vec![permission.as_str().to_string()],
            ..Default::default()
        }
    }
}

/// A seeded app: everything a client needs to get a token and act as it.
/// `Debug` redacts the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminApp {
    /// Tenant id.
    pub tenant_id: String,
    /// Tenant initial domain.
    pub tenant_domain: String,
    /// `appId` (client id).
    pub client_id: String,
    /// The password's value.
    pub client_secret: String,
    /// The password's keyId.
    pub key_id: String,
    /// The application's object id.
    pub object_id: String,
    /// The service principal's object id (empty when none was created); bind it with
    /// `owners@odata.bind` to make this app an owner.
    pub sp_id: String,
}

impl fmt::Debug for AdminApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminApp")
            .field("tenant_id", &self.tenant_id)
            .field("tenant_domain", &self.tenant_domain)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("key_id", &self.key_id)
            .field("object_id", &self.object_id)
            .field("sp_id", &self.sp_id)
            .finish()
    }
}

pub(crate) fn tenant(dir: &mut Directory, spec: TenantSpec) -> Result<TenantInfo, String> {
    let id = match &spec.id {
        Some(s) => Uuid::parse_str(s).map_err(|_| format!("tenant id '{s}' is not a GUID"))?,
        None => Uuid::new_v4(),
    };
    if dir.tenants.contains_key(&id) {
        return Err(format!("tenant {id} already exists"));
    }
    let domain = spec
        .domain
        .unwrap_or_else(|| format!("tenant-{}.onmicrosoft.com", &id.simple().to_string()[..8]));
    if dir.tenant_id_by_ref(&domain).is_some() {
        return Err(format!("domain {domain} is already used by another tenant"));
    }
    let mut t = Tenant::new(
        id,
        domain.clone(),
        spec.display_name.unwrap_or_else(|| format!("Tenant {domain}")),
        spec.size,
    );
    t.domains.extend(spec.extra_domains);
    t.password_max_lifetime = spec.password_max_lifetime.map(Some);
    dir.tenants.insert(id, t);
    Ok(TenantInfo {
        id: id.to_string(),
        domain,
    })
}

pub(crate) fn app(
    dir: &mut Directory,
    tenant_ref: &str,
    spec: AppSpec,
    now: DateTime<Utc>,
) -> Result<AdminApp, String> {
    let tid = dir
        .tenant_id_by_ref(tenant_ref)
        .ok_or_else(|| format!("unknown tenant '{tenant_ref}'"))?;
    let app_id = match &spec.client_id {
        Some(s) => Uuid::parse_str(s).map_err(|_| format!("client id '{s}' is not a GUID"))?,
        None => Uuid::new_v4(),
    };
    if dir.tenants[&tid]
        .apps
        .values()
        .any(|a| a.app_id == app_id && a.deleted.is_none())
    {
        return Err(format!("an application with appId {app_id} already exists"));
    }
    let (app_seq, sp_seq) = (dir.next_seq(), dir.next_seq());
    let t = dir.tenants.get_mut(&tid).expect("found above");
    let mut props = default_props(t, None);
    props.insert("displayName".into(), spec.display_name.clone().into());
    props.insert("tags".into(), spec.tags.clone().into());
    if let Some(u) = &spec.unique_name {
        props.insert("uniqueName".into(), u.clone().into());
    }
    let mut app = App {
        id: Uuid::new_v4(),
        app_id,
        seq: app_seq,
        props,
        created: now,
        visible_at: now,
        deleted: None,
        owners: Vec::new(),
        passwords: Vec::new(),
        stale_passwords: Vec::new(),
        fics: Vec::new(),
    };
    let secret = spec.client_secret.unwrap_or_else(generate_secret);
    let end = now.checked_add_months(Months::new(24)).unwrap_or(now);
    let key = push_password(
        &mut app,
        secret.clone(),
        Some("seeded".into()),
        now,
        end,
        now,
        chrono::TimeDelta::zero(),
    );
    let mut sp_id = String::new();
    if spec.service_principal {
        let sp = Sp {
            id: Uuid::new_v4(),
            app_id,
            seq: sp_seq,
            props: service_principals::default_props(t, &app),
            created: now,
            visible_at: now,
            deleted: None,
            deleted_with_app: false,
            graph_roles: spec.graph_permissions.iter().cloned().collect::<BTreeSet<_>>(),
        };
        sp_id = sp.id.to_string();
        t.sps.insert(sp.id, sp);
    }
    let info = AdminApp {
        tenant_id: tid.to_string(),
        tenant_domain: t.domain().to_string(),
        client_id: app_id.to_string(),
        client_secret: secret,
        key_id: key.key_id.to_string(),
        object_id: app.id.to_string(),
        sp_id,
    };
    let id = app.id;
    t.apps.insert(id, app);
    t.record_change(app_seq, now, id);
    Ok(info)
}
