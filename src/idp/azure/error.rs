//! Typed errors of the Graph client, each with a stable `reason()` for conditions and metrics.
//!
//! No error carries a secret or a token: messages are built from status codes, Graph error
//! codes and messages, AADSTS codes and trace/correlation/request ids only. Token endpoint
//! descriptions are scrubbed of the client secret before they are kept, in case a server ever
//! echoes it.

use std::time::Duration;

use serde::Deserialize;

/// A configuration the client cannot work with.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The tenant is neither a GUID nor a domain name.
    #[error("invalid tenant id {0:?}: expected a GUID or a domain name")]
    InvalidTenant(String),
    /// An unknown cloud name.
    #[error("unknown cloud {0:?}: expected AzurePublic, AzureUSGovernment or AzureChina")]
    UnknownCloud(String),
    /// The extra CA bundle could not be parsed.
    #[error("extra CA bundle: {0}")]
    CaBundle(String),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    HttpClient(String),
    /// Any other invalid field.
    #[error("{0}")]
    Invalid(String),
}

/// Why a token could not be obtained. [`TokenError::reason`] is stable (used as a condition
/// reason by the DcrProvider controller).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// AADSTS7000215: the secret is wrong (or the secret *id* was sent instead of its value).
    #[error("invalid client secret ({0})")]
    InvalidClientSecret(Box<AadDiagnostics>),
    /// AADSTS7000222: the secret has expired (also seen transiently right after addPassword).
    #[error("client secret expired ({0})")]
    ExpiredClientSecret(Box<AadDiagnostics>),
    /// AADSTS700016: no application with this client id in the tenant.
    #[error("client not found in the tenant ({0})")]
    ClientNotFound(Box<AadDiagnostics>),
    /// AADSTS90002 / AADSTS900023 (or a 404 from the token endpoint): no such tenant.
    #[error("tenant not found ({0})")]
    TenantNotFound(Box<AadDiagnostics>),
    /// AADSTS7000229: the application has no service principal in the tenant.
    #[error("application has no service principal in the tenant ({0})")]
    ServicePrincipalMissing(Box<AadDiagnostics>),
    /// AADSTS70021: the federated token's issuer, subject and audience match no federated
    /// identity credential of the client (Entra names the presented values).
    #[error("no federated identity credential of the client matches the token ({0})")]
    NoMatchingFederatedCredential(Box<AadDiagnostics>),
    /// AADSTS700024: the provider found the federated token outside its validity window.
    #[error("the provider says the federated token is not within its valid time range ({0})")]
    AssertionExpiredAtProvider(Box<AadDiagnostics>),
    /// Other rejections of a federated client assertion (bad signature, unreadable issuer keys,
    /// malformed token).
    #[error("federated assertion rejected ({0})")]
    AssertionRejected(Box<AadDiagnostics>),
    /// The federated token file could not be read (missing, unreadable, empty, too large).
    #[error("cannot read the federated token file {path}: {message}")]
    AssertionUnreadable {
        /// The configured path.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// The federated token file holds a token that has expired: it was not sent (the kubelet
    /// refreshes the file well before expiry, so a stale one means it no longer does).
    #[error("the federated token in {path} expired at {expired_at}; it was not sent")]
    AssertionExpired {
        /// The configured path.
        path: String,
        /// The token's `exp`, RFC 3339.
        expired_at: String,
    },
    /// Connect or TLS failure, timeout, dropped connection: the token endpoint was not reached
    /// or did not answer.
    #[error("token endpoint unreachable: {0}")]
    Unreachable(String),
    /// The token endpoint answered 429.
    #[error("token endpoint throttled the request (retry after {retry_after:?})")]
    Throttled {
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// Anything else: other AADSTS codes, 5xx after retries, an unparseable answer.
    #[error("token request failed: HTTP {status} ({diagnostics})")]
    Unexpected {
        /// HTTP status (0 when the answer could not be read at all).
        status: u16,
        /// What the server said.
        diagnostics: Box<AadDiagnostics>,
    },
}

impl TokenError {
    /// A stable, CamelCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidClientSecret(_) => "InvalidClientSecret",
            Self::ExpiredClientSecret(_) => "ExpiredClientSecret",
            Self::ClientNotFound(_) => "ClientNotFound",
            Self::TenantNotFound(_) => "TenantNotFound",
            Self::ServicePrincipalMissing(_) => "ServicePrincipalMissing",
            Self::NoMatchingFederatedCredential(_) => "NoMatchingFederatedCredential",
            Self::AssertionExpiredAtProvider(_) | Self::AssertionExpired { .. } => "FederatedTokenExpired",
            Self::AssertionRejected(_) => "AssertionRejected",
            Self::AssertionUnreadable { .. } => "FederatedTokenNotFound",
            Self::Unreachable(_) => "Unreachable",
            Self::Throttled { .. } => "Throttled",
            Self::Unexpected { .. } => "Unexpected",
        }
    }

    /// An `Unexpected` error with a local explanation (no server diagnostics).
    pub(crate) fn unexpected(status: u16, error: impl Into<String>, description: &str) -> Self {
        Self::Unexpected {
            status,
            diagnostics: Box::new(AadDiagnostics {
                error: error.into(),
                description: description.to_string(),
                ..Default::default()
            }),
        }
    }

    /// The AADSTS codes the server returned, if any.
    pub fn aadsts_codes(&self) -> &[u64] {
        match self {
            Self::InvalidClientSecret(d)
            | Self::ExpiredClientSecret(d)
            | Self::ClientNotFound(d)
            | Self::TenantNotFound(d)
            | Self::ServicePrincipalMissing(d)
            | Self::AssertionRejected(d)
            | Self::NoMatchingFederatedCredential(d)
            | Self::AssertionExpiredAtProvider(d)
            | Self::Unexpected { diagnostics: d, .. } => &d.codes,
            _ => &[],
        }
    }

    /// True when trying again later may succeed without a configuration change.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable(_) | Self::Throttled { .. } | Self::Unexpected { status: 500.., .. }
        )
    }
}

/// What the token endpoint said about a failure, minus anything secret: the `error` code, the
/// AADSTS codes, the first line of the description, trace and correlation ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AadDiagnostics {
    /// OAuth `error` (`invalid_client`, `unauthorized_client`, ...).
    pub error: String,
    /// `error_codes`, or the code parsed from the `AADSTS<n>:` prefix of the description.
    pub codes: Vec<u64>,
    /// First line of `error_description` (which starts with `AADSTS<n>:`), secret scrubbed.
    pub description: String,
    /// `trace_id`.
    pub trace_id: Option<String>,
    /// `correlation_id`.
    pub correlation_id: Option<String>,
}

impl std::fmt::Display for AadDiagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.error.is_empty() && self.description.is_empty() {
            f.write_str("no error body")?;
        } else if self.description.is_empty() {
            f.write_str(&self.error)?;
        } else {
            write!(f, "{}: {}", self.error, self.description)?;
        }
        if let Some(t) = &self.trace_id {
            write!(f, "; trace id {t}")?;
        }
        if let Some(c) = &self.correlation_id {
            write!(f, "; correlation id {c}")?;
        }
        Ok(())
    }
}

/// The token endpoint's error body (contract §1.1).
#[derive(Debug, Deserialize, Default)]
pub(crate) struct TokenErrorBody {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub error_description: String,
    #[serde(default)]
    pub error_codes: Vec<u64>,
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
}

impl AadDiagnostics {
    /// Builds diagnostics from a token error body, replacing every occurrence of `scrub` (the
    /// client secret or assertion) with `<redacted>`.
    pub(crate) fn from_body(body: TokenErrorBody, scrub: Option<&str>) -> Self {
        let first_line = body
            .error_description
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let mut codes = body.error_codes;
        if codes.is_empty() {
            if let Some(code) = parse_aadsts_prefix(&first_line) {
                codes.push(code);
            }
        }
        let scrub_text = |s: String| match scrub {
            Some(secret) if !secret.is_empty() => s.replace(secret, "<redacted>"),
            _ => s,
        };
        Self {
            error: scrub_text(body.error),
            codes,
            description: scrub_text(first_line),
            trace_id: body.trace_id,
            correlation_id: body.correlation_id,
        }
    }
}

/// `AADSTS7000215: Invalid client secret...` → 7000215.
pub(crate) fn parse_aadsts_prefix(s: &str) -> Option<u64> {
    let rest = s.trim_start().strip_prefix("AADSTS")?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Maps a token endpoint failure (status + parsed body) to its category.
pub(crate) fn classify_token_error(status: u16, diag: AadDiagnostics) -> TokenError {
    let diag = Box::new(diag);
    let has = |code: u64| diag.codes.contains(&code);
    if has(7000215) {
        TokenError::InvalidClientSecret(diag)
    } else if has(7000222) {
        TokenError::ExpiredClientSecret(diag)
    } else if has(700016) {
        TokenError::ClientNotFound(diag)
    } else if has(90002) || has(900023) || (status == 404 && diag.codes.is_empty()) {
        TokenError::TenantNotFound(diag)
    } else if has(7000229) {
        TokenError::ServicePrincipalMissing(diag)
    } else if has(70021) {
        TokenError::NoMatchingFederatedCredential(diag)
    } else if has(700024) {
        TokenError::AssertionExpiredAtProvider(diag)
    } else if has(700027) || has(50027) || has(90061) {
        TokenError::AssertionRejected(diag)
    } else {
        TokenError::Unexpected {
            status,
            diagnostics: diag,
        }
    }
}

/// Details of a Graph error answer, parsed from the error envelope (contract §2.1) and the
/// response headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphErrorInfo {
    /// The operation name (`application.get`, `application.addPassword`, ...).
    pub op: &'static str,
    /// HTTP status.
    pub status: u16,
    /// `error.code` (`Request_ResourceNotFound`, ...). Branch on this, never on the message.
    pub code: String,
    /// `error.message`.
    pub message: String,
    /// `error.details[0].code` when present (`NoBackingApplicationObject`).
    pub detail_code: Option<String>,
    /// `request-id` header, else `error.innerError.request-id`.
    pub request_id: Option<String>,
    /// `client-request-id` (the one this client sent).
    pub client_request_id: Option<String>,
}

impl std::fmt::Display for GraphErrorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: HTTP {}", self.op, self.status)?;
        if !self.code.is_empty() {
            write!(f, " {}", self.code)?;
        }
        if let Some(d) = &self.detail_code {
            write!(f, " ({d})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(r) = &self.request_id {
            write!(f, " [request-id {r}]")?;
        }
        Ok(())
    }
}

/// A failed Graph call, after the retry policy gave up. [`GraphError::reason`] is stable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    /// 404 (`Request_ResourceNotFound`).
    #[error("not found: {0}")]
    NotFound(Box<GraphErrorInfo>),
    /// 409 (`Request_MultipleObjectsWithSameKeyValue`, ...).
    #[error("conflict: {0}")]
    Conflict(Box<GraphErrorInfo>),
    /// 429 (or 503 with `Retry-After`) whose wait did not fit in the retry budget.
    #[error("throttled: {info} (retry after {retry_after:?})")]
    Throttled {
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
        /// The answer.
        info: Box<GraphErrorInfo>,
    },
    /// 403 (`Authorization_RequestDenied`): missing permission or not an owner.
    #[error("forbidden: {0}")]
    Forbidden(Box<GraphErrorInfo>),
    /// 401 even with a freshly acquired token.
    #[error("unauthorized: {0}")]
    Unauthorized(Box<GraphErrorInfo>),
    /// 400 (`Request_BadRequest`, `Request_UnsupportedQuery`, ...), e.g. a reserved `uniqueName`.
    #[error("bad request: {0}")]
    BadRequest(Box<GraphErrorInfo>),
    /// 5xx after retries. For a non-idempotent call (addPassword) the server may have applied
    /// it: see [`GraphError::outcome_unknown`].
    #[error("unavailable: {info}")]
    Unavailable {
        /// The answer.
        info: Box<GraphErrorInfo>,
        /// The request may have been applied.
        outcome_unknown: bool,
    },
    /// Other 4xx statuses.
    #[error("unexpected answer: {0}")]
    Unexpected(Box<GraphErrorInfo>),
    /// No usable token.
    #[error("token: {0}")]
    Token(#[from] TokenError),
    /// Connect/TLS failure, timeout or dropped connection, after retries.
    #[error("transport ({op}): {message}")]
    Transport {
        /// The operation.
        op: &'static str,
        /// What failed (no URL query strings, no headers).
        message: String,
        /// The request may have reached the server (anything but a connect failure).
        outcome_unknown: bool,
    },
    /// A 2xx answer whose body is not what the contract says.
    #[error("cannot decode the answer to {op}: {message}")]
    Decode {
        /// The operation.
        op: &'static str,
        /// The decoding error.
        message: String,
    },
    /// The caller passed something the client refuses to send (e.g. upsert without a
    /// displayName, a paging link to another host).
    #[error("invalid input to {op}: {message}")]
    InvalidInput {
        /// The operation.
        op: &'static str,
        /// Why.
        message: String,
    },
}

impl GraphError {
    /// Sets the wait of a `Throttled` error that carries none (throttled without a
    /// `Retry-After` header, the backoff step being `wait`).
    pub(crate) fn with_retry_hint(self, wait: Duration) -> Self {
        match self {
            GraphError::Throttled {
                retry_after: None,
                info,
            } => GraphError::Throttled {
                retry_after: Some(wait),
                info,
            },
            other => other,
        }
    }

    /// A stable, CamelCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "NotFound",
            Self::Conflict(_) => "Conflict",
            Self::Throttled { .. } => "Throttled",
            Self::Forbidden(_) => "Forbidden",
            Self::Unauthorized(_) => "Unauthorized",
            Self::BadRequest(_) => "BadRequest",
            Self::Unavailable { .. } => "Unavailable",
            Self::Unexpected(_) => "Unexpected",
            Self::Token(t) => t.reason(),
            Self::Transport { .. } => "Transport",
            Self::Decode { .. } => "Decode",
            Self::InvalidInput { .. } => "InvalidInput",
        }
    }

    /// True for a 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }

    /// The parsed answer, for errors that came from Graph.
    pub fn info(&self) -> Option<&GraphErrorInfo> {
        match self {
            Self::NotFound(i)
            | Self::Conflict(i)
            | Self::Forbidden(i)
            | Self::Unauthorized(i)
            | Self::BadRequest(i)
            | Self::Unexpected(i)
            | Self::Throttled { info: i, .. }
            | Self::Unavailable { info: i, .. } => Some(i),
            _ => None,
        }
    }

    /// The Graph `error.code`, if any.
    pub fn code(&self) -> Option<&str> {
        self.info().map(|i| i.code.as_str())
    }

    /// True when a non-idempotent request (addPassword) may have been applied although it
    /// failed: the caller must reconcile (list the app's passwords) instead of assuming nothing
    /// happened.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            Self::Unavailable {
                outcome_unknown: true,
                ..
            } | Self::Transport {
                outcome_unknown: true,
                ..
            }
        )
    }

    /// True when trying again later may succeed without any change.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Throttled { .. } | Self::Unavailable { .. } | Self::Transport { .. } => true,
            Self::Token(t) => t.is_transient(),
            _ => false,
        }
    }
}

/// Graph's failures as the provider boundary sees them (the message is the error's own).
impl From<GraphError> for crate::idp::ProviderError {
    fn from(e: GraphError) -> Self {
        use crate::idp::{ProviderError, Throttler};
        let message = e.to_string();
        match e {
            GraphError::Throttled { retry_after, info } => ProviderError::Throttled {
                retry_after,
                by: if info.code == super::client::BUDGET_EXHAUSTED {
                    Throttler::Budget
                } else {
                    Throttler::Provider
                },
                message,
            },
            GraphError::Token(TokenError::Throttled { retry_after }) => ProviderError::Throttled {
                retry_after,
                by: Throttler::TokenEndpoint,
                message,
            },
            e if e.is_transient() => ProviderError::Transient { message },
            GraphError::Token(t) => ProviderError::AuthFailed {
                reason: t.reason(),
                message,
            },
            GraphError::NotFound(_) => ProviderError::NotFound { message },
            GraphError::Forbidden(_) => ProviderError::Denied {
                permission: None,
                message,
            },
            GraphError::BadRequest(info)
            | GraphError::Conflict(info)
            | GraphError::Unauthorized(info)
            | GraphError::Unexpected(info) => ProviderError::Rejected {
                status: info.status,
                code: info.code.clone(),
                detail: info.message.clone(),
                message,
            },
            other => ProviderError::Rejected {
                status: 0,
                code: other.reason().to_string(),
                detail: String::new(),
                message,
            },
        }
    }
}

impl From<TokenError> for crate::idp::ProviderError {
    fn from(e: TokenError) -> Self {
        GraphError::Token(e).into()
    }
}

/// Graph's error envelope: `{"error":{"code","message","innerError":{...},"details":[...]}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "innerError", alias = "innererror")]
    pub inner_error: Option<InnerError>,
    #[serde(default)]
    pub details: Vec<ErrorDetail>,
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct InnerError {
    #[serde(default, rename = "request-id")]
    pub request_id: Option<String>,
    #[serde(default, rename = "client-request-id")]
    pub client_request_id: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct ErrorDetail {
    #[serde(default)]
    pub code: String,
}

/// Parses an error answer's body (tolerating an empty or non-JSON body) into
/// [`GraphErrorInfo`]; header ids win over the body's.
pub(crate) fn parse_error_info(
    op: &'static str,
    status: u16,
    body: &[u8],
    request_id: Option<String>,
    client_request_id: Option<String>,
) -> GraphErrorInfo {
    let parsed: Option<ErrorEnvelope> = serde_json::from_slice(body).ok();
    let (code, message, detail_code, inner) = match parsed {
        Some(env) => (
            env.error.code,
            env.error.message,
            env.error
                .details
                .into_iter()
                .map(|d| d.code)
                .find(|c| !c.is_empty()),
            env.error.inner_error.unwrap_or_default(),
        ),
        None => (
            String::new(),
            String::from_utf8_lossy(body.get(..body.len().min(200)).unwrap_or_default()).into_owned(),
            None,
            InnerError::default(),
        ),
    };
    GraphErrorInfo {
        op,
        status,
        code,
        message,
        detail_code,
        request_id: request_id.or(inner.request_id),
        client_request_id: client_request_id.or(inner.client_request_id),
    }
}

/// The error category for a final (non-retried) status.
pub(crate) fn graph_error_for(
    info: GraphErrorInfo,
    retry_after: Option<Duration>,
    outcome_unknown: bool,
) -> GraphError {
    let info = Box::new(info);
    match info.status {
        400 => GraphError::BadRequest(info),
        401 => GraphError::Unauthorized(info),
        403 => GraphError::Forbidden(info),
        404 => GraphError::NotFound(info),
        409 => GraphError::Conflict(info),
        429 => GraphError::Throttled { retry_after, info },
        503 if retry_after.is_some() && !outcome_unknown => GraphError::Throttled { retry_after, info },
        500..=599 => GraphError::Unavailable {
            info,
            outcome_unknown,
        },
        _ => GraphError::Unexpected(info),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_with_inner_error_and_details_parses() {
        let body = br#"{"error":{"code":"Request_BadRequest",
          "message":"The appId 'x' of the service principal does not reference a valid application object.",
          "details":[{"code":"NoBackingApplicationObject","message":"...","target":"appId"}],
          "innerError":{"date":"2023-12-12T14:14:50","request-id":"rid-body","client-request-id":"crid-body"}}}"#;
        let info = parse_error_info("servicePrincipal.create", 400, body, None, None);
        assert_eq!(info.code, "Request_BadRequest");
        assert_eq!(info.detail_code.as_deref(), Some("NoBackingApplicationObject"));
        assert_eq!(info.request_id.as_deref(), Some("rid-body"));
        assert_eq!(info.client_request_id.as_deref(), Some("crid-body"));

        let info = parse_error_info(
            "application.get",
            404,
            br#"{"error":{"code":"Request_ResourceNotFound","message":"gone","innerError":{"request-id":"b"}}}"#,
            Some("header-rid".into()),
            None,
        );
        assert_eq!(info.request_id.as_deref(), Some("header-rid"));
        assert!(matches!(
            graph_error_for(info, None, false),
            GraphError::NotFound(_)
        ));
    }

    #[test]
    fn throttle_envelope_and_garbage_bodies() {
        let body = br#"{"error":{"code":"TooManyRequests","message":"Please retry again later.",
          "innerError":{"code":"429","date":"2020-08-18T12:51:51","message":"Please retry after","request-id":"r","status":"429"}}}"#;
        let info = parse_error_info("application.list", 429, body, None, None);
        assert_eq!(info.code, "TooManyRequests");
        let e = graph_error_for(info, Some(Duration::from_millis(2128)), false);
        assert_eq!(e.reason(), "Throttled");
        assert!(e.is_transient());

        let info = parse_error_info("application.get", 502, b"<html>bad gateway</html>", None, None);
        assert_eq!(info.code, "");
        assert!(info.message.contains("bad gateway"));
        let e = graph_error_for(info, None, true);
        assert_eq!(e.reason(), "Unavailable");
        assert!(e.outcome_unknown());

        let info = parse_error_info("application.delete", 204, b"", None, None);
        assert_eq!(info.message, "");
    }

    #[test]
    fn token_errors_classify_by_aadsts_code() {
        let body = |code: u64, error: &str| TokenErrorBody {
            error: error.into(),
            error_description: format!(
                "AADSTS{code}: Something.\r\nTrace ID: t\r\nCorrelation ID: c\r\nTimestamp: x"
            ),
            error_codes: vec![code],
            trace_id: Some("t".into()),
            correlation_id: Some("c".into()),
        };
        let cases = [
            (7000215, "invalid_client", 401, "InvalidClientSecret"),
            (7000222, "invalid_client", 401, "ExpiredClientSecret"),
            (700016, "unauthorized_client", 400, "ClientNotFound"),
            (90002, "invalid_request", 400, "TenantNotFound"),
            (7000229, "invalid_client", 401, "ServicePrincipalMissing"),
            (70021, "invalid_request", 400, "NoMatchingFederatedCredential"),
            (700024, "invalid_client", 400, "FederatedTokenExpired"),
            (50027, "invalid_request", 400, "AssertionRejected"),
            (90061, "invalid_request", 400, "AssertionRejected"),
            (70011, "invalid_scope", 400, "Unexpected"),
        ];
        for (code, error, status, reason) in cases {
            let e = classify_token_error(status, AadDiagnostics::from_body(body(code, error), None));
            assert_eq!(e.reason(), reason, "AADSTS{code}");
            assert_eq!(e.aadsts_codes(), &[code]);
            let msg = e.to_string();
            assert!(msg.contains(&format!("AADSTS{code}")), "{msg}");
            assert!(
                msg.contains("trace id t") && msg.contains("correlation id c"),
                "{msg}"
            );
            assert!(!msg.contains("Timestamp"), "{msg}");
        }
    }

    #[test]
    fn aadsts_code_from_description_when_codes_are_missing_and_secret_scrubbed() {
        let body = TokenErrorBody {
            error: "invalid_client".into(),
            error_description: "AADSTS7000215: Invalid client secret provided: hunter2hunter2".into(),
            ..Default::default()
        };
        let d = AadDiagnostics::from_body(body, Some("hunter2hunter2"));
        assert_eq!(d.codes, vec![7000215]);
        assert!(!d.description.contains("hunter2"));
        assert_eq!(
            parse_aadsts_prefix("AADSTS90002: Tenant 'x' not found."),
            Some(90002)
        );
        assert_eq!(parse_aadsts_prefix("nope"), None);
        assert_eq!(
            classify_token_error(404, AadDiagnostics::default()).reason(),
            "TenantNotFound"
        );
    }

    fn info(status: u16, code: &str) -> Box<GraphErrorInfo> {
        let body =
            format!(r#"{{"error":{{"code":"{code}","message":"why","innerError":{{"request-id":"r"}}}}}}"#);
        Box::new(parse_error_info(
            "application.addPassword",
            status,
            body.as_bytes(),
            None,
            None,
        ))
    }

    #[test]
    fn graph_errors_map_onto_the_neutral_kinds_keeping_their_message() {
        use crate::idp::{ProviderError as P, Throttler};
        type Expect = fn(&P) -> bool;
        let cases: Vec<(GraphError, Expect)> = vec![
            (
                GraphError::Throttled {
                    retry_after: Some(Duration::from_secs(2)),
                    info: info(429, "TooManyRequests"),
                },
                |p| {
                    matches!(
                        p,
                        P::Throttled {
                            by: Throttler::Provider,
                            retry_after: Some(_),
                            ..
                        }
                    )
                },
            ),
            (
                GraphError::Throttled {
                    retry_after: Some(Duration::from_secs(1)),
                    info: info(429, super::super::client::BUDGET_EXHAUSTED),
                },
                |p| {
                    matches!(
                        p,
                        P::Throttled {
                            by: Throttler::Budget,
                            ..
                        }
                    )
                },
            ),
            (
                GraphError::Token(TokenError::Throttled { retry_after: None }),
                |p| {
                    matches!(
                        p,
                        P::Throttled {
                            by: Throttler::TokenEndpoint,
                            retry_after: None,
                            ..
                        }
                    )
                },
            ),
            (GraphError::Token(TokenError::Unreachable("reset".into())), |p| {
                matches!(p, P::Transient { .. })
            }),
            (
                GraphError::Unavailable {
                    info: info(503, ""),
                    outcome_unknown: true,
                },
                |p| matches!(p, P::Transient { .. }),
            ),
            (
                GraphError::Token(TokenError::InvalidClientSecret(Box::default())),
                |p| {
                    matches!(
                        p,
                        P::AuthFailed {
                            reason: "InvalidClientSecret",
                            ..
                        }
                    )
                },
            ),
            (GraphError::NotFound(info(404, "Request_ResourceNotFound")), |p| {
                p.is_not_found()
            }),
            (
                GraphError::Forbidden(info(403, "Authorization_RequestDenied")),
                |p| matches!(p, P::Denied { permission: None, .. }),
            ),
            (
                GraphError::BadRequest(info(400, "CredentialInvalidLifetimeAsPerAppPolicy")),
                |p| {
                    matches!(p, P::Rejected { status: 400, code, detail, .. }
                    if code == "CredentialInvalidLifetimeAsPerAppPolicy" && detail == "why")
                },
            ),
            (
                GraphError::Unauthorized(info(401, "InvalidAuthenticationToken")),
                |p| matches!(p, P::Rejected { status: 401, .. }),
            ),
            (
                GraphError::Decode {
                    op: "application.get",
                    message: "eof".into(),
                },
                |p| matches!(p, P::Rejected { status: 0, code, .. } if code == "Decode"),
            ),
        ];
        for (graph, expected) in cases {
            let message = graph.to_string();
            let neutral = P::from(graph);
            assert!(expected(&neutral), "{message} -> {neutral:?}");
            assert_eq!(neutral.to_string(), message, "the message is Graph's own");
        }
    }
}
