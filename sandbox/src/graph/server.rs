//! The HTTP front: one axum fallback handler classifies each request (token endpoint,
//! Graph, control), applies the fault switches, authenticates and throttles Graph calls,
//! dispatches to the resource handlers, renders errors, sets the common headers and writes
//! the request log.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    body::{to_bytes, Body, Bytes, HttpBody},
    extract::{Request, State},
    http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, Method, StatusCode},
    response::Response,
    Router,
};
use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use super::{
    applications,
    clock::Clock,
    config::EmulatorConfig,
    context::{Ctx, GraphResult, Reply},
    control, deleted_items, delta,
    errors::{GraphError, TokenError},
    faults::{self, Dice},
    federated,
    query::Query,
    requests::{RequestLog, RequestRecord},
    routes::{self, AppAction, AppKey, Route, Target},
    service_principals,
    state::{audience_is_personal, Directory},
    throttle::{Cost, Throttler},
    token::{self, TokenMeta},
};

/// Largest accepted request body.
const MAX_BODY: usize = 4 << 20;

/// Graph's JSON content type.
const GRAPH_JSON: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// State shared by the server and the [`GraphEmulator`](super::GraphEmulator) handle.
/// Locks are never held across an await, and never nested except config → dice.
pub(crate) struct Shared {
    pub dir: Mutex<Directory>,
    pub config: Mutex<EmulatorConfig>,
    pub clock: Clock,
    pub log: Mutex<RequestLog>,
    pub dice: Mutex<Dice>,
    pub throttle: Mutex<Throttler>,
    /// The advertised base URL (no trailing slash).
    pub base_url: String,
    pub ca_pem: String,
    /// Wakes held answers ([`FaultConfig::hold_after_apply`](super::FaultConfig::hold_after_apply))
    /// after a configuration update or at shutdown, to check whether they may go.
    pub hold_changed: tokio::sync::Notify,
    /// Set at shutdown: every held answer is sent.
    pub releasing_all: AtomicBool,
    /// Answers held right now.
    pub held: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(cfg: EmulatorConfig, base_url: String, ca_pem: String) -> Shared {
        Shared {
            dir: Mutex::new(Directory::default()),
            clock: Clock::starting_behind(cfg.clock_speed, cfg.clock_behind),
            dice: Mutex::new(Dice::new(cfg.faults.seed)),
            config: Mutex::new(cfg),
            log: Mutex::new(RequestLog::default()),
            throttle: Mutex::new(Throttler::default()),
            base_url,
            ca_pem,
            hold_changed: tokio::sync::Notify::new(),
            releasing_all: AtomicBool::new(false),
            held: AtomicUsize::new(0),
        }
    }

    /// Wakes held answers so they check whether they are still held.
    pub(crate) fn recheck_held(&self) {
        self.hold_changed.notify_waiters();
    }

    /// Sends every held answer (shutdown).
    pub(crate) fn release_all_held(&self) {
        self.releasing_all.store(true, Ordering::SeqCst);
        self.recheck_held();
    }

    /// Waits while the configuration holds the answer to `operation` from `caller`.
    async fn hold(&self, operation: &str, caller: Option<&str>) {
        struct Count<'a>(&'a AtomicUsize);
        impl Drop for Count<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        let _count = Count(&self.held);
        loop {
            // Registered before the check, so an update between the check and the wait
            // still wakes us.
            let changed = self.hold_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let still = !self.releasing_all.load(Ordering::SeqCst)
                && faults::holds(&self.config.lock().unwrap().faults, operation, caller);
            if !still {
                return;
            }
            changed.await;
        }
    }

    pub(crate) fn config(&self) -> EmulatorConfig {
        self.config.lock().unwrap().clone()
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// The base URL a client used to reach us (Host / authority), so links work behind any
/// name; falls back to the advertised base URL.
fn request_base(shared: &Shared, parts: &Parts) -> String {
    let scheme = if shared.base_url.starts_with("https") {
        "https"
    } else {
        "http"
    };
    let host = parts.uri.authority().map(|a| a.as_str().to_string()).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    });
    match host {
        Some(h) if !h.is_empty() => format!("{scheme}://{h}"),
        _ => shared.base_url.clone(),
    }
}

/// A body that fails at once: hyper aborts the connection without a complete response.
struct DroppedBody;

impl HttpBody for DroppedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        Poll::Ready(Some(Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "graph-emulator: injected connection drop",
        ))))
    }
}

fn dropped() -> Response {
    let mut r = Response::new(Body::new(DroppedBody));
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1024"));
    r
}

fn set(headers: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        headers.insert(n, v);
    }
}

fn json_response(status: StatusCode, body: &Value, content_type: &str) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    set(r.headers_mut(), "content-type", content_type);
    r
}

/// `Retry-After` with millisecond precision ("2.128"), trailing zeros trimmed.
fn retry_after_value(secs: f64) -> String {
    let s = format!("{secs:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() {
        "0".into()
    } else {
        s.to_string()
    }
}

struct LogDraft {
    started: Instant,
    time: chrono::DateTime<Utc>,
    emulated_time: chrono::DateTime<Utc>,
    method: String,
    path: String,
    operation: String,
    app_id: Option<String>,
    tenant_id: Option<String>,
    request_id: String,
    client_request_id: Option<String>,
    fault: Option<String>,
    retry_after: Option<f64>,
}

impl LogDraft {
    fn finish(self, shared: &Shared, status: u16) {
        tracing::debug!(
            method = %self.method, path = %self.path, operation = %self.operation, status,
            request_id = %self.request_id, fault = ?self.fault, "graph-emulator request"
        );
        shared.log.lock().unwrap().push(RequestRecord {
            seq: 0,
            time: self.time,
            emulated_time: self.emulated_time,
            method: self.method,
            path: self.path,
            operation: self.operation,
            status,
            app_id: self.app_id,
            tenant_id: self.tenant_id,
            request_id: self.request_id,
            client_request_id: self.client_request_id,
            fault: self.fault,
            retry_after: self.retry_after,
            duration_ms: self.started.elapsed().as_secs_f64() * 1e3,
        });
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let target = routes::target(parts.uri.path());
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            let mut r = Response::new(Body::from("request body too large"));
            *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            return r;
        }
    };
    if let Target::Control(segs) = &target {
        return control::handle(&shared, &parts, &body, segs);
    }

    let (operation, graph) = match &target {
        Target::Graph(Ok(route)) => (routes::operation(&parts.method, route), true),
        Target::Graph(Err(_)) => ("unknown".to_string(), true),
        Target::Token { v2, .. } => ((if *v2 { "token.v2" } else { "token.v1" }).to_string(), false),
        Target::OpenIdConfig { .. } => ("openid.configuration".to_string(), false),
        _ => ("unknown".to_string(), false),
    };
    let client_request_id = parts
        .headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut draft = LogDraft {
        started,
        time: Utc::now(),
        emulated_time: shared.clock.now(),
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        operation: operation.clone(),
        app_id: None,
        tenant_id: None,
        request_id: Uuid::new_v4().to_string(),
        client_request_id: client_request_id.clone(),
        fault: None,
        retry_after: None,
    };

    let transport = {
        let mut cfg = shared.config.lock().unwrap();
        let mut dice = shared.dice.lock().unwrap();
        faults::transport(&mut cfg.faults, &mut dice, graph, &operation)
    };
    if let Some(latency) = transport.latency {
        draft.fault = Some("latency".into());
        tokio::time::sleep(latency).await;
    }
    if transport.drop {
        draft.fault = Some("dropped".into());
        draft.finish(&shared, 0);
        return dropped();
    }

    let cfg = shared.config();
    let base = request_base(&shared, &parts);
    let now = shared.clock.now();
    let response = match target {
        Target::Graph(route) => graph_request(
            &shared,
            &cfg,
            &parts,
            &body,
            route,
            &operation,
            transport.error,
            &base,
            &mut draft,
        ),
        Target::Token { tenant, v2 } => token_request(
            &shared,
            &cfg,
            &parts,
            &body,
            &tenant,
            v2,
            transport.error,
            &base,
            &mut draft,
        ),
        Target::OpenIdConfig { tenant, v2 } => {
            let dir = shared.dir.lock().unwrap();
            match dir.tenant_id_by_ref(&tenant) {
                Some(tid) => json_response(
                    StatusCode::OK,
                    &token::openid_configuration(&base, tid, v2),
                    "application/json; charset=utf-8",
                ),
                None => {
                    let e = TokenError::new(
                        400,
                        "invalid_tenant",
                        90002,
                        format!("Tenant '{tenant}' not found."),
                    );
                    json_response(
                        e.status,
                        &e.body(now, &draft.request_id, &draft.request_id, &base),
                        "application/json; charset=utf-8",
                    )
                }
            }
        }
        _ => {
            let mut r = Response::new(Body::from("not found"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    };
    // A lost response: the change is made, the answer is held back (logged at once, so a
    // test can see the request was applied).
    let status = response.status();
    let caller = draft.app_id.clone();
    let hold = status.is_success() && {
        let cfg = shared.config.lock().unwrap();
        faults::holds(&cfg.faults, &operation, caller.as_deref())
    };
    if hold {
        draft.fault = Some("held".into());
    }
    let lose = status.is_success() && !hold && {
        let mut cfg = shared.config.lock().unwrap();
        faults::loses(&mut cfg.faults, &operation)
    };
    if lose {
        draft.fault = Some("lost".into());
        draft.finish(&shared, status.as_u16());
        return dropped();
    }
    draft.finish(&shared, status.as_u16());
    if hold {
        shared.hold(&operation, caller.as_deref()).await;
    }
    response
}

/// What the throttling step needs to know about a request.
fn cost_of(
    dir: &Directory,
    tenant: Uuid,
    method: &Method,
    route: &Route,
    query: &Query,
    body: &[u8],
    now: chrono::DateTime<Utc>,
) -> Cost {
    let write = routes::is_write(method);
    let small_top = query
        .top
        .as_deref()
        .and_then(|t| t.parse::<u32>().ok())
        .is_some_and(|t| t < 20);
    let resource_units = Cost::compute(
        matches!(route, Route::Applications) && *method == Method::GET,
        query.select.is_some(),
        query.expand.is_some(),
        small_top,
    );
    // POST/PATCH/DELETE on applications with a personal-account audience: 60 per minute.
    let personal_app_write = write
        && match route {
            Route::Applications => serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| {
                    v.get("signInAudience")
                        .and_then(Value::as_str)
                        .map(audience_is_personal)
                })
                .unwrap_or(false),
            Route::Application(key) | Route::ApplicationAction(key, _) => {
                let t = &dir.tenants[&tenant];
                applications::find(t, key, now)
                    .ok()
                    .is_some_and(|id| audience_is_personal(t.apps[&id].sign_in_audience()))
            }
            _ => false,
        };
    let key_credentials_select = query
        .select
        .as_ref()
        .is_some_and(|s| s.iter().any(|n| n.eq_ignore_ascii_case("keyCredentials")));
    Cost {
        resource_units,
        write,
        personal_app_write,
        key_credentials_select,
    }
}

#[allow(clippy::too_many_arguments)]
fn graph_request(
    shared: &Shared,
    cfg: &EmulatorConfig,
    parts: &Parts,
    body: &[u8],
    route: Result<Route, GraphError>,
    operation: &str,
    injected_error: Option<(u16, Option<std::time::Duration>)>,
    base: &str,
    draft: &mut LogDraft,
) -> Response {
    let now = shared.clock.now();
    let query = Query::parse(parts.uri.query());
    let mut extra: Vec<(String, String)> = Vec::new();
    let result: GraphResult = (|| {
        if let Some((403, _)) = injected_error {
            let mut e = GraphError::forbidden();
            e.fault = Some("injected-403");
            return Err(e);
        }
        if let Some((status, retry_after)) = injected_error {
            let code = if status == 504 {
                "GatewayTimeout"
            } else {
                "serviceNotAvailable"
            };
            let mut e = GraphError::new(
                StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                code,
                "The service is temporarily unavailable. Please retry after a delay.",
            );
            e.retry_after = retry_after.map(|d| d.as_secs_f64());
            e.fault = Some(if status == 504 {
                "injected-504"
            } else {
                "injected-503"
            });
            return Err(e);
        }
        // Authenticate, then look at the route.
        let (caller, size, cost) = {
            let mut dir = shared.dir.lock().unwrap();
            let caller = token::authenticate(&dir, &parts.headers, now)?;
            draft.app_id = Some(caller.app_id.to_string());
            draft.tenant_id = Some(caller.tenant.to_string());
            let route = route.as_ref().map_err(Clone::clone)?;
            deleted_items::purge_expired(&mut dir, caller.tenant, now);
            let size = dir.tenants[&caller.tenant].size;
            let cost = cost_of(&dir, caller.tenant, &parts.method, route, &query, body, now);
            (caller, size, cost)
        };
        let route = route?;
        // Injected 429 (a switch for tests), then the documented buckets.
        let injected = {
            let mut c = shared.config.lock().unwrap();
            let mut dice = shared.dice.lock().unwrap();
            faults::throttle(&mut c.faults, &mut dice, operation)
        };
        if let Some(retry_after) = injected {
            let mut e = GraphError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Please retry again later.",
            );
            e.retry_after = retry_after.map(|d| d.as_secs_f64());
            e.fault = Some("injected-429");
            let kind = if cost.write { "Write" } else { "Read" };
            e.throttle = Some(super::errors::ThrottleHeaders {
                scope: format!("Tenant_Application/{kind}/{}/{}", caller.app_id, caller.tenant),
                information: if cost.write {
                    "WriteLimitExceeded"
                } else {
                    "ResourceUnitLimitExceeded"
                },
            });
            return Err(e);
        }
        if cfg.throttling.enabled {
            let admitted = shared.throttle.lock().unwrap().admit(
                &cfg.throttling,
                now,
                caller.app_id,
                caller.tenant,
                size,
                cost,
            );
            match admitted {
                Ok(usage) => {
                    extra.push(("x-ms-resource-unit".into(), cost.resource_units.to_string()));
                    if usage.limit_ratio >= 0.8 {
                        extra.push((
                            "x-ms-throttle-limit-percentage".into(),
                            format!("{:.1}", usage.limit_ratio.min(1.8)),
                        ));
                    }
                }
                Err(t) => {
                    let mut e = GraphError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TooManyRequests",
                        "Please retry again later.",
                    );
                    if cfg.assumptions.bucket_429_retry_after {
                        e.retry_after = Some(shared.clock.to_real_secs(t.wait_secs));
                    }
                    e.fault = Some("throttled");
                    e.throttle = Some(t.headers);
                    return Err(e);
                }
            }
        } else {
            extra.push(("x-ms-resource-unit".into(), cost.resource_units.to_string()));
        }
        let ctx = Ctx {
            method: &parts.method,
            query: &query,
            headers: &parts.headers,
            body,
            now,
            base,
            cfg,
            caller: &caller,
        };
        let mut dir = shared.dir.lock().unwrap();
        dispatch(&mut dir, &ctx, &route)
    })();

    let request_id = draft.request_id.clone();
    let client_request_id = match &draft.client_request_id {
        Some(c) if cfg.assumptions.echo_client_request_id => c.clone(),
        _ => request_id.clone(),
    };
    let mut response = match result {
        Ok(Reply::Json(status, v)) => json_response(status, &v, GRAPH_JSON),
        Ok(Reply::Empty(status)) => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = status;
            r
        }
        Ok(Reply::Text(status, text)) => {
            let mut r = Response::new(Body::from(text));
            *r.status_mut() = status;
            set(r.headers_mut(), "content-type", "text/plain;charset=utf-8");
            r
        }
        Err(e) => {
            let mut r = json_response(
                e.status,
                &e.body(now, &request_id, &client_request_id),
                GRAPH_JSON,
            );
            let h = r.headers_mut();
            if e.status == StatusCode::UNAUTHORIZED {
                set(h, "www-authenticate", &token::www_authenticate(base));
            }
            if let Some(ra) = e.retry_after {
                set(h, "retry-after", &retry_after_value(ra));
                draft.retry_after = Some(ra);
            }
            if let Some(t) = &e.throttle {
                set(h, "x-ms-throttle-scope", &t.scope);
                set(h, "x-ms-throttle-information", t.information);
            }
            if let Some(f) = e.fault {
                draft.fault = Some(f.into());
            }
            r
        }
    };
    let h = response.headers_mut();
    set(h, "request-id", &request_id);
    set(h, "client-request-id", &client_request_id);
    set(h, "cache-control", "no-cache");
    set(
        h,
        "x-ms-ags-diagnostic",
        r#"{"ServerInfo":{"DataCenter":"Emulator","Slice":"E","Ring":"0","ScaleUnit":"000","RoleInstance":"GRAPH-EMULATOR"}}"#,
    );
    for (k, v) in extra {
        set(h, &k, &v);
    }
    response
}

fn dispatch(dir: &mut Directory, ctx: &Ctx, route: &Route) -> GraphResult {
    let m = ctx.method.clone();
    match (route, m) {
        (Route::Applications, Method::GET) => applications::list(dir, ctx),
        (Route::Applications, Method::POST) => applications::create(dir, ctx),
        (Route::ApplicationsCount, Method::GET) => applications::count(dir, ctx),
        (Route::ApplicationsDelta, Method::GET) => delta::delta(dir, ctx),
        (Route::Application(k), Method::GET) => applications::get(dir, ctx, k),
        (Route::Application(AppKey::UniqueName(n)), Method::PATCH) => applications::upsert(dir, ctx, n),
        (Route::Application(k), Method::PATCH) => applications::update(dir, ctx, k),
        (Route::Application(k), Method::DELETE) => applications::delete(dir, ctx, k),
        (Route::ApplicationAction(k, AppAction::AddPassword), Method::POST) => {
            applications::add_password(dir, ctx, k)
        }
        (Route::ApplicationAction(k, AppAction::RemovePassword), Method::POST) => {
            applications::remove_password(dir, ctx, k)
        }
        (Route::ApplicationOwners(k), Method::GET) => applications::list_owners(dir, ctx, k),
        (Route::ApplicationOwnersRef(k), Method::POST) => applications::add_owner(dir, ctx, k),
        (Route::ApplicationOwnerRef(k, o), Method::DELETE) => applications::remove_owner(dir, ctx, k, o),
        (Route::Fics(k), Method::GET) => federated::list(dir, ctx, k),
        (Route::Fics(k), Method::POST) => federated::create(dir, ctx, k),
        (Route::Fic(k, f), Method::GET) => federated::get(dir, ctx, k, f),
        (Route::Fic(k, f), Method::PATCH) => federated::update(dir, ctx, k, f),
        (Route::Fic(k, f), Method::DELETE) => federated::delete(dir, ctx, k, f),
        (Route::ServicePrincipals, Method::GET) => service_principals::list(dir, ctx),
        (Route::ServicePrincipals, Method::POST) => service_principals::create(dir, ctx),
        (Route::ServicePrincipalsCount, Method::GET) => service_principals::count(dir, ctx),
        (Route::ServicePrincipal(k), Method::GET) => service_principals::get(dir, ctx, k),
        (Route::ServicePrincipal(k), Method::PATCH) => service_principals::update(dir, ctx, k),
        (Route::ServicePrincipal(k), Method::DELETE) => service_principals::delete(dir, ctx, k),
        (Route::DeletedItems(kind), Method::GET) => deleted_items::list(dir, ctx, *kind),
        (Route::DeletedItem(id), Method::GET) => deleted_items::get(dir, ctx, id),
        (Route::DeletedItem(id), Method::DELETE) => deleted_items::purge(dir, ctx, id),
        (Route::DeletedItemRestore(id), Method::POST) => deleted_items::restore(dir, ctx, id),
        (Route::DirectoryObject(id), Method::GET) => deleted_items::directory_object(dir, ctx, id),
        _ => Err(GraphError::method_not_allowed()),
    }
}

#[allow(clippy::too_many_arguments)]
fn token_request(
    shared: &Shared,
    cfg: &EmulatorConfig,
    parts: &Parts,
    body: &[u8],
    tenant: &str,
    v2: bool,
    injected_error: Option<(u16, Option<std::time::Duration>)>,
    base: &str,
    draft: &mut LogDraft,
) -> Response {
    let now = shared.clock.now();
    let trace_id = draft.request_id.clone();
    // Entra uses the client's `client-request-id` as the correlation id.
    let correlation_id = draft
        .client_request_id
        .clone()
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    let mut meta = TokenMeta::default();
    let result = if let Some((status, retry_after)) = injected_error {
        let mut e = TokenError::new(
            status,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        );
        e.retry_after = retry_after.map(|d| d.as_secs_f64());
        e.fault = Some(if status == 504 {
            "injected-504"
        } else {
            "injected-503"
        });
        Err(e)
    } else if parts.method != Method::POST {
        Err(TokenError::new(
            400,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        ))
    } else {
        let mut dir = shared.dir.lock().unwrap();
        let bases = [base, shared.base_url.as_str()];
        token::token_endpoint(
            &mut dir,
            cfg,
            &bases,
            tenant,
            v2,
            &parts.headers,
            body,
            now,
            &mut meta,
        )
    };
    draft.app_id = meta.app_id;
    draft.tenant_id = meta.tenant_id;
    let mut response = match result {
        Ok(v) => json_response(StatusCode::OK, &v, "application/json; charset=utf-8"),
        Err(e) => {
            let mut r = json_response(
                e.status,
                &e.body(now, &trace_id, &correlation_id, base),
                "application/json; charset=utf-8",
            );
            if let Some(ra) = e.retry_after {
                set(r.headers_mut(), "retry-after", &retry_after_value(ra));
                draft.retry_after = Some(ra);
            }
            if let Some(f) = e.fault {
                draft.fault = Some(f.into());
            }
            r
        }
    };
    let h = response.headers_mut();
    set(h, "x-ms-request-id", &trace_id);
    set(h, "client-request-id", &correlation_id);
    set(h, "cache-control", "no-store, no-cache");
    set(h, "pragma", "no-cache");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_fractional_seconds() {
        assert_eq!(retry_after_value(2.128), "2.128");
        assert_eq!(retry_after_value(1.5), "1.5");
        assert_eq!(retry_after_value(3.0), "3");
        assert_eq!(retry_after_value(0.0004), "0");
    }
}
