//! A generic OpenID Connect dynamic client registration backend: RFC 7591 registration and
//! RFC 7592 management against any server that publishes a `registration_endpoint`
//! (Keycloak, Curity, Okta, Auth0, Ory Hydra, node-oidc-provider, ...).
//!
//! [`OidcClient::discover`] reads the issuer's metadata ([`discovery`]), then offers
//! register, read (GET), full-metadata update (PUT), delete and a client-credentials token
//! proof. Every call has a timeout and reads at most [`config::MAX_BODY_BYTES`] of a body.
//!
//! Secrets (the initial access token or API key, issued client secrets, registration access
//! tokens, access tokens) travel only as [`crate::sensitive::SecretString`]; errors carry
//! status codes, OAuth error codes and scrubbed, truncated descriptions only.
//!
//! Not wired into the Application pipeline yet: the DcrProvider controller uses it to verify
//! an `OIDC` provider (discovery and the registration endpoint).

pub mod client;
pub mod config;
pub mod discovery;
pub mod error;
mod http;
pub mod metadata;
pub mod token;

pub use client::OidcClient;
pub use config::{OidcConfig, RegistrationAuth};
pub use discovery::{Endpoints, ServerMetadata};
pub use error::{ErrorKind, OidcError};
pub use metadata::{AuthMethod, ClientRequest, Management, RegisteredClient};
pub use token::AccessToken;
