//! The proof that a client works: a client-credentials grant at the token endpoint
//! (RFC 6749 §4.4) with the issued id and secret.

use reqwest::header::ACCEPT;
use serde::Deserialize;
use url::Url;

use super::error::OidcError;
use super::http;
use super::metadata::AuthMethod;
use crate::sensitive::SecretString;

/// An access token the server issued.
#[derive(Clone, Debug)]
pub struct AccessToken {
    pub token: SecretString,
    pub token_type: String,
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
}

#[derive(Deserialize)]
struct Wire {
    access_token: String,
    #[serde(default)]
    token_type: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
}

/// Requests a token with `client_id`/`secret`, authenticated as `method` says.
#[tracing::instrument(name = "oidc.token", skip_all, fields(method = ?method, status))]
pub(crate) async fn client_credentials(
    http_client: &reqwest::Client,
    token_endpoint: &Url,
    client_id: &str,
    secret: &SecretString,
    method: AuthMethod,
    scope: Option<&str>,
) -> Result<AccessToken, OidcError> {
    let mut form = vec![("grant_type", "client_credentials")];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    let mut request = http_client
        .post(token_endpoint.clone())
        .header(ACCEPT, "application/json");
    request = match method {
        // RFC 6749 §2.3.1: the id and secret are form-encoded before Basic encoding.
        AuthMethod::ClientSecretBasic => {
            request.basic_auth(form_encode(client_id), Some(form_encode(secret.expose())))
        }
        AuthMethod::ClientSecretPost => {
            form.push(("client_id", client_id));
            form.push(("client_secret", secret.expose()));
            request
        }
    };
    let reply = http::send("token", request.form(&form)).await?;
    tracing::Span::current().record("status", reply.status.as_u16());
    if !reply.status.is_success() {
        let status = reply.status.as_u16();
        return Err(match status {
            400 | 401 | 403 => OidcError::TokenRefused {
                status,
                detail: http::detail(&reply.body, &[secret]),
            },
            _ => http::error_for("token", &reply, &[secret]),
        });
    }
    let wire: Wire = serde_json::from_slice(&reply.body)
        .map_err(|e| http::parse_error("token", "a token response", &e))?;
    if wire.access_token.is_empty() || wire.access_token.len() > 16 * 1024 {
        return Err(OidcError::InvalidResponse {
            op: "token",
            message: "access_token is empty or longer than 16 KiB".into(),
        });
    }
    Ok(AccessToken {
        token: SecretString::new(wire.access_token),
        token_type: http::clean(&wire.token_type, &[]),
        expires_in: wire.expires_in,
        scope: wire.scope.map(|s| http::clean(&s, &[])),
    })
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
