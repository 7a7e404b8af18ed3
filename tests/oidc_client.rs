//! The OIDC dynamic-registration client against a real third-party server:
//! panva/node-oidc-provider 9.x from npm (`sandbox/oidc`, `make oidc-sandbox`), with
//! registration behind an initial access token, RFC 7592 management rotating the
//! registration access token on every update, and the client_credentials grant.

use dcr_operator::idp::oidc::{
    AuthMethod, ClientRequest, ErrorKind, Management, OidcClient, OidcConfig, OidcError, RegisteredClient,
    RegistrationAuth,
};
use dcr_operator::sensitive::SecretString;
use reqwest::header::HeaderName;
use sandbox::oidc::OidcServer;
use url::Url;

const IAT: &str = "iat-7f3c9a-initial-access-token";

async fn server() -> OidcServer {
    OidcServer::start(IAT).await.expect("starting oidc-provider")
}

fn config(server: &OidcServer, auth: RegistrationAuth) -> OidcConfig {
    let mut c = OidcConfig::new(Url::parse(&server.issuer).unwrap(), auth);
    c.extra_ca_pem = Some(server.ca_pem.as_bytes().to_vec());
    c
}

fn bearer(token: &str) -> RegistrationAuth {
    RegistrationAuth::InitialAccessToken(SecretString::new(token))
}

async fn client(server: &OidcServer) -> OidcClient {
    OidcClient::discover(config(server, bearer(IAT)))
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
        software_version: Some("1".into()),
    }
}

fn management(c: &RegisteredClient) -> Management {
    c.management
        .clone()
        .expect("a registration access token and client URI")
}

/// Registers with `method` and proves the returned credentials at the token endpoint.
async fn register_and_prove(method: AuthMethod) {
    let server = server().await;
    let oidc = client(&server).await;
    let registered = oidc.register(&request(method)).await.unwrap();
    let secret = registered.client_secret.clone().expect("a client secret");
    assert_eq!(
        registered.metadata.token_endpoint_auth_method.as_deref(),
        Some(match method {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
        })
    );
    assert_eq!(registered.metadata.grant_types, vec!["client_credentials"]);
    assert_eq!(
        registered.metadata.software_id.as_deref(),
        Some("0d7c1f9e-4b8a-4f0e-9a51-5a3c7d2e1b60")
    );
    let token = oidc
        .token(&registered.client_id, &secret, method, Some("api:read"))
        .await
        .unwrap();
    assert!(!token.token.is_empty());
    assert_eq!(token.token_type, "Bearer");
    assert_eq!(token.scope.as_deref(), Some("api:read"));
    // The same id with a wrong secret is refused: the proof is real.
    let wrong = oidc
        .token(&registered.client_id, &SecretString::new("wrong"), method, None)
        .await
        .unwrap_err();
    assert_eq!(wrong.kind(), ErrorKind::AuthFailed, "{wrong}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_the_registration_and_token_endpoints() {
    let server = server().await;
    let oidc = client(&server).await;
    assert_eq!(
        oidc.endpoints().registration.as_str(),
        format!("{}/reg", server.issuer)
    );
    assert_eq!(
        oidc.endpoints().token.as_str(),
        format!("{}/token", server.issuer)
    );
    let metadata = oidc.metadata().unwrap();
    assert!(metadata
        .source
        .path()
        .ends_with("/.well-known/openid-configuration"));
    assert!(metadata
        .grant_types_supported
        .contains(&"client_credentials".to_string()));

    // Another issuer path has no document at either well-known URL.
    let mut wrong = config(&server, bearer(IAT));
    wrong.issuer = Url::parse(&format!("{}/tenant-b", server.issuer)).unwrap();
    let e = OidcClient::discover(wrong).await.unwrap_err();
    assert!(matches!(e, OidcError::Discovery(_)), "{e}");
    assert!(e.to_string().contains("oauth-authorization-server"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overridden_endpoints_skip_discovery() {
    let server = server().await;
    let mut c = config(&server, bearer(IAT));
    // An issuer with no metadata: only the overrides can make this work.
    c.issuer = Url::parse(&format!("{}/no-discovery-here", server.issuer)).unwrap();
    c.registration_endpoint = Some(Url::parse(&format!("{}/reg", server.issuer)).unwrap());
    c.token_endpoint = Some(Url::parse(&format!("{}/token", server.issuer)).unwrap());
    let oidc = OidcClient::discover(c).await.unwrap();
    assert!(oidc.metadata().is_none());
    let registered = oidc
        .register(&request(AuthMethod::ClientSecretBasic))
        .await
        .unwrap();
    let secret = registered.client_secret.unwrap();
    oidc.token(
        &registered.client_id,
        &secret,
        AuthMethod::ClientSecretBasic,
        None,
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_obtain_a_token_with_client_secret_basic() {
    register_and_prove(AuthMethod::ClientSecretBasic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_obtain_a_token_with_client_secret_post() {
    register_and_prove(AuthMethod::ClientSecretPost).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_update_and_a_rotated_registration_access_token() {
    let server = server().await;
    let oidc = client(&server).await;
    let registered = oidc
        .register(&request(AuthMethod::ClientSecretBasic))
        .await
        .unwrap();
    let first = management(&registered);

    let read = oidc.read(&first).await.unwrap();
    assert_eq!(read.client_id, registered.client_id);
    assert_eq!(read.metadata.scope.as_deref(), Some("api:read"));
    assert!(!read.access_token_rotated, "this server rotates on update only");

    let mut changed = request(AuthMethod::ClientSecretBasic);
    changed.client_name = "orders/billing-api v2".into();
    changed.scope = Some("api:read api:write".into());
    let updated = oidc
        .update(&first, &registered.client_id, &changed)
        .await
        .unwrap();
    assert_eq!(updated.metadata.scope.as_deref(), Some("api:read api:write"));
    assert_eq!(
        updated.metadata.client_name.as_deref(),
        Some("orders/billing-api v2")
    );
    assert!(updated.access_token_rotated);
    let second = management(&updated);
    assert_ne!(second.access_token, first.access_token);

    // The server now holds the change, reachable only with the rotated token.
    let reread = oidc.read(&second).await.unwrap();
    assert_eq!(reread.metadata.scope.as_deref(), Some("api:read api:write"));
    let stale = oidc.read(&first).await.unwrap_err();
    assert!(matches!(stale, OidcError::ClientGone { .. }), "{stale}");

    // The secret survived the update: a token with the new scope.
    let secret = registered.client_secret.unwrap();
    let token = oidc
        .token(
            &registered.client_id,
            &secret,
            AuthMethod::ClientSecretBasic,
            Some("api:write"),
        )
        .await
        .unwrap();
    assert_eq!(token.scope.as_deref(), Some("api:write"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_then_the_management_uri_says_gone() {
    let server = server().await;
    let oidc = client(&server).await;
    let registered = oidc
        .register(&request(AuthMethod::ClientSecretPost))
        .await
        .unwrap();
    let handle = management(&registered);
    oidc.delete(&handle).await.unwrap();

    let gone = oidc.read(&handle).await.unwrap_err();
    assert!(matches!(gone, OidcError::ClientGone { op: "read", .. }), "{gone}");
    assert_eq!(gone.kind(), ErrorKind::NotFound);
    let again = oidc.delete(&handle).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::NotFound, "{again}");
    let secret = registered.client_secret.unwrap();
    let token = oidc
        .token(&registered.client_id, &secret, AuthMethod::ClientSecretPost, None)
        .await
        .unwrap_err();
    assert_eq!(token.kind(), ErrorKind::AuthFailed, "{token}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_initial_access_token_is_refused() {
    let server = server().await;
    let oidc = OidcClient::discover(config(&server, bearer("not-the-initial-access-token")))
        .await
        .unwrap();
    let e = oidc
        .register(&request(AuthMethod::ClientSecretBasic))
        .await
        .unwrap_err();
    assert!(
        matches!(e, OidcError::RegistrationRefused { status: 401, .. }),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::AuthFailed);
    assert_eq!(e.code(), Some((401, "invalid_token")));
    assert!(!e.to_string().contains("not-the-initial-access-token"));

    let open = OidcClient::discover(config(&server, RegistrationAuth::None))
        .await
        .unwrap();
    let e = open
        .register(&request(AuthMethod::ClientSecretBasic))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthFailed, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_scheme_registration_auth() {
    let server = server().await;
    let header = |name: &'static str, scheme: Option<&str>, value: &str| RegistrationAuth::Header {
        name: HeaderName::from_static(name),
        scheme: scheme.map(str::to_string),
        value: SecretString::new(value),
    };
    // Okta's `Authorization: SSWS <token>` and a gateway's `X-API-Key: <key>`.
    for auth in [
        header("authorization", Some("SSWS"), IAT),
        header("x-api-key", None, IAT),
    ] {
        let oidc = OidcClient::discover(config(&server, auth)).await.unwrap();
        let registered = oidc
            .register(&request(AuthMethod::ClientSecretBasic))
            .await
            .unwrap();
        assert!(registered.client_secret.is_some());
    }
    let wrong = OidcClient::discover(config(&server, header("authorization", Some("SSWS"), "nope")))
        .await
        .unwrap();
    let e = wrong
        .register(&request(AuthMethod::ClientSecretBasic))
        .await
        .unwrap_err();
    assert!(matches!(e, OidcError::RegistrationRefused { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_metadata_is_rejected_with_its_code() {
    let server = server().await;
    let oidc = client(&server).await;
    let mut r = request(AuthMethod::ClientSecretBasic);
    r.scope = Some("api:unknown-scope".into());
    let e = oidc.register(&r).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected, "{e}");
    assert_eq!(e.code().map(|(s, _)| s), Some(400), "{e}");
}
