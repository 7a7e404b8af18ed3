//! `GET /applications/delta` (contract §3.7): an initial sync paged with `$skiptoken`,
//! ending in an `@odata.deltaLink`; later rounds return new (and restored) applications
//! whole, updated ones as `id` plus only the properties that changed (as Graph does: a
//! client must not take an update for the whole object), soft-deleted ones as `{"id", "@removed": {"reason": "changed"}}` and permanently deleted
//! ones with `"reason": "deleted"`. `$deltatoken=latest` returns only a deltaLink.
//!
//! A token is a position in the tenant's change log: (effective time, sequence). A change
//! is effective when it becomes visible, so an application created under replication lag
//! shows up in the round after it replicates instead of being skipped.

use axum::http::StatusCode;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{
    context::{Ctx, GraphResult, Reply},
    errors::GraphError,
    query::{self, Filter, APPLICATION},
    state::Directory,
};

/// Serialized into `$skiptoken` / `$deltatoken`; query options live here, not in the URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Position {
    /// Changes after (from_t, from_s); `None` = the initial sync.
    from: Option<(i64, u64)>,
    /// Up to (upto_t, upto_s), fixed on the first page of a round.
    upto: (i64, u64),
    /// Items already returned in this round.
    offset: usize,
    select: Option<Vec<String>>,
    ids: Option<Vec<String>>,
    top: usize,
}

fn encode(p: &Position) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(p).expect("serializable"))
}

fn decode(t: &str) -> Result<Position, GraphError> {
    URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| GraphError::bad_request("Invalid delta or skip token."))
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// `GET /applications/delta[?$select=…&$filter=id eq '…'&$top=…]`, `?$skiptoken=…`,
/// `?$deltatoken=…`.
pub(crate) fn delta(dir: &Directory, ctx: &Ctx) -> GraphResult {
    ctx.require_read()?;
    let q = ctx.query;
    let here = (micros(ctx.now), dir.seq);
    let mut pos = if let Some(tok) = &q.skiptoken {
        decode(tok)?
    } else if let Some(tok) = &q.deltatoken {
        if tok == "latest" {
            let p = Position {
                from: Some(here),
                upto: here,
                offset: 0,
                select: q.select.clone(),
                ids: None,
                top: 100,
            };
            return Ok(Reply::Json(
                StatusCode::OK,
                json!({
                    "@odata.context": ctx.context_url("applications"),
                    "value": [],
                    "@odata.deltaLink": format!("{}/applications/delta?$deltatoken={}", ctx.v1(), encode(&p)),
                }),
            ));
        }
        let p = decode(tok)?;
        Position {
            from: Some(p.upto),
            upto: here,
            offset: 0,
            ..p
        }
    } else {
        if q.orderby.is_some() || q.search.is_some() || q.count {
            return Err(GraphError::unsupported_query(
                "$orderby, $search and $count are not supported with delta queries.",
            ));
        }
        let ids = match &q.filter {
            None => None,
            Some(f) => Some(Filter::parse(f, &APPLICATION)?.ids_only().ok_or_else(|| {
                GraphError::unsupported_query("Delta queries only support $filter=id eq '…' [or id eq '…'].")
            })?),
        };
        Position {
            from: None,
            upto: here,
            offset: 0,
            select: q.select.clone(),
            ids,
            top: q.page_size(100)?,
        }
    };

    let t = ctx.tenant(dir);
    let wanted = |id: &Uuid| {
        pos.ids
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|x| x.eq_ignore_ascii_case(&id.to_string())))
    };
    // Per listed id: `None` = whole, `Some(props)` = only these changed properties.
    let mut partial: std::collections::HashMap<Uuid, Option<std::collections::BTreeSet<String>>> =
        std::collections::HashMap::new();
    let ids: Vec<Uuid> = match pos.from {
        None => {
            let mut apps: Vec<_> = t
                .apps
                .values()
                .filter(|a| a.live_and_visible(ctx.now) && wanted(&a.id))
                .collect();
            apps.sort_by_key(|a| a.seq);
            apps.iter().map(|a| a.id).collect()
        }
        Some(from) => {
            let mut changed: Vec<(u64, Uuid)> = t
                .changes
                .iter()
                .filter(|c| {
                    let key = (micros(c.effective), c.seq);
                    key > from && key.0 <= pos.upto.0 && c.seq <= pos.upto.1 && wanted(&c.id)
                })
                .map(|c| {
                    let entry = partial.entry(c.id).or_insert_with(|| Some(Default::default()));
                    match (&c.props, entry.as_mut()) {
                        (Some(props), Some(acc)) => acc.extend(props.iter().cloned()),
                        _ => *entry = None,
                    }
                    (c.seq, c.id)
                })
                .collect();
            changed.sort();
            let mut seen = Vec::new();
            for (_, id) in changed.into_iter().rev() {
                if !seen.contains(&id) {
                    seen.push(id);
                }
            }
            seen.reverse();
            seen
        }
    };

    let mut value = Vec::new();
    for id in ids.iter().skip(pos.offset).take(pos.top) {
        let entry = match t.apps.get(id) {
            Some(a) if a.deleted.is_none() => {
                let obj = a.render();
                let mut v = match &pos.select {
                    Some(names) => {
                        let mut v = query::select(&obj, names, &["id"], "application")?;
                        v["id"] = id.to_string().into();
                        v
                    }
                    None => obj,
                };
                if let (Some(Some(changed)), Value::Object(map)) = (partial.get(id), &mut v) {
                    // An update: `id` and the changed properties only.
                    map.retain(|k, _| k == "id" || changed.contains(k));
                }
                v
            }
            Some(_) => json!({
                "@odata.type": "#microsoft.graph.application",
                "id": id.to_string(),
                "@removed": {"reason": "changed"},
            }),
            None => json!({"id": id.to_string(), "@removed": {"reason": "deleted"}}),
        };
        value.push(entry);
    }
    let returned = pos.offset + value.len();
    let mut out = Map::new();
    out.insert("@odata.context".into(), ctx.context_url("applications").into());
    out.insert("value".into(), Value::Array(value));
    if returned < ids.len() {
        pos.offset = returned;
        out.insert(
            "@odata.nextLink".into(),
            format!("{}/applications/delta?$skiptoken={}", ctx.v1(), encode(&pos)).into(),
        );
    } else {
        let next = Position {
            from: None,
            offset: 0,
            ..pos
        };
        out.insert(
            "@odata.deltaLink".into(),
            format!("{}/applications/delta?$deltatoken={}", ctx.v1(), encode(&next)).into(),
        );
    }
    Ok(Reply::Json(StatusCode::OK, Value::Object(out)))
}
