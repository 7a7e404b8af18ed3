//! Contract tests for Graph's common contract (§2.1, checklist 2), applications (§3),
//! passwords (§4) and limits (§8), through plain HTTP.

mod graph_support;

use std::time::Duration;

use graph_support::*;
use reqwest::Method;
use sandbox::graph::{EmulatorConfig, GraphPermission};
use serde_json::{json, Value};

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

/// Contract §2.1: the envelope always has `innerError{date, request-id, client-request-id}`
/// (date without zone or fraction), and the headers carry the same ids.
fn assert_envelope(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.code(), code, "{}", r.text);
    assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    let inner = &r.body["error"]["innerError"];
    let date = inner["date"].as_str().unwrap();
    assert!(
        chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%M:%S").is_ok(),
        "date {date}"
    );
    assert!(!date.ends_with('Z') && !date.contains('.'));
    assert_eq!(r.header("request-id"), inner["request-id"].as_str());
    assert_eq!(r.header("client-request-id"), inner["client-request-id"].as_str());
}

#[tokio::test]
async fn s2_1_checklist2_every_error_has_inner_error_and_the_id_headers() {
    let env = Env::new().await;
    // 404
    let r = env
        .get("/applications/6f1c0000-0000-4000-8000-000000000000")
        .await;
    assert_envelope(&r, 404, "Request_ResourceNotFound");
    assert_eq!(
        r.body["error"]["message"],
        "Resource '6f1c0000-0000-4000-8000-000000000000' does not exist or one of its queried reference-property objects are not present."
    );
    assert_eq!(
        r.header("request-id"),
        r.header("client-request-id"),
        "seen equal when the client sends none"
    );
    // 400
    assert_envelope(
        &env.post("/applications", json!({"displayName": "x", "bogus": 1}))
            .await,
        400,
        "Request_BadRequest",
    );
    // 401 without a token, plus WWW-Authenticate (S14)
    let r = env.call_as(None, Method::GET, "/applications", None, &[]).await;
    assert_envelope(&r, 401, "InvalidAuthenticationToken");
    let www = r.header("www-authenticate").unwrap();
    assert!(
        www.starts_with("Bearer realm=\"\", authorization_uri=\"")
            && www.contains("client_id=\"00000003-0000-0000-c000-000000000000\""),
        "{www}"
    );
    // 403
    let (_, weak) = env.another_app(None);
    assert_envelope(
        &env.call_as(Some(&weak), Method::GET, "/applications", None, &[])
            .await,
        403,
        "Authorization_RequestDenied",
    );
    // A client-request-id sent by the client is echoed (UNVERIFIED, configurable).
    let r = env
        .call(
            Method::GET,
            "/applications/nope",
            None,
            &[("client-request-id", "my-correlation")],
        )
        .await;
    assert_envelope(&r, 400, "Request_BadRequest");
    assert_eq!(r.header("client-request-id"), Some("my-correlation"));
    // Successful responses carry the headers too.
    let r = env.get("/applications").await;
    assert_eq!(r.status, 200);
    assert!(r.header("request-id").is_some() && r.header("client-request-id").is_some());
    assert!(r.header("x-ms-ags-diagnostic").is_some());
}

#[tokio::test]
async fn s2_1_bearer_validation_malformed_forged_and_expired_tokens() {
    let env = Env::new().await;
    let r = env
        .call_as(Some("not-a-jwt"), Method::GET, "/applications", None, &[])
        .await;
    assert_envelope(&r, 401, "InvalidAuthenticationToken");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("CompactToken parsing failed"));
    let forged = jwt(json!({"aud": "https://graph.microsoft.com", "roles": ["Application.ReadWrite.All"]}));
    assert_envelope(
        &env.call_as(Some(&forged), Method::GET, "/applications", None, &[])
            .await,
        401,
        "InvalidAuthenticationToken",
    );
    assert!(env.emu.expire_tokens() >= 1);
    let r = env.get("/applications").await;
    assert_envelope(&r, 401, "InvalidAuthenticationToken");
    assert_eq!(
        r.body["error"]["message"],
        "Access token has expired or is not yet valid."
    );
}

#[tokio::test]
async fn s2_1_a_token_only_sees_its_own_tenant() {
    let env = Env::new().await;
    let app = env.create_app(json!({"displayName": "tenant-a"})).await;
    let other = env.emu.seed_tenant(Default::default());
    let admin_b = env
        .emu
        .seed_admin_app(&other.id, GraphPermission::ApplicationReadWriteAll);
    let token_b = env.emu.mint_token(&admin_b);
    let r = env
        .call_as(
            Some(&token_b),
            Method::GET,
            &format!("/applications/{}", id(&app)),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 404);
}

const DOCUMENTED_KEYS: &[&str] = &[
    "id",
    "deletedDateTime",
    "appId",
    "applicationTemplateId",
    "identifierUris",
    "createdDateTime",
    "displayName",
    "isDeviceOnlyAuthSupported",
    "isFallbackPublicClient",
    "groupMembershipClaims",
    "optionalClaims",
    "addIns",
    "publisherDomain",
    "signInAudience",
    "tags",
    "tokenEncryptionKeyId",
    "api",
    "appRoles",
    "publicClient",
    "info",
    "keyCredentials",
    "parentalControlSettings",
    "passwordCredentials",
    "requiredResourceAccess",
    "web",
    "uniqueName",
    "description",
    "notes",
    "serviceManagementReference",
    "spa",
    "createdByAppId",
];

#[tokio::test]
async fn s3_1_create_is_201_with_the_documented_representation() {
    let env = Env::new().await;
    let r = env
        .post(
            "/applications",
            json!({"displayName": "ns1-myclient", "tags": ["k8s-operator", "ns:ns1"], "notes": "managed by operator",
                   "requiredResourceAccess": [{"resourceAppId": "00000003-0000-0000-c000-000000000000",
                       "resourceAccess": [{"id": "e1fe6dd8-ba31-4d61-89e7-88639da4683d", "type": "Scope"}]}],
                   "web": {"redirectUris": ["https://app.example.com/cb"]}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let b = &r.body;
    assert_eq!(
        b["@odata.context"],
        format!("{}/$metadata#applications/$entity", env.emu.graph_v1())
    );
    for k in DOCUMENTED_KEYS {
        assert!(b.get(*k).is_some(), "missing key {k}");
    }
    assert_ne!(b["id"], b["appId"], "object id and client id differ");
    assert_eq!(
        b["signInAudience"], "AzureADMyOrg",
        "the current documented default"
    );
    assert_eq!(b["deletedDateTime"], Value::Null);
    assert_eq!(b["web"]["redirectUris"], json!(["https://app.example.com/cb"]));
    assert_eq!(b["web"]["implicitGrantSettings"]["enableIdTokenIssuance"], false);
    assert_eq!(b["parentalControlSettings"]["legalAgeGroupRule"], "Allow");
    assert_eq!(b["tags"], json!(["k8s-operator", "ns:ns1"]));
    assert_eq!(b["createdByAppId"], env.admin.client_id.as_str());
}

#[tokio::test]
async fn s3_1_create_validates_the_body() {
    let env = Env::new().await;
    for body in [
        json!({"tags": ["x"]}),                        // displayName required
        json!({"displayName": "x", "appId": "1"}),     // read-only
        json!({"displayName": "x", "nonsense": true}), // unknown property
        json!({"displayName": "x", "passwordCredentials": [{"displayName": "p"}]}), // use addPassword
    ] {
        let r = env.post("/applications", body.clone()).await;
        assert_envelope(&r, 400, "Request_BadRequest");
    }
    let r = env.call(Method::POST, "/applications", None, &[]).await;
    assert_eq!(r.status, 400, "empty body");
}

#[tokio::test]
async fn s3_2_get_by_id_app_id_and_unique_name_with_select() {
    let env = Env::new().await;
    let app = env
        .create_app(json!({"displayName": "reader", "uniqueName": "dcr-reader-1"}))
        .await;
    for path in [
        format!("/applications/{}", id(&app)),
        format!("/applications(appId='{}')", app["appId"].as_str().unwrap()),
        "/applications(uniqueName='dcr-reader-1')".to_string(),
        "/applications(uniqueName=%27dcr-reader-1%27)".to_string(),
    ] {
        let r = env.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(r.body["id"], app["id"]);
    }
    let r = env
        .get(&format!("/applications/{}?$select=displayName,appId", id(&app)))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["displayName"], "reader");
    assert!(r.body.get("tags").is_none(), "only selected properties");
    assert_envelope(
        &env.get(&format!("/applications/{}?$select=nope", id(&app))).await,
        400,
        "Request_BadRequest",
    );
    assert_envelope(
        &env.get("/applications(uniqueName='missing')").await,
        404,
        "Request_ResourceNotFound",
    );
    assert_envelope(
        &env.get("/applications(appId='5d3c0000-0000-4000-8000-000000000000')")
            .await,
        404,
        "Request_ResourceNotFound",
    );
}

#[tokio::test]
async fn s3_3_patch_is_204_without_body_and_replaces_collections_whole() {
    let env = Env::new().await;
    let app = env
        .create_app(json!({"displayName": "p", "tags": ["a", "b"], "identifierUris": ["api://p-1"]}))
        .await;
    let path = format!("/applications/{}", id(&app));
    let r = env
        .patch(
            &path,
            json!({"tags": ["c"], "web": {"redirectUris": ["https://x.example/cb"]}}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.text.is_empty());
    let got = env.get(&path).await.body;
    assert_eq!(got["tags"], json!(["c"]));
    assert_eq!(
        got["identifierUris"],
        json!(["api://p-1"]),
        "unsupplied properties unchanged"
    );
    assert_eq!(got["web"]["redirectUris"], json!(["https://x.example/cb"]));
    // By appId too.
    let r = env
        .patch(
            &format!("/applications(appId='{}')", app["appId"].as_str().unwrap()),
            json!({"notes": "n"}),
        )
        .await;
    assert_eq!(r.status, 204);
    // A PATCH of passwordCredentials is documented as unsupported.
    assert_envelope(
        &env.patch(&path, json!({"passwordCredentials": [{"displayName": "x"}]}))
            .await,
        400,
        "Request_BadRequest",
    );
}

#[tokio::test]
async fn s3_3_an_enabled_scope_cannot_be_removed_until_disabled() {
    let env = Env::new().await;
    let scope = json!({"id": "0b5f3ad8-0000-4000-8000-000000000001", "value": "read", "type": "User",
                       "isEnabled": true, "adminConsentDisplayName": "Read", "adminConsentDescription": "Read"});
    let app = env
        .create_app(json!({"displayName": "api", "api": {"oauth2PermissionScopes": [scope]}}))
        .await;
    let path = format!("/applications/{}", id(&app));
    let r = env
        .patch(&path, json!({"api": {"oauth2PermissionScopes": []}}))
        .await;
    assert_envelope(&r, 400, "Request_BadRequest");
    assert_eq!(
        r.body["error"]["message"],
        "Permission (scope or role) cannot be deleted or updated unless disabled first."
    );
    let mut disabled = scope.clone();
    disabled["isEnabled"] = json!(false);
    assert_eq!(
        env.patch(&path, json!({"api": {"oauth2PermissionScopes": [disabled]}}))
            .await
            .status,
        204
    );
    assert_eq!(
        env.patch(&path, json!({"api": {"oauth2PermissionScopes": []}}))
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn s3_4_checklist5_upsert_201_with_body_204_without_and_404_without_prefer() {
    let env = Env::new().await;
    let prefer = [("Prefer", "create-if-missing")];
    let body = json!({"displayName": "upserted", "tags": ["k8s"]});
    let r = env
        .call(
            Method::PATCH,
            "/applications(uniqueName='dcr-abc')",
            Some(body.clone()),
            &prefer,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["uniqueName"], "dcr-abc");
    assert!(r.body["id"].is_string() && r.body["appId"].is_string());
    let r = env
        .call(
            Method::PATCH,
            "/applications(uniqueName='dcr-abc')",
            Some(json!({"displayName": "renamed"})),
            &prefer,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.text.is_empty(), "204 has no body: GET to learn id/appId");
    assert_eq!(
        env.get("/applications(uniqueName='dcr-abc')").await.body["displayName"],
        "renamed"
    );
    // Without the header: 404 (its exact code is UNVERIFIED).
    let r = env
        .call(
            Method::PATCH,
            "/applications(uniqueName='dcr-missing')",
            Some(body.clone()),
            &[],
        )
        .await;
    assert_envelope(&r, 404, "Request_ResourceNotFound");
    // The header also works among other preferences; displayName is required on create.
    let r = env
        .call(
            Method::PATCH,
            "/applications(uniqueName='dcr-x')",
            Some(json!({"tags": []})),
            &[("Prefer", "return=minimal, create-if-missing")],
        )
        .await;
    assert_envelope(&r, 400, "Request_BadRequest");
}

#[tokio::test]
async fn s3_4_checklist5_soft_deleted_unique_name_stays_reserved_until_permanent_delete() {
    let env = Env::new().await;
    let prefer = [("Prefer", "create-if-missing")];
    let r = env
        .call(
            Method::PATCH,
            "/applications(uniqueName='dcr-r')",
            Some(json!({"displayName": "r"})),
            &prefer,
        )
        .await;
    assert_eq!(r.status, 201);
    let first = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(env.delete("/applications(uniqueName='dcr-r')").await.status, 204);
    let r = env
        .call(
            Method::PATCH,
            "/applications(uniqueName='dcr-r')",
            Some(json!({"displayName": "r"})),
            &prefer,
        )
        .await;
    assert_envelope(&r, 400, "Request_BadRequest");
    assert_eq!(
        r.body["error"]["message"],
        "Another object with the same value for property uniqueName already exists."
    );
    let r = env
        .post(
            "/applications",
            json!({"displayName": "r", "uniqueName": "dcr-r"}),
        )
        .await;
    assert_eq!(r.status, 400, "400 not 409 (S17b)");
    assert_eq!(
        env.delete(&format!("/directory/deletedItems/{first}"))
            .await
            .status,
        204
    );
    let r = env
        .call(
            Method::PATCH,
            "/applications(uniqueName='dcr-r')",
            Some(json!({"displayName": "r"})),
            &prefer,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn s3_4_unique_name_is_immutable() {
    let env = Env::new().await;
    let app = env
        .create_app(json!({"displayName": "u", "uniqueName": "dcr-u"}))
        .await;
    let r = env
        .patch(
            &format!("/applications/{}", id(&app)),
            json!({"uniqueName": "dcr-v"}),
        )
        .await;
    assert_envelope(&r, 400, "Request_BadRequest");
    assert_eq!(
        env.patch(
            &format!("/applications/{}", id(&app)),
            json!({"uniqueName": "dcr-u"})
        )
        .await
        .status,
        204
    );
}

#[tokio::test]
async fn s3_5_delete_soft_deletes_restore_and_permanent_delete() {
    let env = Env::new().await;
    let app = env
        .create_app(json!({"displayName": "del", "uniqueName": "dcr-del"}))
        .await;
    let path = format!("/applications/{}", id(&app));
    assert_eq!(env.delete(&path).await.status, 204);
    assert_envelope(&env.get(&path).await, 404, "Request_ResourceNotFound");
    let list = env
        .get("/directory/deletedItems/microsoft.graph.application")
        .await;
    assert_eq!(list.status, 200);
    assert!(list.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["id"] == app["id"]));
    let item = env.get(&format!("/directory/deletedItems/{}", id(&app))).await;
    assert_eq!(item.body["@odata.type"], "#microsoft.graph.application");
    assert!(item.body["deletedDateTime"].is_string());
    let restored = env
        .post(
            &format!("/directory/deletedItems/{}/restore", id(&app)),
            json!({}),
        )
        .await;
    assert_eq!(restored.status, 200, "{}", restored.text);
    assert_eq!(restored.body["deletedDateTime"], Value::Null);
    assert_eq!(env.get(&path).await.status, 200);
    assert_eq!(env.delete(&path).await.status, 204);
    assert_eq!(
        env.delete(&format!("/directory/deletedItems/{}", id(&app)))
            .await
            .status,
        204
    );
    assert_envelope(
        &env.get(&format!("/directory/deletedItems/{}", id(&app))).await,
        404,
        "Request_ResourceNotFound",
    );
    assert_eq!(
        env.post(
            &format!("/directory/deletedItems/{}/restore", id(&app)),
            json!({})
        )
        .await
        .status,
        404
    );
    // A live object is not a deleted item.
    let live = env.create_app(json!({"displayName": "live"})).await;
    assert_eq!(
        env.delete(&format!("/directory/deletedItems/{}", id(&live)))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn s3_5_deleted_items_are_purged_after_30_days() {
    let mut env = Env::with_config(EmulatorConfig::default().with_clock_speed(0.0)).await;
    let app = env
        .create_app(json!({"displayName": "old", "uniqueName": "dcr-old"}))
        .await;
    assert_eq!(
        env.delete(&format!("/applications/{}", id(&app))).await.status,
        204
    );
    env.emu.advance_clock(Duration::from_secs(29 * 86_400));
    env.token = env.emu.mint_token(&env.admin);
    assert_eq!(
        env.get(&format!("/directory/deletedItems/{}", id(&app)))
            .await
            .status,
        200
    );
    env.emu.advance_clock(Duration::from_secs(86_400));
    env.token = env.emu.mint_token(&env.admin);
    assert_eq!(
        env.get(&format!("/directory/deletedItems/{}", id(&app)))
            .await
            .status,
        404
    );
    let r = env
        .call(
            Method::PATCH,
            "/applications(uniqueName='dcr-old')",
            Some(json!({"displayName": "old"})),
            &[("Prefer", "create-if-missing")],
        )
        .await;
    assert_eq!(r.status, 201, "the name is free again");
}

#[tokio::test]
async fn s3_owned_by_caller_manages_only_the_apps_it_owns() {
    let env = Env::with(
        EmulatorConfig::default(),
        GraphPermission::ApplicationReadWriteOwnedBy,
    )
    .await;
    let bind = format!(
        "https://graph.microsoft.com/v1.0/directoryObjects/{}",
        env.admin.sp_id
    );
    // Created with owners@odata.bind naming itself: fully manageable.
    let mine = env
        .create_app(json!({"displayName": "mine", "owners@odata.bind": [bind]}))
        .await;
    let path = format!("/applications/{}", id(&mine));
    assert_eq!(env.patch(&path, json!({"notes": "x"})).await.status, 204);
    assert_eq!(
        env.post(&format!("{path}/addPassword"), json!({})).await.status,
        200
    );
    let owners = env.get(&format!("{path}/owners")).await;
    assert_eq!(owners.body["value"][0]["id"], env.admin.sp_id.as_str());
    assert_eq!(
        owners.body["value"][0]["@odata.type"],
        "#microsoft.graph.servicePrincipal"
    );
    // Created without binding itself: readable, not writable (auto-owner is UNVERIFIED, off by default).
    let orphan = env.create_app(json!({"displayName": "orphan"})).await;
    let opath = format!("/applications/{}", id(&orphan));
    assert_eq!(env.get(&opath).await.status, 200, "OwnedBy may read all apps");
    assert_envelope(
        &env.patch(&opath, json!({"notes": "x"})).await,
        403,
        "Authorization_RequestDenied",
    );
    assert_envelope(
        &env.post(&format!("{opath}/addPassword"), json!({})).await,
        403,
        "Authorization_RequestDenied",
    );
    assert_envelope(&env.delete(&opath).await, 403, "Authorization_RequestDenied");
    assert_eq!(env.get("/applications").await.status, 200, "and list all apps");
    // An Application.ReadWrite.All app adds the owner; then it works.
    let (_, all) = env.another_app(Some(GraphPermission::ApplicationReadWriteAll));
    let r = env
        .call_as(
            Some(&all),
            Method::POST,
            &format!("{opath}/owners/$ref"),
            Some(
                json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{}", env.admin.sp_id)}),
            ),
            &[],
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(env.patch(&opath, json!({"notes": "x"})).await.status, 204);
    let r = env
        .call_as(
            Some(&all),
            Method::DELETE,
            &format!("{opath}/owners/{}/$ref", env.admin.sp_id),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(env.patch(&opath, json!({"notes": "y"})).await.status, 403);
    // The auto-owner assumption is one switch away.
    env.emu
        .update_config(|c| c.assumptions.owned_by_auto_owner = true);
    let auto = env.create_app(json!({"displayName": "auto"})).await;
    assert_eq!(
        env.patch(&format!("/applications/{}", id(&auto)), json!({"notes": "x"}))
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn s3_read_only_and_unprivileged_callers_get_403() {
    let env = Env::new().await;
    let app = env.create_app(json!({"displayName": "target"})).await;
    let (_, reader) = env.another_app(Some(GraphPermission::ApplicationReadAll));
    let path = format!("/applications/{}", id(&app));
    assert_eq!(
        env.call_as(Some(&reader), Method::GET, &path, None, &[])
            .await
            .status,
        200
    );
    let r = env
        .call_as(
            Some(&reader),
            Method::PATCH,
            &path,
            Some(json!({"notes": "x"})),
            &[],
        )
        .await;
    assert_envelope(&r, 403, "Authorization_RequestDenied");
    let r = env
        .call_as(
            Some(&reader),
            Method::POST,
            "/applications",
            Some(json!({"displayName": "x"})),
            &[],
        )
        .await;
    assert_envelope(&r, 403, "Authorization_RequestDenied");
}

#[tokio::test]
async fn s4_1_add_password_is_200_secret_once_hint_and_two_year_default() {
    let env = Env::new().await;
    let app = env.create_app(json!({"displayName": "pw"})).await;
    let path = format!("/applications/{}", id(&app));
    let r = env
        .call(Method::POST, &format!("{path}/addPassword"), None, &[])
        .await;
    assert_eq!(r.status, 200, "200, not 201: {}", r.text);
    let secret = r.body["secretText"].as_str().unwrap().to_string();
    assert!((16..=64).contains(&secret.len()));
    assert_eq!(r.body["hint"], &secret[..3]);
    let key_id = r.body["keyId"].as_str().unwrap().to_string();
    let start = chrono::DateTime::parse_from_rfc3339(r.body["startDateTime"].as_str().unwrap()).unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(r.body["endDateTime"].as_str().unwrap()).unwrap();
    assert_eq!(
        end,
        start.checked_add_months(chrono::Months::new(24)).unwrap(),
        "default: start + 2 years"
    );
    assert_eq!(r.body["customKeyIdentifier"], Value::Null);
    // Never readable again.
    let got = env.get(&path).await.body;
    let creds = got["passwordCredentials"].as_array().unwrap();
    assert_eq!(creds.len(), 1);
    assert_eq!(creds[0]["keyId"], key_id.as_str());
    assert_eq!(creds[0]["secretText"], Value::Null);
    assert_eq!(creds[0]["hint"], &secret[..3]);
    assert!(
        !env.emu.state_json().to_string().contains(&secret),
        "the inspection endpoint has no values"
    );
    // By appId, with fields.
    let end = "2030-01-01T00:00:00Z";
    let r = env
        .post(
            &format!(
                "/applications(appId='{}')/addPassword",
                app["appId"].as_str().unwrap()
            ),
            json!({"passwordCredential": {"displayName": "k8s ns1/myclient", "endDateTime": end}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["displayName"], "k8s ns1/myclient");
    assert!(r.body["endDateTime"]
        .as_str()
        .unwrap()
        .starts_with("2030-01-01T00:00:00"));
    let r = env
        .post(
            &format!("{path}/addPassword"),
            json!({"passwordCredential": {"endDateTime": "2001-01-01T00:00:00Z"}}),
        )
        .await;
    assert_envelope(&r, 400, "Request_BadRequest");
}

#[tokio::test]
async fn s4_2_remove_password_is_204_and_an_unknown_key_is_400() {
    let env = Env::new().await;
    let (app, secret) = env.app_with_secret("rm").await;
    let path = format!("/applications/{}", id(&app));
    let key_id = env.get(&path).await.body["passwordCredentials"][0]["keyId"]
        .as_str()
        .unwrap()
        .to_string();
    let r = env
        .post(&format!("{path}/removePassword"), json!({"keyId": key_id}))
        .await;
    assert_eq!(r.status, 204);
    assert!(r.text.is_empty());
    assert_eq!(env.get(&path).await.body["passwordCredentials"], json!([]));
    assert_eq!(
        env.token_with_secret(app["appId"].as_str().unwrap(), &secret)
            .await
            .status,
        401
    );
    // Unknown keyId: UNVERIFIED (§10); 400 by default, configurable.
    assert_envelope(
        &env.post(&format!("{path}/removePassword"), json!({"keyId": key_id}))
            .await,
        400,
        "Request_BadRequest",
    );
    env.emu
        .update_config(|c| c.assumptions.remove_unknown_password_status = 204);
    assert_eq!(
        env.post(&format!("{path}/removePassword"), json!({"keyId": key_id}))
            .await
            .status,
        204
    );
    assert_envelope(
        &env.post(&format!("{path}/removePassword"), json!({})).await,
        400,
        "Request_BadRequest",
    );
}

#[tokio::test]
async fn s8_limits_and_formats_are_enforced() {
    let env = Env::new().await;
    let bad = [
        json!({"displayName": "x".repeat(121)}),
        json!({"displayName": "x".repeat(91), "signInAudience": "AzureADandPersonalMicrosoftAccount"}),
        json!({"displayName": "d", "description": "x".repeat(1025)}),
        json!({"displayName": "t", "tags": ["has space"]}),
        json!({"displayName": "t", "tags": ["dup", "dup"]}),
        json!({"displayName": "t", "tags": ["x".repeat(257)]}),
        json!({"displayName": "t", "tags": [""]}),
        json!({"displayName": "a", "signInAudience": "Everyone"}),
        json!({"displayName": "u", "identifierUris": ["api://wild/*"]}),
        json!({"displayName": "u", "identifierUris": [format!("api://{}", "x".repeat(250))]}),
        json!({"displayName": "u", "identifierUris": ["https://not-verified.example/api"]}),
        json!({"displayName": "n", "uniqueName": "has space"}),
        json!({"displayName": "r", "requiredResourceAccess": (0..51).map(|i| json!({"resourceAppId": format!("{i}"), "resourceAccess": []})).collect::<Vec<_>>()}),
        json!({"displayName": "o", "owners@odata.bind": (0..21).map(|_| format!("https://graph.microsoft.com/v1.0/directoryObjects/{}", env.admin.sp_id)).collect::<Vec<_>>()}),
    ];
    for body in bad {
        let r = env.post("/applications", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.code(), "Request_BadRequest");
    }
    // identifierUris are unique in the tenant.
    env.create_app(json!({"displayName": "one", "identifierUris": ["api://shared-uri"]}))
        .await;
    let r = env
        .post(
            "/applications",
            json!({"displayName": "two", "identifierUris": ["api://shared-uri"]}),
        )
        .await;
    assert_envelope(&r, 400, "Request_BadRequest");
    // A verified domain works for https identifier URIs.
    let ok = format!("https://{}/api", env.admin.tenant_domain);
    env.create_app(json!({"displayName": "verified", "identifierUris": [ok]}))
        .await;
    // Two secrets at most for personal-account audiences.
    let p = env
        .create_app(
            json!({"displayName": "personal", "signInAudience": "AzureADandPersonalMicrosoftAccount"}),
        )
        .await;
    for _ in 0..2 {
        assert_eq!(
            env.post(&format!("/applications/{}/addPassword", id(&p)), json!({}))
                .await
                .status,
            200
        );
    }
    assert_eq!(
        env.post(&format!("/applications/{}/addPassword", id(&p)), json!({}))
            .await
            .status,
        400
    );
}

/// Duplicate references are rejected, not absorbed: `owners@odata.bind` naming an owner the
/// application already has (on PATCH, and on an upsert that finds the application) and a
/// `POST .../owners/$ref` repeating one answer 400 `Request_BadRequest` "One or more added
/// object references already exist for the following modified properties: 'owners'."
/// An OwnedBy-only caller may not add owners at all (403). Sources: GD `application-post-owners.md` (the `$ref` add); OBS public Graph clients that
/// match this message for `owners` and `members` adds; terraform-provider-azuread binds
/// owners only on create and adds only missing ones on update (S26).
#[tokio::test]
async fn s3_duplicate_owner_references_are_rejected() {
    let env = Env::with(
        EmulatorConfig::default(),
        GraphPermission::ApplicationReadWriteOwnedBy,
    )
    .await;
    let bind = format!(
        "https://graph.microsoft.com/v1.0/directoryObjects/{}",
        env.admin.sp_id
    );
    let upsert = |body: Value| {
        let env = &env;
        async move {
            env.call(
                Method::PATCH,
                "/applications(uniqueName='dcr-dup-owner')",
                Some(body),
                &[("Prefer", "create-if-missing")],
            )
            .await
        }
    };
    let created = upsert(json!({"displayName": "d", "owners@odata.bind": [bind]})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let path = format!("/applications/{}", id(&created.body));
    let duplicate =
        "One or more added object references already exist for the following modified properties: 'owners'.";
    let again = upsert(json!({"displayName": "d", "owners@odata.bind": [bind]})).await;
    assert_envelope(&again, 400, "Request_BadRequest");
    assert_eq!(again.body["error"]["message"], duplicate);
    let patched = env
        .patch(&path, json!({"notes": "n", "owners@odata.bind": [bind]}))
        .await;
    assert_envelope(&patched, 400, "Request_BadRequest");
    let r = env.get(&path).await;
    assert!(r.body["notes"].is_null(), "a rejected PATCH changes nothing");
    // "Application.ReadWrite.OwnedBy isn't sufficient to add another owner" (GD
    // `application-post-owners.md`): refused, even for an owner, before the reference is read.
    let denied = env
        .post(&format!("{path}/owners/$ref"), json!({"@odata.id": bind}))
        .await;
    assert_envelope(&denied, 403, "Authorization_RequestDenied");
    let (_, all) = env.another_app(Some(GraphPermission::ApplicationReadWriteAll));
    let added = env
        .call_as(
            Some(&all),
            Method::POST,
            &format!("{path}/owners/$ref"),
            Some(json!({"@odata.id": bind})),
            &[],
        )
        .await;
    assert_envelope(&added, 400, "Request_BadRequest");
    assert_eq!(added.body["error"]["message"], duplicate);
    // Without the bind the same upsert is a plain update.
    assert_eq!(upsert(json!({"displayName": "d2"})).await.status, 204);
    let owners = env.get(&format!("{path}/owners?$select=id")).await;
    assert_eq!(owners.status, 200);
    assert_eq!(owners.body["value"].as_array().unwrap().len(), 1);
}
