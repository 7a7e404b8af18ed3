//! The request log (`GET /_emulator/requests`): one record per token or Graph request, with
//! counts per operation. Bodies are never recorded, so no secret or token ends up here.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Records kept (oldest dropped first); counts are never dropped.
const MAX_RECORDS: usize = 100_000;

/// One request as the emulator saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// Arrival order, from 1.
    pub seq: u64,
    /// Arrival, real wall-clock time (compare with `Retry-After`, which is in real seconds).
    pub time: DateTime<Utc>,
    /// Arrival on the emulated clock.
    pub emulated_time: DateTime<Utc>,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Operation name, e.g. `application.create`, `application.addPassword`, `token.v2`.
    pub operation: String,
    /// Response status; 0 when the connection was dropped.
    pub status: u16,
    /// Calling application (from the bearer token, or the token request's `client_id`).
    pub app_id: Option<String>,
    /// Tenant of the call.
    pub tenant_id: Option<String>,
    /// `request-id` (Graph) / `x-ms-request-id` and `trace_id` (token endpoint).
    pub request_id: String,
    /// `client-request-id` as sent by the client, if any.
    pub client_request_id: Option<String>,
    /// Injected or emulated fault: `dropped`, `injected-503`, `injected-504`,
    /// `injected-429`, `throttled`, `latency`, `held` (processed, answer held back; the
    /// record is written when the hold starts and `duration_ms` excludes the hold), `lost`
    /// (processed, connection dropped instead of answered).
    pub fault: Option<String>,
    /// `Retry-After` sent, in seconds.
    pub retry_after: Option<f64>,
    /// Time spent answering (real milliseconds, including injected latency).
    pub duration_ms: f64,
}

/// Totals for one operation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationCount {
    /// Requests seen.
    pub total: u64,
    /// Requests by response status (`"0"` = dropped).
    pub by_status: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    seq: u64,
    records: VecDeque<RequestRecord>,
    counts: BTreeMap<String, OperationCount>,
}

impl RequestLog {
    pub(crate) fn push(&mut self, mut r: RequestRecord) {
        self.seq += 1;
        r.seq = self.seq;
        let c = self.counts.entry(r.operation.clone()).or_default();
        c.total += 1;
        *c.by_status.entry(r.status.to_string()).or_default() += 1;
        if self.records.len() == MAX_RECORDS {
            self.records.pop_front();
        }
        self.records.push_back(r);
    }

    pub(crate) fn records(&self) -> Vec<RequestRecord> {
        self.records.iter().cloned().collect()
    }

    pub(crate) fn counts(&self) -> BTreeMap<String, OperationCount> {
        self.counts.clone()
    }

    pub(crate) fn clear(&mut self) {
        self.records.clear();
        self.counts.clear();
    }
}
