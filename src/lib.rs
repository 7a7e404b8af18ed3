//! dcr-operator: OAuth clients at an identity provider, delivered as Kubernetes Secrets.
//!
//! Data flows provider -> strategy -> application -> Secret, and the modules read in that order:
//! - [`crd`]: the three custom resources (API types only, no client calls) and their conditions;
//! - [`idp`]: identity-provider backends (Microsoft Entra ID through Microsoft Graph first);
//! - [`controller`]: one reconciler per kind, the shared context, errors, events, status;
//! - [`secret`]: the credential Secret (rendering, ownership, the record of live keys);
//! - [`config`], [`metrics`], [`telemetry`], [`leader`]: the process around them;
//! - [`sensitive`]: the redacting string type every secret value travels in;
//! - [`plugin`]: the kubectl plugin (`kubectl dcr`, binary `kubectl-dcr`).

// No panics in the operator: one would stop reconciling for every namespace. Tests may.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]
pub mod config;
pub mod controller;
pub mod crd;
pub mod idp;
pub mod leader;
pub mod metrics;
pub mod plugin;
pub mod secret;
pub mod sensitive;
pub mod telemetry;
