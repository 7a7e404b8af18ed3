//! Contract tests for lost responses (`FaultConfig::hold_after_apply`): a request is
//! processed and its answer held back until released, so a client can be stopped between
//! a change at the provider and its acknowledgement (the crash-safety tests of the
//! operator do exactly that). Not part of the Graph contract: Graph gives no guarantee
//! that an answer arrives, which is the point.

mod graph_support;

use std::time::Duration;

use graph_support::*;
use reqwest::Method;
use sandbox::graph::{FaultConfig, RequestRecord};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn held(log: &[RequestRecord], operation: &str) -> Vec<RequestRecord> {
    log.iter()
        .filter(|r| r.operation == operation && r.fault.as_deref() == Some("held"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn an_upsert_is_applied_and_its_answer_held_until_the_fault_is_cleared() {
    let env = Env::new().await;
    env.emu
        .set_faults(FaultConfig::hold_after_apply(&["application.upsert"]));
    let upsert = env.call(
        Method::PATCH,
        "/applications(uniqueName='dcr-held')",
        Some(json!({"displayName": "held"})),
        &[("Prefer", "create-if-missing")],
    );
    let observe = async {
        assert!(
            env.emu
                .wait_for(WAIT, |e| !held(&e.requests(), "application.upsert").is_empty())
                .await,
            "the upsert is logged as held: {:?}",
            env.emu.requests()
        );
        let record = &held(&env.emu.requests(), "application.upsert")[0];
        assert_eq!(record.status, 201, "logged with the status it will answer");
        assert_eq!(env.emu.held_responses(), 1);
        // The change is made although the client has no answer yet.
        let state = env.emu.state();
        let app = state
            .applications()
            .find(|a| a.unique_name.as_deref() == Some("dcr-held"))
            .expect("created before the answer");
        assert_eq!(app.display_name, "held");
        // Other requests and operations are answered meanwhile.
        assert_eq!(env.get("/applications").await.status, 200);
        env.emu.set_faults(FaultConfig::none());
    };
    let (r, ()) = tokio::join!(upsert, observe);
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["uniqueName"], "dcr-held");
    assert_eq!(env.emu.held_responses(), 0);
    // Applied once: repeating the upsert updates (204) instead of creating.
    let again = env
        .call(
            Method::PATCH,
            "/applications(uniqueName='dcr-held')",
            Some(json!({"displayName": "held"})),
            &[("Prefer", "create-if-missing")],
        )
        .await;
    assert_eq!(again.status, 204, "{}", again.text);
}

#[tokio::test]
async fn holds_follow_the_caller_filter_and_never_hold_errors() {
    let env = Env::new().await;
    let (app, secret) = env.app_with_secret("holder").await;
    let client_id = app["appId"].as_str().unwrap().to_string();
    // Through the control endpoint, as a test in another process would set it.
    let r = read(
        env.http
            .patch(format!("{}/_emulator/faults", env.emu.base_url()))
            .json(&json!({"hold_after_apply": ["token.v2"], "hold_callers": [client_id.to_uppercase()]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["hold_after_apply"], json!(["token.v2"]));

    // Another caller is answered at once; so is a failing request of the held caller.
    let admin = env
        .token_with_secret(&env.admin.client_id, &env.admin.client_secret)
        .await;
    assert_eq!(admin.status, 200, "{}", admin.text);
    let wrong = env.token_with_secret(&client_id, "not-the-secret").await;
    assert_eq!(wrong.status, 401, "errors are never held: {}", wrong.text);
    assert_eq!(env.emu.held_responses(), 0);

    let token = env.token_with_secret(&client_id, &secret);
    let observe = async {
        assert!(
            env.emu.wait_for(WAIT, |e| e.held_responses() == 1).await,
            "the token request is held"
        );
        let record = held(&env.emu.requests(), "token.v2");
        assert_eq!(record.len(), 1);
        assert_eq!(record[0].app_id.as_deref(), Some(client_id.as_str()));
        assert_eq!(record[0].status, 200);
        // Dropping the caller from the filter releases it.
        env.emu
            .update_config(|c| c.faults.hold_callers = vec!["someone-else".into()]);
    };
    let (r, ()) = tokio::join!(token, observe);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["access_token"].is_string());
}

#[tokio::test]
async fn shutdown_sends_held_answers() {
    let env = Env::new().await;
    let app = env.create_app(json!({"displayName": "to delete"})).await;
    env.emu
        .set_faults(FaultConfig::hold_after_apply(&["application.delete"]));
    let path = format!("/applications/{}", app["id"].as_str().unwrap());
    let http = env.http.clone();
    let url = env.url(&path);
    let token = env.token.clone();
    let delete = tokio::spawn(async move { http.delete(url).bearer_auth(token).send().await });
    assert!(env.emu.wait_for(WAIT, |e| e.held_responses() == 1).await);
    assert!(
        env.emu
            .state()
            .application(app["appId"].as_str().unwrap())
            .expect("in deleted items")
            .deleted_date_time
            .is_some(),
        "soft-deleted before the answer"
    );
    let Env { emu, .. } = env;
    tokio::time::timeout(WAIT, emu.shutdown())
        .await
        .expect("shutdown does not wait for the hold to be cleared");
    let answered = tokio::time::timeout(WAIT, delete)
        .await
        .expect("the client is not left waiting")
        .unwrap();
    // The answer was sent (204) or the connection closed with the server; never a hang.
    if let Ok(resp) = answered {
        assert_eq!(resp.status(), 204);
    }
}
