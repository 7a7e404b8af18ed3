//! Cleanup: on deletion, the client and its secrets are deleted at the provider (only what
//! proves to be this Application's), or released with `deletionPolicy: Orphan`; a deletion
//! whose provider is gone waits, unless abandoned.

use super::gate::provider_of;
use super::{credential, desired, finish, ABANDON_ANNOTATION};
use crate::controller::context::Context;
use crate::controller::error::{Error, Result};
use crate::controller::events;
use crate::crd::application::{Application, ApplicationStatus, DeletionPolicy};
use crate::crd::conditions::{DesiredCondition, Reason};
use crate::idp::{Deletion, Identity, Recorded};
use k8s_openapi::jiff::SignedDuration;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;

pub(super) async fn cleanup(app: &Application, ctx: &Context) -> Result<Action> {
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
    let Some((provider, backend)) = provider_of(app, ctx).await? else {
        if status.application_object_id.is_some() {
            return cleanup_blocked(app, ctx, status).await;
        }
        return Ok(Action::await_change());
    };
    let deleted = backend
        .delete(
            &identity(app, ctx),
            &recorded(&status),
            deleted_recently(app, ctx),
        )
        .await?;
    if let Deletion::Deleted { purged } = deleted {
        let note = format!(
            "deleted client {} at DcrProvider {}{}",
            status.client_id.unwrap_or_default(),
            provider.name_any(),
            if purged {
                " and purged it from deleted items"
            } else {
                ""
            }
        );
        events::publish(ctx, app, EventType::Normal, "Deleted", "Delete", note).await;
    }
    Ok(Action::await_change())
}

/// What proves a registration to be this Application's.
pub(super) fn identity(app: &Application, ctx: &Context) -> Identity {
    desired::identity(&ctx.settings.cluster_name, &app.uid().unwrap_or_default())
}

/// The ids the status names, for the backend to prove.
pub(super) fn recorded(status: &ApplicationStatus) -> Recorded {
    Recorded {
        object_id: status.application_object_id.clone(),
        principal_id: status.service_principal_id.clone(),
    }
}

/// Drops this cluster's ownership labels from a client left behind on purpose, so the
/// orphan sweep never reports or deletes it. Nothing to do when it was never registered or
/// its provider is gone.
async fn release(app: &Application, ctx: &Context, status: &ApplicationStatus) -> Result<()> {
    if status.application_object_id.is_none() {
        return Ok(());
    }
    let Some((_, backend)) = provider_of(app, ctx).await? else {
        return Ok(());
    };
    Ok(backend.release(&identity(app, ctx), &recorded(status)).await?)
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
