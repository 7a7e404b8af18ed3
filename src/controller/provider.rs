//! DcrProvider: read the admin Secret, obtain a token, find the admin client's service
//! principal. Owns the provider's `Ready` condition; a bad configuration is a condition
//! (`Ready=False` + reason) and a slow requeue, never a hot retry loop.

use super::context::Context;
use super::error::{Error, Result};
use super::events;
use super::providers::ClientError;
use super::status::apply_status;
use crate::crd::conditions::{find_condition, set_condition, ConditionType, DesiredCondition, Reason};
use crate::crd::decoded::Decoded;
use crate::crd::provider::{DcrProvider, ProviderType};
use crate::crd::strategy::AuthStrategy;
use crate::idp::azure::{GraphClient, GraphError, TokenError};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use std::sync::Arc;
use std::time::Duration;

mod oidc;
mod orphans;

pub const KIND: &str = "DcrProvider";
const MANAGER: &str = "dcr-operator/dcrprovider";
/// How soon a provider that failed for a reason that may pass by itself is checked again.
const TRANSIENT_RECHECK: Duration = Duration::from_secs(30);

/// What verification found.
struct Verification {
    condition: DesiredCondition,
    service_principal_id: Option<String>,
    recheck: Option<Duration>,
}

#[tracing::instrument(skip_all, fields(kind = KIND, object = %provider.name_any()))]
pub async fn reconcile(provider: Arc<DcrProvider>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(KIND);
    let name = provider.name_any();
    let api: Api<DcrProvider> = Api::all(ctx.client.clone());
    if provider.metadata.deletion_timestamp.is_some() {
        ctx.providers.forget(&name);
        return Ok(Action::await_change());
    }

    // Without CEL (Kubernetes < 1.25) the apiserver lets the tenant change: refuse it here,
    // before a client for the other tenant is built.
    let (verification, client) = match provider.immutable_fields_changed() {
        Some(message) => (
            Verification {
                condition: DesiredCondition::not_ready(Reason::InvalidSpec, message),
                service_principal_id: None,
                recheck: None,
            },
            None,
        ),
        None => verify(&provider, &ctx).await?,
    };
    let strategies = strategies_using(&ctx, &name).await?;
    let operator_principal = verification.service_principal_id.clone().or_else(|| {
        provider
            .status
            .as_ref()
            .and_then(|s| s.service_principal_id.clone())
    });
    let sweep = match &client {
        Some(graph) => orphans::sweep(&provider, &ctx, graph, operator_principal.as_deref()).await,
        None => None,
    };

    let now = ctx.now();
    let old = provider.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let was =
        find_condition(&old.conditions, ConditionType::Ready).map(|c| (c.status.clone(), c.reason.clone()));
    let ready = verification.condition.status == crate::crd::conditions::Status::True;
    set_condition(
        &mut status.conditions,
        verification.condition.clone(),
        provider.metadata.generation,
        now,
    );
    status.observed_generation = provider.metadata.generation;
    status.auth_strategies = strategies;
    if let Some(sweep) = sweep {
        status.orphaned_applications = sweep.orphans;
    }
    match orphans::deletion_refusal(&provider, &ctx.settings.cluster_name) {
        Some(refusal) => {
            set_condition(&mut status.conditions, refusal, provider.metadata.generation, now);
        }
        None => status
            .conditions
            .retain(|c| c.type_ != ConditionType::OrphanDeletion.as_str()),
    }
    status.active = strategies > 0;
    if verification.service_principal_id.is_some() {
        status.service_principal_id = verification.service_principal_id;
    }
    // Refreshed at most every half resync period, so the status write does not trigger
    // a reconcile of its own.
    let stale = old.last_verified_time.as_ref().is_none_or(|t| {
        now.duration_since(t.0).as_secs_f64() > ctx.settings.resync_period.as_secs_f64() / 2.0
    });
    if ready && stale {
        status.last_verified_time = Some(Time(now));
    }
    if ready && status.tenant_id.is_none() {
        status.tenant_id = provider.spec.azure_ad.as_ref().map(|a| a.tenant_id.clone());
    }
    if status != old {
        apply_status(&api, MANAGER, &name, &status).await?;
    }

    let now_is = (
        verification.condition.status.as_str().to_string(),
        verification.condition.reason.as_str().to_string(),
    );
    if was.as_ref() != Some(&now_is) {
        let type_ = if ready {
            EventType::Normal
        } else {
            EventType::Warning
        };
        let reason = verification.condition.reason.as_str();
        events::publish(
            &ctx,
            provider.as_ref(),
            type_,
            reason,
            "Verify",
            verification.condition.message.clone(),
        )
        .await;
    }
    Ok(Action::requeue(
        verification.recheck.unwrap_or(ctx.settings.resync_period),
    ))
}

/// Builds the provider's client and checks it; the client comes back when it works.
async fn verify(provider: &DcrProvider, ctx: &Context) -> Result<(Verification, Option<Arc<GraphClient>>)> {
    if provider.spec.type_ == ProviderType::Oidc {
        return Ok((oidc::verify(provider, ctx).await?, None));
    }
    let client = match ctx.providers.client_for(&ctx.client, provider).await {
        Ok(c) => c,
        Err(e) => return Ok((client_error(e)?, None)),
    };
    let verification = check(&client, provider).await?;
    let works = verification.condition.status == crate::crd::conditions::Status::True;
    Ok((verification, works.then_some(client)))
}

/// Obtains a token and finds the admin client's own service principal.
async fn check(client: &GraphClient, provider: &DcrProvider) -> Result<Verification> {
    if let Err(e) = client.verify_credentials().await {
        return Ok(token_failure(&e));
    }
    match client.own_service_principal().await {
        Ok(sp) => Ok(Verification {
            condition: DesiredCondition::ready(ready_message(provider)),
            service_principal_id: Some(sp.id),
            recheck: None,
        }),
        Err(GraphError::Forbidden(info)) => Ok(Verification {
            condition: DesiredCondition::not_ready(
                Reason::InsufficientPermissions,
                format!(
                    "the admin client may not read its service principal ({}): grant Application.ReadWrite.OwnedBy with admin consent",
                    info.code
                ),
            ),
            service_principal_id: None,
            recheck: Some(TRANSIENT_RECHECK),
        }),
        Err(GraphError::NotFound(_)) => Ok(Verification {
            condition: DesiredCondition::not_ready(
                Reason::ClientNotFound,
                "the admin client has no service principal in the tenant: consent to the app in this tenant",
            ),
            service_principal_id: None,
            recheck: Some(TRANSIENT_RECHECK),
        }),
        Err(GraphError::Token(e)) => Ok(token_failure(&e)),
        Err(e) if e.is_transient() => Ok(Verification {
            condition: DesiredCondition::not_ready(
                if matches!(e, GraphError::Throttled { .. }) { Reason::Throttled } else { Reason::Unreachable },
                e.to_string(),
            ),
            service_principal_id: None,
            recheck: Some(TRANSIENT_RECHECK),
        }),
        Err(e) => Err(Error::VerifyProvider(e.into())),
    }
}

/// The Ready message, with what of `spec.requestBudget` was not taken as written.
fn ready_message(provider: &DcrProvider) -> String {
    let verified = format!(
        "obtained a token for client {} and found its service principal",
        provider
            .spec
            .initial_client
            .as_ref()
            .map(|c| c.client_id.as_str())
            .unwrap_or_default()
    );
    match crate::controller::providers::request_budget_note(provider) {
        Some(note) => format!("{verified}; {note}"),
        None => verified,
    }
}

fn client_error(e: ClientError) -> Result<Verification> {
    let e = match e {
        ClientError::Kube { source, .. } => {
            return Err(Error::ReadObject {
                what: "the admin client's Secret".into(),
                source,
            })
        }
        other => other,
    };
    // Fixed by creating or editing the Secret (watched) or the spec: no timed recheck.
    let reason = match &e {
        ClientError::SecretNotFound { .. } => Reason::SecretNotFound,
        ClientError::SecretKeyNotFound { .. } => Reason::SecretKeyNotFound,
        ClientError::SecretNamespaceNotAllowed { .. } => Reason::SecretNamespaceNotAllowed,
        _ => Reason::InvalidSpec,
    };
    let message = match reason {
        Reason::SecretNotFound | Reason::SecretKeyNotFound => {
            format!("{e}: waiting for it (the provider is checked again when the Secret changes)")
        }
        _ => e.to_string(),
    };
    Ok(Verification {
        condition: DesiredCondition::not_ready(reason, message),
        service_principal_id: None,
        recheck: None,
    })
}

/// Maps a token failure to the condition users read.
fn token_failure(e: &TokenError) -> Verification {
    let (reason, transient) = match e {
        TokenError::InvalidClientSecret(_) | TokenError::ExpiredClientSecret(_) => {
            (Reason::InvalidClientSecret, false)
        }
        // The kubelet writes and refreshes the token file by itself: look again soon.
        TokenError::AssertionUnreadable { .. } => (Reason::FederatedTokenNotFound, true),
        TokenError::AssertionExpired { .. } | TokenError::AssertionExpiredAtProvider(_) => {
            (Reason::FederatedTokenExpired, true)
        }
        TokenError::NoMatchingFederatedCredential(_) => (Reason::NoMatchingFederatedCredential, false),
        TokenError::AssertionRejected(_) => (Reason::FederatedTokenRejected, false),
        TokenError::ClientNotFound(_) | TokenError::ServicePrincipalMissing(_) => {
            (Reason::ClientNotFound, false)
        }
        TokenError::TenantNotFound(_) => (Reason::TenantNotFound, false),
        TokenError::Throttled { .. } => (Reason::Throttled, true),
        TokenError::Unreachable(_) => (Reason::Unreachable, true),
        TokenError::Unexpected { .. } => (Reason::Unreachable, e.is_transient()),
    };
    Verification {
        condition: DesiredCondition::not_ready(reason, format!("cannot obtain a token: {e}")),
        service_principal_id: None,
        // A wrong secret is fixed by editing the Secret, which triggers a reconcile.
        recheck: Some(if transient {
            TRANSIENT_RECHECK
        } else {
            Duration::from_secs(300)
        }),
    }
}

/// How many strategies use the provider (one that does not decode is not counted, and never
/// fails the count of the others).
async fn strategies_using(ctx: &Context, provider: &str) -> Result<u32> {
    let api: Api<Decoded<AuthStrategy>> = Api::all(ctx.client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::ReadObject {
            what: "AuthStrategies".into(),
            source,
        })?;
    Ok(list
        .items
        .iter()
        .filter(|s| s.ok().is_some_and(|s| s.spec.provider_ref.name == provider))
        .count() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idp::azure::AadDiagnostics;

    #[test]
    fn a_wrong_secret_is_reported_as_invalid_client_secret_and_not_retried_hot() {
        let v = token_failure(&TokenError::InvalidClientSecret(Box::default()));
        assert_eq!(v.condition.reason, Reason::InvalidClientSecret);
        assert!(v.recheck.unwrap() >= Duration::from_secs(300));
        let v = token_failure(&TokenError::TenantNotFound(Box::<AadDiagnostics>::default()));
        assert_eq!(v.condition.reason, Reason::TenantNotFound);
    }

    #[test]
    fn federated_token_failures_have_their_own_reasons() {
        let v = token_failure(&TokenError::AssertionUnreadable {
            path: "/var/run/secrets/azure/tokens/azure-identity-token".into(),
            message: "entity not found".into(),
        });
        assert_eq!(v.condition.reason, Reason::FederatedTokenNotFound);
        assert_eq!(v.recheck, Some(TRANSIENT_RECHECK));
        let v = token_failure(&TokenError::AssertionExpired {
            path: "t".into(),
            expired_at: "2026-01-01T00:00:00+00:00".into(),
        });
        assert_eq!(v.condition.reason, Reason::FederatedTokenExpired);
        let v = token_failure(&TokenError::NoMatchingFederatedCredential(Box::default()));
        assert_eq!(v.condition.reason, Reason::NoMatchingFederatedCredential);
        let v = token_failure(&TokenError::AssertionRejected(Box::default()));
        assert_eq!(v.condition.reason, Reason::FederatedTokenRejected);
    }

    #[test]
    fn a_spec_naming_both_credentials_is_invalid() {
        let v = client_error(ClientError::CredentialChoice("exclusive: set one")).unwrap();
        assert_eq!(v.condition.reason, Reason::InvalidSpec);
    }

    #[test]
    fn a_missing_secret_is_waited_on() {
        let v = client_error(ClientError::SecretNotFound {
            namespace: "dcr-system".into(),
            name: "admin".into(),
        })
        .unwrap();
        assert_eq!(v.condition.reason, Reason::SecretNotFound);
        assert!(v.condition.message.contains("dcr-system/admin"));
    }
}
