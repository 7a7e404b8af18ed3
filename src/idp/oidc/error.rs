//! Errors of the OIDC client. None carries a secret: messages hold status codes, OAuth
//! error codes and server descriptions that are truncated and scrubbed of every secret the
//! request carried. [`OidcError::kind`] maps each onto the five provider-neutral kinds.

use std::fmt;
use std::time::Duration;

/// The provider-neutral kind of a failure, what a caller decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Slow down; retry after the hint when there is one.
    Throttled { retry_after: Option<Duration> },
    /// May pass by itself: retry with backoff.
    Transient,
    /// The client does not exist (or can no longer be managed with this token).
    NotFound,
    /// The server refused the request as made; retrying the same request will not help.
    Rejected,
    /// The operator's credential (initial access token, API key, client secret) was refused.
    AuthFailed,
}

/// An OAuth error response (`error`, `error_description`), kept short and scrubbed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OAuthDetail {
    pub error: String,
    pub description: String,
}

impl fmt::Display for OAuthDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.error.is_empty(), self.description.is_empty()) {
            (true, true) => f.write_str("no error details"),
            (false, true) => f.write_str(&self.error),
            (true, false) => f.write_str(&self.description),
            (false, false) => write!(f, "{}: {}", self.error, self.description),
        }
    }
}

/// Why an OIDC call failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum OidcError {
    #[error("invalid OIDC provider configuration: {0}")]
    Config(String),
    #[error("{op}: cannot reach the server: {message}")]
    Unreachable { op: &'static str, message: String },
    #[error("{op}: throttled (HTTP {status})")]
    Throttled {
        op: &'static str,
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("{op}: server error (HTTP {status}, {detail})")]
    Server {
        op: &'static str,
        status: u16,
        detail: OAuthDetail,
    },
    #[error("discovery failed: {0}")]
    Discovery(String),
    #[error("the server publishes no registration_endpoint (dynamic registration is off or not advertised): set spec.oidc.registrationEndpoint if it has one")]
    RegistrationEndpointMissing,
    #[error("the server publishes no token_endpoint: set spec.oidc.tokenEndpoint")]
    TokenEndpointMissing,
    #[error("registration refused (HTTP {status}, {detail}): the initial access token or API key was not accepted")]
    RegistrationRefused { status: u16, detail: OAuthDetail },
    #[error("{op}: the management URI answered HTTP 401 ({detail}): the client is gone or its registration access token was revoked")]
    ClientGone { op: &'static str, detail: OAuthDetail },
    #[error("{op}: the client was not found (HTTP {status})")]
    NotFound { op: &'static str, status: u16 },
    #[error("{op}: rejected (HTTP {status}, {detail})")]
    Rejected {
        op: &'static str,
        status: u16,
        detail: OAuthDetail,
    },
    #[error("the token endpoint refused the client credentials (HTTP {status}, {detail})")]
    TokenRefused { status: u16, detail: OAuthDetail },
    #[error("{op}: unreadable response: {message}")]
    InvalidResponse { op: &'static str, message: String },
}

impl OidcError {
    /// The provider-neutral kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Throttled { retry_after, .. } => ErrorKind::Throttled {
                retry_after: *retry_after,
            },
            Self::Unreachable { .. }
            | Self::Server { .. }
            | Self::Discovery(_)
            | Self::InvalidResponse { .. } => ErrorKind::Transient,
            Self::ClientGone { .. } | Self::NotFound { .. } => ErrorKind::NotFound,
            Self::RegistrationRefused { .. } | Self::TokenRefused { .. } => ErrorKind::AuthFailed,
            Self::Config(_)
            | Self::RegistrationEndpointMissing
            | Self::TokenEndpointMissing
            | Self::Rejected { .. } => ErrorKind::Rejected,
        }
    }

    /// HTTP status and OAuth error code, for a rejection users must act on.
    pub fn code(&self) -> Option<(u16, &str)> {
        match self {
            Self::Rejected { status, detail, .. }
            | Self::RegistrationRefused { status, detail }
            | Self::TokenRefused { status, detail }
            | Self::Server { status, detail, .. } => Some((*status, detail.error.as_str())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_onto_a_neutral_kind() {
        let d = OAuthDetail::default;
        let cases = [
            (OidcError::Config("x".into()), ErrorKind::Rejected),
            (
                OidcError::Unreachable {
                    op: "register",
                    message: "timeout".into(),
                },
                ErrorKind::Transient,
            ),
            (
                OidcError::Throttled {
                    op: "read",
                    status: 429,
                    retry_after: Some(Duration::from_secs(3)),
                },
                ErrorKind::Throttled {
                    retry_after: Some(Duration::from_secs(3)),
                },
            ),
            (
                OidcError::Server {
                    op: "read",
                    status: 502,
                    detail: d(),
                },
                ErrorKind::Transient,
            ),
            (OidcError::Discovery("404".into()), ErrorKind::Transient),
            (OidcError::RegistrationEndpointMissing, ErrorKind::Rejected),
            (
                OidcError::RegistrationRefused {
                    status: 401,
                    detail: d(),
                },
                ErrorKind::AuthFailed,
            ),
            (
                OidcError::ClientGone {
                    op: "read",
                    detail: d(),
                },
                ErrorKind::NotFound,
            ),
            (
                OidcError::NotFound {
                    op: "read",
                    status: 404,
                },
                ErrorKind::NotFound,
            ),
            (
                OidcError::Rejected {
                    op: "update",
                    status: 400,
                    detail: d(),
                },
                ErrorKind::Rejected,
            ),
            (
                OidcError::TokenRefused {
                    status: 401,
                    detail: d(),
                },
                ErrorKind::AuthFailed,
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error}");
        }
    }
}
