//! One HTTP exchange: send, read a bounded body, classify a failure. Shared by discovery,
//! registration, management and the token proof.

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use serde::Deserialize;

use super::config::MAX_BODY_BYTES;
use super::error::{OAuthDetail, OidcError};
use crate::sensitive::SecretString;

/// The longest server description kept in an error.
const MAX_DESCRIPTION: usize = 200;
/// The longest Retry-After honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A response read in full (up to [`MAX_BODY_BYTES`]).
pub(crate) struct Reply {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

/// Sends `request` and reads the reply; only transport failures are errors here.
pub(crate) async fn send(op: &'static str, request: RequestBuilder) -> Result<Reply, OidcError> {
    let unreachable = |e: reqwest::Error| OidcError::Unreachable {
        op,
        message: transport_message(&e),
    };
    let mut response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
    if response.content_length().unwrap_or(0) > MAX_BODY_BYTES as u64 {
        return Err(too_big(op));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_big(op));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        retry_after,
        body,
    })
}

fn too_big(op: &'static str) -> OidcError {
    OidcError::InvalidResponse {
        op,
        message: format!("the body is larger than {MAX_BODY_BYTES} bytes"),
    }
}

/// A transport error without the URL's query (reqwest prints the URL; ours carry no secret,
/// but the shape of a timeout is what matters).
fn transport_message(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "the body could not be read"
    } else {
        "request failed"
    };
    match e.url() {
        Some(url) => format!("{what} ({}{})", url.origin().ascii_serialization(), url.path()),
        None => what.to_string(),
    }
}

/// The error for a non-success reply, before callers map their own 401s.
pub(crate) fn error_for(op: &'static str, reply: &Reply, scrub: &[&SecretString]) -> OidcError {
    let status = reply.status.as_u16();
    let detail = detail(&reply.body, scrub);
    match reply.status {
        StatusCode::TOO_MANY_REQUESTS => OidcError::Throttled {
            op,
            status,
            retry_after: reply.retry_after,
        },
        StatusCode::SERVICE_UNAVAILABLE if reply.retry_after.is_some() => OidcError::Throttled {
            op,
            status,
            retry_after: reply.retry_after,
        },
        StatusCode::NOT_FOUND | StatusCode::GONE => OidcError::NotFound { op, status },
        s if s.is_server_error() => OidcError::Server { op, status, detail },
        _ => OidcError::Rejected { op, status, detail },
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// The OAuth error of a body, truncated and with every secret of the request replaced.
pub(crate) fn detail(body: &[u8], scrub: &[&SecretString]) -> OAuthDetail {
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
        return OAuthDetail::default();
    };
    OAuthDetail {
        error: clean(parsed.error.as_deref().unwrap_or_default(), scrub),
        description: clean(parsed.error_description.as_deref().unwrap_or_default(), scrub),
    }
}

/// Printable characters only, secrets replaced, at most [`MAX_DESCRIPTION`] characters.
pub(crate) fn clean(text: &str, scrub: &[&SecretString]) -> String {
    let mut text = text.to_string();
    for secret in scrub.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret.expose(), "<redacted>");
    }
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DESCRIPTION)
        .collect();
    if text.chars().count() > MAX_DESCRIPTION {
        out.push('…');
    }
    out
}

/// A serde error without the value that failed (serde quotes it, and it may be a secret).
pub(crate) fn parse_error(op: &'static str, what: &str, e: &serde_json::Error) -> OidcError {
    OidcError::InvalidResponse {
        op,
        message: format!(
            "not {what} ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_scrubbed_and_bounded() {
        let secret = SecretString::new("s3cr3t-value");
        let body = format!(
            r#"{{"error":"invalid_client","error_description":"bad secret s3cr3t-value\n{}"}}"#,
            "x".repeat(500)
        );
        let d = detail(body.as_bytes(), &[&secret]);
        assert_eq!(d.error, "invalid_client");
        assert!(!d.description.contains("s3cr3t"), "{}", d.description);
        assert!(d.description.starts_with("bad secret <redacted>"));
        assert!(d.description.chars().count() <= MAX_DESCRIPTION + 1);
        assert!(!d.description.contains('\n'));
        assert_eq!(detail(b"<html>", &[]), OAuthDetail::default());
    }

    #[test]
    fn parse_errors_do_not_quote_the_value() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct T {
            n: u32,
        }
        let e = serde_json::from_str::<T>(r#"{"n":"the-secret"}"#).unwrap_err();
        assert!(e.to_string().contains("the-secret"), "serde quotes values");
        let ours = parse_error("read", "a client", &e).to_string();
        assert!(!ours.contains("the-secret"), "{ours}");
    }
}
