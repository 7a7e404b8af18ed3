//! Application: the pipeline
//! `finalizer -> gate (strategy, provider, namespace, policy) -> register (find, repair or
//! create the client, make it usable) -> deliver (issue, stage, prove, promote, revoke) ->
//! status`, with `cleanup` on deletion. Owns the Application's `Ready` condition. Every
//! provider call goes through the boundary in [`crate::idp`].
//!
//! Crash safety: the provider-side identity is written to status as soon as it exists;
//! registration is keyed by a name derived from the Application's UID, so a lost status never
//! creates a second client; the Secret (not the status) records which keys are live, and
//! is written right after a secret is added; keys no record names are revoked once they are
//! old enough not to belong to a write in flight.

pub mod access;
pub mod admission;
pub mod changes;
mod cleanup;
pub mod credential;
mod deliver;
pub mod desired;
mod gate;
mod register;

use super::context::Context;
use super::error::{Error, Result};
use super::events;
use super::status::apply_status;
use crate::crd::application::{Application, ApplicationStatus};
use crate::crd::conditions::{
    find_condition, is_ready, remove_condition, set_condition, ConditionType, DesiredCondition, Reason,
    Status,
};
use crate::idp::{Reads, Throttler};
use admission::Refusal;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::ResourceExt;
use std::sync::Arc;
use std::time::Duration;

pub const KIND: &str = "Application";
/// Holds deletion until the provider side is cleaned up.
pub const FINALIZER: &str = "dcr-operator.io/cleanup";
/// Any new value triggers one rotation (like `cmctl renew`).
pub const ROTATE_ANNOTATION: &str = "dcr-operator.io/rotate";
/// Any new value issues a new secret and revokes every other one at once (compromise).
pub const REVOKE_ALL_ANNOTATION: &str = "dcr-operator.io/revoke-all";
/// `"true"` lets a deletion whose provider-side cleanup cannot happen (provider gone) go
/// on, leaving the client and its secrets at the provider.
pub const ABANDON_ANNOTATION: &str = "dcr-operator.io/abandon";
const MANAGER: &str = "dcr-operator/application";
/// How soon a secret that the provider does not accept yet is tried again.
const ACTIVATION_RECHECK: Duration = Duration::from_secs(3);

#[tracing::instrument(skip_all, fields(kind = KIND, namespace = app.namespace().unwrap_or_default(), object = %app.name_any()))]
pub async fn reconcile(app: Arc<Application>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(KIND);
    let namespace = app
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, app, |event| async {
        match event {
            Finalizer::Apply(app) => apply(&app, &ctx, &api).await,
            Finalizer::Cleanup(app) => cleanup::cleanup(&app, &ctx).await,
        }
    })
    .await
    .map_err(Error::from)
}

/// What a pass ended with, before the status is written.
enum Outcome {
    /// Credentials delivered and proven; `held` says why a request waits for the
    /// per-Application rate limit (the `Throttled` condition).
    Ready {
        message: String,
        requeue: Duration,
        held: Option<String>,
    },
    /// The provider (`Retry-After`) or its request budget asked to come back after `wait`:
    /// the pass ends here and gives its worker slot back.
    Throttled { wait: Duration, message: String },
    /// Waiting on something outside (a reference, a secret activating, a conflict).
    Waiting {
        reason: Reason,
        message: String,
        requeue: Duration,
    },
}

impl From<Refusal> for Outcome {
    fn from((reason, message): Refusal) -> Self {
        // Refusals are fixed by editing objects, which triggers a reconcile; the slow
        // requeue only guards against a missed watch event.
        Outcome::Waiting {
            reason,
            message,
            requeue: Duration::from_secs(300),
        }
    }
}

async fn apply(app: &Application, ctx: &Context, api: &Api<Application>) -> Result<Action> {
    let old = app.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let result = pass(app, ctx, api, &mut status)
        .await
        .or_else(|e| throttled(&e).ok_or(e));
    if matches!(result, Ok(Outcome::Ready { .. })) {
        ctx.application_edits.ready(app);
    }
    if status.client_id.is_some() && status.auth_strategy.is_none() {
        status.auth_strategy = Some(app.spec.auth_strategy_ref.name.clone());
    }
    let concluded = conclude(app, ctx, &old, result);
    set_throttled(app, ctx, &mut status, concluded.throttle);
    finish(app, ctx, api, &old, status, concluded.condition).await?;
    match concluded.error {
        Some(e) => Err(e),
        None => Ok(concluded.action),
    }
}

/// Gate, then register and deliver; a refusal ends the pass (and may remove access).
async fn pass(
    app: &Application,
    ctx: &Context,
    api: &Api<Application>,
    status: &mut ApplicationStatus,
) -> Result<Outcome> {
    // Immutability, for clusters without CEL; then the strategy, provider and policy.
    let gated = match admission::immutable_fields_kept(app, status) {
        Err(refusal) => Err(refusal),
        Ok(()) => gate::gate(app, ctx).await?,
    };
    let gate = match gated {
        Ok(gate) => gate,
        Err(refusal) => return access::refused(app, ctx, status, refusal).await,
    };
    access::admitted(
        status,
        &gate.strategy.spec.provider_ref.name,
        gate.strategy.spec.credentials.revoke_previous_after.into(),
    );
    // A backend that cannot list what it owns keeps no inventory to read from.
    let reads = if ctx.application_edits.edited_since_ready(app) || !gate.backend.capabilities().list_owned {
        Reads::Direct
    } else {
        Reads::Inventory
    };
    let registration = register::register(app, ctx, &gate, status, api, reads).await?;
    deliver::deliver(app, ctx, &gate, status, &registration).await
}

/// What a pass ends with: the Ready condition to set (None keeps it), the `Throttled`
/// condition, the requeue and the error for the error policy.
struct Concluded {
    condition: Option<DesiredCondition>,
    throttle: Option<(Reason, String)>,
    action: Action,
    error: Option<Error>,
}

fn conclude(app: &Application, ctx: &Context, old: &ApplicationStatus, result: Result<Outcome>) -> Concluded {
    let concluded = |condition, throttle, action, error| Concluded {
        condition,
        throttle,
        action,
        error,
    };
    match result {
        Ok(Outcome::Ready {
            message,
            requeue,
            held,
        }) => concluded(
            Some(DesiredCondition::ready(message)),
            held.map(|m| (Reason::RequestRateLimited, m)),
            Action::requeue(requeue),
            None,
        ),
        Ok(Outcome::Throttled { wait, message }) => {
            // A Ready Application stays Ready: its secret works, only this pass waits.
            let condition = (!is_ready(&old.conditions, app.metadata.generation))
                .then(|| DesiredCondition::not_ready(Reason::Throttled, message.clone()));
            let requeue = wait.clamp(MIN_THROTTLED_REQUEUE, ctx.settings.resync_period);
            concluded(
                condition,
                Some((Reason::Throttled, message)),
                Action::requeue(requeue),
                None,
            )
        }
        Ok(Outcome::Waiting {
            reason,
            message,
            requeue,
        }) => concluded(
            Some(DesiredCondition::not_ready(reason, message)),
            None,
            Action::requeue(requeue),
            None,
        ),
        Err(e) => {
            // Per-response ids (request-id, trace ids) go to the log and the Event only: in
            // the condition they would make every failed pass a new status.
            let condition = DesiredCondition::not_ready(classify(&e), stable_message(&e.to_string()));
            // Every failure goes to the error policy: Retry-After, else backoff per object,
            // slower for errors retrying will not fix (see controller::persistent_backoff).
            concluded(
                Some(condition),
                None,
                Action::requeue(ctx.settings.resync_period),
                Some(e),
            )
        }
    }
}

/// Sets or clears the `Throttled` condition.
fn set_throttled(
    app: &Application,
    ctx: &Context,
    status: &mut ApplicationStatus,
    throttle: Option<(Reason, String)>,
) {
    match throttle {
        Some((reason, message)) => {
            let throttled = DesiredCondition::new(ConditionType::Throttled, Status::True, reason, message);
            set_condition(
                &mut status.conditions,
                throttled,
                app.metadata.generation,
                ctx.now(),
            );
        }
        None => {
            remove_condition(&mut status.conditions, ConditionType::Throttled);
        }
    }
}

/// Writes the status (when changed), publishes an Event on a Ready transition, updates
/// the per-Application metrics. `condition` None keeps `Ready` as it is.
async fn finish(
    app: &Application,
    ctx: &Context,
    api: &Api<Application>,
    old: &ApplicationStatus,
    mut status: ApplicationStatus,
    condition: Option<DesiredCondition>,
) -> Result<()> {
    let was =
        find_condition(&old.conditions, ConditionType::Ready).map(|c| (c.status.clone(), c.reason.clone()));
    if let Some(condition) = &condition {
        set_condition(
            &mut status.conditions,
            condition.clone(),
            app.metadata.generation,
            ctx.now(),
        );
    }
    status.observed_generation = app.metadata.generation;
    if status != *old {
        apply_status(api, MANAGER, &app.name_any(), &status).await?;
    }
    let Some(condition) = condition else {
        return Ok(());
    };
    let ready = condition.status == Status::True;
    if was
        != Some((
            condition.status.as_str().to_string(),
            condition.reason.as_str().to_string(),
        ))
    {
        let type_ = if ready {
            EventType::Normal
        } else {
            EventType::Warning
        };
        events::publish(
            ctx,
            app,
            type_,
            condition.reason.as_str(),
            "Reconcile",
            condition.message,
        )
        .await;
    }
    let expires = status
        .credential
        .as_ref()
        .map(|c| c.expires_at.0.as_second() as f64);
    ctx.metrics.set_application(
        &app.namespace().unwrap_or_default(),
        &app.name_any(),
        ready,
        expires,
    );
    Ok(())
}

/// `message` without what differs from one failed response to the next: Graph's
/// `[request-id ...]`, the token endpoint's trace and correlation ids and timestamp, and
/// the retry hint.
fn stable_message(message: &str) -> String {
    // A constant pattern: it compiles (the unit test below proves it); `None` is unreachable.
    static VOLATILE: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(concat!(
            r"\s*\[request-id [^\]]*\]",
            r"|;\s*(trace|correlation) id [0-9A-Za-z-]+",
            r"|\s*(Trace ID|Correlation ID|Timestamp):[^\r\n;]*",
            r"|\s*\(retry after (Some\([^)]*\)|None)\)",
        ))
        .ok()
    });
    match VOLATILE.as_ref() {
        Some(volatile) => volatile.replace_all(message, "").into_owned(),
        None => message.to_owned(),
    }
}

/// The shortest requeue of a throttled pass (the budget's estimate may be a few ms).
const MIN_THROTTLED_REQUEUE: Duration = Duration::from_millis(500);

/// A throttled failure, as the outcome that requeues after the wait the provider or the
/// request budget named (None: not throttled, or no wait named).
fn throttled(e: &Error) -> Option<Outcome> {
    let (wait, by) = e.provider_error()?.throttled_for()?;
    let source = match by {
        Throttler::Budget => "the provider's request budget is in use",
        Throttler::Provider => "the provider answered 429 (Retry-After)",
        Throttler::TokenEndpoint => "the token endpoint answered 429 (Retry-After)",
    };
    tracing::info!(error = %e, ?wait, "throttled; requeued instead of waiting");
    let message = format!(
        "{source}; work resumes in {}s ({})",
        wait.as_secs_f64().ceil(),
        e.category()
    );
    Some(Outcome::Throttled { wait, message })
}

/// The condition reason for an error.
fn classify(e: &Error) -> Reason {
    use crate::idp::ProviderError as P;
    if matches!(e, Error::Pending(_)) {
        return Reason::Progressing;
    }
    match e.provider_error() {
        Some(P::Throttled { .. }) => Reason::Throttled,
        Some(P::Transient { .. } | P::Pending { .. }) => Reason::Unreachable,
        Some(P::AuthFailed { .. }) => Reason::ProviderNotReady,
        // Never swallowed: the operator's permission does not cover the call (see the README's
        // permissions table).
        Some(P::Denied { .. }) => Reason::InsufficientPermissions,
        Some(P::NotFound { .. } | P::Rejected { .. }) => Reason::ProviderError,
        None => Reason::Progressing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_messages_carry_no_per_response_ids() {
        let graph = "failed to register the application at the provider: forbidden: application.addOwner: HTTP 403 Authorization_RequestDenied: Insufficient privileges to complete the operation. [request-id 0d6b3c9e-1b7a-4f7e-9a51-3f1f0f0b9a11]";
        assert_eq!(
            stable_message(graph),
            "failed to register the application at the provider: forbidden: application.addOwner: HTTP 403 Authorization_RequestDenied: Insufficient privileges to complete the operation."
        );
        let token = "token: invalid client secret (invalid_client: AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1f0c\r\nCorrelation ID: 2e1d\r\nTimestamp: 2026-12-01 21:00:00Z; trace id 1f0c; correlation id 2e1d)";
        assert_eq!(
            stable_message(token),
            "token: invalid client secret (invalid_client: AADSTS7000215: Invalid client secret provided.)"
        );
        let throttled = "throttled: application.upsert: HTTP 429 TooManyRequests: Please retry again later. [request-id a] (retry after Some(2.128s))";
        assert_eq!(
            stable_message(throttled),
            "throttled: application.upsert: HTTP 429 TooManyRequests: Please retry again later."
        );
    }

    fn provider(step: crate::idp::Step, error: crate::idp::ProviderError) -> Error {
        crate::idp::Failure::new(step, error).into()
    }

    #[test]
    fn every_neutral_error_kind_has_its_ready_reason() {
        use crate::idp::{ProviderError as P, Step};
        let m = || "m".to_string();
        let cases = [
            (
                P::Throttled {
                    retry_after: None,
                    by: Throttler::Provider,
                    message: m(),
                },
                Reason::Throttled,
            ),
            (P::Transient { message: m() }, Reason::Unreachable),
            (P::Pending { message: m() }, Reason::Progressing),
            (P::NotFound { message: m() }, Reason::ProviderError),
            (
                P::Rejected {
                    status: 400,
                    code: "c".into(),
                    detail: m(),
                    message: m(),
                },
                Reason::ProviderError,
            ),
            (
                P::Denied {
                    permission: None,
                    message: m(),
                },
                Reason::InsufficientPermissions,
            ),
            (
                P::Denied {
                    permission: Some("Application.Read.All"),
                    message: m(),
                },
                Reason::InsufficientPermissions,
            ),
            (
                P::AuthFailed {
                    reason: "InvalidClientSecret",
                    message: m(),
                },
                Reason::ProviderNotReady,
            ),
        ];
        for (error, reason) in cases {
            let e = provider(Step::Update, error);
            assert_eq!(classify(&e), reason, "{e:?}");
        }
        assert_eq!(classify(&Error::MissingObjectKey("x")), Reason::Progressing);
    }

    #[test]
    fn a_named_wait_requeues_and_says_who_asked() {
        use crate::idp::{ProviderError as P, Step};
        let error = |by, retry_after| {
            provider(
                Step::Issue,
                P::Throttled {
                    retry_after,
                    by,
                    message: "t".into(),
                },
            )
        };
        let wait = Duration::from_millis(2100);
        for (by, said) in [
            (Throttler::Budget, "the provider's request budget is in use"),
            (Throttler::Provider, "the provider answered 429 (Retry-After)"),
            (
                Throttler::TokenEndpoint,
                "the token endpoint answered 429 (Retry-After)",
            ),
        ] {
            let Some(Outcome::Throttled { wait: w, message }) = throttled(&error(by, Some(wait))) else {
                panic!("{by:?} is not a throttled outcome");
            };
            assert_eq!(w, wait);
            assert_eq!(message, format!("{said}; work resumes in 3s (IssueCredential)"));
        }
        // No wait named: the error policy backs off instead.
        assert!(throttled(&error(Throttler::Provider, None)).is_none());
    }
}
