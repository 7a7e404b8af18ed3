//! Credential lifecycle and drift repair, end to end: rotation (on request and before
//! expiry) with no window in which the Secret holds a failing secret, the compromise
//! response, and every out-of-band change at the provider or to the Secret repaired.

#[macro_use]
mod support;

use dcr_operator::crd::Application;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use support::cluster::{wait_for, TIMEOUT};
use support::scenario::{secret_data, Profile, Scenario};

/// The Application's live key id, secret name and client id once Ready.
async fn ready_app(s: &Scenario, name: &str) -> (Application, String) {
    let app = s.wait_ready(&s.apps(), name, "True", Some("Ready")).await;
    let key = app
        .status
        .as_ref()
        .unwrap()
        .credential
        .as_ref()
        .unwrap()
        .key_id
        .clone();
    (app, key)
}

/// Sets the strategy's credential policy (merge patch).
async fn set_policy(s: &Scenario, credentials: Value) {
    let patch = json!({"spec": {"credentials": credentials}});
    s.strategies()
        .patch(&s.strategy, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    s.wait_ready(&s.strategies(), &s.strategy, "True", Some("Ready"))
        .await;
}

/// Waits until the Entra application of `client_id` is live again (restored from deleted
/// items).
async fn wait_restored(s: &Scenario, client_id: &str) {
    wait_for(
        "the application to be restored from deleted items",
        TIMEOUT,
        || async {
            let live = s
                .emu
                .state()
                .application(client_id)
                .is_some_and(|a| a.deleted_date_time.is_none());
            Ok::<_, String>(live.then_some(()))
        },
    )
    .await;
}

/// Touches the Application so it is reconciled now rather than at the next resync.
async fn poke(s: &Scenario, name: &str) {
    let patch =
        json!({"metadata": {"annotations": {"test.dcr-operator.io/poke": uuid::Uuid::new_v4().to_string()}}});
    s.apps()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn annotate(s: &Scenario, name: &str, key: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    s.apps()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Key ids of the application's passwords at the provider.
fn provider_keys(s: &Scenario, client_id: &str) -> Vec<String> {
    let state = s.emu.state();
    let mut keys: Vec<String> = state
        .application(client_id)
        .map(|a| a.passwords.iter().map(|p| p.key_id.clone()).collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

/// A Graph call made out of band with the admin app's token; throttled and unavailable
/// answers are retried after their Retry-After (the fault profiles inject them).
async fn graph(
    s: &Scenario,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::StatusCode {
    let token = s.emu.mint_token(&s.admin);
    for _ in 0..20 {
        let mut req = s
            .emu
            .http_client()
            .request(method.clone(), format!("{}{path}", s.emu.graph_v1()))
            .bearer_auth(&token);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("graph call");
        let status = resp.status();
        if status != reqwest::StatusCode::TOO_MANY_REQUESTS
            && status != reqwest::StatusCode::SERVICE_UNAVAILABLE
        {
            return status;
        }
        let wait = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse::<f64>().ok())
            .unwrap_or(0.5);
        // Honouring the server's Retry-After is the protocol, not synchronisation.
        tokio::time::sleep(std::time::Duration::from_secs_f64(wait)).await;
    }
    panic!("{method} {path} stayed throttled");
}

fn status_of(app: &Application) -> dcr_operator::crd::ApplicationStatus {
    app.status.clone().unwrap_or_default()
}

/// Polls the Secret and proves its credentials until stopped; counts failures.
fn prove_continuously(
    s: &Scenario,
    secret: &str,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicU32>,
    Arc<AtomicU32>,
    tokio::task::JoinHandle<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU32::new(0));
    let failed = Arc::new(AtomicU32::new(0));
    let (secrets, http, tenant) = (s.secrets(), s.emu.http_client(), s.admin.tenant_id.clone());
    let token_url = s.emu.token_url(&tenant);
    let (stop2, ok2, failed2, name) = (stop.clone(), ok.clone(), failed.clone(), secret.to_string());
    let task = tokio::spawn(async move {
        while !stop2.load(Ordering::SeqCst) {
            let data = secret_data(&secrets.get(&name).await.unwrap());
            let resp = http
                .post(&token_url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", data["client_id"].as_str()),
                    ("client_secret", data["client_secret"].as_str()),
                    ("scope", "https://graph.microsoft.com/.default"),
                ])
                .send()
                .await
                .unwrap();
            if resp.status().is_success() {
                &ok2
            } else {
                &failed2
            }
            .fetch_add(1, Ordering::SeqCst);
            // Pacing of a consumer re-reading its Secret, not synchronisation.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    (stop, ok, failed, task)
}

both_profiles!(rotation_on_request_never_hands_out_a_failing_secret);

async fn rotation_on_request_never_hands_out_a_failing_secret(test: &str, profile: Profile) {
    let s = Scenario::start(test, profile).await;
    set_policy(&s, json!({"revokePreviousAfter": "2s"})).await;
    s.create_app("rot", json!({})).await;
    let (app, old_key) = ready_app(&s, "rot").await;
    let client_id = status_of(&app).client_id.unwrap();
    let old_secret = secret_data(&s.secrets().get("rot-credentials").await.unwrap())["client_secret"].clone();

    let (stop, ok, failed, prover) = prove_continuously(&s, "rot-credentials");
    annotate(&s, "rot", "dcr-operator.io/rotate", "2026-11-21T13:00").await;
    let new_key = wait_for(
        "the rotation to complete and the old key to be revoked",
        TIMEOUT,
        || async {
            let app = s.apps().get("rot").await?;
            let st = status_of(&app);
            let key = st.credential.map(|c| c.key_id).unwrap_or_default();
            let done =
                key != old_key && st.pending_credential.is_none() && st.previous_credentials.is_empty();
            let keys = provider_keys(&s, &client_id);
            Ok::<_, kube::Error>((done && keys == vec![key.clone()]).then_some(key))
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    prover.await.unwrap();
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "the Secret always held a working secret"
    );
    assert!(ok.load(Ordering::SeqCst) > 0);
    assert_ne!(new_key, old_key);
    let data = secret_data(&s.secrets().get("rot-credentials").await.unwrap());
    assert!(
        !data.contains_key(".pending_client_secret"),
        "no staged secret left"
    );
    assert!(
        s.token_with(&data["token_url"], &client_id, &old_secret)
            .await
            .is_err(),
        "the old secret is revoked"
    );
    assert_eq!(
        status_of(&s.apps().get("rot").await.unwrap())
            .last_rotate_request
            .as_deref(),
        Some("2026-11-21T13:00")
    );
    let reasons: Vec<String> = s.events().await.into_iter().filter_map(|e| e.reason).collect();
    for r in ["Rotating", "Rotated", "Revoked"] {
        assert!(reasons.iter().any(|x| x == r), "Event {r} in {reasons:?}");
    }
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_renewed_before_they_expire() {
    let s = Scenario::start("renewal", Profile::Ideal).await;
    // Renew 45 s before a 60 s lifetime ends: 15 s after issue.
    set_policy(
        &s,
        json!({"lifetime": "60s", "renewBefore": "45s", "maxLifetime": "60s", "revokePreviousAfter": "1s"}),
    )
    .await;
    s.create_app("short", json!({})).await;
    let (app, first) = ready_app(&s, "short").await;
    let st = status_of(&app);
    let credential = st.credential.unwrap();
    let lifetime = credential
        .expires_at
        .0
        .duration_since(credential.issued_at.0)
        .as_secs();
    assert!(
        (55..=61).contains(&lifetime),
        "issued for the policy's lifetime, got {lifetime}s"
    );
    assert_eq!(
        credential
            .renew_at
            .0
            .duration_since(credential.issued_at.0)
            .as_secs(),
        15
    );
    let renewed = wait_for(
        "the secret to be renewed without any request",
        std::time::Duration::from_secs(60),
        || async {
            let st = status_of(&s.apps().get("short").await?);
            let key = st.credential.map(|c| c.key_id).unwrap_or_default();
            Ok::<_, kube::Error>((key != first && st.pending_credential.is_none()).then_some(key))
        },
    )
    .await;
    let data = secret_data(&s.secrets().get("short-credentials").await.unwrap());
    s.token_with(&data["token_url"], &data["client_id"], &data["client_secret"])
        .await
        .expect("renewed secret works");
    assert_ne!(renewed, first);
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_all_kills_every_other_secret_at_once() {
    let s = Scenario::start("revoke-all", Profile::Ideal).await;
    s.create_app("leaked", json!({})).await;
    let (app, old_key) = ready_app(&s, "leaked").await;
    let client_id = status_of(&app).client_id.unwrap();
    let old = secret_data(&s.secrets().get("leaked-credentials").await.unwrap());
    annotate(&s, "leaked", "dcr-operator.io/revoke-all", "incident-42").await;
    let new_key = wait_for("a new secret and no other", TIMEOUT, || async {
        let st = status_of(&s.apps().get("leaked").await?);
        let key = st.credential.map(|c| c.key_id).unwrap_or_default();
        let keys = provider_keys(&s, &client_id);
        Ok::<_, kube::Error>(
            (key != old_key
                && keys == vec![key.clone()]
                && st.last_revoke_all_request.as_deref() == Some("incident-42"))
            .then_some(key),
        )
    })
    .await;
    assert!(
        s.token_with(&old["token_url"], &client_id, &old["client_secret"])
            .await
            .is_err(),
        "old secret dead"
    );
    let data = secret_data(&s.secrets().get("leaked-credentials").await.unwrap());
    s.wait_ready(&s.apps(), "leaked", "True", Some("Ready")).await;
    s.token_with(&data["token_url"], &client_id, &data["client_secret"])
        .await
        .expect("new secret works");
    assert!(!new_key.is_empty());
    let reasons: Vec<String> = s.events().await.into_iter().filter_map(|e| e.reason).collect();
    assert!(reasons.iter().any(|r| r == "RevokedAll"), "{reasons:?}");
    s.teardown().await;
}

both_profiles!(drift_at_the_provider_is_repaired);

async fn drift_at_the_provider_is_repaired(test: &str, profile: Profile) {
    let s = Scenario::start(test, profile).await;
    s.create_app("drift", json!({"displayName": "Drift"})).await;
    let (app, key) = ready_app(&s, "drift").await;
    let st = status_of(&app);
    let (client_id, object_id) = (st.client_id.unwrap(), st.application_object_id.unwrap());
    let token_url = s.emu.token_url(&s.admin.tenant_id);

    // A managed field changed out of band is re-applied.
    let path = format!("/applications/{object_id}");
    assert!(graph(
        &s,
        reqwest::Method::PATCH,
        &path,
        Some(json!({"displayName": "hijacked"}))
    )
    .await
    .is_success());
    poke(&s, "drift").await;
    wait_for("the display name to be re-applied", TIMEOUT, || async {
        Ok::<_, String>(
            s.emu
                .state()
                .application(&client_id)
                .is_some_and(|a| a.display_name == "Drift")
                .then_some(()),
        )
    })
    .await;

    // A password no Secret records (added by hand, here dated back past the replication
    // window) is revoked.
    let start = (chrono::Utc::now() - chrono::Duration::minutes(10)).to_rfc3339();
    let body = json!({"passwordCredential": {"displayName": "by hand", "startDateTime": start}});
    assert!(graph(
        &s,
        reqwest::Method::POST,
        &format!("{path}/addPassword"),
        Some(body)
    )
    .await
    .is_success());
    assert_eq!(provider_keys(&s, &client_id).len(), 2);
    poke(&s, "drift").await;
    wait_for("the unrecorded password to be revoked", TIMEOUT, || async {
        Ok::<_, String>((provider_keys(&s, &client_id) == vec![key.clone()]).then_some(()))
    })
    .await;

    // A deleted service principal is created again.
    let sp = s.emu.state().service_principal(&client_id).unwrap().id.clone();
    assert!(graph(
        &s,
        reqwest::Method::DELETE,
        &format!("/servicePrincipals/{sp}"),
        None
    )
    .await
    .is_success());
    poke(&s, "drift").await;
    wait_for("the service principal to be recreated", TIMEOUT, || async {
        let state = s.emu.state();
        let recreated = state
            .service_principals()
            .any(|p| p.app_id == client_id && p.deleted_date_time.is_none());
        Ok::<_, String>(recreated.then_some(()))
    })
    .await;
    s.wait_ready(&s.apps(), "drift", "True", Some("Ready")).await;

    // An application deleted out of band is restored from deleted items: same client,
    // same secret.
    let secret = secret_data(&s.secrets().get("drift-credentials").await.unwrap())["client_secret"].clone();
    assert!(graph(&s, reqwest::Method::DELETE, &path, None).await.is_success());
    poke(&s, "drift").await;
    wait_restored(&s, &client_id).await;
    wait_for("the restored client's secret to work again", TIMEOUT, || async {
        s.token_with(&token_url, &client_id, &secret).await.map(Some)
    })
    .await;
    let app = s.wait_ready(&s.apps(), "drift", "True", Some("Ready")).await;
    assert_eq!(
        status_of(&app).client_id.as_deref(),
        Some(client_id.as_str()),
        "restored, not replaced"
    );

    // Deleted and purged: a new client with a new secret is delivered.
    // The operator may restore it between the two calls (that is its job): repeat until the
    // purge lands.
    let deleted_item = format!("/directory/deletedItems/{object_id}");
    wait_for("the application to be deleted and purged", TIMEOUT, || async {
        graph(&s, reqwest::Method::DELETE, &path, None).await;
        Ok::<_, String>(
            graph(&s, reqwest::Method::DELETE, &deleted_item, None)
                .await
                .is_success()
                .then_some(()),
        )
    })
    .await;
    poke(&s, "drift").await;
    // The longest chain of the suite (register, service principal through replication lag,
    // issue, activate, prove, all under throttling): twice the usual deadline.
    let new_client = wait_for(
        "a new client to be registered and delivered",
        2 * TIMEOUT,
        || async {
            let app = s.apps().get("drift").await?;
            let st = status_of(&app);
            let ready = Scenario::ready_condition(&app)["status"] == "True";
            let delivered = secret_data(&s.secrets().get("drift-credentials").await?)["client_id"].clone();
            Ok::<_, kube::Error>(
                st.client_id
                    .filter(|c| *c != client_id && ready && *c == delivered),
            )
        },
    )
    .await;
    let data = secret_data(&s.secrets().get("drift-credentials").await.unwrap());
    s.token_with(&token_url, &new_client, &data["client_secret"])
        .await
        .expect("the new client works");
    s.teardown().await;
}

both_profiles!(a_secret_deleted_or_edited_by_hand_is_reissued);

async fn a_secret_deleted_or_edited_by_hand_is_reissued(test: &str, profile: Profile) {
    let s = Scenario::start(test, profile).await;
    set_policy(&s, json!({"revokePreviousAfter": "2s"})).await;
    s.create_app("fragile", json!({})).await;
    let (app, first) = ready_app(&s, "fragile").await;
    let client_id = status_of(&app).client_id.unwrap();

    s.secrets()
        .delete("fragile-credentials", &DeleteParams::default())
        .await
        .unwrap();
    let second = wait_for("a new secret after the Secret was deleted", TIMEOUT, || async {
        let st = status_of(&s.apps().get("fragile").await?);
        let key = st.credential.map(|c| c.key_id).unwrap_or_default();
        let exists = s.secrets().get_opt("fragile-credentials").await?.is_some();
        Ok::<_, kube::Error>(
            (exists && key != first && provider_keys(&s, &client_id) == vec![key.clone()]).then_some(key),
        )
    })
    .await;

    let patch = json!({"stringData": {"client_secret": "edited-by-hand"}});
    s.secrets()
        .patch(
            "fragile-credentials",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let third = wait_for("a new secret after client_secret was edited", TIMEOUT, || async {
        let st = status_of(&s.apps().get("fragile").await?);
        let key = st.credential.map(|c| c.key_id).unwrap_or_default();
        Ok::<_, kube::Error>(
            (key != second && provider_keys(&s, &client_id) == vec![key.clone()]).then_some(key),
        )
    })
    .await;
    assert_ne!(third, first);
    let data = secret_data(&s.secrets().get("fragile-credentials").await.unwrap());
    s.wait_ready(&s.apps(), "fragile", "True", Some("Ready")).await;
    s.token_with(&data["token_url"], &client_id, &data["client_secret"])
        .await
        .expect("re-issued secret works");
    let owner = s.secrets().get("fragile-credentials").await.unwrap();
    assert_eq!(owner.owner_references()[0].uid, app.uid().unwrap());
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_applications_are_reported_and_reaped_only_on_opt_in() {
    let s = Scenario::start("orphans", Profile::Ideal).await;
    s.wait_ready(&s.providers(), &s.provider, "True", Some("Ready"))
        .await;

    // A client released on purpose (deletionPolicy: Orphan) is untagged, never an orphan.
    s.create_app("released", json!({"deletionPolicy": "Orphan"}))
        .await;
    let (app, _) = ready_app(&s, "released").await;
    let released = status_of(&app).client_id.unwrap();
    s.apps()
        .delete("released", &DeleteParams::default())
        .await
        .unwrap();
    support::cluster::wait_deleted(&s.apps(), "released", TIMEOUT).await;
    let tags = s.emu.state().application(&released).unwrap().tags.clone();
    assert!(
        tags.iter().all(|t| !t.starts_with("dcr-operator")),
        "released client untagged: {tags:?}"
    );

    // An application tagged by this cluster for an Application that no longer exists, with
    // the uniqueName this cluster gives it, owned by the operator: an orphan.
    let cluster = support::operator::CLUSTER_NAME;
    let tagged = |uid: &str, unique_name: &str, owned: bool| {
        let mut body = json!({
            "displayName": "left behind",
            "uniqueName": unique_name,
            "tags": ["dcr-operator", format!("dcr-operator:cluster:{cluster}"), format!("dcr-operator:uid:{uid}")],
        });
        if owned {
            body["owners@odata.bind"] = json!([format!(
                "https://graph.microsoft.com/v1.0/directoryObjects/{}",
                s.admin.sp_id
            )]);
        }
        body
    };
    let gone_uid = uuid::Uuid::new_v4().to_string();
    let body = tagged(&gone_uid, &format!("dcr-{cluster}-{gone_uid}"), true);
    assert!(graph(&s, reqwest::Method::POST, "/applications", Some(body))
        .await
        .is_success());
    // Tagged the same way but not provably this cluster's: a foreign uniqueName (owned by
    // the operator all the same), and this cluster's scheme but another owner.
    let foreign_uid = uuid::Uuid::new_v4().to_string();
    let body = tagged(&foreign_uid, &format!("someone-elses-{foreign_uid}"), true);
    assert!(graph(&s, reqwest::Method::POST, "/applications", Some(body))
        .await
        .is_success());
    let unowned_uid = uuid::Uuid::new_v4().to_string();
    let other_admin = s.emu.seed_admin_app(
        &s.admin.tenant_id,
        sandbox::graph::GraphPermission::ApplicationReadWriteAll,
    );
    let created = s
        .emu
        .http_client()
        .post(format!("{}/applications", s.emu.graph_v1()))
        .bearer_auth(s.emu.mint_token(&other_admin))
        .json(&tagged(
            &unowned_uid,
            &format!("dcr-{cluster}-{unowned_uid}"),
            false,
        ))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{created:?}");
    let live = |uid: &str| {
        s.emu
            .state()
            .applications()
            .find(|a| a.tags.iter().any(|t| t.ends_with(uid)))
            .map(|a| a.deleted_date_time.is_none())
    };
    let orphan = || {
        let state = s.emu.state();
        let found = state
            .applications()
            .find(|a| a.tags.iter().any(|t| t.ends_with(&gone_uid)))
            .map(|a| (a.id.clone(), a.deleted_date_time.is_some()));
        found
    };

    let provider_events = || async {
        s.events()
            .await
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(s.provider.as_str()))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    let poke_provider = |n: u32| {
        let patch = json!({"metadata": {"annotations": {"test.dcr-operator.io/poke": n.to_string()}}});
        let providers = s.providers();
        let name = s.provider.clone();
        async move {
            providers
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap()
        }
    };
    poke_provider(1).await;
    wait_for("the orphan to be reported", TIMEOUT, || async {
        let p = s.providers().get(&s.provider).await?;
        Ok::<_, kube::Error>(
            p.status
                .is_some_and(|st| st.orphaned_applications == 1)
                .then_some(()),
        )
    })
    .await;
    assert_eq!(orphan().map(|o| o.1), Some(false), "reported, not deleted");

    // Opting in: the first delete is refused (403); the provider stays Ready, says so on
    // the provider, and the next sweep deletes it. The foreign two are kept throughout.
    s.emu.update_config(|c| {
        c.faults.operations = vec!["application.delete".into()];
        c.faults.error_status = 403;
        c.faults.error_next = 1;
    });
    let mut spec = s.provider_spec();
    spec["azureAD"]["orphanedApplications"] = json!("Delete");
    s.apply_provider_spec(spec).await;
    wait_for("the refused delete to be reported", TIMEOUT, || async {
        let events = provider_events().await;
        Ok::<_, kube::Error>(events.iter().any(|(r, _)| r == "OrphanNotDeleted").then_some(()))
    })
    .await;
    let p = s
        .wait_ready(&s.providers(), &s.provider, "True", Some("Ready"))
        .await;
    assert!(
        p.status
            .unwrap()
            .conditions
            .iter()
            .all(|c| c.type_ != "OrphanDeletion"),
        "an explicit cluster name: deletion is not refused"
    );
    let mut n = 2;
    wait_for(
        "the orphan to be deleted once the provider opts in",
        TIMEOUT,
        || {
            n += 1;
            let poke = poke_provider(n);
            async {
                poke.await;
                let p = s.providers().get(&s.provider).await?;
                let count = p.status.map(|st| st.orphaned_applications).unwrap_or(99);
                Ok::<_, kube::Error>((count == 0 && orphan().is_some_and(|o| o.1)).then_some(()))
            }
        },
    )
    .await;
    assert_eq!(live(&foreign_uid), Some(true), "a foreign uniqueName is kept");
    assert_eq!(
        live(&unowned_uid),
        Some(true),
        "an application the operator does not own is kept"
    );
    // One Warning per skipped application (the recorder folds repeats of a reason into one
    // series, so the log names each).
    let events = provider_events().await;
    assert!(events.iter().any(|(r, _)| r == "OrphanSkipped"), "{events:?}");
    let logs = s.operator.logs();
    for uid in [&foreign_uid, &unowned_uid] {
        let id = s
            .emu
            .state()
            .applications()
            .find(|a| a.tags.iter().any(|t| t.ends_with(uid.as_str())))
            .map(|a| a.id.clone())
            .unwrap();
        assert!(
            logs.contains(&format!("application {id} (client"))
                && logs.contains("is not provably this cluster's"),
            "{uid} reported as skipped"
        );
    }
    s.wait_ready(&s.providers(), &s.provider, "True", Some("Ready"))
        .await;
    assert!(
        s.emu
            .state()
            .application(&released)
            .is_some_and(|a| a.deleted_date_time.is_none()),
        "the released client was left alone"
    );
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_templates_shape_the_secret() {
    let s = Scenario::start("template", Profile::Ideal).await;
    let template = json!({
        "labels": {"team": "orders"},
        "keys": {"client_id": "CLIENT_ID", "client_secret": "CLIENT_SECRET"},
        "data": {
            ".env": "CLIENT_ID={{ client_id }}\nCLIENT_SECRET={{ client_secret }}\n",
            "oauth.json": "{\"client_id\":\"{{client_id}}\",\"token_url\":\"{{token_url}}\"}"
        }
    });
    s.create_app("shaped", json!({"secret": {"template": template}}))
        .await;
    let (app, key) = ready_app(&s, "shaped").await;
    let client_id = status_of(&app).client_id.unwrap();
    let secret = s.secrets().get("shaped-credentials").await.unwrap();
    assert_eq!(secret.labels()["team"], "orders");
    let data = secret_data(&secret);
    assert!(
        !data.contains_key("client_secret") && !data.contains_key("client_id"),
        "renamed: {:?}",
        data.keys()
    );
    assert_eq!(data["CLIENT_ID"], client_id);
    assert_eq!(
        data[".env"],
        format!("CLIENT_ID={client_id}\nCLIENT_SECRET={}\n", data["CLIENT_SECRET"])
    );
    let json: Value = serde_json::from_str(&data["oauth.json"]).unwrap();
    assert_eq!(json["token_url"], data["token_url"]);
    s.token_with(&data["token_url"], &client_id, &data["CLIENT_SECRET"])
        .await
        .expect("renamed secret works");

    // Changing the template rewrites the Secret, keeping the secret.
    let patch = json!({"spec": {"secret": {"template": {"data": {".env": "ID={{client_id}}"}}}}});
    s.apps()
        .patch("shaped", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for("the Secret to follow the template", TIMEOUT, || async {
        let data = secret_data(&s.secrets().get("shaped-credentials").await?);
        Ok::<_, kube::Error>((data.get(".env") == Some(&format!("ID={client_id}"))).then_some(()))
    })
    .await;
    let app = s.wait_ready(&s.apps(), "shaped", "True", Some("Ready")).await;
    assert_eq!(
        status_of(&app).credential.unwrap().key_id,
        key,
        "no new secret for a layout change"
    );

    // A template the schema cannot catch is refused with the reason.
    s.create_app(
        "bad",
        json!({"secret": {"template": {"data": {"x": "{{ password }}"}}}}),
    )
    .await;
    let bad = s.wait_ready(&s.apps(), "bad", "False", Some("InvalidSpec")).await;
    assert!(Scenario::ready_condition(&bad)["message"]
        .as_str()
        .unwrap()
        .contains("unknown field"));
    s.teardown().await;
}

/// Touches the AuthStrategy: its Applications are reconciled as at a resync (they are not
/// edited themselves, so the operator may answer from its provider inventory).
async fn resync_via_strategy(s: &Scenario) {
    let patch =
        json!({"metadata": {"annotations": {"test.dcr-operator.io/poke": uuid::Uuid::new_v4().to_string()}}});
    s.strategies()
        .patch(&s.strategy, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Names of this scenario's Applications whose passes logged after byte `from` of the
/// operator log checked the provider side, with how: `Some(true)` when every such pass was
/// answered by the inventory for both the application and the service principal.
fn passes_since(s: &Scenario, from: usize) -> std::collections::BTreeMap<String, bool> {
    let log = s.operator.logs();
    let mut out = std::collections::BTreeMap::new();
    for line in log.get(from..).unwrap_or_default().lines() {
        if !line.contains("provider-side objects checked") || !line.contains(s.ns.name()) {
            continue;
        }
        let Some(name) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("object="))
            .map(|n| n.trim_matches(|c| c == '"' || c == '}' || c == ':').to_string())
        else {
            continue;
        };
        let inventory =
            line.contains("application_read=Inventory") && line.contains("service_principal_read=Inventory");
        let all = out.entry(name).or_insert(true);
        *all &= inventory;
    }
    out
}

both_profiles!(a_resync_of_unchanged_applications_reads_the_inventory);

/// Issue 6, "efficient steady state": passes over unchanged Applications make no Graph read
/// of their own (the delta-tracked inventory answers), and drift is still found that way.
async fn a_resync_of_unchanged_applications_reads_the_inventory(test: &str, profile: Profile) {
    let s = Scenario::start(test, profile).await;
    let names = ["steady-a", "steady-b", "steady-c"];
    for n in names {
        s.create_app(n, json!({})).await;
    }
    for n in names {
        ready_app(&s, n).await;
    }
    // The writes of the creation reach the inventory through delta (replication lag) and are
    // read once more; after that, passes settle on the inventory.
    let start = s.operator.logs().len();
    let last_poke = std::sync::Mutex::new(std::time::Instant::now() - std::time::Duration::from_secs(60));
    wait_for(
        "a pass of each Application answered by the inventory",
        TIMEOUT,
        || async {
            let due = last_poke.lock().unwrap().elapsed() > std::time::Duration::from_secs(2);
            if due {
                *last_poke.lock().unwrap() = std::time::Instant::now();
                resync_via_strategy(&s).await;
            }
            let seen = passes_since(&s, start);
            let settled = names.iter().all(|n| {
                let log = s.operator.logs();
                log.get(start..).unwrap_or_default().lines().any(|l| {
                    l.contains("provider-side objects checked")
                        && l.contains(s.ns.name())
                        && l.contains(&format!("object={n}"))
                        && l.contains("application_read=Inventory")
                        && l.contains("service_principal_read=Inventory")
                })
            });
            Ok::<_, String>((settled && seen.len() == names.len()).then_some(()))
        },
    )
    .await;

    // The measured pass: one resync of every Application, and not one Graph read for them.
    let log_mark = s.operator.logs().len();
    let request_mark = s.emu.requests().last().map_or(0, |r| r.seq);
    resync_via_strategy(&s).await;
    let passes = wait_for("a pass of each Application", TIMEOUT, || async {
        let seen = passes_since(&s, log_mark);
        Ok::<_, String>((seen.len() == names.len()).then_some(seen))
    })
    .await;
    assert!(passes.values().all(|inventory| *inventory), "{passes:?}");
    let reads: Vec<String> = s
        .emu
        .requests()
        .into_iter()
        .filter(|r| r.seq > request_mark)
        .filter(|r| r.operation == "application.get" || r.operation == "servicePrincipal.get")
        .map(|r| format!("{} {}", r.operation, r.path))
        .collect();
    assert!(
        reads.is_empty(),
        "per-object reads in a steady-state resync: {reads:?}"
    );

    // Drift is still found, through the inventory (the Application is not edited).
    let app = s.apps().get("steady-a").await.unwrap();
    let st = app.status.clone().unwrap();
    let client_id = st.client_id.clone().unwrap();
    let sp = st.service_principal_id.clone().unwrap();
    assert!(graph(
        &s,
        reqwest::Method::DELETE,
        &format!("/servicePrincipals/{sp}"),
        None
    )
    .await
    .is_success());
    let object_id = st.application_object_id.clone().unwrap();
    let b = s.apps().get("steady-b").await.unwrap().status.unwrap();
    let b_object = b.application_object_id.unwrap();
    assert!(graph(
        &s,
        reqwest::Method::DELETE,
        &format!("/applications/{b_object}"),
        None
    )
    .await
    .is_success());
    let last_poke = std::sync::Mutex::new(std::time::Instant::now() - std::time::Duration::from_secs(60));
    wait_for(
        "the SP recreated and the application restored",
        TIMEOUT,
        || async {
            if last_poke.lock().unwrap().elapsed() > std::time::Duration::from_secs(2) {
                *last_poke.lock().unwrap() = std::time::Instant::now();
                resync_via_strategy(&s).await;
            }
            let state = s.emu.state();
            let sp_back = state
                .service_principals()
                .any(|p| p.app_id == client_id && p.deleted_date_time.is_none());
            let restored = state
                .applications()
                .any(|a| a.id == b_object && a.deleted_date_time.is_none());
            Ok::<_, String>((sp_back && restored).then_some(()))
        },
    )
    .await;
    assert_eq!(
        s.apps()
            .get("steady-a")
            .await
            .unwrap()
            .status
            .unwrap()
            .application_object_id,
        Some(object_id)
    );
    for n in names {
        s.wait_ready(&s.apps(), n, "True", Some("Ready")).await;
    }
    s.teardown().await;
}

both_profiles!(an_application_soft_deleted_while_status_lost_its_id_is_restored);

/// Status lost the object id (restored from a backup without status, say) and the Entra
/// application was deleted out of band: its uniqueName is still reserved by the deleted item,
/// so the upsert answers 400. The operator finds it in deleted items and restores it: the
/// same client, no second application. Listing deleted items needs `Application.Read.All`
/// besides OwnedBy (see `a_soft_deleted_application_without_read_all_is_reported_not_replaced`).
async fn an_application_soft_deleted_while_status_lost_its_id_is_restored(test: &str, profile: Profile) {
    let s = Scenario::start_with_permissions(
        test,
        profile.config(),
        support::operator::operator().await,
        &[
            sandbox::graph::GraphPermission::ApplicationReadWriteOwnedBy,
            sandbox::graph::GraphPermission::ApplicationReadAll,
        ],
    )
    .await;
    s.create_app("lost", json!({})).await;
    let (app, _) = ready_app(&s, "lost").await;
    let st = app.status.clone().unwrap();
    let (client_id, object_id) = (st.client_id.unwrap(), st.application_object_id.unwrap());
    assert!(graph(
        &s,
        reqwest::Method::DELETE,
        &format!("/applications/{object_id}"),
        None
    )
    .await
    .is_success());
    let forget = json!({"status": {"applicationObjectId": null, "servicePrincipalId": null}});
    s.apps()
        .patch_status("lost", &PatchParams::default(), &Patch::Merge(&forget))
        .await
        .unwrap();
    // A status edit is not a trigger (only changes in substance are): reconcile now.
    poke(&s, "lost").await;
    wait_restored(&s, &client_id).await;
    let app = wait_for("Ready with its object id recorded again", TIMEOUT, || async {
        let app = s.apps().get("lost").await?;
        let ready = Scenario::ready_condition(&app)["status"] == "True";
        let recorded = app
            .status
            .as_ref()
            .and_then(|st| st.application_object_id.clone());
        Ok::<_, kube::Error>((ready && recorded.as_deref() == Some(object_id.as_str())).then_some(app))
    })
    .await;
    assert_eq!(app.status.unwrap().client_id.as_deref(), Some(client_id.as_str()));
    let same_name = s
        .emu
        .state()
        .applications()
        .filter(|a| {
            a.tags
                .iter()
                .any(|t| t.ends_with(&app.metadata.uid.clone().unwrap()))
        })
        .count();
    assert_eq!(same_name, 1, "restored, not registered twice");
    s.teardown().await;
}

/// Warning Events about `name` with one of `reasons`.
async fn warnings(s: &Scenario, name: &str, reasons: &[&str]) -> Vec<String> {
    s.events()
        .await
        .into_iter()
        .filter(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .filter(|e| e.reason.as_deref().is_some_and(|r| reasons.contains(&r)))
        .map(|e| format!("{:?}: {:?}", e.reason, e.note))
        .collect()
}

/// The owners of an Entra application as the emulator holds them.
fn owners_of(s: &Scenario, client_id: &str) -> Vec<String> {
    s.emu
        .state()
        .application(client_id)
        .map(|a| a.owners.clone())
        .unwrap_or_default()
}

both_profiles!(status_loss_finds_the_same_application_by_unique_name);

/// Status lost `applicationObjectId` while the Entra application is live: the operator finds
/// it by uniqueName, sees it already owns it (a bind would be a duplicate reference, which
/// Graph rejects), and records the same ids again, with no Warning.
async fn status_loss_finds_the_same_application_by_unique_name(test: &str, profile: Profile) {
    let s = Scenario::start(test, profile).await;
    s.create_app("lost", json!({})).await;
    let (app, key) = ready_app(&s, "lost").await;
    let st = status_of(&app);
    let (client_id, object_id) = (st.client_id.unwrap(), st.application_object_id.unwrap());
    let owners = owners_of(&s, &client_id);
    assert_eq!(owners.len(), 1, "the operator is the one owner: {owners:?}");
    let forget = json!({"status": {"applicationObjectId": null}});
    s.apps()
        .patch_status("lost", &PatchParams::default(), &Patch::Merge(&forget))
        .await
        .unwrap();
    poke(&s, "lost").await;
    let app = wait_for("the object id recorded again", TIMEOUT, || async {
        let app = s.apps().get("lost").await?;
        let recorded = status_of(&app).application_object_id;
        Ok::<_, kube::Error>((recorded.as_deref() == Some(object_id.as_str())).then_some(app))
    })
    .await;
    let (_, now_key) = ready_app(&s, "lost").await;
    assert_eq!(now_key, key, "same key: nothing was re-issued");
    assert_eq!(status_of(&app).client_id.as_deref(), Some(client_id.as_str()));
    assert_eq!(owners_of(&s, &client_id), owners, "no second owner reference");
    let false_alarms = warnings(
        &s,
        "lost",
        &[
            "Recreating",
            "Restored",
            "IdentityMismatch",
            "RegisterApplication",
            "ProviderError",
        ],
    )
    .await;
    assert!(false_alarms.is_empty(), "{false_alarms:?}");
    assert_eq!(
        s.requests_seen("application.upsert", "", Some(400)),
        0,
        "no upsert met a duplicate owner reference"
    );
    let ours = s
        .emu
        .state()
        .applications()
        .filter(|a| {
            a.tags
                .iter()
                .any(|t| t.ends_with(&app.metadata.uid.clone().unwrap()))
        })
        .count();
    assert_eq!(ours, 1);
    s.teardown().await;
}

both_profiles!(a_lost_upsert_answer_converges);

/// The upsert's 201 never arrives (the connection drops after the directory made the
/// application): the retry finds it existing and owned, and the Application converges on
/// that one application.
async fn a_lost_upsert_answer_converges(test: &str, profile: Profile) {
    let s = Scenario::start(test, profile).await;
    s.emu
        .update_config(|c| c.faults.lose_after_apply = vec!["application.upsert".into()]);
    s.create_app("lost201", json!({})).await;
    let (app, _) = ready_app(&s, "lost201").await;
    let lost: Vec<_> = s
        .emu
        .requests()
        .into_iter()
        .filter(|r| r.operation == "application.upsert" && r.fault.as_deref() == Some("lost"))
        .collect();
    assert_eq!(lost.len(), 1, "the 201 was lost: {lost:#?}");
    assert_eq!(lost[0].status, 201);
    let uid = app.metadata.uid.clone().unwrap();
    let state = s.emu.state();
    let ours: Vec<_> = state
        .applications()
        .filter(|a| a.tags.iter().any(|t| t.ends_with(&uid)))
        .collect();
    assert_eq!(ours.len(), 1, "one application: {ours:#?}");
    assert_eq!(Some(ours[0].app_id.clone()), status_of(&app).client_id);
    assert_eq!(ours[0].owners.len(), 1);
    s.teardown().await;
}

/// One Application whose registration fails for good (the operator lost ownership of the
/// Entra application its uniqueName names, and `Application.ReadWrite.OwnedBy` cannot add it
/// back: 403) costs a bounded number of Graph requests, leaves its status alone between
/// passes, and does not hold up another Application of the same provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_application_backs_off_and_does_not_starve_others() {
    let s = Scenario::start("stuck_application", Profile::Ideal).await;
    s.create_app("stuck", json!({})).await;
    let (app, _) = ready_app(&s, "stuck").await;
    let st = status_of(&app);
    let (client_id, object_id) = (st.client_id.unwrap(), st.application_object_id.unwrap());
    let owner = owners_of(&s, &client_id).pop().expect("an owner");
    assert!(graph(
        &s,
        reqwest::Method::DELETE,
        &format!("/applications/{object_id}/owners/{owner}/$ref"),
        None
    )
    .await
    .is_success());
    let forget = json!({"status": {"applicationObjectId": null}});
    s.apps()
        .patch_status("stuck", &PatchParams::default(), &Patch::Merge(&forget))
        .await
        .unwrap();
    let from = s.emu.requests().last().map_or(0, |r| r.seq);
    poke(&s, "stuck").await;
    let failed = s
        .wait_ready(&s.apps(), "stuck", "False", Some("InsufficientPermissions"))
        .await;
    let message = Scenario::ready_condition(&failed)["message"].clone();
    assert!(
        !message.as_str().unwrap_or_default().contains("request-id"),
        "no request id in the condition: {message}"
    );
    let rv = failed.metadata.resource_version.clone();
    let first_pass = std::time::Instant::now();

    // Meanwhile another Application of the same provider becomes Ready in normal time.
    s.create_app("other", json!({})).await;
    ready_app(&s, "other").await;

    // Two more passes (10 s and 20 s backoff after the first).
    let adds = |e: &sandbox::graph::GraphEmulator| {
        e.requests()
            .iter()
            .filter(|r| {
                r.seq > from && r.operation == "application.owners.add" && r.path.contains(&object_id)
            })
            .count()
    };
    assert!(
        s.emu
            .wait_for(std::time::Duration::from_secs(90), |e| adds(e) >= 3)
            .await,
        "the stuck Application is retried"
    );
    let elapsed = first_pass.elapsed();
    let ours: Vec<_> = s
        .emu
        .requests()
        .into_iter()
        .filter(|r| r.seq > from && r.path.contains(&object_id))
        .collect();
    let denied = ours.iter().filter(|r| r.status == 403).count();
    assert_eq!(denied, adds(&s.emu), "only the owner add is denied: {ours:#?}");
    // Backoff 10 s, 20 s, 40 s ...: three passes took at least 30 s, and each costs two
    // requests to this application (list owners, add owner) after its lookup by uniqueName.
    assert!(
        elapsed >= std::time::Duration::from_secs(25),
        "three passes within {elapsed:?}: not backing off"
    );
    assert!(ours.len() <= 2 * adds(&s.emu), "{ours:#?}");
    eprintln!(
        "stuck Application: {} passes, {} requests to its application in {elapsed:.1?}",
        adds(&s.emu),
        ours.len()
    );
    let now = s.apps().get("stuck").await.unwrap();
    assert_eq!(
        now.metadata.resource_version, rv,
        "no status write while nothing changed"
    );
    // An Application.ReadWrite.All admin gives ownership back, so the operator may delete it.
    let all = s.emu.seed_admin_app(
        &s.admin.tenant_id,
        sandbox::graph::GraphPermission::ApplicationReadWriteAll,
    );
    let restored = s
        .emu
        .http_client()
        .post(format!(
            "{}/applications/{object_id}/owners/$ref",
            s.emu.graph_v1()
        ))
        .bearer_auth(s.emu.mint_token(&all))
        .json(&json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{owner}")}))
        .send()
        .await
        .unwrap();
    assert!(restored.status().is_success(), "{restored:?}");
    s.teardown().await;
}

/// Identity is proven at the provider, never taken from status: B's status forged to name
/// A's Entra application and service principal changes nothing at A; B keeps (or gets) its
/// own; deleting B leaves A intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_status_ids_never_touch_another_application() {
    let s = Scenario::start("status_forgery", Profile::Ideal).await;
    s.create_app("a", json!({})).await;
    s.create_app("b", json!({})).await;
    let (a, _) = ready_app(&s, "a").await;
    let (b, _) = ready_app(&s, "b").await;
    let (sa, sb) = (status_of(&a), status_of(&b));
    let a_client = sa.client_id.clone().unwrap();
    let snapshot = |s: &Scenario| {
        let state = s.emu.state();
        let app = state.application(&a_client).expect("A's application").clone();
        (
            app.tags.clone(),
            app.passwords.iter().map(|p| p.key_id.clone()).collect::<Vec<_>>(),
            app.deleted_date_time,
        )
    };
    let before = snapshot(&s);
    let forged = json!({"status": {
        "applicationObjectId": sa.application_object_id,
        "clientId": sa.client_id,
        "servicePrincipalId": sa.service_principal_id,
    }});
    let forge = || async {
        s.apps()
            .patch_status("b", &PatchParams::default(), &Patch::Merge(&forged))
            .await
            .unwrap();
        poke(&s, "b").await;
    };
    forge().await;
    // A pass already under way (B just turned Ready) may write B's own ids over the forgery
    // before any pass reads it; then nothing was tested yet, so forge again until a pass
    // has seen it and said so.
    wait_for("the IdentityMismatch Warning on B", TIMEOUT, || async {
        if !warnings(&s, "b", &["IdentityMismatch"]).await.is_empty() {
            return Ok::<_, kube::Error>(Some(()));
        }
        let current = status_of(&s.apps().get("b").await?);
        if current.application_object_id == sb.application_object_id {
            forge().await;
        }
        Ok(None)
    })
    .await;
    let b_again = wait_for("B to record its own ids again", TIMEOUT, || async {
        let app = s.apps().get("b").await?;
        let st = status_of(&app);
        let own = st.application_object_id == sb.application_object_id
            && st.client_id == sb.client_id
            && Scenario::ready_condition(&app)["status"] == "True";
        Ok::<_, kube::Error>(own.then_some(app))
    })
    .await;
    assert_eq!(snapshot(&s), before, "A's tags and passwords untouched");
    // B's Secret still carries B's client.
    let data = secret_data(&s.secrets().get("b-credentials").await.unwrap());
    assert_eq!(Some(data["client_id"].clone()), sb.client_id);
    drop(b_again);

    // Forge again, then delete B: only B's application goes.
    s.apps()
        .patch_status("b", &PatchParams::default(), &Patch::Merge(&forged))
        .await
        .unwrap();
    s.apps().delete("b", &DeleteParams::default()).await.unwrap();
    support::cluster::wait_deleted(&s.apps(), "b", TIMEOUT).await;
    assert_eq!(snapshot(&s), before, "A is intact after B's deletion");
    let state = s.emu.state();
    let a_sp = state
        .service_principals()
        .find(|sp| Some(sp.id.clone()) == sa.service_principal_id)
        .expect("A's service principal");
    assert!(a_sp.deleted_date_time.is_none(), "A's service principal is live");
    let b_app = state
        .application(sb.client_id.as_deref().unwrap())
        .expect("B's application");
    assert!(
        b_app.deleted_date_time.is_some(),
        "B's own application was deleted"
    );
    drop(state);
    s.wait_ready(&s.apps(), "a", "True", Some("Ready")).await;
    s.teardown().await;
}

/// With `Application.ReadWrite.OwnedBy` alone (the scenario's admin), the deleted-items
/// listing is 403: an Application whose status lost its ids while its Entra application
/// sits in deleted items (holding the uniqueName) reports `InsufficientPermissions` naming
/// `Application.Read.All`, registers nothing new, and recovers once the application is
/// restored by hand (restore of an owned item is allowed under OwnedBy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_deleted_application_without_read_all_is_reported_not_replaced() {
    let s = Scenario::start("deleted_items_denied", Profile::Ideal).await;
    s.create_app("held", json!({})).await;
    let (app, key) = ready_app(&s, "held").await;
    let st = status_of(&app);
    let (client_id, object_id) = (st.client_id.unwrap(), st.application_object_id.unwrap());
    // Deleted out of band, and status loses the id. A pass already under way may still
    // restore it by the id it read: then do it again, until a pass meets the deleted item
    // with no id to restore by.
    let live = |s: &Scenario| {
        s.emu
            .state()
            .application(&client_id)
            .is_some_and(|a| a.deleted_date_time.is_none())
    };
    let failed = wait_for(
        "the refused deleted-items listing to be reported",
        TIMEOUT,
        || async {
            let app = s.apps().get("held").await?;
            let condition = Scenario::ready_condition(&app);
            if condition["reason"] == "InsufficientPermissions" {
                return Ok::<_, kube::Error>(Some(app));
            }
            if live(&s) {
                graph(
                    &s,
                    reqwest::Method::DELETE,
                    &format!("/applications/{object_id}"),
                    None,
                )
                .await;
            }
            if status_of(&app).application_object_id.is_some() {
                let forget = json!({"status": {"applicationObjectId": null}});
                s.apps()
                    .patch_status("held", &PatchParams::default(), &Patch::Merge(&forget))
                    .await?;
                poke(&s, "held").await;
            }
            Ok(None)
        },
    )
    .await;
    let message = Scenario::ready_condition(&failed)["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("Application.Read.All"), "{message}");
    assert!(message.contains("deletedItems"), "{message}");
    assert!(
        s.requests_seen("deletedItems.list", "", Some(403)) >= 1,
        "the listing was asked and refused"
    );
    let warned = warnings(&s, "held", &["InsufficientPermissions"]).await;
    assert!(
        warned.iter().any(|w| w.contains("Application.Read.All")),
        "{warned:?}"
    );
    let ours = |s: &Scenario| {
        let uid = app.metadata.uid.clone().unwrap();
        s.emu
            .state()
            .applications()
            .filter(|a| a.tags.iter().any(|t| t.ends_with(&uid)))
            .count()
    };
    assert_eq!(ours(&s), 1, "no second application");

    // Restored by hand: the next pass finds it by uniqueName, same client, same key.
    let restored = graph(
        &s,
        reqwest::Method::POST,
        &format!("/directory/deletedItems/{object_id}/restore"),
        Some(json!({})),
    )
    .await;
    assert!(restored.is_success(), "{restored}");
    poke(&s, "held").await;
    let (app, now_key) = ready_app(&s, "held").await;
    assert_eq!(status_of(&app).client_id.as_deref(), Some(client_id.as_str()));
    assert_eq!(now_key, key);
    assert_eq!(ours(&s), 1);
    s.teardown().await;
}

/// A new service principal replicates for a while (6 s here), and the token endpoint answers
/// AADSTS7000229 for its client meanwhile (contract §1.1, §5): the operator proves the one
/// secret it issued again later, as a secret still activating, and issues no second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicating_service_principal_costs_no_second_password() {
    let cfg = sandbox::graph::EmulatorConfig {
        replication_lag: std::time::Duration::from_secs(6),
        ..Default::default()
    };
    let s = Scenario::start_with_config("sp_replicating", cfg, support::operator::operator().await).await;
    s.create_app("fresh", json!({})).await;
    let (app, key) = ready_app(&s, "fresh").await;
    let client_id = status_of(&app).client_id.unwrap();
    let object_id = status_of(&app).application_object_id.unwrap();
    let requests = s.emu.requests();
    let refused = requests
        .iter()
        .filter(|r| r.operation == "token.v2" && r.status == 401)
        .filter(|r| r.app_id.as_deref() == Some(client_id.as_str()))
        .count();
    assert!(
        refused >= 1,
        "a token request met the replicating service principal"
    );
    assert_eq!(
        s.requests_seen("application.addPassword", &object_id, Some(200)),
        1,
        "one password issued"
    );
    assert_eq!(provider_keys(&s, &client_id), vec![key]);
    s.teardown().await;
}
