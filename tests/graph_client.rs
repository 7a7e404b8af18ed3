//! The operator's Graph client against the Graph emulator, over https with the emulator's test
//! CA, configured exactly as a user would configure it for a proxy or a national cloud:
//! authority host, Graph endpoint and an extra CA bundle.
//!
//! The emulator (`sandbox::graph`) is written from the same contract by someone else and
//! shares no types with the client; these tests use it only through its public API and
//! inspect its request log to check what went over the wire.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dcr_operator::idp::azure::client::is_duplicate_reference;
use dcr_operator::idp::azure::{
    AddPasswordRequest, ApplicationPatch, ClientCredential, DeltaCursor, DeltaItem, Freshness, GraphClient,
    GraphClientConfig, GraphError, GraphObserver, InventoryConfig, RateLimit, RemovedReason, TokenError,
    UpsertOutcome, WebApplication,
};
use dcr_operator::sensitive::SecretString;
use sandbox::graph::{
    AdminApp, EmulatorConfig, FaultConfig, GraphEmulator, GraphPermission, RequestRecord, TestIssuer,
};
use url::Url;

async fn start(cfg: EmulatorConfig) -> (GraphEmulator, AdminApp) {
    GraphEmulator::start_with_admin(cfg, GraphPermission::ApplicationReadWriteOwnedBy)
        .await
        .expect("emulator starts")
}

fn config_for(emu: &GraphEmulator, tenant: &str, client_id: &str, secret: &str) -> GraphClientConfig {
    let mut c = GraphClientConfig::new(
        tenant,
        client_id,
        ClientCredential::Secret(SecretString::new(secret)),
    );
    c.authority_host = Some(Url::parse(&emu.authority_host()).unwrap());
    c.graph_endpoint = Some(Url::parse(&emu.graph_endpoint()).unwrap());
    c.extra_ca_pem = Some(emu.ca_pem().as_bytes().to_vec());
    // Tests run many calls back to back; the default 10/s would only slow them down.
    c.budget.requests = Some(RateLimit {
        qps: 200.0,
        burst: 200,
    });
    c
}

fn client_for(emu: &GraphEmulator, admin: &AdminApp) -> GraphClient {
    GraphClient::new(config_for(
        emu,
        &admin.tenant_id,
        &admin.client_id,
        &admin.client_secret,
    ))
    .expect("client builds")
}

/// The fields the operator sends for one Kubernetes Application.
fn desired(client: &GraphClient, name: &str, owner_sp: &str) -> ApplicationPatch {
    ApplicationPatch {
        display_name: Some(format!("ns1-{name}")),
        description: Some("managed by dcr-operator".into()),
        tags: Some(vec![
            "dcr-operator".into(),
            "dcr-operator.io/namespace:ns1".into(),
            format!("dcr-operator.io/name:{name}"),
        ]),
        sign_in_audience: Some("AzureADMyOrg".into()),
        web: Some(WebApplication {
            redirect_uris: vec!["https://app.example.com/cb".into()],
        }),
        owners_bind: Some(vec![client.directory_object_url(owner_sp)]),
        ..Default::default()
    }
}

fn graph_records(emu: &GraphEmulator, app_id: &str) -> Vec<RequestRecord> {
    emu.requests()
        .into_iter()
        .filter(|r| !r.operation.starts_with("token") && r.app_id.as_deref() == Some(app_id))
        .collect()
}

fn count(emu: &GraphEmulator, op: &str, status: u16) -> u64 {
    emu.request_counts()
        .get(op)
        .and_then(|c| c.by_status.get(&status.to_string()).copied())
        .unwrap_or(0)
}

fn total(emu: &GraphEmulator, op: &str) -> u64 {
    emu.request_counts().get(op).map(|c| c.total).unwrap_or(0)
}

#[tokio::test]
async fn every_operation_happy_path() {
    let (emu, admin) = start(EmulatorConfig::default()).await;
    let client = client_for(&emu, &admin);

    client
        .verify_credentials()
        .await
        .expect("operator credentials work");
    let me = client.own_service_principal().await.expect("own SP");
    assert_eq!(me.id, admin.sp_id);
    assert_eq!(me.app_id.as_deref(), Some(admin.client_id.as_str()));

    // Upsert: 201 with the object, then 204 without a body.
    let unique = "c1-0d3f6a1e-0000-4000-8000-000000000001";
    let want = desired(&client, "web", &me.id);
    let created = match client.upsert_application(unique, &want).await.unwrap() {
        UpsertOutcome::Created(app) => *app,
        other => panic!("expected Created, got {other:?}"),
    };
    assert_eq!(created.unique_name.as_deref(), Some(unique));
    assert_eq!(created.display_name.as_deref(), Some("ns1-web"));
    assert_eq!(created.sign_in_audience.as_deref(), Some("AzureADMyOrg"));
    let app_id = created.app_id.clone().expect("appId");
    // Owners are bound on create only: Graph rejects a duplicate reference.
    match client.upsert_application(unique, &want).await {
        Err(GraphError::BadRequest(info)) => assert!(is_duplicate_reference(&info), "{info}"),
        other => panic!("expected the duplicate-reference 400, got {other:?}"),
    }
    let want = ApplicationPatch {
        owners_bind: None,
        ..want
    };
    assert_eq!(
        client.upsert_application(unique, &want).await.unwrap(),
        UpsertOutcome::Updated
    );
    assert_eq!(
        client.list_application_owner_ids(&created.id).await.unwrap(),
        vec![me.id.clone()]
    );
    // Application.ReadWrite.OwnedBy may not add owners, not even itself again.
    assert!(matches!(
        client.add_application_owner(&created.id, &me.id).await,
        Err(GraphError::Forbidden(_))
    ));
    let ensured = client.ensure_application(unique, &want).await.unwrap();
    assert!(!ensured.created);
    assert_eq!(ensured.application.id, created.id);

    // Reads by object id, uniqueName and appId.
    for app in [
        client
            .get_application(&created.id, Freshness::Settled)
            .await
            .unwrap(),
        client
            .get_application_by_unique_name(unique, Freshness::Settled)
            .await
            .unwrap(),
        client
            .get_application_by_app_id(&app_id, Freshness::Settled)
            .await
            .unwrap(),
    ] {
        assert_eq!(app.id, created.id);
        assert_eq!(app.tags(), want.tags.as_deref().unwrap());
        assert_eq!(
            app.web.as_ref().unwrap().redirect_uris,
            vec!["https://app.example.com/cb".to_string()]
        );
    }

    // PATCH changes only what is given.
    client
        .update_application(
            &created.id,
            &ApplicationPatch {
                description: Some("changed".into()),
                ..Default::default()
            },
            Freshness::Settled,
        )
        .await
        .unwrap();
    let app = client
        .get_application(&created.id, Freshness::Settled)
        .await
        .unwrap();
    assert_eq!(app.description.as_deref(), Some("changed"));
    assert_eq!(app.display_name.as_deref(), Some("ns1-web"));

    // Service principal: create, duplicate create returns the same one, read back.
    let sp = client
        .create_service_principal(&app_id, &[], Freshness::Settled)
        .await
        .unwrap();
    assert_eq!(sp.app_id.as_deref(), Some(app_id.as_str()));
    let again = client
        .create_service_principal(&app_id, &[], Freshness::Settled)
        .await
        .unwrap();
    assert_eq!(again.id, sp.id);
    assert_eq!(count(&emu, "servicePrincipal.create", 409), 1);
    assert_eq!(
        client
            .get_service_principal_by_app_id(&app_id, Freshness::Settled)
            .await
            .unwrap()
            .id,
        sp.id
    );
    assert_eq!(
        client
            .get_service_principal(&sp.id, Freshness::Settled)
            .await
            .unwrap()
            .app_id,
        sp.app_id
    );

    // Passwords: issue one, it works at the token endpoint, it is listed without its value,
    // it can be removed.
    let end = chrono::Utc::now() + chrono::Duration::days(30);
    let pw = client
        .add_password(
            &created.id,
            &AddPasswordRequest {
                display_name: Some("k8s ns1/web".into()),
                end_date_time: Some(end),
                ..Default::default()
            },
            Freshness::Settled,
        )
        .await
        .unwrap();
    assert!(pw.secret_text.expose().len() >= 16);
    assert_eq!(pw.hint.as_deref(), Some(&pw.secret_text.expose()[..3]));
    assert_eq!(pw.display_name.as_deref(), Some("k8s ns1/web"));
    client
        .verify_client_secret(&app_id, &pw.secret_text)
        .await
        .expect("the new secret obtains a token");
    let listed = client
        .get_application(&created.id, Freshness::Settled)
        .await
        .unwrap();
    let listed_pw = listed
        .passwords()
        .iter()
        .find(|p| p.key_id == pw.key_id)
        .expect("password listed");
    assert_eq!(listed_pw.hint, pw.hint);
    assert_eq!(
        listed_pw.end_date_time.map(|t| t.timestamp()),
        Some(end.timestamp())
    );
    client.remove_password(&created.id, &pw.key_id).await.unwrap();
    let listed = client
        .get_application(&created.id, Freshness::Settled)
        .await
        .unwrap();
    assert!(listed.passwords().iter().all(|p| p.key_id != pw.key_id));
    let err = client
        .verify_client_secret(&app_id, &pw.secret_text)
        .await
        .expect_err("a removed secret no longer works");
    assert_eq!(err.reason(), "InvalidClientSecret");

    // Deleting the SP is idempotent.
    assert!(client.delete_service_principal(&sp.id).await.unwrap());
    assert!(!client.delete_service_principal(&sp.id).await.unwrap());

    // Soft delete, the uniqueName stays reserved, restore, delete, purge, reuse.
    assert!(client.delete_application(&created.id).await.unwrap());
    assert!(!client.delete_application(&created.id).await.unwrap());
    let deleted = client.get_deleted_application(&created.id).await.unwrap();
    assert!(deleted.deleted_date_time.is_some());
    let err = client
        .upsert_application(unique, &want)
        .await
        .expect_err("a soft-deleted app keeps its uniqueName");
    assert_eq!(err.reason(), "BadRequest", "{err}");
    let restored = client.restore_deleted_application(&created.id).await.unwrap();
    assert_eq!(restored.id, created.id);
    client
        .get_application(&created.id, Freshness::Settled)
        .await
        .unwrap();
    assert!(client.delete_application(&created.id).await.unwrap());
    assert!(client.permanently_delete_application(&created.id).await.unwrap());
    assert!(!client.permanently_delete_application(&created.id).await.unwrap());
    assert!(client
        .get_deleted_application(&created.id)
        .await
        .unwrap_err()
        .is_not_found());
    match client.upsert_application(unique, &want).await.unwrap() {
        UpsertOutcome::Created(app) => assert_ne!(app.id, created.id),
        other => panic!("expected Created after the purge, got {other:?}"),
    }

    // Every request carried a fresh client-request-id.
    let records = graph_records(&emu, &admin.client_id);
    let ids: HashSet<_> = records
        .iter()
        .filter_map(|r| r.client_request_id.clone())
        .collect();
    assert_eq!(
        ids.len(),
        records.len(),
        "one fresh client-request-id per request"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn list_by_tag_follows_next_links() {
    let (emu, admin) = start(EmulatorConfig::default()).await;
    let client = client_for(&emu, &admin);
    let me = client.own_service_principal().await.unwrap();
    let mut ids = HashSet::new();
    for i in 0..5 {
        let mut want = desired(&client, &format!("app{i}"), &me.id);
        want.tags = Some(vec!["cluster:blue".into(), format!("n:{i}")]);
        let app = client
            .ensure_application(&format!("blue-{i}"), &want)
            .await
            .unwrap();
        ids.insert(app.application.id);
    }
    let mut other = desired(&client, "other", &me.id);
    other.tags = Some(vec!["cluster:green".into()]);
    client.ensure_application("green-0", &other).await.unwrap();

    emu.clear_requests();
    let listed = client
        .list_applications_by_tag_paged("cluster:blue", 2)
        .await
        .unwrap();
    let listed_ids: HashSet<_> = listed.iter().map(|a| a.id.clone()).collect();
    assert_eq!(listed_ids, ids);
    assert_eq!(total(&emu, "application.list"), 3, "pages of 2, 2 and 1");

    let all = client.list_applications_by_tag("cluster:blue").await.unwrap();
    assert_eq!(all.len(), 5);
    emu.shutdown().await;
}

#[tokio::test]
async fn delta_rounds_report_changes_and_removals() {
    let (emu, admin) = start(EmulatorConfig::default()).await;
    let client = client_for(&emu, &admin);
    let me = client.own_service_principal().await.unwrap();
    let a = client
        .ensure_application("delta-a", &desired(&client, "a", &me.id))
        .await
        .unwrap()
        .application;
    let b = client
        .ensure_application("delta-b", &desired(&client, "b", &me.id))
        .await
        .unwrap()
        .application;

    let first = client
        .applications_delta(DeltaCursor::Initial {
            select: vec!["displayName".into(), "tags".into()],
        })
        .await
        .unwrap();
    let seen: HashSet<_> = first
        .items
        .iter()
        .filter_map(|i| match i {
            DeltaItem::Changed(app) => Some(app.id.clone()),
            _ => None,
        })
        .collect();
    assert!(seen.contains(&a.id) && seen.contains(&b.id), "{seen:?}");

    client
        .update_application(
            &a.id,
            &ApplicationPatch {
                display_name: Some("ns1-a-renamed".into()),
                ..Default::default()
            },
            Freshness::Settled,
        )
        .await
        .unwrap();
    client.delete_application(&b.id).await.unwrap();

    let second = client
        .applications_delta(DeltaCursor::Link(first.delta_link.clone()))
        .await
        .unwrap();
    assert!(
        second.items.iter().any(|i| matches!(i,
            DeltaItem::Changed(app) if app.id == a.id && app.display_name.as_deref() == Some("ns1-a-renamed"))),
        "{:?}",
        second.items
    );
    assert!(
        second.items.iter().any(|i| matches!(i,
            DeltaItem::Removed { id, reason: RemovedReason::Changed } if *id == b.id)),
        "{:?}",
        second.items
    );

    client.permanently_delete_application(&b.id).await.unwrap();
    let third = client
        .applications_delta(DeltaCursor::Link(second.delta_link.clone()))
        .await
        .unwrap();
    assert!(
        third.items.iter().any(|i| matches!(i,
            DeltaItem::Removed { id, reason: RemovedReason::Deleted } if *id == b.id)),
        "{:?}",
        third.items
    );

    let latest = client.applications_delta(DeltaCursor::Latest).await.unwrap();
    assert!(latest.items.is_empty());
    emu.shutdown().await;
}

/// Contract §2.2: wait `Retry-After` (fractional seconds) before the next request. Measured on
/// the emulator's own arrival timestamps.
#[tokio::test]
async fn throttling_storm_is_honoured() {
    let (emu, admin) = start(EmulatorConfig::default()).await;
    let client = client_for(&emu, &admin);
    let me = client.own_service_principal().await.unwrap();
    let mut apps = Vec::new();
    for i in 0..4 {
        apps.push(
            client
                .ensure_application(&format!("storm-{i}"), &desired(&client, &format!("s{i}"), &me.id))
                .await
                .unwrap()
                .application,
        );
    }
    emu.clear_requests();
    let retry_after = Duration::from_millis(1000);
    emu.set_faults(FaultConfig::throttle_next(6, retry_after));

    // Four concurrent reads, each on its own path.
    let started = Instant::now();
    let results = futures::future::join_all(
        apps.iter()
            .map(|a| client.get_application(&a.id, Freshness::Settled)),
    )
    .await;
    for r in results {
        r.expect("throttled reads succeed once Graph lets them through");
    }
    assert!(started.elapsed() >= retry_after);

    let log = graph_records(&emu, &admin.client_id);
    let throttled: Vec<_> = log.iter().filter(|r| r.status == 429).collect();
    assert_eq!(throttled.len(), 6, "{log:#?}");
    for t in &throttled {
        let ra = t.retry_after.expect("429 carries Retry-After");
        assert!((ra - 1.0).abs() < 1e-6, "Retry-After {ra}");
        let until = t.time + chrono::Duration::milliseconds((ra * 1000.0) as i64);
        // The same call (same path) never comes back early.
        for r in log.iter().filter(|r| r.seq > t.seq && r.path == t.path) {
            assert!(
                r.time >= until,
                "request #{} on {} at {} came before Retry-After ended at {} (429 #{})",
                r.seq,
                r.path,
                r.time,
                until,
                t.seq
            );
        }
        // Nor does any other call of this client, once the 429 could have reached it
        // (requests already in flight when the 429 was sent are allowed).
        let in_flight = t.time + chrono::Duration::milliseconds(200);
        for r in log.iter().filter(|r| r.seq > t.seq) {
            assert!(
                r.time < in_flight || r.time >= until,
                "request #{} at {} inside the Retry-After window of 429 #{} ({}..{})",
                r.seq,
                r.time,
                t.seq,
                t.time,
                until
            );
        }
    }
    emu.shutdown().await;
}

/// A 429 whose `Retry-After` does not fit in the retry budget is surfaced as `Throttled`.
#[tokio::test]
async fn throttling_beyond_the_budget_is_surfaced() {
    let (emu, admin) = start(EmulatorConfig::default()).await;
    let mut cfg = config_for(&emu, &admin.tenant_id, &admin.client_id, &admin.client_secret);
    cfg.retry.max_elapsed = Duration::from_secs(2);
    let client = GraphClient::new(cfg).unwrap();
    client.verify_credentials().await.unwrap();
    emu.set_faults(FaultConfig::throttle_next(1, Duration::from_secs(5)));
    let started = Instant::now();
    let err = client
        .get_service_principal_by_app_id(&admin.client_id, Freshness::Settled)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    match err {
        GraphError::Throttled { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(5)))
        }
        other => panic!("expected Throttled, got {other:?}"),
    }
    emu.shutdown().await;
}

/// Contract §7, checklist 3: 2 s of replication lag after create; addPassword and SP create
/// right after the upsert succeed through the retry policy.
#[tokio::test]
async fn replication_lag_is_survived() {
    let (emu, admin) = start(EmulatorConfig::default().with_replication_lag(Duration::from_secs(2))).await;
    let client = client_for(&emu, &admin);
    let me = client.own_service_principal().await.unwrap();

    let ensured = client
        .ensure_application("lag-1", &desired(&client, "lag", &me.id))
        .await
        .unwrap();
    assert!(ensured.created);
    let app = ensured.application;
    let app_id = app.app_id.clone().unwrap();

    let pw = client
        .add_password(&app.id, &AddPasswordRequest::default(), Freshness::JustCreated)
        .await
        .expect("addPassword survives the replication 404s");
    let sp = client
        .create_service_principal(&app_id, &[], Freshness::JustCreated)
        .await
        .expect("SP create survives NoBackingApplicationObject");
    assert_eq!(sp.app_id.as_deref(), Some(app_id.as_str()));
    // Reads of passwordCredentials lag addPassword by the replication window too (the
    // emulator's strict reads): the key shows once it has replicated.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let read = client
            .get_application(&app.id, Freshness::JustCreated)
            .await
            .unwrap();
        if read.passwords().iter().any(|p| p.key_id == pw.key_id) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new key never showed in a read"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert!(
        count(&emu, "application.addPassword", 404) >= 1,
        "{:?}",
        emu.request_counts()
    );
    assert_eq!(
        count(&emu, "application.addPassword", 200),
        1,
        "exactly one password minted"
    );
    assert!(
        count(&emu, "servicePrincipal.create", 400) >= 1 || count(&emu, "application.addPassword", 404) >= 2
    );
    assert_eq!(count(&emu, "servicePrincipal.create", 201), 1);

    // A settled object's 404 is final.
    let err = client
        .get_application("00000000-0000-4000-8000-000000000000", Freshness::Settled)
        .await
        .unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(err.code(), Some("Request_ResourceNotFound"));
    emu.shutdown().await;
}

/// A token Graph rejects (expired early) is replaced once and the call retried.
#[tokio::test]
async fn expired_token_is_refreshed_once_and_the_call_retried() {
    let (emu, admin) = start(EmulatorConfig::default()).await;
    let client = client_for(&emu, &admin);
    client.own_service_principal().await.unwrap();
    client
        .get_service_principal_by_app_id(&admin.client_id, Freshness::Settled)
        .await
        .unwrap();
    assert_eq!(total(&emu, "token.v2"), 1, "token cached");

    assert!(emu.expire_tokens() >= 1);
    emu.clear_requests();
    client
        .get_application(&admin.object_id, Freshness::Settled)
        .await
        .expect("retried with a fresh token");
    let counts = emu.request_counts();
    assert_eq!(total(&emu, "token.v2"), 1, "{counts:?}");
    assert_eq!(count(&emu, "application.get", 401), 1, "{counts:?}");
    assert_eq!(count(&emu, "application.get", 200), 1, "{counts:?}");
    emu.shutdown().await;
}

/// Concurrent callers of a fresh client share one token request.
#[tokio::test]
async fn token_is_fetched_once_for_concurrent_calls() {
    let (emu, admin) = start(EmulatorConfig::default()).await;
    let client = client_for(&emu, &admin);
    let calls = (0..8).map(|_| client.get_service_principal_by_app_id(&admin.client_id, Freshness::Settled));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(total(&emu, "token.v2"), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn token_errors_are_classified() {
    let (emu, admin) = start(EmulatorConfig::default()).await;

    let wrong = "definitely-not-the-secret-value";
    let client = GraphClient::new(config_for(&emu, &admin.tenant_id, &admin.client_id, wrong)).unwrap();
    let err = client.verify_credentials().await.unwrap_err();
    assert!(matches!(err, TokenError::InvalidClientSecret(_)), "{err:?}");
    assert_eq!(err.reason(), "InvalidClientSecret");
    assert_eq!(err.aadsts_codes(), &[7000215]);
    let msg = err.to_string();
    assert!(msg.contains("AADSTS7000215") && msg.contains("trace id"), "{msg}");
    assert!(!msg.contains(wrong) && !format!("{err:?}").contains(wrong));
    // The same through a Graph call: no Graph request is sent without a token.
    let gerr = client
        .get_application(&admin.object_id, Freshness::Settled)
        .await
        .unwrap_err();
    assert_eq!(gerr.reason(), "InvalidClientSecret");
    assert_eq!(total(&emu, "application.get"), 0);

    // The secret's id in place of its value (the classic mistake) is the same error.
    let client = GraphClient::new(config_for(
        &emu,
        &admin.tenant_id,
        &admin.client_id,
        &admin.key_id,
    ))
    .unwrap();
    assert_eq!(
        client.verify_credentials().await.unwrap_err().reason(),
        "InvalidClientSecret"
    );

    let unknown_client = "5d8b1d0c-0000-4000-8000-00000000abcd";
    let client = GraphClient::new(config_for(&emu, &admin.tenant_id, unknown_client, "x")).unwrap();
    assert_eq!(
        client.verify_credentials().await.unwrap_err().reason(),
        "ClientNotFound"
    );

    let client = GraphClient::new(config_for(
        &emu,
        "00000000-0000-4000-8000-0000000000ff",
        &admin.client_id,
        &admin.client_secret,
    ))
    .unwrap();
    assert_eq!(
        client.verify_credentials().await.unwrap_err().reason(),
        "TenantNotFound"
    );

    // The tenant's domain works as well as its GUID.
    let client = GraphClient::new(config_for(
        &emu,
        &admin.tenant_domain,
        &admin.client_id,
        &admin.client_secret,
    ))
    .unwrap();
    client.verify_credentials().await.unwrap();

    // Nothing listens: Unreachable, after bounded retries.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut cfg = config_for(&emu, &admin.tenant_id, &admin.client_id, &admin.client_secret);
    cfg.authority_host = Some(Url::parse(&format!("https://127.0.0.1:{port}")).unwrap());
    cfg.retry.max_attempts = 2;
    let err = GraphClient::new(cfg)
        .unwrap()
        .verify_credentials()
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "Unreachable", "{err}");

    // A server certificate signed by a CA we do not trust: Unreachable too.
    let mut cfg = config_for(&emu, &admin.tenant_id, &admin.client_id, &admin.client_secret);
    cfg.extra_ca_pem = None;
    cfg.retry.max_attempts = 1;
    let err = GraphClient::new(cfg)
        .unwrap()
        .verify_credentials()
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "Unreachable", "{err}");
    emu.shutdown().await;
}

/// 5xx and dropped connections are retried for idempotent calls; addPassword is not repeated
/// when the outcome is unknown, so it can never mint a password nobody records.
#[tokio::test]
async fn server_errors_retry_idempotent_calls_only() {
    let (emu, admin) = start(EmulatorConfig::default()).await;
    let client = client_for(&emu, &admin);
    let me = client.own_service_principal().await.unwrap();
    let app = client
        .ensure_application("faults-1", &desired(&client, "faults", &me.id))
        .await
        .unwrap()
        .application;

    emu.set_faults(FaultConfig::error_next(2));
    client
        .get_application(&app.id, Freshness::Settled)
        .await
        .expect("503s retried");
    assert_eq!(count(&emu, "application.get", 503), 2);

    emu.set_faults(FaultConfig::drop_next(2));
    client
        .get_application(&app.id, Freshness::Settled)
        .await
        .expect("drops retried");

    emu.clear_requests();
    emu.set_faults(FaultConfig::error_next(1).only(&["application.addPassword"]));
    let err = client
        .add_password(&app.id, &AddPasswordRequest::default(), Freshness::Settled)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "Unavailable");
    assert!(err.outcome_unknown(), "{err:?}");
    assert_eq!(total(&emu, "application.addPassword"), 1, "not repeated");

    emu.set_faults(FaultConfig::drop_next(1).only(&["application.addPassword"]));
    let err = client
        .add_password(&app.id, &AddPasswordRequest::default(), Freshness::Settled)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "Transport");
    assert!(err.outcome_unknown(), "{err:?}");
    assert_eq!(total(&emu, "application.addPassword"), 2, "not repeated");

    // A 429 proves the request was not executed: addPassword waits and repeats it.
    emu.set_faults(
        FaultConfig::throttle_next(1, Duration::from_millis(200)).only(&["application.addPassword"]),
    );
    client
        .add_password(&app.id, &AddPasswordRequest::default(), Freshness::Settled)
        .await
        .expect("throttled addPassword is repeated");
    assert_eq!(count(&emu, "application.addPassword", 200), 1);
    emu.shutdown().await;
}

/// The client-side token bucket spaces requests out.
#[tokio::test]
async fn client_side_rate_limit_spaces_requests() {
    let (emu, admin) = start(EmulatorConfig::default()).await;
    let mut cfg = config_for(&emu, &admin.tenant_id, &admin.client_id, &admin.client_secret);
    cfg.budget.requests = Some(RateLimit { qps: 5.0, burst: 1 });
    let observer = Arc::new(CountingObserver::default());
    let client = GraphClient::with_observer(cfg, observer.clone()).unwrap();
    client.verify_credentials().await.unwrap();
    let started = Instant::now();
    for _ in 0..6 {
        client
            .get_service_principal_by_app_id(&admin.client_id, Freshness::Settled)
            .await
            .unwrap();
    }
    // One permit at once, then one every 200 ms: at least 1 s for six calls.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert!(observer.rate_limited.load(Ordering::SeqCst) >= 1);
    emu.shutdown().await;
}

#[derive(Default)]
struct CountingObserver {
    responses: Mutex<Vec<(&'static str, u16)>>,
    throttles: AtomicU64,
    rate_limited: AtomicU64,
    retries: Mutex<Vec<(&'static str, &'static str)>>,
}

impl GraphObserver for CountingObserver {
    fn on_response(&self, op: &'static str, status: u16) {
        self.responses.lock().unwrap().push((op, status));
    }
    fn on_throttle(&self, _op: &'static str, _retry_after: Option<Duration>) {
        self.throttles.fetch_add(1, Ordering::SeqCst);
    }
    fn on_rate_limited(&self, _op: &'static str, _waited: Duration) {
        self.rate_limited.fetch_add(1, Ordering::SeqCst);
    }
    fn on_retry(&self, op: &'static str, reason: &'static str, _delay: Duration) {
        self.retries.lock().unwrap().push((op, reason));
    }
}

/// The metrics hook sees every exchange, throttle and retry.
#[tokio::test]
async fn observer_counts_requests_throttles_and_retries() {
    let (emu, admin) = start(EmulatorConfig::default()).await;
    let observer = Arc::new(CountingObserver::default());
    let client = GraphClient::with_observer(
        config_for(&emu, &admin.tenant_id, &admin.client_id, &admin.client_secret),
        observer.clone(),
    )
    .unwrap();
    client.own_service_principal().await.unwrap();
    emu.set_faults(FaultConfig::throttle_next(1, Duration::from_millis(100)));
    client
        .get_application(&admin.object_id, Freshness::Settled)
        .await
        .unwrap();
    let responses = observer.responses.lock().unwrap().clone();
    assert_eq!(
        responses,
        vec![
            ("token", 200),
            ("servicePrincipal.getByAppId", 200),
            ("application.get", 429),
            ("application.get", 200)
        ]
    );
    assert_eq!(observer.throttles.load(Ordering::SeqCst), 1);
    assert_eq!(
        observer.retries.lock().unwrap().clone(),
        vec![("application.get", "RetryAfter")]
    );
    emu.shutdown().await;
}

/// Contract §1.3: workload identity. The projected token file is re-read for every token
/// request; a token matching no federated credential is `NoMatchingFederatedCredential`
/// (AADSTS70021), one signed by another key `AssertionRejected`, an expired file is not
/// sent, a missing one is `FederatedTokenNotFound`.
#[tokio::test]
async fn federated_assertion_from_a_file() {
    let (emu, admin) = GraphEmulator::start_with_admin(
        EmulatorConfig::default(),
        GraphPermission::ApplicationReadWriteAll,
    )
    .await
    .unwrap();
    let issuer = TestIssuer::new("https://oidc.example/cluster/");
    emu.register_issuer(issuer.issuer(), &issuer.jwks());
    let subject = "system:serviceaccount:dcr-system:dcr-operator";
    // Register the federated credential on the operator's app (not an operation the client
    // offers: admins do this once).
    let token = emu.token(&admin).await.unwrap();
    let resp = emu
        .http_client()
        .post(format!(
            "{}/applications/{}/federatedIdentityCredentials",
            emu.graph_v1(),
            admin.object_id
        ))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "name": "dcr-operator", "issuer": issuer.issuer(), "subject": subject,
            "audiences": ["api://AzureADTokenExchange"]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    let file = tempfile::NamedTempFile::new().unwrap();
    let good = issuer.service_account_token("dcr-system", "dcr-operator", 3600);
    std::fs::write(file.path(), &good).unwrap();
    let mut cfg = config_for(&emu, &admin.tenant_id, &admin.client_id, "unused");
    cfg.credential = ClientCredential::AssertionFile(file.path().to_path_buf());
    let client = GraphClient::new(cfg).unwrap();
    client
        .verify_credentials()
        .await
        .expect("the assertion is accepted");
    client
        .get_application(&admin.object_id, Freshness::Settled)
        .await
        .unwrap();

    // The kubelet rotates the file; a token for another service account is refused.
    std::fs::write(file.path(), issuer.service_account_token("other", "sa", 3600)).unwrap();
    let err = client.verify_credentials().await.unwrap_err();
    assert_eq!(err.reason(), "NoMatchingFederatedCredential", "{err}");
    assert_eq!(err.aadsts_codes(), &[70021]);

    let impostor = TestIssuer::new(issuer.issuer());
    std::fs::write(
        file.path(),
        impostor.service_account_token("dcr-system", "dcr-operator", 3600),
    )
    .unwrap();
    let err = client.verify_credentials().await.unwrap_err();
    assert_eq!(err.reason(), "AssertionRejected", "{err}");

    let requests = emu.requests().len();
    let expired = issuer.service_account_token("dcr-system", "dcr-operator", -60);
    std::fs::write(file.path(), &expired).unwrap();
    let err = client.verify_credentials().await.unwrap_err();
    assert_eq!(err.reason(), "FederatedTokenExpired", "{err}");
    assert_eq!(emu.requests().len(), requests, "an expired token is not sent");
    assert!(!format!("{err} {err:?}").contains(&expired));

    std::fs::remove_file(file.path()).unwrap();
    let err = client.verify_credentials().await.unwrap_err();
    assert!(matches!(err, TokenError::AssertionUnreadable { .. }), "{err:?}");
    assert_eq!(err.reason(), "FederatedTokenNotFound");
    emu.shutdown().await;
}

/// Contract §5: the other observed SP-create replication answer, 403 "the backing
/// application ... must in the local tenant", is retried for a just-created app only.
#[tokio::test]
async fn service_principal_create_survives_the_local_tenant_403() {
    // Longer than the client's 2 s wait before the create, so the lag still shows.
    let mut cfg = EmulatorConfig::default().with_replication_lag(Duration::from_millis(3500));
    cfg.assumptions.sp_create_lag_error = sandbox::graph::SpLagError::LocalTenant403;
    let (emu, admin) = start(cfg).await;
    let client = client_for(&emu, &admin);
    let me = client.own_service_principal().await.unwrap();
    let app = client
        .ensure_application("lag-403", &desired(&client, "lag403", &me.id))
        .await
        .unwrap()
        .application;
    let app_id = app.app_id.unwrap();

    let err = client
        .create_service_principal(&app_id, &[], Freshness::Settled)
        .await
        .expect_err("a settled app's 403 is final");
    assert_eq!(err.reason(), "Forbidden");
    client
        .create_service_principal(&app_id, &[], Freshness::JustCreated)
        .await
        .expect("retried until replicated");
    assert!(count(&emu, "servicePrincipal.create", 403) >= 2);
    assert_eq!(count(&emu, "servicePrincipal.create", 201), 1);
    emu.shutdown().await;
}

/// Issue 14: the client waits out a new application's replication before creating its
/// service principal, so the create is sent once instead of retried through the lag.
#[tokio::test]
async fn service_principal_create_waits_out_the_new_applications_replication() {
    let cfg = EmulatorConfig::default().with_replication_lag(Duration::from_millis(1500));
    let (emu, admin) = start(cfg).await;
    let client = client_for(&emu, &admin);
    let me = client.own_service_principal().await.unwrap();
    let app = client
        .ensure_application("settle", &desired(&client, "settle", &me.id))
        .await
        .unwrap()
        .application;
    client
        .create_service_principal(&app.app_id.unwrap(), &[], Freshness::JustCreated)
        .await
        .expect("created once replicated");
    assert_eq!(count(&emu, "servicePrincipal.create", 201), 1);
    assert_eq!(
        emu.request_counts()["servicePrincipal.create"].total,
        1,
        "no create met the replication lag"
    );
    emu.shutdown().await;
}

/// The inventory (issue 6, "efficient steady state"): after one delta round and one listing
/// of tagged service principals, lookups of unchanged objects cost no request each; writes by
/// the client and changes made elsewhere make objects "unknown" (read directly) again.
#[tokio::test]
async fn the_inventory_answers_for_unchanged_objects_in_o1_requests() {
    const TAG: &str = "dcr-operator:cluster:inventory";
    let (emu, admin) = start(EmulatorConfig::default()).await;
    let with_inventory = |max_age: Duration| {
        let mut c = config_for(&emu, &admin.tenant_id, &admin.client_id, &admin.client_secret);
        c.inventory = Some(InventoryConfig {
            tag: TAG.into(),
            max_age,
            reverify_after: Duration::from_secs(3600),
        });
        GraphClient::new(c).unwrap()
    };
    let client = with_inventory(Duration::from_secs(3600));
    let me = client.own_service_principal().await.unwrap();
    let tags = vec![TAG.to_string()];
    let mut ours = Vec::new();
    for i in 0..30 {
        let mut patch = desired(&client, &format!("inv-{i}"), &me.id);
        patch.tags = Some(tags.clone());
        let app = client
            .ensure_application(&format!("inv-{i}"), &patch)
            .await
            .unwrap()
            .application;
        let sp = client
            .create_service_principal(app.app_id.as_deref().unwrap(), &tags, Freshness::JustCreated)
            .await
            .unwrap();
        ours.push((app, sp));
    }
    for i in 0..5 {
        let patch = desired(&client, &format!("foreign-{i}"), &me.id);
        client
            .ensure_application(&format!("foreign-{i}"), &patch)
            .await
            .unwrap();
    }

    let (gets, sp_gets) = (
        total(&emu, "application.get"),
        total(&emu, "servicePrincipal.get"),
    );
    for (app, sp) in &ours {
        let known = client
            .known_application(&app.id)
            .await
            .expect("known after the first round");
        assert_eq!(known.app_id, app.app_id);
        let app_id = app.app_id.as_deref().unwrap();
        assert!(client.known_service_principal(&sp.id, app_id).await);
        let (other, _) = ours.iter().find(|(a, _)| a.id != app.id).unwrap();
        assert!(
            !client
                .known_service_principal(&sp.id, other.app_id.as_deref().unwrap())
                .await,
            "a principal is known only for its own application"
        );
    }
    assert_eq!(total(&emu, "application.delta"), 1, "one round for 60 lookups");
    assert_eq!(total(&emu, "servicePrincipal.list"), 1);
    assert_eq!(total(&emu, "application.get"), gets, "no read per object");
    assert_eq!(total(&emu, "servicePrincipal.get"), sp_gets);

    // The client's own write makes the object unknown until it is read again.
    let (a0, _) = &ours[0];
    let rename = ApplicationPatch {
        display_name: Some("renamed".into()),
        ..Default::default()
    };
    client
        .update_application(&a0.id, &rename, Freshness::Settled)
        .await
        .unwrap();
    assert!(client.known_application(&a0.id).await.is_none());
    client.get_application(&a0.id, Freshness::Settled).await.unwrap();
    let known = client.known_application(&a0.id).await.unwrap();
    assert_eq!(known.display_name.as_deref(), Some("renamed"));

    // Changes made elsewhere are seen at the next refresh (here: every lookup refreshes).
    let watcher = with_inventory(Duration::ZERO);
    let (a1, _) = &ours[1];
    let (a2, sp2) = &ours[2];
    let a2_app_id = a2.app_id.clone().unwrap();
    assert!(watcher.known_application(&a1.id).await.is_some());
    assert!(watcher.known_service_principal(&sp2.id, &a2_app_id).await);
    client.delete_application(&a1.id).await.unwrap();
    client.delete_service_principal(&sp2.id).await.unwrap();
    let outside = ApplicationPatch {
        description: Some("changed by hand".into()),
        ..Default::default()
    };
    let (a3, _) = &ours[3];
    client
        .update_application(&a3.id, &outside, Freshness::Settled)
        .await
        .unwrap();
    assert!(watcher.known_application(&a1.id).await.is_none(), "deleted");
    assert!(
        !watcher.known_service_principal(&sp2.id, &a2_app_id).await,
        "deleted"
    );
    assert!(
        watcher.known_application(&a3.id).await.is_none(),
        "changed: read it"
    );
    assert!(
        watcher.known_application(&ours[4].0.id).await.is_some(),
        "unchanged"
    );
    emu.shutdown().await;
}

/// Adding an owner that is already there counts as done: Graph's duplicate-reference 400
/// is `Ok(false)`, a new owner `Ok(true)`.
#[tokio::test]
async fn adding_an_existing_owner_is_success() {
    let (emu, admin) = GraphEmulator::start_with_admin(
        EmulatorConfig::default(),
        GraphPermission::ApplicationReadWriteAll,
    )
    .await
    .expect("emulator");
    let client = client_for(&emu, &admin);
    let me = client.own_service_principal().await.unwrap();
    let other = emu.seed_admin_app(&admin.tenant_id, GraphPermission::ApplicationReadWriteOwnedBy);
    let created = client
        .ensure_application("c1-owners", &desired(&client, "owners", &me.id))
        .await
        .unwrap()
        .application;
    assert!(!client.add_application_owner(&created.id, &me.id).await.unwrap());
    assert!(client
        .add_application_owner(&created.id, &other.sp_id)
        .await
        .unwrap());
    let mut owners = client.list_application_owner_ids(&created.id).await.unwrap();
    owners.sort();
    let mut want = vec![me.id.clone(), other.sp_id.clone()];
    want.sort();
    assert_eq!(owners, want);
}
