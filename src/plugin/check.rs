//! `kubectl dcr check NAME | --all`: read the credential Secret with the caller's own
//! permissions and obtain a token at its `token_url` with a client_credentials grant.
//!
//! The secret value lives in a [`SecretString`] from the moment it is read: it goes into
//! the token request's form and nowhere else; the IdP's answer is searched for it before
//! anything of the answer is shown, and the access token is dropped unread.

use super::client::Target;
use super::error::{is_forbidden, is_not_found, Error};
use super::explain::{credential_secret_name, key_name};
use super::model::{self, Palette};
use super::status::one_line;
use crate::crd::decoded::Decoded;
use crate::crd::Application;
use crate::sensitive::SecretString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Most of a token endpoint's answer read (Entra's errors are about 1 KiB).
const MAX_RESPONSE: usize = 64 * 1024;
/// Most Applications one `check --all` checks (each costs a token request).
const MAX_APPLICATIONS: usize = 1000;

/// How to reach the token endpoint.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub ca_file: Option<PathBuf>,
    pub scope: Option<String>,
    pub request_timeout: Duration,
}

/// One Application's check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// `namespace/name`.
    pub application: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// The token endpoint's HTTP status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// OAuth `error` (`invalid_client`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The IdP's codes (`AADSTS7000215`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_codes: Vec<String>,
    /// What went wrong, in words (`error_description`'s first line, or why no request was made).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl CheckResult {
    fn failed(application: &str, message: impl Into<String>) -> Self {
        CheckResult {
            application: application.into(),
            ok: false,
            client_id: None,
            token_url: None,
            http_status: None,
            error: None,
            error_codes: vec![],
            message: Some(message.into()),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckSummary {
    pub checked: usize,
    pub ok: usize,
    pub failed: usize,
}

/// `check`'s answer, as `-o json|yaml` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub results: Vec<CheckResult>,
    pub summary: CheckSummary,
}

impl CheckReport {
    pub fn new(results: Vec<CheckResult>) -> Self {
        let ok = results.iter().filter(|r| r.ok).count();
        CheckReport {
            summary: CheckSummary {
                checked: results.len(),
                ok,
                failed: results.len().saturating_sub(ok),
            },
            results,
        }
    }

    pub fn healthy(&self) -> bool {
        self.summary.failed == 0
    }
}

/// Checks Application `name`, or every Application in scope.
pub async fn run(target: &Target, name: Option<&str>, opts: &CheckOptions) -> Result<CheckReport, Error> {
    let http = http_client(opts)?;
    let apps = applications(target, name).await?;
    let mut results = Vec::with_capacity(apps.len());
    for app in &apps {
        results.push(match app {
            Decoded(Ok(app)) => check_one(target, &http, app, opts).await,
            Decoded(Err(e)) => CheckResult::failed(
                &format!(
                    "{}/{}",
                    e.metadata.namespace.as_deref().unwrap_or_default(),
                    e.metadata.name.as_deref().unwrap_or_default()
                ),
                format!("the Application does not decode: {}", e.error),
            ),
        });
    }
    Ok(CheckReport::new(results))
}

async fn applications(target: &Target, name: Option<&str>) -> Result<Vec<Decoded<Application>>, Error> {
    if let Some(name) = name {
        let api: Api<Decoded<Application>> = Api::namespaced(target.client.clone(), &target.namespace);
        return match api.get(name).await {
            Ok(a) => Ok(vec![a]),
            Err(e) if is_not_found(&e) => Err(Error::NotFound {
                kind: "Application",
                name: format!("{}/{name}", target.namespace),
            }),
            Err(e) => Err(Error::api(
                format!("reading Application {}/{name}", target.namespace),
                e,
            )),
        };
    }
    let api: Api<Decoded<Application>> = match target.scope.namespace() {
        Some(ns) => Api::namespaced(target.client.clone(), ns),
        None => Api::all(target.client.clone()),
    };
    let mut items = api
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::api("listing Applications", e))?
        .items;
    if items.len() > MAX_APPLICATIONS {
        return Err(Error::Usage(format!(
            "{} Applications in scope: check at most {MAX_APPLICATIONS} at once (use -n)",
            items.len()
        )));
    }
    items.sort_by_key(|d| (d.metadata_ns(), d.metadata_name()));
    Ok(items)
}

trait DecodedMeta {
    fn metadata_ns(&self) -> String;
    fn metadata_name(&self) -> String;
}

impl DecodedMeta for Decoded<Application> {
    fn metadata_ns(&self) -> String {
        match &self.0 {
            Ok(a) => a.namespace().unwrap_or_default(),
            Err(e) => e.metadata.namespace.clone().unwrap_or_default(),
        }
    }
    fn metadata_name(&self) -> String {
        match &self.0 {
            Ok(a) => a.name_any(),
            Err(e) => e.metadata.name.clone().unwrap_or_default(),
        }
    }
}

fn http_client(opts: &CheckOptions) -> Result<reqwest::Client, Error> {
    let mut builder = reqwest::Client::builder()
        .timeout(opts.request_timeout)
        .connect_timeout(opts.request_timeout.min(Duration::from_secs(10)))
        // A redirect would take the form elsewhere: the token endpoint answers directly.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &opts.ca_file {
        let pem = std::fs::read(path).map_err(|source| Error::ReadFile {
            path: path.clone(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::Usage(format!("--ca-file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(Error::Usage(format!(
                "--ca-file {}: no certificate in it",
                path.display()
            )));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| Error::Usage(format!("building the HTTP client: {e}")))
}

/// The credentials read from the Secret.
struct Credentials {
    client_id: String,
    client_secret: SecretString,
    token_url: String,
    scope: Option<String>,
}

fn read_credentials(app: &Application, secret: &Secret) -> Result<Credentials, String> {
    let data = secret.data.clone().unwrap_or_default();
    let field = |f: &str| -> Result<String, String> {
        let key = key_name(app, f);
        let bytes = data
            .get(&key)
            .ok_or_else(|| format!("the Secret has no key {key}"))?;
        String::from_utf8(bytes.0.clone()).map_err(|_| format!("the Secret's key {key} is not UTF-8"))
    };
    let credentials = Credentials {
        client_id: field("client_id")?,
        client_secret: SecretString::new(field("client_secret")?),
        token_url: field("token_url")?,
        scope: field("scope").ok().filter(|s| !s.trim().is_empty()),
    };
    if credentials.client_secret.is_empty() {
        return Err("the Secret's client_secret is empty".into());
    }
    Ok(credentials)
}

async fn check_one(
    target: &Target,
    http: &reqwest::Client,
    app: &Application,
    opts: &CheckOptions,
) -> CheckResult {
    let ns = app.namespace().unwrap_or_default();
    let what = format!("{ns}/{}", app.name_any());
    let secret_name = credential_secret_name(app);
    let secrets: Api<Secret> = Api::namespaced(target.client.clone(), &ns);
    let secret = match secrets.get(&secret_name).await {
        Ok(s) => s,
        Err(e) if is_not_found(&e) => {
            return CheckResult::failed(&what, format!("Secret {secret_name} not found"))
        }
        Err(e) if is_forbidden(&e) => {
            return CheckResult::failed(
                &what,
                format!("you may not read Secret {secret_name} (check uses your own permissions)"),
            )
        }
        Err(e) => return CheckResult::failed(&what, format!("reading Secret {secret_name}: {e}")),
    };
    let creds = match read_credentials(app, &secret) {
        Ok(c) => c,
        Err(why) => return CheckResult::failed(&what, format!("Secret {secret_name}: {why}")),
    };
    drop(secret);
    let mut result = CheckResult {
        application: what,
        ok: false,
        client_id: Some(model::bounded(&creds.client_id, 64)),
        token_url: Some(model::bounded(&creds.token_url, 512)),
        http_status: None,
        error: None,
        error_codes: vec![],
        message: None,
    };
    let scope = opts.scope.clone().or(creds.scope.clone());
    match token_request(http, &creds, scope.as_deref()).await {
        Ok(answer) => {
            result.http_status = Some(answer.status);
            result.ok = answer.ok;
            if !answer.ok {
                result.error = answer.error.map(|e| redact(&e, &creds.client_secret));
                result.error_codes = answer.codes;
                result.message = answer.description.map(|d| redact(&d, &creds.client_secret));
            }
        }
        Err(why) => result.message = Some(redact(&why, &creds.client_secret)),
    }
    result
}

/// What the token endpoint said (never the token).
struct TokenAnswer {
    status: u16,
    ok: bool,
    error: Option<String>,
    description: Option<String>,
    codes: Vec<String>,
}

async fn token_request(
    http: &reqwest::Client,
    creds: &Credentials,
    scope: Option<&str>,
) -> Result<TokenAnswer, String> {
    let url = url::Url::parse(&creds.token_url).map_err(|e| format!("token_url is not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err("token_url is not https: the secret is not sent".into());
    }
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", creds.client_id.as_str()),
        ("client_secret", creds.client_secret.expose()),
    ];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    let mut resp = http
        .post(url)
        .form(&form)
        .send()
        .await
        .map_err(|e| format!("token request: {e}"))?;
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("token response: {e}"))? {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(format!("token response larger than {MAX_RESPONSE} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(parse_answer(status.as_u16(), &body))
}

/// Reads a token endpoint's answer (pure): success needs a 2xx with an `access_token`.
fn parse_answer(status: u16, body: &[u8]) -> TokenAnswer {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let has_token = json
        .get("access_token")
        .and_then(|t| t.as_str())
        .is_some_and(|t| !t.is_empty());
    let ok = (200..300).contains(&status) && has_token;
    let error = json
        .get("error")
        .and_then(|e| e.as_str())
        .map(|e| model::bounded(e, 128));
    // Entra appends trace, correlation and timestamp lines: per-request ids, not the error.
    let description = json
        .get("error_description")
        .and_then(|d| d.as_str())
        .and_then(|d| d.lines().next())
        .map(|d| model::bounded(d.trim(), 512));
    let mut codes: Vec<String> = json
        .get("error_codes")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_u64)
        .take(8)
        .map(|c| format!("AADSTS{c}"))
        .collect();
    for c in model::idp_codes(description.as_deref()) {
        if !codes.contains(&c) {
            codes.push(c);
        }
    }
    let description = match (&description, ok, json.is_null()) {
        (None, false, true) => Some(format!("HTTP {status}, not a JSON answer")),
        (None, false, false) if !has_token && (200..300).contains(&status) => {
            Some("no access_token in the answer".into())
        }
        _ => description,
    };
    TokenAnswer {
        status,
        ok,
        error,
        description,
        codes,
    }
}

/// `text` with every occurrence of the secret replaced (an IdP that echoes the request).
fn redact(text: &str, secret: &SecretString) -> String {
    if secret.expose().is_empty() {
        return text.to_string();
    }
    text.replace(secret.expose(), "<redacted>")
}

/// The report as text (pure).
pub fn render_text(report: &CheckReport, palette: Palette, with_summary: bool) -> String {
    let mut out = String::new();
    for r in &report.results {
        if r.ok {
            let client = r.client_id.as_deref().unwrap_or_default();
            let url = r.token_url.as_deref().unwrap_or_default();
            out.push_str(&format!(
                "Application {}: {} (client {client}, token from {url})\n",
                r.application,
                palette.good("ok")
            ));
            continue;
        }
        let mut parts = Vec::new();
        if let Some(e) = &r.error {
            parts.push(e.clone());
        }
        if !r.error_codes.is_empty() {
            parts.push(r.error_codes.join(","));
        }
        if let Some(s) = r.http_status {
            parts.push(format!("HTTP {s}"));
        }
        let head = if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        };
        let message = r.message.as_deref().map(one_line).unwrap_or_default();
        out.push_str(&format!(
            "Application {}: {}{head}: {message}\n",
            r.application,
            palette.bad("FAILED")
        ));
    }
    if with_summary {
        let s = &report.summary;
        let text = format!("{} checked: {} ok, {} failed", s.checked, s.ok, s.failed);
        out.push_str(&if s.failed == 0 {
            palette.good(&text)
        } else {
            palette.bad(&text)
        });
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entra_error_is_read_without_its_trace_lines() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: t\r\nCorrelation ID: c\r\nTimestamp: 2026-12-02 00:00:00Z","error_codes":[7000215]}"#;
        let a = parse_answer(401, body);
        assert!(!a.ok);
        assert_eq!(a.error.as_deref(), Some("invalid_client"));
        assert_eq!(
            a.description.as_deref(),
            Some("AADSTS7000215: Invalid client secret provided.")
        );
        assert_eq!(a.codes, vec!["AADSTS7000215"]);
    }

    #[test]
    fn success_needs_a_token() {
        assert!(parse_answer(200, br#"{"access_token":"eyJ.x.y","token_type":"Bearer"}"#).ok);
        let empty = parse_answer(200, b"{}");
        assert!(!empty.ok);
        assert_eq!(
            empty.description.as_deref(),
            Some("no access_token in the answer")
        );
        assert_eq!(
            parse_answer(502, b"<html>").description.as_deref(),
            Some("HTTP 502, not a JSON answer")
        );
    }

    #[test]
    fn an_echoed_secret_is_redacted() {
        let s = SecretString::new("s3cr3t-value");
        assert_eq!(
            redact("bad secret s3cr3t-value here", &s),
            "bad secret <redacted> here"
        );
    }

    #[test]
    fn the_summary_counts() {
        let ok = CheckResult {
            ok: true,
            client_id: Some("c".into()),
            token_url: Some("https://idp/t".into()),
            ..CheckResult::failed("ns/a", "")
        };
        let mut bad = CheckResult::failed("ns/b", "AADSTS7000215: Invalid client secret provided.");
        bad.error = Some("invalid_client".into());
        bad.error_codes = vec!["AADSTS7000215".into()];
        bad.http_status = Some(401);
        let report = CheckReport::new(vec![ok, bad]);
        assert!(!report.healthy());
        assert_eq!(
            render_text(&report, Palette::default(), true),
            "Application ns/a: ok (client c, token from https://idp/t)\n\
             Application ns/b: FAILED (invalid_client, AADSTS7000215, HTTP 401): AADSTS7000215: Invalid client secret provided.\n\
             2 checked: 1 ok, 1 failed\n"
        );
    }
}
