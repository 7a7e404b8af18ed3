//! Application: the pipeline
//! `finalizer -> gate (strategy, provider, namespace, policy) -> register (upsert by
//! uniqueName, drift) -> service principal -> credential (issue, deliver, prove, revoke)
//! -> status`. Owns the Application's `Ready` condition.
//!
//! Crash safety: the provider-side identity is written to status as soon as it exists;
//! the upsert is keyed by a name derived from the Application's UID, so a lost status never
//! creates a second application; the Secret (not the status) records which keys are live, and
//! is written right after `addPassword`; keys no record names are revoked once they are old
//! enough not to belong to a write in flight.

pub mod access;
pub mod admission;
pub mod changes;
pub mod credential;
pub mod desired;

use super::context::Context;
use super::error::{Error, Result};
use super::events;
use super::providers::ClientError;
use super::read;
use super::status::apply_status;
use crate::crd::application::{
    Application, ApplicationStatus, CredentialStatus, DeletionPolicy, PendingCredential, PreviousCredential,
};
use crate::crd::conditions::{
    find_condition, is_ready, remove_condition, set_condition, ConditionType, DesiredCondition, Reason,
    Status,
};
use crate::crd::provider::{DcrProvider, DeletedApplicationsPolicy};
use crate::crd::strategy::AuthStrategy;
use crate::idp::azure::{self, AddPasswordRequest, Freshness, GraphClient, GraphError, TokenError};
use crate::secret::{self, ConnectionDetails, CredentialRecord, PendingKey, PreviousKey};
use crate::sensitive::SecretString;
use admission::{EffectivePolicy, Refusal};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::ResourceExt;
use std::collections::BTreeSet;
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
            Finalizer::Cleanup(app) => cleanup(&app, &ctx).await,
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
    let reads = if ctx.application_edits.edited_since_ready(app) {
        ProviderReads::Direct
    } else {
        ProviderReads::Inventory
    };
    // Immutability, for clusters without CEL; then the strategy, provider and policy.
    let gated = match admission::immutable_fields_kept(app, &old) {
        Err(refusal) => Ok(Err(refusal)),
        Ok(()) => gate(app, ctx).await,
    };
    let result = match gated {
        Ok(Ok(gate)) => {
            access::admitted(
                &mut status,
                &gate.strategy.spec.provider_ref.name,
                gate.strategy.spec.credentials.revoke_previous_after.into(),
            );
            converge(app, ctx, &gate, &mut status, api, reads).await
        }
        Ok(Err(refusal)) => access::refused(app, ctx, &mut status, refusal).await,
        Err(e) => Err(e),
    }
    .or_else(|e| throttled(&e).ok_or(e));
    if matches!(result, Ok(Outcome::Ready { .. })) {
        ctx.application_edits.ready(app);
    }
    if status.client_id.is_some() && status.auth_strategy.is_none() {
        status.auth_strategy = Some(app.spec.auth_strategy_ref.name.clone());
    }
    let mut throttle = None;
    let (condition, action, error) = match result {
        Ok(Outcome::Ready {
            message,
            requeue,
            held,
        }) => {
            throttle = held.map(|m| (Reason::RequestRateLimited, m));
            (
                Some(DesiredCondition::ready(message)),
                Action::requeue(requeue),
                None,
            )
        }
        Ok(Outcome::Throttled { wait, message }) => {
            // A Ready Application stays Ready: its secret works, only this pass waits.
            let condition = (!is_ready(&old.conditions, app.metadata.generation))
                .then(|| DesiredCondition::not_ready(Reason::Throttled, message.clone()));
            throttle = Some((Reason::Throttled, message));
            let requeue = wait.clamp(MIN_THROTTLED_REQUEUE, ctx.settings.resync_period);
            (condition, Action::requeue(requeue), None)
        }
        Ok(Outcome::Waiting {
            reason,
            message,
            requeue,
        }) => (
            Some(DesiredCondition::not_ready(reason, message)),
            Action::requeue(requeue),
            None,
        ),
        Err(e) => {
            let reason = classify(&e);
            let requeue = Action::requeue(ctx.settings.resync_period);
            // Per-response ids (request-id, trace ids) go to the log and the Event only: in
            // the condition they would make every failed pass a new status.
            let condition = DesiredCondition::not_ready(reason, stable_message(&e.to_string()));
            // Every failure goes to the error policy: Retry-After, else backoff per object,
            // slower for errors retrying will not fix (see controller::persistent_backoff).
            (Some(condition), requeue, Some(e))
        }
    };
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
    finish(app, ctx, api, &old, status, condition).await?;
    match error {
        Some(e) => Err(e),
        None => Ok(action),
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
    let (wait, source) = match e.graph_error()? {
        GraphError::Throttled {
            retry_after: Some(wait),
            info,
        } if info.code == azure::client::BUDGET_EXHAUSTED => {
            (*wait, "the provider's request budget is in use")
        }
        GraphError::Throttled {
            retry_after: Some(wait),
            ..
        } => (*wait, "the provider answered 429 (Retry-After)"),
        GraphError::Token(TokenError::Throttled {
            retry_after: Some(wait),
        }) => (*wait, "the token endpoint answered 429 (Retry-After)"),
        _ => return None,
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
    if matches!(e, Error::NotReplicated(_)) {
        return Reason::Progressing;
    }
    match e.graph_error() {
        Some(GraphError::Throttled { .. }) | Some(GraphError::Token(TokenError::Throttled { .. })) => {
            Reason::Throttled
        }
        Some(g) if g.is_transient() => Reason::Unreachable,
        Some(GraphError::Token(_)) => Reason::ProviderNotReady,
        // Never swallowed: the operator's permission does not cover the call (see the README's
        // permissions table).
        Some(GraphError::Forbidden(_)) => Reason::InsufficientPermissions,
        Some(_) => Reason::ProviderError,
        None => Reason::Progressing,
    }
}

/// How a pass learns the state of the provider-side objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProviderReads {
    /// From the provider inventory when it knows them unchanged (a resync of an unedited
    /// Application: no Graph read of its own), else directly.
    Inventory,
    /// Directly (the Application was edited: its owner expects a fresh look).
    Direct,
}

/// Everything an Application needs from its strategy and provider.
struct Gate {
    strategy: AuthStrategy,
    provider: DcrProvider,
    client: Arc<GraphClient>,
    policy: EffectivePolicy,
}

/// Resolves the strategy and provider and checks the Application may use them.
async fn gate(app: &Application, ctx: &Context) -> Result<Result<Gate, Refusal>> {
    let strategy_name = &app.spec.auth_strategy_ref.name;
    let Some(strategy) = read::get_opt(&Api::<AuthStrategy>::all(ctx.client.clone()), strategy_name).await?
    else {
        return Ok(Err((
            Reason::StrategyNotFound,
            format!("AuthStrategy {strategy_name} does not exist"),
        )));
    };
    let strategy_status = strategy.status.clone().unwrap_or_default();
    if !is_ready(&strategy_status.conditions, strategy.metadata.generation) {
        let why = find_condition(&strategy_status.conditions, ConditionType::Ready)
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_else(|| "not evaluated yet".into());
        return Ok(Err((
            Reason::StrategyNotReady,
            format!("AuthStrategy {strategy_name} is not Ready ({why})"),
        )));
    }
    let namespace = app.namespace().unwrap_or_default();
    if strategy.spec.allowed_namespaces.is_some() {
        let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
        let ns = namespaces
            .get(&namespace)
            .await
            .map_err(|source| Error::ReadObject {
                what: format!("Namespace {namespace}"),
                source,
            })?;
        if let Err(refusal) = admission::namespace_admitted(&strategy, &namespace, ns.labels()) {
            return Ok(Err(refusal));
        }
    }
    if let Err(refusal) = admission::requests_bounded(app) {
        return Ok(Err(refusal));
    }
    let policy = match admission::effective_policy(app, &strategy) {
        Ok(p) => p,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let provider_name = &strategy.spec.provider_ref.name;
    let Some(provider) = read::get_opt(&Api::<DcrProvider>::all(ctx.client.clone()), provider_name).await?
    else {
        return Ok(Err((
            Reason::StrategyNotReady,
            format!("DcrProvider {provider_name} does not exist"),
        )));
    };
    if let Some(message) = provider.immutable_fields_changed() {
        return Ok(Err((
            Reason::StrategyNotReady,
            format!("DcrProvider {provider_name}: {message}"),
        )));
    }
    let client = match ctx.providers.client_for(&ctx.client, &provider).await {
        Ok(c) => c,
        Err(ClientError::Kube { source, .. }) => {
            return Err(Error::ReadObject {
                what: format!("the Secret of DcrProvider {provider_name}"),
                source,
            })
        }
        Err(e) => {
            return Ok(Err((
                Reason::StrategyNotReady,
                format!("DcrProvider {provider_name}: {e}"),
            )))
        }
    };
    let gate = Gate {
        strategy,
        provider,
        // Its calls take this namespace's fair share of the provider's request budget.
        client: Arc::new(client.for_namespace(&namespace)),
        policy,
    };
    if let Err(message) = check_secret(app, &gate) {
        return Ok(Err((Reason::InvalidSpec, message)));
    }
    Ok(Ok(gate))
}

/// The Secret the Application asks for, checked before anything is registered or issued:
/// a write the apiserver refuses after `addPassword` would leave a key recorded nowhere.
fn check_secret(app: &Application, gate: &Gate) -> std::result::Result<(), String> {
    secret::validate::secret_name(&secret::secret_name(app))?;
    let layout = secret::SecretLayout::new(app.spec.secret.template.as_ref())?;
    // Any client id has the length of a GUID.
    layout.check_size(&connection_details(gate, "00000000-0000-0000-0000-000000000000"))
}

/// Registers, repairs and delivers. Mutates `status` as facts become known.
async fn converge(
    app: &Application,
    ctx: &Context,
    gate: &Gate,
    status: &mut ApplicationStatus,
    api: &Api<Application>,
    reads: ProviderReads,
) -> Result<Outcome> {
    let cluster = &ctx.settings.cluster_name;
    let uid = app.uid().ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let unique_name = desired::unique_name(cluster, &uid);
    let desired = desired::desired_application(cluster, app, &gate.strategy);
    let graph = &gate.client;

    // (provider) The application itself, created if missing.
    let before = status.clone();
    let registration = ensure_registered(app, ctx, gate, status, &unique_name, &desired, reads).await?;
    let (entra_app, freshness) = (&registration.app, registration.freshness);
    let app_id = entra_app
        .app_id
        .clone()
        .ok_or(Error::MissingObjectKey("appId of the provider application"))?;
    if before.client_id.as_deref() != Some(app_id.as_str()) {
        // A new client: nothing is delivered for it yet.
        let message = format!("registered client {app_id}; delivering its credentials");
        let condition = DesiredCondition::not_ready(Reason::Progressing, message);
        set_condition(
            &mut status.conditions,
            condition,
            app.metadata.generation,
            ctx.now(),
        );
    }
    status.client_id = Some(app_id.clone());
    status.unique_name = Some(unique_name.clone());
    status.application_object_id = Some(entra_app.id.clone());
    if *status != before {
        // Persist the provider-side identity before anything else can fail.
        apply_status(api, MANAGER, &app.name_any(), status).await?;
    }

    // (provider) Managed fields changed in the spec or out of band.
    if let Some(patch) = desired::drift(&desired, entra_app) {
        graph
            .update_application(&entra_app.id, &patch, freshness)
            .await
            .map_err(Error::UpdateApplication)?;
        tracing::info!(object_id = %entra_app.id, "updated the provider-side application");
    }

    // (provider) The service principal, so the client can obtain tokens.
    let sp_source = ensure_service_principal(app, ctx, graph, status, &app_id, freshness, reads).await?;
    tracing::debug!(
        application_read = ?registration.source,
        service_principal_read = ?sp_source,
        "provider-side objects checked"
    );

    deliver_credential(app, ctx, gate, status, &registration, &app_id).await
}

/// The provider-side application as found or created in this pass.
struct Registration {
    app: azure::Application,
    freshness: Freshness,
    /// A new application replaced one deleted out of band (new client id, old keys gone).
    replaced: bool,
    /// The application was restored from deleted items: its keys must be proven again.
    restored: bool,
    /// Where the pass learned of it.
    source: ReadSource,
}

impl Registration {
    /// An application brought back from deleted items (same client id and keys; they are
    /// proven again, since restored objects take a while to work at the token endpoint).
    fn restored(app: azure::Application) -> Self {
        Registration {
            app,
            freshness: Freshness::JustCreated,
            replaced: false,
            restored: true,
            source: ReadSource::Graph,
        }
    }
}

/// Where a pass learned of a provider-side object (logged, for the steady-state cost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadSource {
    /// The provider inventory knew it unchanged: no request of its own.
    Inventory,
    /// Read, created or repaired with requests of its own.
    Graph,
}

/// Finds the provider-side application by the recorded object id, trusting the record only
/// when the object proves to be this Application's (its uniqueName and this cluster's tag);
/// repairs one deleted out of band (restored from deleted items, keeping its client id and
/// keys, else created again); otherwise registers by uniqueName (idempotent).
async fn ensure_registered(
    app: &Application,
    ctx: &Context,
    gate: &Gate,
    status: &mut ApplicationStatus,
    unique_name: &str,
    desired: &azure::ApplicationPatch,
    reads: ProviderReads,
) -> Result<Registration> {
    let graph = &gate.client;
    let cluster_tag = desired::cluster_tag(&ctx.settings.cluster_name);
    // A recorded application that answered 404 and is not in deleted items: lag, or purged.
    let mut unproven_loss = None;
    if let Some(id) = status.application_object_id.clone() {
        let recorded = match recorded_application(graph, &id, reads).await {
            Ok(found) => found,
            Err(e) => return Err(Error::ReadApplication(e)),
        };
        match recorded {
            Some((found, source)) if proves_identity(&found, unique_name, &cluster_tag) => {
                return Ok(Registration {
                    freshness: freshness_of(&found),
                    app: found,
                    replaced: false,
                    restored: false,
                    source,
                });
            }
            Some((found, _)) => {
                let note = format!(
                    "status names provider-side application {id}, which is not this Application's (uniqueName {:?}); ignoring the recorded ids and registering by uniqueName {unique_name}",
                    found.unique_name.as_deref().unwrap_or("")
                );
                events::publish(ctx, app, EventType::Warning, "IdentityMismatch", "Register", note).await;
                forget_recorded_ids(status);
            }
            None => match graph.restore_deleted_application(&id).await {
                Ok(restored) if proves_identity(&restored, unique_name, &cluster_tag) => {
                    let note = format!(
                        "provider-side application {id} was deleted out of band; restored it from deleted items (client id and secrets kept)"
                    );
                    events::publish(ctx, app, EventType::Warning, "Restored", "RepairDrift", note).await;
                    return Ok(Registration::restored(restored));
                }
                Ok(restored) => {
                    // Someone else's application, brought back by a forged record: not ours to
                    // keep or touch further.
                    let note = format!(
                        "status names deleted application {id}, which is not this Application's (uniqueName {:?}); ignoring the recorded ids",
                        restored.unique_name.as_deref().unwrap_or("")
                    );
                    events::publish(ctx, app, EventType::Warning, "IdentityMismatch", "Register", note).await;
                    forget_recorded_ids(status);
                }
                // Not in deleted items either: still replicating (a restart inside the window),
                // or purged. The lookup by uniqueName below tells them apart.
                Err(e) if e.is_not_found() => unproven_loss = Some(id),
                Err(e) => return Err(Error::ReadApplication(e)),
            },
        }
    }
    let registration = register_by_unique_name(app, ctx, gate, unique_name, desired).await?;
    if let Some(id) = unproven_loss.filter(|id| *id != registration.app.id) {
        if registration.created {
            // The uniqueName was free: the recorded application is gone for good.
            let note = format!(
                "provider-side application {id} was deleted out of band and is not in deleted items; registered a new client"
            );
            events::publish(ctx, app, EventType::Warning, "Recreating", "RepairDrift", note).await;
        }
    }
    // A client registered anew where one had been: its keys died with the old one. (Found
    // by uniqueName instead, it is the same client whatever the status said.)
    let replaced = registration.created && status.client_id.is_some();
    if replaced {
        status.service_principal_id = None;
    }
    Ok(Registration {
        replaced,
        ..Registration::from(registration)
    })
}

/// The recorded application as the inventory or Graph knows it; `None` on a 404.
async fn recorded_application(
    graph: &GraphClient,
    id: &str,
    reads: ProviderReads,
) -> std::result::Result<Option<(azure::Application, ReadSource)>, GraphError> {
    if reads == ProviderReads::Inventory {
        if let Some(known) = graph.known_application(id).await {
            return Ok(Some((known, ReadSource::Inventory)));
        }
    }
    match graph.get_application(id, Freshness::Settled).await {
        Ok(found) => Ok(Some((found, ReadSource::Graph))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Identity is proven at the provider, never taken from status: the object carries this
/// Application's uniqueName and this cluster's tag.
fn proves_identity(found: &azure::Application, unique_name: &str, cluster_tag: &str) -> bool {
    found
        .unique_name
        .as_deref()
        .is_some_and(|u| u.eq_ignore_ascii_case(unique_name))
        && found.tags().iter().any(|t| t == cluster_tag)
}

/// Drops provider-side ids the provider did not confirm.
fn forget_recorded_ids(status: &mut ApplicationStatus) {
    status.application_object_id = None;
    status.service_principal_id = None;
}

/// What registering by uniqueName found or made.
struct ByUniqueName {
    app: azure::Application,
    freshness: Freshness,
    /// This pass created it.
    created: bool,
    restored: bool,
}

impl From<ByUniqueName> for Registration {
    fn from(b: ByUniqueName) -> Self {
        Registration {
            app: b.app,
            freshness: b.freshness,
            replaced: false,
            restored: b.restored,
            source: ReadSource::Graph,
        }
    }
}

/// The application named `unique_name`: read, and its ownership verified; else created with
/// the operator as owner (owners are bound only on create: Graph rejects a duplicate
/// reference); else restored from deleted items, where a soft-deleted one keeps the name.
async fn register_by_unique_name(
    app: &Application,
    ctx: &Context,
    gate: &Gate,
    unique_name: &str,
    desired: &azure::ApplicationPatch,
) -> Result<ByUniqueName> {
    let graph = &gate.client;
    let owner = operator_principal(gate).await?;
    match graph
        .get_application_by_unique_name(unique_name, Freshness::Settled)
        .await
    {
        Ok(found) => {
            ensure_owner(graph, &found.id, &owner).await?;
            return Ok(ByUniqueName {
                freshness: freshness_of(&found),
                app: found,
                created: false,
                restored: false,
            });
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(Error::ReadApplication(e)),
    }
    let mut create = desired.clone();
    create.owners_bind = Some(vec![graph.directory_object_url(&owner)]);
    match graph.ensure_application(unique_name, &create).await {
        Ok(ensured) if ensured.created => {
            let note = format!(
                "registered client {} at DcrProvider {}",
                ensured.application.app_id.clone().unwrap_or_default(),
                gate.provider.name_any()
            );
            events::publish(ctx, app, EventType::Normal, "Registered", "Register", note).await;
            Ok(ByUniqueName {
                app: ensured.application,
                freshness: Freshness::JustCreated,
                created: true,
                restored: false,
            })
        }
        // Created between the read and the upsert, unseen by the read: the bind was applied
        // with the update (a 204), or rejected as a duplicate below.
        Ok(ensured) => Ok(ByUniqueName {
            freshness: freshness_of(&ensured.application),
            app: ensured.application,
            created: false,
            restored: false,
        }),
        // It exists and the operator owns it already (the read above lagged): the same
        // update without the bind.
        Err(GraphError::BadRequest(info)) if azure::client::is_duplicate_reference(&info) => {
            let ensured = graph
                .ensure_application(unique_name, desired)
                .await
                .map_err(Error::RegisterApplication)?;
            Ok(ByUniqueName {
                freshness: Freshness::JustCreated,
                app: ensured.application,
                created: false,
                restored: false,
            })
        }
        Err(GraphError::BadRequest(info)) => {
            // The name is taken by an application the read did not see: soft-deleted (it keeps
            // its uniqueName reserved, contract §3.4), or still replicating.
            let deleted = match graph.find_deleted_application_by_unique_name(unique_name).await {
                Ok(deleted) => deleted,
                // Application.ReadWrite.OwnedBy may not list deleted items. Without the list
                // the operator cannot tell a soft-deleted application (which holds the name
                // for 30 days: no new one can take it) from one still replicating (found by
                // the next pass), so it retries with backoff and says what is missing.
                Err(source @ GraphError::Forbidden(_)) => {
                    return Err(Error::MissingPermission {
                        what: format!(
                            "uniqueName {unique_name} is taken by an application Graph does not show (soft-deleted, or still replicating); finding a soft-deleted one to restore lists deleted items (GET /directory/deletedItems/microsoft.graph.application)"
                        ),
                        permission: DELETED_ITEMS_PERMISSION,
                        source,
                    })
                }
                Err(e) => return Err(Error::ReadApplication(e)),
            };
            let Some(deleted) = deleted else {
                tracing::info!(error = %info, "uniqueName taken by an application not visible yet");
                return Err(Error::NotReplicated(format!("application {unique_name}")));
            };
            let restored = graph
                .restore_deleted_application(&deleted.id)
                .await
                .map_err(Error::RegisterApplication)?;
            let note = format!(
                "provider-side application {} ({unique_name}) was in deleted items; restored it (client id and secrets kept)",
                deleted.id
            );
            events::publish(ctx, app, EventType::Warning, "Restored", "RepairDrift", note).await;
            Ok(ByUniqueName {
                app: restored,
                freshness: Freshness::JustCreated,
                created: false,
                restored: true,
            })
        }
        Err(e) => Err(Error::RegisterApplication(e)),
    }
}

/// What `GET /directory/deletedItems/microsoft.graph.application` needs: least privilege
/// `Application.Read.All`; `Application.ReadWrite.OwnedBy` is not listed (learn.microsoft.com
/// /graph/api/directory-deleteditems-list).
const DELETED_ITEMS_PERMISSION: &str = "Application.Read.All";

/// The operator's own service principal id: what `owners` must name.
async fn operator_principal(gate: &Gate) -> Result<String> {
    if let Some(id) = gate
        .provider
        .status
        .as_ref()
        .and_then(|s| s.service_principal_id.clone())
    {
        return Ok(id);
    }
    Ok(gate
        .client
        .own_service_principal()
        .await
        .map_err(Error::RegisterApplication)?
        .id)
}

/// Makes `owner` an owner of an existing application: listed, else added (an add that
/// meets the reference already there counts as done).
async fn ensure_owner(graph: &GraphClient, id: &str, owner: &str) -> Result<()> {
    let owners = graph
        .list_application_owner_ids(id)
        .await
        .map_err(Error::RegisterApplication)?;
    if owners.iter().any(|o| o.eq_ignore_ascii_case(owner)) {
        return Ok(());
    }
    let added = graph
        .add_application_owner(id, owner)
        .await
        .map_err(Error::RegisterApplication)?;
    tracing::info!(object_id = %id, added, "made the operator an owner of the application");
    Ok(())
}

/// Creates the service principal when none is recorded or the recorded one is gone.
async fn ensure_service_principal(
    app: &Application,
    ctx: &Context,
    graph: &GraphClient,
    status: &mut ApplicationStatus,
    app_id: &str,
    freshness: Freshness,
    reads: ProviderReads,
) -> Result<ReadSource> {
    let mut recorded = status.service_principal_id.clone();
    if let Some(id) = recorded.clone() {
        if reads == ProviderReads::Inventory && graph.known_service_principal(&id, app_id).await {
            return Ok(ReadSource::Inventory);
        }
        match graph.get_service_principal(&id, Freshness::Settled).await {
            // Trusted only as the principal of this Application's client (proven above).
            Ok(sp)
                if sp
                    .app_id
                    .as_deref()
                    .is_some_and(|a| a.eq_ignore_ascii_case(app_id)) =>
            {
                return Ok(ReadSource::Graph)
            }
            Ok(_) => {
                let note = format!(
                    "status names service principal {id}, which does not serve client {app_id}; ignoring it"
                );
                events::publish(ctx, app, EventType::Warning, "IdentityMismatch", "Register", note).await;
                recorded = None;
            }
            // Deleted, or created moments ago and not replicated yet: the create below tells
            // (a 409 returns the existing principal).
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Error::EnsureServicePrincipal(e)),
        }
    }
    let tags = [
        desired::TAG_MANAGED.to_string(),
        desired::cluster_tag(&ctx.settings.cluster_name),
    ];
    let sp = graph
        .create_service_principal(app_id, &tags, freshness)
        .await
        .map_err(Error::EnsureServicePrincipal)?;
    if let Some(old) = recorded.filter(|old| *old != sp.id) {
        let note = format!(
            "service principal {old} was deleted out of band; created it again ({})",
            sp.id
        );
        events::publish(
            ctx,
            app,
            EventType::Warning,
            "ServicePrincipalRecreated",
            "RepairDrift",
            note,
        )
        .await;
    }
    status.service_principal_id = Some(sp.id);
    Ok(ReadSource::Graph)
}

/// Objects created in the last minutes may still be replicating.
fn freshness_of(app: &azure::Application) -> Freshness {
    let recent = app.created_date_time.is_some_and(|t| {
        (chrono::Utc::now() - t).num_seconds() < credential::REPLICATION_WINDOW.as_secs() as i64
    });
    if recent {
        Freshness::JustCreated
    } else {
        Freshness::Settled
    }
}

/// The credential state of one pass: what the Secret holds, and where to write it.
struct Delivery<'a> {
    app: &'a Application,
    secrets: Api<Secret>,
    name: String,
    layout: secret::SecretLayout,
    details: ConnectionDetails,
    exists: bool,
    record: Option<CredentialRecord>,
    value: Option<SecretString>,
    pending_value: Option<SecretString>,
    key: &'a crate::secret::mac::RecordKey,
}

impl Delivery<'_> {
    /// Writes the Secret from the current state.
    async fn write(&mut self) -> Result<()> {
        let (Some(record), Some(value)) = (&self.record, &self.value) else {
            return Err(Error::MissingObjectKey("the credential record"));
        };
        let contents = secret::Contents {
            layout: &self.layout,
            details: &self.details,
            record,
        };
        let secret = secret::render(
            self.app,
            &self.name,
            contents,
            value,
            self.pending_value.as_ref(),
            self.key,
        );
        write_secret(&self.secrets, self.exists, &secret).await?;
        self.exists = true;
        Ok(())
    }
}

/// Issues, stages, proves, promotes and revokes secrets; mirrors the record into status.
async fn deliver_credential(
    app: &Application,
    ctx: &Context,
    gate: &Gate,
    status: &mut ApplicationStatus,
    registration: &Registration,
    app_id: &str,
) -> Result<Outcome> {
    let graph = &gate.client;
    let entra_app = &registration.app;
    let namespace = app.namespace().unwrap_or_default();
    let secret_name = secret::secret_name(app);
    status.secret_name = Some(secret_name.clone());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = read::get_opt(&secrets, &secret_name).await?;
    if let Some(found) = &existing {
        if !secret::is_owned_by(found, app) {
            return Ok(Outcome::Waiting {
                reason: Reason::SecretConflict,
                message: format!(
                    "Secret {secret_name} exists and is not owned by this Application; it is left untouched (rename spec.secret.name or delete that Secret)"
                ),
                requeue: Duration::from_secs(300),
            });
        }
    }
    let layout = match secret::SecretLayout::new(app.spec.secret.template.as_ref()) {
        Ok(l) => l,
        Err(message) => return Ok(Outcome::from((Reason::InvalidSpec, message))),
    };
    if let Some(found) = existing.as_ref().filter(|s| secret::type_differs(s, &layout)) {
        // A Secret's type is immutable: create it again (the value is re-issued if it was
        // only held there; the old key stays valid for the grace period).
        let params = kube::api::DeleteParams::default();
        secrets
            .delete(&found.name_any(), &params)
            .await
            .map_err(|source| Error::WriteSecret {
                name: secret_name.clone(),
                source,
            })?;
    }
    let existing = existing.filter(|s| !secret::type_differs(s, &layout));
    let details = connection_details(gate, app_id);
    let stored = existing
        .as_ref()
        .map(|s| credential::vet(secret::read(s, &layout, &details, &ctx.record_key), status));
    if stored
        .as_ref()
        .is_some_and(|s| s.trust == secret::RecordTrust::Forged)
    {
        let note = format!(
            "the credential record in Secret {secret_name} was not written by the operator (its MAC does not verify); it is ignored: a new secret replaces the one there, and only keys the status names are revoked"
        );
        events::publish(
            ctx,
            app,
            EventType::Warning,
            "CredentialRecordTampered",
            "VerifyRecord",
            note,
        )
        .await;
    }
    let now = ctx.now();
    let rotate_request = app.annotations().get(ROTATE_ANNOTATION).cloned();
    let revoke_all_request = app.annotations().get(REVOKE_ALL_ANNOTATION).cloned();
    // A request was acted upon when the Secret's record (written with the key issued for
    // it, read fresh) or the status says so.
    let stored_record = stored.as_ref().and_then(|s| s.record.as_ref());
    let last_rotate_request = credential::acted_upon(
        rotate_request.as_deref(),
        stored_record.and_then(|r| r.rotate_request.as_deref()),
        status.last_rotate_request.as_deref(),
    );
    let last_revoke_all_request = credential::acted_upon(
        revoke_all_request.as_deref(),
        stored_record.and_then(|r| r.revoke_all_request.as_deref()),
        status.last_revoke_all_request.as_deref(),
    );
    let decision = credential::decide(&credential::Observed {
        now,
        stored: stored.as_ref(),
        had_credential: status.credential.is_some(),
        provider_keys: entra_app.passwords(),
        rotate_request: rotate_request.as_deref(),
        last_rotate_request,
        revoke_all_request: revoke_all_request.as_deref(),
        last_revoke_all_request,
        application_replaced: registration.replaced,
        policy: gate.policy,
    });
    let mut record = stored.as_ref().and_then(|s| s.record.clone());
    if registration.restored {
        // Restored objects take time to work again at the token endpoint: prove it.
        if let Some(r) = record.as_mut() {
            r.verified_at = None;
        }
    }
    let mut d = Delivery {
        app,
        secrets,
        name: secret_name.clone(),
        layout,
        details,
        exists: existing.is_some(),
        record,
        value: stored.as_ref().and_then(|s| s.client_secret.clone()),
        pending_value: stored.as_ref().and_then(|s| s.pending_secret.clone()),
        key: &ctx.record_key,
    };
    // Keys named only by the status (a Secret deleted by hand) are superseded too.
    let status_keys: Vec<String> = status
        .credential
        .iter()
        .map(|c| c.key_id.clone())
        .chain(status.previous_credentials.iter().map(|p| p.key_id.clone()))
        .collect();

    if let Some(reason) = decision {
        let end = now + signed(gate.policy.lifetime);
        let issued = match issue(
            graph,
            &entra_app.id,
            reason,
            end,
            registration.freshness,
            &gate.policy,
        )
        .await?
        {
            Ok(issued) => issued,
            Err(refusal) => return Ok(refusal),
        };
        let expires_at = issued
            .end_date_time
            .and_then(|t| Timestamp::from_second(t.timestamp()).ok())
            .unwrap_or(end);
        // The requests this key serves, recorded with it (see CredentialRecord).
        let (served_rotate, served_revoke_all) = (
            match reason {
                credential::IssueReason::RotateRequested => rotate_request.clone(),
                _ => last_rotate_request.map(str::to_string),
            },
            match reason {
                credential::IssueReason::RevokeAllRequested => revoke_all_request.clone(),
                _ => last_revoke_all_request.map(str::to_string),
            },
        );
        let current_works = d.record.as_ref().is_some_and(|r| r.verified_at.is_some()) && d.value.is_some();
        if reason.keeps_current_secret() && current_works {
            // Stage: consumers keep the working secret until the new one is proven.
            let record = d
                .record
                .as_mut()
                .ok_or(Error::MissingObjectKey("the credential record"))?;
            record.pending = Some(PendingKey {
                key_id: issued.key_id.clone(),
                issued_at: now,
                expires_at,
            });
            record.rotate_request = served_rotate;
            record.revoke_all_request = served_revoke_all;
            let replaces = record.key_id.clone();
            d.pending_value = Some(issued.secret_text);
            write_issued(&mut d, graph, &entra_app.id, &issued.key_id).await?;
            let note = format!(
                "issued secret {} ({}); it replaces {replaces} in Secret {secret_name} once the provider accepts it",
                issued.key_id,
                reason.as_str(),
            );
            events::publish(ctx, app, EventType::Normal, "Rotating", "IssueCredential", note).await;
        } else {
            let revoke_all = reason == credential::IssueReason::RevokeAllRequested;
            let grace_end = now + signed(gate.policy.revoke_previous_after);
            let mut previous = Vec::new();
            if !revoke_all {
                let old_keys = d
                    .record
                    .as_ref()
                    .map(|r| r.key_ids().map(str::to_string).collect::<Vec<_>>());
                for key in old_keys
                    .unwrap_or_default()
                    .into_iter()
                    .chain(status_keys.iter().cloned())
                {
                    if key != issued.key_id && !previous.iter().any(|p: &PreviousKey| p.key_id == key) {
                        previous.push(PreviousKey {
                            key_id: key,
                            revoke_after: grace_end,
                        });
                    }
                }
            }
            d.record = Some(CredentialRecord {
                key_id: issued.key_id.clone(),
                issued_at: now,
                expires_at,
                verified_at: None,
                previous,
                pending: None,
                rotate_request: served_rotate,
                revoke_all_request: served_revoke_all,
            });
            d.value = Some(issued.secret_text);
            d.pending_value = None;
            // Deliver at once: until this write lands, the new key is recorded nowhere.
            write_issued(&mut d, graph, &entra_app.id, &issued.key_id).await?;
            let note = format!(
                "issued secret {} into Secret {secret_name} ({})",
                issued.key_id,
                reason.as_str()
            );
            let event_reason = if reason == credential::IssueReason::Initial {
                "CredentialIssued"
            } else {
                "Rotated"
            };
            events::publish(ctx, app, EventType::Normal, event_reason, "IssueCredential", note).await;
        }
    } else if stored.as_ref().is_some_and(|s| s.details_stale) {
        d.write().await?;
    }
    if d.record.is_none() || d.value.is_none() {
        return Err(Error::MissingObjectKey("the credential record"));
    }
    mirror(
        status,
        d.record
            .as_ref()
            .ok_or(Error::MissingObjectKey("the credential record"))?,
        &gate.policy,
    );

    // (provider) A compromise response: every key but the one issued for it dies now,
    // without grace. Done (again) until the status records it, so a pass cut short here is
    // finished by the next one instead of issuing yet another key.
    if let Some(request) = revoke_all_request.as_deref() {
        let record = d
            .record
            .as_ref()
            .ok_or(Error::MissingObjectKey("the credential record"))?;
        let issued_for_it = record.revoke_all_request.as_deref() == Some(request);
        if issued_for_it && status.last_revoke_all_request.as_deref() != Some(request) {
            let keep: BTreeSet<&str> = record.key_ids().collect();
            let others: BTreeSet<String> = entra_app
                .passwords()
                .iter()
                .map(|p| p.key_id.clone())
                .chain(status_keys.iter().cloned())
                .filter(|k| !keep.contains(k.as_str()))
                .collect();
            for key in &others {
                revoke(graph, &entra_app.id, key).await?;
            }
            status.last_revoke_all_request = Some(request.to_string());
            let note = format!(
                "revoked every other secret ({}) on request {request}; {} is the only one left",
                others.len(),
                record.key_id
            );
            events::publish(
                ctx,
                app,
                EventType::Warning,
                "RevokedAll",
                "RevokeCredential",
                note,
            )
            .await;
        }
    }

    // (provider) Prove the delivered secret before anything older is revoked.
    if d.record.as_ref().is_some_and(|r| r.verified_at.is_none()) {
        let value = d
            .value
            .clone()
            .ok_or(Error::MissingObjectKey("the credential record"))?;
        match graph.verify_client_secret(app_id, &value).await {
            Ok(()) => {
                d.record
                    .as_mut()
                    .ok_or(Error::MissingObjectKey("the credential record"))?
                    .verified_at = Some(ctx.now());
                d.write().await?;
            }
            Err(e) if !e.is_transient() => {
                let record = d
                    .record
                    .as_ref()
                    .ok_or(Error::MissingObjectKey("the credential record"))?;
                let message = not_active_message(ctx, app, &record.key_id, record.issued_at, &e).await;
                return Ok(Outcome::Waiting {
                    reason: credential::ACTIVATING,
                    message,
                    requeue: ACTIVATION_RECHECK,
                });
            }
            Err(e) => return Err(Error::IssueCredential(GraphError::Token(e))),
        }
    }

    // (provider) Promote a staged secret once the provider accepts it.
    let mut rotation_note = None;
    if let (Some(pending), Some(pending_value)) = (
        d.record.as_ref().and_then(|r| r.pending.clone()),
        d.pending_value.clone(),
    ) {
        match graph.verify_client_secret(app_id, &pending_value).await {
            Ok(()) => {
                let record = d
                    .record
                    .as_mut()
                    .ok_or(Error::MissingObjectKey("the credential record"))?;
                record.previous.push(PreviousKey {
                    key_id: record.key_id.clone(),
                    revoke_after: ctx.now() + signed(gate.policy.revoke_previous_after),
                });
                let old = std::mem::replace(&mut record.key_id, pending.key_id.clone());
                record.issued_at = pending.issued_at;
                record.expires_at = pending.expires_at;
                record.verified_at = Some(ctx.now());
                record.pending = None;
                d.value = Some(pending_value);
                d.pending_value = None;
                d.write().await?;
                let note = format!("secret {} replaced {old} in Secret {secret_name}", pending.key_id);
                events::publish(ctx, app, EventType::Normal, "Rotated", "IssueCredential", note).await;
            }
            Err(e) if !e.is_transient() => {
                let message = not_active_message(ctx, app, &pending.key_id, pending.issued_at, &e).await;
                rotation_note = Some(format!("; rotation in progress: {message}"));
            }
            Err(e) => return Err(Error::IssueCredential(GraphError::Token(e))),
        }
    }

    // (provider) Superseded keys past their grace, then keys nobody records.
    let record = d
        .record
        .clone()
        .ok_or(Error::MissingObjectKey("the credential record"))?;
    let due = credential::revocable(ctx.now(), &record);
    if !due.is_empty() {
        for key in &due {
            // Revoked already by a pass stopped before it could update the record: only the
            // record changes (Entra answers 400 to removing an unknown key).
            if !entra_app.passwords().iter().any(|k| k.key_id == *key) {
                continue;
            }
            revoke(graph, &entra_app.id, key).await?;
            let note = format!("revoked superseded secret {key}");
            events::publish(ctx, app, EventType::Normal, "Revoked", "RevokeCredential", note).await;
        }
        d.record
            .as_mut()
            .ok_or(Error::MissingObjectKey("the credential record"))?
            .previous
            .retain(|p| !due.contains(&p.key_id));
        d.write().await?;
    }
    let record = d
        .record
        .clone()
        .ok_or(Error::MissingObjectKey("the credential record"))?;
    for key in credential::orphans(ctx.now(), entra_app.passwords(), Some(&record), &BTreeSet::new()) {
        if due.contains(&key) {
            continue;
        }
        if !revoked_now(graph, &entra_app.id, &key).await? {
            // Listed by a read that predates its removal (this operator's own, say): no news.
            continue;
        }
        let note = format!(
            "revoked secret {key}, which no Secret records (left by an interrupted issue or added by hand)"
        );
        events::publish(
            ctx,
            app,
            EventType::Warning,
            "RevokedUnrecorded",
            "RevokeCredential",
            note,
        )
        .await;
    }
    mirror(status, &record, &gate.policy);

    let mut next = until(ctx.now(), credential::renew_at(&record, &gate.policy));
    if let Some(first) = record.previous.iter().map(|p| p.revoke_after).min() {
        next = next.min(until(ctx.now(), first));
    }
    if rotation_note.is_some() {
        next = next.min(ACTIVATION_RECHECK);
    }
    let served = credential::acted_upon(
        rotate_request.as_deref(),
        record.rotate_request.as_deref(),
        status.last_rotate_request.as_deref(),
    );
    let held = credential::rotate_held(&record, rotate_request.as_deref(), served);
    let rate_limited = credential::request_rate_limited(
        ctx.now(),
        &record,
        [
            (
                ROTATE_ANNOTATION,
                rotate_request.as_deref(),
                served,
                record.rotate_request.is_some(),
            ),
            (
                REVOKE_ALL_ANNOTATION,
                revoke_all_request.as_deref(),
                credential::acted_upon(
                    revoke_all_request.as_deref(),
                    record.revoke_all_request.as_deref(),
                    status.last_revoke_all_request.as_deref(),
                ),
                record.revoke_all_request.is_some(),
            ),
        ],
        gate.policy.min_request_interval,
    );
    if let Some((at, _)) = &rate_limited {
        next = next.min(until(ctx.now(), *at));
    }
    Ok(Outcome::Ready {
        message: format!(
            "client {app_id} delivered in Secret {secret_name}; secret {} is live{}{}",
            record.key_id,
            rotation_note.unwrap_or_default(),
            held.unwrap_or_default()
        ),
        requeue: next.clamp(Duration::from_secs(1), ctx.settings.resync_period),
        held: rate_limited.map(|(_, message)| message),
    })
}

/// Writes the Secret right after `addPassword`. When the apiserver refuses the write, the
/// new key is revoked at once: no Secret records it, and the retry issues another. (A write
/// that may have landed, a timeout or a 5xx, is left to the sweep of unrecorded keys.)
async fn write_issued(
    d: &mut Delivery<'_>,
    graph: &GraphClient,
    object_id: &str,
    key_id: &str,
) -> Result<()> {
    let Err(e) = d.write().await else {
        return Ok(());
    };
    if write_refused(&e) {
        match revoke(graph, object_id, key_id).await {
            Ok(()) => tracing::warn!(%key_id, error = %e, "revoked a new key whose Secret write was refused"),
            Err(revoke_error) => {
                tracing::warn!(%key_id, error = %revoke_error, "cannot revoke a key whose Secret write was refused; the sweep of unrecorded keys will")
            }
        }
    }
    Err(e)
}

/// Whether the apiserver definitely refused a Secret write (not throttled, not timed out).
fn write_refused(e: &Error) -> bool {
    matches!(e, Error::WriteSecret { source: kube::Error::Api(s), .. }
        if (400..500).contains(&s.code) && s.code != 408 && s.code != 429)
}

/// `addPassword`, or the refusal users read when the provider's policy rejects the lifetime.
async fn issue(
    graph: &GraphClient,
    object_id: &str,
    reason: credential::IssueReason,
    end: Timestamp,
    freshness: Freshness,
    policy: &EffectivePolicy,
) -> Result<std::result::Result<azure::IssuedPassword, Outcome>> {
    let request = AddPasswordRequest {
        display_name: Some(format!("dcr-operator {}", reason.as_str())),
        start_date_time: None,
        end_date_time: chrono::DateTime::from_timestamp(end.as_second(), 0),
    };
    match graph.add_password(object_id, &request, freshness).await {
        Ok(p) => Ok(Ok(p)),
        Err(GraphError::BadRequest(info)) => Ok(Err(Outcome::Waiting {
            reason: Reason::CredentialPolicyViolation,
            message: format!(
                "the provider refused a secret valid for {} ({}: {}); a tenant policy may cap secret lifetimes: lower spec.credentials.lifetime",
                humantime::format_duration(policy.lifetime),
                info.code,
                info.message
            ),
            requeue: Duration::from_secs(300),
        })),
        Err(e) => Err(Error::IssueCredential(e)),
    }
}

/// Says a secret is not accepted yet; a Warning Event once it has taken too long.
async fn not_active_message(
    ctx: &Context,
    app: &Application,
    key_id: &str,
    issued_at: Timestamp,
    e: &TokenError,
) -> String {
    let waited = ctx.now().duration_since(issued_at);
    let message = format!(
        "secret {key_id} is stored but not accepted by the provider yet ({}), after {}s",
        e.reason(),
        waited.as_secs()
    );
    if waited.as_secs_f64() > ctx.settings.activation_timeout.as_secs_f64() {
        events::publish(
            ctx,
            app,
            EventType::Warning,
            "CredentialNotActive",
            "VerifyCredential",
            message.clone(),
        )
        .await;
    }
    message
}

async fn revoke(graph: &GraphClient, object_id: &str, key_id: &str) -> Result<()> {
    revoked_now(graph, object_id, key_id).await.map(|_| ())
}

/// Removes a password; `false` when it was gone already.
async fn revoked_now(graph: &GraphClient, object_id: &str, key_id: &str) -> Result<bool> {
    match graph.remove_password(object_id, key_id).await {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        // Entra answers 400 to removing a key it does not have: revoked already (by a pass
        // cut short, or listed by a read that predates the removal: reads of
        // passwordCredentials lag a removal by the replication window).
        Err(GraphError::BadRequest(info)) => {
            tracing::debug!(%key_id, error = %info, "password already gone");
            Ok(false)
        }
        Err(source) => Err(Error::RevokeCredential {
            key_id: key_id.to_string(),
            source,
        }),
    }
}

/// Copies the credential record into status (never the value).
fn mirror(status: &mut ApplicationStatus, record: &CredentialRecord, policy: &EffectivePolicy) {
    status.credential = Some(CredentialStatus {
        key_id: record.key_id.clone(),
        issued_at: Time(record.issued_at),
        expires_at: Time(record.expires_at),
        renew_at: Time(credential::renew_at(record, policy)),
    });
    status.previous_credentials = record
        .previous
        .iter()
        .map(|p| PreviousCredential {
            key_id: p.key_id.clone(),
            revoke_after: Time(p.revoke_after),
        })
        .collect();
    status.pending_credential = record.pending.as_ref().map(|p| PendingCredential {
        key_id: p.key_id.clone(),
        issued_at: Time(p.issued_at),
    });
    if record.rotate_request.is_some() {
        status.last_rotate_request = record.rotate_request.clone();
    }
}

fn connection_details(gate: &Gate, app_id: &str) -> ConnectionDetails {
    let token_url = gate.client.token_url().to_string();
    let token_url_v1 = token_url.replace("/oauth2/v2.0/token", "/oauth2/token");
    let oidc = &gate.strategy.spec.open_id_connect;
    ConnectionDetails {
        client_id: app_id.to_string(),
        tenant_id: gate
            .provider
            .spec
            .azure_ad
            .as_ref()
            .map(|a| a.tenant_id.clone())
            .unwrap_or_default(),
        issuer: oidc
            .issuer
            .clone()
            .unwrap_or_else(|| gate.provider.spec.issuer.clone()),
        token_url,
        token_url_v1,
        scope: oidc.scopes.join(" "),
        auth_methods: oidc
            .auth_methods
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// Creates the Secret, or applies it over the owned one.
async fn write_secret(api: &Api<Secret>, exists: bool, secret: &Secret) -> Result<()> {
    let name = secret.name_any();
    let result = if exists {
        api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(secret))
            .await
    } else {
        let params = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        api.create(&params, secret).await
    };
    result
        .map(|_| ())
        .map_err(|source| Error::WriteSecret { name, source })
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::try_from(then.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// The provider an Application's strategy points at (once the strategy is gone: the one
/// its status recorded), and its Graph client; None when that provider no longer exists
/// (nothing can be done at the provider then).
async fn provider_of(app: &Application, ctx: &Context) -> Result<Option<(DcrProvider, Arc<GraphClient>)>> {
    let strategy_name = &app.spec.auth_strategy_ref.name;
    let strategy = read::get_opt(&Api::<AuthStrategy>::all(ctx.client.clone()), strategy_name).await?;
    let recorded = app.status.as_ref().and_then(|s| s.provider.clone());
    let Some(provider_name) = strategy.map(|s| s.spec.provider_ref.name).or(recorded) else {
        return Ok(None);
    };
    let provider_name = &provider_name;
    let provider = read::get_opt(&Api::<DcrProvider>::all(ctx.client.clone()), provider_name).await?;
    let Some(provider) = provider else {
        return Ok(None);
    };
    let graph = ctx
        .providers
        .client_for(&ctx.client, &provider)
        .await
        .map_err(client_error)?;
    let namespace = app.namespace().unwrap_or_default();
    Ok(Some((provider, Arc::new(graph.for_namespace(&namespace)))))
}

/// A provider client that cannot be built, as a reconcile error.
fn client_error(e: ClientError) -> Error {
    match e {
        ClientError::Kube { source, .. } => Error::ReadObject {
            what: "the DcrProvider's Secret".into(),
            source,
        },
        other => Error::ProviderConfig(crate::idp::azure::ConfigError::Invalid(other.to_string())),
    }
}

/// The provider-side application of `app`: the recorded one when it proves to be this
/// Application's, else the one its uniqueName names (for a deleted Application: none once
/// it is gone).
async fn proven_application(
    app: &Application,
    ctx: &Context,
    graph: &GraphClient,
    status: &ApplicationStatus,
) -> Result<Option<azure::Application>> {
    let unique_name = desired::unique_name(&ctx.settings.cluster_name, &app.uid().unwrap_or_default());
    let cluster_tag = desired::cluster_tag(&ctx.settings.cluster_name);
    if let Some(id) = &status.application_object_id {
        match graph.get_application(id, Freshness::Settled).await {
            Ok(found) if proves_identity(&found, &unique_name, &cluster_tag) => return Ok(Some(found)),
            Ok(_) => {
                tracing::warn!(object_id = %id, "status names an application that is not this Application's; ignoring it")
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Error::ReadApplication(e)),
        }
    }
    match graph
        .get_application_by_unique_name(&unique_name, Freshness::Settled)
        .await
    {
        Ok(found) if proves_identity(&found, &unique_name, &cluster_tag) => Ok(Some(found)),
        Ok(_) => Ok(None),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(Error::ReadApplication(e)),
    }
}

/// The recorded application id, when it is no longer live and deleted items do not show
/// it to be someone else's (absent there too: a purge of it answers 404, harmlessly).
async fn recorded_deleted(
    app: &Application,
    ctx: &Context,
    graph: &GraphClient,
    status: &ApplicationStatus,
) -> Result<Option<String>> {
    let Some(id) = &status.application_object_id else {
        return Ok(None);
    };
    let unique_name = desired::unique_name(&ctx.settings.cluster_name, &app.uid().unwrap_or_default());
    let cluster_tag = desired::cluster_tag(&ctx.settings.cluster_name);
    match graph.get_deleted_application(id).await {
        Ok(found) if proves_identity(&found, &unique_name, &cluster_tag) => Ok(Some(id.clone())),
        Ok(_) => Ok(None),
        Err(e) if e.is_not_found() => Ok(Some(id.clone())),
        // The current page names Application.Read.All; an older v1.0 revision also lists
        // OwnedBy. A tenant that refuses it is told which permission to grant.
        Err(source @ GraphError::Forbidden(_)) => Err(Error::MissingPermission {
            what: format!(
                "checking deleted application {id} before purging it (GET /directory/deletedItems/{id})"
            ),
            permission: DELETED_ITEMS_PERMISSION,
            source,
        }),
        Err(e) => Err(Error::ReadApplication(e)),
    }
}

/// Whether service principal `id` serves client `app_id` (gone: no).
async fn serves(graph: &GraphClient, id: &str, app_id: &str) -> Result<bool> {
    match graph.get_service_principal(id, Freshness::Settled).await {
        Ok(sp) => Ok(sp
            .app_id
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case(app_id))),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(Error::DeleteApplication(e)),
    }
}

/// Drops this cluster's ownership tags from an application left behind on purpose, so the
/// orphan sweep never reports or deletes it. Nothing to do when it was never registered or
/// its provider is gone.
async fn release(app: &Application, ctx: &Context, status: &ApplicationStatus) -> Result<()> {
    if status.application_object_id.is_none() {
        return Ok(());
    }
    let Some((_, graph)) = provider_of(app, ctx).await? else {
        return Ok(());
    };
    let Some(current) = proven_application(app, ctx, &graph, status).await? else {
        return Ok(());
    };
    let object_id = &current.id;
    let kept: Vec<String> = current
        .tags()
        .iter()
        .filter(|t| !t.starts_with(desired::TAG_MANAGED))
        .cloned()
        .collect();
    let patch = azure::ApplicationPatch {
        tags: Some(kept),
        ..Default::default()
    };
    graph
        .update_application(object_id, &patch, Freshness::Settled)
        .await
        .map_err(Error::UpdateApplication)
}

/// A deletion whose provider is gone: the finalizer stays (the client and its secrets
/// would otherwise stay valid at the provider, unseen) until the provider is back, or until
/// the Application is annotated `dcr-operator.io/abandon: "true"`.
async fn cleanup_blocked(app: &Application, ctx: &Context, status: ApplicationStatus) -> Result<Action> {
    let client = format!(
        "client {} (application {})",
        status.client_id.as_deref().unwrap_or_default(),
        status.application_object_id.as_deref().unwrap_or_default()
    );
    let provider = status.provider.as_deref().unwrap_or("(not recorded)");
    if app.annotations().get(ABANDON_ANNOTATION).map(String::as_str) == Some("true") {
        let note = format!(
            "abandoned {client} at DcrProvider {provider} ({ABANDON_ANNOTATION}): it and its secrets stay at the provider until deleted there"
        );
        events::publish(ctx, app, EventType::Warning, "Abandoned", "Delete", note).await;
        return Ok(Action::await_change());
    }
    let message = format!(
        "cannot delete {client}: DcrProvider {provider} no longer exists; deletion waits for it (recreate it, or annotate {ABANDON_ANNOTATION}=true to leave the client at the provider)"
    );
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    let condition = DesiredCondition::not_ready(Reason::CleanupBlocked, message.clone());
    finish(app, ctx, &api, &status, status.clone(), Some(condition)).await?;
    Err(Error::CleanupBlocked(message))
}

/// Whether the Application's deletion began within the replication window.
fn deleted_recently(app: &Application, ctx: &Context) -> bool {
    app.metadata.deletion_timestamp.as_ref().is_some_and(|t| {
        ctx.now().duration_since(t.0)
            < SignedDuration::try_from(credential::REPLICATION_WINDOW).unwrap_or_default()
    })
}

async fn cleanup(app: &Application, ctx: &Context) -> Result<Action> {
    let namespace = app.namespace().unwrap_or_default();
    ctx.metrics.forget_application(&namespace, &app.name_any());
    ctx.application_edits.forget(app);
    let status = app.status.clone().unwrap_or_default();
    if app.spec.deletion_policy == DeletionPolicy::Orphan {
        release(app, ctx, &status).await?;
        let note = format!(
            "left client {} at the provider (deletionPolicy: Orphan)",
            status.client_id.unwrap_or_else(|| "(never registered)".into())
        );
        events::publish(ctx, app, EventType::Normal, "Orphaned", "Delete", note).await;
        return Ok(Action::await_change());
    }
    let Some((provider, graph)) = provider_of(app, ctx).await? else {
        if status.application_object_id.is_some() {
            return cleanup_blocked(app, ctx, status).await;
        }
        return Ok(Action::await_change());
    };
    // Only what proves to be this Application's is deleted, whatever the status says.
    let ours = proven_application(app, ctx, &graph, &status).await?;
    if let (Some(sp), Some(ours)) = (&status.service_principal_id, &ours) {
        if serves(&graph, sp, ours.app_id.as_deref().unwrap_or_default()).await? {
            match graph.delete_service_principal(sp).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(Error::DeleteApplication(e)),
            }
        }
    }
    let purge = provider.spec.azure_ad.as_ref().map(|a| a.deleted_applications)
        == Some(DeletedApplicationsPolicy::Purge);
    let target = match ours {
        Some(live) => Some(live.id),
        // Deleted by an earlier pass that stopped before its purge.
        None if purge => recorded_deleted(app, ctx, &graph, &status).await?,
        None => None,
    };
    if let Some(id) = target {
        let deleted_now = graph
            .delete_application(&id)
            .await
            .map_err(Error::DeleteApplication)?;
        if purge {
            let purged = graph
                .permanently_delete_application(&id)
                .await
                .map_err(Error::DeleteApplication)?;
            // Deleted items replicate like everything else: right after the delete, a 404
            // means "not there yet", not "already purged" (a purge by an earlier pass that
            // stopped before removing the finalizer).
            if !purged && (deleted_now || deleted_recently(app, ctx)) {
                return Err(Error::PurgePending { id });
            }
        }
        let note = format!(
            "deleted client {} at DcrProvider {}{}",
            status.client_id.unwrap_or_default(),
            provider.name_any(),
            if purge {
                " and purged it from deleted items"
            } else {
                ""
            }
        );
        events::publish(ctx, app, EventType::Normal, "Deleted", "Delete", note).await;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_error(code: u16) -> Error {
        let status = kube::core::Status::failure("refused", "Refused").with_code(code);
        Error::WriteSecret {
            name: "s".into(),
            source: kube::Error::Api(status.boxed()),
        }
    }

    #[test]
    fn only_a_definite_refusal_of_the_secret_write_revokes_the_new_key() {
        for code in [400, 403, 404, 409, 422] {
            assert!(write_refused(&write_error(code)), "{code}");
        }
        // Throttled, timed out or failed at the server: the write may have landed.
        for code in [408, 429, 500, 503] {
            assert!(!write_refused(&write_error(code)), "{code}");
        }
        assert!(!write_refused(&Error::MissingObjectKey("x")));
    }

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
}
