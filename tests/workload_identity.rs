//! Workload identity against the local control plane's real ServiceAccount token issuer
//! (issue #15): a TokenRequest with audience `api://AzureADTokenExchange` is exchanged at
//! the Graph emulator for an access token, tokens of other ServiceAccounts or namespaces are
//! refused, and a DcrProvider authenticating with the operator's federated token file
//! registers Applications with no admin Secret.
//!
//! The emulator verifies the tokens' ES256 signatures with the keys the apiserver publishes
//! at `/openid/v1/jwks`, registered through `PUT /_emulator/issuers` (it does not fetch
//! them: the apiserver's CA is per start).

#[macro_use]
mod support;

use dcr_operator::crd::DcrProvider;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use sandbox::graph::{AdminApp, EmulatorConfig, GraphEmulator, GraphPermission};
use serde_json::{json, Value};
use std::path::Path;
use support::cluster::{cluster, ensure_namespace};
use support::operator::{emulator_ca_path, operator_kubeconfig, OperatorProcess};
use support::scenario::{Profile, Scenario};

const EXCHANGE: &str = "api://AzureADTokenExchange";

/// The apiserver's ServiceAccount issuer and its JWKS (ServiceAccountIssuerDiscovery, beta
/// and on by default in 1.20).
async fn cluster_issuer(client: &Client) -> (String, Value) {
    let get = |path: &str| axum::http::Request::get(path).body(Vec::new()).unwrap();
    let config: Value = client
        .request(get("/.well-known/openid-configuration"))
        .await
        .expect("the issuer's discovery document");
    let issuer = config["issuer"].as_str().expect("issuer").to_string();
    assert!(
        config["jwks_uri"]
            .as_str()
            .is_some_and(|u| u.ends_with("/openid/v1/jwks")),
        "{config}"
    );
    let jwks: Value = client
        .request(get("/openid/v1/jwks"))
        .await
        .expect("the issuer's JWKS");
    (issuer, jwks)
}

/// A token for ServiceAccount `ns/name` (created if missing) from the TokenRequest API.
async fn service_account_token(client: &Client, ns: &str, name: &str, audience: Option<&str>) -> String {
    ensure_namespace(client, ns).await.expect("namespace");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    match sas.create(&PostParams::default(), &sa).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("ServiceAccount {ns}/{name}: {e}"),
    }
    let audiences: Vec<&str> = audience.into_iter().collect();
    let request: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": audiences, "expirationSeconds": 3600}
    }))
    .unwrap();
    sas.create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {ns}/{name}: {e}"))
        .status
        .expect("TokenRequest status")
        .token
}

/// Adds a federated identity credential to `admin`'s application, as a directory admin
/// does once (with an app of its own holding `Application.ReadWrite.All`).
async fn add_fic(emu: &GraphEmulator, admin: &AdminApp, name: &str, issuer: &str, subject: &str) {
    let directory_admin = emu.seed_admin_app(&admin.tenant_id, GraphPermission::ApplicationReadWriteAll);
    let token = emu.token(&directory_admin).await.unwrap();
    let resp = emu
        .http_client()
        .post(format!(
            "{}/applications/{}/federatedIdentityCredentials",
            emu.graph_v1(),
            admin.object_id
        ))
        .bearer_auth(token)
        .json(&json!({"name": name, "issuer": issuer, "subject": subject, "audiences": [EXCHANGE]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap_or_default());
}

/// Exchanges `assertion` at the emulator's v2 token endpoint: the access token, or the
/// error body.
async fn exchange(emu: &GraphEmulator, admin: &AdminApp, assertion: &str) -> Result<String, Value> {
    let resp = emu
        .http_client()
        .post(emu.token_url(&admin.tenant_id))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", admin.client_id.as_str()),
            ("scope", "https://graph.microsoft.com/.default"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ])
        .send()
        .await
        .unwrap();
    let ok = resp.status().is_success();
    let body: Value = resp.json().await.unwrap();
    if ok {
        Ok(body["access_token"].as_str().unwrap().to_string())
    } else {
        Err(body)
    }
}

/// A JWT's claims, unverified.
fn jwt_claims(jwt: &str) -> Value {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The issuer-discovery ClusterRole 1.20 ships (bound to nobody by default): what a
/// cluster admin binds to let workloads, or an in-cluster relying party, read the documents.
async fn discovery_role_grants_the_documents(client: &Client) {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let role = Api::<ClusterRole>::all(client.clone())
        .get("system:service-account-issuer-discovery")
        .await
        .expect("the issuer-discovery ClusterRole");
    let urls: Vec<String> = role
        .rules
        .unwrap_or_default()
        .into_iter()
        .flat_map(|r| r.non_resource_urls.unwrap_or_default())
        .collect();
    for url in ["/.well-known/openid-configuration", "/openid/v1/jwks"] {
        assert!(urls.iter().any(|u| u == url), "{url} not in {urls:?}");
    }
}

fn aadsts(body: &Value) -> u64 {
    body["error_codes"][0].as_u64().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_token_is_exchanged_and_other_accounts_are_refused() {
    let cluster = cluster().await;
    let client = cluster.client().await;
    let ns = cluster.namespace("wif-exchange").await;
    let other_ns = cluster.namespace("wif-exchange-other").await;
    let (emu, admin) = GraphEmulator::start_with_admin(
        EmulatorConfig::default(),
        GraphPermission::ApplicationReadWriteAll,
    )
    .await
    .unwrap();
    let (issuer, jwks) = cluster_issuer(&client).await;
    discovery_role_grants_the_documents(&client).await;
    emu.register_issuer(&issuer, &jwks);
    let subject = format!("system:serviceaccount:{}:workload", ns.name());
    add_fic(&emu, &admin, "workload", &issuer, &subject).await;

    let token = service_account_token(&client, ns.name(), "workload", Some(EXCHANGE)).await;
    let claims = jwt_claims(&token);
    assert_eq!(claims["iss"], issuer.as_str());
    assert_eq!(claims["aud"], json!([EXCHANGE]));
    assert_eq!(claims["sub"], subject.as_str());
    let access = exchange(&emu, &admin, &token)
        .await
        .unwrap_or_else(|e| panic!("the exchange failed: {e}"));
    let resp = emu
        .http_client()
        .get(format!("{}/applications/{}", emu.graph_v1(), admin.object_id))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the access token works at Graph");

    // Another ServiceAccount, the same name in another namespace, the apiserver's own
    // audience: no matching FIC (AADSTS70021).
    let other_sa = service_account_token(&client, ns.name(), "other", Some(EXCHANGE)).await;
    let other_namespace = service_account_token(&client, other_ns.name(), "workload", Some(EXCHANGE)).await;
    let apiserver_audience = service_account_token(&client, ns.name(), "workload", None).await;
    for (what, token) in [
        ("another ServiceAccount", &other_sa),
        ("another namespace", &other_namespace),
        ("the apiserver's audience", &apiserver_audience),
    ] {
        let err = exchange(&emu, &admin, token).await.expect_err(what);
        assert_eq!(aadsts(&err), 70021, "{what}: {err}");
    }
    emu.shutdown().await;
}

/// Writes `token` to `path` the way the kubelet does: a new file renamed over the old one.
fn write_token(path: &Path, token: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, token).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A token whose `exp` has passed (unsigned: the operator refuses it before sending).
fn expired_token() -> String {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let now = chrono::Utc::now().timestamp();
    format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256"}"#),
        URL_SAFE_NO_PAD.encode(json!({"sub": "x", "exp": now - 60, "iat": now - 3660}).to_string())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_with_the_federated_token_registers_applications_without_an_admin_secret() {
    let cluster = cluster().await;
    let client = cluster.client().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    // The operator's own ServiceAccount, as the projected volume would give it.
    let (operator_ns, operator_sa) = ("dcr-system", "dcr-operator");
    let own_token = || service_account_token(&client, operator_ns, operator_sa, Some(EXCHANGE));
    write_token(&token_file, &own_token().await);
    let mut op = OperatorProcess::start_with_kubeconfig(
        operator_kubeconfig().await,
        &emulator_ca_path().await,
        &["--federated-token-file", token_file.to_str().unwrap()],
    )
    .await;
    let s = Scenario::start_with("wif-provider", Profile::Ideal, op.operator()).await;
    s.wait_ready(&s.providers(), &s.provider, "True", None).await;

    let (issuer, jwks) = cluster_issuer(&client).await;
    s.emu.register_issuer(&issuer, &jwks);
    let subject = format!("system:serviceaccount:{operator_ns}:{operator_sa}");
    add_fic(&s.emu, &s.admin, "dcr-operator", &issuer, &subject).await;

    // Switch to the federated token and remove the admin Secret.
    // (A merge patch: on 1.20, a server-side apply without clientSecretRef left it in
    // place, and the schema refuses a spec with both credentials.)
    let mut spec = s.provider_spec();
    spec["initialClient"] = json!({"clientId": s.admin.client_id, "federatedToken": {}});
    let switch = json!({"spec": {"initialClient": {"clientSecretRef": null, "federatedToken": {}}}});
    s.providers()
        .patch(&s.provider, &PatchParams::default(), &Patch::Merge(&switch))
        .await
        .expect("switching the credential");
    s.admin_secrets()
        .delete(&s.admin_secret, &Default::default())
        .await
        .unwrap();
    let provider: DcrProvider = s.wait_ready(&s.providers(), &s.provider, "True", None).await;
    assert!(provider
        .spec
        .initial_client
        .as_ref()
        .is_some_and(|c| c.client_secret_ref.is_none()));
    assert!(s
        .admin_secrets()
        .get_opt(&s.admin_secret)
        .await
        .unwrap()
        .is_none());

    // The kubelet rotates the token; the operator reads the new one.
    write_token(&token_file, &own_token().await);
    s.create_app("orders", json!({})).await;
    s.wait_ready(&s.apps(), "orders", "True", None).await;
    let secret: Option<Secret> = s.secrets().get_opt("orders-credentials").await.unwrap();
    assert!(secret.is_some(), "the Application's credential Secret");

    // Missing, expired, and another ServiceAccount's token: each its own reason. A spec
    // change makes the operator verify again at once.
    let reverify = |n: u32| {
        let mut spec = spec.clone();
        spec["displayName"] = json!(format!("check {n}"));
        spec
    };
    std::fs::remove_file(&token_file).unwrap();
    s.apply_provider_spec(reverify(1)).await;
    let p = s
        .wait_ready(
            &s.providers(),
            &s.provider,
            "False",
            Some("FederatedTokenNotFound"),
        )
        .await;
    let message = Scenario::ready_condition(&p)["message"].to_string();
    assert!(message.contains("azure-identity-token"), "{message}");

    let expired = expired_token();
    write_token(&token_file, &expired);
    s.apply_provider_spec(reverify(2)).await;
    s.wait_ready(
        &s.providers(),
        &s.provider,
        "False",
        Some("FederatedTokenExpired"),
    )
    .await;

    let stranger = service_account_token(&client, s.ns.name(), "stranger", Some(EXCHANGE)).await;
    write_token(&token_file, &stranger);
    s.apply_provider_spec(reverify(3)).await;
    let p = s
        .wait_ready(
            &s.providers(),
            &s.provider,
            "False",
            Some("NoMatchingFederatedCredential"),
        )
        .await;
    let message = Scenario::ready_condition(&p)["message"].to_string();
    assert!(message.contains("AADSTS70021"), "{message}");

    // Back to the operator's own token: Ready again, and the tokens never reached the log,
    // Events or status.
    let own = own_token().await;
    write_token(&token_file, &own);
    s.apply_provider_spec(reverify(4)).await;
    s.wait_ready(&s.providers(), &s.provider, "True", None).await;
    s.assert_no_secret_leaks(&[&own, &stranger, &expired]).await;
    s.teardown().await;
    op.terminate().await;
}
