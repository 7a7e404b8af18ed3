//! AuthStrategy: Ready when its provider is Ready and its spec is consistent. Owns the
//! strategy's `Ready` condition. Re-runs when its provider changes (see `run`).

use super::context::Context;
use super::error::Result;
use super::events;
use super::read;
use super::status::apply_status;
use crate::crd::conditions::{find_condition, is_ready, set_condition, DesiredCondition, Reason, Status};
use crate::crd::provider::DcrProvider;
use crate::crd::strategy::{AuthStrategy, CredentialPolicy};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use std::sync::Arc;
use std::time::Duration;

pub const KIND: &str = "AuthStrategy";
const MANAGER: &str = "dcr-operator/authstrategy";

#[tracing::instrument(skip_all, fields(kind = KIND, object = %strategy.name_any()))]
pub async fn reconcile(strategy: Arc<AuthStrategy>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(KIND);
    let name = strategy.name_any();
    let provider_name = &strategy.spec.provider_ref.name;
    let provider = read::get_opt(&Api::<DcrProvider>::all(ctx.client.clone()), provider_name).await?;

    let (condition, issuer) = match provider_ref_changed(&strategy) {
        Some(message) => (DesiredCondition::not_ready(Reason::InvalidSpec, message), None),
        None => evaluate(&strategy, provider.as_ref()),
    };

    let old = strategy.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let was = find_condition(&old.conditions, crate::crd::conditions::ConditionType::Ready)
        .map(|c| (c.status.clone(), c.reason.clone()));
    set_condition(
        &mut status.conditions,
        condition.clone(),
        strategy.metadata.generation,
        ctx.now(),
    );
    status.observed_generation = strategy.metadata.generation;
    status.issuer = issuer;
    if condition.status == Status::True && status.provider.is_none() {
        status.provider = Some(provider_name.clone());
    }
    if status != old {
        let api: Api<AuthStrategy> = Api::all(ctx.client.clone());
        apply_status(&api, MANAGER, &name, &status).await?;
    }
    if was
        != Some((
            condition.status.as_str().to_string(),
            condition.reason.as_str().to_string(),
        ))
    {
        let type_ = if condition.status == Status::True {
            EventType::Normal
        } else {
            EventType::Warning
        };
        events::publish(
            &ctx,
            strategy.as_ref(),
            type_,
            condition.reason.as_str(),
            "Evaluate",
            condition.message,
        )
        .await;
    }
    Ok(Action::requeue(ctx.settings.resync_period))
}

/// Pure: the strategy's Ready condition and the issuer in effect.
pub fn evaluate(
    strategy: &AuthStrategy,
    provider: Option<&DcrProvider>,
) -> (DesiredCondition, Option<String>) {
    let provider_name = &strategy.spec.provider_ref.name;
    let Some(provider) = provider else {
        return (
            DesiredCondition::not_ready(
                Reason::ProviderNotFound,
                format!("DcrProvider {provider_name} does not exist"),
            ),
            None,
        );
    };
    let issuer = strategy
        .spec
        .open_id_connect
        .issuer
        .clone()
        .unwrap_or_else(|| provider.spec.issuer.clone());
    if let Err(message) = check_credential_policy(&strategy.spec.credentials) {
        return (
            DesiredCondition::not_ready(Reason::InvalidSpec, message),
            Some(issuer),
        );
    }
    let provider_status = provider.status.clone().unwrap_or_default();
    if !is_ready(&provider_status.conditions, provider.metadata.generation) {
        let why = find_condition(
            &provider_status.conditions,
            crate::crd::conditions::ConditionType::Ready,
        )
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_else(|| "not verified yet".into());
        return (
            DesiredCondition::not_ready(
                Reason::ProviderNotReady,
                format!("DcrProvider {provider_name} is not Ready ({why})"),
            ),
            Some(issuer),
        );
    }
    (
        DesiredCondition::ready(format!("provider {provider_name} is Ready; issuer {issuer}")),
        Some(issuer),
    )
}

/// `spec.providerRef` against the provider recorded in status, for clusters without CEL.
pub fn provider_ref_changed(strategy: &AuthStrategy) -> Option<String> {
    let recorded = strategy.status.as_ref()?.provider.as_deref()?;
    (strategy.spec.provider_ref.name != recorded).then(|| {
        format!("spec.providerRef is immutable: it was {recorded} (create a new AuthStrategy instead)")
    })
}

/// The rules the CRD states in CEL, checked again here because clusters older than 1.25
/// (and any with CEL validation off) do not enforce them.
pub fn check_credential_policy(p: &CredentialPolicy) -> std::result::Result<(), String> {
    let lifetime: Duration = p.lifetime.into();
    let renew_before: Duration = p.renew_before.into();
    if lifetime.is_zero() {
        return Err("credentials.lifetime must be longer than 0".into());
    }
    if renew_before >= lifetime {
        return Err("credentials.renewBefore must be shorter than credentials.lifetime".into());
    }
    if let Some(max) = p.max_lifetime {
        if lifetime > Duration::from(max) {
            return Err("credentials.lifetime must not exceed credentials.maxLifetime".into());
        }
    }
    Ok(())
}
