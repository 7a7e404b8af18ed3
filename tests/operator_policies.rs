//! Policies and flags end to end: a tenant policy capping secret lifetimes, the provider's
//! `deletedApplications: Purge` (with `deletionPolicy: Orphan` too), and the `dcr-operator
//! run` flags `--namespaces`, `--log-format json` and the metrics and health endpoints.
//!
//! Every test runs an operator process of its own ([`OperatorProcess`], some with extra
//! flags), one at a time: two operators on one cluster would race. No shared operator runs
//! in this binary.

#[macro_use]
mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use dcr_operator::crd::Application;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use sandbox::graph::{EmulatorConfig, FaultConfig};
use serde_json::{json, Value};
use support::cluster::{cluster, wait_deleted, wait_for, TIMEOUT};
use support::operator::{emulator_ca_path, operator_kubeconfig, OperatorProcess, CLUSTER_NAME};
use support::scenario::{secret_data, Profile, Scenario};
use tokio::sync::{Mutex, MutexGuard};

/// One operator process at a time on the cluster.
static ONE_OPERATOR: Mutex<()> = Mutex::const_new(());

/// A scenario reconciled by an operator process of this test's own.
struct Run {
    s: Scenario,
    op: OperatorProcess,
    _one: MutexGuard<'static, ()>,
}

impl Run {
    /// Starts an operator with the harness's flags plus `args`, as the operator's own
    /// identity (config/rbac's ClusterRole, so the tests prove it is enough), then the
    /// scenario (an emulator configured as `emulator`, a provider and a strategy admitting
    /// the scenario's namespace).
    async fn start(test: &str, emulator: EmulatorConfig, args: &[&str]) -> Run {
        let one = ONE_OPERATOR.lock().await;
        let op = OperatorProcess::start_with_kubeconfig(
            operator_kubeconfig().await,
            &emulator_ca_path().await,
            args,
        )
        .await;
        let s = Scenario::start_with_config(test, emulator, op.operator()).await;
        Run { s, op, _one: one }
    }

    /// Deletes the test's objects while the operator still runs, then stops it.
    async fn finish(self) {
        let Run { s, op, _one } = self;
        s.teardown().await;
        drop(op);
    }
}

fn status_of(app: &Application) -> dcr_operator::crd::ApplicationStatus {
    app.status.clone().unwrap_or_default()
}

/// Touches an Application so it is reconciled now (a harmless event).
async fn poke(api: &Api<Application>, name: &str) {
    let patch =
        json!({"metadata": {"annotations": {"test.dcr-operator.io/poke": uuid::Uuid::new_v4().to_string()}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// (type, reason, note) of the Events about `name`.
fn events_about(events: &[Event], name: &str) -> Vec<(String, String, String)> {
    events
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                e.note.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// Switches the scenario's provider to `deletedApplications: Purge` and waits until the
/// provider and the strategy are Ready for it.
async fn purge_deleted_applications(s: &Scenario) {
    let mut spec = s.provider_spec();
    spec["azureAD"]["deletedApplications"] = json!("Purge");
    s.apply_provider_spec(spec).await;
    s.wait_ready(&s.providers(), &s.provider, "True", Some("Ready"))
        .await;
    s.wait_ready(&s.strategies(), &s.strategy, "True", Some("Ready"))
        .await;
}

/// A Graph call with the admin app's token (the scenarios here inject no faults into it).
async fn graph_post(s: &Scenario, path: &str, body: Value) -> reqwest::StatusCode {
    s.emu
        .http_client()
        .post(format!("{}{path}", s.emu.graph_v1()))
        .bearer_auth(s.emu.mint_token(&s.admin))
        .json(&body)
        .send()
        .await
        .expect("graph call")
        .status()
}

// ---- 1. a tenant policy capping secret lifetimes --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_lifetime_cap_is_reported_once_and_a_lower_lifetime_gets_ready() {
    // The tenant refuses secrets living longer than 48 h; the strategy issues 720 h ones.
    // Secrets activate 2 s after issue, so every Ready below takes more than 2 s.
    let emulator = Profile::Ideal
        .config()
        .with_password_max_lifetime(Some(Duration::from_secs(48 * 3600)))
        .with_secret_activation_delay(Duration::from_secs(2));
    let r = Run::start("policy-lifetime-cap", emulator, &[]).await;
    let s = &r.s;
    s.wait_ready(&s.strategies(), &s.strategy, "True", Some("Ready"))
        .await;

    s.create_app("capped", json!({})).await;
    let app = s
        .wait_ready(&s.apps(), "capped", "False", Some("CredentialPolicyViolation"))
        .await;
    let message = Scenario::ready_condition(&app)["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("CredentialInvalidLifetimeAsPerAppPolicy")
            && message.contains("spec.credentials.lifetime"),
        "the message names the provider's code and what to change: {message}"
    );
    let transitioned = Scenario::ready_condition(&app)["lastTransitionTime"].clone();
    let object_id = status_of(&app)
        .application_object_id
        .expect("registered before the secret was refused");
    assert!(status_of(&app).credential.is_none());
    assert!(
        s.secrets().get_opt("capped-credentials").await.unwrap().is_none(),
        "no Secret without a secret"
    );
    wait_for("a Warning Event CredentialPolicyViolation", TIMEOUT, || async {
        let events = events_about(&s.events().await, "capped");
        events
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "CredentialPolicyViolation")
    })
    .await;

    let refused = || s.requests_seen("application.addPassword", &object_id, Some(400));
    let first = refused();
    assert!(
        (1..=2).contains(&first),
        "one attempt, and one more for the status write's watch event: {first}"
    );

    // A window in which a retry loop (hot, or the error policy's 1 s, 2 s, 4 s backoff)
    // would have tried again: another Application, within the cap, is registered and
    // proven (its secret activates 2 s after issue).
    s.create_app(
        "within",
        json!({"credentials": {"lifetime": "24h", "renewBefore": "8h"}}),
    )
    .await;
    let within = s.wait_ready(&s.apps(), "within", "True", Some("Ready")).await;
    let settled = refused();
    eprintln!("refused addPassword requests: {first} when Ready=False was seen, {settled} after the window");
    assert!(
        settled <= 2,
        "no retry loop: {settled} refused addPassword requests for one refusal"
    );

    // A harmless event is one new attempt, not the start of a loop: measured over a
    // rotation of the other Application (again more than 2 s).
    poke(&s.apps(), "capped").await;
    wait_for(
        "the event to be reconciled (one new attempt)",
        TIMEOUT,
        || async { refused() > settled },
    )
    .await;
    let within_key = status_of(&within).credential.unwrap().key_id;
    let patch = json!({"metadata": {"annotations": {"dcr-operator.io/rotate": "policies-1"}}});
    s.apps()
        .patch("within", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for("the other Application to rotate", TIMEOUT, || async {
        let st = status_of(&s.apps().get("within").await?);
        let key = st.credential.map(|c| c.key_id).unwrap_or_default();
        Ok::<_, kube::Error>(key != within_key && st.pending_credential.is_none())
    })
    .await;
    assert_eq!(refused(), settled + 1, "exactly one new attempt for the event");
    let app = s
        .wait_ready(&s.apps(), "capped", "False", Some("CredentialPolicyViolation"))
        .await;
    assert_eq!(
        Scenario::ready_condition(&app)["lastTransitionTime"],
        transitioned,
        "still the same refusal"
    );

    // Lowering the lifetime within the cap: a working secret of that lifetime.
    let before_fix = refused();
    let patch = json!({"spec": {"credentials": {"lifetime": "24h", "renewBefore": "8h"}}});
    s.apps()
        .patch("capped", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let app = s.wait_ready(&s.apps(), "capped", "True", Some("Ready")).await;
    let credential = status_of(&app).credential.expect("a credential");
    let lifetime = credential
        .expires_at
        .0
        .duration_since(credential.issued_at.0)
        .as_secs();
    assert!(
        (24 * 3600 - 60..=24 * 3600 + 60).contains(&lifetime),
        "issued for 24h: {lifetime}s"
    );
    let data = secret_data(&s.secrets().get("capped-credentials").await.unwrap());
    s.token_with(&data["token_url"], &data["client_id"], &data["client_secret"])
        .await
        .expect("the secret works");
    assert_eq!(refused(), before_fix, "no refusal after the fix");
    let passwords = s.emu.state().application(&object_id).map(|a| a.passwords.len());
    assert_eq!(passwords, Some(1), "one password, the delivered one");
    let within = secret_data(&s.secrets().get("within-credentials").await.unwrap());
    s.assert_no_secret_leaks(&[
        &data["client_secret"],
        &within["client_secret"],
        &s.admin.client_secret,
    ])
    .await;
    r.finish().await;
}

// ---- 2. deletedApplications: Purge ----------------------------------------------------------

both_profiles!(purge_deletes_the_entra_application_permanently);

async fn purge_deletes_the_entra_application_permanently(test: &str, profile: Profile) {
    let r = Run::start(test, profile.config(), &[]).await;
    let s = &r.s;
    purge_deleted_applications(s).await;
    s.create_app("gone", json!({})).await;
    let app = s.wait_ready(&s.apps(), "gone", "True", Some("Ready")).await;
    let uid = app.uid().unwrap();
    let st = status_of(&app);
    let (client_id, object_id) = (st.client_id.unwrap(), st.application_object_id.unwrap());
    let data = secret_data(&s.secrets().get("gone-credentials").await.unwrap());

    let deleted_at = chrono::Utc::now();
    s.apps().delete("gone", &DeleteParams::default()).await.unwrap();
    wait_deleted(&s.apps(), "gone", TIMEOUT).await;
    let state = s.emu.state();
    assert!(
        state.application(&object_id).is_none(),
        "purged, not in deleted items: {:#?}",
        state.application(&object_id)
    );
    assert!(
        state
            .applications()
            .all(|a| !a.tags.iter().any(|t| t.ends_with(&uid))),
        "nothing left for the Application"
    );
    assert!(state
        .service_principal(&client_id)
        .is_none_or(|sp| sp.deleted_date_time.is_some()));
    assert_eq!(
        s.requests_seen("deletedItems.delete", &object_id, Some(204)),
        1,
        "one purge"
    );
    assert!(
        s.token_with(&data["token_url"], &client_id, &data["client_secret"])
            .await
            .is_err(),
        "the purged client's secret is dead"
    );
    let events = events_about(&s.events().await, "gone");
    assert!(
        events
            .iter()
            .any(|(_, r, note)| r == "Deleted" && note.contains("purged")),
        "a Deleted Event saying it was purged: {events:?}"
    );
    let warnings: Vec<_> = s
        .events()
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("gone"))
        .filter(|e| {
            let at = serde_json::to_value(e).unwrap()["eventTime"].clone();
            at.as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_none_or(|t| t >= deleted_at)
        })
        .map(|e| (e.reason, e.note))
        .collect();
    assert!(
        warnings.is_empty(),
        "a clean delete warns about nothing: {warnings:#?}"
    );
    s.assert_no_secret_leaks(&[&data["client_secret"], &s.admin.client_secret])
        .await;
    r.finish().await;
}

/// The deletion replicates too: for 3 s after the delete, deleted items do not show the
/// application (`EmulatorConfig::deleted_items_lag`), so a purge right after the delete
/// answers 404. The purge must be retried until it lands, not taken as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_waits_for_the_deleted_item_to_replicate() {
    let emulator = Profile::Ideal
        .config()
        .with_deleted_items_lag(Duration::from_secs(3));
    let r = Run::start("purge-deleted-lag", emulator, &[]).await;
    let s = &r.s;
    purge_deleted_applications(s).await;
    s.create_app("lagging", json!({})).await;
    let app = s.wait_ready(&s.apps(), "lagging", "True", Some("Ready")).await;
    let object_id = status_of(&app).application_object_id.unwrap();
    let data = secret_data(&s.secrets().get("lagging-credentials").await.unwrap());
    s.apps()
        .delete("lagging", &DeleteParams::default())
        .await
        .unwrap();
    wait_deleted(&s.apps(), "lagging", TIMEOUT).await;
    let left = s
        .emu
        .state()
        .application(&object_id)
        .map(|a| (a.deleted_date_time, a.tags.clone()));
    let requests: Vec<String> = s
        .emu
        .requests()
        .iter()
        .filter(|r| r.path.contains(&object_id) && r.method == "DELETE")
        .map(|r| format!("{} {} {}", r.operation, r.status, r.time.format("%H:%M:%S%.3f")))
        .collect();
    let events = events_about(&s.events().await, "lagging");
    s.assert_no_secret_leaks(&[&data["client_secret"], &s.admin.client_secret])
        .await;
    r.finish().await;
    assert!(
        left.is_none(),
        "still in deleted items (deletedDateTime, tags): {left:?}; DELETE requests: {requests:#?}; Events: {events:#?}"
    );
}

/// The Application is deleted while its new provider-side application is still replicating
/// (reads and writes addressed to it answer 404 for 5 s, as Entra's do for a while): the
/// operator stops right after recording the application's ids (a crash, a rollout), the
/// Application is deleted, and the operator comes back within the replication window. The
/// delete must still remove and purge the application rather than take the 404 for "gone".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_within_the_replication_window_leaves_nothing_behind() {
    let emulator = Profile::Ideal
        .config()
        .with_replication_lag(Duration::from_secs(5));
    let mut r = Run::start("purge-replicating", emulator, &[]).await;
    purge_deleted_applications(&r.s).await;
    r.s.create_app("early", json!({})).await;
    let object_id = wait_for("the application's ids in status", TIMEOUT, || async {
        Ok::<_, kube::Error>(status_of(&r.s.apps().get("early").await?).application_object_id)
    })
    .await;
    r.op.kill().await;
    let s = &r.s;
    let uid = s.apps().get("early").await.unwrap().uid().unwrap();
    let created = s
        .emu
        .state()
        .application(&object_id)
        .map(|a| a.created_date_time)
        .expect("created");
    s.apps().delete("early", &DeleteParams::default()).await.unwrap();
    r.op.restart().await;
    let s = &r.s;
    wait_deleted(&s.apps(), "early", TIMEOUT).await;
    let state = s.emu.state();
    let left: Vec<_> = state
        .applications()
        .filter(|a| a.tags.iter().any(|t| t.ends_with(&uid)) || a.id == object_id)
        .map(|a| (a.id.clone(), a.deleted_date_time.is_some(), a.tags.clone()))
        .collect();
    let requests: Vec<String> = s
        .emu
        .requests()
        .iter()
        .filter(|r| r.path.contains(&object_id))
        .map(|r| {
            format!(
                "{} {} {} +{:.1}s",
                r.operation,
                r.status,
                r.path,
                (r.emulated_time - created).num_milliseconds() as f64 / 1000.0
            )
        })
        .collect();
    let events = events_about(&s.events().await, "early");
    s.assert_no_secret_leaks(&[&s.admin.client_secret]).await;
    r.finish().await;
    assert!(
        left.is_empty(),
        "left at the provider (id, soft-deleted, tags): {left:?}; requests for it: {requests:#?}; Events: {events:#?}"
    );
}

/// A registration while Entra replicates the new objects: the token endpoint does not know
/// the new service principal yet, and a read of it answers 404 for a moment. That is lag,
/// not drift: no "deleted out of band" Warning, one service principal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_under_replication_lag_reports_no_drift() {
    let emulator = Profile::Ideal
        .config()
        .with_replication_lag(Duration::from_secs(2));
    let r = Run::start("lag-no-drift", emulator, &[]).await;
    let s = &r.s;
    s.create_app("fresh", json!({})).await;
    let app = s.wait_ready(&s.apps(), "fresh", "True", Some("Ready")).await;
    let client_id = status_of(&app).client_id.unwrap();
    let sps = s
        .emu
        .state()
        .service_principals()
        .filter(|sp| sp.app_id == client_id)
        .count();
    let events = events_about(&s.events().await, "fresh");
    let data = secret_data(&s.secrets().get("fresh-credentials").await.unwrap());
    s.assert_no_secret_leaks(&[&data["client_secret"], &s.admin.client_secret])
        .await;
    r.finish().await;
    assert_eq!(sps, 1, "one service principal");
    assert!(
        !events.iter().any(|(_, r, _)| r == "ServicePrincipalRecreated"),
        "no drift reported for lag: {events:#?}"
    );
}

// ---- 3. deletionPolicy: Orphan under a Purge provider ---------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_policy_beats_purge_and_the_client_is_not_reported() {
    let r = Run::start("orphan-purge", Profile::Ideal.config(), &[]).await;
    let s = &r.s;
    purge_deleted_applications(s).await;
    s.create_app("kept", json!({"deletionPolicy": "Orphan"})).await;
    let app = s.wait_ready(&s.apps(), "kept", "True", Some("Ready")).await;
    let st = status_of(&app);
    let (client_id, object_id) = (st.client_id.unwrap(), st.application_object_id.unwrap());
    let data = secret_data(&s.secrets().get("kept-credentials").await.unwrap());

    s.apps().delete("kept", &DeleteParams::default()).await.unwrap();
    wait_deleted(&s.apps(), "kept", TIMEOUT).await;
    let state = s.emu.state();
    let kept = state.application(&object_id).expect("the application stays");
    assert!(kept.deleted_date_time.is_none(), "neither deleted nor purged");
    assert!(
        kept.tags.iter().all(|t| !t.starts_with("dcr-operator")),
        "released: this cluster's tags dropped: {:?}",
        kept.tags
    );
    assert!(kept.tags.iter().any(|t| t == "e2e"), "other tags kept");
    assert_eq!(s.requests_seen("application.delete", &object_id, None), 0);
    assert_eq!(s.requests_seen("deletedItems.delete", &object_id, None), 0);
    s.token_with(&data["token_url"], &client_id, &data["client_secret"])
        .await
        .expect("the released client still works");

    // A real orphan (tagged by this cluster, named by its scheme, owned by the operator, no
    // Application) next to it: once the provider has swept and counts that one, it counts
    // only that one.
    let gone_uid = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "displayName": "left behind",
        "uniqueName": format!("dcr-{CLUSTER_NAME}-{gone_uid}"),
        "tags": ["dcr-operator", format!("dcr-operator:cluster:{CLUSTER_NAME}"), format!("dcr-operator:uid:{gone_uid}")],
        "owners@odata.bind": [format!("https://graph.microsoft.com/v1.0/directoryObjects/{}", s.admin.sp_id)]
    });
    assert!(graph_post(s, "/applications", body).await.is_success());
    let patch = json!({"metadata": {"annotations": {"test.dcr-operator.io/poke": "1"}}});
    s.providers()
        .patch(&s.provider, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(
        "the provider to count exactly the real orphan",
        TIMEOUT,
        || async {
            let p = s.providers().get(&s.provider).await?;
            Ok::<_, kube::Error>(p.status.is_some_and(|st| st.orphaned_applications == 1))
        },
    )
    .await;
    let state = s.emu.state();
    let kept = state.application(&object_id).unwrap();
    assert!(kept.deleted_date_time.is_none());
    assert!(kept.tags.iter().all(|t| !t.starts_with("dcr-operator")));
    let events = events_about(&s.events().await, "kept");
    assert!(
        events.iter().any(|(_, r, _)| r == "Orphaned"),
        "an Orphaned Event: {events:?}"
    );
    s.assert_no_secret_leaks(&[&data["client_secret"], &s.admin.client_secret])
        .await;
    r.finish().await;
}

// ---- 4a. --namespaces -------------------------------------------------------------------------

/// Creates Application `name` of the scenario's strategy in namespace `ns`.
async fn create_app_in(s: &Scenario, ns: &str, name: &str) -> Api<Application> {
    let api: Api<Application> = Api::namespaced(s.client.clone(), ns);
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "dcr-operator.io/v1alpha1", "kind": "Application",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"authStrategyRef": {"name": s.strategy}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &app)
        .await
        .expect("application");
    api
}

/// Not reconciled at all: no finalizer, no status, nothing at the provider, no Secret.
async fn assert_untouched(s: &Scenario, name: &str) {
    let app = s.apps().get(name).await.unwrap();
    assert!(app.finalizers().is_empty(), "finalizers: {:?}", app.finalizers());
    assert!(app.status.is_none(), "status: {:?}", app.status);
    let tag = format!("dcr-operator:namespace:{}", s.ns.name());
    assert!(s.emu.state().applications().all(|a| !a.tags.contains(&tag)));
    assert!(s
        .secrets()
        .get_opt(&format!("{name}-credentials"))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_flag_reconciles_only_the_listed_namespaces() {
    let cluster = cluster().await;
    let a = cluster.namespace("policies-listed-a").await;
    let b = cluster.namespace("policies-listed-b").await;
    let listed = format!("{},{}", a.name(), b.name());
    // The scenario's own namespace is the unlisted one.
    let r = Run::start(
        "policies-unlisted",
        Profile::Ideal.config(),
        &["--namespaces", &listed],
    )
    .await;
    let s = &r.s;
    s.apply_strategy(json!({"names": [a.name(), b.name(), s.ns.name()]}))
        .await;
    s.wait_ready(&s.strategies(), &s.strategy, "True", Some("Ready"))
        .await;

    s.create_app("outside", json!({})).await;
    let in_a = create_app_in(s, a.name(), "inside").await;
    let in_b = create_app_in(s, b.name(), "inside").await;
    s.wait_ready(&in_a, "inside", "True", Some("Ready")).await;
    s.wait_ready(&in_b, "inside", "True", Some("Ready")).await;
    assert_untouched(s, "outside").await;

    // A later event for the unlisted one, then work in a listed namespace.
    poke(&s.apps(), "outside").await;
    create_app_in(s, a.name(), "later").await;
    s.wait_ready(&in_a, "later", "True", Some("Ready")).await;
    assert_untouched(s, "outside").await;
    let tagged: HashSet<String> = s
        .emu
        .state()
        .live_applications()
        .flat_map(|a| a.tags.clone())
        .filter(|t| t.starts_with("dcr-operator:namespace:"))
        .collect();
    assert_eq!(
        tagged,
        [a.name(), b.name()]
            .iter()
            .map(|n| format!("dcr-operator:namespace:{n}"))
            .collect(),
        "registered only for the listed namespaces"
    );

    let mut secrets = vec![];
    for (api, ns, name) in [
        (&in_a, a.name(), "inside"),
        (&in_a, a.name(), "later"),
        (&in_b, b.name(), "inside"),
    ] {
        let sec: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(s.client.clone(), ns);
        secrets.push(
            secret_data(&sec.get(&format!("{name}-credentials")).await.unwrap())["client_secret"].clone(),
        );
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for (api, name) in [(&in_a, "inside"), (&in_a, "later"), (&in_b, "inside")] {
        wait_deleted(api, name, TIMEOUT).await;
    }
    let mut all: Vec<&str> = secrets.iter().map(String::as_str).collect();
    all.push(&s.admin.client_secret);
    s.assert_no_secret_leaks(&all).await;
    r.finish().await;
}

// ---- 4b. --log-format json -----------------------------------------------------------------

/// Runs an operator with `--log-format json` until Application `logged` is Ready; returns
/// the run and every line of its log parsed (each must be a JSON object).
async fn json_logged_run(test: &str) -> (Run, Vec<Value>) {
    let r = Run::start(test, Profile::Ideal.config(), &["--log-format", "json"]).await;
    r.s.create_app("logged", json!({})).await;
    r.s.wait_ready(&r.s.apps(), "logged", "True", Some("Ready")).await;
    let lines =
        r.op.logs()
            .lines()
            .enumerate()
            .map(|(i, line)| {
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("line {} of the log is not JSON ({e}): {line}", i + 1));
                assert!(v.is_object(), "line {} is not an object: {line}", i + 1);
                v
            })
            .collect();
    (r, lines)
}

/// The spans (outermost first) a JSON log line was written in.
fn spans_of(line: &Value) -> Vec<Value> {
    line["spans"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_one_json_object_per_line() {
    let (r, lines) = json_logged_run("policies-json-log").await;
    let s = &r.s;
    let data = secret_data(&s.secrets().get("logged-credentials").await.unwrap());
    assert!(lines.len() > 10, "the operator logged: {} lines", lines.len());
    let levels = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];
    for v in &lines {
        let ts = v["timestamp"]
            .as_str()
            .unwrap_or_else(|| panic!("no timestamp: {v}"));
        chrono::DateTime::parse_from_rfc3339(ts).unwrap_or_else(|e| panic!("timestamp {ts}: {e}"));
        assert!(
            levels.contains(&v["level"].as_str().unwrap_or_default()),
            "level: {v}"
        );
        assert!(v["message"].is_string(), "message: {v}");
        assert!(v["target"].is_string(), "target: {v}");
    }
    assert!(
        lines
            .iter()
            .any(|v| v["message"] == "dcr-operator starting" && v["level"] == "INFO"),
        "the start line"
    );
    // What is logged while reconciling the Application says which one: the operator's
    // reconcile span names its kind and namespace, kube-runtime's names the object.
    let object_ref = format!("Application.v1alpha1.dcr-operator.io/logged.{}", s.ns.name());
    let ours = lines
        .iter()
        .filter(|v| {
            let spans = spans_of(v);
            spans
                .iter()
                .any(|sp| sp["kind"] == "Application" && sp["namespace"] == s.ns.name())
                && spans.iter().any(|sp| sp["object.ref"] == object_ref.as_str())
        })
        .count();
    assert!(
        ours > 0,
        "lines in the spans of the Application's reconcile name it"
    );
    s.assert_no_secret_leaks(&[&data["client_secret"], &s.admin.client_secret])
        .await;
    r.finish().await;
}

/// The reconcile span names the Application in a field `object`: a field `name` would collide
/// with the key under which the JSON formatter writes the span's own name (`"name":
/// "reconcile"`), and JSON parsers keep only one of the two, so log pipelines would lose it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_spans_keep_the_application_name() {
    let (r, lines) = json_logged_run("policies-json-name").await;
    let ns = r.s.ns.name().to_string();
    let reconcile_spans: Vec<Value> = lines
        .iter()
        .flat_map(spans_of)
        .filter(|sp| sp["kind"] == "Application" && sp["namespace"] == ns.as_str())
        .collect();
    let data = secret_data(&r.s.secrets().get("logged-credentials").await.unwrap());
    r.s.assert_no_secret_leaks(&[&data["client_secret"], &r.s.admin.client_secret])
        .await;
    r.finish().await;
    assert!(!reconcile_spans.is_empty(), "reconcile spans were logged");
    assert!(
        reconcile_spans.iter().all(|sp| sp["object"] == "logged"),
        "the Application's name, parsed: {}",
        reconcile_spans[0]
    );
}

// ---- 4c. metrics and health endpoints --------------------------------------------------------

/// TCP ports process `pid` listens on (from /proc: its socket inodes, the kernel's tables).
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| {
            let t = t.to_string_lossy().to_string();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut ports = vec![];
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && cols[3] == "0A" && inodes.contains(cols[9]) {
                let port = cols[1].rsplit(':').next().unwrap_or_default();
                if let Ok(p) = u16::from_str_radix(port, 16) {
                    ports.push(p);
                }
            }
        }
    }
    ports.sort_unstable();
    ports
}

/// One sample: metric name and labels.
type Series = (String, BTreeMap<String, String>);

/// The samples of a Prometheus text exposition.
fn parse_metrics(text: &str) -> Vec<(Series, f64)> {
    let mut out = vec![];
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').expect("label=value");
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.push(((name.to_string(), labels), value.parse().expect("a number")));
    }
    out
}

/// The value of the sample `name` whose labels include `labels`, if exactly one matches.
fn sample(samples: &[(Series, f64)], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = samples
        .iter()
        .filter(|((n, l), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
        .collect();
    match found.as_slice() {
        [v] => Some(*v),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_endpoints_report_what_happened() {
    // The first two addPassword requests are throttled (Retry-After 0.2 s).
    let emulator = Profile::Ideal.config().with_faults(
        FaultConfig::throttle_next(2, Duration::from_millis(200)).only(&["application.addPassword"]),
    );
    let r = Run::start("policies-metrics", emulator, &[]).await;
    let s = &r.s;
    s.create_app("metered", json!({})).await;
    s.create_app(
        "unready",
        json!({"authStrategyRef": {"name": "no-such-strategy"}}),
    )
    .await;
    let app = s.wait_ready(&s.apps(), "metered", "True", Some("Ready")).await;
    s.wait_ready(&s.apps(), "unready", "False", Some("StrategyNotFound"))
        .await;
    let expires = status_of(&app).credential.unwrap().expires_at.0.as_second() as f64;

    // The harness passes --metrics-addr and --health-addr 127.0.0.1:0: find the ports.
    let http = reqwest::Client::new();
    let ports = listening_ports(r.op.pid());
    let mut metrics_url = None;
    let mut health_url = None;
    for port in &ports {
        let base = format!("http://127.0.0.1:{port}");
        let m = http.get(format!("{base}/metrics")).send().await.unwrap();
        if m.status().is_success() {
            metrics_url = Some(format!("{base}/metrics"));
        }
        let h = http.get(format!("{base}/healthz")).send().await.unwrap();
        if h.status().is_success() {
            health_url = Some(base);
        }
    }
    let metrics_url = metrics_url.unwrap_or_else(|| panic!("no /metrics on ports {ports:?}"));
    let health = health_url.unwrap_or_else(|| panic!("no /healthz on ports {ports:?}"));
    assert_eq!(ports.len(), 2, "a metrics and a health listener: {ports:?}");
    for path in ["/healthz", "/readyz"] {
        let resp = http.get(format!("{health}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }

    let ns = s.ns.name().to_string();
    let emulator_count = |op: &str, status: u16| s.requests_seen(op, "", Some(status)) as f64;
    let samples = wait_for("the metrics to show what happened", TIMEOUT, || async {
        let text = http.get(&metrics_url).send().await?.text().await?;
        let m = parse_metrics(&text);
        let app_labels = |name: &'static str| [("namespace", ns.as_str()), ("name", name)];
        let checks = [
            (
                "the expiry of the delivered secret",
                sample(
                    &m,
                    "dcr_application_credential_expiration_timestamp_seconds",
                    &app_labels("metered"),
                ) == Some(expires),
            ),
            (
                "no expiry without a secret",
                sample(
                    &m,
                    "dcr_application_credential_expiration_timestamp_seconds",
                    &app_labels("unready"),
                )
                .is_none(),
            ),
            (
                "metered Ready",
                sample(&m, "dcr_application_ready", &app_labels("metered")) == Some(1.0),
            ),
            (
                "unready not Ready",
                sample(&m, "dcr_application_ready", &app_labels("unready")) == Some(0.0),
            ),
            (
                "addPassword answers as the provider counted them",
                sample(
                    &m,
                    "dcr_graph_requests_total",
                    &[("operation", "application.addPassword"), ("status", "200")],
                ) == Some(emulator_count("application.addPassword", 200))
                    && sample(
                        &m,
                        "dcr_graph_requests_total",
                        &[("operation", "application.addPassword"), ("status", "429")],
                    ) == Some(emulator_count("application.addPassword", 429)),
            ),
            (
                "throttled addPassword requests",
                sample(
                    &m,
                    "dcr_graph_throttled_total",
                    &[("operation", "application.addPassword")],
                ) == Some(emulator_count("application.addPassword", 429)),
            ),
        ];
        let failed: Vec<&str> = checks.iter().filter(|(_, ok)| !ok).map(|(w, _)| *w).collect();
        Ok::<_, reqwest::Error>(if failed.is_empty() {
            Some(m)
        } else {
            eprintln!("metrics not there yet: {failed:?}");
            None
        })
    })
    .await;
    assert_eq!(
        emulator_count("application.addPassword", 429),
        2.0,
        "the provider throttled twice"
    );
    for kind in ["DcrProvider", "AuthStrategy", "Application"] {
        let ok = sample(
            &samples,
            "dcr_reconciliations_total",
            &[("kind", kind), ("result", "success")],
        )
        .unwrap_or(0.0);
        assert!(ok >= 1.0, "successful {kind} reconciles: {ok}");
        let count = sample(
            &samples,
            "dcr_reconcile_duration_seconds_count",
            &[("kind", kind)],
        )
        .unwrap_or(0.0);
        let all: f64 = samples
            .iter()
            .filter(|((n, l), _)| {
                n == "dcr_reconciliations_total" && l.get("kind").map(String::as_str) == Some(kind)
            })
            .map(|(_, v)| v)
            .sum();
        assert_eq!(count, all, "one duration per {kind} reconcile");
        assert_eq!(
            sample(
                &samples,
                "dcr_reconcile_duration_seconds_bucket",
                &[("kind", kind), ("le", "+Inf")]
            ),
            Some(count)
        );
    }
    assert_eq!(
        sample(
            &samples,
            "dcr_orphaned_applications",
            &[("provider", s.provider.as_str())]
        ),
        Some(0.0)
    );
    let data = secret_data(&s.secrets().get("metered-credentials").await.unwrap());
    s.assert_no_secret_leaks(&[&data["client_secret"], &s.admin.client_secret])
        .await;
    r.finish().await;
}
