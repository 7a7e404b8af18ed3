//! Reconcile errors: one variant per failed action, a stable PascalCase `category()` used as
//! Event reason and metric label, and the retry hint the error policy reads.

use crate::idp::azure::{ConfigError, GraphError};
use kube::runtime::finalizer;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read {what}: {source}")]
    ReadObject {
        what: String,
        #[source]
        source: kube::Error,
    },

    #[error("failed to update the status: {0}")]
    PatchStatus(#[source] kube::Error),

    #[error("failed to write Secret {name}: {source}")]
    WriteSecret {
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("invalid provider configuration: {0}")]
    ProviderConfig(#[source] ConfigError),

    #[error("failed to register the application at the provider: {0}")]
    RegisterApplication(#[source] GraphError),

    #[error("failed to update the application at the provider: {0}")]
    UpdateApplication(#[source] GraphError),

    #[error("failed to ensure the service principal: {0}")]
    EnsureServicePrincipal(#[source] GraphError),

    #[error("failed to issue a credential: {0}")]
    IssueCredential(#[source] GraphError),

    #[error("failed to revoke credential {key_id}: {source}")]
    RevokeCredential {
        key_id: String,
        #[source]
        source: GraphError,
    },

    #[error("failed to read the application at the provider: {0}")]
    ReadApplication(#[source] GraphError),

    #[error("failed to delete the application at the provider: {0}")]
    DeleteApplication(#[source] GraphError),

    #[error("application {id} is not in the provider's deleted items yet (replication lag); purging it again shortly")]
    PurgePending { id: String },

    #[error("{0} is not visible at the provider yet (replication lag); retrying")]
    NotReplicated(String),

    /// Graph refused a call (403) that the admin client's permission does not cover; the
    /// message names the permission that does (README, "Every Graph call").
    #[error("{what}: needs the Graph application permission {permission}, which the admin client lacks ({source})")]
    MissingPermission {
        what: String,
        permission: &'static str,
        #[source]
        source: GraphError,
    },

    #[error("failed to verify the provider: {0}")]
    VerifyProvider(#[source] GraphError),

    #[error("the object has no {0}")]
    MissingObjectKey(&'static str),

    // NB: boxed because finalizer::Error<Error> contains Error.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// The variant name: Event reason for failures and the `result` label of metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::ReadObject { .. } => "ReadObject",
            Error::PatchStatus(_) => "PatchStatus",
            Error::WriteSecret { .. } => "WriteSecret",
            Error::ProviderConfig(_) => "ProviderConfig",
            Error::RegisterApplication(_) => "RegisterApplication",
            Error::UpdateApplication(_) => "UpdateApplication",
            Error::EnsureServicePrincipal(_) => "EnsureServicePrincipal",
            Error::IssueCredential(_) => "IssueCredential",
            Error::RevokeCredential { .. } => "RevokeCredential",
            Error::ReadApplication(_) => "ReadApplication",
            Error::DeleteApplication(_) => "DeleteApplication",
            Error::PurgePending { .. } => "PurgePending",
            Error::NotReplicated(_) => "NotReplicated",
            Error::MissingPermission { .. } => "InsufficientPermissions",
            Error::VerifyProvider(_) => "VerifyProvider",
            Error::MissingObjectKey(_) => "MissingObjectKey",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.category(),
                finalizer::Error::AddFinalizer(_) | finalizer::Error::RemoveFinalizer(_) => "Finalizer",
                finalizer::Error::UnnamedObject => "MissingObjectKey",
                finalizer::Error::InvalidFinalizer => "Finalizer",
            },
        }
    }

    /// The provider error inside, if any.
    pub fn graph_error(&self) -> Option<&GraphError> {
        match self {
            Error::RegisterApplication(e)
            | Error::UpdateApplication(e)
            | Error::EnsureServicePrincipal(e)
            | Error::IssueCredential(e)
            | Error::ReadApplication(e)
            | Error::DeleteApplication(e)
            | Error::VerifyProvider(e)
            | Error::RevokeCredential { source: e, .. }
            | Error::MissingPermission { source: e, .. } => Some(e),
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.graph_error(),
                _ => None,
            },
            _ => None,
        }
    }

    /// A provider answer retrying soon will not change (400, 403, 404 on a settled object,
    /// ...): backed off slower than a transient failure.
    pub fn is_persistent(&self) -> bool {
        match self.graph_error() {
            Some(GraphError::Token(_)) | None => false,
            Some(g) => !g.is_transient() && !matches!(g, GraphError::Throttled { .. }),
        }
    }

    /// When the provider said when to come back (429 / 503 with Retry-After).
    pub fn retry_after(&self) -> Option<Duration> {
        match self.graph_error()? {
            GraphError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl From<finalizer::Error<Error>> for Error {
    fn from(e: finalizer::Error<Error>) -> Self {
        Error::Finalizer(Box::new(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
