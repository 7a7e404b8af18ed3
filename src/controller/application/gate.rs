//! Gate: the strategy, provider, namespace and policy an Application needs, resolved and
//! checked before anything is registered or issued; and the provider of an Application
//! being deleted.

use super::admission::{self, EffectivePolicy, Refusal};
use crate::controller::context::Context;
use crate::controller::error::{Error, Result};
use crate::controller::providers::ClientError;
use crate::controller::read;
use crate::crd::application::Application;
use crate::crd::conditions::{find_condition, is_ready, ConditionType, Reason};
use crate::crd::provider::DcrProvider;
use crate::crd::strategy::AuthStrategy;
use crate::idp::Backend;
use crate::secret::{self, ConnectionDetails};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::ResourceExt;

/// Everything an admitted Application needs from its strategy and provider.
pub(super) struct Gate {
    pub strategy: AuthStrategy,
    pub provider: DcrProvider,
    /// The provider boundary; its calls take this namespace's fair share of the provider's
    /// request budget.
    pub backend: Backend,
    pub policy: EffectivePolicy,
}

/// Resolves the strategy and provider and checks the Application may use them.
pub(super) async fn gate(app: &Application, ctx: &Context) -> Result<Result<Gate, Refusal>> {
    let strategy = match admitted_strategy(app, ctx).await? {
        Ok(s) => s,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if let Err(refusal) = admission::requests_bounded(app) {
        return Ok(Err(refusal));
    }
    let policy = match admission::effective_policy(app, &strategy) {
        Ok(p) => p,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let (provider, backend) = match usable_provider(app, ctx, &strategy).await? {
        Ok(found) => found,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let gate = Gate {
        strategy,
        provider,
        backend,
        policy,
    };
    if let Err(message) = check_secret(app, &gate) {
        return Ok(Err((Reason::InvalidSpec, message)));
    }
    Ok(Ok(gate))
}

/// The strategy, when it exists, is Ready and admits the Application's namespace.
async fn admitted_strategy(app: &Application, ctx: &Context) -> Result<Result<AuthStrategy, Refusal>> {
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
    if strategy.spec.allowed_namespaces.is_some() {
        let namespace = app.namespace().unwrap_or_default();
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
    Ok(Ok(strategy))
}

/// The strategy's provider and its backend, when it exists and can be used.
async fn usable_provider(
    app: &Application,
    ctx: &Context,
    strategy: &AuthStrategy,
) -> Result<Result<(DcrProvider, Backend), Refusal>> {
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
    let namespace = app.namespace().unwrap_or_default();
    match ctx
        .providers
        .backend_for(&ctx.client, &provider, &namespace)
        .await
    {
        Ok(backend) => Ok(Ok((provider, backend))),
        Err(ClientError::Kube { source, .. }) => Err(Error::ReadObject {
            what: format!("the Secret of DcrProvider {provider_name}"),
            source,
        }),
        Err(e) => Ok(Err((
            Reason::StrategyNotReady,
            format!("DcrProvider {provider_name}: {e}"),
        ))),
    }
}

/// The Secret the Application asks for, checked before anything is registered or issued:
/// a write the apiserver refuses after a secret is added would leave a key recorded nowhere.
fn check_secret(app: &Application, gate: &Gate) -> std::result::Result<(), String> {
    secret::validate::secret_name(&secret::secret_name(app))?;
    let layout = secret::SecretLayout::new(app.spec.secret.template.as_ref())?;
    // Any client id has the length of a GUID.
    layout.check_size(&connection_details(gate, "00000000-0000-0000-0000-000000000000"))
}

/// What the Secret tells consumers about client `client_id`.
pub(super) fn connection_details(gate: &Gate, client_id: &str) -> ConnectionDetails {
    let endpoints = gate.backend.endpoints();
    let oidc = &gate.strategy.spec.open_id_connect;
    ConnectionDetails {
        client_id: client_id.to_string(),
        tenant_id: endpoints.tenant_id,
        issuer: oidc
            .issuer
            .clone()
            .unwrap_or_else(|| gate.provider.spec.issuer.clone()),
        token_url: endpoints.token_url,
        token_url_v1: endpoints.token_url_v1,
        scope: oidc.scopes.join(" "),
        auth_methods: oidc
            .auth_methods
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// The provider an Application's strategy points at (once the strategy is gone: the one
/// its status recorded), and its backend; None when that provider no longer exists
/// (nothing can be done at the provider then).
pub(super) async fn provider_of(app: &Application, ctx: &Context) -> Result<Option<(DcrProvider, Backend)>> {
    let strategy_name = &app.spec.auth_strategy_ref.name;
    let strategy = read::get_opt(&Api::<AuthStrategy>::all(ctx.client.clone()), strategy_name).await?;
    let recorded = app.status.as_ref().and_then(|s| s.provider.clone());
    let Some(provider_name) = strategy.map(|s| s.spec.provider_ref.name).or(recorded) else {
        return Ok(None);
    };
    named_provider(app, ctx, &provider_name).await
}

/// DcrProvider `name` and its backend for `app`'s namespace; None when it does not exist.
pub(super) async fn named_provider(
    app: &Application,
    ctx: &Context,
    name: &str,
) -> Result<Option<(DcrProvider, Backend)>> {
    let Some(provider) = read::get_opt(&Api::<DcrProvider>::all(ctx.client.clone()), name).await? else {
        return Ok(None);
    };
    let namespace = app.namespace().unwrap_or_default();
    let backend = ctx
        .providers
        .backend_for(&ctx.client, &provider, &namespace)
        .await
        .map_err(client_error)?;
    Ok(Some((provider, backend)))
}

/// A provider client that cannot be built, as a reconcile error.
pub(super) fn client_error(e: ClientError) -> Error {
    match e {
        ClientError::Kube { source, .. } => Error::ReadObject {
            what: "the DcrProvider's Secret".into(),
            source,
        },
        other => Error::ProviderConfig(other.to_string()),
    }
}
