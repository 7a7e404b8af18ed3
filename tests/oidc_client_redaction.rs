//! A whole OIDC client session against node-oidc-provider, logged at TRACE level (the
//! client's spans with their fields, reqwest, hyper, rustls) into a buffer: the log, and the
//! Debug and Display of every value and error the session produced, carry none of the
//! secrets involved.
//!
//! Its own test binary, because it installs the global tracing subscriber (a thread-local
//! one loses events to callsite interest cached by other test threads).

use std::io::Write;
use std::sync::{Arc, Mutex};

use dcr_operator::idp::oidc::{
    AuthMethod, ClientRequest, Management, OidcClient, OidcConfig, RegisteredClient, RegistrationAuth,
};
use dcr_operator::sensitive::SecretString;
use sandbox::oidc::OidcServer;
use tracing_subscriber::fmt::format::FmtSpan;
use url::Url;

const IAT: &str = "iat-0b41e2-initial-access-token";

async fn server() -> OidcServer {
    OidcServer::start(IAT).await.expect("starting oidc-provider")
}

fn config(server: &OidcServer, token: &str) -> OidcConfig {
    let auth = RegistrationAuth::InitialAccessToken(SecretString::new(token));
    let mut c = OidcConfig::new(Url::parse(&server.issuer).unwrap(), auth);
    c.extra_ca_pem = Some(server.ca_pem.as_bytes().to_vec());
    c
}

async fn client(server: &OidcServer) -> OidcClient {
    OidcClient::discover(config(server, IAT))
        .await
        .expect("discovery")
}

fn request(method: AuthMethod) -> ClientRequest {
    ClientRequest {
        client_name: "orders/billing-api".into(),
        extra_grant_types: vec![],
        token_endpoint_auth_method: method,
        redirect_uris: vec![],
        scope: Some("api:read".into()),
        software_id: "0d7c1f9e-4b8a-4f0e-9a51-5a3c7d2e1b60".into(),
        software_version: None,
    }
}

fn management(c: &RegisteredClient) -> Management {
    c.management
        .clone()
        .expect("a registration access token and client URI")
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A whole session logged at TRACE (client, reqwest, hyper, rustls), and the Debug and
/// Display of every value and error it produced, carry none of the secrets involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_debug_or_errors() {
    let buffer = Buffer::default();
    let sink = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_span_events(FmtSpan::CLOSE)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let server = server().await;
    let oidc = client(&server).await;
    let mut printed = vec![format!("{oidc:?}")];
    let registered = oidc
        .register(&request(AuthMethod::ClientSecretBasic))
        .await
        .unwrap();
    let first = management(&registered);
    let secret = registered.client_secret.clone().unwrap();
    let token = oidc
        .token(
            &registered.client_id,
            &secret,
            AuthMethod::ClientSecretBasic,
            None,
        )
        .await
        .unwrap();
    let updated = oidc
        .update(
            &first,
            &registered.client_id,
            &request(AuthMethod::ClientSecretBasic),
        )
        .await
        .unwrap();
    let second = management(&updated);
    let stale = oidc.read(&first).await.unwrap_err();
    let wrong_secret = oidc
        .token(
            &registered.client_id,
            &SecretString::new("wrong-secret-value"),
            AuthMethod::ClientSecretPost,
            None,
        )
        .await
        .unwrap_err();
    let refused = OidcClient::discover(config(&server, "bad-initial-token-value"))
        .await
        .unwrap()
        .register(&request(AuthMethod::ClientSecretBasic))
        .await
        .unwrap_err();
    oidc.delete(&second).await.unwrap();
    printed.extend([
        format!("{registered:?}"),
        format!("{updated:?}"),
        format!("{token:?}"),
        format!("{stale:?} {stale}"),
        format!("{wrong_secret:?} {wrong_secret}"),
        format!("{refused:?} {refused}"),
    ]);

    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    for span in [
        "oidc.discover",
        "oidc.register",
        "oidc.update",
        "oidc.read",
        "oidc.token",
        "oidc.delete",
    ] {
        assert!(log.contains(span), "{span} was logged");
    }
    assert!(log.contains(&registered.client_id), "span fields were logged");
    let secrets = [
        IAT,
        secret.expose(),
        first.access_token.expose(),
        second.access_token.expose(),
        token.token.expose(),
        "wrong-secret-value",
        "bad-initial-token-value",
    ];
    for s in secrets {
        assert!(!log.contains(s), "a secret reached the log");
        for p in &printed {
            assert!(!p.contains(s), "a secret reached {p}");
        }
    }
}
