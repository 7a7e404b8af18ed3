//! `/servicePrincipals` (contract §5): create (201; 409 for a duplicate; 400
//! `NoBackingApplicationObject` while the application replicates), read and delete by id or
//! `appId`, list, update, upsert by `appId`.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use chrono::TimeDelta;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{
    config::SpLagError,
    context::{parse_object_id, Ctx, GraphResult, Reply},
    errors::GraphError,
    query::{self, Item, ListRequest, SERVICE_PRINCIPAL},
    routes::SpKey,
    state::{App, Directory, Sp, Tenant},
};

/// Properties a client may set on a service principal (create or PATCH).
const WRITABLE: &[&str] = &[
    "accountEnabled",
    "alternativeNames",
    "appRoleAssignmentRequired",
    "description",
    "homepage",
    "loginUrl",
    "logoutUrl",
    "notes",
    "notificationEmailAddresses",
    "preferredSingleSignOnMode",
    "replyUrls",
    "servicePrincipalNames",
    "tags",
    "displayName",
];

/// The representation of a new service principal for `app` (contract §5 sample keys).
pub(crate) fn default_props(t: &Tenant, app: &App) -> Map<String, Value> {
    let mut names = vec![app.app_id.to_string()];
    names.extend(app.identifier_uris());
    let display = app.str_prop("displayName").unwrap_or_default();
    let v = json!({
        "accountEnabled": true,
        "addIns": [],
        "alternativeNames": [],
        "appDescription": null,
        "appDisplayName": display,
        "appOwnerOrganizationId": t.id.to_string(),
        "appRoleAssignmentRequired": false,
        "appRoles": app.props.get("appRoles").cloned().unwrap_or(json!([])),
        "applicationTemplateId": null,
        "description": null,
        "disabledByMicrosoftStatus": null,
        "displayName": display,
        "homepage": null,
        "info": app.props.get("info").cloned().unwrap_or(Value::Null),
        "keyCredentials": [],
        "loginUrl": null,
        "logoutUrl": null,
        "notes": null,
        "notificationEmailAddresses": [],
        "oauth2PermissionScopes": app.props.get("api").and_then(|a| a.get("oauth2PermissionScopes")).cloned().unwrap_or(json!([])),
        "passwordCredentials": [],
        "preferredSingleSignOnMode": null,
        "preferredTokenSigningKeyThumbprint": null,
        "publisherName": t.display_name,
        "replyUrls": app.props.get("web").and_then(|w| w.get("redirectUris")).cloned().unwrap_or(json!([])),
        "resourceSpecificApplicationPermissions": [],
        "samlSingleSignOnSettings": null,
        "servicePrincipalNames": names,
        "servicePrincipalType": "Application",
        "signInAudience": app.sign_in_audience(),
        "tags": [],
        "tokenEncryptionKeyId": null,
        "verifiedPublisher": {"addedDateTime": null, "displayName": null, "verifiedPublisherId": null}
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn apply_body(props: &mut Map<String, Value>, body: &Map<String, Value>) -> Result<(), GraphError> {
    for (k, v) in body {
        if k == "appId" || k.starts_with("@odata.") {
            continue;
        }
        if k == "passwordCredentials" {
            // Not supported on create (S33); use addPassword on the servicePrincipal.
            return Err(GraphError::bad_request(
                "Adding passwordCredentials when creating a service principal is not supported.",
            ));
        }
        if !WRITABLE.contains(&k.as_str()) {
            return Err(if props.contains_key(k) {
                GraphError::bad_request(format!("Property '{k}' is read-only and cannot be set."))
            } else {
                GraphError::bad_request(format!(
                    "Property '{k}' does not exist on type 'microsoft.graph.servicePrincipal'."
                ))
            });
        }
        if k == "tags" {
            let tags = v
                .as_array()
                .ok_or_else(|| GraphError::invalid_value("tags", "tags must be an array."))?;
            if tags.iter().any(|t| {
                t.as_str()
                    .is_none_or(|s| s.is_empty() || s.chars().any(char::is_whitespace))
            }) {
                return Err(GraphError::invalid_value(
                    "tags",
                    "Tags are non-empty strings without whitespace.",
                ));
            }
        }
        props.insert(k.clone(), v.clone());
    }
    Ok(())
}

fn find(t: &Tenant, key: &SpKey, now: chrono::DateTime<chrono::Utc>) -> Result<Uuid, GraphError> {
    let found = match key {
        SpKey::Id(s) => {
            let id = parse_object_id(s)?;
            t.sps.get(&id).filter(|s| s.live_and_visible(now)).map(|s| s.id)
        }
        SpKey::AppId(s) => Uuid::parse_str(s)
            .ok()
            .and_then(|a| t.sps.values().find(|s| s.app_id == a && s.live_and_visible(now)))
            .map(|s| s.id),
    };
    found.ok_or_else(|| {
        GraphError::not_found(match key {
            SpKey::Id(s) | SpKey::AppId(s) => s,
        })
    })
}

/// 403 unless the caller may manage this service principal: `Application.ReadWrite.All`,
/// or `OwnedBy` and the caller owns the backing application.
fn require_sp_write(ctx: &Ctx, t: &Tenant, app_id: Uuid) -> Result<(), GraphError> {
    if ctx.caller.write_all() {
        return Ok(());
    }
    let owns = t
        .apps
        .values()
        .any(|a| a.app_id == app_id && a.deleted.is_none() && a.owners.contains(&ctx.caller.sp_id));
    if ctx.caller.owned_by() && owns {
        Ok(())
    } else {
        Err(GraphError::forbidden())
    }
}

fn no_backing_app(app_id: &str) -> GraphError {
    let mut e = GraphError::bad_request(format!(
        "The appId '{app_id}' of the service principal does not reference a valid application object."
    ));
    e.details.push(json!({
        "code": "NoBackingApplicationObject",
        "message": "The service principal cannot be created because the backing application object is not found.",
        "target": "appId"
    }));
    e
}

fn entity(ctx: &Ctx, sp: &Sp) -> Value {
    let mut m = Map::new();
    m.insert(
        "@odata.context".into(),
        ctx.context_url("servicePrincipals/$entity").into(),
    );
    if let Value::Object(o) = sp.render() {
        m.extend(o);
    }
    Value::Object(m)
}

fn insert(dir: &mut Directory, ctx: &Ctx, app_id_text: &str, body: &Map<String, Value>) -> GraphResult {
    let seq = dir.next_seq();
    let t = ctx.tenant_mut(dir);
    let app_id = Uuid::parse_str(app_id_text).map_err(|_| no_backing_app(app_id_text))?;
    let app = t
        .apps
        .values()
        .find(|a| a.app_id == app_id && a.deleted.is_none());
    let Some(app) = app else {
        return Err(no_backing_app(app_id_text));
    };
    if !app.visible(ctx.now) {
        // Still replicating (contract §5, §7): both observed errors are retryable.
        return Err(match ctx.cfg.assumptions.sp_create_lag_error {
            SpLagError::LocalTenant403 if ctx.caller.owned_by() && !ctx.caller.write_all() => GraphError::new(
                StatusCode::FORBIDDEN,
                "Authorization_RequestDenied",
                "When using this permission, the backing application of the service principal being created must in the local tenant",
            ),
            _ => no_backing_app(app_id_text),
        });
    }
    require_sp_write(ctx, t, app_id)?;
    if t.sps.values().any(|s| s.app_id == app_id && s.deleted.is_none()) {
        // 409 as seen through the AzureAD PowerShell module (UNVERIFIED on v1.0, §10).
        return Err(GraphError::conflict(format!(
            "The service principal cannot be created, updated, or restored because the service principal name {app_id} is already in use."
        )));
    }
    let mut props = default_props(t, app);
    apply_body(&mut props, body)?;
    let lag = TimeDelta::from_std(ctx.cfg.replication_lag).unwrap_or(TimeDelta::zero());
    let sp = Sp {
        id: Uuid::new_v4(),
        app_id,
        seq,
        props,
        created: ctx.now,
        visible_at: ctx.now + lag,
        deleted: None,
        deleted_with_app: false,
        graph_roles: BTreeSet::new(),
    };
    let out = entity(ctx, &sp);
    t.sps.insert(sp.id, sp);
    Ok(Reply::Json(StatusCode::CREATED, out))
}

/// `POST /servicePrincipals` with `{"appId": …}` → 201.
pub(crate) fn create(dir: &mut Directory, ctx: &Ctx) -> GraphResult {
    ctx.require_write_some()?;
    let body = ctx.json_object()?;
    let Some(app_id) = body.get("appId").and_then(Value::as_str).map(str::to_string) else {
        return Err(GraphError::invalid_value("appId", "appId is required."));
    };
    insert(dir, ctx, &app_id, &body)
}

/// `GET /servicePrincipals/{id}` or `(appId='…')`.
pub(crate) fn get(dir: &Directory, ctx: &Ctx, key: &SpKey) -> GraphResult {
    ctx.require_read()?;
    let t = ctx.tenant(dir);
    let id = find(t, key, ctx.now)?;
    let mut v = entity(ctx, &t.sps[&id]);
    if let Some(names) = &ctx.query.select {
        let ctx_url = v["@odata.context"].clone();
        v = query::select(&v, names, &[], "servicePrincipal")?;
        v["@odata.context"] = ctx_url;
    }
    Ok(Reply::Json(StatusCode::OK, v))
}

fn items(t: &Tenant, ctx: &Ctx) -> Vec<Item> {
    t.sps
        .values()
        .filter(|s| s.live_and_visible(ctx.now))
        .map(|s| Item {
            seq: s.seq,
            obj: s.render(),
        })
        .collect()
}

/// `GET /servicePrincipals` with `$filter` (e.g. `appId eq '…'`), `$top`, paging.
pub(crate) fn list(dir: &Directory, ctx: &Ctx) -> GraphResult {
    ctx.require_read()?;
    let t = ctx.tenant(dir);
    let req = ListRequest {
        query: ctx.query,
        eventual: ctx.eventual(),
        resource: &SERVICE_PRINCIPAL,
        type_name: "servicePrincipal",
        context: ctx.context_url("servicePrincipals"),
        self_url: format!("{}/servicePrincipals", ctx.v1()),
        keep: &[],
    };
    Ok(Reply::Json(StatusCode::OK, query::list(items(t, ctx), &req)?))
}

/// `GET /servicePrincipals/$count`.
pub(crate) fn count(dir: &Directory, ctx: &Ctx) -> GraphResult {
    ctx.require_read()?;
    let n = query::count(
        items(ctx.tenant(dir), ctx),
        ctx.query,
        ctx.eventual(),
        &SERVICE_PRINCIPAL,
    )?;
    Ok(Reply::Text(StatusCode::OK, n.to_string()))
}

/// `PATCH /servicePrincipals/{id}` → 204; `PATCH /servicePrincipals(appId='…')` is also an
/// upsert with `Prefer: create-if-missing` (201 / 204 / 404, contract §3.4, S33).
pub(crate) fn update(dir: &mut Directory, ctx: &Ctx, key: &SpKey) -> GraphResult {
    ctx.require_write_some()?;
    let body = ctx.json_object()?;
    let found = find(ctx.tenant(dir), key, ctx.now);
    let id = match (found, key) {
        (Ok(id), _) => id,
        (Err(_), SpKey::AppId(app_id)) if ctx.create_if_missing() => return insert(dir, ctx, app_id, &body),
        (Err(e), _) => return Err(e),
    };
    let t = ctx.tenant_mut(dir);
    let sp = &t.sps[&id];
    require_sp_write(ctx, t, sp.app_id)?;
    let mut props = sp.props.clone();
    apply_body(&mut props, &body)?;
    t.sps.get_mut(&id).expect("found above").props = props;
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}

/// `DELETE /servicePrincipals/{id}` or `(appId='…')` → 204 (into deleted items).
pub(crate) fn delete(dir: &mut Directory, ctx: &Ctx, key: &SpKey) -> GraphResult {
    ctx.require_write_some()?;
    let t = ctx.tenant_mut(dir);
    let id = find(t, key, ctx.now)?;
    require_sp_write(ctx, t, t.sps[&id].app_id)?;
    let sp = t.sps.get_mut(&id).expect("found above");
    sp.deleted = Some(ctx.now);
    sp.deleted_with_app = false;
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}
