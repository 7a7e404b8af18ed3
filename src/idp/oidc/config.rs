//! What an [`super::OidcClient`] is built from: the issuer, endpoint overrides, how it
//! authenticates to the registration endpoint, TLS trust and timeouts.

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use url::Url;
use zeroize::Zeroizing;

use super::error::OidcError;
use crate::sensitive::SecretString;

/// The most of any response body read; a bigger one is refused unread.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The longest URL accepted from configuration or from a server.
pub const MAX_URL_LEN: usize = 2048;

/// How the operator authenticates to the registration endpoint.
#[derive(Clone, Debug)]
pub enum RegistrationAuth {
    /// Open registration: no credential.
    None,
    /// An RFC 7591 initial access token, sent as `Authorization: Bearer <token>`.
    InitialAccessToken(SecretString),
    /// A header of the caller's choosing: `<name>: [<scheme> ]<value>`, e.g. Okta's
    /// `Authorization: SSWS <api token>` or a gateway's `X-API-Key: <key>`.
    Header {
        name: HeaderName,
        scheme: Option<String>,
        value: SecretString,
    },
}

impl RegistrationAuth {
    /// The header to send, marked sensitive so no HTTP layer logs it.
    pub(crate) fn header(&self) -> Result<Option<(HeaderName, HeaderValue)>, OidcError> {
        // The formatted copy is wiped when dropped, like the SecretString it came from.
        let (name, text) = match self {
            Self::None => return Ok(None),
            Self::InitialAccessToken(t) => (
                reqwest::header::AUTHORIZATION,
                Zeroizing::new(format!("Bearer {}", t.expose())),
            ),
            Self::Header { name, scheme, value } => (
                name.clone(),
                Zeroizing::new(match scheme {
                    Some(s) => format!("{s} {}", value.expose()),
                    None => value.expose().to_string(),
                }),
            ),
        };
        let mut value = HeaderValue::from_str(text.as_str()).map_err(|_| {
            OidcError::Config("the registration credential is not a valid header value".into())
        })?;
        value.set_sensitive(true);
        Ok(Some((name, value)))
    }

    /// The secret itself, to scrub from anything a server answers.
    pub(crate) fn secret(&self) -> Option<&SecretString> {
        match self {
            Self::None => None,
            Self::InitialAccessToken(t) | Self::Header { value: t, .. } => Some(t),
        }
    }
}

/// Settings of one OIDC provider's client.
#[derive(Clone)]
pub struct OidcConfig {
    /// The issuer; discovery documents are looked up under it and must name it exactly.
    pub issuer: Url,
    /// Used instead of the discovered `registration_endpoint`.
    pub registration_endpoint: Option<Url>,
    /// Used instead of the discovered `token_endpoint`.
    pub token_endpoint: Option<Url>,
    pub registration_auth: RegistrationAuth,
    /// PEM CAs trusted besides the web PKI roots (a private CA, a TLS-inspecting proxy).
    pub extra_ca_pem: Option<Vec<u8>>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl OidcConfig {
    pub fn new(issuer: Url, registration_auth: RegistrationAuth) -> Self {
        Self {
            issuer,
            registration_endpoint: None,
            token_endpoint: None,
            registration_auth,
            extra_ca_pem: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }

    /// Refuses what the client must never talk to: non-https URLs, credentials or
    /// fragments in URLs, overlong URLs, unbounded timeouts.
    pub fn validate(&self) -> Result<(), OidcError> {
        check_url("issuer", &self.issuer)?;
        if self.issuer.query().is_some() {
            return Err(OidcError::Config("the issuer must not have a query".into()));
        }
        for (name, url) in [
            ("registrationEndpoint", &self.registration_endpoint),
            ("tokenEndpoint", &self.token_endpoint),
        ] {
            if let Some(url) = url {
                check_url(name, url)?;
            }
        }
        let bounded = |d: Duration| !d.is_zero() && d <= Duration::from_secs(300);
        if !bounded(self.connect_timeout) || !bounded(self.request_timeout) {
            return Err(OidcError::Config("timeouts must be between 0 and 300 s".into()));
        }
        Ok(())
    }

    /// rustls with the web PKI roots plus the extra CAs; no redirects, so a bearer never
    /// follows one to another host.
    pub(crate) fn http_client(&self) -> Result<reqwest::Client, OidcError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(true)
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("dcr-operator/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &self.extra_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| OidcError::Config(format!("extra CA bundle: {e}")))?;
            if certs.is_empty() {
                return Err(OidcError::Config("extra CA bundle: no certificate found".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder
            .build()
            .map_err(|e| OidcError::Config(format!("http client: {e}")))
    }
}

impl fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer.as_str())
            .field(
                "registration_endpoint",
                &self.registration_endpoint.as_ref().map(Url::as_str),
            )
            .field("token_endpoint", &self.token_endpoint.as_ref().map(Url::as_str))
            .field("registration_auth", &self.registration_auth)
            .field(
                "extra_ca_pem",
                &self.extra_ca_pem.as_ref().map(|p| format!("{} bytes", p.len())),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// An https URL without userinfo or fragment, of bounded length (configured or served).
pub(crate) fn check_url(name: &str, url: &Url) -> Result<(), OidcError> {
    let problem = if url.scheme() != "https" {
        Some("must be https")
    } else if url.as_str().len() > MAX_URL_LEN {
        Some("is longer than 2048 characters")
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("must not carry credentials")
    } else if url.fragment().is_some() || url.host_str().is_none() {
        Some("must have a host and no fragment")
    } else {
        None
    };
    match problem {
        Some(p) => Err(OidcError::Config(format!("{name} {p}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn only_plain_https_urls_are_accepted() {
        let ok = OidcConfig::new(url("https://idp.example.com/realms/a"), RegistrationAuth::None);
        assert!(ok.validate().is_ok());
        for bad in [
            "http://idp.example.com",
            "https://user:pw@idp.example.com",
            "https://idp.example.com/#x",
            "https://idp.example.com/?q=1",
        ] {
            let c = OidcConfig::new(url(bad), RegistrationAuth::None);
            assert!(c.validate().is_err(), "{bad}");
        }
        let mut long = ok.clone();
        long.token_endpoint = Some(url(&format!("https://idp.example.com/{}", "a".repeat(2100))));
        assert!(long.validate().is_err());
        let mut slow = ok;
        slow.request_timeout = Duration::from_secs(3600);
        assert!(slow.validate().is_err());
    }

    #[test]
    fn header_schemes_and_redaction() {
        let auth = RegistrationAuth::Header {
            name: HeaderName::from_static("authorization"),
            scheme: Some("SSWS".into()),
            value: SecretString::new("api-token-123"),
        };
        let (name, value) = auth.header().unwrap().unwrap();
        assert_eq!(name, "authorization");
        assert_eq!(value.to_str().unwrap(), "SSWS api-token-123");
        assert!(value.is_sensitive());
        let config = OidcConfig::new(url("https://idp.example.com"), auth);
        assert!(!format!("{config:?}").contains("api-token-123"));
        let bearer = RegistrationAuth::InitialAccessToken(SecretString::new("iat"));
        let (_, value) = bearer.header().unwrap().unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer iat");
        let broken = RegistrationAuth::InitialAccessToken(SecretString::new("a\nb"));
        let e = broken.header().unwrap_err().to_string();
        assert!(!e.contains("a\nb"), "{e}");
    }
}
