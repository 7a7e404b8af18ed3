//! `/applications`: create, read (by id, `appId`, `uniqueName`), list, update, upsert by
//! `uniqueName`, soft delete, `addPassword` / `removePassword`, owners
//! (contract §3, §4).

use axum::http::StatusCode;
use chrono::{DateTime, Months, TimeDelta, Utc};
use rand::Rng;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{
    context::{parse_object_id, reference_id, Ctx, GraphResult, Reply},
    errors::GraphError,
    query::{self, Item, ListRequest, APPLICATION},
    routes::AppKey,
    state::{audience_is_personal, App, Directory, Password, Tenant},
    validate,
};

/// Properties a client may not set.
const READ_ONLY: &[&str] = &[
    "id",
    "appId",
    "createdDateTime",
    "deletedDateTime",
    "publisherDomain",
    "createdByAppId",
];

/// Complex properties merged key by key on PATCH (their sub-properties are replaced whole).
/// Whether Graph merges or replaces complex values is not in the contract; merging is the
/// lenient reading of "only the supplied properties change".
const MERGED_OBJECTS: &[&str] = &[
    "web",
    "api",
    "spa",
    "publicClient",
    "info",
    "parentalControlSettings",
];

/// The representation of a new application before the request body is applied; the keys
/// are those of the documented sample (contract §3.1, S27).
pub(crate) fn default_props(tenant: &Tenant, created_by: Option<Uuid>) -> Map<String, Value> {
    let v = json!({
        "addIns": [],
        "api": {
            "acceptMappedClaims": null,
            "knownClientApplications": [],
            "oauth2PermissionScopes": [],
            "preAuthorizedApplications": [],
            "requestedAccessTokenVersion": null
        },
        "appRoles": [],
        "applicationTemplateId": null,
        "certification": null,
        "createdByAppId": created_by.map(|u| u.to_string()),
        "defaultRedirectUri": null,
        "description": null,
        "disabledByMicrosoftStatus": null,
        "displayName": null,
        "groupMembershipClaims": null,
        "identifierUris": [],
        "info": {
            "logoUrl": null,
            "marketingUrl": null,
            "privacyStatementUrl": null,
            "supportUrl": null,
            "termsOfServiceUrl": null
        },
        "isDeviceOnlyAuthSupported": null,
        "isFallbackPublicClient": null,
        "keyCredentials": [],
        "nativeAuthenticationApisEnabled": null,
        "notes": null,
        "optionalClaims": null,
        "parentalControlSettings": {"countriesBlockedForMinors": [], "legalAgeGroupRule": "Allow"},
        "publicClient": {"redirectUris": []},
        "publisherDomain": tenant.domain(),
        "requestSignatureVerification": null,
        "requiredResourceAccess": [],
        "samlMetadataUrl": null,
        "serviceManagementReference": null,
        "servicePrincipalLockConfiguration": null,
        // The current resource page's default (contract §3.1).
        "signInAudience": "AzureADMyOrg",
        "spa": {"redirectUris": []},
        "tags": [],
        "tokenEncryptionKeyId": null,
        "uniqueName": null,
        "verifiedPublisher": {"addedDateTime": null, "displayName": null, "verifiedPublisherId": null},
        "web": {
            "homePageUrl": null,
            "implicitGrantSettings": {"enableAccessTokenIssuance": false, "enableIdTokenIssuance": false},
            "logoutUrl": null,
            "redirectUriSettings": [],
            "redirectUris": []
        }
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

/// Apply a request body to a representation; returns the `owners@odata.bind` ids.
fn apply_body(
    props: &mut Map<String, Value>,
    body: Map<String, Value>,
    creating: bool,
) -> Result<Vec<Uuid>, GraphError> {
    let mut binds = Vec::new();
    for (k, v) in body {
        if k == "owners@odata.bind" {
            let refs = v
                .as_array()
                .ok_or_else(|| GraphError::bad_request("owners@odata.bind must be an array."))?;
            for r in refs {
                let s = r
                    .as_str()
                    .ok_or_else(|| GraphError::bad_request("owners@odata.bind entries must be URLs."))?;
                binds.push(reference_id(s, "@odata.bind for owners")?);
            }
            continue;
        }
        if k.starts_with("@odata.") {
            continue;
        }
        if k == "passwordCredentials" {
            // Documented unsupported on PATCH (S29) and, in an older revision, on POST (S25):
            // passwords are added with addPassword. An empty list is harmless.
            if v.as_array().is_some_and(Vec::is_empty) {
                continue;
            }
            return Err(GraphError::bad_request(if creating {
                "Adding passwordCredentials when creating an application is not supported. Use addPassword."
            } else {
                "Updates to passwordCredentials are not supported. Use addPassword and removePassword."
            }));
        }
        if READ_ONLY.contains(&k.as_str()) {
            return Err(GraphError::bad_request(format!(
                "Property '{k}' is read-only and cannot be set."
            )));
        }
        if k == "uniqueName" && !creating {
            // Immutable (S27): it can be set once, never changed.
            match props.get("uniqueName") {
                Some(Value::String(old)) if Some(old.as_str()) != v.as_str() => {
                    return Err(GraphError::bad_request(
                        "Property 'uniqueName' is immutable and cannot be changed.",
                    ));
                }
                _ => {}
            }
        }
        if !props.contains_key(&k) {
            return Err(GraphError::bad_request(format!(
                "Property '{k}' does not exist on type 'microsoft.graph.application'."
            )));
        }
        match (props.get_mut(&k), &v) {
            (Some(Value::Object(old)), Value::Object(new)) if MERGED_OBJECTS.contains(&k.as_str()) => {
                for (nk, nv) in new {
                    old.insert(nk.clone(), nv.clone());
                }
            }
            _ => {
                props.insert(k, v);
            }
        }
    }
    Ok(binds)
}

/// 400 `Request_BadRequest` for a reference that is already there, in the directory's own
/// wording. OBS: public Graph clients match this message to treat `members`/`owners` adds as
/// done (e.g. Canvas LMS's MicrosoftSync GraphService, scripts around `Add-MgGroupMember`);
/// terraform-provider-azuread binds owners only on create and adds only missing ones on
/// update (contract S26), which avoids it. Docs: `application-post-owners` (GD).
fn duplicate_reference(property: &str) -> GraphError {
    GraphError::bad_request(format!(
        "One or more added object references already exist for the following modified properties: '{property}'."
    ))
}

/// Resolve owner references: each must be a live service principal of the tenant.
fn resolve_owners(t: &Tenant, ids: &[Uuid]) -> Result<Vec<Uuid>, GraphError> {
    let mut out: Vec<Uuid> = Vec::new();
    for id in ids {
        if t.sps.get(id).is_none_or(|s| s.deleted.is_some()) {
            return Err(GraphError::not_found(&id.to_string()));
        }
        if !out.contains(id) {
            out.push(*id);
        }
    }
    Ok(out)
}

/// Find a live application the replicas already know (404 otherwise, contract §7).
pub(crate) fn find(t: &Tenant, key: &AppKey, now: DateTime<Utc>) -> Result<Uuid, GraphError> {
    let found = match key {
        AppKey::Id(s) => {
            let id = parse_object_id(s)?;
            t.apps.get(&id).filter(|a| a.live_and_visible(now)).map(|a| a.id)
        }
        AppKey::AppId(s) => Uuid::parse_str(s)
            .ok()
            .and_then(|app_id| {
                t.apps
                    .values()
                    .find(|a| a.app_id == app_id && a.live_and_visible(now))
            })
            .map(|a| a.id),
        AppKey::UniqueName(s) => t
            .apps
            .values()
            .find(|a| a.live_and_visible(now) && a.unique_name().is_some_and(|u| u.eq_ignore_ascii_case(s)))
            .map(|a| a.id),
    };
    found.ok_or_else(|| {
        GraphError::not_found(match key {
            AppKey::Id(s) | AppKey::AppId(s) | AppKey::UniqueName(s) => s,
        })
    })
}

/// Record an application change for delta (effective once the object is visible): the whole
/// object (restored).
pub(crate) fn touch(t: &mut Tenant, seq: u64, now: DateTime<Utc>, id: Uuid) {
    let effective = t.apps.get(&id).map_or(now, |a| a.visible_at.max(now));
    t.record_change(seq, effective, id);
}

/// Record an update of `props` of an application for delta.
pub(crate) fn touch_props(t: &mut Tenant, seq: u64, now: DateTime<Utc>, id: Uuid, props: &[&str]) {
    let effective = t.apps.get(&id).map_or(now, |a| a.visible_at.max(now));
    t.record_update(seq, effective, id, props.iter().map(|p| p.to_string()).collect());
}

fn owner_objects(t: &Tenant, app: &App) -> Vec<Value> {
    app.owners
        .iter()
        .filter_map(|id| t.sps.get(id).filter(|s| s.deleted.is_none()))
        .map(|s| {
            let mut v = s.render();
            v["@odata.type"] = "#microsoft.graph.servicePrincipal".into();
            v
        })
        .collect()
}

/// `$expand`: only `owners` is supported.
fn expands_owners(ctx: &Ctx) -> Result<bool, GraphError> {
    match &ctx.query.expand {
        None => Ok(false),
        Some(e) => {
            let name = e.split('(').next().unwrap_or_default().trim();
            if name == "owners" {
                Ok(true)
            } else {
                Err(GraphError::bad_request(format!(
                    "Could not find a property named '{name}' on type 'microsoft.graph.application'."
                )))
            }
        }
    }
}

/// An application as a read at `now` returns it.
fn render(t: &Tenant, app: &App, expand: bool, now: DateTime<Utc>) -> Value {
    let mut v = app.render_read(now);
    if expand {
        v["owners"] = Value::Array(owner_objects(t, app));
    }
    v
}

fn with_context(ctx_url: String, obj: Value) -> Value {
    let mut m = Map::new();
    m.insert("@odata.context".into(), ctx_url.into());
    if let Value::Object(o) = obj {
        m.extend(o);
    }
    Value::Object(m)
}

fn new_app(
    t: &Tenant,
    ctx: &Ctx,
    body: Map<String, Value>,
    unique_name: Option<&str>,
    seq: u64,
) -> Result<App, GraphError> {
    let mut props = default_props(t, Some(ctx.caller.app_id));
    let binds = apply_body(&mut props, body, true)?;
    if let Some(u) = unique_name {
        match props.get("uniqueName") {
            Some(Value::String(s)) if s != u => {
                return Err(GraphError::bad_request(
                    "The uniqueName in the body does not match the one in the URL.",
                ))
            }
            _ => {
                props.insert("uniqueName".into(), u.into());
            }
        }
    }
    validate::application(&props, &ctx.cfg.limits, t)?;
    validate::uniqueness(&props, t, None, &ctx.cfg.assumptions)?;
    if binds.len() > ctx.cfg.limits.owners_bind_on_create {
        return Err(GraphError::bad_request(format!(
            "At most {} owners can be added when creating an application.",
            ctx.cfg.limits.owners_bind_on_create
        )));
    }
    let mut owners = resolve_owners(t, &binds)?;
    // UNVERIFIED (contract §10): see Assumptions::owned_by_auto_owner.
    if ctx.caller.owned_by()
        && !ctx.caller.write_all()
        && ctx.cfg.assumptions.owned_by_auto_owner
        && !owners.contains(&ctx.caller.sp_id)
    {
        owners.push(ctx.caller.sp_id);
    }
    let lag = TimeDelta::from_std(ctx.cfg.replication_lag).unwrap_or(TimeDelta::zero());
    Ok(App {
        id: Uuid::new_v4(),
        app_id: Uuid::new_v4(),
        seq,
        props,
        created: ctx.now,
        visible_at: ctx.now + lag,
        deleted: None,
        owners,
        passwords: Vec::new(),
        stale_passwords: Vec::new(),
        fics: Vec::new(),
    })
}

fn insert_new(
    dir: &mut Directory,
    ctx: &Ctx,
    body: Map<String, Value>,
    unique_name: Option<&str>,
) -> GraphResult {
    let seq = dir.next_seq();
    let t = ctx.tenant_mut(dir);
    let app = new_app(t, ctx, body, unique_name, seq)?;
    let (id, visible_at) = (app.id, app.visible_at);
    let out = with_context(
        ctx.context_url("applications/$entity"),
        render(t, &app, false, ctx.now),
    );
    t.apps.insert(id, app);
    t.record_change(seq, visible_at, id);
    Ok(Reply::Json(StatusCode::CREATED, out))
}

/// `POST /applications` → 201 (contract §3.1).
pub(crate) fn create(dir: &mut Directory, ctx: &Ctx) -> GraphResult {
    ctx.require_write_some()?;
    let body = ctx.json_object()?;
    insert_new(dir, ctx, body, None)
}

/// `GET /applications/{id}`, `(appId='…')`, `(uniqueName='…')` (contract §3.2).
pub(crate) fn get(dir: &Directory, ctx: &Ctx, key: &AppKey) -> GraphResult {
    ctx.require_read()?;
    let t = ctx.tenant(dir);
    let id = find(t, key, ctx.now)?;
    let expand = expands_owners(ctx)?;
    let mut obj = render(t, &t.apps[&id], expand, ctx.now);
    if let Some(names) = &ctx.query.select {
        obj = query::select(&obj, names, &["owners"], "application")?;
    }
    Ok(Reply::Json(
        StatusCode::OK,
        with_context(ctx.context_url("applications/$entity"), obj),
    ))
}

fn items(t: &Tenant, ctx: &Ctx, expand: bool) -> Vec<Item> {
    t.apps
        .values()
        .filter(|a| a.live_and_visible(ctx.now))
        .map(|a| Item {
            seq: a.seq,
            obj: render(t, a, expand, ctx.now),
        })
        .collect()
}

/// `GET /applications` with `$filter`, `$top`, paging (contract §3.6).
pub(crate) fn list(dir: &Directory, ctx: &Ctx) -> GraphResult {
    ctx.require_read()?;
    let t = ctx.tenant(dir);
    let expand = expands_owners(ctx)?;
    let req = ListRequest {
        query: ctx.query,
        eventual: ctx.eventual(),
        resource: &APPLICATION,
        type_name: "application",
        context: ctx.context_url("applications"),
        self_url: format!("{}/applications", ctx.v1()),
        keep: &["owners"],
    };
    Ok(Reply::Json(
        StatusCode::OK,
        query::list(items(t, ctx, expand), &req)?,
    ))
}

/// `GET /applications/$count` (contract §3.6).
pub(crate) fn count(dir: &Directory, ctx: &Ctx) -> GraphResult {
    ctx.require_read()?;
    let t = ctx.tenant(dir);
    let n = query::count(items(t, ctx, false), ctx.query, ctx.eventual(), &APPLICATION)?;
    Ok(Reply::Text(StatusCode::OK, n.to_string()))
}

fn update_existing(dir: &mut Directory, ctx: &Ctx, id: Uuid, body: Map<String, Value>) -> GraphResult {
    let seq = dir.next_seq();
    let t = ctx.tenant_mut(dir);
    let app = &t.apps[&id];
    ctx.require_write(app)?;
    let mut props = app.props.clone();
    let changed: Vec<String> = body.keys().filter(|k| !k.contains('@')).cloned().collect();
    let binds = apply_body(&mut props, body, false)?;
    validate::application(&props, &ctx.cfg.limits, t)?;
    validate::uniqueness(&props, t, Some(id), &ctx.cfg.assumptions)?;
    validate::permission_changes(&app.props, &props)?;
    // `owners@odata.bind` on PATCH adds references; one that already exists is rejected, as
    // on `POST .../owners/$ref`: the directory does not absorb duplicates (see
    // `duplicate_reference`).
    let mut owners = app.owners.clone();
    for o in resolve_owners(t, &binds)? {
        if owners.contains(&o) {
            return Err(duplicate_reference("owners"));
        }
        owners.push(o);
    }
    if owners.len() > ctx.cfg.limits.owners {
        return Err(GraphError::bad_request(format!(
            "An application can have at most {} owners.",
            ctx.cfg.limits.owners
        )));
    }
    let app = t.apps.get_mut(&id).expect("found above");
    app.props = props;
    app.owners = owners;
    let changed: Vec<&str> = changed.iter().map(String::as_str).collect();
    touch_props(t, seq, ctx.now, id, &changed);
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}

/// `PATCH /applications/{id}` or `(appId='…')` → 204 (contract §3.3).
pub(crate) fn update(dir: &mut Directory, ctx: &Ctx, key: &AppKey) -> GraphResult {
    ctx.require_write_some()?;
    let id = find(ctx.tenant(dir), key, ctx.now)?;
    let body = ctx.json_object()?;
    update_existing(dir, ctx, id, body)
}

/// `PATCH /applications(uniqueName='…')`: 201 + body when created (needs
/// `Prefer: create-if-missing`), 204 when it exists, 404 otherwise (contract §3.4).
pub(crate) fn upsert(dir: &mut Directory, ctx: &Ctx, name: &str) -> GraphResult {
    ctx.require_write_some()?;
    let body = ctx.json_object()?;
    let existing = ctx
        .tenant(dir)
        .apps
        .values()
        .find(|a| a.deleted.is_none() && a.unique_name().is_some_and(|u| u.eq_ignore_ascii_case(name)))
        .map(|a| (a.id, a.visible(ctx.now)));
    match existing {
        Some((id, true)) => update_existing(dir, ctx, id, body),
        // Created moments ago and not replicated: the lookup misses it and the create
        // collides with it at the unique index (the most plausible reading; UNVERIFIED).
        Some((_, false)) if ctx.create_if_missing() => Err(GraphError::bad_request(
            "Another object with the same value for property uniqueName already exists.",
        )),
        _ if !ctx.create_if_missing() => Err(GraphError::not_found(name)),
        _ => insert_new(dir, ctx, body, Some(name)),
    }
}

/// Soft-delete an application and its service principal (contract §3.5).
pub(crate) fn soft_delete(t: &mut Tenant, seq: u64, now: DateTime<Utc>, id: Uuid) {
    let Some(app) = t.apps.get_mut(&id) else { return };
    app.deleted = Some(now);
    let app_id = app.app_id;
    for sp in t
        .sps
        .values_mut()
        .filter(|s| s.app_id == app_id && s.deleted.is_none())
    {
        sp.deleted = Some(now);
        sp.deleted_with_app = true;
    }
    t.record_change(seq, now, id);
}

/// `DELETE /applications/{id}` → 204, into deleted items (contract §3.5).
pub(crate) fn delete(dir: &mut Directory, ctx: &Ctx, key: &AppKey) -> GraphResult {
    ctx.require_write_some()?;
    let seq = dir.next_seq();
    let t = ctx.tenant_mut(dir);
    let id = find(t, key, ctx.now)?;
    ctx.require_write(&t.apps[&id])?;
    soft_delete(t, seq, ctx.now, id);
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}

/// An Entra-looking client secret: 40 characters, `xxxNQ~…` (3 + digit + `Q~` + 34).
pub(crate) fn generate_secret() -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const TAIL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.~-";
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(40);
    for _ in 0..3 {
        s.push(ALNUM[rng.gen_range(0..ALNUM.len())] as char);
    }
    s.push(char::from(b'0' + rng.gen_range(0..10u8)));
    s.push_str("Q~");
    for _ in 0..34 {
        s.push(TAIL[rng.gen_range(0..TAIL.len())] as char);
    }
    s
}

fn parse_time(v: &Value, name: &str) -> Result<Option<DateTime<Utc>>, GraphError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|d| Some(d.with_timezone(&Utc)))
            .map_err(|_| GraphError::invalid_value(name, format!("'{s}' is not a valid DateTimeOffset."))),
        _ => Err(GraphError::invalid_value(
            name,
            format!("{name} must be a DateTimeOffset string."),
        )),
    }
}

/// Add a password to an application directly (seeding); returns it.
pub(crate) fn push_password(
    app: &mut App,
    secret: String,
    display_name: Option<String>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
    activation: TimeDelta,
) -> Password {
    let p = Password {
        key_id: Uuid::new_v4(),
        display_name,
        hint: secret.chars().take(3).collect(),
        secret,
        start,
        end,
        added: now,
        active_at: now + activation,
    };
    app.passwords.push(p.clone());
    p
}

/// `POST /applications/{id}/addPassword` → 200 with `secretText` (contract §4.1).
pub(crate) fn add_password(dir: &mut Directory, ctx: &Ctx, key: &AppKey) -> GraphResult {
    ctx.require_write_some()?;
    let body = ctx.optional_json_object()?.unwrap_or_default();
    let cred = match body.get("passwordCredential") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(GraphError::bad_request("passwordCredential must be an object.")),
    };
    if let Some(k) = body.keys().find(|k| *k != "passwordCredential") {
        return Err(GraphError::bad_request(format!(
            "Property '{k}' does not exist on the addPassword action."
        )));
    }
    let seq = dir.next_seq();
    let default_cap = ctx.cfg.password_max_lifetime;
    let t = ctx.tenant_mut(dir);
    let id = find(t, key, ctx.now)?;
    ctx.require_write(&t.apps[&id])?;
    let start =
        parse_time(cred.get("startDateTime").unwrap_or(&Value::Null), "startDateTime")?.unwrap_or(ctx.now);
    let end = match parse_time(cred.get("endDateTime").unwrap_or(&Value::Null), "endDateTime")? {
        Some(e) => e,
        // Default: startDateTime + 2 years (contract §4.1).
        None => start.checked_add_months(Months::new(24)).unwrap_or(start),
    };
    if end <= start {
        return Err(GraphError::invalid_value(
            "endDateTime",
            "endDateTime must be later than startDateTime.",
        ));
    }
    let display_name = match cred.get("displayName") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(GraphError::invalid_value(
                "displayName",
                "displayName must be a string.",
            ))
        }
    };
    // Tenant policy (S44); the error shape is UNVERIFIED (contract §10).
    let cap = t.password_max_lifetime.unwrap_or(default_cap);
    if let Some(cap) = cap {
        if (end - start).to_std().unwrap_or_default() > cap {
            return Err(GraphError::new(
                StatusCode::BAD_REQUEST,
                "CredentialInvalidLifetimeAsPerAppPolicy",
                "Credential lifetime exceeds the max value allowed as per assigned policy.",
            ));
        }
    }
    let app = t.apps.get_mut(&id).expect("found above");
    if audience_is_personal(app.sign_in_audience())
        && app.passwords.len() >= ctx.cfg.limits.passwords_personal
    {
        return Err(GraphError::bad_request(format!(
            "Applications whose signInAudience includes personal accounts can have at most {} client secrets.",
            ctx.cfg.limits.passwords_personal
        )));
    }
    let activation = TimeDelta::from_std(ctx.cfg.secret_activation_delay).unwrap_or(TimeDelta::zero());
    app.passwords_changing(ctx.now, replication_lag(ctx));
    let p = push_password(
        app,
        generate_secret(),
        display_name,
        start,
        end,
        ctx.now,
        activation,
    );
    touch_props(t, seq, ctx.now, id, &["passwordCredentials"]);
    Ok(Reply::Json(
        StatusCode::OK,
        with_context(
            ctx.context_url("microsoft.graph.passwordCredential"),
            p.render(true),
        ),
    ))
}

/// `POST /applications/{id}/removePassword` → 204 (contract §4.2).
pub(crate) fn remove_password(dir: &mut Directory, ctx: &Ctx, key: &AppKey) -> GraphResult {
    ctx.require_write_some()?;
    let body = ctx.json_object()?;
    let key_id = body
        .get("keyId")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| GraphError::invalid_value("keyId", "keyId is required and must be a GUID."))?;
    let seq = dir.next_seq();
    let t = ctx.tenant_mut(dir);
    let id = find(t, key, ctx.now)?;
    ctx.require_write(&t.apps[&id])?;
    let app = t.apps.get_mut(&id).expect("found above");
    if !app.passwords.iter().any(|p| p.key_id == key_id) {
        // UNVERIFIED (contract §10): see Assumptions::remove_unknown_password_status.
        return match ctx.cfg.assumptions.remove_unknown_password_status {
            204 => Ok(Reply::Empty(StatusCode::NO_CONTENT)),
            404 => Err(GraphError::not_found(&key_id.to_string())),
            _ => Err(GraphError::bad_request(format!(
                "No password credential with keyId '{key_id}' was found."
            ))),
        };
    }
    app.passwords_changing(ctx.now, replication_lag(ctx));
    app.passwords.retain(|p| p.key_id != key_id);
    touch_props(t, seq, ctx.now, id, &["passwordCredentials"]);
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}

/// How long a change takes to reach every read replica (`replication_lag`).
fn replication_lag(ctx: &Ctx) -> TimeDelta {
    TimeDelta::from_std(ctx.cfg.replication_lag).unwrap_or(TimeDelta::zero())
}

/// `GET /applications/{id}/owners`.
pub(crate) fn list_owners(dir: &Directory, ctx: &Ctx, key: &AppKey) -> GraphResult {
    ctx.require_read()?;
    let t = ctx.tenant(dir);
    let id = find(t, key, ctx.now)?;
    Ok(Reply::Json(
        StatusCode::OK,
        json!({"@odata.context": ctx.context_url("directoryObjects"), "value": owner_objects(t, &t.apps[&id])}),
    ))
}

/// `POST /applications/{id}/owners/$ref` with `{"@odata.id": ".../directoryObjects/{id}"}` → 204.
pub(crate) fn add_owner(dir: &mut Directory, ctx: &Ctx, key: &AppKey) -> GraphResult {
    ctx.require_write_some()?;
    let body = ctx.json_object()?;
    let reference = body
        .get("@odata.id")
        .and_then(Value::as_str)
        .ok_or_else(|| GraphError::bad_request("The request body must contain '@odata.id'."))?;
    let owner = reference_id(reference, "payload")?;
    let seq = dir.next_seq();
    let t = ctx.tenant_mut(dir);
    let id = find(t, key, ctx.now)?;
    ctx.require_write(&t.apps[&id])?;
    // GD `application-post-owners.md`: "Application.ReadWrite.OwnedBy isn't sufficient to add
    // another owner. Consent also to Application.ReadWrite.All." Strict: an OwnedBy-only
    // caller is refused any add, before the reference is looked at.
    if !ctx.caller.write_all() {
        return Err(GraphError::forbidden());
    }
    let owner = resolve_owners(t, &[owner])?[0];
    let limit = ctx.cfg.limits.owners;
    let app = t.apps.get_mut(&id).expect("found above");
    if app.owners.contains(&owner) {
        return Err(duplicate_reference("owners"));
    }
    if app.owners.len() >= limit {
        return Err(GraphError::bad_request(format!(
            "An application can have at most {limit} owners."
        )));
    }
    app.owners.push(owner);
    touch_props(t, seq, ctx.now, id, &[]);
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}

/// `DELETE /applications/{id}/owners/{ownerId}/$ref` → 204.
pub(crate) fn remove_owner(dir: &mut Directory, ctx: &Ctx, key: &AppKey, owner: &str) -> GraphResult {
    ctx.require_write_some()?;
    let owner = parse_object_id(owner)?;
    let seq = dir.next_seq();
    let t = ctx.tenant_mut(dir);
    let id = find(t, key, ctx.now)?;
    ctx.require_write(&t.apps[&id])?;
    let app = t.apps.get_mut(&id).expect("found above");
    if !app.owners.contains(&owner) {
        return Err(GraphError::not_found(&owner.to_string()));
    }
    app.owners.retain(|o| *o != owner);
    touch_props(t, seq, ctx.now, id, &[]);
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_look_like_entra_secrets() {
        let s = generate_secret();
        assert_eq!(s.len(), 40);
        assert_eq!(&s[4..6], "Q~");
        assert!(s.as_bytes()[3].is_ascii_digit());
    }

    #[test]
    fn apply_body_rejects_read_only_and_unknown_properties() {
        let t = Tenant::new(
            Uuid::new_v4(),
            "c.onmicrosoft.com".into(),
            "C".into(),
            Default::default(),
        );
        let mut props = default_props(&t, None);
        let body = |v: Value| v.as_object().unwrap().clone();
        assert!(apply_body(&mut props.clone(), body(json!({"appId": "x"})), true).is_err());
        assert!(apply_body(&mut props.clone(), body(json!({"bogus": 1})), true).is_err());
        assert!(apply_body(
            &mut props.clone(),
            body(json!({"passwordCredentials": [{}]})),
            false
        )
        .is_err());
        apply_body(
            &mut props,
            body(json!({"web": {"redirectUris": ["https://a/cb"]}})),
            false,
        )
        .unwrap();
        assert_eq!(props["web"]["redirectUris"][0], "https://a/cb");
        assert_eq!(
            props["web"]["implicitGrantSettings"]["enableIdTokenIssuance"],
            false
        );
    }
}
