//! Client-credentials token acquisition (OAuth 2.0 v2 endpoint, contract §1.1) and the
//! per-client token cache.
//!
//! # Why not `azure_identity`
//! `azure_identity` 1.0's `ClientSecretCredential` can target a custom authority host
//! (`ClientOptions::cloud = CloudConfiguration::Custom`, https only) and accepts a custom
//! transport, but it does not fit this operator:
//! - its default transport is `reqwest` 0.13 with the `rustls` feature, which builds
//!   `aws-lc-rs` (a C/cmake build this project keeps out); trusting an extra CA without it
//!   means switching its features off and writing an `azure_core::HttpClient` adapter over our
//!   `reqwest` 0.12 client — a second HTTP stack (`azure_core`, `typespec*`, `time`,
//!   `async-trait`, proc macros) for one form POST;
//! - its cache refreshes 5 minutes early with no knob, and cannot be invalidated, so a token
//!   Graph rejects with 401 (revoked, clock skew) cannot be replaced before it "expires";
//! - its errors are a message string: the AADSTS code, trace and correlation ids that the
//!   DcrProvider conditions need (InvalidClientSecret vs TenantNotFound vs Unreachable) would
//!   have to be parsed back out of text.
//!
//! The flow itself is one form POST, so it lives here in ~100 lines: one cached token per
//! client, refreshed [`GraphClientConfig::token_refresh_margin`] (3 minutes) before expiry,
//! fetched by one caller at a time (single flight: concurrent callers wait for that fetch and
//! share its result, success or failure), invalidated on a Graph 401.
//!
//! [`GraphClientConfig::token_refresh_margin`]: super::config::GraphClientConfig::token_refresh_margin

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;
use tracing::{debug, field, Instrument};
use url::Url;

use crate::sensitive::SecretString;

use super::config::ClientCredential;
use super::error::{classify_token_error, AadDiagnostics, TokenError, TokenErrorBody};
use super::observer::GraphObserver;
use super::retry::{random_jitter, CallClass, Decision, Outcome, RetryPolicy};

mod assertion;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A bearer token with its lifetime. `Debug` never shows the token.
#[derive(Clone, Debug)]
pub struct AccessToken {
    /// The bearer token.
    pub token: SecretString,
    /// When the server says it expires.
    pub expires_at: Instant,
    /// When the cache stops handing it out.
    pub refresh_at: Instant,
    /// Increases with every fetched token; used to invalidate exactly the token Graph rejected.
    pub generation: u64,
}

/// When a token obtained at `obtained` with lifetime `expires_in` must be refreshed: `margin`
/// early, but never earlier than half its lifetime (short-lived tokens stay usable).
pub fn refresh_deadline(obtained: Instant, expires_in: Duration, margin: Duration) -> Instant {
    let margin = margin.min(expires_in / 2);
    obtained + expires_in - margin
}

/// Where and as whom tokens are requested.
#[derive(Clone, Debug)]
pub struct TokenEndpoint {
    pub(crate) http: reqwest::Client,
    pub(crate) url: Url,
    pub(crate) scope: String,
    pub(crate) policy: RetryPolicy,
    pub(crate) observer: Arc<dyn GraphObserver>,
}

/// The token endpoint's success answer. `expires_in` arrives as a number (v2) or a string
/// (v1, and accepted by MSAL), contract §1.1–1.2.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(deserialize_with = "number_or_string")]
    expires_in: u64,
}

fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(u64),
        Str(String),
    }
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(n),
        NumOrStr::Str(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

impl TokenEndpoint {
    /// The token URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Requests a token for `client_id` with `credential`, retrying transient failures
    /// (429 with `Retry-After`, 5xx, transport) within the retry policy's bounds.
    pub async fn request(
        &self,
        client_id: &str,
        credential: &ClientCredential,
    ) -> Result<(SecretString, Duration), TokenError> {
        let span = tracing::debug_span!(
            "entra.token",
            op = "token",
            client_id = %client_id,
        );
        self.request_inner(client_id, credential).instrument(span).await
    }

    async fn request_inner(
        &self,
        client_id: &str,
        credential: &ClientCredential,
    ) -> Result<(SecretString, Duration), TokenError> {
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let attempt_span = tracing::debug_span!(
                "entra.token.attempt",
                attempt,
                status = field::Empty,
                trace_id = field::Empty,
                correlation_id = field::Empty,
            );
            let (err, outcome_status, retry_after) = match self
                .attempt(client_id, credential)
                .instrument(attempt_span)
                .await?
            {
                AttemptResult::Token(token, expires_in) => return Ok((token, expires_in)),
                AttemptResult::Transport { error, connect } => {
                    let kind = if connect { "connect" } else { "interrupted" };
                    self.observer.on_transport_error("token", kind);
                    (error, None, None)
                }
                AttemptResult::Failed {
                    error,
                    status,
                    retry_after,
                } => (error, Some(status), retry_after),
            };

            // Throttling, server errors and transport failures are retried; a 4xx (wrong
            // secret, unknown client or tenant) does not get better by repeating it now.
            let decision = match outcome_status {
                None => self.policy.decide(
                    CallClass::idempotent(),
                    &Outcome::Interrupted,
                    attempt,
                    start.elapsed(),
                    false,
                    random_jitter(),
                ),
                Some(status) if status == 429 || status >= 500 => self.policy.decide(
                    CallClass::idempotent(),
                    &Outcome::Response {
                        status,
                        retry_after,
                        detail_code: None,
                        message: "",
                    },
                    attempt,
                    start.elapsed(),
                    false,
                    random_jitter(),
                ),
                Some(_) => Decision::Stop(super::retry::StopReason::NotRetryable),
            };
            match decision {
                Decision::Retry { delay, reason } => {
                    debug!(attempt, ?delay, ?reason, error = %err, "token request failed; retrying");
                    self.observer.on_retry("token", reason_name(reason), delay);
                    tokio::time::sleep(delay).await;
                }
                Decision::Stop(super::retry::StopReason::MustWait { wait }) => {
                    // A long wait is not slept here: the caller requeues after it.
                    debug!(attempt, ?wait, error = %err, "token request failed; not waiting inline");
                    return Err(match err {
                        TokenError::Throttled { retry_after: None } => TokenError::Throttled {
                            retry_after: Some(wait),
                        },
                        other => other,
                    });
                }
                _ => {
                    debug!(attempt, reason = err.reason(), error = %err, "token request failed");
                    return Err(err);
                }
            }
        }
    }

    /// One POST to the token endpoint. `Err` only for failures that no retry can fix locally
    /// (unreadable assertion file, unparseable success answer).
    async fn attempt(
        &self,
        client_id: &str,
        credential: &ClientCredential,
    ) -> Result<AttemptResult, TokenError> {
        // The assertion file is re-read for every request (the kubelet rotates it).
        let (secret_field, secret_value) = match credential {
            ClientCredential::Secret(s) => ("client_secret", s.clone()),
            ClientCredential::AssertionFile(path) => ("client_assertion", assertion::read(path)?),
        };
        // Scoped: the serializer is not Send and must not live across the await below.
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials")
                .append_pair("client_id", client_id)
                .append_pair("scope", &self.scope);
            if secret_field == "client_assertion" {
                form.append_pair("client_assertion_type", JWT_BEARER);
            }
            form.append_pair(secret_field, secret_value.expose());
            SecretString::new(form.finish())
        };

        let result = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body.expose().to_string())
            .send()
            .await;
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                return Ok(AttemptResult::Transport {
                    error: TokenError::Unreachable(transport_message(&e)),
                    connect: e.is_connect(),
                })
            }
        };
        let status = resp.status().as_u16();
        self.observer.on_response("token", status);
        tracing::Span::current().record("status", status);
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| super::retry::parse_retry_after(v, chrono::Utc::now()));
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Ok(AttemptResult::Transport {
                    error: TokenError::Unreachable(transport_message(&e)),
                    connect: false,
                })
            }
        };
        if status == 200 {
            let parsed: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| {
                TokenError::unexpected(status, "unparseable token response", e.classify_name())
            })?;
            if let Some(tt) = &parsed.token_type {
                if !tt.eq_ignore_ascii_case("bearer") {
                    return Err(TokenError::unexpected(
                        status,
                        format!("unsupported token_type {tt:?}"),
                        "",
                    ));
                }
            }
            debug!(expires_in = parsed.expires_in, "token acquired");
            return Ok(AttemptResult::Token(
                SecretString::new(parsed.access_token),
                Duration::from_secs(parsed.expires_in),
            ));
        }
        let body: TokenErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
        let diag = AadDiagnostics::from_body(body, Some(secret_value.expose()));
        if let Some(t) = &diag.trace_id {
            tracing::Span::current().record("trace_id", t.as_str());
        }
        if let Some(c) = &diag.correlation_id {
            tracing::Span::current().record("correlation_id", c.as_str());
        }
        let error = if status == 429 {
            self.observer.on_throttle("token", retry_after);
            TokenError::Throttled { retry_after }
        } else if status >= 500 {
            TokenError::Unexpected {
                status,
                diagnostics: Box::new(diag),
            }
        } else {
            classify_token_error(status, diag)
        };
        Ok(AttemptResult::Failed {
            error,
            status,
            retry_after,
        })
    }
}

/// What one token request produced.
enum AttemptResult {
    Token(SecretString, Duration),
    Transport {
        error: TokenError,
        connect: bool,
    },
    Failed {
        error: TokenError,
        status: u16,
        retry_after: Option<std::time::Duration>,
    },
}

/// A transport error's text without the request URL's query (there is none on the token URL,
/// but Graph paging URLs carry skip tokens).
pub(crate) fn transport_message(e: &reqwest::Error) -> String {
    let mut msg = String::from(if e.is_connect() {
        "connect error"
    } else if e.is_timeout() {
        "timeout"
    } else if e.is_body() || e.is_decode() {
        "error reading the answer"
    } else {
        "error sending the request"
    });
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

pub(crate) fn reason_name(r: super::retry::RetryReason) -> &'static str {
    use super::retry::RetryReason::*;
    match r {
        RetryAfter => "RetryAfter",
        Throttled => "Throttled",
        ServerError => "ServerError",
        Transport => "Transport",
        Replication => "Replication",
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io error",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "missing or mistyped fields",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// The one cached token of a client, with single-flight refresh.
#[derive(Debug)]
pub struct TokenCache {
    endpoint: TokenEndpoint,
    client_id: String,
    credential: ClientCredential,
    margin: Duration,
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    token: Option<AccessToken>,
    generation: u64,
    /// The last failed fetch: callers that were already waiting when it failed get this error
    /// instead of starting another fetch each.
    last_failure: Option<(Instant, TokenError)>,
}

impl TokenCache {
    /// An empty cache.
    pub fn new(
        endpoint: TokenEndpoint,
        client_id: String,
        credential: ClientCredential,
        margin: Duration,
    ) -> Self {
        Self {
            endpoint,
            client_id,
            credential,
            margin,
            state: Mutex::new(CacheState::default()),
        }
    }

    /// The endpoint (for verifying other credentials with the same transport).
    pub fn endpoint(&self) -> &TokenEndpoint {
        &self.endpoint
    }

    /// A valid token: the cached one until its refresh deadline, else a new one. Only one
    /// fetch runs at a time; callers that queued behind it share its result.
    pub async fn get(&self) -> Result<AccessToken, TokenError> {
        let asked_at = Instant::now();
        let mut state = self.state.lock().await;
        if let Some(t) = &state.token {
            if Instant::now() < t.refresh_at {
                return Ok(t.clone());
            }
        }
        if let Some((failed_at, err)) = &state.last_failure {
            if *failed_at >= asked_at {
                return Err(err.clone());
            }
        }
        let obtained = Instant::now();
        match self.endpoint.request(&self.client_id, &self.credential).await {
            Ok((token, expires_in)) => {
                state.generation += 1;
                let t = AccessToken {
                    token,
                    expires_at: obtained + expires_in,
                    refresh_at: refresh_deadline(obtained, expires_in, self.margin),
                    generation: state.generation,
                };
                state.token = Some(t.clone());
                state.last_failure = None;
                Ok(t)
            }
            Err(e) => {
                state.token = None;
                state.last_failure = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Drops the cached token if it is still the one of `generation` (Graph rejected it); a
    /// token fetched meanwhile by another caller is kept.
    pub async fn invalidate(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state.token.as_ref().is_some_and(|t| t.generation == generation) {
            debug!(generation, "dropping rejected token");
            state.token = None;
        }
    }

    /// Fetches a new token now, bypassing the cache (used to verify the credentials).
    pub async fn refresh(&self) -> Result<AccessToken, TokenError> {
        {
            let mut state = self.state.lock().await;
            state.token = None;
            state.last_failure = None;
        }
        self.get().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_three_minutes_early_for_normal_tokens() {
        let t0 = Instant::now();
        let r = refresh_deadline(t0, Duration::from_secs(3599), Duration::from_secs(180));
        assert_eq!(r - t0, Duration::from_secs(3419));
    }

    #[test]
    fn short_tokens_refresh_at_half_life() {
        let t0 = Instant::now();
        let r = refresh_deadline(t0, Duration::from_secs(60), Duration::from_secs(180));
        assert_eq!(r - t0, Duration::from_secs(30));
        let r = refresh_deadline(t0, Duration::ZERO, Duration::from_secs(180));
        assert_eq!(r, t0);
    }

    #[test]
    fn token_response_accepts_numbers_and_strings() {
        let v2: TokenResponse = serde_json::from_str(
            r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0"}"#,
        )
        .unwrap();
        assert_eq!(v2.expires_in, 3599);
        let v1: TokenResponse = serde_json::from_str(
            r#"{"access_token":"eyJ0","token_type":"Bearer","expires_in":"3599","expires_on":"1388452167"}"#,
        )
        .unwrap();
        assert_eq!(v1.expires_in, 3599);
        assert!(serde_json::from_str::<TokenResponse>(r#"{"access_token":"x"}"#).is_err());
    }

    #[test]
    fn access_token_debug_is_redacted() {
        let t = AccessToken {
            token: SecretString::new("eyJhbGciOi.secret.token"),
            expires_at: Instant::now(),
            refresh_at: Instant::now(),
            generation: 1,
        };
        let d = format!("{t:?}");
        assert!(!d.contains("eyJ"), "{d}");
    }
}
