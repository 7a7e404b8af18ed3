//! The provider-neutral error every backend maps its own errors onto, and the step of the
//! Application pipeline a failure belongs to.
//!
//! The message of each variant is the backend's own (already free of secrets and tokens):
//! conditions and Events show it as it was, and the variant decides what the pipeline does
//! with it (requeue after a wait, back off, report a permission, wait for replication).

use std::time::Duration;

/// Who asked to slow down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Throttler {
    /// The provider's API (429, or 503 with `Retry-After`).
    Provider,
    /// The operator's own request budget for the provider.
    Budget,
    /// The provider's token endpoint.
    TokenEndpoint,
}

/// A failed provider call, after the backend's own retries.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProviderError {
    /// Come back later, after `retry_after` when named.
    #[error("{message}")]
    Throttled {
        retry_after: Option<Duration>,
        by: Throttler,
        message: String,
    },
    /// Unreachable, timed out, 5xx: trying again may succeed with no change.
    #[error("{message}")]
    Transient { message: String },
    /// The provider is not consistent yet (replication lag): retried shortly.
    #[error("{message}")]
    Pending { message: String },
    /// The object does not exist.
    #[error("{message}")]
    NotFound { message: String },
    /// A definite refusal: `status` and the provider's `code`; `detail` is the provider's
    /// own explanation (for a message that names the field to change).
    #[error("{message}")]
    Rejected {
        status: u16,
        code: String,
        detail: String,
        message: String,
    },
    /// The operator's credential may not make this call; `permission` names the grant that
    /// would allow it, when the backend knows it.
    #[error("{message}")]
    Denied {
        permission: Option<&'static str>,
        message: String,
    },
    /// No token: the credential (the operator's, or a client secret being proven) was not
    /// accepted. `reason` is stable and PascalCase (`InvalidClientSecret`).
    #[error("{message}")]
    AuthFailed { reason: &'static str, message: String },
}

impl ProviderError {
    /// True for a missing object.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// True when trying again later may succeed without any change.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Throttled { .. } | Self::Transient { .. } | Self::Pending { .. }
        )
    }

    /// A refusal retrying soon will not change (a 400, a 403, a 404 on a settled object).
    pub fn is_persistent(&self) -> bool {
        matches!(
            self,
            Self::NotFound { .. } | Self::Rejected { .. } | Self::Denied { .. }
        )
    }

    /// When the provider or the request budget said when to come back.
    pub fn throttled_for(&self) -> Option<(Duration, Throttler)> {
        match self {
            Self::Throttled {
                retry_after: Some(wait),
                by,
                ..
            } => Some((*wait, *by)),
            _ => None,
        }
    }
}

/// The pipeline step a provider failure belongs to: a failed reconcile's Event reason and
/// the first words of its condition message (both user-visible: README, "Events").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Finding or creating the client registration.
    Register,
    /// Bringing the registration's managed fields to the spec.
    Update,
    /// Making the client able to obtain tokens (Entra: its service principal).
    Enable,
    /// Adding a secret, or proving one.
    Issue,
    /// Removing a secret.
    Revoke { key_id: String },
    /// Reading the registration.
    Read,
    /// Deleting the registration (or releasing it).
    Delete,
}

impl Step {
    /// PascalCase, stable.
    pub fn category(&self) -> &'static str {
        match self {
            Step::Register => "RegisterApplication",
            Step::Update => "UpdateApplication",
            Step::Enable => "EnsureServicePrincipal",
            Step::Issue => "IssueCredential",
            Step::Revoke { .. } => "RevokeCredential",
            Step::Read => "ReadApplication",
            Step::Delete => "DeleteApplication",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Register => f.write_str("failed to register the application at the provider"),
            Step::Update => f.write_str("failed to update the application at the provider"),
            Step::Enable => f.write_str("failed to ensure the service principal"),
            Step::Issue => f.write_str("failed to issue a credential"),
            Step::Revoke { key_id } => write!(f, "failed to revoke credential {key_id}"),
            Step::Read => f.write_str("failed to read the application at the provider"),
            Step::Delete => f.write_str("failed to delete the application at the provider"),
        }
    }
}

/// A provider failure and the step it happened in: what every backend call returns.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{step}: {error}")]
pub struct Failure {
    pub step: Step,
    #[source]
    pub error: ProviderError,
}

impl Failure {
    pub fn new(step: Step, error: impl Into<ProviderError>) -> Self {
        Self {
            step,
            error: error.into(),
        }
    }
}

/// `map_err` shorthand: `.map_err(at(Step::Read))`.
pub fn at<E: Into<ProviderError>>(step: Step) -> impl FnOnce(E) -> Failure {
    move |e| Failure::new(step, e)
}
