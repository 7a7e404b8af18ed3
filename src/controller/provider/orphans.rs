//! The orphan sweep: applications tagged by this cluster whose Application is gone.
//!
//! Tags alone prove nothing (anyone who can edit an application can tag it), so an
//! application is deleted only when it also carries the uniqueName this cluster gives the
//! Application its uid tag names, and the operator's own service principal owns it (asked
//! of Graph: `GET /applications/{id}/owners`, also when only reporting, so the count means
//! the same in both modes). Anything else is skipped and reported. The
//! sweep never fails the provider's reconcile: a 403 or any other error on one object is
//! reported on that object and the sweep goes on.

use super::super::application::desired;
use super::super::context::Context;
use super::super::events;
use crate::crd::conditions::{ConditionType, DesiredCondition, Reason, Status};
use crate::crd::provider::{DcrProvider, DeletedApplicationsPolicy, OrphanedApplicationsPolicy};
use crate::crd::Application;
use crate::idp::azure::{self, GraphClient, GraphError};
use kube::api::{Api, ListParams};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use std::collections::HashSet;

/// The cluster name an operator runs with when `--cluster-name` is not given.
pub const DEFAULT_CLUSTER_NAME: &str = "default";

/// What a sweep found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Orphans left in place (reported; not deleted, or their delete failed).
    pub orphans: u32,
    /// Tagged applications that are not provably this cluster's: skipped and reported.
    pub skipped: u32,
}

/// Why a tagged application is not this cluster's to delete.
#[derive(Debug, PartialEq, Eq)]
enum Foreign {
    /// Its uniqueName is not `dcr-<cluster>-<uid>` for the uid its tags name.
    UniqueName(String),
    /// The operator's service principal is not among its owners.
    NotOwned,
    /// Its owners could not be read (a 403, say): not deleted on a guess.
    Unverified(String),
}

/// Whether orphan deletion is refused, and the provider condition that says why: with the
/// default cluster name, two clusters left on it that share a tenant would take each
/// other's applications for orphans.
pub fn deletion_refusal(provider: &DcrProvider, cluster_name: &str) -> Option<DesiredCondition> {
    let policy = provider.spec.azure_ad.as_ref().map(|a| a.orphaned_applications);
    if policy != Some(OrphanedApplicationsPolicy::Delete) || cluster_name != DEFAULT_CLUSTER_NAME {
        return None;
    }
    Some(DesiredCondition::new(
        ConditionType::OrphanDeletion,
        Status::False,
        Reason::ClusterNameRequired,
        format!(
            "azureAD.orphanedApplications: Delete is refused while the operator runs with the default cluster name {DEFAULT_CLUSTER_NAME:?}: two clusters on the default name that share a tenant would delete each other's applications. Run the operator with --cluster-name (DCR_CLUSTER_NAME) set to a name unique in the tenant; orphans are only reported meanwhile"
        ),
    ))
}

/// Counts, reports and (when the provider says `Delete` and nothing refuses it) deletes the
/// orphans. `None` when the candidates could not be listed (the previous count stands).
pub async fn sweep(
    provider: &DcrProvider,
    ctx: &Context,
    graph: &GraphClient,
    operator_principal: Option<&str>,
) -> Option<Sweep> {
    let name = provider.name_any();
    let cluster = &ctx.settings.cluster_name;
    let candidates = match candidates(ctx, graph).await {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!(provider = %name, error = %why, "orphan sweep skipped this pass");
            return None;
        }
    };
    let azure = provider.spec.azure_ad.as_ref();
    let delete = azure.map(|a| a.orphaned_applications) == Some(OrphanedApplicationsPolicy::Delete)
        && deletion_refusal(provider, cluster).is_none();
    let purge = azure.map(|a| a.deleted_applications) == Some(DeletedApplicationsPolicy::Purge);
    let mut sweep = Sweep::default();
    for orphan in &candidates {
        let client_id = orphan.app_id.clone().unwrap_or_default();
        tracing::warn!(provider = %name, object_id = %orphan.id, client_id = %client_id, delete, "application tagged by this cluster has no Application");
        let verdict = match scheme_mismatch(orphan, cluster) {
            Some(foreign) => Err(foreign),
            None => owned(graph, orphan, operator_principal).await,
        };
        if let Err(foreign) = verdict {
            sweep.skipped += 1;
            report_skipped(ctx, provider, orphan, &foreign).await;
            continue;
        }
        if !delete {
            sweep.orphans += 1;
            continue;
        }
        match reap(graph, orphan, purge).await {
            Ok(()) => {
                let note = format!(
                    "deleted orphaned application {} (client {client_id}): no Application owns it",
                    orphan.id
                );
                events::publish(
                    ctx,
                    provider,
                    EventType::Normal,
                    "OrphanDeleted",
                    "SweepOrphans",
                    note,
                )
                .await;
            }
            Err(e) => {
                sweep.orphans += 1;
                let note = format!(
                    "could not delete orphaned application {} (client {client_id}): {e}",
                    orphan.id
                );
                events::publish(
                    ctx,
                    provider,
                    EventType::Warning,
                    "OrphanNotDeleted",
                    "SweepOrphans",
                    note,
                )
                .await;
            }
        }
    }
    ctx.metrics.set_orphaned_applications(&name, sweep.orphans);
    ctx.metrics.set_orphans_skipped(&name, sweep.skipped);
    Some(sweep)
}

/// Live applications tagged by this cluster whose Application (by the uid tag) is gone.
async fn candidates(ctx: &Context, graph: &GraphClient) -> Result<Vec<azure::Application>, String> {
    let tag = desired::cluster_tag(&ctx.settings.cluster_name);
    let tagged = graph
        .list_applications_by_tag(&tag)
        .await
        .map_err(|e| e.to_string())?;
    let owners: HashSet<String> = Api::<Application>::all(ctx.client.clone())
        .list_metadata(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter_map(|a| a.metadata.uid)
        .collect();
    Ok(tagged
        .into_iter()
        .filter(|a| a.deleted_date_time.is_none())
        .filter(|a| desired::owner_uid(a.tags()).is_some_and(|uid| !owners.contains(uid)))
        .collect())
}

/// `Some` when the application's uniqueName is not the one this cluster gives its uid.
fn scheme_mismatch(app: &azure::Application, cluster: &str) -> Option<Foreign> {
    let uid = desired::owner_uid(app.tags()).unwrap_or_default();
    let expected = desired::unique_name(cluster, uid);
    let actual = app.unique_name.as_deref().unwrap_or_default();
    (uid.is_empty() || !actual.eq_ignore_ascii_case(&expected))
        .then(|| Foreign::UniqueName(actual.to_string()))
}

/// Whether the operator's service principal owns the application (asked of Graph: tags
/// and names can be written by anyone who may edit the application, owners cannot).
async fn owned(
    graph: &GraphClient,
    orphan: &azure::Application,
    operator_principal: Option<&str>,
) -> Result<(), Foreign> {
    let principal = operator_principal.ok_or(Foreign::NotOwned)?;
    match graph.list_application_owner_ids(&orphan.id).await {
        Ok(owners) if owners.iter().any(|o| o.eq_ignore_ascii_case(principal)) => Ok(()),
        Ok(_) => Err(Foreign::NotOwned),
        Err(e) => Err(Foreign::Unverified(e.to_string())),
    }
}

/// Deletes (and, when the provider says `Purge`, purges) an orphan the operator owns.
async fn reap(graph: &GraphClient, orphan: &azure::Application, purge: bool) -> Result<(), GraphError> {
    graph.delete_application(&orphan.id).await?;
    if purge {
        graph.permanently_delete_application(&orphan.id).await?;
    }
    Ok(())
}

/// A Warning on the provider naming the skipped application and why.
async fn report_skipped(ctx: &Context, provider: &DcrProvider, app: &azure::Application, why: &Foreign) {
    let why = match why {
        Foreign::UniqueName(actual) => format!(
            "its uniqueName {actual:?} is not the one this cluster ({}) gives the Application its tags name",
            ctx.settings.cluster_name
        ),
        Foreign::NotOwned => "the operator's service principal is not one of its owners".to_string(),
        Foreign::Unverified(e) => format!("its owners could not be read ({e})"),
    };
    let note = format!(
        "application {} (client {}) carries this cluster's tags but is not provably this cluster's: {why}; kept",
        app.id,
        app.app_id.as_deref().unwrap_or_default()
    );
    tracing::warn!(provider = %provider.name_any(), object_id = %app.id, "{note}");
    events::publish(
        ctx,
        provider,
        EventType::Warning,
        "OrphanSkipped",
        "SweepOrphans",
        note,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(unique_name: &str, uid: &str) -> azure::Application {
        serde_json::from_value(serde_json::json!({
            "id": "o1",
            "uniqueName": unique_name,
            "tags": ["dcr-operator", "dcr-operator:cluster:prod", format!("dcr-operator:uid:{uid}")],
        }))
        .unwrap()
    }

    #[test]
    fn only_this_clusters_unique_name_for_the_tagged_uid_matches() {
        assert_eq!(scheme_mismatch(&app("dcr-prod-u1", "u1"), "prod"), None);
        assert_eq!(scheme_mismatch(&app("DCR-PROD-U1", "u1"), "prod"), None);
        for (name, uid) in [
            ("dcr-prod-u2", "u1"),
            ("dcr-staging-u1", "u1"),
            ("someone-else", "u1"),
            ("", "u1"),
        ] {
            assert!(scheme_mismatch(&app(name, uid), "prod").is_some(), "{name}");
        }
    }

    fn provider(policy: &str) -> DcrProvider {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "dcr-operator.io/v1alpha1", "kind": "DcrProvider",
            "metadata": {"name": "p"},
            "spec": {
                "type": "AzureAD", "issuer": "https://sts.windows.net/t/",
                "azureAD": {"tenantId": "8a4b7e9c-2f5d-4c1e-9b3a-6d2e1f0c7a58", "orphanedApplications": policy},
                "initialClient": {"clientId": "c", "clientSecretRef": {"namespace": "n", "name": "s", "key": "k"}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn deletion_needs_an_explicit_cluster_name() {
        let refused = deletion_refusal(&provider("Delete"), "default").expect("refused");
        assert_eq!(refused.reason, Reason::ClusterNameRequired);
        assert!(refused.message.contains("--cluster-name"));
        assert!(deletion_refusal(&provider("Delete"), "prod-eu-1").is_none());
        assert!(deletion_refusal(&provider("Report"), "default").is_none());
    }
}
