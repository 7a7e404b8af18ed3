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

pub mod admission;
pub mod credential;
pub mod desired;

use super::context::Context;
use super::error::{Error, Result};
use super::events;
use super::providers::ClientError;
use super::status::apply_status;
use crate::crd::application::{
    Application, ApplicationStatus, CredentialStatus, DeletionPolicy, PreviousCredential,
};
use crate::crd::conditions::{
    find_condition, is_ready, set_condition, ConditionType, DesiredCondition, Reason, Status,
};
use crate::crd::provider::{DcrProvider, DeletedApplicationsPolicy};
use crate::crd::strategy::AuthStrategy;
use crate::idp::azure::{self, AddPasswordRequest, Freshness, GraphClient, GraphError, TokenError};
use crate::secret::{self, ConnectionDetails, CredentialRecord, PreviousKey};
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
const MANAGER: &str = "dcr-operator/application";
/// How soon a secret that the provider does not accept yet is tried again.
const ACTIVATION_RECHECK: Duration = Duration::from_secs(3);

#[tracing::instrument(skip_all, fields(kind = KIND, namespace = app.namespace().unwrap_or_default(), name = %app.name_any()))]
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
    /// Credentials delivered and proven.
    Ready { message: String, requeue: Duration },
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
    let result = match gate(app, ctx).await {
        Ok(Ok(gate)) => converge(app, ctx, &gate, &mut status, api).await,
        Ok(Err(refusal)) => Ok(Outcome::from(refusal)),
        Err(e) => Err(e),
    };
    let (condition, action, error) = match result {
        Ok(Outcome::Ready { message, requeue }) => {
            (DesiredCondition::ready(message), Action::requeue(requeue), None)
        }
        Ok(Outcome::Waiting {
            reason,
            message,
            requeue,
        }) => (
            DesiredCondition::not_ready(reason, message),
            Action::requeue(requeue),
            None,
        ),
        Err(e) => {
            let (reason, transient) = classify(&e);
            let requeue = Action::requeue(ctx.settings.resync_period);
            let condition = DesiredCondition::not_ready(reason, e.to_string());
            // Transient failures go to the error policy (backoff, Retry-After); permanent
            // ones wait for a change instead of retrying hot.
            (condition, requeue, transient.then_some(e))
        }
    };
    finish(app, ctx, api, &old, status, condition).await?;
    match error {
        Some(e) => Err(e),
        None => Ok(action),
    }
}

/// Writes the status (when changed), publishes an Event on a Ready transition, updates
/// the per-Application metrics.
async fn finish(
    app: &Application,
    ctx: &Context,
    api: &Api<Application>,
    old: &ApplicationStatus,
    mut status: ApplicationStatus,
    condition: DesiredCondition,
) -> Result<()> {
    let was =
        find_condition(&old.conditions, ConditionType::Ready).map(|c| (c.status.clone(), c.reason.clone()));
    set_condition(
        &mut status.conditions,
        condition.clone(),
        app.metadata.generation,
        ctx.now(),
    );
    status.observed_generation = app.metadata.generation;
    if status != *old {
        apply_status(api, MANAGER, &app.name_any(), &status).await?;
    }
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

/// The condition reason for an error, and whether retrying soon may help.
fn classify(e: &Error) -> (Reason, bool) {
    match e.graph_error() {
        Some(GraphError::Throttled { .. }) | Some(GraphError::Token(TokenError::Throttled { .. })) => {
            (Reason::Throttled, true)
        }
        Some(g) if g.is_transient() => (Reason::Unreachable, true),
        Some(GraphError::Token(_)) => (Reason::ProviderNotReady, true),
        Some(_) => (Reason::ProviderError, false),
        None => (Reason::Progressing, true),
    }
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
    let strategies: Api<AuthStrategy> = Api::all(ctx.client.clone());
    let Some(strategy) = strategies
        .get_opt(strategy_name)
        .await
        .map_err(|source| Error::ReadObject {
            what: format!("AuthStrategy {strategy_name}"),
            source,
        })?
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
    let policy = match admission::effective_policy(app, &strategy) {
        Ok(p) => p,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let provider_name = &strategy.spec.provider_ref.name;
    let providers: Api<DcrProvider> = Api::all(ctx.client.clone());
    let Some(provider) = providers
        .get_opt(provider_name)
        .await
        .map_err(|source| Error::ReadObject {
            what: format!("DcrProvider {provider_name}"),
            source,
        })?
    else {
        return Ok(Err((
            Reason::StrategyNotReady,
            format!("DcrProvider {provider_name} does not exist"),
        )));
    };
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
    Ok(Ok(Gate {
        strategy,
        provider,
        client,
        policy,
    }))
}

/// Registers, repairs and delivers. Mutates `status` as facts become known.
async fn converge(
    app: &Application,
    ctx: &Context,
    gate: &Gate,
    status: &mut ApplicationStatus,
    api: &Api<Application>,
) -> Result<Outcome> {
    let cluster = &ctx.settings.cluster_name;
    let uid = app.uid().ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let unique_name = desired::unique_name(cluster, &uid);
    let desired = desired::desired_application(cluster, app, &gate.strategy);
    let graph = &gate.client;

    // (provider) The application itself, created if missing.
    let before = status.clone();
    let (entra_app, freshness) = ensure_registered(app, ctx, gate, status, &unique_name, &desired).await?;
    let app_id = entra_app
        .app_id
        .clone()
        .ok_or(Error::MissingObjectKey("appId of the provider application"))?;
    status.client_id = Some(app_id.clone());
    status.unique_name = Some(unique_name.clone());
    status.application_object_id = Some(entra_app.id.clone());
    if *status != before {
        // Persist the provider-side identity before anything else can fail.
        apply_status(api, MANAGER, &app.name_any(), status).await?;
    }

    // (provider) Managed fields changed in the spec or out of band.
    if let Some(patch) = desired::drift(&desired, &entra_app) {
        graph
            .update_application(&entra_app.id, &patch, freshness)
            .await
            .map_err(Error::UpdateApplication)?;
        tracing::info!(object_id = %entra_app.id, "updated the provider-side application");
    }

    // (provider) The service principal, so the client can obtain tokens.
    if status.service_principal_id.is_none() {
        let sp = graph
            .create_service_principal(&app_id, freshness)
            .await
            .map_err(Error::EnsureServicePrincipal)?;
        status.service_principal_id = Some(sp.id);
    }

    deliver_credential(app, ctx, gate, status, &entra_app, &app_id, freshness).await
}

/// Finds the provider-side application (by the recorded object id, else by uniqueName
/// through an idempotent upsert) and how fresh it is.
async fn ensure_registered(
    app: &Application,
    ctx: &Context,
    gate: &Gate,
    status: &mut ApplicationStatus,
    unique_name: &str,
    desired: &azure::ApplicationPatch,
) -> Result<(azure::Application, Freshness)> {
    let graph = &gate.client;
    if let Some(id) = status.application_object_id.clone() {
        match graph.get_application(&id, Freshness::Settled).await {
            Ok(found) => {
                let freshness = freshness_of(&found);
                return Ok((found, freshness));
            }
            Err(e) if e.is_not_found() => {
                tracing::warn!(object_id = %id, "the provider-side application is gone; registering it again");
                status.application_object_id = None;
                status.service_principal_id = None;
            }
            Err(e) => return Err(Error::ReadApplication(e)),
        }
    }
    let owner = match gate
        .provider
        .status
        .as_ref()
        .and_then(|s| s.service_principal_id.clone())
    {
        Some(id) => id,
        None => {
            graph
                .own_service_principal()
                .await
                .map_err(Error::RegisterApplication)?
                .id
        }
    };
    let mut create = desired.clone();
    create.owners_bind = Some(vec![graph.directory_object_url(&owner)]);
    let ensured = graph
        .ensure_application(unique_name, &create)
        .await
        .map_err(Error::RegisterApplication)?;
    if ensured.created {
        let note = format!(
            "registered client {} at DcrProvider {}",
            ensured.application.app_id.clone().unwrap_or_default(),
            gate.provider.name_any()
        );
        events::publish(ctx, app, EventType::Normal, "Registered", "Register", note).await;
        return Ok((ensured.application, Freshness::JustCreated));
    }
    let freshness = freshness_of(&ensured.application);
    Ok((ensured.application, freshness))
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

/// Issues, delivers, proves and revokes secrets; mirrors the record into status.
async fn deliver_credential(
    app: &Application,
    ctx: &Context,
    gate: &Gate,
    status: &mut ApplicationStatus,
    entra_app: &azure::Application,
    app_id: &str,
    freshness: Freshness,
) -> Result<Outcome> {
    let graph = &gate.client;
    let namespace = app.namespace().unwrap_or_default();
    let secret_name = app
        .spec
        .secret
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-credentials", app.name_any()));
    status.secret_name = Some(secret_name.clone());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = secrets
        .get_opt(&secret_name)
        .await
        .map_err(|source| Error::ReadObject {
            what: format!("Secret {secret_name}"),
            source,
        })?;
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
    let details = connection_details(gate, app_id);
    let stored = existing.as_ref().map(|s| secret::read(s, &details));
    let now = ctx.now();
    let rotate_request = app.annotations().get(ROTATE_ANNOTATION).cloned();
    let decision = credential::decide(&credential::Observed {
        now,
        stored: stored.as_ref(),
        had_credential: status.credential.is_some(),
        provider_keys: entra_app.passwords(),
        rotate_request: rotate_request.as_deref(),
        last_rotate_request: status.last_rotate_request.as_deref(),
        policy: gate.policy,
    });
    let mut record = stored.as_ref().and_then(|s| s.record.clone());
    let mut value = stored.as_ref().and_then(|s| s.client_secret.clone());
    let mut secret_exists = existing.is_some();
    let status_keys: BTreeSet<String> = status
        .credential
        .iter()
        .map(|c| c.key_id.clone())
        .chain(status.previous_credentials.iter().map(|p| p.key_id.clone()))
        .collect();

    if let Some(reason) = decision {
        let end = now + signed(gate.policy.lifetime);
        let request = AddPasswordRequest {
            display_name: Some(format!("dcr-operator {}", reason.as_str())),
            start_date_time: None,
            end_date_time: chrono::DateTime::from_timestamp(end.as_second(), 0),
        };
        let issued = match graph.add_password(&entra_app.id, &request, freshness).await {
            Ok(p) => p,
            Err(GraphError::BadRequest(info)) => {
                return Ok(Outcome::Waiting {
                    reason: Reason::CredentialPolicyViolation,
                    message: format!(
                        "the provider refused a secret valid for {} ({}: {}); a tenant policy may cap secret lifetimes: lower spec.credentials.lifetime",
                        humantime::format_duration(gate.policy.lifetime),
                        info.code,
                        info.message
                    ),
                    requeue: Duration::from_secs(300),
                })
            }
            Err(e) => return Err(Error::IssueCredential(e)),
        };
        let grace_end = now + signed(gate.policy.revoke_previous_after);
        let mut previous = record.as_ref().map(|r| r.previous.clone()).unwrap_or_default();
        let superseded = record
            .as_ref()
            .map(|r| r.key_id.clone())
            .into_iter()
            .chain(status_keys.iter().cloned());
        for key in superseded {
            if key != issued.key_id && !previous.iter().any(|p| p.key_id == key) {
                previous.push(PreviousKey {
                    key_id: key,
                    revoke_after: grace_end,
                });
            }
        }
        let expires_at = issued
            .end_date_time
            .and_then(|t| Timestamp::from_second(t.timestamp()).ok())
            .unwrap_or(end);
        let new_record = CredentialRecord {
            key_id: issued.key_id.clone(),
            issued_at: now,
            expires_at,
            verified_at: None,
            previous,
        };
        // Deliver at once: until this write lands, the new key is recorded nowhere.
        write_secret(
            &secrets,
            secret_exists,
            &secret::render(app, &secret_name, &details, &issued.secret_text, &new_record),
        )
        .await?;
        secret_exists = true;
        if reason == credential::IssueReason::RotateRequested {
            status.last_rotate_request = rotate_request.clone();
        }
        let (event_reason, note) = match reason {
            credential::IssueReason::Initial => (
                "CredentialIssued",
                format!("issued secret {} into Secret {secret_name}", issued.key_id),
            ),
            other => (
                "Rotated",
                format!(
                    "issued secret {} into Secret {secret_name} ({})",
                    issued.key_id,
                    other.as_str()
                ),
            ),
        };
        events::publish(ctx, app, EventType::Normal, event_reason, "IssueCredential", note).await;
        record = Some(new_record);
        value = Some(issued.secret_text);
    } else if let (Some(s), Some(r), Some(v)) = (&stored, &record, &value) {
        if s.details_stale {
            write_secret(&secrets, true, &secret::render(app, &secret_name, &details, v, r)).await?;
        }
    }
    let (Some(mut record), Some(value)) = (record, value) else {
        return Err(Error::MissingObjectKey("the credential record"));
    };
    mirror(status, &record, &gate.policy);

    // (provider) Prove the current secret before anything older is revoked.
    if record.verified_at.is_none() {
        match graph.verify_client_secret(app_id, &value).await {
            Ok(()) => {
                record.verified_at = Some(ctx.now());
                write_secret(
                    &secrets,
                    secret_exists,
                    &secret::render(app, &secret_name, &details, &value, &record),
                )
                .await?;
            }
            Err(e) if !e.is_transient() => {
                let waited = now.duration_since(record.issued_at);
                let message = format!(
                    "secret {} is delivered but not accepted by the provider yet ({}), after {}s",
                    record.key_id,
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
                return Ok(Outcome::Waiting {
                    reason: credential::ACTIVATING,
                    message,
                    requeue: ACTIVATION_RECHECK,
                });
            }
            Err(e) => return Err(Error::IssueCredential(GraphError::Token(e))),
        }
    }

    // (provider) Superseded keys past their grace, then keys nobody records.
    let due = credential::revocable(ctx.now(), &record);
    if !due.is_empty() {
        for key in &due {
            revoke(graph, &entra_app.id, key).await?;
            events::publish(
                ctx,
                app,
                EventType::Normal,
                "Revoked",
                "RevokeCredential",
                format!("revoked superseded secret {key}"),
            )
            .await;
        }
        record.previous.retain(|p| !due.contains(&p.key_id));
        write_secret(
            &secrets,
            true,
            &secret::render(app, &secret_name, &details, &value, &record),
        )
        .await?;
    }
    for key in credential::orphans(ctx.now(), entra_app.passwords(), Some(&record), &BTreeSet::new()) {
        if due.contains(&key) {
            continue;
        }
        revoke(graph, &entra_app.id, &key).await?;
        events::publish(
            ctx,
            app,
            EventType::Warning,
            "RevokedUnrecorded",
            "RevokeCredential",
            format!("revoked secret {key}, which no Secret records (left by an interrupted issue or added by hand)"),
        )
        .await;
    }
    mirror(status, &record, &gate.policy);

    let renew_at = credential::renew_at(&record, &gate.policy);
    let mut next = until(ctx.now(), renew_at);
    if let Some(first) = record.previous.iter().map(|p| p.revoke_after).min() {
        next = next.min(until(ctx.now(), first));
    }
    Ok(Outcome::Ready {
        message: format!(
            "client {app_id} delivered in Secret {secret_name}; secret {} is live",
            record.key_id
        ),
        requeue: next.clamp(Duration::from_secs(1), ctx.settings.resync_period),
    })
}

async fn revoke(graph: &GraphClient, object_id: &str, key_id: &str) -> Result<()> {
    match graph.remove_password(object_id, key_id).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
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

/// Removes the provider side unless the Application says Orphan. A provider that no longer
/// exists cannot be cleaned: that is reported and deletion goes on.
async fn cleanup(app: &Application, ctx: &Context) -> Result<Action> {
    let namespace = app.namespace().unwrap_or_default();
    ctx.metrics.forget_application(&namespace, &app.name_any());
    let status = app.status.clone().unwrap_or_default();
    if app.spec.deletion_policy == DeletionPolicy::Orphan {
        let note = format!(
            "left client {} at the provider (deletionPolicy: Orphan)",
            status.client_id.unwrap_or_else(|| "(never registered)".into())
        );
        events::publish(ctx, app, EventType::Normal, "Orphaned", "Delete", note).await;
        return Ok(Action::await_change());
    }
    let strategy_name = &app.spec.auth_strategy_ref.name;
    let strategy = Api::<AuthStrategy>::all(ctx.client.clone())
        .get_opt(strategy_name)
        .await
        .map_err(|source| Error::ReadObject {
            what: format!("AuthStrategy {strategy_name}"),
            source,
        })?;
    let provider = match &strategy {
        Some(s) => Api::<DcrProvider>::all(ctx.client.clone())
            .get_opt(&s.spec.provider_ref.name)
            .await
            .map_err(|source| Error::ReadObject {
                what: format!("DcrProvider {}", s.spec.provider_ref.name),
                source,
            })?,
        None => None,
    };
    let Some(provider) = provider else {
        if status.application_object_id.is_some() {
            let note = format!(
                "cannot delete provider-side application {} ({}): its AuthStrategy or DcrProvider is gone",
                status.application_object_id.unwrap_or_default(),
                status.client_id.unwrap_or_default()
            );
            events::publish(ctx, app, EventType::Warning, "ProviderGone", "Delete", note).await;
        }
        return Ok(Action::await_change());
    };
    let graph = match ctx.providers.client_for(&ctx.client, &provider).await {
        Ok(c) => c,
        Err(ClientError::Kube { source, .. }) => {
            return Err(Error::ReadObject {
                what: "the DcrProvider's Secret".into(),
                source,
            })
        }
        Err(e) => {
            return Err(Error::ProviderConfig(crate::idp::azure::ConfigError::Invalid(
                e.to_string(),
            )))
        }
    };
    let object_id = match &status.application_object_id {
        Some(id) => Some(id.clone()),
        None => {
            let unique_name =
                desired::unique_name(&ctx.settings.cluster_name, &app.uid().unwrap_or_default());
            match graph
                .get_application_by_unique_name(&unique_name, Freshness::Settled)
                .await
            {
                Ok(found) => Some(found.id),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(Error::ReadApplication(e)),
            }
        }
    };
    if let Some(sp) = &status.service_principal_id {
        match graph.delete_service_principal(sp).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Error::DeleteApplication(e)),
        }
    }
    if let Some(id) = object_id {
        graph
            .delete_application(&id)
            .await
            .map_err(Error::DeleteApplication)?;
        let purge = provider.spec.azure_ad.as_ref().map(|a| a.deleted_applications)
            == Some(DeletedApplicationsPolicy::Purge);
        if purge {
            graph
                .permanently_delete_application(&id)
                .await
                .map_err(Error::DeleteApplication)?;
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
