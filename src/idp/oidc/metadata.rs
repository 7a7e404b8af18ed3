//! RFC 7591 client metadata: the typed request the operator builds, and the client
//! information response it reads back (register, RFC 7592 read and update).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use url::Url;

use super::config::check_url;
use super::error::OidcError;
use super::http;
use crate::sensitive::SecretString;

const MAX_NAME: usize = 256;
const MAX_GRANTS: usize = 8;
const MAX_REDIRECT_URIS: usize = 32;
const MAX_SCOPE: usize = 1024;
const MAX_CLIENT_ID: usize = 512;
const MAX_SECRET: usize = 8192;

/// How the client authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// HTTP Basic with the form-encoded id and secret (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// What the operator asks for. `client_credentials` is always the first grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    pub client_name: String,
    /// Grants besides `client_credentials`, e.g. `authorization_code` with redirect URIs.
    pub extra_grant_types: Vec<String>,
    pub token_endpoint_auth_method: AuthMethod,
    pub redirect_uris: Vec<String>,
    /// Space-separated scopes.
    pub scope: Option<String>,
    /// A stable id of what registers (the Application's uid); constant across updates.
    pub software_id: String,
    pub software_version: Option<String>,
}

impl ClientRequest {
    /// `client_credentials` first, then the extra grants, without repeats.
    pub fn grant_types(&self) -> Vec<&str> {
        let mut grants = vec!["client_credentials"];
        for g in &self.extra_grant_types {
            if !grants.contains(&g.as_str()) {
                grants.push(g);
            }
        }
        grants
    }

    /// Bounds on every field, before anything is sent.
    pub fn validate(&self) -> Result<(), OidcError> {
        let bad = |m: &str| Err(OidcError::Config(m.to_string()));
        let printable =
            |s: &str, max: usize| !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control);
        if !printable(&self.client_name, MAX_NAME) || !printable(&self.software_id, MAX_NAME) {
            return bad("client_name and software_id must be 1-256 printable characters");
        }
        if self
            .software_version
            .as_deref()
            .is_some_and(|v| !printable(v, 64))
        {
            return bad("software_version must be 1-64 printable characters");
        }
        let token = |s: &String| printable(s, 64) && !s.contains(' ');
        if self.extra_grant_types.len() >= MAX_GRANTS || !self.extra_grant_types.iter().all(token) {
            return bad("at most 7 extra grant types, each a token of up to 64 characters");
        }
        if self.scope.as_deref().is_some_and(|s| !printable(s, MAX_SCOPE)) {
            return bad("scope must be 1-1024 printable characters");
        }
        if self.redirect_uris.len() > MAX_REDIRECT_URIS {
            return bad("at most 32 redirect URIs");
        }
        for uri in &self.redirect_uris {
            let parsed = Url::parse(uri).map_err(|e| OidcError::Config(format!("redirect URI: {e}")))?;
            if uri.len() > 2048 || parsed.fragment().is_some() {
                return bad("redirect URIs must be at most 2048 characters, without a fragment");
            }
        }
        Ok(())
    }

    /// The JSON body: the full metadata (RFC 7592 updates replace, so every field is sent),
    /// with `client_id` for an update. Response types follow the grants: none unless
    /// `authorization_code` is asked for, so a machine client is valid without redirects.
    pub fn to_json(&self, client_id: Option<&str>) -> Value {
        let grants = self.grant_types();
        let response_types: Vec<&str> = if grants.contains(&"authorization_code") {
            vec!["code"]
        } else {
            vec![]
        };
        let mut body = json!({
            "client_name": self.client_name,
            "grant_types": grants,
            "response_types": response_types,
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "redirect_uris": self.redirect_uris,
            "software_id": self.software_id,
        });
        let extra = [
            ("scope", self.scope.as_deref()),
            ("software_version", self.software_version.as_deref()),
            ("client_id", client_id),
        ];
        if let Some(map) = body.as_object_mut() {
            for (key, value) in extra {
                if let Some(v) = value {
                    map.insert(key.into(), Value::String(v.into()));
                }
            }
        }
        body
    }
}

/// Where and with what an RFC 7592 client is managed. Both belong in an operator-owned
/// Secret, never in status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Management {
    pub client_uri: Url,
    pub access_token: SecretString,
}

/// The metadata the server holds (as echoed back), for drift checks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ClientMetadata {
    #[serde(default)]
    pub client_name: Option<String>,
    #[serde(default)]
    pub grant_types: Vec<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    pub software_id: Option<String>,
    #[serde(default)]
    pub software_version: Option<String>,
}

/// A client information response.
#[derive(Clone, Debug)]
pub struct RegisteredClient {
    pub client_id: String,
    /// Absent when the server keeps the existing secret and does not echo it.
    pub client_secret: Option<SecretString>,
    /// Seconds since the epoch; 0 or absent: does not expire.
    pub client_secret_expires_at: Option<i64>,
    /// The management handle to use from now on: the response's, or the previous one
    /// when the response carries none.
    pub management: Option<Management>,
    /// Whether the response carried a registration access token other than the one used.
    pub access_token_rotated: bool,
    pub metadata: ClientMetadata,
}

#[derive(Deserialize)]
struct Wire {
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_secret_expires_at: Option<i64>,
    #[serde(default)]
    registration_access_token: Option<String>,
    #[serde(default)]
    registration_client_uri: Option<String>,
    #[serde(flatten)]
    metadata: ClientMetadata,
}

impl RegisteredClient {
    /// Parses a response; `previous` is the handle the request used (none for register).
    pub(crate) fn parse(
        op: &'static str,
        body: &[u8],
        previous: Option<&Management>,
    ) -> Result<Self, OidcError> {
        let wire: Wire = serde_json::from_slice(body)
            .map_err(|e| http::parse_error(op, "a client information response", &e))?;
        let invalid = |message: &str| OidcError::InvalidResponse {
            op,
            message: message.to_string(),
        };
        if wire.client_id.is_empty()
            || wire.client_id.len() > MAX_CLIENT_ID
            || wire.client_id.chars().any(char::is_control)
        {
            return Err(invalid("client_id is empty, too long or not printable"));
        }
        let secret = |v: Option<String>| -> Result<Option<SecretString>, OidcError> {
            match v.map(SecretString::new) {
                Some(s) if s.is_empty() || s.expose().len() > MAX_SECRET => {
                    Err(invalid("a secret or token is empty or longer than 8192 bytes"))
                }
                other => Ok(other),
            }
        };
        let client_secret = secret(wire.client_secret)?;
        let token = secret(wire.registration_access_token)?;
        let uri = match wire.registration_client_uri {
            Some(u) => {
                let url = Url::parse(&u).map_err(|_| invalid("registration_client_uri is not a URL"))?;
                check_url("registration_client_uri", &url).map_err(|e| invalid(&e.to_string()))?;
                Some(url)
            }
            None => None,
        };
        let access_token_rotated = match (&token, previous) {
            (Some(new), Some(old)) => *new != old.access_token,
            _ => false,
        };
        let management = match (uri, token, previous) {
            (Some(client_uri), Some(access_token), _) => Some(Management {
                client_uri,
                access_token,
            }),
            (uri, token, Some(old)) => Some(Management {
                client_uri: uri.unwrap_or_else(|| old.client_uri.clone()),
                access_token: token.unwrap_or_else(|| old.access_token.clone()),
            }),
            (_, _, None) => None,
        };
        Ok(Self {
            client_id: wire.client_id,
            client_secret,
            client_secret_expires_at: wire.client_secret_expires_at,
            management,
            access_token_rotated,
            metadata: wire.metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ClientRequest {
        ClientRequest {
            client_name: "orders/billing".into(),
            extra_grant_types: vec!["client_credentials".into(), "authorization_code".into()],
            token_endpoint_auth_method: AuthMethod::ClientSecretPost,
            redirect_uris: vec!["https://app.example.com/cb".into()],
            scope: Some("api:read api:write".into()),
            software_id: "9b2c".into(),
            software_version: None,
        }
    }

    #[test]
    fn client_credentials_comes_first_once_and_response_types_follow() {
        let r = request();
        assert!(r.validate().is_ok());
        let body = r.to_json(Some("abc"));
        assert_eq!(
            body["grant_types"],
            json!(["client_credentials", "authorization_code"])
        );
        assert_eq!(body["response_types"], json!(["code"]));
        assert_eq!(body["token_endpoint_auth_method"], "client_secret_post");
        assert_eq!(body["client_id"], "abc");
        let machine = ClientRequest {
            extra_grant_types: vec![],
            redirect_uris: vec![],
            ..r
        };
        let body = machine.to_json(None);
        assert_eq!(body["response_types"], json!([]));
        assert!(body.get("client_id").is_none());
    }

    #[test]
    fn hostile_requests_are_refused() {
        let mut r = request();
        r.client_name = "a\u{0}b".into();
        assert!(r.validate().is_err());
        let mut r = request();
        r.redirect_uris = vec!["https://a.example.com/cb".into(); 33];
        assert!(r.validate().is_err());
        let mut r = request();
        r.extra_grant_types = vec!["has space".into()];
        assert!(r.validate().is_err());
    }

    #[test]
    fn a_rotated_token_replaces_the_old_one_and_an_absent_one_keeps_it() {
        let old = Management {
            client_uri: Url::parse("https://idp.example.com/reg/c1").unwrap(),
            access_token: SecretString::new("rat-1"),
        };
        let rotated = br#"{"client_id":"c1","registration_access_token":"rat-2","registration_client_uri":"https://idp.example.com/reg/c1"}"#;
        let c = RegisteredClient::parse("update", rotated, Some(&old)).unwrap();
        assert!(c.access_token_rotated);
        assert_eq!(c.management.unwrap().access_token.expose(), "rat-2");
        let c = RegisteredClient::parse("read", br#"{"client_id":"c1"}"#, Some(&old)).unwrap();
        assert!(!c.access_token_rotated);
        assert_eq!(c.management.unwrap(), old);
    }

    #[test]
    fn responses_are_bounded_and_never_quoted() {
        let e = RegisteredClient::parse("register", br#"{"client_id":""}"#, None).unwrap_err();
        assert!(matches!(e, OidcError::InvalidResponse { .. }));
        let e = RegisteredClient::parse("register", br#"{"client_id":"c","client_secret":987654}"#, None)
            .unwrap_err();
        assert!(!e.to_string().contains("987654"), "{e}");
        let plain = br#"{"client_id":"c","registration_access_token":"t","registration_client_uri":"http://idp.example.com/reg/c"}"#;
        assert!(RegisteredClient::parse("register", plain, None).is_err());
        let debug = format!(
            "{:?}",
            RegisteredClient::parse(
                "register",
                br#"{"client_id":"c","client_secret":"cs-value","registration_access_token":"rat-value","registration_client_uri":"https://i.example.com/r/c"}"#,
                None
            )
            .unwrap()
        );
        assert!(
            !debug.contains("cs-value") && !debug.contains("rat-value"),
            "{debug}"
        );
    }
}
