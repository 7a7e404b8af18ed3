//! Identity-provider backends.

pub mod azure;
pub mod oidc;
