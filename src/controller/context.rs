//! The state shared by every reconciliation: the Kubernetes client, the one event
//! recorder, metrics, the provider clients and the operator's settings.

use super::application::changes::ChangeTracker;
use super::application::desired::cluster_tag;
use super::providers::ProviderClients;
use crate::config::RunConfig;
use crate::idp::azure::InventoryConfig;
use crate::metrics::Metrics;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Settings the reconcilers read.
#[derive(Clone, Debug)]
pub struct Settings {
    pub cluster_name: String,
    pub resync_period: Duration,
    pub activation_timeout: Duration,
    /// Where provider admin Secrets may be read (see `--provider-secret-namespaces`).
    pub provider_secret_namespaces: Vec<String>,
    /// The federated token file (see `--federated-token-file`).
    pub federated_token_file: std::path::PathBuf,
}

impl Settings {
    /// Provider inventories are refreshed three times per resync period (5 s to 5 min), so a
    /// resync sees changes at most a third of a period late; every object is still read
    /// directly once an hour.
    pub fn inventory(&self) -> InventoryConfig {
        InventoryConfig {
            tag: cluster_tag(&self.cluster_name),
            max_age: (self.resync_period / 3).clamp(Duration::from_secs(5), Duration::from_secs(300)),
            reverify_after: Duration::from_secs(3600),
        }
    }
}

impl From<&RunConfig> for Settings {
    fn from(c: &RunConfig) -> Self {
        Self {
            cluster_name: c.cluster_name.clone(),
            resync_period: c.resync_period,
            activation_timeout: c.activation_timeout,
            provider_secret_namespaces: c.provider_secret_namespaces(),
            federated_token_file: c.federated_token_file.clone(),
        }
    }
}

/// Shared by all reconcilers of all kinds.
pub struct Context {
    pub client: Client,
    /// One recorder for the process, so repeated Events aggregate into series.
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub providers: ProviderClients,
    pub settings: Settings,
    /// Applications edited since their last Ready pass (those skip the inventory).
    pub application_edits: ChangeTracker,
    /// Signs and verifies the credential records (crate::secret::mac).
    pub record_key: crate::secret::mac::RecordKey,
    /// Consecutive failures per object, for the error policy's backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        instance: Option<String>,
        metrics: Arc<Metrics>,
        settings: Settings,
        extra_ca_pem: Option<Vec<u8>>,
        record_key: crate::secret::mac::RecordKey,
    ) -> Self {
        let reporter = Reporter {
            controller: "dcr-operator".into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            providers: ProviderClients::new(
                metrics.clone(),
                extra_ca_pem,
                settings.inventory(),
                settings.provider_secret_namespaces.clone(),
                settings.federated_token_file.clone(),
            ),
            application_edits: ChangeTracker::default(),
            client,
            metrics,
            settings,
            record_key,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The time reconcilers compute with.
    pub fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    /// Records a failure of `key` and returns how many in a row.
    pub fn record_failure(&self, key: &str) -> u32 {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Forgets the failures of `key` after a success.
    pub fn record_success(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}
