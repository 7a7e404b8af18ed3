//! [`OidcClient`]: RFC 7591 registration and RFC 7592 management at one provider.

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use super::config::OidcConfig;
use super::discovery::{self, Endpoints, ServerMetadata};
use super::error::OidcError;
use super::http;
use super::metadata::{AuthMethod, ClientRequest, Management, RegisteredClient};
use super::token::{self, AccessToken};
use crate::sensitive::SecretString;

/// A client of one provider's registration and token endpoints.
#[derive(Debug)]
pub struct OidcClient {
    http: reqwest::Client,
    config: OidcConfig,
    metadata: Option<ServerMetadata>,
    endpoints: Endpoints,
}

impl OidcClient {
    /// Validates `config`, reads the server's metadata (skipped when both endpoints are
    /// overridden) and settles the endpoints.
    pub async fn discover(config: OidcConfig) -> Result<Self, OidcError> {
        config.validate()?;
        let http = config.http_client()?;
        let overridden = config.registration_endpoint.is_some() && config.token_endpoint.is_some();
        let metadata = match overridden {
            true => None,
            false => Some(discovery::fetch(&http, &config.issuer).await?),
        };
        let endpoints = discovery::endpoints(&config, metadata.as_ref())?;
        Ok(Self {
            http,
            config,
            metadata,
            endpoints,
        })
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The discovered metadata (none when both endpoints are overridden).
    pub fn metadata(&self) -> Option<&ServerMetadata> {
        self.metadata.as_ref()
    }

    /// RFC 7591 §3.1: registers a client. A 401/403 is [`OidcError::RegistrationRefused`].
    #[tracing::instrument(name = "oidc.register", skip_all, fields(status, client_id))]
    pub async fn register(&self, request: &ClientRequest) -> Result<RegisteredClient, OidcError> {
        request.validate()?;
        let mut call = self
            .http
            .post(self.endpoints.registration.clone())
            .header(ACCEPT, "application/json")
            .json(&request.to_json(None));
        if let Some((name, value)) = self.config.registration_auth.header()? {
            call = call.header(name, value);
        }
        let scrub: Vec<&SecretString> = self.config.registration_auth.secret().into_iter().collect();
        let reply = http::send("register", call).await?;
        tracing::Span::current().record("status", reply.status.as_u16());
        match reply.status {
            s if s.is_success() => {
                let client = RegisteredClient::parse("register", &reply.body, None)?;
                tracing::Span::current().record("client_id", client.client_id.as_str());
                Ok(client)
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(OidcError::RegistrationRefused {
                status: reply.status.as_u16(),
                detail: http::detail(&reply.body, &scrub),
            }),
            _ => Err(http::error_for("register", &reply, &scrub)),
        }
    }

    /// RFC 7592 §2.1: reads the client as the server holds it.
    #[tracing::instrument(name = "oidc.read", skip_all, fields(status))]
    pub async fn read(&self, management: &Management) -> Result<RegisteredClient, OidcError> {
        let reply = self.manage("read", Method::GET, management, None).await?;
        RegisteredClient::parse("read", &reply.body, Some(management))
    }

    /// RFC 7592 §2.2: replaces the client's metadata with `request`'s (every field sent).
    #[tracing::instrument(name = "oidc.update", skip_all, fields(status))]
    pub async fn update(
        &self,
        management: &Management,
        client_id: &str,
        request: &ClientRequest,
    ) -> Result<RegisteredClient, OidcError> {
        request.validate()?;
        let body = request.to_json(Some(client_id));
        let reply = self
            .manage("update", Method::PUT, management, Some(&body))
            .await?;
        RegisteredClient::parse("update", &reply.body, Some(management))
    }

    /// RFC 7592 §2.3: deletes the client. A 404 counts as deleted; a 401 is
    /// [`OidcError::ClientGone`] (deleted already, or the token was revoked: the caller reports).
    #[tracing::instrument(name = "oidc.delete", skip_all, fields(status))]
    pub async fn delete(&self, management: &Management) -> Result<(), OidcError> {
        match self.manage("delete", Method::DELETE, management, None).await {
            Ok(_) | Err(OidcError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Obtains a token as the registered client: the proof that its credentials work.
    pub async fn token(
        &self,
        client_id: &str,
        secret: &SecretString,
        method: AuthMethod,
        scope: Option<&str>,
    ) -> Result<AccessToken, OidcError> {
        token::client_credentials(
            &self.http,
            &self.endpoints.token,
            client_id,
            secret,
            method,
            scope,
        )
        .await
    }

    /// One call to the management URI with the registration access token as a bearer.
    async fn manage(
        &self,
        op: &'static str,
        method: Method,
        management: &Management,
        body: Option<&serde_json::Value>,
    ) -> Result<http::Reply, OidcError> {
        let mut call = self
            .http
            .request(method, management.client_uri.clone())
            .header(ACCEPT, "application/json")
            .bearer_auth(management.access_token.expose());
        if let Some(body) = body {
            call = call.header(CONTENT_TYPE, "application/json").json(body);
        }
        let reply = http::send(op, call).await?;
        tracing::Span::current().record("status", reply.status.as_u16());
        if reply.status.is_success() {
            return Ok(reply);
        }
        let scrub = [&management.access_token];
        Err(match reply.status {
            StatusCode::UNAUTHORIZED => OidcError::ClientGone {
                op,
                detail: http::detail(&reply.body, &scrub),
            },
            _ => http::error_for(op, &reply, &scrub),
        })
    }
}
