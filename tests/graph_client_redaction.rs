//! A whole client session against the emulator, logged at TRACE level (every crate: the
//! client, reqwest, hyper, rustls and the emulator itself) into a buffer, must not contain
//! the operator's client secret, an issued password, a wrong secret or any access token.
//!
//! Its own test binary, because it installs the global tracing subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dcr_operator::idp::azure::{
    AddPasswordRequest, ApplicationPatch, ClientCredential, Freshness, GraphClient, GraphClientConfig,
};
use dcr_operator::sensitive::SecretString;
use sandbox::graph::{EmulatorConfig, FaultConfig, GraphEmulator, GraphPermission};
use url::Url;

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

fn config(emu: &GraphEmulator, tenant: &str, client_id: &str, secret: &str) -> GraphClientConfig {
    let mut c = GraphClientConfig::new(
        tenant,
        client_id,
        ClientCredential::Secret(SecretString::new(secret)),
    );
    c.authority_host = Some(Url::parse(&emu.authority_host()).unwrap());
    c.graph_endpoint = Some(Url::parse(&emu.graph_endpoint()).unwrap());
    c.extra_ca_pem = Some(emu.ca_pem().as_bytes().to_vec());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_level_log_of_a_whole_session_holds_no_secret_or_token() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let (emu, admin) = GraphEmulator::start_with_admin(
        EmulatorConfig::default().with_replication_lag(Duration::from_millis(1500)),
        GraphPermission::ApplicationReadWriteOwnedBy,
    )
    .await
    .unwrap();
    let cfg = config(&emu, &admin.tenant_id, &admin.client_id, &admin.client_secret);
    tracing::info!(config = ?cfg, "graph client configuration");
    let client = GraphClient::new(cfg).unwrap();
    tracing::info!(client = ?client, "graph client");

    let me = client.own_service_principal().await.unwrap();
    let app = client
        .ensure_application(
            "redaction-1",
            &ApplicationPatch {
                display_name: Some("ns1-redaction".into()),
                sign_in_audience: Some("AzureADMyOrg".into()),
                owners_bind: Some(vec![client.directory_object_url(&me.id)]),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .application;
    let app_id = app.app_id.clone().unwrap();

    // Replication retries, then a password and its SP.
    let first = client
        .add_password(&app.id, &AddPasswordRequest::default(), Freshness::JustCreated)
        .await
        .unwrap();
    tracing::info!(password = ?first, "issued");
    client
        .create_service_principal(&app_id, &[], Freshness::JustCreated)
        .await
        .unwrap();

    // Rotation: a second password, verified at the token endpoint (retrying while it
    // replicates), then the first one revoked.
    let second = client
        .add_password(&app.id, &AddPasswordRequest::default(), Freshness::Settled)
        .await
        .unwrap();
    let mut verified = false;
    for _ in 0..40 {
        match client.verify_client_secret(&app_id, &second.secret_text).await {
            Ok(()) => {
                verified = true;
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, debug = ?e, "new secret not active yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(verified, "the new secret never worked");
    client.remove_password(&app.id, &first.key_id).await.unwrap();

    // A token Graph rejects, throttling, a 503, a dropped connection.
    emu.expire_tokens();
    client.get_application(&app.id, Freshness::Settled).await.unwrap();
    emu.set_faults(FaultConfig::throttle_next(1, Duration::from_millis(100)));
    client.get_application(&app.id, Freshness::Settled).await.unwrap();
    emu.set_faults(FaultConfig::error_next(1));
    client.get_application(&app.id, Freshness::Settled).await.unwrap();
    emu.set_faults(FaultConfig::drop_next(1));
    client.get_application(&app.id, Freshness::Settled).await.unwrap();
    emu.set_faults(FaultConfig::none());

    // Wrong and old secrets, logged the way a controller would log them.
    let wrong = "wrong-secret-0123456789abcdef";
    let bad = GraphClient::new(config(&emu, &admin.tenant_id, &admin.client_id, wrong)).unwrap();
    let e = bad
        .get_application(&app.id, Freshness::Settled)
        .await
        .unwrap_err();
    tracing::error!(error = %e, debug = ?e, reason = e.reason(), "graph call failed");
    let e = client
        .verify_client_secret(&app_id, &first.secret_text)
        .await
        .unwrap_err();
    tracing::error!(error = %e, debug = ?e, "revoked secret rejected");

    emu.shutdown().await;

    let log = String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned();
    assert!(log.contains("graph.request"), "the client logged its calls");
    assert!(log.contains("request_id="), "request ids are logged");
    assert!(
        log.contains("client_request_id="),
        "client request ids are logged"
    );
    assert!(log.contains("application.addPassword"));
    for (what, secret) in [
        ("operator client secret", admin.client_secret.as_str()),
        ("first issued password", first.secret_text.expose()),
        ("second issued password", second.secret_text.expose()),
        ("wrong secret", wrong),
    ] {
        assert!(
            !log.contains(secret),
            "the {what} appears in the log ({} bytes captured)",
            log.len()
        );
    }
    // Access tokens are JWTs: base64url of `{"` starts with `eyJ`.
    let leaks: Vec<&str> = log.lines().filter(|l| l.contains("eyJ")).collect();
    assert!(
        leaks.is_empty(),
        "access tokens in the log:\n{}",
        leaks.join("\n")
    );
    assert!(!log.contains("Bearer ey"));
    assert!(log.len() > 10_000, "a TRACE log of the run was captured");
}
