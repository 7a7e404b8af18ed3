//! Verifying a `type: OIDC` provider: its registration credential (read from the allowed
//! namespaces only, like Entra's admin Secret), discovery, and a registration endpoint.
//! The credential itself is not exercised: RFC 7591 has no call that checks an initial
//! access token without registering a client.

use std::time::Duration;

use reqwest::header::HeaderName;
use url::Url;

use super::{client_error, Verification, TRANSIENT_RECHECK};
use crate::controller::context::Context;
use crate::controller::error::Result;
use crate::crd::conditions::{DesiredCondition, Reason};
use crate::crd::provider::{DcrProvider, OidcProvider, OidcRegistrationAuthType};
use crate::idp::oidc::{ErrorKind, OidcClient, OidcConfig, OidcError, RegistrationAuth};

/// How soon a provider whose server lacks registration is checked again.
const MISCONFIGURED_RECHECK: Duration = Duration::from_secs(300);

pub(super) async fn verify(provider: &DcrProvider, ctx: &Context) -> Result<Verification> {
    let Some(settings) = provider.spec.oidc.as_ref() else {
        return Ok(not_ready(
            Reason::InvalidSpec,
            "spec.oidc is required when spec.type is OIDC".into(),
            None,
        ));
    };
    let auth = match registration_auth(settings, ctx).await {
        Ok(auth) => auth,
        Err(Failure::Secret(e)) => return client_error(e),
        Err(Failure::Spec(message)) => return Ok(not_ready(Reason::InvalidSpec, message, None)),
    };
    let config = match oidc_config(provider, settings, auth, ctx) {
        Ok(c) => c,
        Err(message) => return Ok(not_ready(Reason::InvalidSpec, message, None)),
    };
    Ok(match OidcClient::discover(config).await {
        Ok(client) => Verification {
            condition: DesiredCondition::ready(format!(
                "registration endpoint {}, token endpoint {}",
                client.endpoints().registration,
                client.endpoints().token
            )),
            service_principal_id: None,
            recheck: None,
        },
        Err(e) => discovery_failure(&e),
    })
}

enum Failure {
    Secret(crate::controller::providers::ClientError),
    Spec(String),
}

async fn registration_auth(settings: &OidcProvider, ctx: &Context) -> Result<RegistrationAuth, Failure> {
    let auth = &settings.registration_auth;
    if auth.type_ == OidcRegistrationAuthType::None {
        return Ok(RegistrationAuth::None);
    }
    let Some(secret_ref) = auth.secret_ref.as_ref() else {
        return Err(Failure::Spec(
            "spec.oidc.registrationAuth.secretRef is required unless type is None".into(),
        ));
    };
    let value = ctx
        .providers
        .read_provider_secret(&ctx.client, secret_ref)
        .await
        .map_err(Failure::Secret)?;
    if auth.type_ == OidcRegistrationAuthType::InitialAccessToken {
        return Ok(RegistrationAuth::InitialAccessToken(value));
    }
    let name = auth.header_name.as_deref().unwrap_or("Authorization");
    let name = HeaderName::try_from(name).map_err(|_| {
        Failure::Spec(format!(
            "spec.oidc.registrationAuth.headerName {name:?} is not a header name"
        ))
    })?;
    Ok(RegistrationAuth::Header {
        name,
        scheme: auth.scheme.clone(),
        value,
    })
}

fn oidc_config(
    provider: &DcrProvider,
    settings: &OidcProvider,
    auth: RegistrationAuth,
    ctx: &Context,
) -> Result<OidcConfig, String> {
    let url = |field: &str, value: &str| Url::parse(value).map_err(|e| format!("{field}: {e}"));
    let mut config = OidcConfig::new(url("spec.issuer", &provider.spec.issuer)?, auth);
    config.registration_endpoint = settings
        .registration_endpoint
        .as_deref()
        .map(|u| url("spec.oidc.registrationEndpoint", u))
        .transpose()?;
    config.token_endpoint = settings
        .token_endpoint
        .as_deref()
        .map(|u| url("spec.oidc.tokenEndpoint", u))
        .transpose()?;
    config.extra_ca_pem = ctx.providers.extra_ca_pem();
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// The condition for a failed discovery: precise where the server is misconfigured,
/// `Unreachable`/`Throttled` (rechecked soon) where it may pass.
fn discovery_failure(e: &OidcError) -> Verification {
    let (reason, recheck) = match (e, e.kind()) {
        (OidcError::RegistrationEndpointMissing, _) => {
            (Reason::RegistrationEndpointMissing, MISCONFIGURED_RECHECK)
        }
        (OidcError::Discovery(_) | OidcError::TokenEndpointMissing, _) => {
            (Reason::DiscoveryFailed, TRANSIENT_RECHECK)
        }
        (OidcError::Config(_), _) => (Reason::InvalidSpec, MISCONFIGURED_RECHECK),
        (_, ErrorKind::Throttled { retry_after }) => (
            Reason::Throttled,
            retry_after.unwrap_or(TRANSIENT_RECHECK).max(TRANSIENT_RECHECK),
        ),
        _ => (Reason::Unreachable, TRANSIENT_RECHECK),
    };
    not_ready(reason, e.to_string(), Some(recheck))
}

fn not_ready(reason: Reason, message: String, recheck: Option<Duration>) -> Verification {
    Verification {
        condition: DesiredCondition::not_ready(reason, message),
        service_principal_id: None,
        recheck,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_failures_have_precise_reasons() {
        let v = discovery_failure(&OidcError::RegistrationEndpointMissing);
        assert_eq!(v.condition.reason, Reason::RegistrationEndpointMissing);
        let v = discovery_failure(&OidcError::Discovery("no metadata document".into()));
        assert_eq!(v.condition.reason, Reason::DiscoveryFailed);
        assert_eq!(v.recheck, Some(TRANSIENT_RECHECK));
        let v = discovery_failure(&OidcError::Unreachable {
            op: "discovery",
            message: "connection failed".into(),
        });
        assert_eq!(v.condition.reason, Reason::Unreachable);
        let v = discovery_failure(&OidcError::Throttled {
            op: "discovery",
            status: 429,
            retry_after: Some(Duration::from_secs(90)),
        });
        assert_eq!(v.condition.reason, Reason::Throttled);
        assert_eq!(v.recheck, Some(Duration::from_secs(90)));
    }
}
