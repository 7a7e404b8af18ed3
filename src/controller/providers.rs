//! One Graph client per DcrProvider, shared by every reconciliation that talks to it, so
//! the token cache and the request budget are per provider. A client is rebuilt when the
//! provider's spec (generation) or its admin Secret (resourceVersion) changes.

use crate::crd::common::SecretKeyRef;
use crate::crd::provider::{
    AdminCredential, AzureCloud, DcrProvider, ProviderType, RequestBudget, TenantSize,
};
use crate::idp::azure::backend::Entra;
use crate::idp::azure::{
    self, ClientCredential, ConfigError, GraphClient, GraphClientConfig, InventoryConfig, RateLimit,
};
use crate::idp::Backend;
use crate::metrics::Metrics;
use crate::sensitive::SecretString;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use url::Url;

/// Why a provider has no client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("spec.initialClient.clientSecretRef.namespace {namespace:?} is not a namespace the operator reads provider Secrets from (allowed: {allowed}; set at install time with --provider-secret-namespaces); the Secret was not read")]
    SecretNamespaceNotAllowed { namespace: String, allowed: String },
    #[error("Secret {namespace}/{name} does not exist")]
    SecretNotFound { namespace: String, name: String },
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    SecretKeyNotFound {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("{0}")]
    CredentialChoice(&'static str),
    #[error("spec.azureAD is missing")]
    MissingAzureSettings,
    #[error("spec.initialClient is missing")]
    MissingInitialClient,
    /// The Application pipeline speaks only Microsoft Graph so far.
    #[error("Applications on OIDC providers are not served yet: this operator version registers OAuth clients only at AzureAD providers (the OIDC provider itself is verified)")]
    NotServedYet,
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("invalid URL in spec.azureAD: {0}")]
    Url(#[from] url::ParseError),
    #[error("cannot read Secret {namespace}/{name}: {source}")]
    Kube {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

#[derive(PartialEq, Eq, Clone)]
struct Fingerprint {
    uid: String,
    generation: i64,
    secret_version: String,
}

/// The cache of provider clients.
pub struct ProviderClients {
    observer: Arc<Metrics>,
    extra_ca_pem: Option<Vec<u8>>,
    /// How each client keeps its inventory of this operator's objects.
    inventory: InventoryConfig,
    /// The only namespaces admin Secrets are read from.
    secret_namespaces: Vec<String>,
    /// The operator's federated token file, for providers using `federatedToken`.
    federated_token_file: PathBuf,
    cache: Mutex<HashMap<String, (Fingerprint, Arc<GraphClient>)>>,
}

impl ProviderClients {
    pub fn new(
        observer: Arc<Metrics>,
        extra_ca_pem: Option<Vec<u8>>,
        inventory: InventoryConfig,
        secret_namespaces: Vec<String>,
        federated_token_file: PathBuf,
    ) -> Self {
        Self {
            observer,
            extra_ca_pem,
            inventory,
            secret_namespaces,
            federated_token_file,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The provider boundary for `provider`; its calls take `namespace`'s fair share of
    /// the provider's request budget. The one place a backend is chosen.
    pub async fn backend_for(
        &self,
        kube: &Client,
        provider: &DcrProvider,
        namespace: &str,
    ) -> Result<Backend, ClientError> {
        let graph = self.client_for(kube, provider).await?;
        Ok(Backend::Entra(Entra::new(
            graph.for_namespace(namespace),
            provider,
        )))
    }

    /// The client for `provider`, reading its admin Secret (one GET) to notice changes.
    /// A Secret outside the allowed namespaces is never read: a provider must not make the
    /// operator send an app team's Secret to the endpoint the provider names.
    pub async fn client_for(
        &self,
        kube: &Client,
        provider: &DcrProvider,
    ) -> Result<Arc<GraphClient>, ClientError> {
        let initial = match (provider.spec.type_, &provider.spec.initial_client) {
            (ProviderType::AzureAD, Some(initial)) => initial,
            (ProviderType::AzureAD, None) => return Err(ClientError::MissingInitialClient),
            (ProviderType::Oidc, _) => return Err(ClientError::NotServedYet),
        };
        let credential = match initial.credential() {
            Ok(c) => c,
            Err(message) => {
                self.forget(&provider.name_any());
                return Err(ClientError::CredentialChoice(message));
            }
        };
        let secret = match credential {
            AdminCredential::Secret(secret_ref) => {
                if let Err(e) = secret_namespace_allowed(&self.secret_namespaces, secret_ref) {
                    // A client built before the namespace was refused must not stay usable.
                    self.forget(&provider.name_any());
                    return Err(e);
                }
                Some((read_secret(kube, secret_ref).await?, secret_ref))
            }
            // The file is read at each token request, not here: the client stays.
            AdminCredential::FederatedToken => None,
        };
        let fingerprint = Fingerprint {
            uid: provider.uid().unwrap_or_default(),
            generation: provider.metadata.generation.unwrap_or_default(),
            secret_version: secret
                .as_ref()
                .and_then(|(s, _)| s.resource_version())
                .unwrap_or_default(),
        };
        let name = provider.name_any();
        if let Some((fp, client)) = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&name)
        {
            if *fp == fingerprint {
                return Ok(client.clone());
            }
        }
        let credential = match &secret {
            Some((secret, secret_ref)) => ClientCredential::Secret(secret_value(secret, secret_ref)?),
            None => ClientCredential::AssertionFile(self.federated_token_file.clone()),
        };
        let mut config = graph_config(provider, credential, self.extra_ca_pem.clone())?;
        config.inventory = Some(self.inventory.clone());
        let client = Arc::new(GraphClient::with_observer(config, self.observer.clone())?);
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, (fingerprint, client.clone()));
        Ok(client)
    }

    /// The value of a provider's credential Secret, read only from the allowed namespaces
    /// (the OIDC registration credential; Entra's admin secret goes through `client_for`).
    pub async fn read_provider_secret(
        &self,
        kube: &Client,
        r: &SecretKeyRef,
    ) -> Result<SecretString, ClientError> {
        secret_namespace_allowed(&self.secret_namespaces, r)?;
        let secret = read_secret(kube, r).await?;
        secret_value(&secret, r)
    }

    /// The CAs trusted besides the web PKI roots, for provider clients built elsewhere.
    pub fn extra_ca_pem(&self) -> Option<Vec<u8>> {
        self.extra_ca_pem.clone()
    }

    /// Drops the client of a deleted provider.
    pub fn forget(&self, provider_name: &str) {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(provider_name);
    }
}

/// Whether `r` names a namespace admin Secrets may be read from.
fn secret_namespace_allowed(allowed: &[String], r: &SecretKeyRef) -> Result<(), ClientError> {
    if allowed.contains(&r.namespace) {
        return Ok(());
    }
    Err(ClientError::SecretNamespaceNotAllowed {
        namespace: r.namespace.clone(),
        allowed: allowed.join(", "),
    })
}

async fn read_secret(kube: &Client, r: &SecretKeyRef) -> Result<Secret, ClientError> {
    let api: Api<Secret> = Api::namespaced(kube.clone(), &r.namespace);
    match api.get_opt(&r.name).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(ClientError::SecretNotFound {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        }),
        Err(source) => Err(ClientError::Kube {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            source,
        }),
    }
}

fn secret_value(secret: &Secret, r: &SecretKeyRef) -> Result<SecretString, ClientError> {
    let missing = || ClientError::SecretKeyNotFound {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        key: r.key.clone(),
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .ok_or_else(missing)?;
    let value = String::from_utf8(bytes.0.clone()).map_err(|_| missing())?;
    let value = value.trim_end_matches(['\n', '\r']).to_string();
    if value.is_empty() {
        return Err(missing());
    }
    Ok(SecretString::new(value))
}

/// The Graph client configuration a DcrProvider describes.
pub fn graph_config(
    provider: &DcrProvider,
    credential: ClientCredential,
    extra_ca_pem: Option<Vec<u8>>,
) -> Result<GraphClientConfig, ClientError> {
    let initial = match (provider.spec.type_, &provider.spec.initial_client) {
        (ProviderType::AzureAD, Some(initial)) => initial,
        (ProviderType::AzureAD, None) => return Err(ClientError::MissingInitialClient),
        (ProviderType::Oidc, _) => return Err(ClientError::NotServedYet),
    };
    let azure = provider
        .spec
        .azure_ad
        .as_ref()
        .ok_or(ClientError::MissingAzureSettings)?;
    let mut config = GraphClientConfig::new(azure.tenant_id.clone(), initial.client_id.clone(), credential);
    config.cloud = match azure.cloud {
        AzureCloud::AzurePublic => azure::AzureCloud::AzurePublic,
        AzureCloud::AzureUSGovernment => azure::AzureCloud::AzureUSGovernment,
        AzureCloud::AzureChina => azure::AzureCloud::AzureChina,
    };
    config.authority_host = azure.authority_host.as_deref().map(Url::parse).transpose()?;
    config.graph_endpoint = azure.graph_endpoint.as_deref().map(Url::parse).transpose()?;
    config.extra_ca_pem = extra_ca_pem;
    if let Some(budget) = &provider.spec.request_budget {
        config.budget = request_budget(budget).0;
    }
    config.validate()?;
    Ok(config)
}

/// The client's budget for `spec.requestBudget`, and what of it was not taken as written
/// (for the provider's Ready message). Graph's limits bound every field: the schema refuses
/// writes above 3,000, resource units above the tenant size's quota are lowered here.
pub fn request_budget(spec: &RequestBudget) -> (azure::RequestBudget, Vec<String>) {
    let size = match spec.tenant_size.unwrap_or_default() {
        TenantSize::Small => azure::TenantSize::Small,
        TenantSize::Medium => azure::TenantSize::Medium,
        TenantSize::Large => azure::TenantSize::Large,
    };
    let mut budget = azure::RequestBudget::documented(size);
    if let Some(ru) = spec.resource_units {
        budget.resource_units = ru.max(1);
    }
    if let Some(writes) = spec.writes {
        budget.writes = writes.max(1);
    }
    let mut notes = budget.clamp_to_graph(size);
    match (spec.qps, spec.burst) {
        (Some(qps), burst) => {
            budget.requests = Some(RateLimit {
                qps: f64::from(qps.clamp(1, 1000)),
                burst: burst.unwrap_or(qps).clamp(1, 10_000),
            })
        }
        (None, Some(_)) => notes.push("burst without qps has no effect".into()),
        (None, None) => {}
    }
    (budget, notes)
}

/// What `spec.requestBudget` asked for that the client does not do as written: `None`
/// when everything was taken as written.
pub fn request_budget_note(provider: &DcrProvider) -> Option<String> {
    let (_, notes) = request_budget(provider.spec.request_budget.as_ref()?);
    (!notes.is_empty()).then(|| format!("spec.requestBudget: {}", notes.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_budgets_default_to_graphs_limits_and_never_exceed_them() {
        let (b, notes) = request_budget(&RequestBudget::default());
        assert_eq!((b.resource_units, b.writes, b.requests), (3_325, 2_850, None));
        assert!(notes.is_empty());
        let spec = RequestBudget {
            tenant_size: Some(TenantSize::Medium),
            resource_units: Some(8_000),
            writes: Some(600),
            qps: Some(10),
            burst: None,
        };
        let (b, notes) = request_budget(&spec);
        assert_eq!((b.resource_units, b.writes), (5_000, 600));
        assert_eq!(b.requests, Some(RateLimit { qps: 10.0, burst: 10 }));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("above Graph's 5000"), "{notes:?}");
        let large = RequestBudget {
            tenant_size: Some(TenantSize::Large),
            ..RequestBudget::default()
        };
        assert_eq!(request_budget(&large).0.resource_units, 7_600);
        let hostile = RequestBudget {
            resource_units: Some(0),
            writes: Some(u32::MAX),
            burst: Some(5),
            ..RequestBudget::default()
        };
        let (b, notes) = request_budget(&hostile);
        assert_eq!((b.resource_units, b.writes, b.requests), (1, 3_000, None));
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    fn secret_ref(namespace: &str) -> SecretKeyRef {
        SecretKeyRef {
            namespace: namespace.into(),
            name: "admin".into(),
            key: "client_secret".into(),
        }
    }

    #[test]
    fn admin_secrets_are_read_only_from_the_allowed_namespaces() {
        let allowed = vec!["dcr-system".to_string(), "idp-admin".to_string()];
        assert!(secret_namespace_allowed(&allowed, &secret_ref("dcr-system")).is_ok());
        assert!(secret_namespace_allowed(&allowed, &secret_ref("idp-admin")).is_ok());
        let e = secret_namespace_allowed(&allowed, &secret_ref("orders")).unwrap_err();
        let message = e.to_string();
        assert!(
            message.starts_with("spec.initialClient.clientSecretRef.namespace \"orders\""),
            "{message}"
        );
        assert!(message.contains("allowed: dcr-system, idp-admin"), "{message}");
    }
}
