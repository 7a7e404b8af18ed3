//! `/directory/deletedItems` (contract §3.5): list soft-deleted applications and service
//! principals, get one, restore it, or delete it permanently. Soft-deleted items are
//! purged automatically 30 (emulated) days after deletion.

use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    applications,
    context::{parse_object_id, Ctx, GraphResult, Reply},
    errors::GraphError,
    query::{self, Item, ListRequest, APPLICATION, SERVICE_PRINCIPAL},
    routes::DeletedType,
    state::{Directory, Tenant},
};

/// How long deleted items are kept.
pub(crate) const RETENTION_DAYS: i64 = 30;

/// Purge soft-deleted items older than the retention period.
pub(crate) fn purge_expired(dir: &mut Directory, tenant: Uuid, now: DateTime<Utc>) {
    let cutoff = now - TimeDelta::days(RETENTION_DAYS);
    let expired: Vec<Uuid> = dir.tenants[&tenant]
        .apps
        .values()
        .filter(|a| a.deleted.is_some_and(|d| d <= cutoff))
        .map(|a| a.id)
        .collect();
    for id in expired {
        let seq = dir.next_seq();
        let t = dir.tenants.get_mut(&tenant).expect("tenant exists");
        t.apps.remove(&id);
        t.record_change(seq, now, id);
    }
    let t = dir.tenants.get_mut(&tenant).expect("tenant exists");
    t.sps.retain(|_, s| s.deleted.is_none_or(|d| d > cutoff));
}

/// Whether an object soft-deleted at `deleted` shows in deleted items yet (see
/// [`EmulatorConfig::deleted_items_lag`](super::EmulatorConfig::deleted_items_lag)).
fn listed(deleted: Option<DateTime<Utc>>, ctx: &Ctx) -> bool {
    let lag = TimeDelta::from_std(ctx.cfg.deleted_items_lag).unwrap_or(TimeDelta::zero());
    deleted.is_some_and(|d| d + lag <= ctx.now)
}

/// 403 unless the caller may manage this (deleted) application.
fn require_app_write(ctx: &Ctx, owners: &[Uuid]) -> Result<(), GraphError> {
    if ctx.caller.write_all() || (ctx.caller.owned_by() && owners.contains(&ctx.caller.sp_id)) {
        Ok(())
    } else {
        Err(GraphError::forbidden())
    }
}

fn require_sp_write(ctx: &Ctx, t: &Tenant, app_id: Uuid) -> Result<(), GraphError> {
    let owners: Vec<Uuid> = t
        .apps
        .values()
        .filter(|a| a.app_id == app_id)
        .flat_map(|a| a.owners.clone())
        .collect();
    require_app_write(ctx, &owners)
}

fn typed(obj: Value, type_name: &str, context: String) -> Value {
    let mut m = Map::new();
    m.insert("@odata.context".into(), context.into());
    m.insert(
        "@odata.type".into(),
        format!("#microsoft.graph.{type_name}").into(),
    );
    if let Value::Object(o) = obj {
        m.extend(o);
    }
    Value::Object(m)
}

/// `GET /directory/deletedItems/microsoft.graph.application` (or `.servicePrincipal`).
/// Least privilege `Application.Read.All` for both types; `Application.ReadWrite.OwnedBy`
/// is not listed, so a caller holding only that gets 403 (GD `directory-deleteditems-list.md`).
/// Get, restore and purge of one item do list OwnedBy (GD `directory-deleteditems-get.md`,
/// `-restore.md`, `-delete.md`): restore and purge only of an item the caller owns.
pub(crate) fn list(dir: &Directory, ctx: &Ctx, kind: DeletedType) -> GraphResult {
    ctx.require_read_all()?;
    let t = ctx.tenant(dir);
    let (items, resource, type_name): (Vec<Item>, _, _) = match kind {
        DeletedType::Application => (
            t.apps
                .values()
                .filter(|a| listed(a.deleted, ctx))
                .map(|a| Item {
                    seq: a.seq,
                    obj: a.render(),
                })
                .collect(),
            &APPLICATION,
            "application",
        ),
        DeletedType::ServicePrincipal => (
            t.sps
                .values()
                .filter(|s| listed(s.deleted, ctx))
                .map(|s| Item {
                    seq: s.seq,
                    obj: s.render(),
                })
                .collect(),
            &SERVICE_PRINCIPAL,
            "servicePrincipal",
        ),
    };
    let req = ListRequest {
        query: ctx.query,
        eventual: ctx.eventual(),
        resource,
        type_name,
        context: ctx.context_url(&format!("directory/deletedItems/microsoft.graph.{type_name}")),
        self_url: format!("{}/directory/deletedItems/microsoft.graph.{type_name}", ctx.v1()),
        keep: &[],
    };
    Ok(Reply::Json(StatusCode::OK, query::list(items, &req)?))
}

/// `GET /directory/deletedItems/{id}`.
pub(crate) fn get(dir: &Directory, ctx: &Ctx, id: &str) -> GraphResult {
    ctx.require_read()?;
    let uid = parse_object_id(id)?;
    let t = ctx.tenant(dir);
    let context = ctx.context_url("directory/deletedItems/$entity");
    if let Some(a) = t.apps.get(&uid).filter(|a| listed(a.deleted, ctx)) {
        return Ok(Reply::Json(
            StatusCode::OK,
            typed(a.render(), "application", context),
        ));
    }
    if let Some(s) = t.sps.get(&uid).filter(|s| listed(s.deleted, ctx)) {
        return Ok(Reply::Json(
            StatusCode::OK,
            typed(s.render(), "servicePrincipal", context),
        ));
    }
    Err(GraphError::not_found(id))
}

/// `POST /directory/deletedItems/{id}/restore` → 200 with the restored object.
pub(crate) fn restore(dir: &mut Directory, ctx: &Ctx, id: &str) -> GraphResult {
    ctx.require_write_some()?;
    let uid = parse_object_id(id)?;
    let seq = dir.next_seq();
    let t = ctx.tenant_mut(dir);
    let context = ctx.context_url("directoryObjects/$entity");
    if let Some(app) = t.apps.get(&uid).filter(|a| listed(a.deleted, ctx)) {
        require_app_write(ctx, &app.owners)?;
        // identifierUris may have been taken meanwhile when they are not reserved.
        let uris = app.identifier_uris();
        let clash = t.apps.values().any(|o| {
            o.id != uid
                && o.deleted.is_none()
                && o.identifier_uris()
                    .iter()
                    .any(|u| uris.iter().any(|x| x.eq_ignore_ascii_case(u)))
        });
        if clash {
            return Err(GraphError::bad_request(
                "Another object with the same value for property identifierUris already exists.",
            ));
        }
        let app_id = app.app_id;
        t.apps.get_mut(&uid).expect("found above").deleted = None;
        // Restoring the app restores its home-tenant service principal (contract §3.5).
        if !t.sps.values().any(|s| s.app_id == app_id && s.deleted.is_none()) {
            if let Some(sp) = t
                .sps
                .values_mut()
                .find(|s| s.app_id == app_id && s.deleted_with_app && s.deleted.is_some())
            {
                sp.deleted = None;
                sp.deleted_with_app = false;
            }
        }
        applications::touch(t, seq, ctx.now, uid);
        return Ok(Reply::Json(
            StatusCode::OK,
            typed(t.apps[&uid].render(), "application", context),
        ));
    }
    if let Some(sp) = t.sps.get(&uid).filter(|s| listed(s.deleted, ctx)) {
        let app_id = sp.app_id;
        require_sp_write(ctx, t, app_id)?;
        if t.sps.values().any(|s| s.app_id == app_id && s.deleted.is_none()) {
            return Err(GraphError::conflict(format!(
                "The service principal cannot be created, updated, or restored because the service principal name {app_id} is already in use."
            )));
        }
        let sp = t.sps.get_mut(&uid).expect("found above");
        sp.deleted = None;
        sp.deleted_with_app = false;
        return Ok(Reply::Json(
            StatusCode::OK,
            typed(sp.render(), "servicePrincipal", context),
        ));
    }
    Err(GraphError::not_found(id))
}

/// `DELETE /directory/deletedItems/{id}` → 204, permanently. Purging an application
/// leaves its soft-deleted service principal in deleted items (contract §3.5).
pub(crate) fn purge(dir: &mut Directory, ctx: &Ctx, id: &str) -> GraphResult {
    ctx.require_write_some()?;
    let uid = parse_object_id(id)?;
    let seq = dir.next_seq();
    let t = ctx.tenant_mut(dir);
    if let Some(app) = t.apps.get(&uid).filter(|a| listed(a.deleted, ctx)) {
        require_app_write(ctx, &app.owners)?;
        t.apps.remove(&uid);
        t.record_change(seq, ctx.now, uid);
        return Ok(Reply::Empty(StatusCode::NO_CONTENT));
    }
    if let Some(sp) = t.sps.get(&uid).filter(|s| listed(s.deleted, ctx)) {
        require_sp_write(ctx, t, sp.app_id)?;
        t.sps.remove(&uid);
        return Ok(Reply::Empty(StatusCode::NO_CONTENT));
    }
    Err(GraphError::not_found(id))
}

/// `GET /directoryObjects/{id}`: a live application or service principal with `@odata.type`.
pub(crate) fn directory_object(dir: &Directory, ctx: &Ctx, id: &str) -> GraphResult {
    ctx.require_read()?;
    let uid = parse_object_id(id)?;
    let t = ctx.tenant(dir);
    let context = ctx.context_url("directoryObjects/$entity");
    if let Some(a) = t.apps.get(&uid).filter(|a| a.live_and_visible(ctx.now)) {
        return Ok(Reply::Json(
            StatusCode::OK,
            typed(a.render(), "application", context),
        ));
    }
    if let Some(s) = t.sps.get(&uid).filter(|s| s.live_and_visible(ctx.now)) {
        return Ok(Reply::Json(
            StatusCode::OK,
            typed(s.render(), "servicePrincipal", context),
        ));
    }
    Err(GraphError::not_found(id))
}
