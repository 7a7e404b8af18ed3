//! Pure checks that gate an Application before anything is registered.

use crate::crd::application::{Application, ApplicationStatus};
use crate::crd::conditions::Reason;
use crate::crd::strategy::AuthStrategy;
use kube::core::{Selector, SelectorExt};
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::time::Duration;

/// The lifetime policy in effect for one Application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EffectivePolicy {
    pub lifetime: Duration,
    pub renew_before: Duration,
    pub revoke_previous_after: Duration,
    /// Shortest time between two served rotate (or revoke-all) requests: the strategy's
    /// `minRenewalInterval`, the floor on how often one Application may cause a new secret.
    pub min_request_interval: Duration,
}

/// A reason the Application cannot proceed, with the message users read.
pub type Refusal = (Reason, String);

/// Longest value of a rotate or revoke-all request annotation. The value is copied into
/// status and the Secret's credential record; unbounded, a 256 KiB annotation would make the
/// Secret write fail after a password was issued, on every pass.
pub const MAX_REQUEST_LENGTH: usize = 253;

/// The request annotations (`dcr-operator.io/rotate`, `dcr-operator.io/revoke-all`) are
/// short enough to record.
pub fn requests_bounded(app: &Application) -> Result<(), Refusal> {
    for key in [super::ROTATE_ANNOTATION, super::REVOKE_ALL_ANNOTATION] {
        if let Some(value) = app.annotations().get(key) {
            let length = value.chars().count();
            if length > MAX_REQUEST_LENGTH {
                return Err((
                    Reason::InvalidSpec,
                    format!(
                        "metadata.annotations[{key}] is {length} characters long; at most {MAX_REQUEST_LENGTH} are allowed"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The immutable fields against what the status recorded, for clusters without CEL
/// (Kubernetes < 1.25 accepts any change to them).
pub fn immutable_fields_kept(app: &Application, recorded: &ApplicationStatus) -> Result<(), Refusal> {
    let strategy = &app.spec.auth_strategy_ref.name;
    if let Some(was) = recorded.auth_strategy.as_ref().filter(|was| *was != strategy) {
        return Err((
            Reason::InvalidSpec,
            format!("spec.authStrategyRef is immutable: it was {was} (create a new Application instead)"),
        ));
    }
    let secret_name = crate::secret::secret_name(app);
    if let Some(was) = recorded.secret_name.as_ref().filter(|was| **was != secret_name) {
        return Err((
            Reason::InvalidSpec,
            format!("spec.secret.name is immutable: it was {was}"),
        ));
    }
    Ok(())
}

/// Whether `strategy` admits `app`'s namespace, given the namespace's labels.
pub fn namespace_admitted(
    strategy: &AuthStrategy,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<(), Refusal> {
    let Some(allowed) = &strategy.spec.allowed_namespaces else {
        return Ok(());
    };
    if allowed.names.iter().any(|n| n == namespace) {
        return Ok(());
    }
    if let Some(selector) = &allowed.selector {
        match Selector::try_from(selector.clone()) {
            Ok(s) if s.matches(namespace_labels) => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                return Err((
                    Reason::StrategyNotReady,
                    format!(
                        "AuthStrategy {} has an invalid namespace selector: {e}",
                        strategy.name_any()
                    ),
                ))
            }
        }
    }
    Err((
        Reason::NamespaceNotAllowed,
        format!(
            "AuthStrategy {} does not admit namespace {namespace} (see its spec.allowedNamespaces)",
            strategy.name_any()
        ),
    ))
}

/// The lifetime, renewal and grace in effect: the Application's overrides within the
/// strategy's bounds.
pub fn effective_policy(app: &Application, strategy: &AuthStrategy) -> Result<EffectivePolicy, Refusal> {
    let policy = &strategy.spec.credentials;
    let overrides = app.spec.credentials.clone().unwrap_or_default();
    let lifetime: Duration = overrides
        .lifetime
        .map(Into::into)
        .unwrap_or(policy.lifetime.into());
    let renew_before: Duration = overrides
        .renew_before
        .map(Into::into)
        .unwrap_or(policy.renew_before.into());
    let max: Duration = policy
        .max_lifetime
        .map(Into::into)
        .unwrap_or(policy.lifetime.into());
    if lifetime.is_zero() {
        return Err((
            Reason::InvalidSpec,
            "spec.credentials durations must be positive".into(),
        ));
    }
    if lifetime > max {
        return Err((
            Reason::CredentialPolicyViolation,
            format!(
                "spec.credentials.lifetime {} exceeds the longest lifetime AuthStrategy {} allows ({})",
                humantime::format_duration(lifetime),
                strategy.name_any(),
                humantime::format_duration(max)
            ),
        ));
    }
    if renew_before >= lifetime {
        return Err((
            Reason::InvalidSpec,
            "credentials.renewBefore must be shorter than credentials.lifetime".into(),
        ));
    }
    if overrides.lifetime.is_some() || overrides.renew_before.is_some() {
        renewal_interval_allowed(lifetime, renew_before, strategy)?;
    }
    Ok(EffectivePolicy {
        lifetime,
        renew_before,
        revoke_previous_after: policy.revoke_previous_after.into(),
        min_request_interval: policy.min_renewal_interval.into(),
    })
}

/// An Application's own lifetime and renewBefore may not renew more often than the
/// strategy's `minRenewalInterval` (or its own interval, when that is shorter).
fn renewal_interval_allowed(
    lifetime: Duration,
    renew_before: Duration,
    strategy: &AuthStrategy,
) -> Result<(), Refusal> {
    let policy = &strategy.spec.credentials;
    let own = policy
        .lifetime
        .as_std()
        .saturating_sub(policy.renew_before.as_std());
    let floor = policy.min_renewal_interval.as_std().min(own);
    let interval = lifetime.saturating_sub(renew_before);
    if interval >= floor {
        return Ok(());
    }
    Err((
        Reason::CredentialPolicyViolation,
        format!(
            "spec.credentials renews every {} (lifetime - renewBefore); AuthStrategy {} allows at most one renewal per {} (its credentials.minRenewalInterval)",
            humantime::format_duration(interval),
            strategy.name_any(),
            humantime::format_duration(floor)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strategy(extra: serde_json::Value) -> AuthStrategy {
        let mut spec = json!({"providerRef": {"name": "p"}, "displayName": "S", "openIDConnect": {}});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        AuthStrategy::new("s", serde_json::from_value(spec).unwrap())
    }

    fn app(credentials: serde_json::Value) -> Application {
        let spec = json!({"authStrategyRef": {"name": "s"}, "credentials": credentials});
        Application::new("a", serde_json::from_value(spec).unwrap())
    }

    #[test]
    fn request_annotations_longer_than_the_bound_are_refused() {
        let mut a = app(json!({}));
        assert!(requests_bounded(&a).is_ok());
        let at_bound = "r".repeat(MAX_REQUEST_LENGTH);
        a.annotations_mut()
            .insert(super::super::ROTATE_ANNOTATION.into(), at_bound);
        assert!(requests_bounded(&a).is_ok());
        let over = "r".repeat(MAX_REQUEST_LENGTH + 1);
        a.annotations_mut()
            .insert(super::super::REVOKE_ALL_ANNOTATION.into(), over);
        let (reason, message) = requests_bounded(&a).unwrap_err();
        assert_eq!(reason, Reason::InvalidSpec);
        assert!(message.contains("dcr-operator.io/revoke-all"), "{message}");
    }

    #[test]
    fn a_strategy_without_allowed_namespaces_admits_every_namespace() {
        assert!(namespace_admitted(&strategy(json!({})), "any", &BTreeMap::new()).is_ok());
    }

    #[test]
    fn namespaces_are_admitted_by_name_or_label_and_refused_otherwise() {
        let s = strategy(
            json!({"allowedNamespaces": {"names": ["orders"], "selector": {"matchLabels": {"team": "a"}}}}),
        );
        assert!(namespace_admitted(&s, "orders", &BTreeMap::new()).is_ok());
        let labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
        assert!(namespace_admitted(&s, "other", &labels).is_ok());
        let (reason, message) = namespace_admitted(&s, "other", &BTreeMap::new()).unwrap_err();
        assert_eq!(reason, Reason::NamespaceNotAllowed);
        assert!(message.contains("does not admit namespace other"));
    }

    #[test]
    fn overrides_apply_within_the_strategy_bounds() {
        let s = strategy(
            json!({"credentials": {"lifetime": "720h", "renewBefore": "240h", "maxLifetime": "1440h"}}),
        );
        let p = effective_policy(&app(json!({"lifetime": "1000h"})), &s).unwrap();
        assert_eq!(p.lifetime, Duration::from_secs(1000 * 3600));
        assert_eq!(p.renew_before, Duration::from_secs(240 * 3600));
        let (reason, message) = effective_policy(&app(json!({"lifetime": "2000h"})), &s).unwrap_err();
        assert_eq!(reason, Reason::CredentialPolicyViolation);
        assert!(message.contains("exceeds"), "{message}");
    }

    #[test]
    fn without_max_lifetime_the_strategy_lifetime_is_the_bound() {
        let s = strategy(json!({"credentials": {"lifetime": "720h", "renewBefore": "240h"}}));
        assert!(effective_policy(&app(json!({"lifetime": "721h"})), &s).is_err());
        assert!(effective_policy(&app(json!({"lifetime": "300h"})), &s).is_ok());
    }

    #[test]
    fn an_application_cannot_renew_more_often_than_the_strategy_allows() {
        let s = strategy(
            json!({"credentials": {"lifetime": "720h", "renewBefore": "240h", "maxLifetime": "720h"}}),
        );
        // The issue's example: a new secret every second.
        let (reason, message) =
            effective_policy(&app(json!({"lifetime": "3m", "renewBefore": "179s"})), &s).unwrap_err();
        assert_eq!(reason, Reason::CredentialPolicyViolation);
        assert!(
            message.starts_with("spec.credentials renews every 1s"),
            "{message}"
        );
        assert!(effective_policy(&app(json!({"lifetime": "2h", "renewBefore": "1h"})), &s).is_ok());
        assert!(effective_policy(&app(json!({"lifetime": "2h", "renewBefore": "61m"})), &s).is_err());
        // A strategy that renews often itself (an admin's choice) bounds its Applications
        // at its own interval, and an Application without overrides is not checked.
        let fast = strategy(json!({"credentials": {"lifetime": "60s", "renewBefore": "45s"}}));
        assert!(effective_policy(&app(json!({"renewBefore": "40s"})), &fast).is_ok());
        assert!(effective_policy(&app(json!({"renewBefore": "50s"})), &fast).is_err());
        assert!(effective_policy(&app(json!({})), &fast).is_ok());
    }

    #[test]
    fn immutable_fields_are_held_to_the_recorded_values() {
        let a = app(json!({}));
        let mut recorded = ApplicationStatus::default();
        assert!(
            immutable_fields_kept(&a, &recorded).is_ok(),
            "nothing recorded yet"
        );
        recorded.auth_strategy = Some("s".into());
        recorded.secret_name = Some("a-credentials".into());
        assert!(immutable_fields_kept(&a, &recorded).is_ok());
        recorded.auth_strategy = Some("other".into());
        let (reason, message) = immutable_fields_kept(&a, &recorded).unwrap_err();
        assert_eq!(reason, Reason::InvalidSpec);
        assert!(
            message.starts_with("spec.authStrategyRef is immutable: it was other"),
            "{message}"
        );
        recorded.auth_strategy = None;
        recorded.secret_name = Some("old".into());
        let (_, message) = immutable_fields_kept(&a, &recorded).unwrap_err();
        assert!(message.starts_with("spec.secret.name is immutable"), "{message}");
    }

    #[test]
    fn renew_before_is_checked_even_where_cel_is_not_enforced() {
        let s = strategy(json!({"credentials": {"lifetime": "720h", "renewBefore": "240h"}}));
        let (reason, _) = effective_policy(&app(json!({"lifetime": "200h"})), &s).unwrap_err();
        assert_eq!(reason, Reason::InvalidSpec);
    }
}
