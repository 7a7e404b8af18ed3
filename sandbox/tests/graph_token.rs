//! Contract tests for the token endpoints: contract §1 (checklist 1 and 4), through plain
//! HTTP.

mod graph_support;

use std::time::Duration;

use graph_support::*;
use sandbox::graph::{EmulatorConfig, InactiveSecretError, TestIssuer, GRAPH_APP_ID};
use serde_json::{json, Value};

const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

fn cc<'a>(client_id: &'a str, secret: &'a str, scope: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", secret),
        ("scope", scope),
    ]
}

/// Contract §1.1 error shape: `AADSTS<code>:` prefix, `\r\n`-joined trace/correlation/
/// timestamp lines, `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`.
fn assert_token_error(r: &Resp, status: u16, error: &str, code: u64) {
    assert_eq!(r.status, status, "{}", r.text);
    let b = &r.body;
    assert_eq!(b["error"], error, "{}", r.text);
    assert_eq!(b["error_codes"], json!([code]));
    let desc = b["error_description"].as_str().unwrap();
    assert!(desc.starts_with(&format!("AADSTS{code}: ")), "{desc}");
    let trace = b["trace_id"].as_str().unwrap();
    let correlation = b["correlation_id"].as_str().unwrap();
    let ts = b["timestamp"].as_str().unwrap();
    assert!(
        desc.ends_with(&format!(
            "\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {ts}"
        )),
        "{desc}"
    );
    // "2016-01-09 02:02:12Z"
    assert!(
        chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%SZ").is_ok(),
        "{ts}"
    );
    assert!(b["error_uri"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/error?code={code}")));
    assert_eq!(r.header("x-ms-request-id"), Some(trace));
}

#[tokio::test]
async fn s1_1_checklist1_v2_client_secret_returns_bearer_3599_and_ext_expires_in() {
    let env = Env::new().await;
    let r = env
        .token_form(
            &env.admin.tenant_id,
            &cc(&env.admin.client_id, &env.admin.client_secret, GRAPH_SCOPE),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], json!(3599), "an integer in v2");
    assert_eq!(r.body["ext_expires_in"], json!(3599));
    assert!(
        r.body.get("refresh_token").is_none(),
        "client credentials never return a refresh token"
    );
    let token = r.body["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "JWT-shaped");
    // The token works on Graph.
    let g = env
        .call_as(Some(token), reqwest::Method::GET, "/applications", None, &[])
        .await;
    assert_eq!(g.status, 200, "{}", g.text);
}

#[tokio::test]
async fn s1_1_http_basic_client_authentication_is_accepted() {
    let env = Env::new().await;
    let r = read(
        env.http
            .post(env.emu.token_url(&env.admin.tenant_id))
            .basic_auth(&env.admin.client_id, Some(&env.admin.client_secret))
            .form(&[("grant_type", "client_credentials"), ("scope", GRAPH_SCOPE)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn s1_1_tenant_is_addressable_by_guid_and_by_domain_name() {
    let env = Env::new().await;
    let r = env
        .token_form(
            &env.admin.tenant_domain,
            &cc(&env.admin.client_id, &env.admin.client_secret, GRAPH_SCOPE),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = env
        .token_form(
            "nosuch.onmicrosoft.com",
            &cc(&env.admin.client_id, &env.admin.client_secret, GRAPH_SCOPE),
        )
        .await;
    assert_token_error(&r, 400, "invalid_request", 90002);
}

#[tokio::test]
async fn s1_1_graph_scope_forms_accepted_and_bad_scope_is_invalid_scope_70011() {
    let env = Env::new().await;
    let own = format!("{}/.default", env.emu.graph_endpoint());
    let appid = format!("{GRAPH_APP_ID}/.default");
    for scope in [
        GRAPH_SCOPE,
        "https://graph.microsoft.com//.default",
        own.as_str(),
        appid.as_str(),
    ] {
        let r = env
            .token_form(
                &env.admin.tenant_id,
                &cc(&env.admin.client_id, &env.admin.client_secret, scope),
            )
            .await;
        assert_eq!(r.status, 200, "{scope}: {}", r.text);
    }
    for scope in [
        "https://management.azure.com/.default",
        "https://graph.microsoft.com/User.Read",
        "https://graph.microsoft.com/.default https://management.azure.com/.default",
    ] {
        let r = env
            .token_form(
                &env.admin.tenant_id,
                &cc(&env.admin.client_id, &env.admin.client_secret, scope),
            )
            .await;
        assert_token_error(&r, 400, "invalid_scope", 70011);
    }
}

#[tokio::test]
async fn s1_1_checklist1_wrong_secret_is_401_invalid_client_7000215_with_full_error_shape() {
    let env = Env::new().await;
    let r = read(
        env.http
            .post(env.emu.token_url(&env.admin.tenant_id))
            .header("client-request-id", "2f6a2d2a-6a55-4c4f-9d55-0f6cf1d6e0a1")
            .form(&cc(&env.admin.client_id, "not-the-secret", GRAPH_SCOPE))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_token_error(&r, 401, "invalid_client", 7000215);
    assert_eq!(
        r.body["correlation_id"], "2f6a2d2a-6a55-4c4f-9d55-0f6cf1d6e0a1",
        "correlation id = client-request-id"
    );
    // The secret's keyId sent in place of its value is the classic mistake (S3).
    let r = env
        .token_form(
            &env.admin.tenant_id,
            &cc(&env.admin.client_id, &env.admin.key_id, GRAPH_SCOPE),
        )
        .await;
    assert_token_error(&r, 401, "invalid_client", 7000215);
}

#[tokio::test]
async fn s1_1_unknown_client_is_700016_unauthorized_client() {
    let env = Env::new().await;
    let r = env
        .token_form(
            &env.admin.tenant_id,
            &cc("6e5f3c1e-0000-4000-8000-000000000000", "x", GRAPH_SCOPE),
        )
        .await;
    // HTTP status UNVERIFIED (§10): 400 by default, see Assumptions::unknown_client_status.
    assert_token_error(&r, 400, "unauthorized_client", 700016);
}

#[tokio::test]
async fn s1_1_checklist1_app_without_service_principal_is_401_7000229() {
    let env = Env::new().await;
    let app = env.create_app(json!({"displayName": "no-sp"})).await;
    let id = app["id"].as_str().unwrap();
    let app_id = app["appId"].as_str().unwrap();
    let pw = env
        .post(&format!("/applications/{id}/addPassword"), json!({}))
        .await;
    let secret = pw.body["secretText"].as_str().unwrap();
    let r = env.token_with_secret(app_id, secret).await;
    assert_token_error(&r, 401, "invalid_client", 7000229);
    // §5: once the service principal exists, the same request succeeds.
    assert_eq!(
        env.post("/servicePrincipals", json!({"appId": app_id}))
            .await
            .status,
        201
    );
    assert_eq!(env.token_with_secret(app_id, secret).await.status, 200);
}

#[tokio::test]
async fn s1_1_missing_credential_grant_and_parameters() {
    let env = Env::new().await;
    let t = env.admin.tenant_id.clone();
    let r = env
        .token_form(
            &t,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &env.admin.client_id),
                ("scope", GRAPH_SCOPE),
            ],
        )
        .await;
    assert_token_error(&r, 401, "invalid_client", 7000218);
    let r = env
        .token_form(
            &t,
            &[("grant_type", "password"), ("client_id", &env.admin.client_id)],
        )
        .await;
    assert_token_error(&r, 400, "unsupported_grant_type", 70003);
    let r = env.token_form(&t, &[("client_id", &env.admin.client_id)]).await;
    assert_token_error(&r, 400, "invalid_request", 900144);
    let r = env
        .token_form(
            &t,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &env.admin.client_id),
            ],
        )
        .await;
    assert_token_error(&r, 400, "invalid_request", 900144);
}

#[tokio::test]
async fn s1_2_v1_endpoint_takes_resource_and_returns_numbers_as_strings() {
    let env = Env::new().await;
    for resource in [
        "https://graph.microsoft.com",
        "https://graph.microsoft.com/",
        GRAPH_APP_ID,
    ] {
        let r = read(
            env.http
                .post(env.emu.token_url_v1(&env.admin.tenant_id))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", env.admin.client_id.as_str()),
                    ("client_secret", env.admin.client_secret.as_str()),
                    ("resource", resource),
                ])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "{resource}: {}", r.text);
        assert_eq!(r.body["token_type"], "Bearer");
        assert_eq!(r.body["expires_in"], "3599", "v1 numbers are JSON strings");
        assert_eq!(r.body["resource"], resource);
        let on: i64 = r.body["expires_on"].as_str().unwrap().parse().unwrap();
        let nbf: i64 = r.body["not_before"].as_str().unwrap().parse().unwrap();
        assert!(on > nbf);
        let g = env
            .call_as(
                r.body["access_token"].as_str(),
                reqwest::Method::GET,
                "/applications",
                None,
                &[],
            )
            .await;
        assert_eq!(g.status, 200);
    }
    // v1 error body: the v2 shape (UNVERIFIED, §10).
    let r = read(
        env.http
            .post(env.emu.token_url_v1(&env.admin.tenant_id))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", env.admin.client_id.as_str()),
                ("client_secret", env.admin.client_secret.as_str()),
                ("resource", "https://management.azure.com"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_token_error(&r, 400, "invalid_resource", 500011);
}

const ISSUER: &str = "https://oidc.example/cluster/";
const EXCHANGE: &str = "api://AzureADTokenExchange";

/// An app with a service principal and one FIC for `system:serviceaccount:ns1:myclient` at
/// [`ISSUER`]; the issuer's keys are registered (as a test does with the apiserver's JWKS).
async fn fic_app(env: &Env) -> (Value, TestIssuer) {
    let app = env.create_app(json!({"displayName": "wi"})).await;
    let r = env
        .post("/servicePrincipals", json!({"appId": app["appId"]}))
        .await;
    assert_eq!(r.status, 201);
    let r = env
        .post(
            &format!(
                "/applications/{}/federatedIdentityCredentials",
                app["id"].as_str().unwrap()
            ),
            json!({"name": "ns1-myclient", "issuer": ISSUER,
                   "subject": "system:serviceaccount:ns1:myclient", "audiences": [EXCHANGE]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let issuer = TestIssuer::new(ISSUER);
    let r = env
        .http
        .put(format!("{}/_emulator/issuers", env.emu.base_url()))
        .json(&json!({"issuer": ISSUER, "jwks": issuer.jwks()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    (app, issuer)
}

fn assertion_form<'a>(client_id: &'a str, assertion: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", GRAPH_SCOPE),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion),
    ]
}

async fn exchange(env: &Env, app: &Value, assertion: &str) -> Resp {
    env.token_form(
        &env.admin.tenant_id,
        &assertion_form(app["appId"].as_str().unwrap(), assertion),
    )
    .await
}

/// Contract §1.3 [S1, S8]: a signed assertion whose iss/sub/aud match a FIC gets a token;
/// the access token says it was obtained with a client assertion (`appidacr` 2).
#[tokio::test]
async fn s1_3_federated_assertion_matching_a_fic_gets_a_token() {
    let env = Env::new().await;
    let (app, issuer) = fic_app(&env).await;
    let r = exchange(&env, &app, &issuer.service_account_token("ns1", "myclient", 600)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.body["access_token"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["appidacr"], "2");
    assert_eq!(claims["appid"], app["appId"]);
}

/// Contract §1.1 table, OBS [S8]: one code, 70021, for every iss/sub/aud mismatch, naming
/// the presented values; another ServiceAccount, another namespace, another audience and
/// another issuer are all refused.
#[tokio::test]
async fn s1_3_assertion_matching_no_fic_is_400_invalid_request_70021() {
    let env = Env::new().await;
    let (app, issuer) = fic_app(&env).await;
    let r = exchange(&env, &app, &issuer.service_account_token("ns1", "other", 600)).await;
    assert_token_error(&r, 400, "invalid_request", 70021);
    let desc = r.body["error_description"].as_str().unwrap();
    assert!(desc.contains(&format!("Assertion Issuer: '{ISSUER}'")), "{desc}");
    assert!(
        desc.contains("Assertion Subject: 'system:serviceaccount:ns1:other'"),
        "{desc}"
    );
    assert!(
        desc.contains(&format!("Assertion Audience: '{EXCHANGE}'")),
        "{desc}"
    );

    let other_ns = issuer.service_account_token("ns2", "myclient", 600);
    assert_token_error(
        &exchange(&env, &app, &other_ns).await,
        400,
        "invalid_request",
        70021,
    );
    let now = epoch();
    let other_aud = issuer.sign(json!({"sub": "system:serviceaccount:ns1:myclient",
        "aud": ["https://kubernetes.default.svc"], "exp": now + 600, "nbf": now}));
    assert_token_error(
        &exchange(&env, &app, &other_aud).await,
        400,
        "invalid_request",
        70021,
    );
    let other_issuer = TestIssuer::new("https://oidc.example/other/");
    let r = exchange(
        &env,
        &app,
        &other_issuer.service_account_token("ns1", "myclient", 600),
    )
    .await;
    assert_token_error(&r, 400, "invalid_request", 70021);
}

/// Contract §1.3: Entra verifies the assertion with the issuer's keys. A token signed by
/// another key for the same issuer, or with its claims changed, is refused (50027,
/// UNVERIFIED code and status); an issuer whose keys cannot be read is refused (90061,
/// UNVERIFIED status).
#[tokio::test]
async fn s1_3_assertion_signature_is_verified_with_the_issuers_keys() {
    let env = Env::new().await;
    let (app, issuer) = fic_app(&env).await;
    let impostor = TestIssuer::new(ISSUER);
    let r = exchange(
        &env,
        &app,
        &impostor.service_account_token("ns1", "myclient", 600),
    )
    .await;
    assert_token_error(&r, 400, "invalid_request", 50027);

    // The right signature over other claims.
    let genuine = issuer.service_account_token("ns1", "other", 600);
    let forged_claims = jwt(json!({"iss": ISSUER, "sub": "system:serviceaccount:ns1:myclient",
        "aud": [EXCHANGE], "exp": epoch() + 600}));
    let parts: Vec<&str> = genuine.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        forged_claims.split('.').nth(1).unwrap(),
        parts[2]
    );
    assert_token_error(
        &exchange(&env, &app, &forged).await,
        400,
        "invalid_request",
        50027,
    );

    // Unsigned (the old emulator accepted these).
    let unsigned = jwt(json!({"iss": ISSUER, "sub": "system:serviceaccount:ns1:myclient",
        "aud": [EXCHANGE], "exp": epoch() + 600}));
    assert_token_error(
        &exchange(&env, &app, &unsigned).await,
        400,
        "invalid_request",
        50027,
    );

    // A FIC whose issuer has no registered keys.
    let unknown = TestIssuer::new("https://oidc.example/unregistered/");
    let r = env
        .post(
            &format!(
                "/applications/{}/federatedIdentityCredentials",
                app["id"].as_str().unwrap()
            ),
            json!({"name": "unregistered", "issuer": unknown.issuer(),
                   "subject": "system:serviceaccount:ns1:myclient", "audiences": [EXCHANGE]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = exchange(&env, &app, &unknown.service_account_token("ns1", "myclient", 600)).await;
    assert_token_error(&r, 400, "invalid_request", 90061);
}

/// Contract §1.1 table: an assertion outside its nbf/exp window is AADSTS700024 (DOC [S4]);
/// a malformed one is 50027.
#[tokio::test]
async fn s1_3_expired_or_malformed_assertions_are_refused() {
    let env = Env::new().await;
    let (app, issuer) = fic_app(&env).await;
    let expired = issuer.service_account_token("ns1", "myclient", -3600);
    assert_token_error(
        &exchange(&env, &app, &expired).await,
        400,
        "invalid_client",
        700024,
    );
    assert_token_error(
        &exchange(&env, &app, "garbage").await,
        400,
        "invalid_request",
        50027,
    );
    let huge = "a".repeat(20 * 1024);
    assert_token_error(&exchange(&env, &app, &huge).await, 400, "invalid_request", 50027);
}

/// The control endpoint refuses what it cannot use.
#[tokio::test]
async fn issuer_registration_is_validated() {
    let env = Env::new().await;
    let put = |body: Value| {
        env.http
            .put(format!("{}/_emulator/issuers", env.emu.base_url()))
            .json(&body)
            .send()
    };
    let issuer = TestIssuer::new("https://ok.example");
    assert_eq!(
        put(json!({"issuer": "http://plain.example", "jwks": issuer.jwks()}))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        put(json!({"issuer": "https://ok.example", "jwks": {"keys": []}}))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        put(json!({"issuer": "https://ok.example", "jwks": issuer.jwks()}))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn s4_1_checklist4_new_secret_works_only_after_the_activation_delay() {
    // A frozen clock makes the delay exact: nothing moves until advance_clock.
    let cfg = EmulatorConfig::default()
        .with_clock_speed(0.0)
        .with_secret_activation_delay(Duration::from_secs(20));
    let env = Env::with_config(cfg).await;
    let (app, secret) = env.app_with_secret("delayed").await;
    let app_id = app["appId"].as_str().unwrap();
    let r = env.token_with_secret(app_id, &secret).await;
    assert_token_error(&r, 401, "invalid_client", 7000215);
    env.emu.advance_clock(Duration::from_secs(19));
    assert_eq!(env.token_with_secret(app_id, &secret).await.status, 401);
    env.emu.advance_clock(Duration::from_secs(1));
    assert_eq!(env.token_with_secret(app_id, &secret).await.status, 200);

    // The other observed error (S46) is one switch away.
    env.emu
        .update_config(|c| c.assumptions.inactive_secret_error = InactiveSecretError::KeysExpired);
    let pw = env
        .post(
            &format!("/applications/{}/addPassword", app["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    let r = env
        .token_with_secret(app_id, pw.body["secretText"].as_str().unwrap())
        .await;
    assert_token_error(&r, 401, "invalid_client", 7000222);
}

#[tokio::test]
async fn s4_1_checklist4_secret_works_only_until_its_end_date_time() {
    let env = Env::with_config(EmulatorConfig::default().with_clock_speed(0.0)).await;
    let (app, _) = env.app_with_secret("short").await;
    let end = (env.emu.now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let pw = env
        .post(
            &format!("/applications/{}/addPassword", app["id"].as_str().unwrap()),
            json!({"passwordCredential": {"displayName": "1h", "endDateTime": end}}),
        )
        .await;
    let secret = pw.body["secretText"].as_str().unwrap();
    let app_id = app["appId"].as_str().unwrap();
    assert_eq!(env.token_with_secret(app_id, secret).await.status, 200);
    env.emu.advance_clock(Duration::from_secs(3600));
    let r = env.token_with_secret(app_id, secret).await;
    assert_token_error(&r, 401, "invalid_client", 7000222);
}

#[tokio::test]
async fn s1_1_issued_token_expires_on_the_emulated_clock_and_graph_says_so() {
    let env = Env::with_config(EmulatorConfig::default().with_clock_speed(0.0)).await;
    let token = env.emu.token(&env.admin).await.unwrap();
    let ok = env
        .call_as(Some(&token), reqwest::Method::GET, "/applications", None, &[])
        .await;
    assert_eq!(ok.status, 200);
    env.emu.advance_clock(Duration::from_secs(3599));
    let r = env
        .call_as(Some(&token), reqwest::Method::GET, "/applications", None, &[])
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "InvalidAuthenticationToken");
    assert_eq!(
        r.body["error"]["message"],
        "Access token has expired or is not yet valid."
    );
    // A fresh token works again.
    let token = env.emu.token(&env.admin).await.unwrap();
    assert_eq!(
        env.call_as(Some(&token), reqwest::Method::GET, "/applications", None, &[])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn s1_token_endpoint_only_accepts_post_and_serves_openid_configuration() {
    let env = Env::new().await;
    let r = read(
        env.http
            .get(env.emu.token_url(&env.admin.tenant_id))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_token_error(&r, 400, "invalid_request", 900561);
    let url = format!(
        "{}/{}/v2.0/.well-known/openid-configuration",
        env.emu.base_url(),
        env.admin.tenant_domain
    );
    let r = read(env.http.get(url).send().await.unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["token_endpoint"], env.emu.token_url(&env.admin.tenant_id));
}
