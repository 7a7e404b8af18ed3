//! Crash safety (issue 6): the operator is stopped at each step boundary of the Application
//! flow and started again, and must converge with exactly one Entra application per
//! Application, exactly the passwords its Secret records, and a Secret that holds a working
//! secret once Ready.
//!
//! "Stopped there" is exact: the Graph emulator processes the step's request and holds its
//! answer (a lost response, `FaultConfig::hold_after_apply`); once the request log shows it
//! held, the operator gets SIGKILL (no chance to clean up), the hold is cleared, and a new
//! operator process starts. The boundary "after the Secret write" is the token request that
//! proves the new secret, which comes right after the write and before anything else.
//!
//! Each test runs its own operator process ([`OperatorProcess`]); one at a time, since two
//! operators on one cluster would race. No shared operator runs in this binary.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use dcr_operator::crd::Application;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::ResourceExt;
use sandbox::graph::{EmulatorConfig, FaultConfig, GraphEmulator, RequestRecord};
use serde_json::{json, Value};
use support::cluster::{wait_deleted, wait_for, TIMEOUT};
use support::operator::{emulator_ca_path, OperatorProcess, CLUSTER_NAME};
use support::scenario::{secret_data, Profile, Scenario};
use tokio::sync::{Mutex, MutexGuard};

/// One operator process at a time on the cluster.
static ONE_OPERATOR: Mutex<()> = Mutex::const_new(());

const APP: &str = "crash";
const SECRET: &str = "crash-credentials";
const CREDENTIAL_ANNOTATION: &str = "dcr-operator.io/credential";
/// Longer than the operator's replication window (120 s), within which a password nobody
/// records may still be a write in flight and is left alone.
const PAST_REPLICATION_WINDOW: Duration = Duration::from_secs(600);

struct Crash {
    s: Scenario,
    op: OperatorProcess,
    _one: MutexGuard<'static, ()>,
}

impl Crash {
    /// A scenario (well-behaved Graph) with its own operator process and a Ready strategy
    /// whose superseded secrets are revoked after `revoke_previous_after`.
    async fn start(test: &str, revoke_previous_after: &str) -> Crash {
        Self::start_with(test, revoke_previous_after, Profile::Ideal.config()).await
    }

    async fn start_with(test: &str, revoke_previous_after: &str, emulator: EmulatorConfig) -> Crash {
        let one = ONE_OPERATOR.lock().await;
        let op = OperatorProcess::start(&emulator_ca_path().await, &[]).await;
        let s = Scenario::start_with_config(test, emulator, op.operator()).await;
        s.apply_strategy_with(
            json!({"names": [s.ns.name()]}),
            json!({"lifetime": "720h", "renewBefore": "240h", "revokePreviousAfter": revoke_previous_after}),
        )
        .await;
        s.wait_ready(&s.strategies(), &s.strategy, "True", Some("Ready"))
            .await;
        Crash { s, op, _one: one }
    }

    async fn restart(&mut self) {
        self.op.restart().await;
    }

    async fn app(&self) -> Application {
        self.s.apps().get(APP).await.expect("the Application")
    }

    /// Deletes the test's objects while the operator still runs, then stops it.
    async fn finish(self) {
        let Crash { s, op, _one } = self;
        s.teardown().await;
        drop(op);
    }
}

/// Holds the answers to `operations` (from `callers`, any if empty), runs `trigger`,
/// waits until the emulator has processed such a request, SIGKILLs the operator, clears
/// the hold and returns the held request. The operator stays stopped.
async fn kill_at(
    s: &Scenario,
    op: &mut OperatorProcess,
    operations: &[&str],
    callers: &[&str],
    trigger: impl std::future::Future<Output = ()>,
) -> RequestRecord {
    let emu = &s.emu;
    emu.set_faults(FaultConfig::hold_after_apply(operations).from_callers(callers));
    trigger.await;
    let held = |e: &GraphEmulator| {
        e.requests().into_iter().find(|r| {
            r.fault.as_deref() == Some("held")
                && operations.contains(&r.operation.as_str())
                && (callers.is_empty()
                    || r.app_id
                        .as_deref()
                        .is_some_and(|a| callers.iter().any(|c| c.eq_ignore_ascii_case(a))))
        })
    };
    assert!(
        emu.wait_for(TIMEOUT, |e| held(e).is_some()).await,
        "the operator never sent {operations:?}; requests: {:#?}",
        emu.requests()
    );
    op.kill().await;
    emu.set_faults(FaultConfig::none());
    held(emu).expect("seen above")
}

/// The key ids a Secret records: (live, every other: pending and superseded).
fn recorded_keys(secret: &k8s_openapi::api::core::v1::Secret) -> Result<(String, Vec<String>), String> {
    let raw = secret
        .annotations()
        .get(CREDENTIAL_ANNOTATION)
        .ok_or("no credential annotation")?;
    let v: Value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    let live = v["keyId"].as_str().ok_or("no keyId")?.to_string();
    let mut others: Vec<String> = v["previous"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["keyId"].as_str().map(str::to_string))
        .collect();
    if let Some(pending) = v["pending"]["keyId"].as_str() {
        others.push(pending.to_string());
    }
    Ok((live, others))
}

/// What converged looks like, checked until it holds: the Application Ready, exactly one
/// provider-side application for it (never a second one, not even deleted), one service
/// principal, the Secret recording one key and nothing pending or superseded, the provider
/// holding exactly that password, and the Secret's credentials obtaining a token. Returns
/// the live key id.
async fn assert_converged(s: &Scenario) -> String {
    let app = s.wait_ready(&s.apps(), APP, "True", Some("Ready")).await;
    let uid = app.uid().unwrap();
    let status = app.status.clone().unwrap();
    let client_id = status.client_id.clone().expect("clientId in status");
    let key = wait_for(
        "the provider to hold exactly the password the Secret records",
        TIMEOUT,
        || async {
            let secret = s.secrets().get(SECRET).await.map_err(|e| e.to_string())?;
            let (live, others) = recorded_keys(&secret)?;
            let state = s.emu.state();
            let at_provider: BTreeSet<String> = state
                .application(&client_id)
                .ok_or("no provider-side application")?
                .passwords
                .iter()
                .map(|p| p.key_id.clone())
                .collect();
            if others.is_empty() && at_provider == BTreeSet::from([live.clone()]) {
                Ok(Some(live))
            } else {
                Err(format!(
                    "Secret records {live} and {others:?}, the provider holds {at_provider:?}"
                ))
            }
        },
    )
    .await;

    let state = s.emu.state();
    let ours: Vec<_> = state
        .applications()
        .filter(|a| a.tags.iter().any(|t| t.ends_with(&uid)))
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "exactly one provider-side application, ever: {ours:#?}"
    );
    assert!(ours[0].deleted_date_time.is_none());
    assert_eq!(ours[0].app_id, client_id);
    assert_eq!(
        ours[0].unique_name.as_deref(),
        Some(format!("dcr-{CLUSTER_NAME}-{uid}").as_str())
    );
    let sps: Vec<_> = state
        .service_principals()
        .filter(|sp| sp.app_id == client_id)
        .collect();
    assert_eq!(sps.len(), 1, "exactly one service principal: {sps:#?}");
    assert!(sps[0].deleted_date_time.is_none());
    assert_eq!(status.service_principal_id.as_deref(), Some(sps[0].id.as_str()));
    assert_eq!(
        status.credential.as_ref().map(|c| c.key_id.as_str()),
        Some(key.as_str()),
        "status mirrors the Secret"
    );
    assert_secret_works(s, &client_id).await;
    key
}

/// The Secret's credentials obtain a token.
async fn assert_secret_works(s: &Scenario, client_id: &str) {
    let data = secret_data(&s.secrets().get(SECRET).await.expect("the Secret"));
    assert_eq!(data["client_id"], client_id);
    s.token_with(&data["token_url"], client_id, &data["client_secret"])
        .await
        .expect("the Secret's credentials obtain a token");
}

fn operations_seen(s: &Scenario, operation: &str) -> usize {
    s.emu
        .requests()
        .iter()
        .filter(|r| r.operation == operation)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_upsert() {
    let mut c = Crash::start("crash-upsert", "1m").await;
    let held = kill_at(&c.s, &mut c.op, &["application.upsert"], &[], async {
        c.s.create_app(APP, json!({})).await;
    })
    .await;
    assert_eq!(held.status, 201, "the upsert created the application");
    c.restart().await;
    assert_converged(&c.s).await;
    assert!(operations_seen(&c.s, "application.upsert") >= 2, "upserted again");
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_service_principal_create() {
    let mut c = Crash::start("crash-sp", "1m").await;
    let held = kill_at(&c.s, &mut c.op, &["servicePrincipal.create"], &[], async {
        c.s.create_app(APP, json!({})).await;
    })
    .await;
    assert_eq!(held.status, 201);
    c.restart().await;
    assert_converged(&c.s).await;
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_add_password() {
    // The lost password is revoked only once it cannot be a write in flight any more (older
    // than the operator's replication window, by its start date). Instead of waiting that
    // long, the provider's clock runs behind the operator's (clock skew), so every password
    // looks that much older to the operator.
    let emulator = Profile::Ideal.config().with_clock_behind(PAST_REPLICATION_WINDOW);
    let mut c = Crash::start_with("crash-addpassword", "1m", emulator).await;
    kill_at(&c.s, &mut c.op, &["application.addPassword"], &[], async {
        c.s.create_app(APP, json!({})).await;
    })
    .await;
    let state = c.s.emu.state();
    let client_id = c
        .app()
        .await
        .status
        .unwrap()
        .client_id
        .expect("clientId in status");
    let leaked: Vec<String> = state
        .application(&client_id)
        .unwrap()
        .passwords
        .iter()
        .map(|p| p.key_id.clone())
        .collect();
    assert_eq!(leaked.len(), 1, "the password was added");
    assert!(
        c.s.secrets().get_opt(SECRET).await.unwrap().is_none(),
        "killed before the Secret write"
    );
    c.restart().await;
    let key = assert_converged(&c.s).await;
    assert_ne!(
        key, leaked[0],
        "a new secret was issued; the lost one was revoked"
    );
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_secret_write() {
    let mut c = Crash::start("crash-secret", "1m").await;
    // Pause at the service principal create (not a kill) to learn the client id, then move
    // the hold to the token request proving the new secret: the first request after the
    // Secret write.
    c.s.emu
        .set_faults(FaultConfig::hold_after_apply(&["servicePrincipal.create"]));
    c.s.create_app(APP, json!({})).await;
    let emu = &c.s.emu;
    assert!(
        emu.wait_for(TIMEOUT, |e| e.held_responses() == 1).await,
        "the service principal create is held"
    );
    let client_id =
        c.s.emu
            .state()
            .service_principals()
            .map(|sp| sp.app_id.clone())
            .find(|id| *id != c.s.admin.client_id)
            .expect("the new service principal");
    let held = kill_at(&c.s, &mut c.op, &["token.v2", "token.v1"], &[&client_id], async {
    })
    .await;
    assert_eq!(held.app_id.as_deref(), Some(client_id.as_str()));
    let secret = c.s.secrets().get(SECRET).await.expect("the Secret was written");
    let (live, _) = recorded_keys(&secret).unwrap();
    assert_secret_works(&c.s, &client_id).await;
    c.restart().await;
    let key = assert_converged(&c.s).await;
    assert_eq!(key, live, "the delivered secret is kept, not replaced");
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_revoke() {
    let mut c = Crash::start("crash-revoke", "1s").await;
    c.s.create_app(APP, json!({})).await;
    let first = assert_converged(&c.s).await;
    let client_id = c.app().await.status.unwrap().client_id.unwrap();
    let held = kill_at(&c.s, &mut c.op, &["application.removePassword"], &[], async {
        let patch = json!({"metadata": {"annotations": {"dcr-operator.io/rotate": "crash-1"}}});
        c.s.apps()
            .patch(APP, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotating");
    })
    .await;
    assert_eq!(held.status, 204);
    let state = c.s.emu.state();
    let at_provider: Vec<String> = state
        .application(&client_id)
        .unwrap()
        .passwords
        .iter()
        .map(|p| p.key_id.clone())
        .collect();
    assert!(!at_provider.contains(&first), "the old secret was revoked");
    // Killed right after the revoke: the Secret already holds the new, working secret.
    assert_secret_works(&c.s, &client_id).await;
    c.restart().await;
    let second = assert_converged(&c.s).await;
    assert_ne!(first, second, "rotated");
    c.finish().await;
}

/// The Application is gone, its provider-side application soft-deleted (the provider
/// keeps deleted items) and never duplicated, its service principal gone.
async fn assert_deleted(s: &Scenario, uid: &str, client_id: &str) {
    wait_deleted(&s.apps(), APP, TIMEOUT).await;
    let state = s.emu.state();
    let ours: Vec<_> = state
        .applications()
        .filter(|a| a.tags.iter().any(|t| t.ends_with(uid)))
        .collect();
    assert_eq!(ours.len(), 1, "{ours:#?}");
    assert!(ours[0].deleted_date_time.is_some(), "soft-deleted");
    assert!(state
        .service_principals()
        .filter(|sp| sp.app_id == client_id)
        .all(|sp| sp.deleted_date_time.is_some()));
}

async fn mid_delete(test: &str, operation: &str) {
    let mut c = Crash::start(test, "1m").await;
    c.s.create_app(APP, json!({})).await;
    assert_converged(&c.s).await;
    let app = c.app().await;
    let uid = app.uid().unwrap();
    let client_id = app.status.unwrap().client_id.unwrap();
    let held = kill_at(&c.s, &mut c.op, &[operation], &[], async {
        c.s.apps()
            .delete(APP, &DeleteParams::default())
            .await
            .expect("deleting");
    })
    .await;
    assert_eq!(held.status, 204);
    assert!(
        c.s.apps().get_opt(APP).await.unwrap().is_some(),
        "the finalizer holds the Application while the operator is down"
    );
    c.restart().await;
    assert_deleted(&c.s, &uid, &client_id).await;
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_delete_after_service_principal_delete() {
    mid_delete("crash-delete-sp", "servicePrincipal.delete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_delete_after_application_delete() {
    mid_delete("crash-delete-app", "application.delete").await;
}
