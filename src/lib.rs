//! dcr-operator: OAuth clients at an identity provider, delivered as Kubernetes Secrets.
//!
//! Data flows provider -> strategy -> application -> Secret, and the modules read in that order:
//! - [`crd`]: the three custom resources (API types only, no client calls) and their conditions;
//! - [`idp`]: identity-provider backends (Microsoft Entra ID through Microsoft Graph first);
//! - [`sensitive`]: the redacting string type every secret value travels in.

pub mod crd;
pub mod idp;
pub mod sensitive;
