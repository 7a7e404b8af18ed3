//! The one condition helper for all kinds.
//!
//! Conditions are the standard `metav1.Condition`. `Ready` is the summary condition on
//! every kind; its `reason` is a [`Reason`], each documented in README.md. The helper keeps
//! `lastTransitionTime` when the status does not flip (so `kubectl get` shows how long an
//! object has been in its state) and always records the generation it was computed for.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use std::fmt;

/// Condition types the operator sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// Summary: the object does its job (provider reachable, strategy usable, credentials delivered).
    Ready,
    /// The provider's client-side request budget or the IdP's throttling is slowing work down.
    Throttled,
    /// DcrProvider only, and only while `orphanedApplications: Delete` is refused.
    OrphanDeletion,
}

impl ConditionType {
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Throttled => "Throttled",
            ConditionType::OrphanDeletion => "OrphanDeletion",
        }
    }
}

/// Why a condition has its status. PascalCase, stable: users alert on these, and Events
/// reuse them as their reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    // -- all kinds
    /// The object is Ready.
    Ready,
    /// The spec is invalid in a way the CRD schema cannot express.
    InvalidSpec,
    /// Work is in progress; the condition will change without user action.
    Progressing,
    /// The object is being deleted.
    Deleting,

    // -- DcrProvider
    /// The referenced client-secret Secret does not exist (yet).
    SecretNotFound,
    /// The referenced Secret exists but lacks the key.
    SecretKeyNotFound,
    /// The referenced Secret is in a namespace the operator does not read admin Secrets from.
    SecretNamespaceNotAllowed,
    /// The IdP rejected the initial client's secret.
    InvalidClientSecret,
    /// The operator's federated token file is missing, empty, unreadable or oversized.
    FederatedTokenNotFound,
    /// The federated token has expired (in the file, or as the IdP judged it).
    FederatedTokenExpired,
    /// The federated token's issuer, subject and audience match no federated identity
    /// credential of the initial client.
    NoMatchingFederatedCredential,
    /// The IdP rejected the federated token otherwise (signature, issuer keys, format).
    FederatedTokenRejected,
    /// The IdP does not know the initial client id.
    ClientNotFound,
    /// The IdP does not know the tenant.
    TenantNotFound,
    /// The IdP's endpoints could not be reached (DNS, TCP, TLS, 5xx).
    Unreachable,
    /// The IdP answered 429, or the provider's request budget is exhausted.
    Throttled,
    /// The initial client lacks the permissions needed to manage applications.
    InsufficientPermissions,
    /// Orphan deletion is asked for while the operator runs with the default cluster name.
    ClusterNameRequired,
    /// OIDC: no metadata document at the issuer's well-known URLs, or one naming another
    /// issuer or serving no token endpoint.
    DiscoveryFailed,
    /// OIDC: the server advertises no `registration_endpoint` and none is configured.
    RegistrationEndpointMissing,

    // -- AuthStrategy
    /// The referenced DcrProvider does not exist.
    ProviderNotFound,
    /// The referenced DcrProvider is not Ready.
    ProviderNotReady,

    // -- Application
    /// The referenced AuthStrategy does not exist.
    StrategyNotFound,
    /// The referenced AuthStrategy is not Ready.
    StrategyNotReady,
    /// The AuthStrategy does not admit the Application's namespace.
    NamespaceNotAllowed,
    /// The requested credential lifetime is outside the strategy's bounds.
    CredentialPolicyViolation,
    /// A Secret with the target name exists and is not owned by this Application.
    SecretConflict,
    /// The IdP rejected a request in a way retrying will not fix.
    ProviderError,
    /// Deletion waits: the provider to clean up at no longer exists.
    CleanupBlocked,
    /// A rotate or revoke-all request came sooner than the strategy allows after the
    /// previous one (on the `Throttled` condition).
    RequestRateLimited,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Ready => "Ready",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::Progressing => "Progressing",
            Reason::Deleting => "Deleting",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SecretKeyNotFound => "SecretKeyNotFound",
            Reason::SecretNamespaceNotAllowed => "SecretNamespaceNotAllowed",
            Reason::InvalidClientSecret => "InvalidClientSecret",
            Reason::FederatedTokenNotFound => "FederatedTokenNotFound",
            Reason::FederatedTokenExpired => "FederatedTokenExpired",
            Reason::NoMatchingFederatedCredential => "NoMatchingFederatedCredential",
            Reason::FederatedTokenRejected => "FederatedTokenRejected",
            Reason::ClientNotFound => "ClientNotFound",
            Reason::TenantNotFound => "TenantNotFound",
            Reason::Unreachable => "Unreachable",
            Reason::Throttled => "Throttled",
            Reason::InsufficientPermissions => "InsufficientPermissions",
            Reason::ClusterNameRequired => "ClusterNameRequired",
            Reason::DiscoveryFailed => "DiscoveryFailed",
            Reason::RegistrationEndpointMissing => "RegistrationEndpointMissing",
            Reason::ProviderNotFound => "ProviderNotFound",
            Reason::ProviderNotReady => "ProviderNotReady",
            Reason::StrategyNotFound => "StrategyNotFound",
            Reason::StrategyNotReady => "StrategyNotReady",
            Reason::NamespaceNotAllowed => "NamespaceNotAllowed",
            Reason::CredentialPolicyViolation => "CredentialPolicyViolation",
            Reason::SecretConflict => "SecretConflict",
            Reason::ProviderError => "ProviderError",
            Reason::CleanupBlocked => "CleanupBlocked",
            Reason::RequestRateLimited => "RequestRateLimited",
        }
    }

    /// Every reason, for documentation checks.
    pub const ALL: &'static [Reason] = &[
        Reason::Ready,
        Reason::InvalidSpec,
        Reason::Progressing,
        Reason::Deleting,
        Reason::SecretNotFound,
        Reason::SecretKeyNotFound,
        Reason::SecretNamespaceNotAllowed,
        Reason::InvalidClientSecret,
        Reason::FederatedTokenNotFound,
        Reason::FederatedTokenExpired,
        Reason::NoMatchingFederatedCredential,
        Reason::FederatedTokenRejected,
        Reason::ClientNotFound,
        Reason::TenantNotFound,
        Reason::Unreachable,
        Reason::Throttled,
        Reason::InsufficientPermissions,
        Reason::ClusterNameRequired,
        Reason::DiscoveryFailed,
        Reason::RegistrationEndpointMissing,
        Reason::ProviderNotFound,
        Reason::ProviderNotReady,
        Reason::StrategyNotFound,
        Reason::StrategyNotReady,
        Reason::NamespaceNotAllowed,
        Reason::CredentialPolicyViolation,
        Reason::SecretConflict,
        Reason::ProviderError,
        Reason::CleanupBlocked,
        Reason::RequestRateLimited,
    ];
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Condition status, typed (the API's "True"/"False"/"Unknown").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(b: bool) -> Self {
        if b {
            Status::True
        } else {
            Status::False
        }
    }
}

/// A condition to set: what the reconciler decided, before bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    pub type_: ConditionType,
    pub status: Status,
    pub reason: Reason,
    pub message: String,
}

impl DesiredCondition {
    pub fn new(type_: ConditionType, status: Status, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }

    /// `Ready=True` with reason `Ready`.
    pub fn ready(message: impl Into<String>) -> Self {
        Self::new(ConditionType::Ready, Status::True, Reason::Ready, message)
    }

    /// `Ready=False` with the given reason.
    pub fn not_ready(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(ConditionType::Ready, Status::False, reason, message)
    }
}

/// Longest message stored in a condition; the API allows 32 KiB, people read far less.
const MAX_MESSAGE_LEN: usize = 1024;

/// Set `desired` in `conditions`: replace the condition of the same type, keeping its
/// `lastTransitionTime` unless the status flips, and record `generation`.
/// Returns true when anything visible changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    desired: DesiredCondition,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let type_ = desired.type_.as_str();
    let status = desired.status.as_str();
    let message = truncate(&desired.message, MAX_MESSAGE_LEN);
    let existing = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match existing.and_then(|i| conditions.get(i)) {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => Time(now),
    };
    let new = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: desired.reason.as_str().to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    };
    match existing.and_then(|i| conditions.get_mut(i)) {
        Some(old) if *old == new => false,
        Some(old) => {
            *old = new;
            true
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// Removes the condition of `type_` (one that only shows while something is under way,
/// like `Throttled`). Returns true when there was one.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: ConditionType) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_.as_str());
    conditions.len() != before
}

/// The condition of a type, if present.
pub fn find_condition(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// Whether `Ready=True` is present and computed for `generation` (when given).
pub fn is_ready(conditions: &[Condition], generation: Option<i64>) -> bool {
    find_condition(conditions, ConditionType::Ready)
        .is_some_and(|c| c.status == "True" && (generation.is_none() || c.observed_generation == generation))
}

fn truncate(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_string();
    }
    let mut end = max - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    #[test]
    fn a_new_condition_is_added_with_generation_and_time() {
        let mut conditions = vec![];
        assert!(set_condition(
            &mut conditions,
            DesiredCondition::ready("ok"),
            Some(3),
            t(0)
        ));
        let c = &conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("Ready", "True", "Ready")
        );
        assert_eq!(c.observed_generation, Some(3));
        assert_eq!(c.last_transition_time, Time(t(0)));
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conditions = vec![];
        set_condition(
            &mut conditions,
            DesiredCondition::not_ready(Reason::SecretNotFound, "a"),
            Some(1),
            t(0),
        );
        // Same status, other reason and message: time stays.
        assert!(set_condition(
            &mut conditions,
            DesiredCondition::not_ready(Reason::InvalidClientSecret, "b"),
            Some(2),
            t(10)
        ));
        assert_eq!(conditions[0].last_transition_time, Time(t(0)));
        assert_eq!(conditions[0].reason, "InvalidClientSecret");
        assert_eq!(conditions[0].observed_generation, Some(2));
        // Status flips: time moves.
        set_condition(&mut conditions, DesiredCondition::ready("ok"), Some(2), t(20));
        assert_eq!(conditions[0].last_transition_time, Time(t(20)));
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn setting_the_same_condition_again_reports_no_change() {
        let mut conditions = vec![];
        set_condition(&mut conditions, DesiredCondition::ready("ok"), Some(1), t(0));
        assert!(!set_condition(
            &mut conditions,
            DesiredCondition::ready("ok"),
            Some(1),
            t(99)
        ));
        assert_eq!(conditions[0].last_transition_time, Time(t(0)));
    }

    #[test]
    fn conditions_of_other_types_are_kept() {
        let mut conditions = vec![];
        set_condition(&mut conditions, DesiredCondition::ready("ok"), Some(1), t(0));
        let throttled =
            DesiredCondition::new(ConditionType::Throttled, Status::True, Reason::Throttled, "429");
        set_condition(&mut conditions, throttled, Some(1), t(1));
        assert_eq!(conditions.len(), 2);
        assert!(is_ready(&conditions, Some(1)));
        assert!(
            !is_ready(&conditions, Some(2)),
            "Ready for an older generation is not Ready"
        );
    }

    #[test]
    fn a_passing_condition_is_removed_and_others_kept() {
        let mut conditions = vec![];
        set_condition(&mut conditions, DesiredCondition::ready("ok"), Some(1), t(0));
        let throttled =
            DesiredCondition::new(ConditionType::Throttled, Status::True, Reason::Throttled, "429");
        set_condition(&mut conditions, throttled, Some(1), t(1));
        assert!(remove_condition(&mut conditions, ConditionType::Throttled));
        assert!(!remove_condition(&mut conditions, ConditionType::Throttled));
        assert_eq!(conditions.len(), 1);
        assert!(is_ready(&conditions, Some(1)));
    }

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let mut conditions = vec![];
        let long = "é".repeat(2000);
        set_condition(&mut conditions, DesiredCondition::ready(long), None, t(0));
        let m = &conditions[0].message;
        assert!(m.len() <= MAX_MESSAGE_LEN);
        assert!(m.ends_with('…'));
    }

    #[test]
    fn reason_strings_are_unique_pascal_case() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            let s = r.as_str();
            assert!(seen.insert(s), "duplicate reason {s}");
            assert!(
                s.chars().next().unwrap().is_ascii_uppercase()
                    && s.chars().all(|c| c.is_ascii_alphanumeric())
            );
        }
    }
}
