//! The Entra token endpoints (contract §1) and the validation of the bearer tokens they
//! issue on the Graph side (contract §2.1, 401s).
//!
//! Issued tokens look like Entra's app-only access tokens (a JWT with `aud`, `iss`, `tid`,
//! `appid`, `oid`, `roles`, `exp`, ...) but the signature is random bytes: Graph-side
//! validation looks the token up in the emulator's store, which is what makes a token
//! "issued by this emulator". Clients can still decode the claims.
//!
//! Client assertions (workload identity, contract §1.3) must be a well-formed JWT within its
//! `nbf`/`exp` window, checked against real wall-clock time (the projected token comes from
//! the real world even when the emulated clock was moved), with 5 minutes of skew; they are
//! then matched against the app's federated identity credentials on `iss`, `sub` and `aud`,
//! and their RS256/ES256 signature is verified with the keys registered for `iss`
//! ([`super::issuers`]).

use std::collections::HashMap;

use axum::http::{header, HeaderMap};
use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine,
};
use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{
    config::{EmulatorConfig, InactiveSecretError},
    errors::{GraphError, TokenError},
    routes::percent_decode,
    state::{Directory, IssuedToken},
};

/// Microsoft Graph's application id (`00000003-0000-0000-c000-000000000000`).
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// The JWT-bearer client assertion type.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Roles that allow reading applications and service principals.
const READ_ROLES: &[&str] = &[
    "Application.Read.All",
    "Application.ReadWrite.OwnedBy",
    "Application.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];

/// Roles that allow listing every application and service principal, deleted ones included:
/// `GET /directory/deletedItems/microsoft.graph.application` names `Application.Read.All`
/// as least privilege and does not list `Application.ReadWrite.OwnedBy` (GD
/// `directory-deleteditems-list.md`, contract §3.5).
const READ_ALL_ROLES: &[&str] = &[
    "Application.Read.All",
    "Application.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];

/// The app calling Graph, from its bearer token.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub tenant: Uuid,
    pub app_id: Uuid,
    pub sp_id: Uuid,
    pub roles: Vec<String>,
}

impl Caller {
    pub(crate) fn has(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    pub(crate) fn can_read(&self) -> bool {
        READ_ROLES.iter().any(|r| self.has(r))
    }

    /// A permission that reads the whole directory's applications, not only through
    /// `Application.ReadWrite.OwnedBy`.
    pub(crate) fn can_read_all(&self) -> bool {
        READ_ALL_ROLES.iter().any(|r| self.has(r))
    }

    /// `Application.ReadWrite.All`: any application.
    pub(crate) fn write_all(&self) -> bool {
        self.has("Application.ReadWrite.All")
    }

    /// `Application.ReadWrite.OwnedBy`: create, and manage owned applications only.
    pub(crate) fn owned_by(&self) -> bool {
        self.has("Application.ReadWrite.OwnedBy")
    }

    pub(crate) fn can_write_some(&self) -> bool {
        self.write_all() || self.owned_by()
    }
}

/// Whether a v1 `resource` or v2 scope prefix names Microsoft Graph: the public-cloud URL,
/// the national-cloud Graph URLs, Graph's appId, or the emulator's own base URL.
pub(crate) fn is_graph_resource(resource: &str, base_urls: &[&str]) -> bool {
    let r = resource.trim_end_matches('/');
    [
        "https://graph.microsoft.com",
        "https://graph.microsoft.us",
        "https://dod-graph.microsoft.us",
        "https://microsoftgraph.chinacloudapi.cn",
        GRAPH_APP_ID,
    ]
    .iter()
    .chain(base_urls)
    .any(|g| g.trim_end_matches('/').eq_ignore_ascii_case(r))
}

/// What the log records about a token request.
#[derive(Debug, Default)]
pub(crate) struct TokenMeta {
    pub app_id: Option<String>,
    pub tenant_id: Option<String>,
}

fn decode_form_component(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

/// `Authorization: Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((decode_form_component(id), decode_form_component(secret)))
}

/// Handle `POST /{tenant}/oauth2/v2.0/token` (v2) or `/{tenant}/oauth2/token` (v1).
/// Returns the success body, or the error to render.
#[allow(clippy::too_many_arguments)]
pub(crate) fn token_endpoint(
    dir: &mut Directory,
    cfg: &EmulatorConfig,
    base_urls: &[&str],
    tenant_ref: &str,
    v2: bool,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
    meta: &mut TokenMeta,
) -> Result<Value, TokenError> {
    let mut form: HashMap<String, String> = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        form.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    let missing = |p: &str| {
        TokenError::new(
            400,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{p}'."),
        )
    };

    let Some(tenant_id) = dir.tenant_id_by_ref(tenant_ref) else {
        return Err(TokenError::new(
            400,
            "invalid_request",
            90002,
            format!("Tenant '{tenant_ref}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."),
        ));
    };
    meta.tenant_id = Some(tenant_id.to_string());

    let grant = form.get("grant_type").ok_or_else(|| missing("grant_type"))?;
    if grant != "client_credentials" {
        return Err(TokenError::new(
            400,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
        ));
    }

    let basic = basic_credentials(headers);
    let client_id = basic
        .as_ref()
        .map(|(id, _)| id.clone())
        .or_else(|| form.get("client_id").cloned())
        .ok_or_else(|| missing("client_id"))?;
    meta.app_id = Some(client_id.clone());

    // scope (v2) / resource (v1)
    let resource = if v2 {
        let scope = form.get("scope").ok_or_else(|| missing("scope"))?;
        let invalid = || {
            TokenError::new(
                400,
                "invalid_scope",
                70011,
                format!("The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."),
            )
        };
        let scopes: Vec<&str> = scope.split_whitespace().collect();
        if scopes.is_empty() {
            return Err(invalid());
        }
        for s in &scopes {
            let prefix = s.strip_suffix("/.default").ok_or_else(invalid)?;
            if !is_graph_resource(prefix, base_urls) {
                return Err(invalid());
            }
        }
        None
    } else {
        let resource = form.get("resource").ok_or_else(|| missing("resource"))?;
        if !is_graph_resource(resource, base_urls) {
            let tenant = &dir.tenants[&tenant_id];
            return Err(TokenError::new(
                400,
                "invalid_resource",
                500011,
                format!("The resource principal named {resource} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.", tenant.display_name),
            ));
        }
        Some(resource.clone())
    };

    let tenant = &dir.tenants[&tenant_id];
    let app_uuid = Uuid::parse_str(&client_id).ok();
    let app = app_uuid
        .and_then(|id| tenant.app_by_app_id(id))
        .filter(|a| a.visible(now));
    let Some(app) = app else {
        return Err(TokenError::new(
            cfg.assumptions.unknown_client_status,
            "unauthorized_client",
            700016,
            format!("Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.", tenant.domain()),
        ));
    };
    let Some(sp) = tenant.sp_by_app_id(app.app_id).filter(|s| s.visible(now)) else {
        return Err(TokenError::new(
            401,
            "invalid_client",
            7000229,
            format!("The client application {} is missing service principal in the tenant {}. See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119", app.app_id, tenant.id),
        ));
    };

    let secret = basic
        .map(|(_, s)| s)
        .or_else(|| form.get("client_secret").cloned());
    let assertion = form.get("client_assertion");
    let appidacr;
    if let Some(secret) = secret {
        appidacr = "1";
        check_secret(app, &secret, now, cfg)?;
    } else if let Some(assertion) = assertion {
        appidacr = "2";
        match form.get("client_assertion_type") {
            Some(t) if t == JWT_BEARER => {}
            Some(t) => {
                return Err(TokenError::new(
                    400,
                    "invalid_request",
                    700023,
                    format!("Client assertion type '{t}' is not supported. Expected '{JWT_BEARER}'."),
                ))
            }
            None => return Err(missing("client_assertion_type")),
        }
        check_assertion(&dir.issuers, app, assertion, &client_id)?;
    } else {
        return Err(TokenError::new(
            cfg.assumptions.missing_credential_status,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    }

    let (app_id, sp_id, roles) = (
        app.app_id,
        sp.id,
        sp.graph_roles.iter().cloned().collect::<Vec<_>>(),
    );
    let display = app.str_prop("displayName").unwrap_or_default().to_string();
    let (token, issued) = mint(
        dir,
        tenant_id,
        app_id,
        sp_id,
        roles,
        &display,
        appidacr,
        now,
        cfg.token_lifetime,
    );
    let expires_in = (issued.expires - now).num_seconds();
    Ok(match resource {
        None => json!({
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": token,
        }),
        // v1: the documented example carries the numbers as strings (contract §1.2).
        Some(resource) => json!({
            "token_type": "Bearer",
            "expires_in": expires_in.to_string(),
            "ext_expires_in": expires_in.to_string(),
            "expires_on": issued.expires.timestamp().to_string(),
            "not_before": issued.not_before.timestamp().to_string(),
            "resource": resource,
            "access_token": token,
        }),
    })
}

fn check_secret(
    app: &super::state::App,
    secret: &str,
    now: DateTime<Utc>,
    cfg: &EmulatorConfig,
) -> Result<(), TokenError> {
    let invalid = || {
        TokenError::new(
            401,
            "invalid_client",
            7000215,
            format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.", app.app_id),
        )
    };
    let expired = || {
        TokenError::new(
            401,
            "invalid_client",
            7000222,
            format!("The provided client secret keys for app '{}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.", app.app_id),
        )
    };
    let matching: Vec<_> = app.passwords.iter().filter(|p| p.secret == secret).collect();
    if matching.is_empty() {
        return Err(invalid());
    }
    if matching
        .iter()
        .any(|p| now >= p.active_at && now >= p.start && now < p.end)
    {
        return Ok(());
    }
    if matching.iter().all(|p| now >= p.end) {
        return Err(expired());
    }
    // Matches, but not active yet (activation delay or a future startDateTime).
    Err(match cfg.assumptions.inactive_secret_error {
        InactiveSecretError::InvalidSecret => invalid(),
        InactiveSecretError::KeysExpired => expired(),
    })
}

/// Decode a JWT's payload without checking its signature.
pub(crate) fn jwt_claims(jwt: &str) -> Option<serde_json::Map<String, Value>> {
    let parts: Vec<&str> = jwt.trim().split('.').collect();
    if parts.len() != 3 {
        return None;
    }
    let payload = URL_SAFE_NO_PAD.decode(parts[1].trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&payload).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn check_assertion(
    issuers: &super::issuers::Issuers,
    app: &super::state::App,
    assertion: &str,
    client_id: &str,
) -> Result<(), TokenError> {
    let claims = (assertion.len() <= super::issuers::MAX_ASSERTION_BYTES)
        .then(|| jwt_claims(assertion))
        .flatten();
    let Some(claims) = claims else {
        return Err(TokenError::new(
            400,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        ));
    };
    let s = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (iss, sub) = (s("iss"), s("sub"));
    let auds: Vec<String> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    };
    // Validity window against real time (see the module docs), 5 minutes of skew.
    let real_now = Utc::now().timestamp();
    let exp = claims.get("exp").and_then(Value::as_i64);
    let nbf = claims.get("nbf").and_then(Value::as_i64);
    if exp.is_none_or(|e| e + 300 < real_now) || nbf.is_some_and(|n| n - 300 > real_now) {
        return Err(TokenError::new(
            400,
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
                DateTime::from_timestamp(real_now, 0).map(|d| d.to_rfc3339()).unwrap_or_default(),
                nbf.and_then(|n| DateTime::from_timestamp(n, 0)).map(|d| d.to_rfc3339()).unwrap_or_default(),
                exp.and_then(|n| DateTime::from_timestamp(n, 0)).map(|d| d.to_rfc3339()).unwrap_or_default(),
            ),
        ));
    }
    if iss == client_id && sub == client_id {
        // A certificate assertion: the emulator models no keyCredentials.
        return Err(TokenError::new(
            401,
            "invalid_client",
            700027,
            "The certificate with identifier used to sign the client assertion is not registered on application.",
        ));
    }
    let matched = app
        .fics
        .iter()
        .any(|f| f.issuer == iss && f.subject == sub && f.audiences.iter().any(|a| auds.contains(a)));
    if !matched {
        return Err(no_matching_fic(&iss, &sub, &auds));
    }
    check_signature(issuers, &iss, assertion)
}

/// The issuer's keys verify the assertion (contract §1.3). Codes and statuses UNVERIFIED:
/// 90061 is what azure-workload-identity troubleshooting guides report when Entra cannot
/// read the issuer's discovery document; 50027 is the documented "invalid JWT token"
/// code, whose reference text lists a failed signature verification among its causes.
fn check_signature(issuers: &super::issuers::Issuers, iss: &str, assertion: &str) -> Result<(), TokenError> {
    use super::issuers::SignatureError;
    match super::issuers::verify(issuers, iss, assertion) {
        Ok(()) => Ok(()),
        Err(SignatureError::UnknownIssuer) => Err(TokenError::new(
            400,
            "invalid_request",
            90061,
            format!("Request to External OIDC endpoint failed. Unable to retrieve the signing keys of issuer '{iss}'."),
        )),
        Err(SignatureError::Invalid(why)) => Err(TokenError::new(
            400,
            "invalid_request",
            50027,
            format!("JWT token is invalid or malformed: the token from issuer '{iss}' failed signature verification ({why})."),
        )),
    }
}

fn no_matching_fic(iss: &str, sub: &str, auds: &[String]) -> TokenError {
    TokenError::new(
        400,
        "invalid_request",
        70021,
        format!(
            "No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{}'. https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation",
            auds.join(",")
        ),
    )
}

/// Issue an access token for an app (its service principal `sp_id`) and remember it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mint(
    dir: &mut Directory,
    tenant: Uuid,
    app_id: Uuid,
    sp_id: Uuid,
    roles: Vec<String>,
    display_name: &str,
    appidacr: &str,
    now: DateTime<Utc>,
    lifetime: std::time::Duration,
) -> (String, IssuedToken) {
    dir.prune_tokens(now);
    let iat = now.timestamp();
    let expires = now + TimeDelta::from_std(lifetime).unwrap_or(TimeDelta::seconds(3599));
    let not_before = now - TimeDelta::minutes(5);
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": "graph-emulator"});
    let claims = json!({
        "aud": "https://graph.microsoft.com",
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": iat,
        "nbf": not_before.timestamp(),
        "exp": expires.timestamp(),
        "app_displayname": display_name,
        "appid": app_id.to_string(),
        "appidacr": appidacr,
        "idp": format!("https://sts.windows.net/{tenant}/"),
        "idtyp": "app",
        "oid": sp_id.to_string(),
        "roles": roles,
        "sub": sp_id.to_string(),
        "tid": tenant.to_string(),
        "uti": URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes()),
        "ver": "1.0",
    });
    let mut sig = [0u8; 64];
    rand::thread_rng().fill_bytes(&mut sig);
    let token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    );
    let issued = IssuedToken {
        tenant,
        app_id,
        sp_id,
        roles,
        not_before,
        expires,
    };
    dir.tokens.insert(token.clone(), issued.clone());
    (token, issued)
}

/// Validate `Authorization: Bearer …` on a Graph request (contract §2.1 401s).
pub(crate) fn authenticate(
    dir: &Directory,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Result<Caller, GraphError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let token = match value.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        _ if value.trim().is_empty() => return Err(GraphError::unauthorized("Access token is empty.")),
        _ => "",
    };
    if token.is_empty() {
        return Err(GraphError::unauthorized("Access token is empty."));
    }
    if token.split('.').count() != 3 || jwt_claims(token).is_none() {
        return Err(GraphError::unauthorized(
            "CompactToken parsing failed with error code: 80049217",
        ));
    }
    let Some(t) = dir.tokens.get(token) else {
        return Err(GraphError::unauthorized(
            "Access token validation failure. Invalid signature.",
        ));
    };
    if now >= t.expires || now < t.not_before {
        return Err(GraphError::unauthorized(
            "Access token has expired or is not yet valid.",
        ));
    }
    if !dir.tenants.contains_key(&t.tenant) {
        return Err(GraphError::unauthorized(
            "Access token validation failure. Invalid tenant.",
        ));
    }
    Ok(Caller {
        tenant: t.tenant,
        app_id: t.app_id,
        sp_id: t.sp_id,
        roles: t.roles.clone(),
    })
}

/// The `WWW-Authenticate` value of Graph 401s (contract §2.1).
pub(crate) fn www_authenticate(base_url: &str) -> String {
    format!(
        "Bearer realm=\"\", authorization_uri=\"{base_url}/common/oauth2/authorize\", client_id=\"{GRAPH_APP_ID}\""
    )
}

/// The OpenID configuration document for a tenant, so MSAL-style clients that discover
/// endpoints find the emulator's token endpoint.
pub(crate) fn openid_configuration(base_url: &str, tenant: Uuid, v2: bool) -> Value {
    if v2 {
        json!({
            "token_endpoint": format!("{base_url}/{tenant}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{base_url}/{tenant}/discovery/v2.0/keys"),
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "issuer": format!("{base_url}/{tenant}/v2.0"),
            "authorization_endpoint": format!("{base_url}/{tenant}/oauth2/v2.0/authorize"),
            "tenant_region_scope": "EU",
        })
    } else {
        json!({
            "token_endpoint": format!("{base_url}/{tenant}/oauth2/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{base_url}/common/discovery/keys"),
            "issuer": format!("https://sts.windows.net/{tenant}/"),
            "authorization_endpoint": format!("{base_url}/{tenant}/oauth2/authorize"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_resource_forms() {
        let base = &["https://127.0.0.1:1234"];
        assert!(is_graph_resource("https://graph.microsoft.com", base));
        assert!(is_graph_resource("https://graph.microsoft.com/", base));
        assert!(is_graph_resource(GRAPH_APP_ID, base));
        assert!(is_graph_resource("https://127.0.0.1:1234/", base));
        assert!(!is_graph_resource("https://management.azure.com", base));
    }

    #[test]
    fn basic_auth_is_form_decoded() {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", STANDARD.encode("id:a%2Bb+c"));
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        assert_eq!(basic_credentials(&h), Some(("id".into(), "a+b c".into())));
    }
}
