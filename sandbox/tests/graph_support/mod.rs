//! Helpers for the emulator's contract tests: plain reqwest calls (never the operator's
//! client), trusting the emulator's CA. Each test binary uses a subset.
#![allow(dead_code)]

use std::time::Duration;

use reqwest::{header::HeaderMap, Method};
use sandbox::graph::{AdminApp, AppSpec, EmulatorConfig, GraphEmulator, GraphPermission, TenantSpec};
use serde_json::{json, Value};

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON, `Null` when empty or not JSON.
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `error.code` of a Graph error envelope.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

pub async fn read(resp: reqwest::Response) -> Resp {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("reading the body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        text,
        body,
    }
}

/// An emulator with one tenant, an admin app (`Application.ReadWrite.All` unless said
/// otherwise), a client trusting the CA, and the admin's token.
pub struct Env {
    pub emu: GraphEmulator,
    pub admin: AdminApp,
    pub http: reqwest::Client,
    pub token: String,
}

impl Env {
    pub async fn new() -> Env {
        Self::with(
            EmulatorConfig::default(),
            GraphPermission::ApplicationReadWriteAll,
        )
        .await
    }

    pub async fn with_config(cfg: EmulatorConfig) -> Env {
        Self::with(cfg, GraphPermission::ApplicationReadWriteAll).await
    }

    pub async fn with(cfg: EmulatorConfig, permission: GraphPermission) -> Env {
        let emu = GraphEmulator::start(cfg).await.expect("emulator starts");
        let tenant = emu.seed_tenant(TenantSpec::default());
        let admin = emu.seed_admin_app(&tenant.id, permission);
        let http = emu.http_client();
        let token = emu.mint_token(&admin);
        Env {
            emu,
            admin,
            http,
            token,
        }
    }

    /// A second app in the same tenant holding `permission`, and its token.
    pub fn another_app(&self, permission: Option<GraphPermission>) -> (AdminApp, String) {
        let spec = match permission {
            Some(p) => AppSpec::admin(p),
            None => AppSpec {
                graph_permissions: vec![],
                ..AppSpec::default()
            },
        };
        let app = self.emu.seed_app(&self.admin.tenant_id, spec);
        let token = self.emu.mint_token(&app);
        (app, token)
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.emu.graph_v1())
        }
    }

    /// A Graph call with an explicit token and extra headers.
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        read(req.send().await.expect("request sent")).await
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        self.call_as(Some(&self.token), method, path, body, headers).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None, &[]).await
    }

    pub async fn get_eventual(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None, &[("ConsistencyLevel", "eventual")])
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(body), &[]).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(body), &[]).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.call(Method::DELETE, path, None, &[]).await
    }

    /// `POST /applications`, asserting 201; returns the body.
    pub async fn create_app(&self, body: Value) -> Value {
        let r = self.post("/applications", body).await;
        assert_eq!(r.status, 201, "create: {}", r.text);
        r.body
    }

    /// An app with a service principal and a password; returns (app, secret).
    pub async fn app_with_secret(&self, name: &str) -> (Value, String) {
        let app = self.create_app(json!({"displayName": name})).await;
        let sp = self
            .post("/servicePrincipals", json!({"appId": app["appId"]}))
            .await;
        assert_eq!(sp.status, 201, "{}", sp.text);
        let pw = self
            .post(
                &format!("/applications/{}/addPassword", app["id"].as_str().unwrap()),
                json!({}),
            )
            .await;
        assert_eq!(pw.status, 200, "{}", pw.text);
        (app, pw.body["secretText"].as_str().unwrap().to_string())
    }

    /// A v2 token request with these form fields.
    pub async fn token_form(&self, tenant: &str, fields: &[(&str, &str)]) -> Resp {
        read(
            self.http
                .post(self.emu.token_url(tenant))
                .form(fields)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// A client-credentials token request with a secret (v2, form).
    pub async fn token_with_secret(&self, client_id: &str, secret: &str) -> Resp {
        self.token_form(
            &self.admin.tenant_id,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("scope", "https://graph.microsoft.com/.default"),
            ],
        )
        .await
    }
}

/// An unsigned JWT with these claims (the emulator does not check assertion signatures).
pub fn jwt(claims: Value) -> String {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode("not-a-signature")
    )
}

/// Seconds since the epoch, real time.
pub fn epoch() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Wait until `f` returns `Some`, polling every 20 ms, failing after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
