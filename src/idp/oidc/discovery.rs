//! Authorization server metadata: OpenID Connect Discovery
//! (`<issuer>/.well-known/openid-configuration`), falling back to RFC 8414
//! (`<origin>/.well-known/oauth-authorization-server<issuer path>`) when the first answers
//! 4xx. The document must name the configured issuer exactly (OIDC Discovery §4.3), so a
//! misrouted URL cannot hand the operator another server's endpoints.

use reqwest::header::ACCEPT;
use serde::Deserialize;
use url::Url;

use super::config::{check_url, OidcConfig};
use super::error::OidcError;
use super::http;

/// The fields of the metadata this client uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerMetadata {
    pub issuer: String,
    pub registration_endpoint: Option<Url>,
    pub token_endpoint: Option<Url>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub grant_types_supported: Vec<String>,
    /// Which well-known document answered.
    pub source: Url,
}

/// The endpoints in use: discovered, or overridden by configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub registration: Url,
    pub token: Url,
}

#[derive(Deserialize)]
struct Wire {
    issuer: String,
    #[serde(default)]
    registration_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    grant_types_supported: Vec<String>,
}

/// The two well-known URLs, in the order they are tried.
pub fn well_known_urls(issuer: &Url) -> Result<[Url; 2], OidcError> {
    let path = issuer.path().trim_end_matches('/');
    let bad = |e: url::ParseError| OidcError::Config(format!("issuer: {e}"));
    let origin = issuer.origin().ascii_serialization();
    let oidc = Url::parse(&format!("{origin}{path}/.well-known/openid-configuration")).map_err(bad)?;
    let rfc8414 =
        Url::parse(&format!("{origin}/.well-known/oauth-authorization-server{path}")).map_err(bad)?;
    Ok([oidc, rfc8414])
}

/// Fetches the metadata, trying both well-known locations.
#[tracing::instrument(name = "oidc.discover", skip_all, fields(issuer = %issuer))]
pub async fn fetch(http_client: &reqwest::Client, issuer: &Url) -> Result<ServerMetadata, OidcError> {
    let mut refusals = Vec::new();
    for url in well_known_urls(issuer)? {
        let reply = http::send(
            "discovery",
            http_client.get(url.clone()).header(ACCEPT, "application/json"),
        )
        .await?;
        if reply.status.is_success() {
            return parse(&reply.body, issuer, url);
        }
        if !reply.status.is_client_error() {
            return Err(http::error_for("discovery", &reply, &[]));
        }
        refusals.push(format!("{} answered HTTP {}", url.path(), reply.status.as_u16()));
    }
    Err(OidcError::Discovery(format!(
        "no metadata document: {}",
        refusals.join("; ")
    )))
}

fn parse(body: &[u8], issuer: &Url, source: Url) -> Result<ServerMetadata, OidcError> {
    let wire: Wire = serde_json::from_slice(body).map_err(|e| {
        OidcError::Discovery(http::parse_error("discovery", "a metadata document", &e).to_string())
    })?;
    if wire.issuer.trim_end_matches('/') != issuer.as_str().trim_end_matches('/') {
        return Err(OidcError::Discovery(format!(
            "{} names issuer {:?}, not {:?}",
            source.path(),
            http::clean(&wire.issuer, &[]),
            issuer.as_str()
        )));
    }
    let endpoint = |name: &str, value: Option<String>| -> Result<Option<Url>, OidcError> {
        let Some(value) = value else { return Ok(None) };
        let url =
            Url::parse(&value).map_err(|e| OidcError::Discovery(format!("{name} is not a URL: {e}")))?;
        check_url(name, &url).map_err(|e| OidcError::Discovery(e.to_string()))?;
        Ok(Some(url))
    };
    Ok(ServerMetadata {
        registration_endpoint: endpoint("registration_endpoint", wire.registration_endpoint)?,
        token_endpoint: endpoint("token_endpoint", wire.token_endpoint)?,
        issuer: wire.issuer,
        token_endpoint_auth_methods_supported: bounded(wire.token_endpoint_auth_methods_supported),
        grant_types_supported: bounded(wire.grant_types_supported),
        source,
    })
}

/// At most 32 short entries of a served list.
fn bounded(list: Vec<String>) -> Vec<String> {
    list.into_iter()
        .take(32)
        .map(|s| http::clean(&s, &[]).chars().take(64).collect())
        .collect()
}

/// The endpoints to use: overrides first, then the metadata's.
pub fn endpoints(config: &OidcConfig, metadata: Option<&ServerMetadata>) -> Result<Endpoints, OidcError> {
    let registration = config
        .registration_endpoint
        .clone()
        .or_else(|| metadata.and_then(|m| m.registration_endpoint.clone()))
        .ok_or(OidcError::RegistrationEndpointMissing)?;
    let token = config
        .token_endpoint
        .clone()
        .or_else(|| metadata.and_then(|m| m.token_endpoint.clone()))
        .ok_or(OidcError::TokenEndpointMissing)?;
    Ok(Endpoints { registration, token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_urls_for_root_and_path_issuers() {
        let [a, b] = well_known_urls(&Url::parse("https://idp.example.com").unwrap()).unwrap();
        assert_eq!(
            a.as_str(),
            "https://idp.example.com/.well-known/openid-configuration"
        );
        assert_eq!(
            b.as_str(),
            "https://idp.example.com/.well-known/oauth-authorization-server"
        );
        let [a, b] = well_known_urls(&Url::parse("https://kc.example.com/realms/ops/").unwrap()).unwrap();
        assert_eq!(
            a.as_str(),
            "https://kc.example.com/realms/ops/.well-known/openid-configuration"
        );
        assert_eq!(
            b.as_str(),
            "https://kc.example.com/.well-known/oauth-authorization-server/realms/ops"
        );
    }

    fn source() -> Url {
        Url::parse("https://idp.example.com/.well-known/openid-configuration").unwrap()
    }

    #[test]
    fn the_document_must_name_the_issuer_and_https_endpoints() {
        let issuer = Url::parse("https://idp.example.com").unwrap();
        let ok = br#"{"issuer":"https://idp.example.com","registration_endpoint":"https://idp.example.com/reg","token_endpoint":"https://idp.example.com/token"}"#;
        let m = parse(ok, &issuer, source()).unwrap();
        assert_eq!(m.registration_endpoint.unwrap().path(), "/reg");
        let other = br#"{"issuer":"https://evil.example.com"}"#;
        assert!(matches!(
            parse(other, &issuer, source()),
            Err(OidcError::Discovery(_))
        ));
        let http = br#"{"issuer":"https://idp.example.com","token_endpoint":"http://idp.example.com/token"}"#;
        assert!(matches!(
            parse(http, &issuer, source()),
            Err(OidcError::Discovery(_))
        ));
        let m = parse(br#"{"issuer":"https://idp.example.com/"}"#, &issuer, source()).unwrap();
        let config = OidcConfig::new(issuer, super::super::RegistrationAuth::None);
        assert!(matches!(
            endpoints(&config, Some(&m)),
            Err(OidcError::RegistrationEndpointMissing)
        ));
    }
}
