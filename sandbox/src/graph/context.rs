//! What every Graph handler gets (the request, the caller, the clock reading, the config)
//! and what it returns.

use axum::http::{HeaderMap, Method, StatusCode};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    config::EmulatorConfig,
    errors::GraphError,
    query::Query,
    state::{App, Directory, Tenant},
    token::Caller,
};

/// A handler's successful answer.
#[derive(Debug)]
pub(crate) enum Reply {
    Json(StatusCode, Value),
    Empty(StatusCode),
    Text(StatusCode, String),
}

pub(crate) type GraphResult = Result<Reply, GraphError>;

/// One authenticated Graph request.
pub(crate) struct Ctx<'a> {
    pub method: &'a Method,
    pub query: &'a Query,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub now: DateTime<Utc>,
    /// The emulator's base URL (no trailing slash).
    pub base: &'a str,
    pub cfg: &'a EmulatorConfig,
    pub caller: &'a Caller,
}

impl Ctx<'_> {
    /// `{base}/v1.0`.
    pub(crate) fn v1(&self) -> String {
        format!("{}/v1.0", self.base)
    }

    /// `{base}/v1.0/$metadata#{fragment}`.
    pub(crate) fn context_url(&self, fragment: &str) -> String {
        format!("{}/v1.0/$metadata#{fragment}", self.base)
    }

    /// The body as a JSON object (required).
    pub(crate) fn json_object(&self) -> Result<Map<String, Value>, GraphError> {
        match self.optional_json_object()? {
            Some(m) => Ok(m),
            None => Err(GraphError::bad_body("the request body is empty")),
        }
    }

    /// The body as a JSON object, or `None` when empty.
    pub(crate) fn optional_json_object(&self) -> Result<Option<Map<String, Value>>, GraphError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        match serde_json::from_slice::<Value>(self.body) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            Ok(_) => Err(GraphError::bad_body("expected a JSON object")),
            Err(e) => Err(GraphError::bad_body(e)),
        }
    }

    /// `ConsistencyLevel: eventual` (contract §3.6).
    pub(crate) fn eventual(&self) -> bool {
        self.headers
            .get("consistencylevel")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("eventual"))
    }

    /// `Prefer: create-if-missing` (contract §3.4); `Prefer` may list several preferences.
    pub(crate) fn create_if_missing(&self) -> bool {
        self.headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("create-if-missing"))
            })
    }

    pub(crate) fn tenant<'d>(&self, dir: &'d Directory) -> &'d Tenant {
        &dir.tenants[&self.caller.tenant]
    }

    pub(crate) fn tenant_mut<'d>(&self, dir: &'d mut Directory) -> &'d mut Tenant {
        dir.tenants
            .get_mut(&self.caller.tenant)
            .expect("the caller's tenant exists")
    }

    /// 403 unless the caller may read applications and service principals.
    pub(crate) fn require_read(&self) -> Result<(), GraphError> {
        if self.caller.can_read() {
            Ok(())
        } else {
            Err(GraphError::forbidden())
        }
    }

    /// 403 unless the caller holds a directory-wide read permission (`Application.Read.All`
    /// or higher); `Application.ReadWrite.OwnedBy` alone is refused.
    pub(crate) fn require_read_all(&self) -> Result<(), GraphError> {
        if self.caller.can_read_all() {
            Ok(())
        } else {
            Err(GraphError::forbidden())
        }
    }

    /// 403 unless the caller may write this application: `Application.ReadWrite.All`, or
    /// `Application.ReadWrite.OwnedBy` and the caller's service principal owns it.
    pub(crate) fn require_write(&self, app: &App) -> Result<(), GraphError> {
        if self.caller.write_all() || (self.caller.owned_by() && app.owners.contains(&self.caller.sp_id)) {
            Ok(())
        } else {
            Err(GraphError::forbidden())
        }
    }

    /// 403 unless the caller may create applications / service principals at all.
    pub(crate) fn require_write_some(&self) -> Result<(), GraphError> {
        if self.caller.can_write_some() {
            Ok(())
        } else {
            Err(GraphError::forbidden())
        }
    }
}

/// Parse an object id from a URL; Graph answers 400 for a malformed one.
pub(crate) fn parse_object_id(s: &str) -> Result<Uuid, GraphError> {
    Uuid::parse_str(s).map_err(|_| GraphError::bad_request(format!("Invalid object identifier '{s}'.")))
}

/// Microsoft Graph's service roots: the global service and the national clouds. A reference
/// (`owners@odata.bind`, `@odata.id`) names an object on one of them, whatever host the
/// request itself went to (a proxy, this emulator).
pub(crate) const GRAPH_SERVICE_ROOTS: &[&str] = &[
    "https://graph.microsoft.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
];

/// The object id of a `{Graph root}/{v1.0|beta}/directoryObjects/{id}` reference
/// (`owners@odata.bind`, `@odata.id`). Anything else is 400 "Invalid URL format specified
/// in …", as Graph answers a malformed bind (OBS: microsoft-graph-docs-contrib#4794,
/// msgraph-sdk-powershell#3177). Whether Graph refuses a well-formed URL on another host
/// is not documented: strict, it is refused too (`what` names the property).
pub(crate) fn reference_id(url: &str, what: &str) -> Result<Uuid, GraphError> {
    let invalid = || GraphError::bad_request(format!("Invalid URL format specified in {what}."));
    let rest = GRAPH_SERVICE_ROOTS
        .iter()
        .find_map(|root| {
            let head = url.get(..root.len())?;
            head.eq_ignore_ascii_case(root).then(|| &url[root.len()..])
        })
        .ok_or_else(invalid)?;
    let rest = rest
        .strip_prefix("/v1.0/")
        .or_else(|| rest.strip_prefix("/beta/"))
        .ok_or_else(invalid)?;
    let id = rest
        .strip_prefix("directoryObjects/")
        .or_else(|| {
            rest.strip_prefix("directoryObjects(")
                .and_then(|r| r.strip_suffix(')'))
        })
        .ok_or_else(invalid)?
        .trim_matches('\'');
    Uuid::parse_str(id).map_err(|_| GraphError::bad_request(format!("Invalid object identifier '{id}'.")))
}
