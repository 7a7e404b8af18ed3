//! Access removal. An Application its AuthStrategy stops admitting (its namespace is no
//! longer allowed, or the strategy is deleted) keeps working for the grace recorded while it
//! was admitted (the strategy's `revokePreviousAfter`); then every secret of its client is
//! revoked and its Secret deleted. The client stays registered, without secrets: re-admission
//! issues a new secret as for a new Application.
//!
//! The Secret is deleted rather than emptied: a Secret whose value no longer works looks
//! healthy to its consumers, while a missing one fails visibly (pods do not start), and no
//! credential record is left that could later be read as live.

use super::cleanup::{identity, recorded};
use super::gate::named_provider;
use super::{Outcome, Refusal};
use crate::controller::context::Context;
use crate::controller::error::{Error, Result};
use crate::controller::{events, read};
use crate::crd::application::{AccessRemoved, Application, ApplicationStatus};
use crate::crd::common::GoDuration;
use crate::crd::conditions::Reason;
use crate::secret;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use std::time::Duration;

/// Longest grace after access removal, whatever the strategy said.
pub const MAX_ACCESS_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The grace when none was recorded (an Application last admitted by an older operator):
/// the default of `revokePreviousAfter`.
pub const DEFAULT_ACCESS_GRACE: Duration = Duration::from_secs(3600);
/// How often a refused Application is looked at again when nothing is due.
const RECHECK: Duration = Duration::from_secs(300);

/// Whether a refusal means the strategy no longer admits the Application.
pub fn removes_access(reason: Reason) -> bool {
    matches!(reason, Reason::NamespaceNotAllowed | Reason::StrategyNotFound)
}

/// The removal record of this pass: the recorded one, else one starting now.
pub fn removal(now: Timestamp, recorded: Option<&AccessRemoved>, grace: Option<Duration>) -> AccessRemoved {
    if let Some(r) = recorded {
        return r.clone();
    }
    let grace = grace.unwrap_or(DEFAULT_ACCESS_GRACE).min(MAX_ACCESS_GRACE);
    let grace = SignedDuration::try_from(grace).unwrap_or(SignedDuration::ZERO);
    AccessRemoved {
        since: Time(now),
        revoke_at: Time(now.checked_add(grace).unwrap_or(now)),
        revoked_at: None,
    }
}

/// Records what an admitted pass knows for a later removal, and ends any removal.
pub fn admitted(status: &mut ApplicationStatus, provider: &str, grace: Duration) {
    status.provider = Some(provider.to_string());
    status.access_grace = GoDuration::new(grace.min(MAX_ACCESS_GRACE));
    status.access_removed = None;
}

/// The outcome of a refused pass; for a removal of access, revokes once the grace is over.
pub(super) async fn refused(
    app: &Application,
    ctx: &Context,
    status: &mut ApplicationStatus,
    (reason, message): Refusal,
) -> Result<Outcome> {
    let registered = status.application_object_id.is_some() || status.credential.is_some();
    if !removes_access(reason) || !registered {
        return Ok(Outcome::from((reason, message)));
    }
    let now = ctx.now();
    let mut removed = removal(
        now,
        status.access_removed.as_ref(),
        status.access_grace.map(Duration::from),
    );
    let outcome = match &removed.revoked_at {
        Some(at) => waiting(
            reason,
            format!(
                "{message}; its secrets were revoked at {} and its Secret deleted",
                at.0
            ),
            RECHECK,
        ),
        None if now < removed.revoke_at.0 => waiting(
            reason,
            format!(
                "{message}; its secrets are revoked at {} unless access is restored",
                removed.revoke_at.0
            ),
            until(now, removed.revoke_at.0).clamp(Duration::from_secs(1), RECHECK),
        ),
        None => match revoke_everything(app, ctx, status).await? {
            Ok(note) => {
                removed.revoked_at = Some(Time(now));
                events::publish(ctx, app, EventType::Warning, "CredentialsRevoked", "Revoke", note).await;
                waiting(
                    reason,
                    format!("{message}; its secrets were revoked at {now} and its Secret deleted"),
                    RECHECK,
                )
            }
            Err(why) => waiting(
                reason,
                format!("{message}; its secrets are due for revocation, but {why}"),
                RECHECK,
            ),
        },
    };
    status.access_removed = Some(removed);
    Ok(outcome)
}

fn waiting(reason: Reason, message: String, requeue: Duration) -> Outcome {
    Outcome::Waiting {
        reason,
        message,
        requeue,
    }
}

fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::try_from(then.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// Revokes every secret of the Application's client and deletes its Secret. `Ok(Err(why))`
/// when it cannot be done (the provider is gone).
async fn revoke_everything(
    app: &Application,
    ctx: &Context,
    status: &mut ApplicationStatus,
) -> Result<std::result::Result<String, String>> {
    let Some(provider_name) = status.provider.clone() else {
        return Ok(Err(
            "the DcrProvider they were issued through is not recorded".into()
        ));
    };
    let Some((_, backend)) = named_provider(app, ctx, &provider_name).await? else {
        return Ok(Err(format!("DcrProvider {provider_name} no longer exists")));
    };
    let mut revoked = 0usize;
    // Only what proves to be this Application's, whatever the status says.
    if let Some(found) = backend.find(&identity(app, ctx), &recorded(status)).await? {
        for key in &found.secrets {
            backend.remove_secret(&found, &key.key_id).await?;
            revoked += 1;
        }
    }
    let secret_name = status
        .secret_name
        .clone()
        .unwrap_or_else(|| secret::secret_name(app));
    delete_own_secret(app, ctx, &secret_name).await?;
    status.credential = None;
    status.previous_credentials.clear();
    status.pending_credential = None;
    Ok(Ok(format!(
        "access removed: revoked {revoked} secret(s) of client {} at DcrProvider {provider_name} and deleted Secret {secret_name}",
        status.client_id.as_deref().unwrap_or("(unknown)")
    )))
}

/// Deletes Secret `name` when this Application owns it.
async fn delete_own_secret(app: &Application, ctx: &Context, name: &str) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    let Some(found) = read::get_opt(&secrets, name).await? else {
        return Ok(());
    };
    if !secret::is_owned_by(&found, app) {
        return Ok(());
    }
    match secrets.delete(&found.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::WriteSecret {
            name: name.to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn only_a_namespace_refusal_or_a_missing_strategy_removes_access() {
        assert!(removes_access(Reason::NamespaceNotAllowed));
        assert!(removes_access(Reason::StrategyNotFound));
        for other in [
            Reason::StrategyNotReady,
            Reason::InvalidSpec,
            Reason::CredentialPolicyViolation,
        ] {
            assert!(!removes_access(other), "{other}");
        }
    }

    #[test]
    fn the_grace_starts_at_the_first_refusal_and_is_bounded() {
        let r = removal(at(0), None, Some(Duration::from_secs(60)));
        assert_eq!(r.since.0, at(0));
        assert_eq!(r.revoke_at.0, at(60));
        // Later passes keep the recorded deadline.
        assert_eq!(removal(at(30), Some(&r), Some(Duration::from_secs(5))), r);
        let unrecorded = removal(at(0), None, None);
        assert_eq!(unrecorded.revoke_at.0, at(3600));
        let huge = removal(at(0), None, Some(Duration::from_secs(u64::MAX / 4)));
        assert_eq!(
            huge.revoke_at.0,
            at(MAX_ACCESS_GRACE.as_secs() as i64),
            "capped at MAX_ACCESS_GRACE"
        );
    }

    #[test]
    fn admission_records_the_provider_and_grace_and_ends_a_removal() {
        let mut status = ApplicationStatus {
            access_removed: Some(removal(at(0), None, None)),
            ..Default::default()
        };
        admitted(&mut status, "entra", Duration::from_secs(90));
        assert_eq!(status.provider.as_deref(), Some("entra"));
        assert_eq!(
            status.access_grace.map(Duration::from),
            Some(Duration::from_secs(90))
        );
        assert!(status.access_removed.is_none());
    }
}
