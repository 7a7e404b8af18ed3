//! Access removal revokes: an Application its AuthStrategy stops admitting goes
//! Ready=False at once and loses its secrets (at Entra and in its Secret) after the grace;
//! re-admission issues a new one. Deleting an Application whose provider is gone keeps the
//! finalizer until `dcr-operator.io/abandon` releases it.

#[macro_use]
mod support;

use dcr_operator::crd::Application;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{json, Value};
use support::cluster::{wait_deleted, wait_for, TIMEOUT};
use support::scenario::{secret_data, Profile, Scenario};

/// The strategy's grace, short for the test.
const GRACE: &str = "5s";

fn credentials() -> Value {
    json!({"lifetime": "720h", "renewBefore": "240h", "revokePreviousAfter": GRACE})
}

/// Starts a scenario whose strategy revokes after [`GRACE`] and a Ready Application `name`;
/// returns its client id and working secret.
async fn ready_app(test: &str, name: &str) -> (Scenario, String, String) {
    let s = Scenario::start(test, Profile::Ideal).await;
    s.apply_strategy_with(json!({"names": [s.ns.name()]}), credentials())
        .await;
    s.create_app(name, json!({})).await;
    let app = s.wait_ready(&s.apps(), name, "True", Some("Ready")).await;
    let status = app.status.unwrap();
    assert_eq!(status.provider.as_deref(), Some(s.provider.as_str()));
    let client_id = status.client_id.unwrap();
    let data = secret_data(&s.secrets().get(&format!("{name}-credentials")).await.unwrap());
    let secret = data["client_secret"].clone();
    s.token_with(&s.emu.token_url(&s.admin.tenant_id), &client_id, &secret)
        .await
        .expect("the issued secret works");
    (s, client_id, secret)
}

/// Waits until `name`'s secrets are revoked, then checks Entra and the Secret.
async fn assert_revoked(s: &Scenario, name: &str, reason: &str, client_id: &str, secret: &str) {
    let app = wait_for("the secrets revoked", TIMEOUT, || async {
        let app: Application = s.apps().get(name).await?;
        let done = app
            .status
            .as_ref()
            .and_then(|st| st.access_removed.as_ref())
            .is_some_and(|r| r.revoked_at.is_some());
        Ok::<_, kube::Error>(done.then_some(app))
    })
    .await;
    let condition = Scenario::ready_condition(&app);
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], reason);
    assert!(
        condition["message"].as_str().unwrap().contains("revoked at"),
        "{condition}"
    );
    let removed = app.status.as_ref().unwrap().access_removed.clone().unwrap();
    assert!(
        removed.revoked_at.as_ref().unwrap().0 >= removed.revoke_at.0,
        "not before the grace ended"
    );
    assert!(
        removed.revoke_at.0.duration_since(removed.since.0).as_secs() == 5,
        "the strategy's grace: {removed:?}"
    );
    let state = s.emu.state();
    let entra = state.application(client_id).expect("the client stays registered");
    assert!(
        entra.passwords.is_empty(),
        "passwords left: {:?}",
        entra.passwords.len()
    );
    assert!(s.requests_seen("application.removePassword", "", Some(204)) >= 1);
    let refused = s
        .token_with(&s.emu.token_url(&s.admin.tenant_id), client_id, secret)
        .await;
    assert!(refused.is_err(), "the old secret still works");
    assert!(
        s.secrets()
            .get_opt(&format!("{name}-credentials"))
            .await
            .unwrap()
            .is_none(),
        "the Secret is deleted"
    );
    let events = s.events().await;
    assert!(events
        .iter()
        .any(|e| e.reason.as_deref() == Some("CredentialsRevoked")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_removed_from_the_strategy_loses_its_secrets_after_the_grace() {
    let (s, client_id, secret) = ready_app("access-namespace-removed", "web").await;
    s.apply_strategy_with(json!({"names": ["someone-else"]}), credentials())
        .await;
    let app = s
        .wait_ready(&s.apps(), "web", "False", Some("NamespaceNotAllowed"))
        .await;
    // Within the grace the message says until when.
    let message = Scenario::ready_condition(&app)["message"]
        .as_str()
        .unwrap()
        .to_string();
    let removed = app
        .status
        .unwrap()
        .access_removed
        .expect("the removal is recorded");
    if removed.revoked_at.is_none() {
        assert!(message.contains("unless access is restored"), "{message}");
    }
    assert_revoked(&s, "web", "NamespaceNotAllowed", &client_id, &secret).await;
    let adds_before = s.requests_seen("application.addPassword", "", None);

    // Re-admission: a new secret for the same client, and it works.
    s.apply_strategy_with(json!({"names": [s.ns.name()]}), credentials())
        .await;
    let app = s.wait_ready(&s.apps(), "web", "True", Some("Ready")).await;
    let status = app.status.unwrap();
    assert!(status.access_removed.is_none());
    assert_eq!(status.client_id.as_deref(), Some(client_id.as_str()));
    let data = secret_data(&s.secrets().get("web-credentials").await.unwrap());
    assert_ne!(data["client_secret"], secret);
    s.token_with(&data["token_url"], &client_id, &data["client_secret"])
        .await
        .expect("the re-issued secret works");
    assert!(s.requests_seen("application.addPassword", "", None) > adds_before);
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_strategy_revokes_after_its_recorded_grace() {
    let (s, client_id, secret) = ready_app("access-strategy-deleted", "api").await;
    s.strategies()
        .delete(&s.strategy, &DeleteParams::default())
        .await
        .unwrap();
    s.wait_ready(&s.apps(), "api", "False", Some("StrategyNotFound"))
        .await;
    assert_revoked(&s, "api", "StrategyNotFound", &client_id, &secret).await;
    // The provider is still there: deletion cleans up through the recorded provider.
    s.apps().delete("api", &DeleteParams::default()).await.unwrap();
    wait_deleted(&s.apps(), "api", TIMEOUT).await;
    let state = s.emu.state();
    assert!(
        state
            .application(&client_id)
            .is_none_or(|a| a.deleted_date_time.is_some()),
        "the client is deleted at Entra"
    );
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_with_the_provider_gone_waits_until_abandoned() {
    let (s, client_id, _secret) = ready_app("access-provider-gone", "gone").await;
    s.strategies()
        .delete(&s.strategy, &DeleteParams::default())
        .await
        .unwrap();
    s.providers()
        .delete(&s.provider, &DeleteParams::default())
        .await
        .unwrap();
    wait_deleted(&s.providers(), &s.provider, TIMEOUT).await;
    s.apps().delete("gone", &DeleteParams::default()).await.unwrap();
    let app = s
        .wait_ready(&s.apps(), "gone", "False", Some("CleanupBlocked"))
        .await;
    assert!(app.metadata.deletion_timestamp.is_some());
    assert_eq!(
        app.metadata.finalizers.as_deref(),
        Some(&["dcr-operator.io/cleanup".to_string()][..])
    );
    let message = Scenario::ready_condition(&app)["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains(&client_id) && message.contains("dcr-operator.io/abandon"),
        "{message}"
    );
    wait_for("a CleanupBlocked Event", TIMEOUT, || async {
        let events = s.events().await;
        Ok::<_, kube::Error>(
            events
                .iter()
                .any(|e| e.reason.as_deref() == Some("CleanupBlocked"))
                .then_some(()),
        )
    })
    .await;

    // The escape hatch releases it, and leaves the client at Entra.
    let patch = json!({"metadata": {"annotations": {"dcr-operator.io/abandon": "true"}}});
    s.apps()
        .patch("gone", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_deleted(&s.apps(), "gone", TIMEOUT).await;
    let events = s.events().await;
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("Abandoned")));
    let state = s.emu.state();
    let entra = state.application(&client_id).expect("left at Entra");
    assert!(entra.deleted_date_time.is_none());
    s.teardown().await;
}
