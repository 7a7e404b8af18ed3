//! `/applications/{id}/federatedIdentityCredentials` (contract §6): create, list, get,
//! update, upsert by `name`, delete; at most 20 per application.
//!
//! The error bodies for a duplicate and for a 21st credential are UNVERIFIED (§10): both
//! answer 400 `Request_BadRequest`, the way Graph reports other key collisions
//! (uniqueName, §3.4).

use axum::http::StatusCode;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{
    applications::{find, touch_props},
    context::{Ctx, GraphResult, Reply},
    errors::GraphError,
    routes::{AppKey, FicKey},
    state::{Directory, Fic},
};

const FIELD_MAX: usize = 600;
const NAME_MAX: usize = 120;

fn fic_context(ctx: &Ctx, app: Uuid, entity: bool) -> String {
    let suffix = if entity { "/$entity" } else { "" };
    ctx.context_url(&format!(
        "applications('{app}')/federatedIdentityCredentials{suffix}"
    ))
}

fn string_field(
    body: &Map<String, Value>,
    name: &str,
    max: usize,
    required: bool,
) -> Result<Option<String>, GraphError> {
    match body.get(name) {
        None | Some(Value::Null) if required => {
            Err(GraphError::invalid_value(name, format!("{name} is required.")))
        }
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= max => Ok(Some(s.clone())),
        Some(Value::String(s)) if s.is_empty() && !required => Ok(Some(String::new())),
        Some(_) => Err(GraphError::invalid_value(
            name,
            format!("{name} must be a string of 1 to {max} characters."),
        )),
    }
}

fn valid_name(name: &str) -> Result<(), GraphError> {
    let ok = !name.is_empty()
        && name.chars().count() <= NAME_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'));
    if ok {
        Ok(())
    } else {
        Err(GraphError::invalid_value(
            "name",
            format!(
                "name must be 1 to {NAME_MAX} URL-friendly characters (letters, digits, '-', '_', '.', '~')."
            ),
        ))
    }
}

fn audiences(body: &Map<String, Value>, required: bool) -> Result<Option<Vec<String>>, GraphError> {
    match body.get("audiences") {
        None | Some(Value::Null) if !required => Ok(None),
        Some(Value::Array(a)) if a.len() == 1 => match a[0].as_str() {
            Some(s) if !s.is_empty() && s.chars().count() <= FIELD_MAX => Ok(Some(vec![s.to_string()])),
            _ => Err(GraphError::invalid_value(
                "audiences",
                "Each audience must be 1 to 600 characters.",
            )),
        },
        _ => Err(GraphError::invalid_value(
            "audiences",
            "audiences must contain exactly one value.",
        )),
    }
}

fn check_keys(body: &Map<String, Value>) -> Result<(), GraphError> {
    for k in body.keys() {
        if !["name", "issuer", "subject", "audiences", "description", "id"].contains(&k.as_str())
            && !k.starts_with("@odata.")
        {
            return Err(GraphError::bad_request(format!(
                "Property '{k}' does not exist on type 'microsoft.graph.federatedIdentityCredential'."
            )));
        }
    }
    Ok(())
}

fn find_fic(fics: &[Fic], key: &FicKey) -> Option<usize> {
    fics.iter().position(|f| match key {
        FicKey::Id(s) => f.id.to_string().eq_ignore_ascii_case(s),
        FicKey::Name(n) => f.name.eq_ignore_ascii_case(n),
    })
}

fn key_text(key: &FicKey) -> &str {
    match key {
        FicKey::Id(s) | FicKey::Name(s) => s,
    }
}

/// `GET …/federatedIdentityCredentials`.
pub(crate) fn list(dir: &Directory, ctx: &Ctx, key: &AppKey) -> GraphResult {
    ctx.require_read()?;
    let t = ctx.tenant(dir);
    let id = find(t, key, ctx.now)?;
    let value: Vec<Value> = t.apps[&id].fics.iter().map(Fic::render).collect();
    Ok(Reply::Json(
        StatusCode::OK,
        json!({"@odata.context": fic_context(ctx, id, false), "value": value}),
    ))
}

/// `GET …/federatedIdentityCredentials/{id}` or `(name='…')`.
pub(crate) fn get(dir: &Directory, ctx: &Ctx, key: &AppKey, fic: &FicKey) -> GraphResult {
    ctx.require_read()?;
    let t = ctx.tenant(dir);
    let id = find(t, key, ctx.now)?;
    let app = &t.apps[&id];
    let i = find_fic(&app.fics, fic).ok_or_else(|| GraphError::not_found(key_text(fic)))?;
    let mut v = app.fics[i].render();
    v["@odata.context"] = fic_context(ctx, id, true).into();
    Ok(Reply::Json(StatusCode::OK, v))
}

fn insert(
    dir: &mut Directory,
    ctx: &Ctx,
    key: &AppKey,
    body: Map<String, Value>,
    name_from_url: Option<&str>,
) -> GraphResult {
    check_keys(&body)?;
    let name = match (
        name_from_url,
        string_field(&body, "name", NAME_MAX, name_from_url.is_none())?,
    ) {
        (Some(u), Some(b)) if !u.eq_ignore_ascii_case(&b) => {
            return Err(GraphError::bad_request(
                "The name in the body does not match the one in the URL.",
            ))
        }
        (Some(u), _) => u.to_string(),
        (None, Some(b)) => b,
        (None, None) => unreachable!("required"),
    };
    valid_name(&name)?;
    let issuer = string_field(&body, "issuer", FIELD_MAX, true)?.unwrap_or_default();
    let subject = string_field(&body, "subject", FIELD_MAX, true)?.unwrap_or_default();
    let audiences = audiences(&body, true)?.unwrap_or_default();
    let description = string_field(&body, "description", FIELD_MAX, false)?;
    let seq = dir.next_seq();
    let limit = ctx.cfg.limits.federated_credentials;
    let t = ctx.tenant_mut(dir);
    let id = find(t, key, ctx.now)?;
    ctx.require_write(&t.apps[&id])?;
    let app = t.apps.get_mut(&id).expect("found above");
    if app.fics.iter().any(|f| f.name.eq_ignore_ascii_case(&name)) {
        return Err(GraphError::bad_request(format!(
            "FederatedIdentityCredential with name {name} already exists."
        )));
    }
    if app
        .fics
        .iter()
        .any(|f| f.issuer == issuer && f.subject == subject)
    {
        return Err(GraphError::bad_request(
            "FederatedIdentityCredential with the same issuer and subject already exists.",
        ));
    }
    if app.fics.len() >= limit {
        return Err(GraphError::bad_request(format!(
            "Maximum number of federated identity credentials per application ({limit}) reached."
        )));
    }
    let fic = Fic {
        id: Uuid::new_v4(),
        name,
        issuer,
        subject,
        audiences,
        description,
    };
    let mut out = fic.render();
    app.fics.push(fic);
    touch_props(t, seq, ctx.now, id, &[]);
    out["@odata.context"] = fic_context(ctx, id, true).into();
    Ok(Reply::Json(StatusCode::CREATED, out))
}

/// `POST …/federatedIdentityCredentials` → 201.
pub(crate) fn create(dir: &mut Directory, ctx: &Ctx, key: &AppKey) -> GraphResult {
    ctx.require_write_some()?;
    let body = ctx.json_object()?;
    insert(dir, ctx, key, body, None)
}

/// `PATCH …/federatedIdentityCredentials/{id}` → 204; with `(name='…')` also an upsert
/// (`Prefer: create-if-missing` → 201).
pub(crate) fn update(dir: &mut Directory, ctx: &Ctx, key: &AppKey, fic: &FicKey) -> GraphResult {
    ctx.require_write_some()?;
    let body = ctx.json_object()?;
    check_keys(&body)?;
    let exists = {
        let t = ctx.tenant(dir);
        let id = find(t, key, ctx.now)?;
        find_fic(&t.apps[&id].fics, fic).is_some()
    };
    if !exists {
        return match fic {
            FicKey::Name(n) if ctx.create_if_missing() => insert(dir, ctx, key, body, Some(n)),
            _ => Err(GraphError::not_found(key_text(fic))),
        };
    }
    let issuer = string_field(&body, "issuer", FIELD_MAX, false)?;
    let subject = string_field(&body, "subject", FIELD_MAX, false)?;
    let audiences = audiences(&body, false)?;
    let description = string_field(&body, "description", FIELD_MAX, false)?;
    let seq = dir.next_seq();
    let t = ctx.tenant_mut(dir);
    let id = find(t, key, ctx.now)?;
    ctx.require_write(&t.apps[&id])?;
    let app = t.apps.get_mut(&id).expect("found above");
    let i = find_fic(&app.fics, fic).expect("checked above");
    if let Some(n) = body.get("name").and_then(Value::as_str) {
        if !n.eq_ignore_ascii_case(&app.fics[i].name) {
            return Err(GraphError::bad_request(
                "Property 'name' is immutable and cannot be changed.",
            ));
        }
    }
    let (new_issuer, new_subject) = (
        issuer.clone().unwrap_or_else(|| app.fics[i].issuer.clone()),
        subject.clone().unwrap_or_else(|| app.fics[i].subject.clone()),
    );
    if app
        .fics
        .iter()
        .enumerate()
        .any(|(j, f)| j != i && f.issuer == new_issuer && f.subject == new_subject)
    {
        return Err(GraphError::bad_request(
            "FederatedIdentityCredential with the same issuer and subject already exists.",
        ));
    }
    let f = &mut app.fics[i];
    f.issuer = new_issuer;
    f.subject = new_subject;
    if let Some(a) = audiences {
        f.audiences = a;
    }
    if body.contains_key("description") {
        f.description = description;
    }
    touch_props(t, seq, ctx.now, id, &[]);
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}

/// `DELETE …/federatedIdentityCredentials/{id}` → 204.
pub(crate) fn delete(dir: &mut Directory, ctx: &Ctx, key: &AppKey, fic: &FicKey) -> GraphResult {
    ctx.require_write_some()?;
    let seq = dir.next_seq();
    let t = ctx.tenant_mut(dir);
    let id = find(t, key, ctx.now)?;
    ctx.require_write(&t.apps[&id])?;
    let app = t.apps.get_mut(&id).expect("found above");
    let i = find_fic(&app.fics, fic).ok_or_else(|| GraphError::not_found(key_text(fic)))?;
    app.fics.remove(i);
    touch_props(t, seq, ctx.now, id, &[]);
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}
