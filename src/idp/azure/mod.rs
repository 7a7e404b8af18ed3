//! Microsoft Entra ID through Microsoft Graph v1.0.
//!
//! [`GraphClient`] is the one type the controllers use to talk to Entra: typed calls for
//! applications, passwords and service principals (see `shared/graph-contract.md` for the
//! wire contract), behind
//! - a client-credentials token cache ([`token`]): one token per client, refreshed 3 minutes
//!   before expiry, single-flight, replaced once when Graph answers 401;
//! - a client-side token bucket ([`ratelimit`]) that also pauses every call after a server
//!   `Retry-After`;
//! - one retry policy ([`retry`]): `Retry-After` on 429/503, jittered exponential backoff on
//!   5xx and transport errors, replication-lag retries on just-created objects, and no
//!   blind repeat of a non-idempotent call;
//! - a `tracing` span per call (`graph.request`: op, method, status, attempt, `request-id`,
//!   `client-request-id`) and a [`GraphObserver`] hook for metrics.
//!
//! Secrets (client secret, issued passwords, bearer tokens) travel only as
//! [`crate::sensitive::SecretString`] and never appear in logs, errors or `Debug` output.
//!
//! Everything is built from [`GraphClientConfig`] (URLs, tenant, credential), so tests point
//! it at the Graph emulator by configuration.

pub mod backend;
pub mod client;
pub mod config;
pub mod desired;
pub mod error;
pub mod inventory;
pub mod models;
pub mod observer;
pub mod ratelimit;
pub mod retry;
pub mod settle;
pub mod token;

pub use client::GraphClient;
pub use config::{
    AzureCloud, ClientCredential, GraphClientConfig, RateLimit, RequestBudget, RetryConfig, TenantSize,
};
pub use error::{AadDiagnostics, ConfigError, GraphError, GraphErrorInfo, TokenError};
pub use inventory::InventoryConfig;
pub use models::{
    AddPasswordRequest, Application, ApplicationPatch, DeltaCursor, DeltaItem, DeltaRound,
    EnsuredApplication, IssuedPassword, PasswordCredential, RemovedReason, RequiredResourceAccess,
    ResourceAccess, ServicePrincipal, UpsertOutcome, WebApplication,
};
pub use observer::{GraphObserver, NoopObserver};
pub use retry::Freshness;
