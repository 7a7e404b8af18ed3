//! Prometheus metrics (`/metrics`), with bounded labels: kinds, error categories, Graph
//! operations and status codes; per-Application series only for what cert-manager users
//! expect per certificate (expiry, readiness), removed when the Application goes.

use crate::idp::azure::GraphObserver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: &'static str,
    /// `success`, or the error category.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GraphLabels {
    pub operation: &'static str,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplicationLabels {
    pub namespace: String,
    pub name: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_duration: Family<KindLabels, Histogram>,
    graph_requests: Family<GraphLabels, Counter>,
    graph_throttled: Family<OperationLabels, Counter>,
    credential_expiry: Family<ApplicationLabels, Gauge<f64, AtomicU64>>,
    application_ready: Family<ApplicationLabels, Gauge>,
    orphaned_applications: Family<ProviderLabels, Gauge>,
    orphans_skipped: Family<ProviderLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dcr");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciliations",
            "Reconciliations by kind and result",
            reconciles.clone(),
        );
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
        });
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciliations by kind",
            reconcile_duration.clone(),
        );
        let graph_requests = Family::<GraphLabels, Counter>::default();
        registry.register(
            "graph_requests",
            "HTTP exchanges with Microsoft Graph and the token endpoints, by operation and status",
            graph_requests.clone(),
        );
        let graph_throttled = Family::<OperationLabels, Counter>::default();
        registry.register(
            "graph_throttled",
            "Requests the identity provider throttled (429, or 503 with Retry-After)",
            graph_throttled.clone(),
        );
        let credential_expiry = Family::<ApplicationLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "application_credential_expiration_timestamp_seconds",
            "When the secret delivered for an Application expires (Unix time)",
            credential_expiry.clone(),
        );
        let application_ready = Family::<ApplicationLabels, Gauge>::default();
        registry.register(
            "application_ready",
            "1 when an Application is Ready, 0 otherwise",
            application_ready.clone(),
        );
        let orphaned_applications = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "orphaned_applications",
            "Applications at the provider tagged by this cluster that no Application owns",
            orphaned_applications.clone(),
        );
        let orphans_skipped = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "orphans_skipped",
            "Applications tagged by this cluster with no Application that the orphan sweep keeps: not this cluster's uniqueName, or not owned by the operator",
            orphans_skipped.clone(),
        );
        Self {
            registry,
            orphaned_applications,
            orphans_skipped,
            reconciles,
            reconcile_duration,
            graph_requests,
            graph_throttled,
            credential_expiry,
            application_ready,
        }
    }
}

impl Metrics {
    /// Starts timing one reconciliation; the duration is recorded when the timer drops.
    pub fn reconcile_timer(&self, kind: &'static str) -> ReconcileTimer<'_> {
        ReconcileTimer {
            metrics: self,
            kind,
            start: Instant::now(),
        }
    }

    pub fn reconciled(&self, kind: &'static str, result: Result<(), &'static str>) {
        let result = match result {
            Ok(()) => "success".to_string(),
            Err(category) => category.to_string(),
        };
        self.reconciles
            .get_or_create(&ReconcileLabels { kind, result })
            .inc();
    }

    pub fn set_application(&self, namespace: &str, name: &str, ready: bool, expires_unix: Option<f64>) {
        let labels = ApplicationLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.application_ready
            .get_or_create(&labels)
            .set(i64::from(ready));
        match expires_unix {
            Some(t) => {
                self.credential_expiry.get_or_create(&labels).set(t);
            }
            None => {
                self.credential_expiry.remove(&labels);
            }
        }
    }

    pub fn forget_application(&self, namespace: &str, name: &str) {
        let labels = ApplicationLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.application_ready.remove(&labels);
        self.credential_expiry.remove(&labels);
    }

    pub fn set_orphaned_applications(&self, provider: &str, count: u32) {
        let labels = ProviderLabels {
            provider: provider.into(),
        };
        self.orphaned_applications
            .get_or_create(&labels)
            .set(i64::from(count));
    }

    pub fn set_orphans_skipped(&self, provider: &str, count: u32) {
        let labels = ProviderLabels {
            provider: provider.into(),
        };
        self.orphans_skipped.get_or_create(&labels).set(i64::from(count));
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; a metric that could not be encoded is left out.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Records a reconciliation's duration on drop.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        let elapsed: Duration = self.start.elapsed();
        self.metrics
            .reconcile_duration
            .get_or_create(&KindLabels { kind: self.kind })
            .observe(elapsed.as_secs_f64());
    }
}

impl GraphObserver for Metrics {
    fn on_response(&self, op: &'static str, status: u16) {
        self.graph_requests
            .get_or_create(&GraphLabels {
                operation: op,
                status: status.to_string(),
            })
            .inc();
    }

    fn on_transport_error(&self, op: &'static str, kind: &'static str) {
        self.graph_requests
            .get_or_create(&GraphLabels {
                operation: op,
                status: kind.to_string(),
            })
            .inc();
    }

    fn on_throttle(&self, op: &'static str, _retry_after: Option<Duration>) {
        self.graph_throttled
            .get_or_create(&OperationLabels { operation: op })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_reconciles_graph_requests_and_expiry() {
        let m = Metrics::default();
        m.reconciled("Application", Ok(()));
        m.reconciled("Application", Err("RegisterApplication"));
        m.on_response("application.upsert", 201);
        m.on_throttle("application.upsert", None);
        m.set_application("orders", "client", true, Some(1.9e9));
        drop(m.reconcile_timer("Application"));
        let text = m.encode();
        assert!(
            text.contains(r#"dcr_reconciliations_total{kind="Application",result="success"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"result="RegisterApplication""#));
        assert!(text.contains(r#"dcr_graph_requests_total{operation="application.upsert",status="201"} 1"#));
        assert!(text.contains(r#"dcr_graph_throttled_total{operation="application.upsert"} 1"#));
        assert!(text.contains(r#"dcr_application_credential_expiration_timestamp_seconds{namespace="orders",name="client"} 1900000000"#));
        assert!(text.contains(r#"dcr_reconcile_duration_seconds_count{kind="Application"} 1"#));
        m.forget_application("orders", "client");
        assert!(!m.encode().contains(r#"namespace="orders""#));
    }
}
