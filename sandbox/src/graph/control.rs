//! Control and inspection endpoints under `/_emulator/` (never faulted, throttled, logged
//! or authenticated — do not expose the emulator beyond a test network):
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/_emulator/health` | `{"status":"ok"}` |
//! | GET | `/_emulator/info` | base URL, authority host, Graph endpoint, CA path, emulated time |
//! | GET | `/_emulator/ca.pem` | the CA certificate (PEM) |
//! | GET, PUT, PATCH | `/_emulator/config` | read / merge-update the runtime [`EmulatorConfig`] (durations in seconds) |
//! | PUT, PATCH | `/_emulator/faults` | merge-update `config.faults` only |
//! | POST | `/_emulator/tenants` | seed a tenant ([`TenantSpec`] JSON) → [`TenantInfo`] |
//! | POST | `/_emulator/tenants/{tenant}/apps` | seed an app ([`AppSpec`] JSON) → [`AdminApp`] (with its secret) |
//! | PUT | `/_emulator/tenants/{tenant}/policy` | `{"passwordMaxLifetime": seconds or null}` |
//! | PUT | `/_emulator/issuers` | `{"issuer": url, "jwks": {"keys": [...]}}`: trust the issuer's keys for federated assertions |
//! | GET | `/_emulator/issuers` | the registered issuer URLs |
//! | GET | `/_emulator/clock` | `{"now": …, "speed": …}` |
//! | POST | `/_emulator/clock/advance` | `{"seconds": 3600}` moves the emulated clock forward |
//! | POST | `/_emulator/tokens/expire` | every issued access token expires now |
//! | POST | `/_emulator/throttling/reset` | refill all throttling buckets |
//! | GET | `/_emulator/state` | [`StateSnapshot`]: all objects, passwords by keyId without values |
//! | GET, DELETE | `/_emulator/requests` | the request log and counts per operation / clear it |
//!
//! [`EmulatorConfig`]: super::EmulatorConfig
//! [`TenantSpec`]: super::TenantSpec
//! [`TenantInfo`]: super::TenantInfo
//! [`AppSpec`]: super::AppSpec
//! [`AdminApp`]: super::AdminApp
//! [`StateSnapshot`]: super::StateSnapshot

use std::time::Duration;

use axum::{
    body::Body,
    http::{request::Parts, Method, StatusCode},
    response::Response,
};
use serde_json::{json, Value};

use super::{
    config::{merge_json, EmulatorConfig},
    seed::{self, AppSpec, TenantSpec},
    server::Shared,
};

fn reply(status: StatusCode, body: Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("static"));
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    reply(status, json!({"error": message.into()}))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"))))
}

/// Apply a JSON merge patch to the runtime configuration. Start-up-only fields (`listen`,
/// `tls`, `tls_extra_names`, `ca_out`, `clock_behind`) keep their values.
pub(crate) fn patch_config(shared: &Shared, patch: &Value) -> Result<EmulatorConfig, String> {
    let mut cfg = shared.config.lock().unwrap();
    let mut v = serde_json::to_value(&*cfg).map_err(|e| e.to_string())?;
    merge_json(&mut v, patch);
    let mut new: EmulatorConfig = serde_json::from_value(v).map_err(|e| format!("invalid config: {e}"))?;
    new.validate()?;
    new.listen = cfg.listen;
    new.tls = cfg.tls;
    new.tls_extra_names = cfg.tls_extra_names.clone();
    new.ca_out = cfg.ca_out.clone();
    new.clock_behind = cfg.clock_behind;
    shared.clock.set_speed(new.clock_speed);
    if new.faults.seed.is_some() {
        // Every update with a seed restarts the dice: a run is reproducible from here.
        *shared.dice.lock().unwrap() = super::faults::Dice::new(new.faults.seed);
    }
    *cfg = new.clone();
    drop(cfg);
    // Held answers the new configuration no longer holds are sent now.
    shared.recheck_held();
    Ok(new)
}

pub(crate) fn handle(shared: &Shared, parts: &Parts, body: &[u8], segs: &[String]) -> Response {
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = &parts.method;
    match (m.clone(), segs.as_slice()) {
        (Method::GET, ["health"]) => reply(StatusCode::OK, json!({"status": "ok"})),
        (Method::GET, ["info"]) => {
            let cfg = shared.config();
            reply(
                StatusCode::OK,
                json!({
                    "baseUrl": shared.base_url,
                    "authorityHost": shared.base_url,
                    "graphEndpoint": shared.base_url,
                    "graphV1": format!("{}/v1.0", shared.base_url),
                    "tls": cfg.tls,
                    "caPath": super::tls::ca().map(|c| c.path.display().to_string()).ok(),
                    "now": shared.clock.now(),
                }),
            )
        }
        (Method::GET, ["ca.pem"]) => {
            let mut r = Response::new(Body::from(shared.ca_pem.clone()));
            r.headers_mut()
                .insert("content-type", "application/x-pem-file".parse().expect("static"));
            r
        }
        (Method::GET, ["config"]) => reply(
            StatusCode::OK,
            serde_json::to_value(shared.config()).unwrap_or_default(),
        ),
        (Method::PUT | Method::PATCH, ["config"]) => match parse::<Value>(body) {
            Ok(patch) => match patch_config(shared, &patch) {
                Ok(cfg) => reply(StatusCode::OK, serde_json::to_value(cfg).unwrap_or_default()),
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            },
            Err(r) => *r,
        },
        (Method::PUT | Method::PATCH, ["faults"]) => match parse::<Value>(body) {
            Ok(patch) => match patch_config(shared, &json!({ "faults": patch })) {
                Ok(cfg) => reply(
                    StatusCode::OK,
                    serde_json::to_value(cfg.faults).unwrap_or_default(),
                ),
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            },
            Err(r) => *r,
        },
        (Method::POST, ["tenants"]) => match parse::<TenantSpec>(body) {
            Ok(spec) => match seed::tenant(&mut shared.dir.lock().unwrap(), spec) {
                Ok(info) => reply(
                    StatusCode::CREATED,
                    serde_json::to_value(info).unwrap_or_default(),
                ),
                Err(e) => error(StatusCode::CONFLICT, e),
            },
            Err(r) => *r,
        },
        (Method::POST, ["tenants", tenant, "apps"]) => match parse::<AppSpec>(body) {
            Ok(spec) => {
                let now = shared.clock.now();
                match seed::app(&mut shared.dir.lock().unwrap(), tenant, spec, now) {
                    Ok(app) => reply(StatusCode::CREATED, serde_json::to_value(app).unwrap_or_default()),
                    Err(e) => error(StatusCode::BAD_REQUEST, e),
                }
            }
            Err(r) => *r,
        },
        (Method::PUT, ["tenants", tenant, "policy"]) => {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase", deny_unknown_fields)]
            struct Policy {
                #[serde(default, with = "super::config::opt_secs")]
                password_max_lifetime: Option<Duration>,
            }
            match parse::<Policy>(body) {
                Ok(p) => {
                    let mut dir = shared.dir.lock().unwrap();
                    match dir.tenant_id_by_ref(tenant) {
                        Some(id) => {
                            dir.tenants.get_mut(&id).expect("found").password_max_lifetime =
                                Some(p.password_max_lifetime);
                            reply(
                                StatusCode::OK,
                                json!({"passwordMaxLifetime": p.password_max_lifetime.map(|d| d.as_secs_f64())}),
                            )
                        }
                        None => error(StatusCode::NOT_FOUND, format!("unknown tenant '{tenant}'")),
                    }
                }
                Err(r) => *r,
            }
        }
        (Method::PUT, ["issuers"]) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Registration {
                issuer: String,
                jwks: Value,
            }
            match parse::<Registration>(body) {
                Ok(r) => match register_issuer(shared, &r.issuer, &r.jwks) {
                    Ok(keys) => reply(StatusCode::OK, json!({"issuer": r.issuer, "keys": keys})),
                    Err(e) => error(StatusCode::BAD_REQUEST, e),
                },
                Err(r) => *r,
            }
        }
        (Method::GET, ["issuers"]) => {
            let dir = shared.dir.lock().unwrap();
            reply(
                StatusCode::OK,
                json!({"issuers": dir.issuers.keys().collect::<Vec<_>>()}),
            )
        }
        (Method::GET, ["clock"]) => reply(
            StatusCode::OK,
            json!({"now": shared.clock.now(), "speed": shared.clock.speed()}),
        ),
        (Method::POST, ["clock", "advance"]) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Advance {
                seconds: f64,
            }
            match parse::<Advance>(body) {
                Ok(a) => match Duration::try_from_secs_f64(a.seconds) {
                    Ok(d) => {
                        shared.clock.advance(d);
                        reply(StatusCode::OK, json!({"now": shared.clock.now()}))
                    }
                    Err(e) => error(StatusCode::BAD_REQUEST, format!("seconds: {e}")),
                },
                Err(r) => *r,
            }
        }
        (Method::POST, ["tokens", "expire"]) => {
            let n = expire_tokens(shared);
            reply(StatusCode::OK, json!({"expired": n}))
        }
        (Method::POST, ["throttling", "reset"]) => {
            shared.throttle.lock().unwrap().reset();
            reply(StatusCode::OK, json!({"reset": true}))
        }
        (Method::GET, ["state"]) => reply(
            StatusCode::OK,
            serde_json::to_value(snapshot(shared)).unwrap_or_default(),
        ),
        (Method::GET, ["requests"]) => {
            let log = shared.log.lock().unwrap();
            reply(
                StatusCode::OK,
                json!({"requests": log.records(), "counts": log.counts()}),
            )
        }
        (Method::DELETE, ["requests"]) => {
            shared.log.lock().unwrap().clear();
            reply(StatusCode::OK, json!({"cleared": true}))
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no control endpoint {} /_emulator/{}", m, segs.join("/")),
        ),
    }
}

/// Trust `issuer`'s JWKS (replacing earlier keys of the same issuer); returns how many
/// keys were usable.
pub(crate) fn register_issuer(shared: &Shared, issuer: &str, jwks: &Value) -> Result<usize, String> {
    super::issuers::valid_issuer(issuer)?;
    let keys = super::issuers::parse_jwks(jwks)?;
    let n = keys.len();
    let mut dir = shared.dir.lock().unwrap();
    if !dir.issuers.contains_key(issuer) && dir.issuers.len() >= super::issuers::MAX_ISSUERS {
        return Err(format!("at most {} issuers", super::issuers::MAX_ISSUERS));
    }
    dir.issuers.insert(issuer.to_string(), keys);
    Ok(n)
}

/// Make every issued token expire now; returns how many there were.
pub(crate) fn expire_tokens(shared: &Shared) -> usize {
    let now = shared.clock.now();
    let mut dir = shared.dir.lock().unwrap();
    for t in dir.tokens.values_mut() {
        t.expires = t.expires.min(now);
    }
    dir.tokens.len()
}

pub(crate) fn snapshot(shared: &Shared) -> super::StateSnapshot {
    let default_cap = shared.config.lock().unwrap().password_max_lifetime;
    let now = shared.clock.now();
    shared.dir.lock().unwrap().snapshot(now, default_cap)
}
