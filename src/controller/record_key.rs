//! Where the credential-record key lives: a Secret in the operator's own namespace
//! (`--record-key-secret`, default `dcr-operator-record-key`), created by the first
//! operator instance that finds none, and read by every replica. App teams cannot read
//! Secrets in the operator's namespace, so they cannot sign a record. Kept by the apiserver
//! (not a flag or a file the chart must generate) so that all replicas and every restart
//! agree on one key without an install step; a Helm `lookup` or kustomize could not keep a
//! random value across upgrades as simply.

use crate::secret::mac::{KeyError, RecordKey};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use std::time::Duration;

/// Default name of the key Secret.
pub const DEFAULT_SECRET_NAME: &str = "dcr-operator-record-key";
/// The data key holding the key bytes.
pub const DATA_KEY: &str = "key";

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("cannot read or create the record key Secret {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("the record key Secret {namespace}/{name} has no usable '{DATA_KEY}': {source}")]
    Invalid {
        namespace: String,
        name: String,
        source: KeyError,
    },
}

/// Reads the key Secret, creating it with a fresh key if there is none. Of two replicas
/// creating it at once, one wins and the other reads the winner's (409, then get).
pub async fn load_or_create(client: Client, namespace: &str, name: &str) -> Result<RecordKey, KeyStoreError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let api_error = |source| KeyStoreError::Api {
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    };
    let invalid = |source| KeyStoreError::Invalid {
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    };
    let found = match api.get_opt(name).await.map_err(api_error)? {
        Some(found) => found,
        None => {
            let fresh = new_secret(namespace, name, RecordKey::generate().map_err(invalid)?);
            match api.create(&PostParams::default(), &fresh).await {
                Ok(created) => {
                    tracing::info!(namespace, name, "created the credential-record key Secret");
                    created
                }
                Err(kube::Error::Api(e)) if e.code == 409 => api.get(name).await.map_err(api_error)?,
                Err(e) => return Err(api_error(e)),
            }
        }
    };
    let bytes = found
        .data
        .as_ref()
        .and_then(|d| d.get(DATA_KEY))
        .map(|b| b.0.as_slice())
        .unwrap_or_default();
    RecordKey::new(bytes).map_err(invalid)
}

/// [`load_or_create`] until it succeeds (the apiserver may not be reachable yet), backing
/// off from 1 s to 30 s and logging each failure.
pub async fn load(client: Client, namespace: &str, name: &str) -> RecordKey {
    let mut delay = Duration::from_secs(1);
    loop {
        match load_or_create(client.clone(), namespace, name).await {
            Ok(key) => return key,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "no credential-record key yet; the controllers wait for it")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

fn new_secret(namespace: &str, name: &str, key: Vec<u8>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            // Not the credential Secrets' managed-by label: this one has no owner to follow.
            labels: Some(
                [
                    ("app.kubernetes.io/name".to_string(), "dcr-operator".to_string()),
                    (
                        "app.kubernetes.io/component".to_string(),
                        "record-key".to_string(),
                    ),
                ]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some([(DATA_KEY.to_string(), ByteString(key))].into()),
        ..Default::default()
    }
}
