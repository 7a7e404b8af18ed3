//! Deliver: issues, stages, proves, promotes and revokes secrets through the provider
//! boundary, writes them into the Application's Secret, and mirrors the credential record
//! into status. Each step takes the state the previous one established: [`Target`] (where
//! the Secret goes) and [`Live`] (a record and its value, both present by construction).

use super::admission::EffectivePolicy;
use super::gate::{connection_details, Gate};
use super::register::Registration;
use super::{credential, Outcome, ACTIVATION_RECHECK, MANAGER, REVOKE_ALL_ANNOTATION, ROTATE_ANNOTATION};
use crate::controller::context::Context;
use crate::controller::error::{Error, Result};
use crate::controller::{events, read};
use crate::crd::application::{
    Application, ApplicationStatus, CredentialStatus, PendingCredential, PreviousCredential,
};
use crate::crd::conditions::Reason;
use crate::idp::{Client, Failure, IssuedSecret, ProviderError};
use crate::secret::{
    self, ConnectionDetails, CredentialRecord, PendingKey, PreviousKey, RecordTrust, StoredCredential,
};
use crate::sensitive::SecretString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use std::collections::BTreeSet;
use std::time::Duration;

/// What every step of one delivery reads.
struct Scope<'a> {
    app: &'a Application,
    ctx: &'a Context,
    gate: &'a Gate,
    client: &'a Client,
    /// When the pass began: issue times and grace periods count from it.
    now: Timestamp,
}

impl Scope<'_> {
    async fn publish(&self, type_: EventType, reason: &str, action: &str, note: String) {
        events::publish(self.ctx, self.app, type_, reason, action, note).await;
    }

    fn concurrent_secrets(&self) -> bool {
        self.gate.backend.capabilities().concurrent_secrets
    }

    fn policy(&self) -> &EffectivePolicy {
        &self.gate.policy
    }
}

/// Where the Secret goes, and how it is written.
struct Target<'a> {
    app: &'a Application,
    secrets: Api<Secret>,
    name: String,
    layout: secret::SecretLayout,
    details: ConnectionDetails,
    exists: bool,
    key: &'a crate::secret::mac::RecordKey,
}

/// A credential record and the value it names: what a delivered Secret holds.
struct Live {
    record: CredentialRecord,
    value: SecretString,
    pending_value: Option<SecretString>,
}

/// What the Secret held when the pass began (any part may be missing).
struct Held {
    record: Option<CredentialRecord>,
    value: Option<SecretString>,
    pending_value: Option<SecretString>,
}

impl Held {
    fn live(self) -> Option<Live> {
        Some(Live {
            record: self.record?,
            value: self.value?,
            pending_value: self.pending_value,
        })
    }

    /// The working secret (proven, and its value there) to keep serving while a new one
    /// is proven; else what was held.
    fn working(self) -> Working {
        match (self.record, self.value) {
            (Some(record), Some(value)) if record.verified_at.is_some() => Working::Yes(Live {
                record,
                value,
                pending_value: self.pending_value,
            }),
            (record, value) => Working::No(Held {
                record,
                value,
                pending_value: self.pending_value,
            }),
        }
    }
}

/// Whether what was held works (see [`Held::working`]).
enum Working {
    Yes(Live),
    No(Held),
}

/// The rotate and revoke-all requests on the Application, and the last ones acted upon
/// (per the Secret's record, written with the key issued for it, or the status).
struct Requests {
    rotate: Option<String>,
    revoke_all: Option<String>,
    last_rotate: Option<String>,
    last_revoke_all: Option<String>,
}

impl Requests {
    fn read(app: &Application, record: Option<&CredentialRecord>, status: &ApplicationStatus) -> Self {
        let rotate = app.annotations().get(ROTATE_ANNOTATION).cloned();
        let revoke_all = app.annotations().get(REVOKE_ALL_ANNOTATION).cloned();
        let last_rotate = credential::acted_upon(
            rotate.as_deref(),
            record.and_then(|r| r.rotate_request.as_deref()),
            status.last_rotate_request.as_deref(),
        )
        .map(str::to_string);
        let last_revoke_all = credential::acted_upon(
            revoke_all.as_deref(),
            record.and_then(|r| r.revoke_all_request.as_deref()),
            status.last_revoke_all_request.as_deref(),
        )
        .map(str::to_string);
        Self {
            rotate,
            revoke_all,
            last_rotate,
            last_revoke_all,
        }
    }

    /// The requests a key issued for `reason` serves (recorded with it).
    fn served_by(&self, reason: credential::IssueReason) -> (Option<String>, Option<String>) {
        let rotate = match reason {
            credential::IssueReason::RotateRequested => self.rotate.clone(),
            _ => self.last_rotate.clone(),
        };
        let revoke_all = match reason {
            credential::IssueReason::RevokeAllRequested => self.revoke_all.clone(),
            _ => self.last_revoke_all.clone(),
        };
        (rotate, revoke_all)
    }
}

/// Issues, stages, proves, promotes and revokes secrets; mirrors the record into status.
pub(super) async fn deliver(
    app: &Application,
    ctx: &Context,
    gate: &Gate,
    status: &mut ApplicationStatus,
    registration: &Registration,
) -> Result<Outcome> {
    let scope = Scope {
        app,
        ctx,
        gate,
        client: &registration.client,
        now: ctx.now(),
    };
    status.secret_name = Some(secret::secret_name(app));
    let (mut target, stored) = match find_secret(&scope, status).await? {
        Ok(found) => found,
        Err(outcome) => return Ok(outcome),
    };
    let requests = Requests::read(app, stored.as_ref().and_then(|s| s.record.as_ref()), status);
    // Keys named only by the status (a Secret deleted by hand) are superseded too.
    let status_keys: Vec<String> = status
        .credential
        .iter()
        .map(|c| c.key_id.clone())
        .chain(status.previous_credentials.iter().map(|p| p.key_id.clone()))
        .collect();
    let decision = credential::decide(&credential::Observed {
        now: scope.now,
        stored: stored.as_ref(),
        had_credential: status.credential.is_some(),
        provider_keys: &scope.client.secrets,
        rotate_request: requests.rotate.as_deref(),
        last_rotate_request: requests.last_rotate.as_deref(),
        revoke_all_request: requests.revoke_all.as_deref(),
        last_revoke_all_request: requests.last_revoke_all.as_deref(),
        application_replaced: registration.replaced,
        policy: gate.policy,
    });
    let held = held(stored.as_ref(), registration.restored);
    let mut live = match decision {
        Some(reason) => {
            match issue_and_write(&scope, &mut target, held, reason, &requests, &status_keys).await? {
                Ok(live) => live,
                Err(outcome) => return Ok(outcome),
            }
        }
        None => {
            let live = held
                .live()
                .ok_or(Error::MissingObjectKey("the credential record"))?;
            if stored.as_ref().is_some_and(|s| s.details_stale) {
                target.write(&live).await?;
            }
            live
        }
    };
    mirror(status, &live.record, &gate.policy);
    revoke_all_others(&scope, status, &live, &requests, &status_keys).await?;
    if let Some(waiting) = prove(&scope, &mut target, &mut live).await? {
        return Ok(waiting);
    }
    let rotation_note = promote(&scope, &mut target, &mut live).await?;
    let due = revoke_due(&scope, &mut target, &mut live).await?;
    sweep_unrecorded(&scope, &live, &due).await?;
    mirror(status, &live.record, &gate.policy);
    Ok(ready(
        &scope,
        status,
        &live.record,
        &requests,
        &target.name,
        rotation_note,
    ))
}

/// The Secret's target and its vetted contents; an outcome when it cannot be written (not
/// ours, or an invalid template).
async fn find_secret<'a>(
    scope: &Scope<'a>,
    status: &ApplicationStatus,
) -> Result<std::result::Result<(Target<'a>, Option<StoredCredential>), Outcome>> {
    let (app, ctx) = (scope.app, scope.ctx);
    let name = secret::secret_name(app);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    let existing = read::get_opt(&secrets, &name).await?;
    if existing
        .as_ref()
        .is_some_and(|found| !secret::is_owned_by(found, app))
    {
        return Ok(Err(Outcome::Waiting {
            reason: Reason::SecretConflict,
            message: format!(
                "Secret {name} exists and is not owned by this Application; it is left untouched (rename spec.secret.name or delete that Secret)"
            ),
            requeue: Duration::from_secs(300),
        }));
    }
    let layout = match secret::SecretLayout::new(app.spec.secret.template.as_ref()) {
        Ok(l) => l,
        Err(message) => return Ok(Err(Outcome::from((Reason::InvalidSpec, message)))),
    };
    if let Some(found) = existing.as_ref().filter(|s| secret::type_differs(s, &layout)) {
        // A Secret's type is immutable: create it again (the value is re-issued if it was
        // only held there; the old key stays valid for the grace period).
        let params = kube::api::DeleteParams::default();
        secrets
            .delete(&found.name_any(), &params)
            .await
            .map_err(|source| Error::WriteSecret {
                name: name.clone(),
                source,
            })?;
    }
    let existing = existing.filter(|s| !secret::type_differs(s, &layout));
    let details = connection_details(scope.gate, &scope.client.client_id);
    let stored = existing
        .as_ref()
        .map(|s| credential::vet(secret::read(s, &layout, &details, &ctx.record_key), status));
    if stored.as_ref().is_some_and(|s| s.trust == RecordTrust::Forged) {
        let note = format!(
            "the credential record in Secret {name} was not written by the operator (its MAC does not verify); it is ignored: a new secret replaces the one there, and only keys the status names are revoked"
        );
        scope
            .publish(
                EventType::Warning,
                "CredentialRecordTampered",
                "VerifyRecord",
                note,
            )
            .await;
    }
    let target = Target {
        app,
        secrets,
        name,
        layout,
        details,
        exists: existing.is_some(),
        key: &ctx.record_key,
    };
    Ok(Ok((target, stored)))
}

/// What the Secret held; a restored client's keys take time to work again at the token
/// endpoint, so its record is proven again.
fn held(stored: Option<&StoredCredential>, restored: bool) -> Held {
    let mut record = stored.and_then(|s| s.record.clone());
    if restored {
        if let Some(r) = record.as_mut() {
            r.verified_at = None;
        }
    }
    Held {
        record,
        value: stored.and_then(|s| s.client_secret.clone()),
        pending_value: stored.and_then(|s| s.pending_secret.clone()),
    }
}

/// Adds a secret for `reason` and writes it: staged beside a working one (consumers keep
/// it until the new one is proven), else delivered at once.
async fn issue_and_write(
    scope: &Scope<'_>,
    target: &mut Target<'_>,
    held: Held,
    reason: credential::IssueReason,
    requests: &Requests,
    status_keys: &[String],
) -> Result<std::result::Result<Live, Outcome>> {
    let (issued, expires_at) = match issue(scope, reason).await? {
        Ok(issued) => issued,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let fresh = NewKey {
        issued,
        expires_at,
        served: requests.served_by(reason),
    };
    let live = match held.working() {
        // Staging needs room for a second secret beside the working one.
        Working::Yes(current) if reason.keeps_current_secret() && scope.concurrent_secrets() => {
            stage(scope, target, current, fresh, reason).await?
        }
        Working::Yes(current) => {
            replace(scope, target, Some(&current.record), fresh, reason, status_keys).await?
        }
        Working::No(held) => replace(scope, target, held.record.as_ref(), fresh, reason, status_keys).await?,
    };
    Ok(Ok(live))
}

/// A secret just added, with the requests it serves.
struct NewKey {
    issued: IssuedSecret,
    expires_at: Timestamp,
    served: (Option<String>, Option<String>),
}

/// Adds a secret, or the refusal users read when the provider's policy rejects the lifetime.
async fn issue(
    scope: &Scope<'_>,
    reason: credential::IssueReason,
) -> Result<std::result::Result<(IssuedSecret, Timestamp), Outcome>> {
    let end = scope.now + signed(scope.policy().lifetime);
    let label = format!("dcr-operator {}", reason.as_str());
    match scope.gate.backend.add_secret(scope.client, &label, end).await {
        Ok(issued) => {
            let expires_at = issued.expires_at.unwrap_or(end);
            Ok(Ok((issued, expires_at)))
        }
        Err(Failure {
            error:
                ProviderError::Rejected {
                    status: 400,
                    code,
                    detail,
                    ..
                },
            ..
        }) => Ok(Err(Outcome::Waiting {
            reason: Reason::CredentialPolicyViolation,
            message: format!(
                "the provider refused a secret valid for {} ({code}: {detail}); a tenant policy may cap secret lifetimes: lower spec.credentials.lifetime",
                humantime::format_duration(scope.policy().lifetime),
            ),
            requeue: Duration::from_secs(300),
        })),
        Err(f) => Err(f.into()),
    }
}

/// Stages the new key beside the working one.
async fn stage(
    scope: &Scope<'_>,
    target: &mut Target<'_>,
    mut live: Live,
    fresh: NewKey,
    reason: credential::IssueReason,
) -> Result<Live> {
    let NewKey {
        issued,
        expires_at,
        served: (served_rotate, served_revoke_all),
    } = fresh;
    live.record.pending = Some(PendingKey {
        key_id: issued.key_id.clone(),
        issued_at: scope.now,
        expires_at,
    });
    live.record.rotate_request = served_rotate;
    live.record.revoke_all_request = served_revoke_all;
    live.pending_value = Some(issued.value);
    write_issued(scope, target, &live, &issued.key_id).await?;
    let note = format!(
        "issued secret {} ({}); it replaces {} in Secret {} once the provider accepts it",
        issued.key_id,
        reason.as_str(),
        live.record.key_id,
        target.name,
    );
    scope
        .publish(EventType::Normal, "Rotating", "IssueCredential", note)
        .await;
    Ok(live)
}

/// Delivers the new key at once; older keys stay valid for the grace (none on revoke-all).
async fn replace(
    scope: &Scope<'_>,
    target: &mut Target<'_>,
    old: Option<&CredentialRecord>,
    fresh: NewKey,
    reason: credential::IssueReason,
    status_keys: &[String],
) -> Result<Live> {
    let NewKey {
        issued,
        expires_at,
        served: (rotate_request, revoke_all_request),
    } = fresh;
    let previous = if reason == credential::IssueReason::RevokeAllRequested {
        Vec::new()
    } else {
        let grace_end = scope.now + signed(scope.policy().revoke_previous_after);
        superseded(old, status_keys, &issued.key_id, grace_end)
    };
    let live = Live {
        record: CredentialRecord {
            key_id: issued.key_id.clone(),
            issued_at: scope.now,
            expires_at,
            verified_at: None,
            previous,
            pending: None,
            rotate_request,
            revoke_all_request,
        },
        value: issued.value,
        pending_value: None,
    };
    // Deliver at once: until this write lands, the new key is recorded nowhere.
    write_issued(scope, target, &live, &issued.key_id).await?;
    let note = format!(
        "issued secret {} into Secret {} ({})",
        issued.key_id,
        target.name,
        reason.as_str()
    );
    let event_reason = if reason == credential::IssueReason::Initial {
        "CredentialIssued"
    } else {
        "Rotated"
    };
    scope
        .publish(EventType::Normal, event_reason, "IssueCredential", note)
        .await;
    Ok(live)
}

/// Every key the old record or the status names, except `new_key`, revoked after `grace_end`.
fn superseded(
    old: Option<&CredentialRecord>,
    status_keys: &[String],
    new_key: &str,
    grace_end: Timestamp,
) -> Vec<PreviousKey> {
    let mut previous: Vec<PreviousKey> = Vec::new();
    let old_keys = old.into_iter().flat_map(|r| r.key_ids().map(str::to_string));
    for key in old_keys.chain(status_keys.iter().cloned()) {
        if key != new_key && !previous.iter().any(|p| p.key_id == key) {
            previous.push(PreviousKey {
                key_id: key,
                revoke_after: grace_end,
            });
        }
    }
    previous
}

/// A compromise response: every key but the one issued for it dies now, without grace.
/// Done (again) until the status records it, so a pass cut short here is finished by the
/// next one instead of issuing yet another key.
async fn revoke_all_others(
    scope: &Scope<'_>,
    status: &mut ApplicationStatus,
    live: &Live,
    requests: &Requests,
    status_keys: &[String],
) -> Result<()> {
    let Some(request) = requests.revoke_all.as_deref() else {
        return Ok(());
    };
    let issued_for_it = live.record.revoke_all_request.as_deref() == Some(request);
    if !issued_for_it || status.last_revoke_all_request.as_deref() == Some(request) {
        return Ok(());
    }
    let keep: BTreeSet<&str> = live.record.key_ids().collect();
    let others: BTreeSet<String> = scope
        .client
        .secrets
        .iter()
        .map(|p| p.key_id.clone())
        .chain(status_keys.iter().cloned())
        .filter(|k| !keep.contains(k.as_str()))
        .collect();
    for key in &others {
        revoke(scope, key).await?;
    }
    status.last_revoke_all_request = Some(request.to_string());
    let note = format!(
        "revoked every other secret ({}) on request {request}; {} is the only one left",
        others.len(),
        live.record.key_id
    );
    scope
        .publish(EventType::Warning, "RevokedAll", "RevokeCredential", note)
        .await;
    Ok(())
}

/// Proves the delivered secret before anything older is revoked; an outcome while the
/// provider does not accept it yet.
async fn prove(scope: &Scope<'_>, target: &mut Target<'_>, live: &mut Live) -> Result<Option<Outcome>> {
    if live.record.verified_at.is_some() {
        return Ok(None);
    }
    match scope
        .gate
        .backend
        .prove_secret(&scope.client.client_id, &live.value)
        .await
    {
        Ok(()) => {
            live.record.verified_at = Some(scope.ctx.now());
            target.write(live).await?;
            Ok(None)
        }
        Err(f) if !f.error.is_transient() => {
            let (key_id, issued_at) = (&live.record.key_id, live.record.issued_at);
            let message = not_active_message(scope, key_id, issued_at, &f.error).await;
            Ok(Some(Outcome::Waiting {
                reason: credential::ACTIVATING,
                message,
                requeue: ACTIVATION_RECHECK,
            }))
        }
        Err(f) => Err(f.into()),
    }
}

/// Promotes a staged secret once the provider accepts it; the note while it does not yet.
async fn promote(scope: &Scope<'_>, target: &mut Target<'_>, live: &mut Live) -> Result<Option<String>> {
    let (Some(pending), Some(pending_value)) = (live.record.pending.clone(), live.pending_value.clone())
    else {
        return Ok(None);
    };
    match scope
        .gate
        .backend
        .prove_secret(&scope.client.client_id, &pending_value)
        .await
    {
        Ok(()) => {
            let now = scope.ctx.now();
            let record = &mut live.record;
            record.previous.push(PreviousKey {
                key_id: record.key_id.clone(),
                revoke_after: now + signed(scope.policy().revoke_previous_after),
            });
            let old = std::mem::replace(&mut record.key_id, pending.key_id.clone());
            record.issued_at = pending.issued_at;
            record.expires_at = pending.expires_at;
            record.verified_at = Some(now);
            record.pending = None;
            live.value = pending_value;
            live.pending_value = None;
            target.write(live).await?;
            let note = format!(
                "secret {} replaced {old} in Secret {}",
                pending.key_id, target.name
            );
            scope
                .publish(EventType::Normal, "Rotated", "IssueCredential", note)
                .await;
            Ok(None)
        }
        Err(f) if !f.error.is_transient() => {
            let message = not_active_message(scope, &pending.key_id, pending.issued_at, &f.error).await;
            Ok(Some(format!("; rotation in progress: {message}")))
        }
        Err(f) => Err(f.into()),
    }
}

/// Revokes superseded keys past their grace; returns them.
async fn revoke_due(scope: &Scope<'_>, target: &mut Target<'_>, live: &mut Live) -> Result<Vec<String>> {
    let due = credential::revocable(scope.ctx.now(), &live.record);
    if due.is_empty() {
        return Ok(due);
    }
    for key in &due {
        // Revoked already by a pass stopped before it could update the record: only the
        // record changes (Entra answers 400 to removing an unknown key).
        if !scope.client.secrets.iter().any(|k| k.key_id == *key) {
            continue;
        }
        revoke(scope, key).await?;
        let note = format!("revoked superseded secret {key}");
        scope
            .publish(EventType::Normal, "Revoked", "RevokeCredential", note)
            .await;
    }
    live.record.previous.retain(|p| !due.contains(&p.key_id));
    target.write(live).await?;
    Ok(due)
}

/// Revokes keys no record names (left by an interrupted issue, or added by hand).
async fn sweep_unrecorded(scope: &Scope<'_>, live: &Live, due: &[String]) -> Result<()> {
    let orphans = credential::orphans(
        scope.ctx.now(),
        &scope.client.secrets,
        Some(&live.record),
        &BTreeSet::new(),
    );
    for key in orphans {
        if due.contains(&key) {
            continue;
        }
        if !revoked_now(scope, &key).await? {
            // Listed by a read that predates its removal (this operator's own, say): no news.
            continue;
        }
        let note = format!(
            "revoked secret {key}, which no Secret records (left by an interrupted issue or added by hand)"
        );
        scope
            .publish(EventType::Warning, "RevokedUnrecorded", "RevokeCredential", note)
            .await;
    }
    Ok(())
}

/// The Ready outcome: what is live, and when to come back (renewal, the next revocation,
/// a rotation to prove, a rate-limited request).
fn ready(
    scope: &Scope<'_>,
    status: &ApplicationStatus,
    record: &CredentialRecord,
    requests: &Requests,
    secret_name: &str,
    rotation_note: Option<String>,
) -> Outcome {
    let now = scope.ctx.now();
    let policy = scope.policy();
    let mut next = until(now, credential::renew_at(record, policy));
    if let Some(first) = record.previous.iter().map(|p| p.revoke_after).min() {
        next = next.min(until(now, first));
    }
    if rotation_note.is_some() {
        next = next.min(ACTIVATION_RECHECK);
    }
    let (rotate, revoke_all) = (requests.rotate.as_deref(), requests.revoke_all.as_deref());
    let served = credential::acted_upon(
        rotate,
        record.rotate_request.as_deref(),
        status.last_rotate_request.as_deref(),
    );
    let held = credential::rotate_held(record, rotate, served);
    let revoke_all_served = credential::acted_upon(
        revoke_all,
        record.revoke_all_request.as_deref(),
        status.last_revoke_all_request.as_deref(),
    );
    let rate_limited = credential::request_rate_limited(
        now,
        record,
        [
            (ROTATE_ANNOTATION, rotate, served, record.rotate_request.is_some()),
            (
                REVOKE_ALL_ANNOTATION,
                revoke_all,
                revoke_all_served,
                record.revoke_all_request.is_some(),
            ),
        ],
        policy.min_request_interval,
    );
    if let Some((at, _)) = &rate_limited {
        next = next.min(until(now, *at));
    }
    Outcome::Ready {
        message: format!(
            "client {} delivered in Secret {secret_name}; secret {} is live{}{}",
            scope.client.client_id,
            record.key_id,
            rotation_note.unwrap_or_default(),
            held.unwrap_or_default()
        ),
        requeue: next.clamp(Duration::from_secs(1), scope.ctx.settings.resync_period),
        held: rate_limited.map(|(_, message)| message),
    }
}

impl Target<'_> {
    /// Writes the Secret from `live`.
    async fn write(&mut self, live: &Live) -> Result<()> {
        let contents = secret::Contents {
            layout: &self.layout,
            details: &self.details,
            record: &live.record,
        };
        let secret = secret::render(
            self.app,
            &self.name,
            contents,
            &live.value,
            live.pending_value.as_ref(),
            self.key,
        );
        write_secret(&self.secrets, self.exists, &secret).await?;
        self.exists = true;
        Ok(())
    }
}

/// Writes the Secret right after a secret is added. When the apiserver refuses the write,
/// the new key is revoked at once: no Secret records it, and the retry issues another. (A
/// write that may have landed, a timeout or a 5xx, is left to the sweep of unrecorded keys.)
async fn write_issued(scope: &Scope<'_>, target: &mut Target<'_>, live: &Live, key_id: &str) -> Result<()> {
    let Err(e) = target.write(live).await else {
        return Ok(());
    };
    if write_refused(&e) {
        match revoke(scope, key_id).await {
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

/// Says a secret is not accepted yet; a Warning Event once it has taken too long.
async fn not_active_message(
    scope: &Scope<'_>,
    key_id: &str,
    issued_at: Timestamp,
    e: &ProviderError,
) -> String {
    let waited = scope.ctx.now().duration_since(issued_at);
    let message = format!(
        "secret {key_id} is stored but not accepted by the provider yet ({}), after {}s",
        not_accepted_reason(e),
        waited.as_secs()
    );
    if waited.as_secs_f64() > scope.ctx.settings.activation_timeout.as_secs_f64() {
        scope
            .publish(
                EventType::Warning,
                "CredentialNotActive",
                "VerifyCredential",
                message.clone(),
            )
            .await;
    }
    message
}

/// Why the token endpoint did not take a secret, in one stable word.
fn not_accepted_reason(e: &ProviderError) -> &'static str {
    match e {
        ProviderError::AuthFailed { reason, .. } => reason,
        ProviderError::NotFound { .. } => "NotFound",
        ProviderError::Denied { .. } => "Denied",
        ProviderError::Rejected { .. } => "Rejected",
        ProviderError::Throttled { .. } => "Throttled",
        ProviderError::Transient { .. } | ProviderError::Pending { .. } => "Unreachable",
    }
}

async fn revoke(scope: &Scope<'_>, key_id: &str) -> Result<()> {
    revoked_now(scope, key_id).await.map(|_| ())
}

/// Removes a secret; `false` when it was gone already.
async fn revoked_now(scope: &Scope<'_>, key_id: &str) -> Result<bool> {
    Ok(scope.gate.backend.remove_secret(scope.client, key_id).await?)
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
}
