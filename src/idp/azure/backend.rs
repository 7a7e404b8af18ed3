//! Entra ID behind the provider boundary ([`crate::idp::Backend`]): the upsert by
//! uniqueName, the owner bind, restore from deleted items, service principals, passwords,
//! the purge, and the freshness hints of just-created objects. Everything here speaks
//! Graph; nothing above it does.

use super::desired::{desired_application, drift};
use super::{AddPasswordRequest, Application, ApplicationPatch, Freshness, GraphClient, GraphError};
use crate::crd::provider::{DcrProvider, DeletedApplicationsPolicy};
use crate::idp::{
    at, Capabilities, Client, ClientSpec, Deletion, Enabled, Endpoints, Failure, Identity, IssuedSecret,
    Notice, ProviderError, ReadSource, Reads, Recall, Recorded, Registered, SecretKey, Step,
};
use crate::sensitive::SecretString;
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;

/// Objects created within this window may still be replicating (contract §5).
const REPLICATION_WINDOW: Duration = Duration::from_secs(120);

/// What `GET /directory/deletedItems/microsoft.graph.application` needs: least privilege
/// `Application.Read.All`; `Application.ReadWrite.OwnedBy` is not listed (learn.microsoft.com
/// /graph/api/directory-deleteditems-list).
const DELETED_ITEMS_PERMISSION: &str = "Application.Read.All";

/// Entra ID, through one namespace's share of a provider's Graph client.
pub struct Entra {
    graph: GraphClient,
    tenant_id: String,
    purge: bool,
    /// The operator's own service principal, as the DcrProvider's status recorded it.
    operator_principal: Option<String>,
}

impl Entra {
    pub fn new(graph: GraphClient, provider: &DcrProvider) -> Self {
        let azure = provider.spec.azure_ad.as_ref();
        Self {
            graph,
            tenant_id: azure.map(|a| a.tenant_id.clone()).unwrap_or_default(),
            purge: azure.map(|a| a.deleted_applications) == Some(DeletedApplicationsPolicy::Purge),
            operator_principal: provider
                .status
                .as_ref()
                .and_then(|s| s.service_principal_id.clone()),
        }
    }

    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            concurrent_secrets: true,
            idempotency_key: true,
            soft_delete: true,
            list_owned: true,
        }
    }

    pub fn endpoints(&self) -> Endpoints {
        let token_url = self.graph.token_url().to_string();
        Endpoints {
            token_url_v1: token_url.replace("/oauth2/v2.0/token", "/oauth2/token"),
            token_url,
            tenant_id: self.tenant_id.clone(),
        }
    }

    /// The recorded application, trusted only when it proves to be this Application's;
    /// one deleted out of band is restored from deleted items (client id and keys kept).
    pub async fn recall(
        &self,
        identity: &Identity,
        recorded: &Recorded,
        reads: Reads,
    ) -> Result<Recall, Failure> {
        let Some(id) = &recorded.object_id else {
            return Ok(Recall::default());
        };
        let mut notices = Vec::new();
        match self.recorded_application(id, reads).await? {
            Some((found, source)) if proves_identity(&found, identity) => {
                Ok(Recall::proven(registered(found, false, false, notices, source)))
            }
            Some((found, _)) => {
                let then = format!(
                    "; ignoring the recorded ids and registering by uniqueName {}",
                    identity.unique_name
                );
                notices.push(mismatch(
                    "status names provider-side application",
                    id,
                    &found,
                    &then,
                ));
                Ok(Recall::forget(notices))
            }
            None => match self.graph.restore_deleted_application(id).await {
                Ok(restored) if proves_identity(&restored, identity) => {
                    notices.push(Notice::warning("Restored", "RepairDrift", format!(
                        "provider-side application {id} was deleted out of band; restored it from deleted items (client id and secrets kept)"
                    )));
                    Ok(Recall::proven(registered(
                        restored,
                        false,
                        true,
                        notices,
                        ReadSource::Graph,
                    )))
                }
                Ok(restored) => {
                    // Someone else's application, brought back by a forged record: not
                    // ours to keep or touch further.
                    notices.push(mismatch(
                        "status names deleted application",
                        id,
                        &restored,
                        "; ignoring the recorded ids",
                    ));
                    Ok(Recall::forget(notices))
                }
                // Not in deleted items either: still replicating (a restart inside the
                // window), or purged. Registering by uniqueName tells them apart.
                Err(e) if e.is_not_found() => Ok(Recall {
                    lost: Some(id.clone()),
                    ..Recall::default()
                }),
                Err(e) => Err(Failure::new(Step::Read, e)),
            },
        }
    }

    /// Registers by uniqueName (idempotent); `lost` is a recorded application that is gone.
    pub async fn register(&self, spec: &ClientSpec<'_>, lost: Option<&str>) -> Result<Registered, Failure> {
        let mut registration = self.register_by_unique_name(spec, Vec::new()).await?;
        if let Some(id) = lost.filter(|id| *id != registration.client.object_id) {
            if registration.created {
                // The uniqueName was free: the recorded application is gone for good.
                registration.notices.push(Notice::warning("Recreating", "RepairDrift", format!(
                    "provider-side application {id} was deleted out of band and is not in deleted items; registered a new client"
                )));
            }
        }
        Ok(registration)
    }

    /// The recorded application as the inventory or Graph knows it; `None` on a 404.
    async fn recorded_application(
        &self,
        id: &str,
        reads: Reads,
    ) -> Result<Option<(Application, ReadSource)>, Failure> {
        if reads == Reads::Inventory {
            if let Some(known) = self.graph.known_application(id).await {
                return Ok(Some((known, ReadSource::Inventory)));
            }
        }
        match self.graph.get_application(id, Freshness::Settled).await {
            Ok(found) => Ok(Some((found, ReadSource::Graph))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(Failure::new(Step::Read, e)),
        }
    }

    /// The application named by the uniqueName: read, and its ownership verified; else
    /// created with the operator as owner (owners are bound only on create: Graph rejects a
    /// duplicate reference); else restored from deleted items, where a soft-deleted one
    /// keeps the name.
    async fn register_by_unique_name(
        &self,
        spec: &ClientSpec<'_>,
        notices: Vec<Notice>,
    ) -> Result<Registered, Failure> {
        let unique_name = &spec.identity.unique_name;
        let owner = self.operator_principal().await?;
        match self
            .graph
            .get_application_by_unique_name(unique_name, Freshness::Settled)
            .await
        {
            Ok(found) => {
                self.ensure_owner(&found.id, &owner).await?;
                return Ok(registered(found, false, false, notices, ReadSource::Graph));
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Failure::new(Step::Read, e)),
        }
        let desired = desired_application(spec);
        let mut create = desired.clone();
        create.owners_bind = Some(vec![self.graph.directory_object_url(&owner)]);
        match self.graph.ensure_application(unique_name, &create).await {
            Ok(ensured) if ensured.created => {
                let mut r = registered(ensured.application, false, false, notices, ReadSource::Graph);
                r.client.fresh = true;
                r.created = true;
                Ok(r)
            }
            // Created between the read and the upsert, unseen by the read: the bind was
            // applied with the update (a 204), or rejected as a duplicate below.
            Ok(ensured) => Ok(registered(
                ensured.application,
                false,
                false,
                notices,
                ReadSource::Graph,
            )),
            // It exists and the operator owns it already (the read above lagged): the same
            // update without the bind.
            Err(GraphError::BadRequest(info)) if super::client::is_duplicate_reference(&info) => {
                let ensured = self
                    .graph
                    .ensure_application(unique_name, &desired)
                    .await
                    .map_err(at(Step::Register))?;
                let mut r = registered(ensured.application, false, false, notices, ReadSource::Graph);
                r.client.fresh = true;
                Ok(r)
            }
            Err(GraphError::BadRequest(info)) => {
                tracing::info!(error = %info, "uniqueName taken by an application the read did not see");
                self.restore_by_unique_name(unique_name, notices).await
            }
            Err(e) => Err(Failure::new(Step::Register, e)),
        }
    }

    /// The name is taken by an application the read did not see: soft-deleted (it keeps its
    /// uniqueName reserved, contract §3.4), or still replicating.
    async fn restore_by_unique_name(
        &self,
        unique_name: &str,
        mut notices: Vec<Notice>,
    ) -> Result<Registered, Failure> {
        let deleted = match self.graph.find_deleted_application_by_unique_name(unique_name).await {
            Ok(deleted) => deleted,
            // Application.ReadWrite.OwnedBy may not list deleted items. Without the list the
            // operator cannot tell a soft-deleted application (which holds the name for 30
            // days: no new one can take it) from one still replicating (found by the next
            // pass), so it retries with backoff and says what is missing.
            Err(source @ GraphError::Forbidden(_)) => {
                return Err(missing_permission(
                    Step::Register,
                    format!("uniqueName {unique_name} is taken by an application Graph does not show (soft-deleted, or still replicating); finding a soft-deleted one to restore lists deleted items (GET /directory/deletedItems/microsoft.graph.application)"),
                    &source,
                ))
            }
            Err(e) => return Err(Failure::new(Step::Read, e)),
        };
        let Some(deleted) = deleted else {
            let message = format!(
                "application {unique_name} is not visible at the provider yet (replication lag); retrying"
            );
            return Err(Failure::new(Step::Register, ProviderError::Pending { message }));
        };
        let restored = self
            .graph
            .restore_deleted_application(&deleted.id)
            .await
            .map_err(at(Step::Register))?;
        notices.push(Notice::warning("Restored", "RepairDrift", format!(
            "provider-side application {} ({unique_name}) was in deleted items; restored it (client id and secrets kept)",
            deleted.id
        )));
        Ok(registered(restored, false, true, notices, ReadSource::Graph))
    }

    /// The operator's own service principal id: what `owners` must name.
    async fn operator_principal(&self) -> Result<String, Failure> {
        if let Some(id) = &self.operator_principal {
            return Ok(id.clone());
        }
        Ok(self
            .graph
            .own_service_principal()
            .await
            .map_err(at(Step::Register))?
            .id)
    }

    /// Makes `owner` an owner of an existing application: listed, else added (an add that
    /// meets the reference already there counts as done).
    async fn ensure_owner(&self, id: &str, owner: &str) -> Result<(), Failure> {
        let owners = self
            .graph
            .list_application_owner_ids(id)
            .await
            .map_err(at(Step::Register))?;
        if owners.iter().any(|o| o.eq_ignore_ascii_case(owner)) {
            return Ok(());
        }
        let added = self
            .graph
            .add_application_owner(id, owner)
            .await
            .map_err(at(Step::Register))?;
        tracing::info!(object_id = %id, added, "made the operator an owner of the application");
        Ok(())
    }

    /// Managed fields changed in the spec or out of band, then the service principal, so
    /// the client can obtain tokens.
    pub async fn enable(
        &self,
        client: &Client,
        spec: &ClientSpec<'_>,
        recorded: &Recorded,
        reads: Reads,
    ) -> Result<Enabled, Failure> {
        self.update(client, spec).await?;
        self.ensure_service_principal(client, spec, recorded, reads).await
    }

    async fn update(&self, client: &Client, spec: &ClientSpec<'_>) -> Result<(), Failure> {
        let crate::idp::Native::Entra(actual) = &client.native;
        let Some(patch) = drift(&desired_application(spec), actual) else {
            return Ok(());
        };
        self.graph
            .update_application(&client.object_id, &patch, freshness(client))
            .await
            .map_err(at(Step::Update))?;
        tracing::info!(object_id = %client.object_id, "updated the provider-side application");
        Ok(())
    }

    /// Creates the service principal when none is recorded or the recorded one is gone.
    async fn ensure_service_principal(
        &self,
        client: &Client,
        spec: &ClientSpec<'_>,
        recorded: &Recorded,
        reads: Reads,
    ) -> Result<Enabled, Failure> {
        let app_id = &client.client_id;
        let mut notices = Vec::new();
        let mut recorded = recorded.principal_id.clone();
        if let Some(id) = recorded.clone() {
            if reads == Reads::Inventory && self.graph.known_service_principal(&id, app_id).await {
                return Ok(enabled(id, notices, ReadSource::Inventory));
            }
            match self.graph.get_service_principal(&id, Freshness::Settled).await {
                // Trusted only as the principal of this Application's client (proven above).
                Ok(sp) if serves_client(sp.app_id.as_deref(), app_id) => {
                    return Ok(enabled(id, notices, ReadSource::Graph))
                }
                Ok(_) => {
                    notices.push(Notice::warning("IdentityMismatch", "Register", format!(
                        "status names service principal {id}, which does not serve client {app_id}; ignoring it"
                    )));
                    recorded = None;
                }
                // Deleted, or created moments ago and not replicated yet: the create below
                // tells (a 409 returns the existing principal).
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(Failure::new(Step::Enable, e)),
            }
        }
        let tags = [
            crate::idp::MANAGED_LABEL.to_string(),
            spec.identity.cluster_label.clone(),
        ];
        let sp = self
            .graph
            .create_service_principal(app_id, &tags, freshness(client))
            .await
            .map_err(at(Step::Enable))?;
        if let Some(old) = recorded.filter(|old| *old != sp.id) {
            notices.push(Notice::warning(
                "ServicePrincipalRecreated",
                "RepairDrift",
                format!(
                    "service principal {old} was deleted out of band; created it again ({})",
                    sp.id
                ),
            ));
        }
        Ok(enabled(sp.id, notices, ReadSource::Graph))
    }

    /// `addPassword`; a lifetime the tenant's policy refuses is a 400 (`Rejected`).
    pub async fn add_secret(
        &self,
        client: &Client,
        label: &str,
        end: Timestamp,
    ) -> Result<IssuedSecret, Failure> {
        let request = AddPasswordRequest {
            display_name: Some(label.to_string()),
            start_date_time: None,
            end_date_time: chrono::DateTime::from_timestamp(end.as_second(), 0),
        };
        let issued = self
            .graph
            .add_password(&client.object_id, &request, freshness(client))
            .await
            .map_err(at(Step::Issue))?;
        Ok(IssuedSecret {
            key_id: issued.key_id,
            value: issued.secret_text,
            expires_at: issued
                .end_date_time
                .and_then(|t| Timestamp::from_second(t.timestamp()).ok()),
        })
    }

    /// Removes a password; `false` when it was gone already.
    pub async fn remove_secret(&self, client: &Client, key_id: &str) -> Result<bool, Failure> {
        match self.graph.remove_password(&client.object_id, key_id).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            // Entra answers 400 to removing a key it does not have: revoked already (by a
            // pass cut short, or listed by a read that predates the removal: reads of
            // passwordCredentials lag a removal by the replication window).
            Err(GraphError::BadRequest(info)) => {
                tracing::debug!(%key_id, error = %info, "password already gone");
                Ok(false)
            }
            Err(e) => Err(Failure::new(
                Step::Revoke {
                    key_id: key_id.to_string(),
                },
                e,
            )),
        }
    }

    pub async fn prove_secret(&self, client_id: &str, secret: &SecretString) -> Result<(), Failure> {
        self.graph
            .verify_client_secret(client_id, secret)
            .await
            .map_err(at(Step::Issue))
    }

    pub async fn find(&self, identity: &Identity, recorded: &Recorded) -> Result<Option<Client>, Failure> {
        let found = self.proven_application(identity, recorded).await?;
        Ok(found.map(|f| {
            let fresh = recently_created(&f);
            client(f, fresh)
        }))
    }

    /// Drops this cluster's ownership tags from an application left behind on purpose, so
    /// the orphan sweep never reports or deletes it.
    pub async fn release(&self, identity: &Identity, recorded: &Recorded) -> Result<(), Failure> {
        let Some(current) = self.proven_application(identity, recorded).await? else {
            return Ok(());
        };
        let kept: Vec<String> = current
            .tags()
            .iter()
            .filter(|t| !t.starts_with(crate::idp::MANAGED_LABEL))
            .cloned()
            .collect();
        let patch = ApplicationPatch {
            tags: Some(kept),
            ..Default::default()
        };
        self.graph
            .update_application(&current.id, &patch, Freshness::Settled)
            .await
            .map_err(at(Step::Update))
    }

    /// Deletes the service principal and the application that prove to be this
    /// Application's, whatever the status says; purges it from deleted items when the
    /// provider says so.
    pub async fn delete(
        &self,
        identity: &Identity,
        recorded: &Recorded,
        deleted_recently: bool,
    ) -> Result<Deletion, Failure> {
        let ours = self.proven_application(identity, recorded).await?;
        if let (Some(sp), Some(ours)) = (&recorded.principal_id, &ours) {
            self.delete_service_principal(sp, ours.app_id.as_deref().unwrap_or_default())
                .await?;
        }
        let target = match ours {
            Some(live) => Some(live.id),
            // Deleted by an earlier pass that stopped before its purge.
            None if self.purge => self.recorded_deleted(identity, recorded).await?,
            None => None,
        };
        let Some(id) = target else {
            return Ok(Deletion::Nothing);
        };
        let deleted_now = self
            .graph
            .delete_application(&id)
            .await
            .map_err(at(Step::Delete))?;
        if self.purge {
            let purged = self
                .graph
                .permanently_delete_application(&id)
                .await
                .map_err(at(Step::Delete))?;
            // Deleted items replicate like everything else: right after the delete, a 404
            // means "not there yet", not "already purged" (a purge by an earlier pass that
            // stopped before removing the finalizer).
            if !purged && (deleted_now || deleted_recently) {
                let message = format!("application {id} is not in the provider's deleted items yet (replication lag); purging it again shortly");
                return Err(Failure::new(Step::Delete, ProviderError::Pending { message }));
            }
        }
        Ok(Deletion::Deleted { purged: self.purge })
    }

    /// Deletes service principal `id` when it serves client `app_id` (gone: nothing to do).
    async fn delete_service_principal(&self, id: &str, app_id: &str) -> Result<(), Failure> {
        let serves = match self.graph.get_service_principal(id, Freshness::Settled).await {
            Ok(sp) => serves_client(sp.app_id.as_deref(), app_id),
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(Failure::new(Step::Delete, e)),
        };
        if !serves {
            return Ok(());
        }
        match self.graph.delete_service_principal(id).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(Failure::new(Step::Delete, e)),
        }
    }

    /// The application of `identity`: the recorded one when it proves to be, else the one
    /// its uniqueName names (for a deleted Application: none once it is gone).
    async fn proven_application(
        &self,
        identity: &Identity,
        recorded: &Recorded,
    ) -> Result<Option<Application>, Failure> {
        if let Some(id) = &recorded.object_id {
            match self.graph.get_application(id, Freshness::Settled).await {
                Ok(found) if proves_identity(&found, identity) => return Ok(Some(found)),
                Ok(_) => {
                    tracing::warn!(object_id = %id, "status names an application that is not this Application's; ignoring it")
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(Failure::new(Step::Read, e)),
            }
        }
        match self
            .graph
            .get_application_by_unique_name(&identity.unique_name, Freshness::Settled)
            .await
        {
            Ok(found) if proves_identity(&found, identity) => Ok(Some(found)),
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(Failure::new(Step::Read, e)),
        }
    }

    /// The recorded application id, when it is no longer live and deleted items do not show
    /// it to be someone else's (absent there too: a purge of it answers 404, harmlessly).
    async fn recorded_deleted(
        &self,
        identity: &Identity,
        recorded: &Recorded,
    ) -> Result<Option<String>, Failure> {
        let Some(id) = &recorded.object_id else {
            return Ok(None);
        };
        match self.graph.get_deleted_application(id).await {
            Ok(found) if proves_identity(&found, identity) => Ok(Some(id.clone())),
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(Some(id.clone())),
            // The current page names Application.Read.All; an older v1.0 revision also lists
            // OwnedBy. A tenant that refuses it is told which permission to grant.
            Err(source @ GraphError::Forbidden(_)) => Err(missing_permission(
                Step::Read,
                format!(
                    "checking deleted application {id} before purging it (GET /directory/deletedItems/{id})"
                ),
                &source,
            )),
            Err(e) => Err(Failure::new(Step::Read, e)),
        }
    }
}

/// Identity is proven at the provider, never taken from status: the object carries the
/// Application's uniqueName and this cluster's tag.
fn proves_identity(found: &Application, identity: &Identity) -> bool {
    found
        .unique_name
        .as_deref()
        .is_some_and(|u| u.eq_ignore_ascii_case(&identity.unique_name))
        && found.tags().contains(&identity.cluster_label)
}

fn serves_client(sp_app_id: Option<&str>, app_id: &str) -> bool {
    sp_app_id.is_some_and(|a| a.eq_ignore_ascii_case(app_id))
}

/// A registration found or made, as the pipeline sees it.
fn registered(
    found: Application,
    created: bool,
    restored: bool,
    notices: Vec<Notice>,
    source: ReadSource,
) -> Registered {
    let fresh = restored || recently_created(&found);
    Registered {
        client: client(found, fresh),
        created,
        restored,
        notices,
        source,
    }
}

fn client(found: Application, fresh: bool) -> Client {
    Client {
        object_id: found.id.clone(),
        client_id: found.app_id.clone().unwrap_or_default(),
        secrets: found
            .passwords()
            .iter()
            .map(|p| SecretKey {
                key_id: p.key_id.clone(),
                created_at: p
                    .start_date_time
                    .and_then(|t| Timestamp::from_second(t.timestamp()).ok()),
            })
            .collect(),
        fresh,
        native: crate::idp::Native::Entra(Box::new(found)),
    }
}

fn enabled(principal_id: String, notices: Vec<Notice>, source: ReadSource) -> Enabled {
    Enabled {
        principal_id: Some(principal_id),
        notices,
        source,
    }
}

fn mismatch(what: &str, id: &str, found: &Application, then: &str) -> Notice {
    Notice::warning(
        "IdentityMismatch",
        "Register",
        format!(
            "{what} {id}, which is not this Application's (uniqueName {:?}){then}",
            found.unique_name.as_deref().unwrap_or("")
        ),
    )
}

/// A 403 the admin client's permission does not cover; the message names the one that does
/// (README, "Every Graph call").
fn missing_permission(step: Step, what: String, source: &GraphError) -> Failure {
    let message = format!(
        "{what}: needs the Graph application permission {DELETED_ITEMS_PERMISSION}, which the admin client lacks ({source})"
    );
    Failure::new(
        step,
        ProviderError::Denied {
            permission: Some(DELETED_ITEMS_PERMISSION),
            message,
        },
    )
}

/// Objects created in the last minutes may still be replicating.
fn recently_created(app: &Application) -> bool {
    app.created_date_time
        .is_some_and(|t| (chrono::Utc::now() - t).num_seconds() < REPLICATION_WINDOW.as_secs() as i64)
}

fn freshness(client: &Client) -> Freshness {
    if client.fresh {
        Freshness::JustCreated
    } else {
        Freshness::Settled
    }
}
