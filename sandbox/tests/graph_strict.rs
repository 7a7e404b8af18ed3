//! Contract tests for the strict behaviours: permissions per endpoint (§3, §3.5), password
//! reads lagging behind addPassword/removePassword (§4, §7), and reference URLs confined to
//! Graph's service roots (§3.1), through plain HTTP. Sources are cited at each test.
//! (New service principals lagging, and AADSTS7000229 meanwhile, are in graph_realism.rs.)

mod graph_support;

use std::time::Duration;

use graph_support::*;
use reqwest::Method;
use sandbox::graph::{EmulatorConfig, GraphPermission};
use serde_json::{json, Value};

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

fn bind(sp: &str) -> String {
    format!("https://graph.microsoft.com/v1.0/directoryObjects/{sp}")
}

/// GD `directory-deleteditems-list.md`: listing deleted applications (and service
/// principals) names `Application.Read.All` as least privilege; `Application.ReadWrite.OwnedBy`
/// is not listed. GD `directory-deleteditems-get.md` (v1.0, older revision) lists OwnedBy for
/// one item; learn.microsoft.com/graph/api/directory-deleteditems-restore and
/// `-delete` name OwnedBy as least privilege for an application.
#[tokio::test]
async fn s3_5_owned_by_may_not_list_deleted_items_but_may_get_restore_and_purge_its_own() {
    let env = Env::with(
        EmulatorConfig::default(),
        GraphPermission::ApplicationReadWriteOwnedBy,
    )
    .await;
    let mine = env
        .create_app(json!({"displayName": "mine", "owners@odata.bind": [bind(&env.admin.sp_id)]}))
        .await;
    assert_eq!(
        env.delete(&format!("/applications/{}", id(&mine))).await.status,
        204
    );

    for kind in ["application", "servicePrincipal"] {
        let r = env
            .get(&format!("/directory/deletedItems/microsoft.graph.{kind}"))
            .await;
        assert_eq!(r.status, 403, "{kind}: {}", r.text);
        assert_eq!(r.code(), "Authorization_RequestDenied");
    }
    let (_, reader) = env.another_app(Some(GraphPermission::ApplicationReadAll));
    let listed = env
        .call_as(
            Some(&reader),
            Method::GET,
            "/directory/deletedItems/microsoft.graph.application",
            None,
            &[],
        )
        .await;
    assert_eq!(
        listed.status, 200,
        "Application.Read.All may list: {}",
        listed.text
    );
    assert_eq!(listed.body["value"][0]["id"], id(&mine));

    let item = format!("/directory/deletedItems/{}", id(&mine));
    assert_eq!(env.get(&item).await.status, 200, "OwnedBy may read one item");
    assert_eq!(env.post(&format!("{item}/restore"), json!({})).await.status, 200);

    // Someone else's application: neither restored nor purged under OwnedBy.
    let (_, all) = env.another_app(Some(GraphPermission::ApplicationReadWriteAll));
    let theirs = env
        .call_as(
            Some(&all),
            Method::POST,
            "/applications",
            Some(json!({"displayName": "theirs"})),
            &[],
        )
        .await;
    let theirs_item = format!("/directory/deletedItems/{}", id(&theirs.body));
    let deleted = env
        .call_as(
            Some(&all),
            Method::DELETE,
            &format!("/applications/{}", id(&theirs.body)),
            None,
            &[],
        )
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        env.post(&format!("{theirs_item}/restore"), json!({}))
            .await
            .status,
        403
    );
    assert_eq!(env.delete(&theirs_item).await.status, 403);
}

fn key_ids(app: &Resp) -> Vec<String> {
    app.body["passwordCredentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["keyId"].as_str().unwrap().to_string())
        .collect()
}

/// Contract §7 (S54: "a fresh update may not be visible yet"; S55) and §4.1 (terraform polls
/// `GET /applications/{id}` until a new keyId shows, S26): for the replication window after
/// addPassword or removePassword, reads of the application show the earlier
/// passwordCredentials; the token endpoint knows the change at once.
#[tokio::test]
async fn s7_password_reads_lag_behind_add_and_remove() {
    let env = Env::with_config(EmulatorConfig::default().with_clock_speed(0.0)).await;
    let app = env.create_app(json!({"displayName": "pw"})).await;
    let sp = env
        .post("/servicePrincipals", json!({"appId": app["appId"]}))
        .await;
    assert_eq!(sp.status, 201);
    env.emu
        .update_config(|c| c.replication_lag = Duration::from_secs(5));
    let path = format!("/applications/{}", id(&app));

    let pw = env.post(&format!("{path}/addPassword"), json!({})).await;
    assert_eq!(pw.status, 200);
    let key = pw.body["keyId"].as_str().unwrap().to_string();
    assert!(key_ids(&env.get(&path).await).is_empty(), "the new key lags");
    let listed = env
        .get(&format!("/applications?$filter=id eq '{}'", id(&app)))
        .await;
    assert_eq!(listed.body["value"][0]["passwordCredentials"], json!([]));
    let app_id = app["appId"].as_str().unwrap();
    let secret = pw.body["secretText"].as_str().unwrap();
    assert_eq!(env.token_with_secret(app_id, secret).await.status, 200);
    env.emu.advance_clock(Duration::from_secs(5));
    assert_eq!(key_ids(&env.get(&path).await), vec![key.clone()]);

    let removed = env
        .post(&format!("{path}/removePassword"), json!({"keyId": key}))
        .await;
    assert_eq!(removed.status, 204);
    assert_eq!(
        key_ids(&env.get(&path).await),
        vec![key.clone()],
        "the removal lags"
    );
    assert_eq!(env.token_with_secret(app_id, secret).await.status, 401);
    env.emu.advance_clock(Duration::from_secs(5));
    assert!(key_ids(&env.get(&path).await).is_empty());
}

/// Graph answers a malformed reference 400 "Invalid URL format specified in @odata.bind for
/// owners" (OBS: microsoft-graph-docs-contrib#4794, microsoft-graph-docs#12705) or "... in
/// payload." (msgraph-sdk-powershell#3177). The docs do not say whether a reference on a host
/// other than Graph's service root is refused: strict, it is (a proxy's or this emulator's
/// host), while the national clouds' roots are accepted.
#[tokio::test]
async fn s3_1_references_outside_graphs_service_root_are_400() {
    let env = Env::new().await;
    let sp = &env.admin.sp_id;
    let foreign = [
        format!("{}/directoryObjects/{sp}", env.emu.graph_v1()),
        format!("https://proxy.example/v1.0/directoryObjects/{sp}"),
        format!("https://graph.microsoft.com.evil.example/v1.0/directoryObjects/{sp}"),
        format!("https://graph.microsoft.com/v2.0/directoryObjects/{sp}"),
        format!("https://graph.microsoft.com/v1.0/users/{sp}"),
    ];
    for url in &foreign {
        let r = env
            .post(
                "/applications",
                json!({"displayName": "b", "owners@odata.bind": [url]}),
            )
            .await;
        assert_eq!(r.status, 400, "{url}: {}", r.text);
        assert_eq!(r.code(), "Request_BadRequest");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Invalid URL format specified in @odata.bind for owners"),
            "{}",
            r.text
        );
        let upsert = env
            .call(
                Method::PATCH,
                "/applications(uniqueName='bind-strict')",
                Some(json!({"displayName": "b", "owners@odata.bind": [url]})),
                &[("Prefer", "create-if-missing")],
            )
            .await;
        assert_eq!(upsert.status, 400, "{url}: {}", upsert.text);
    }
    let app = env.create_app(json!({"displayName": "refs"})).await;
    let refs = format!("/applications/{}/owners/$ref", id(&app));
    for url in &foreign {
        let r = env.post(&refs, json!({"@odata.id": url})).await;
        assert_eq!(r.status, 400, "{url}: {}", r.text);
        assert!(
            r.text.contains("Invalid URL format specified in payload"),
            "{}",
            r.text
        );
    }
    assert_eq!(
        env.get(&format!("/applications/{}/owners", id(&app))).await.body["value"],
        json!([]),
        "nothing was bound"
    );
    for root in ["https://graph.microsoft.us", "https://GRAPH.microsoft.com"] {
        let ok = env
            .post(
                "/applications",
                json!({"displayName": "ok", "owners@odata.bind": [format!("{root}/v1.0/directoryObjects/{sp}")]}),
            )
            .await;
        assert_eq!(ok.status, 201, "{root}: {}", ok.text);
    }
    let ok = env.post(&refs, json!({"@odata.id": bind(sp)})).await;
    assert_eq!(ok.status, 204, "{}", ok.text);
}
