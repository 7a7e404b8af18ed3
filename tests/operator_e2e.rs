//! The operator end to end: the real binary against the local control plane (or your
//! cluster, see tests/support/cluster.rs) and the Graph emulator over https. Every scenario
//! runs twice: against a well-behaved Graph, and with 2 s replication lag, a 1 s secret
//! activation delay and 15% of Graph requests throttled.

#[macro_use]
mod support;

use dcr_operator::crd::Application;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use support::cluster::{wait_deleted, wait_for, TIMEOUT};
use support::operator::CLUSTER_NAME;
use support::scenario::{secret_data, Profile, Scenario};

both_profiles!(registers_delivers_and_deletes);
both_profiles!(spec_changes_are_patched_keeping_the_client_id);
both_profiles!(orphan_policy_leaves_the_client_working);
both_profiles!(delete_and_recreate_under_the_same_name);
both_profiles!(provider_secret_wrong_then_fixed_and_missing_then_created);
both_profiles!(refusals_leave_everything_untouched);

async fn registers_delivers_and_deletes(test: &str, profile: Profile) {
    let s = Scenario::start(test, profile).await;
    let provider = s
        .wait_ready(&s.providers(), &s.provider, "True", Some("Ready"))
        .await;
    assert_eq!(
        provider.status.as_ref().unwrap().service_principal_id.as_deref(),
        Some(s.admin.sp_id.as_str()),
        "the provider found its own service principal"
    );
    s.wait_ready(&s.strategies(), &s.strategy, "True", Some("Ready"))
        .await;
    wait_for("the provider to count its strategy", TIMEOUT, || async {
        let p = s.providers().get(&s.provider).await?;
        Ok::<_, kube::Error>(
            p.status
                .is_some_and(|st| st.active && st.auth_strategies == 1)
                .then_some(()),
        )
    })
    .await;

    s.create_app(
        "orders",
        json!({"displayName": "Orders", "description": "e2e", "redirectUris": ["https://orders.example/cb"]}),
    )
    .await;
    let app = s.wait_ready(&s.apps(), "orders", "True", Some("Ready")).await;
    assert!(app.finalizers().contains(&"dcr-operator.io/cleanup".to_string()));
    let status = app.status.clone().unwrap();
    let client_id = status.client_id.clone().expect("clientId in status");
    let key_id = status.credential.clone().expect("credential in status").key_id;
    assert_eq!(status.secret_name.as_deref(), Some("orders-credentials"));

    // The Secret: owned, complete, and its credentials work.
    let secret = s.secrets().get("orders-credentials").await.unwrap();
    let owner = &secret.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Application", Some(true))
    );
    assert_eq!(Some(&owner.uid), app.uid().as_ref());
    let data = secret_data(&secret);
    for key in [
        "client_id",
        "client_secret",
        "tenant_id",
        "issuer",
        "token_url",
        "token_url_v1",
        "scope",
        "auth_methods",
    ] {
        assert!(data.contains_key(key), "Secret lacks {key}: {:?}", data.keys());
    }
    assert_eq!(data["client_id"], client_id);
    assert_eq!(data["tenant_id"], s.admin.tenant_id);
    assert_eq!(data["token_url"], s.emu.token_url(&s.admin.tenant_id));
    assert_eq!(data["token_url_v1"], s.emu.token_url_v1(&s.admin.tenant_id));
    assert_eq!(data["scope"], "api://orders/.default");
    assert_eq!(data["auth_methods"], "client_credentials,bearer");
    let client_secret = data["client_secret"].clone();
    s.token_with(&data["token_url"], &client_id, &client_secret)
        .await
        .expect("the delivered credentials obtain a token");

    // Exactly one application, one service principal, one password at the provider.
    let uid = app.uid().unwrap();
    let unique_name = format!("dcr-{CLUSTER_NAME}-{uid}");
    let state = s.emu.state();
    let ours: Vec<_> = state
        .applications()
        .filter(|a| a.tags.iter().any(|t| t.ends_with(&uid)))
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "exactly one application for the Application: {ours:#?}"
    );
    let entra = ours[0];
    assert_eq!(entra.unique_name.as_deref(), Some(unique_name.as_str()));
    assert_eq!(entra.app_id, client_id);
    assert_eq!(entra.display_name, "Orders");
    assert!(
        entra.owners.contains(&s.admin.sp_id),
        "the operator owns what it created: {:?}",
        entra.owners
    );
    for tag in [
        "dcr-operator",
        &format!("dcr-operator:namespace:{}", s.ns.name()),
        "dcr-operator:name:orders",
        "e2e",
    ] {
        assert!(
            entra.tags.iter().any(|t| t == tag),
            "tag {tag} in {:?}",
            entra.tags
        );
    }
    assert_eq!(
        state
            .service_principals()
            .filter(|sp| sp.app_id == client_id)
            .count(),
        1
    );
    let keys: Vec<_> = entra.passwords.iter().map(|p| p.key_id.clone()).collect();
    assert_eq!(
        keys,
        vec![key_id.clone()],
        "exactly the one password the Secret holds"
    );

    // Events tell the story; nothing secret leaks into Events, status or logs.
    let events = s.events().await;
    let reasons: Vec<String> = events
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.clone()).as_deref() == Some("orders"))
        .filter_map(|e| e.reason.clone())
        .collect();
    for reason in ["Registered", "CredentialIssued", "Ready"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "Event {reason} in {reasons:?}"
        );
    }
    // Cluster-scoped objects get Events too (in `default`).
    let provider_events: Vec<String> = events
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.clone()).as_deref() == Some(s.provider.as_str()))
        .filter_map(|e| e.reason.clone())
        .collect();
    assert!(
        provider_events.iter().any(|r| r == "Ready"),
        "provider Events: {provider_events:?}"
    );
    s.assert_no_secret_leaks(&[&client_secret, &s.admin.client_secret])
        .await;

    // Delete: the application goes to deleted items, the service principal goes, the
    // Secret goes by garbage collection.
    s.apps().delete("orders", &DeleteParams::default()).await.unwrap();
    wait_deleted(&s.apps(), "orders", TIMEOUT).await;
    let state = s.emu.state();
    let entra = state.application(&unique_name).expect("still in deleted items");
    assert!(entra.deleted_date_time.is_some(), "soft-deleted");
    assert!(state
        .service_principal(&client_id)
        .is_none_or(|sp| sp.deleted_date_time.is_some()));
    wait_deleted(&s.secrets(), "orders-credentials", TIMEOUT).await;
    s.teardown().await;
}

async fn spec_changes_are_patched_keeping_the_client_id(test: &str, profile: Profile) {
    let s = Scenario::start(test, profile).await;
    s.create_app(
        "web",
        json!({"displayName": "Web", "redirectUris": ["https://a.example/cb"]}),
    )
    .await;
    let before = s.wait_ready(&s.apps(), "web", "True", None).await;
    let client_id = before.status.unwrap().client_id.unwrap();
    let secret_before = secret_data(&s.secrets().get("web-credentials").await.unwrap());

    let patch = json!({"spec": {"displayName": "Web v2", "description": "now described",
        "redirectUris": ["https://b.example/cb", "http://localhost:8080/cb"]}});
    s.apps()
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let after = s.wait_ready(&s.apps(), "web", "True", None).await;
    assert_eq!(
        after.status.unwrap().client_id.as_deref(),
        Some(client_id.as_str()),
        "same client"
    );
    let entra = wait_for("the provider to show the new display name", TIMEOUT, || async {
        let state = s.emu.state();
        let a = state.application(&client_id).cloned();
        Ok::<_, String>(a.filter(|a| a.display_name == "Web v2"))
    })
    .await;
    assert_eq!(entra.object["description"], "now described");
    let uris: Vec<&str> = entra.object["web"]["redirectUris"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(uris, vec!["https://b.example/cb", "http://localhost:8080/cb"]);
    assert_eq!(
        secret_data(&s.secrets().get("web-credentials").await.unwrap())["client_secret"],
        secret_before["client_secret"],
        "a spec change does not rotate the secret"
    );
    s.teardown().await;
}

async fn orphan_policy_leaves_the_client_working(test: &str, profile: Profile) {
    let s = Scenario::start(test, profile).await;
    s.create_app("keep", json!({"deletionPolicy": "Orphan"})).await;
    let app = s.wait_ready(&s.apps(), "keep", "True", None).await;
    let client_id = app.status.unwrap().client_id.unwrap();
    let data = secret_data(&s.secrets().get("keep-credentials").await.unwrap());
    s.apps().delete("keep", &DeleteParams::default()).await.unwrap();
    wait_deleted(&s.apps(), "keep", TIMEOUT).await;
    let state = s.emu.state();
    let entra = state.application(&client_id).expect("the application stays");
    assert!(entra.deleted_date_time.is_none(), "not deleted");
    s.token_with(&data["token_url"], &client_id, &data["client_secret"])
        .await
        .expect("the orphaned credentials still work");
    s.teardown().await;
}

async fn delete_and_recreate_under_the_same_name(test: &str, profile: Profile) {
    let s = Scenario::start(test, profile).await;
    s.create_app("again", json!({})).await;
    let first = s.wait_ready(&s.apps(), "again", "True", None).await;
    let first_client = first.status.unwrap().client_id.unwrap();
    s.apps().delete("again", &DeleteParams::default()).await.unwrap();
    wait_deleted(&s.apps(), "again", TIMEOUT).await;
    // The old Secret may linger until garbage collection; the new Application waits for it.
    s.create_app("again", json!({})).await;
    let second = s.wait_ready(&s.apps(), "again", "True", Some("Ready")).await;
    let second_client = second.status.clone().unwrap().client_id.unwrap();
    assert_ne!(
        first_client, second_client,
        "a new client, not a collision with the soft-deleted one"
    );
    let state = s.emu.state();
    assert!(state
        .application(&first_client)
        .unwrap()
        .deleted_date_time
        .is_some());
    assert!(state
        .application(&second_client)
        .unwrap()
        .deleted_date_time
        .is_none());
    let data = secret_data(&s.secrets().get("again-credentials").await.unwrap());
    assert_eq!(data["client_id"], second_client);
    s.teardown().await;
}

async fn provider_secret_wrong_then_fixed_and_missing_then_created(test: &str, profile: Profile) {
    let s = Scenario::start(test, profile).await;
    s.wait_ready(&s.providers(), &s.provider, "True", Some("Ready"))
        .await;

    s.put_admin_secret("not-the-secret").await;
    let p = s
        .wait_ready(&s.providers(), &s.provider, "False", Some("InvalidClientSecret"))
        .await;
    let message = Scenario::ready_condition(&p)["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("AADSTS7000215"),
        "the IdP's code is shown: {message}"
    );
    let strategy = s
        .wait_ready(&s.strategies(), &s.strategy, "False", Some("ProviderNotReady"))
        .await;
    assert!(Scenario::ready_condition(&strategy)["message"]
        .as_str()
        .unwrap()
        .contains("InvalidClientSecret"));

    s.put_admin_secret(&s.admin.client_secret).await;
    s.wait_ready(&s.providers(), &s.provider, "True", Some("Ready"))
        .await;
    s.wait_ready(&s.strategies(), &s.strategy, "True", Some("Ready"))
        .await;

    s.admin_secrets()
        .delete(&s.admin_secret, &DeleteParams::default())
        .await
        .unwrap();
    let p = s
        .wait_ready(&s.providers(), &s.provider, "False", Some("SecretNotFound"))
        .await;
    assert!(Scenario::ready_condition(&p)["message"]
        .as_str()
        .unwrap()
        .contains(&s.admin_secret));
    s.put_admin_secret(&s.admin.client_secret).await;
    s.wait_ready(&s.providers(), &s.provider, "True", Some("Ready"))
        .await;

    // Nothing was registered while the provider was broken, and the admin secret never leaked.
    s.assert_no_secret_leaks(&[&s.admin.client_secret]).await;
    s.teardown().await;
}

async fn refusals_leave_everything_untouched(test: &str, profile: Profile) {
    let s = Scenario::start(test, profile).await;
    s.wait_ready(&s.strategies(), &s.strategy, "True", Some("Ready"))
        .await;

    // A Secret the Application does not own is in the way: never overwritten.
    let foreign: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "blocked-credentials"},
        "stringData": {"keep": "me"}
    }))
    .unwrap();
    s.secrets()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    s.create_app("blocked", json!({})).await;
    let app = s
        .wait_ready(&s.apps(), "blocked", "False", Some("SecretConflict"))
        .await;
    assert!(Scenario::ready_condition(&app)["message"]
        .as_str()
        .unwrap()
        .contains("blocked-credentials"));
    let untouched = s.secrets().get("blocked-credentials").await.unwrap();
    assert_eq!(
        secret_data(&untouched),
        [("keep".to_string(), "me".to_string())].into()
    );
    assert!(untouched.owner_references().is_empty());

    // A strategy that does not admit the namespace: nothing is registered.
    s.apply_strategy(json!({"names": ["somebody-else"]})).await;
    s.create_app("outsider", json!({})).await;
    let app: Application = s
        .wait_ready(&s.apps(), "outsider", "False", Some("NamespaceNotAllowed"))
        .await;
    let uid = app.uid().unwrap();
    assert!(s
        .emu
        .state()
        .applications()
        .all(|a| !a.tags.iter().any(|t| t.ends_with(&uid))));
    assert!(s
        .secrets()
        .get_opt("outsider-credentials")
        .await
        .unwrap()
        .is_none());

    // Admitting it again lets it through.
    s.apply_strategy(json!({"names": [s.ns.name()]})).await;
    s.wait_ready(&s.apps(), "outsider", "True", Some("Ready")).await;
    s.teardown().await;
}
