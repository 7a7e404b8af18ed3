//! Reconcile errors: one variant per failed action, a stable PascalCase `category()` used as
//! Event reason and metric label, and the retry hint the error policy reads.

use crate::idp::{Failure, ProviderError, Step, Throttler};
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
    ProviderConfig(String),

    /// A provider call failed at `step` (the Event reason names the step).
    #[error("{0}")]
    Provider(#[source] Failure),

    /// The provider is not consistent yet (replication lag): retried with backoff.
    #[error("{}", .0.error)]
    Pending(#[source] Failure),

    /// The provider refused a call the admin client's permission does not cover; the
    /// message names the permission that does (README, "Every Graph call").
    #[error("{}", .0.error)]
    MissingPermission(#[source] Failure),

    #[error("failed to verify the provider: {0}")]
    VerifyProvider(#[source] ProviderError),

    #[error("the object has no {0}")]
    MissingObjectKey(&'static str),

    #[error("{0}")]
    CleanupBlocked(String),

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
            Error::Provider(f) => f.step.category(),
            Error::Pending(f) if f.step == Step::Delete => "PurgePending",
            Error::Pending(_) => "NotReplicated",
            Error::MissingPermission(_) => "InsufficientPermissions",
            Error::VerifyProvider(_) => "VerifyProvider",
            Error::MissingObjectKey(_) => "MissingObjectKey",
            Error::CleanupBlocked(_) => "CleanupBlocked",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.category(),
                finalizer::Error::AddFinalizer(_) | finalizer::Error::RemoveFinalizer(_) => "Finalizer",
                finalizer::Error::UnnamedObject => "MissingObjectKey",
                finalizer::Error::InvalidFinalizer => "Finalizer",
            },
        }
    }

    /// The provider error inside, if any.
    pub fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            Error::Provider(f) | Error::Pending(f) | Error::MissingPermission(f) => Some(&f.error),
            Error::VerifyProvider(e) => Some(e),
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.provider_error(),
                _ => None,
            },
            _ => None,
        }
    }

    /// A provider answer retrying soon will not change (400, 403, 404 on a settled object,
    /// ...): backed off slower than a transient failure.
    pub fn is_persistent(&self) -> bool {
        self.provider_error().is_some_and(ProviderError::is_persistent)
    }

    /// When the provider (or the request budget) said when to come back; the token
    /// endpoint's wait is honoured by the pass itself (see `application::throttled`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self.provider_error()?.throttled_for()? {
            (_, Throttler::TokenEndpoint) => None,
            (wait, _) => Some(wait),
        }
    }
}

/// A failed provider call, filed by what the pipeline does about it.
impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        match &f.error {
            ProviderError::Pending { .. } => Error::Pending(f),
            ProviderError::Denied {
                permission: Some(_), ..
            } => Error::MissingPermission(f),
            _ => Error::Provider(f),
        }
    }
}

impl From<finalizer::Error<Error>> for Error {
    fn from(e: finalizer::Error<Error>) -> Self {
        Error::Finalizer(Box::new(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(step: Step, error: ProviderError) -> Error {
        Failure::new(step, error).into()
    }

    #[test]
    fn provider_failures_keep_their_step_as_category_and_message_prefix() {
        let e = failure(
            Step::Register,
            ProviderError::Denied {
                permission: None,
                message: "forbidden: application.addOwner: HTTP 403".into(),
            },
        );
        assert_eq!(e.category(), "RegisterApplication");
        assert_eq!(
            e.to_string(),
            "failed to register the application at the provider: forbidden: application.addOwner: HTTP 403"
        );
        assert!(e.is_persistent());
        let e = failure(
            Step::Revoke { key_id: "k1".into() },
            ProviderError::Transient {
                message: "unavailable".into(),
            },
        );
        assert_eq!(
            (e.category(), e.to_string().as_str()),
            ("RevokeCredential", "failed to revoke credential k1: unavailable")
        );
        assert!(!e.is_persistent());
    }

    #[test]
    fn a_named_permission_and_replication_lag_are_their_own_categories() {
        let denied = failure(
            Step::Read,
            ProviderError::Denied {
                permission: Some("Application.Read.All"),
                message: "listing deletedItems: needs Application.Read.All".into(),
            },
        );
        assert_eq!(denied.category(), "InsufficientPermissions");
        assert_eq!(
            denied.to_string(),
            "listing deletedItems: needs Application.Read.All"
        );
        let lag = |step| {
            failure(
                step,
                ProviderError::Pending {
                    message: "not visible yet".into(),
                },
            )
        };
        assert_eq!(lag(Step::Register).category(), "NotReplicated");
        assert_eq!(lag(Step::Delete).category(), "PurgePending");
        assert_eq!(lag(Step::Delete).to_string(), "not visible yet");
        assert!(!lag(Step::Delete).is_persistent());
    }

    #[test]
    fn only_the_providers_and_the_budgets_wait_reach_the_error_policy() {
        let throttled = |by| {
            failure(
                Step::Issue,
                ProviderError::Throttled {
                    retry_after: Some(Duration::from_secs(3)),
                    by,
                    message: "throttled".into(),
                },
            )
        };
        assert_eq!(
            throttled(Throttler::Provider).retry_after(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            throttled(Throttler::Budget).retry_after(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(throttled(Throttler::TokenEndpoint).retry_after(), None);
        assert!(!throttled(Throttler::Provider).is_persistent());
    }
}
