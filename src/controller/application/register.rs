//! Register: the client registration proven to be this Application's (found, repaired or
//! created through the provider boundary), its identity persisted in status before anything
//! else can fail, then made usable (managed fields, Entra's service principal).

use super::cleanup::recorded;
use super::gate::Gate;
use super::{desired, MANAGER};
use crate::controller::context::Context;
use crate::controller::error::{Error, Result};
use crate::controller::events;
use crate::controller::status::apply_status;
use crate::crd::application::{Application, ApplicationStatus};
use crate::crd::conditions::{set_condition, DesiredCondition, Reason};
use crate::idp::{Client, Notice, Reads};
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::ResourceExt;

/// The client as this pass found or made it.
pub(super) struct Registration {
    pub client: Client,
    /// A new client replaced one deleted out of band (new client id, old keys gone).
    pub replaced: bool,
    /// Restored from the provider's recycle bin: its keys must be proven again.
    pub restored: bool,
}

/// Registers (or finds) and enables the client; mutates `status` as facts become known.
pub(super) async fn register(
    app: &Application,
    ctx: &Context,
    gate: &Gate,
    status: &mut ApplicationStatus,
    api: &Api<Application>,
    reads: Reads,
) -> Result<Registration> {
    let cluster = &ctx.settings.cluster_name;
    let uid = app.uid().ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let identity = desired::identity(cluster, &uid);
    let spec = desired::client_spec(cluster, app, &gate.strategy, &identity);
    let before = status.clone();
    let recall = gate.backend.recall(&identity, &recorded(status), reads).await?;
    publish(ctx, app, &recall.notices).await;
    if recall.forget_recorded {
        forget_recorded_ids(status);
    }
    let found = match recall.proven {
        Some(proven) => proven,
        None => gate.backend.register(&spec, recall.lost.as_deref()).await?,
    };
    publish(ctx, app, &found.notices).await;
    if found.created {
        let note = format!(
            "registered client {} at DcrProvider {}",
            found.client.client_id,
            gate.provider.name_any()
        );
        events::publish(ctx, app, EventType::Normal, "Registered", "Register", note).await;
    }
    // A client registered anew where one had been: its keys died with the old one. (Found
    // by its idempotency key instead, it is the same client whatever the status said.)
    let replaced = found.created && status.client_id.is_some();
    if replaced {
        status.service_principal_id = None;
    }
    let client = found.client;
    if client.client_id.is_empty() {
        return Err(Error::MissingObjectKey("appId of the provider application"));
    }
    record_identity(app, ctx, status, &client, &identity.unique_name);
    if *status != before {
        // Persist the provider-side identity before anything else can fail.
        apply_status(api, MANAGER, &app.name_any(), status).await?;
    }
    let enabled = gate
        .backend
        .enable(&client, &spec, &recorded(status), reads)
        .await?;
    publish(ctx, app, &enabled.notices).await;
    status.service_principal_id = enabled.principal_id.or(status.service_principal_id.take());
    tracing::debug!(
        application_read = ?found.source,
        service_principal_read = ?enabled.source,
        "provider-side objects checked"
    );
    Ok(Registration {
        client,
        replaced,
        restored: found.restored,
    })
}

/// Writes the client's identity into status; a new client is not delivered yet.
fn record_identity(
    app: &Application,
    ctx: &Context,
    status: &mut ApplicationStatus,
    client: &Client,
    unique_name: &str,
) {
    if status.client_id.as_deref() != Some(client.client_id.as_str()) {
        let message = format!(
            "registered client {}; delivering its credentials",
            client.client_id
        );
        let condition = DesiredCondition::not_ready(Reason::Progressing, message);
        set_condition(
            &mut status.conditions,
            condition,
            app.metadata.generation,
            ctx.now(),
        );
    }
    status.client_id = Some(client.client_id.clone());
    status.unique_name = Some(unique_name.to_string());
    status.application_object_id = Some(client.object_id.clone());
}

/// Drops provider-side ids the provider did not confirm.
fn forget_recorded_ids(status: &mut ApplicationStatus) {
    status.application_object_id = None;
    status.service_principal_id = None;
}

/// Publishes what the backend noticed, in order.
pub(super) async fn publish(ctx: &Context, app: &Application, notices: &[Notice]) {
    for n in notices {
        let type_ = if n.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        events::publish(ctx, app, type_, n.reason, n.action, n.note.clone()).await;
    }
}
