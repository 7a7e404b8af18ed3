//! A dependency-free hook for metrics: the operator's Prometheus code implements
//! [`GraphObserver`] and counts Graph requests by operation and status, throttles and
//! client-side waits. All methods have empty defaults.

use std::time::Duration;

/// Receives one callback per HTTP exchange and per throttling event of a
/// [`super::GraphClient`]. Implementations must be cheap and must not block.
///
/// `op` is a stable operation name such as `application.upsert`, `application.addPassword`,
/// `servicePrincipal.create` or `token` (the token endpoint).
pub trait GraphObserver: Send + Sync {
    /// An HTTP answer arrived (every attempt, retries included).
    fn on_response(&self, op: &'static str, status: u16) {
        let _ = (op, status);
    }

    /// An attempt failed without an answer (`connect` or `interrupted`).
    fn on_transport_error(&self, op: &'static str, kind: &'static str) {
        let _ = (op, kind);
    }

    /// The server throttled a request (429, or 503 with `Retry-After`).
    fn on_throttle(&self, op: &'static str, retry_after: Option<Duration>) {
        let _ = (op, retry_after);
    }

    /// The client-side rate limit delayed a request by `waited`.
    fn on_rate_limited(&self, op: &'static str, waited: Duration) {
        let _ = (op, waited);
    }

    /// A retry was scheduled (`reason` is `RetryAfter`, `Throttled`, `ServerError`,
    /// `Transport`, `Replication` or `TokenRefresh`).
    fn on_retry(&self, op: &'static str, reason: &'static str, delay: Duration) {
        let _ = (op, reason, delay);
    }
}

impl std::fmt::Debug for dyn GraphObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GraphObserver")
    }
}

/// The observer used when none is installed.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl GraphObserver for NoopObserver {}
