//! Contract tests for service principals (§5), their interplay with deleted items (§3.5)
//! and federated identity credentials (§6), through plain HTTP.

mod graph_support;

use graph_support::*;
use reqwest::Method;
use sandbox::graph::{EmulatorConfig, GraphPermission};
use serde_json::{json, Value};

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

const SP_KEYS: &[&str] = &[
    "id",
    "deletedDateTime",
    "accountEnabled",
    "appDisplayName",
    "appId",
    "appOwnerOrganizationId",
    "appRoleAssignmentRequired",
    "displayName",
    "homepage",
    "logoutUrl",
    "publisherName",
    "replyUrls",
    "servicePrincipalNames",
    "tags",
    "addIns",
    "appRoles",
    "info",
    "keyCredentials",
    "oauth2PermissionScopes",
    "passwordCredentials",
];

#[tokio::test]
async fn s5_create_service_principal_is_201_with_the_documented_keys() {
    let env = Env::new().await;
    let app = env
        .create_app(json!({"displayName": "sp-app", "web": {"redirectUris": ["https://a.example/cb"]}}))
        .await;
    let r = env
        .post(
            "/servicePrincipals",
            json!({"appId": app["appId"], "tags": ["WindowsAzureActiveDirectoryIntegratedApp"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["@odata.context"],
        format!("{}/$metadata#servicePrincipals/$entity", env.emu.graph_v1())
    );
    for k in SP_KEYS {
        assert!(r.body.get(*k).is_some(), "missing {k}");
    }
    assert_eq!(r.body["appId"], app["appId"]);
    assert_eq!(r.body["accountEnabled"], true);
    assert_eq!(r.body["appRoleAssignmentRequired"], false);
    assert_eq!(r.body["appOwnerOrganizationId"], env.admin.tenant_id.as_str());
    assert_eq!(r.body["appDisplayName"], "sp-app");
    assert_eq!(r.body["replyUrls"], json!(["https://a.example/cb"]));
    assert!(r.body["servicePrincipalNames"]
        .as_array()
        .unwrap()
        .contains(&app["appId"]));
    // passwordCredentials on create are not supported (S33).
    let other = env.create_app(json!({"displayName": "x"})).await;
    let r = env
        .post(
            "/servicePrincipals",
            json!({"appId": other["appId"], "passwordCredentials": [{}]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        env.post("/servicePrincipals", json!({})).await.status,
        400,
        "appId is required"
    );
}

#[tokio::test]
async fn s5_duplicate_service_principal_is_409() {
    let env = Env::new().await;
    let app = env.create_app(json!({"displayName": "dup"})).await;
    assert_eq!(
        env.post("/servicePrincipals", json!({"appId": app["appId"]}))
            .await
            .status,
        201
    );
    let r = env
        .post("/servicePrincipals", json!({"appId": app["appId"]}))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.code(), "Request_MultipleObjectsWithSameKeyValue");
}

#[tokio::test]
async fn s5_unknown_app_is_400_no_backing_application_object() {
    let env = Env::new().await;
    let r = env
        .post(
            "/servicePrincipals",
            json!({"appId": "7a9e0000-0000-4000-8000-000000000000"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "Request_BadRequest");
    assert_eq!(
        r.body["error"]["details"][0]["code"],
        "NoBackingApplicationObject"
    );
    assert_eq!(r.body["error"]["details"][0]["target"], "appId");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not reference a valid application object"));
}

#[tokio::test]
async fn s5_get_list_and_delete_by_id_and_by_app_id() {
    let env = Env::new().await;
    let app = env.create_app(json!({"displayName": "g"})).await;
    let app_id = app["appId"].as_str().unwrap();
    let sp = env
        .post("/servicePrincipals", json!({"appId": app_id}))
        .await
        .body;
    assert_eq!(
        env.get(&format!("/servicePrincipals/{}", id(&sp))).await.body["id"],
        sp["id"]
    );
    let r = env.get(&format!("/servicePrincipals(appId='{app_id}')")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["id"], sp["id"]);
    let r = env
        .get(&format!("/servicePrincipals?$filter=appId eq '{app_id}'"))
        .await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["value"][0]["id"], sp["id"]);
    assert_eq!(
        env.delete(&format!("/servicePrincipals(appId='{app_id}')"))
            .await
            .status,
        204
    );
    assert_eq!(
        env.get(&format!("/servicePrincipals/{}", id(&sp))).await.status,
        404
    );
    let deleted = env
        .get("/directory/deletedItems/microsoft.graph.servicePrincipal")
        .await;
    assert!(deleted.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == sp["id"]));
    // Create again, delete by id.
    let sp2 = env.post("/servicePrincipals", json!({"appId": app_id})).await;
    assert_eq!(sp2.status, 201);
    assert_eq!(
        env.delete(&format!("/servicePrincipals/{}", id(&sp2.body)))
            .await
            .status,
        204
    );
    assert_eq!(
        env.delete(&format!("/servicePrincipals/{}", id(&sp2.body)))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn s3_4_service_principal_upsert_by_app_id() {
    let env = Env::new().await;
    let app = env.create_app(json!({"displayName": "spu"})).await;
    let path = format!("/servicePrincipals(appId='{}')", app["appId"].as_str().unwrap());
    assert_eq!(
        env.patch(&path, json!({"tags": ["a"]})).await.status,
        404,
        "no Prefer: 404"
    );
    let prefer = [("Prefer", "create-if-missing")];
    let r = env
        .call(Method::PATCH, &path, Some(json!({"tags": ["a"]})), &prefer)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = env
        .call(Method::PATCH, &path, Some(json!({"tags": ["b"]})), &prefer)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(env.get(&path).await.body["tags"], json!(["b"]));
    assert_eq!(
        env.patch(&path, json!({"appOwnerOrganizationId": "x"}))
            .await
            .status,
        400,
        "read-only"
    );
}

#[tokio::test]
async fn s3_5_app_delete_takes_its_sp_along_restore_brings_it_back_purge_leaves_it() {
    let env = Env::new().await;
    let app = env.create_app(json!({"displayName": "pair"})).await;
    let sp = env
        .post("/servicePrincipals", json!({"appId": app["appId"]}))
        .await
        .body;
    assert_eq!(
        env.delete(&format!("/applications/{}", id(&app))).await.status,
        204
    );
    assert_eq!(
        env.get(&format!("/servicePrincipals/{}", id(&sp))).await.status,
        404
    );
    let r = env
        .post(
            &format!("/directory/deletedItems/{}/restore", id(&app)),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        env.get(&format!("/servicePrincipals/{}", id(&sp))).await.status,
        200,
        "restored with the app"
    );
    // Permanently deleting the app does not purge its SP (it stays in deleted items).
    assert_eq!(
        env.delete(&format!("/applications/{}", id(&app))).await.status,
        204
    );
    assert_eq!(
        env.delete(&format!("/directory/deletedItems/{}", id(&app)))
            .await
            .status,
        204
    );
    let r = env.get(&format!("/directory/deletedItems/{}", id(&sp))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["@odata.type"], "#microsoft.graph.servicePrincipal");
    assert_eq!(
        env.delete(&format!("/directory/deletedItems/{}", id(&sp)))
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn s5_owned_by_caller_creates_sps_only_for_apps_it_owns() {
    let env = Env::with(
        EmulatorConfig::default(),
        GraphPermission::ApplicationReadWriteOwnedBy,
    )
    .await;
    let bind = format!(
        "https://graph.microsoft.com/v1.0/directoryObjects/{}",
        env.admin.sp_id
    );
    let mine = env
        .create_app(json!({"displayName": "mine", "owners@odata.bind": [bind]}))
        .await;
    assert_eq!(
        env.post("/servicePrincipals", json!({"appId": mine["appId"]}))
            .await
            .status,
        201
    );
    let theirs = env.create_app(json!({"displayName": "theirs"})).await;
    let r = env
        .post("/servicePrincipals", json!({"appId": theirs["appId"]}))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.code(), "Authorization_RequestDenied");
    assert_eq!(
        env.get("/servicePrincipals").await.status,
        200,
        "OwnedBy may list all SPs"
    );
}

fn fic(name: &str, subject: &str) -> Value {
    json!({"name": name, "issuer": "https://oidc.example/cluster/", "subject": subject,
           "audiences": ["api://AzureADTokenExchange"], "description": "optional"})
}

#[tokio::test]
async fn s6_fic_create_list_get_update_delete() {
    let env = Env::new().await;
    let app = env.create_app(json!({"displayName": "fic"})).await;
    let base = format!("/applications/{}/federatedIdentityCredentials", id(&app));
    let r = env
        .post(&base, fic("ns1-myclient", "system:serviceaccount:ns1:myclient"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["@odata.context"],
        format!(
            "{}/$metadata#applications('{}')/federatedIdentityCredentials/$entity",
            env.emu.graph_v1(),
            id(&app)
        )
    );
    let fic_id = r.body["id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&fic_id).is_ok());
    assert_eq!(r.body["audiences"], json!(["api://AzureADTokenExchange"]));
    let list = env.get(&base).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["value"].as_array().unwrap().len(), 1);
    assert_eq!(
        env.get(&format!("{base}/{fic_id}")).await.body["name"],
        "ns1-myclient"
    );
    assert_eq!(
        env.get(&format!("{base}(name='ns1-myclient')")).await.body["id"],
        fic_id.as_str()
    );
    // Via appId too.
    let by_app_id = format!(
        "/applications(appId='{}')/federatedIdentityCredentials",
        app["appId"].as_str().unwrap()
    );
    assert_eq!(env.get(&by_app_id).await.body["value"][0]["id"], fic_id.as_str());
    // Update; name is immutable.
    assert_eq!(
        env.patch(
            &format!("{base}/{fic_id}"),
            json!({"subject": "system:serviceaccount:ns1:other"})
        )
        .await
        .status,
        204
    );
    assert_eq!(
        env.get(&format!("{base}/{fic_id}")).await.body["subject"],
        "system:serviceaccount:ns1:other"
    );
    assert_eq!(
        env.patch(&format!("{base}/{fic_id}"), json!({"name": "renamed"}))
            .await
            .status,
        400
    );
    // Upsert by name.
    let prefer = [("Prefer", "create-if-missing")];
    let mut body = fic("ns2-app", "system:serviceaccount:ns2:app");
    body.as_object_mut().unwrap().remove("name");
    let r = env
        .call(
            Method::PATCH,
            &format!("{base}(name='ns2-app')"),
            Some(body.clone()),
            &prefer,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = env
        .call(
            Method::PATCH,
            &format!("{base}(name='ns2-app')"),
            Some(body),
            &prefer,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(env.delete(&format!("{base}/{fic_id}")).await.status, 204);
    assert_eq!(env.get(&format!("{base}/{fic_id}")).await.status, 404);
    assert_eq!(env.delete(&format!("{base}(name='ns2-app')")).await.status, 204);
    assert_eq!(env.get(&base).await.body["value"], json!([]));
}

#[tokio::test]
async fn s6_fic_limits_at_most_20_unique_names_and_issuer_subject_pairs() {
    let env = Env::new().await;
    let app = env.create_app(json!({"displayName": "fic-limits"})).await;
    let base = format!("/applications/{}/federatedIdentityCredentials", id(&app));
    for i in 0..20 {
        let r = env
            .post(
                &base,
                fic(&format!("f{i}"), &format!("system:serviceaccount:ns:sa{i}")),
            )
            .await;
        assert_eq!(r.status, 201, "{i}: {}", r.text);
    }
    let r = env.post(&base, fic("f20", "system:serviceaccount:ns:sa20")).await;
    assert_eq!(r.status, 400, "a 21st credential (error body UNVERIFIED)");
    assert_eq!(r.code(), "Request_BadRequest");
    let other = env.create_app(json!({"displayName": "fic-dups"})).await;
    let base = format!("/applications/{}/federatedIdentityCredentials", id(&other));
    assert_eq!(env.post(&base, fic("a", "s1")).await.status, 201);
    assert_eq!(
        env.post(&base, fic("a", "s2")).await.status,
        400,
        "duplicate name"
    );
    assert_eq!(
        env.post(&base, fic("b", "s1")).await.status,
        400,
        "duplicate issuer+subject"
    );
    let mut two_aud = fic("c", "s3");
    two_aud["audiences"] = json!(["a", "b"]);
    assert_eq!(env.post(&base, two_aud).await.status, 400, "exactly one audience");
    assert_eq!(
        env.post(&base, fic(&"n".repeat(121), "s4")).await.status,
        400,
        "name ≤ 120"
    );
    assert_eq!(
        env.post(&base, fic("bad name", "s5")).await.status,
        400,
        "URL-friendly name"
    );
    assert_eq!(
        env.post(&base, fic("d", &"s".repeat(601))).await.status,
        400,
        "subject ≤ 600"
    );
    assert_eq!(
        env.post(&base, json!({"name": "e", "issuer": "i"})).await.status,
        400,
        "subject and audiences required"
    );
}
