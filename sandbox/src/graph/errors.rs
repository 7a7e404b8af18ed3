//! Error shapes: the Graph error envelope (contract §2.1) and the Entra token-endpoint
//! error body (contract §1.1).

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

/// `Resource '{id}' does not exist ...`, the message of every 404 (contract §2.1).
pub(crate) fn not_found_message(id: &str) -> String {
    format!(
        "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
    )
}

/// A Graph error, rendered as `{"error":{"code","message","details"?,"innerError"}}`.
/// Boxed: handlers return it on every path, and it is large.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GraphError(Box<GraphErrorInner>);

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GraphErrorInner {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub details: Vec<Value>,
    /// `Retry-After` in real seconds (429 and 503).
    pub retry_after: Option<f64>,
    /// For 429s from the buckets: `x-ms-throttle-scope` and `x-ms-throttle-information`.
    pub throttle: Option<ThrottleHeaders>,
    /// Short tag for the request log (`throttled`, `injected-429`, `injected-503`, ...).
    pub fault: Option<&'static str>,
}

impl std::ops::Deref for GraphError {
    type Target = GraphErrorInner;

    fn deref(&self) -> &GraphErrorInner {
        &self.0
    }
}

impl std::ops::DerefMut for GraphError {
    fn deref_mut(&mut self) -> &mut GraphErrorInner {
        &mut self.0
    }
}

/// The headers of a throttled response (contract §2.2).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ThrottleHeaders {
    pub scope: String,
    pub information: &'static str,
}

impl GraphError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> GraphError {
        GraphError(Box::new(GraphErrorInner {
            status,
            code: code.to_string(),
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
            throttle: None,
            fault: None,
        }))
    }

    /// 404 `Request_ResourceNotFound`.
    pub(crate) fn not_found(id: &str) -> GraphError {
        Self::new(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            not_found_message(id),
        )
    }

    /// 400 `Request_BadRequest`.
    pub(crate) fn bad_request(message: impl Into<String>) -> GraphError {
        Self::new(StatusCode::BAD_REQUEST, "Request_BadRequest", message)
    }

    /// 400 `Request_BadRequest` "One or more properties contains invalid values." with a
    /// detail naming the property.
    pub(crate) fn invalid_value(property: &str, message: impl Into<String>) -> GraphError {
        let mut e = Self::bad_request("One or more properties contains invalid values.");
        e.details
            .push(json!({"code": "InvalidValue", "message": message.into(), "target": property}));
        e
    }

    /// 400 `Request_UnsupportedQuery`.
    pub(crate) fn unsupported_query(message: impl Into<String>) -> GraphError {
        Self::new(StatusCode::BAD_REQUEST, "Request_UnsupportedQuery", message)
    }

    /// 403 `Authorization_RequestDenied`.
    pub(crate) fn forbidden() -> GraphError {
        Self::new(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )
    }

    /// 401 `InvalidAuthenticationToken`.
    pub(crate) fn unauthorized(message: impl Into<String>) -> GraphError {
        Self::new(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", message)
    }

    /// 409 `Request_MultipleObjectsWithSameKeyValue`.
    pub(crate) fn conflict(message: impl Into<String>) -> GraphError {
        Self::new(
            StatusCode::CONFLICT,
            "Request_MultipleObjectsWithSameKeyValue",
            message,
        )
    }

    /// 400 for a URL segment the emulator does not know (Graph's wording).
    pub(crate) fn unknown_segment(segment: &str) -> GraphError {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("Resource not found for the segment '{segment}'."),
        )
    }

    /// 405 for a known resource with an unsupported method.
    pub(crate) fn method_not_allowed() -> GraphError {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            "The HTTP method is not allowed for the requested resource.",
        )
    }

    /// 400 for a body that is not the JSON expected.
    pub(crate) fn bad_body(reason: impl std::fmt::Display) -> GraphError {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format. ({reason})"),
        )
    }

    /// Render the envelope. `innerError` always carries `date` (no `Z`, no fraction),
    /// `request-id` and `client-request-id`; a 429 adds the throttling fields of §2.2.
    pub(crate) fn body(&self, now: DateTime<Utc>, request_id: &str, client_request_id: &str) -> Value {
        let mut inner = Map::new();
        inner.insert("date".into(), graph_date(now).into());
        inner.insert("request-id".into(), request_id.into());
        inner.insert("client-request-id".into(), client_request_id.into());
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            inner.insert("code".into(), "429".into());
            inner.insert("message".into(), "Please retry after".into());
            inner.insert("status".into(), "429".into());
        }
        let mut error = Map::new();
        error.insert("code".into(), self.code.clone().into());
        error.insert("message".into(), self.message.clone().into());
        if !self.details.is_empty() {
            error.insert("details".into(), Value::Array(self.details.clone()));
        }
        error.insert("innerError".into(), Value::Object(inner));
        json!({ "error": error })
    }
}

/// `innerError.date`: `2023-12-12T14:14:50`, no zone, no fraction (contract §2.1).
pub(crate) fn graph_date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// Graph timestamps on objects: `2025-01-01T00:00:00Z` (whole seconds).
pub(crate) fn graph_timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Graph timestamps with sub-second precision, as Entra returns for password credentials
/// (`2025-01-01T00:00:00.1234567Z`); seven digits like .NET.
pub(crate) fn graph_timestamp_precise(t: DateTime<Utc>) -> String {
    let ticks = t.timestamp_subsec_nanos() / 100;
    format!("{}.{:07}Z", t.format("%Y-%m-%dT%H:%M:%S"), ticks)
}

/// A token-endpoint error (contract §1.1): `error`, `error_description` starting with
/// `AADSTS<code>:` and ending with the trace, correlation and timestamp lines joined by
/// `\r\n`, `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`.
#[derive(Debug, Clone)]
pub(crate) struct TokenError {
    pub status: StatusCode,
    pub error: &'static str,
    pub code: u32,
    pub message: String,
    pub fault: Option<&'static str>,
    pub retry_after: Option<f64>,
}

impl TokenError {
    pub(crate) fn new(status: u16, error: &'static str, code: u32, message: impl Into<String>) -> TokenError {
        TokenError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            error,
            code,
            message: message.into(),
            fault: None,
            retry_after: None,
        }
    }

    pub(crate) fn body(
        &self,
        now: DateTime<Utc>,
        trace_id: &str,
        correlation_id: &str,
        authority: &str,
    ) -> Value {
        let timestamp = now.format("%Y-%m-%d %H:%M:%SZ").to_string();
        json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
                self.code, self.message
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("{authority}/error?code={}", self.code),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn envelope_has_inner_error_fields() {
        let now = Utc.with_ymd_and_hms(2023, 12, 12, 14, 14, 50).unwrap();
        let body = GraphError::not_found("x").body(now, "r", "c");
        assert_eq!(body["error"]["innerError"]["date"], "2023-12-12T14:14:50");
        assert_eq!(body["error"]["innerError"]["request-id"], "r");
        assert_eq!(body["error"]["innerError"]["client-request-id"], "c");
        assert!(body["error"].get("details").is_none());
    }

    #[test]
    fn token_error_description_layout() {
        let now = Utc.with_ymd_and_hms(2016, 1, 9, 2, 2, 12).unwrap();
        let body = TokenError::new(400, "invalid_scope", 70011, "bad").body(now, "t", "c", "https://h");
        assert_eq!(
            body["error_description"],
            "AADSTS70011: bad\r\nTrace ID: t\r\nCorrelation ID: c\r\nTimestamp: 2016-01-09 02:02:12Z"
        );
        assert_eq!(body["timestamp"], "2016-01-09 02:02:12Z");
        assert_eq!(body["error_uri"], "https://h/error?code=70011");
    }
}
