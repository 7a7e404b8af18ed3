//! Crash safety (issue 6): the operator is stopped at each step boundary of the Application
//! flow and started again, and must converge with exactly one Entra application per
//! Application, exactly the passwords its Secret records, and a Secret that holds a working
//! secret once Ready. Every kill point runs twice: against a well-behaved Graph and with
//! replication lag, secret activation delay and throttling ([`Profile`]).
//!
//! "Stopped there" is exact: the Graph emulator processes the step's request and holds its
//! answer (a lost response, `FaultConfig::hold_after_apply`); once the request log shows it
//! held, the operator gets SIGKILL (no chance to clean up), the hold is cleared, and a new
//! operator process starts. Only a request the emulator applied is held (an answer 429'd by
//! the throttling profile, or 404'd by replication lag, is not: the operator's retry is), so
//! the kill always follows the change itself. The boundary "after the Secret write" is the
//! token request that proves the new secret, which comes right after the write and before
//! anything else. "After promote" has no provider request of its own (the next one may be
//! the revoke itself, or a read served from the operator's inventory): the test watches the
//! Secret for the promotion and kills at once, well within the grace before the revoke.
//!
//! The rotation kill points run a [`Prover`] throughout: a consumer re-reading the Secret
//! and obtaining a token with it, which must never fail (staged rotation only ever puts a
//! proven secret into `client_secret`, and the superseded one stays valid through the grace).
//!
//! Each test runs its own operator process ([`OperatorProcess`]); one at a time, since two
//! operators on one cluster would race. No shared operator runs in this binary.

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use dcr_operator::crd::Application;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::ResourceExt;
use sandbox::graph::{EmulatorConfig, GraphEmulator, RequestRecord};
use serde_json::{json, Value};
use support::cluster::{wait_deleted, wait_for, wait_for_object, TIMEOUT};
use support::operator::{emulator_ca_path, OperatorProcess, CLUSTER_NAME};
use support::prover::{Prover, ProverReport};
use support::scenario::{secret_data, Profile, Scenario};
use tokio::sync::{Mutex, MutexGuard};

/// One operator process at a time on the cluster.
static ONE_OPERATOR: Mutex<()> = Mutex::const_new(());

const APP: &str = "crash";
const SECRET: &str = "crash-credentials";
const CREDENTIAL_ANNOTATION: &str = "dcr-operator.io/credential";
const ROTATE_ANNOTATION: &str = "dcr-operator.io/rotate";
const REVOKE_ALL_ANNOTATION: &str = "dcr-operator.io/revoke-all";
/// Longer than the operator's replication window (120 s), within which a password nobody
/// records may still be a write in flight and is left alone.
const PAST_REPLICATION_WINDOW: Duration = Duration::from_secs(600);
/// `revokePreviousAfter` in the rotation tests: short, so they converge quickly, and far
/// longer than a consumer needs between reading the Secret and using its secret.
const GRACE: &str = "2s";

struct Crash {
    s: Scenario,
    op: OperatorProcess,
    /// For the run time each test reports (`--nocapture`).
    started: std::time::Instant,
    _one: MutexGuard<'static, ()>,
}

impl Crash {
    /// A scenario under `profile` with its own operator process and a Ready strategy whose
    /// superseded secrets are revoked after `revoke_previous_after`.
    async fn start(test: &str, profile: Profile, revoke_previous_after: &str) -> Crash {
        Self::start_with(test, profile.config(), revoke_previous_after).await
    }

    async fn start_with(test: &str, emulator: EmulatorConfig, revoke_previous_after: &str) -> Crash {
        let one = ONE_OPERATOR.lock().await;
        let started = std::time::Instant::now();
        let op = OperatorProcess::start(&emulator_ca_path().await, &[]).await;
        let s = Scenario::start_with_config(test, emulator, op.operator()).await;
        s.apply_strategy_with(
            json!({"names": [s.ns.name()]}),
            json!({"lifetime": "720h", "renewBefore": "240h", "revokePreviousAfter": revoke_previous_after}),
        )
        .await;
        s.wait_ready(&s.strategies(), &s.strategy, "True", Some("Ready"))
            .await;
        Crash {
            s,
            op,
            started,
            _one: one,
        }
    }

    async fn restart(&mut self) {
        self.op.restart().await;
    }

    async fn app(&self) -> Application {
        self.s.apps().get(APP).await.expect("the Application")
    }

    async fn client_id(&self) -> String {
        self.app()
            .await
            .status
            .and_then(|s| s.client_id)
            .expect("clientId in status")
    }

    /// Creates the Application, waits until it has converged, and starts a consumer proving
    /// its Secret. Returns the client id, the live key and the prover.
    async fn ready_and_proven(&self) -> (String, String, Prover) {
        self.s.create_app(APP, json!({})).await;
        let key = assert_converged(&self.s).await;
        let prover = Prover::start(self.s.secrets(), SECRET, self.s.emu.http_client());
        (self.client_id().await, key, prover)
    }

    /// Deletes the test's objects while the operator still runs, then stops it.
    async fn finish(self) {
        let Crash { s, op, started, _one } = self;
        let test = s.ns.name().to_string();
        let converged = started.elapsed();
        s.teardown().await;
        drop(op);
        eprintln!(
            "{test}: converged after {converged:.1?}, torn down after {:.1?}",
            started.elapsed()
        );
    }
}

/// Sets an annotation on the Application (a rotation or revoke-all request).
async fn annotate(s: &Scenario, key: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    s.apps()
        .patch(APP, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotating the Application");
}

/// Holds the answers to `operations` (from `callers`, any if empty) that the emulator
/// applies, keeping the profile's other faults.
fn hold(s: &Scenario, operations: &[&str], callers: &[&str]) {
    s.emu.update_config(|c| {
        c.faults.hold_after_apply = operations.iter().map(|o| o.to_string()).collect();
        c.faults.hold_callers = callers.iter().map(|o| o.to_string()).collect();
    });
}

/// Sends the held answers and holds nothing more.
fn release(s: &Scenario) {
    hold(s, &[], &[]);
}

/// Holds the answers to `operations` (from `callers`, any if empty), runs `trigger`,
/// waits until the emulator has applied such a request (after `trigger` started; a 429 or
/// any error is answered, not held, and the operator's retry is awaited), SIGKILLs the
/// operator, clears the hold and returns the held request. The operator stays stopped.
async fn kill_at(
    s: &Scenario,
    op: &mut OperatorProcess,
    operations: &[&str],
    callers: &[&str],
    trigger: impl std::future::Future<Output = ()>,
) -> RequestRecord {
    let emu = &s.emu;
    let after = emu.requests().last().map_or(0, |r| r.seq);
    hold(s, operations, callers);
    trigger.await;
    let held = |e: &GraphEmulator| {
        e.requests().into_iter().find(|r| {
            r.seq > after
                && r.fault.as_deref() == Some("held")
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
    release(s);
    let held = held(emu).expect("seen above");
    assert!(
        (200..300).contains(&held.status),
        "only an applied request is held: {held:?}"
    );
    held
}

/// The key ids a Secret records: (live, every other: pending and superseded).
fn recorded_keys(secret: &Secret) -> Result<(String, Vec<String>), String> {
    let v = record_of(secret)?;
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

fn record_of(secret: &Secret) -> Result<Value, String> {
    let raw = secret
        .annotations()
        .get(CREDENTIAL_ANNOTATION)
        .ok_or("no credential annotation")?;
    serde_json::from_str(raw).map_err(|e| e.to_string())
}

/// What the Secret holds and records right now.
#[derive(Debug)]
struct Stored {
    live: String,
    proven: bool,
    previous: Vec<String>,
    pending: Option<String>,
    client_secret: String,
    pending_client_secret: Option<String>,
}

async fn stored(s: &Scenario) -> Stored {
    let secret = s.secrets().get(SECRET).await.expect("the Secret");
    let v = record_of(&secret).expect("the Secret's record");
    let data = secret_data(&secret);
    Stored {
        live: v["keyId"].as_str().expect("keyId").to_string(),
        proven: v["verifiedAt"].is_string(),
        previous: v["previous"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["keyId"].as_str().map(str::to_string))
            .collect(),
        pending: v["pending"]["keyId"].as_str().map(str::to_string),
        client_secret: data["client_secret"].clone(),
        pending_client_secret: data.get(".pending_client_secret").cloned(),
    }
}

/// The key ids of the passwords the provider holds for `client_id`.
fn provider_keys(s: &Scenario, client_id: &str) -> BTreeSet<String> {
    s.emu
        .state()
        .application(client_id)
        .expect("the provider-side application")
        .passwords
        .iter()
        .map(|p| p.key_id.clone())
        .collect()
}

/// A consumer of the Secret never failed: every read held a proven secret that worked.
fn assert_never_failed(report: &ProverReport) {
    assert!(report.ok > 0, "the prover obtained tokens: {report:#?}");
    assert_eq!(
        report.failures(),
        0,
        "the Secret always held a working secret: {report:#?}"
    );
    assert_eq!(
        report.unproven_reads, 0,
        "the Secret never held an unproven secret: {report:#?}"
    );
}

/// What converged looks like, checked until it holds: the Application Ready, exactly one
/// provider-side application for it (never a second one, not even deleted), one service
/// principal, the Secret recording one key and nothing pending or superseded, the provider
/// holding exactly that password, and the Secret's credentials obtaining a token. Returns
/// the live key id.
async fn assert_converged(s: &Scenario) -> String {
    let app = s.wait_ready(&s.apps(), APP, "True", Some("Ready")).await;
    let uid = app.uid().unwrap();
    let client_id = app.status.clone().unwrap().client_id.expect("clientId in status");
    let (key, app) = wait_for(
        "the provider to hold exactly the password the Secret records, proven, and the status to say so",
        TIMEOUT,
        || async {
            let secret = s.secrets().get(SECRET).await.map_err(|e| e.to_string())?;
            let (live, others) = recorded_keys(&secret)?;
            let proven = record_of(&secret)?["verifiedAt"].is_string();
            let state = s.emu.state();
            let at_provider: BTreeSet<String> = state
                .application(&client_id)
                .ok_or("no provider-side application")?
                .passwords
                .iter()
                .map(|p| p.key_id.clone())
                .collect();
            let app = s.apps().get(APP).await.map_err(|e| e.to_string())?;
            let ready = Scenario::ready_condition(&app);
            let status = app.status.clone().unwrap_or_default();
            let mirrored = status.credential.as_ref().map(|c| c.key_id.as_str()) == Some(live.as_str())
                && status.previous_credentials.is_empty()
                && ready["status"] == "True"
                && ready["observedGeneration"] == json!(app.metadata.generation);
            if proven && others.is_empty() && at_provider == BTreeSet::from([live.clone()]) && mirrored {
                Ok(Some((live, app)))
            } else {
                Err(format!(
                    "Secret records {live} (proven: {proven}) and {others:?}, the provider holds \
                     {at_provider:?}, status mirrors it: {mirrored}"
                ))
            }
        },
    )
    .await;
    let status = app.status.clone().unwrap();

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

// ---------------------------------------------------------------- the first issue

both_profiles!(after_upsert);

async fn after_upsert(test: &str, profile: Profile) {
    let mut c = Crash::start(test, profile, "1m").await;
    let held = kill_at(&c.s, &mut c.op, &["application.upsert"], &[], async {
        c.s.create_app(APP, json!({})).await;
    })
    .await;
    assert_eq!(held.status, 201, "the upsert created the application");
    c.restart().await;
    assert_converged(&c.s).await;
    // The application already existed: found by uniqueName (or, replicating, by a second
    // upsert), never re-bound as owner (Graph rejects a duplicate owner reference).
    let client_id = c.client_id().await;
    let owners = c.s.emu.state().application(&client_id).unwrap().owners.clone();
    assert_eq!(owners.len(), 1, "one owner reference: {owners:?}");
    c.finish().await;
}

/// Killed right after the status recorded the new application while it is still
/// replicating (20 s of lag here): after the restart the recorded id answers 404, deleted
/// items do not have it, and the upsert collides with the name. That is lag, not deletion:
/// no `Recreating` Warning, the recorded ids kept, one application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_inside_the_replication_window() {
    let mut emulator = Profile::LagAndThrottling.config();
    emulator.replication_lag = Duration::from_secs(20);
    let mut c = Crash::start_with("restart_in_window", emulator, "1m").await;
    c.s.create_app(APP, json!({})).await;
    let recorded = |a: Option<&Application>| {
        a.and_then(|a| a.status.as_ref())
            .is_some_and(|s| s.application_object_id.is_some())
    };
    let app = wait_for_object(&c.s.apps(), APP, "the object id in status", TIMEOUT, recorded)
        .await
        .expect("the Application");
    c.op.kill().await;
    let object_id = app.status.unwrap().application_object_id.unwrap();
    let state = c.s.emu.state();
    let entra = state.application(&object_id).expect("created");
    assert!(
        entra.visible_at > state.now,
        "killed inside the replication window"
    );
    drop(state);
    c.restart().await;
    assert_converged(&c.s).await;
    assert_eq!(
        c.app().await.status.unwrap().application_object_id.as_deref(),
        Some(object_id.as_str()),
        "the recorded application was kept"
    );
    let false_alarms: Vec<_> =
        c.s.events()
            .await
            .into_iter()
            .filter(|e| {
                matches!(
                    e.reason.as_deref(),
                    Some("Recreating" | "Restored" | "IdentityMismatch")
                )
            })
            .collect();
    assert!(false_alarms.is_empty(), "lag read as deletion: {false_alarms:#?}");
    c.finish().await;
}

both_profiles!(after_service_principal_create);

async fn after_service_principal_create(test: &str, profile: Profile) {
    let mut c = Crash::start(test, profile, "1m").await;
    let held = kill_at(&c.s, &mut c.op, &["servicePrincipal.create"], &[], async {
        c.s.create_app(APP, json!({})).await;
    })
    .await;
    assert_eq!(held.status, 201);
    c.restart().await;
    assert_converged(&c.s).await;
    c.finish().await;
}

both_profiles!(after_add_password);

async fn after_add_password(test: &str, profile: Profile) {
    // The lost password is revoked only once it cannot be a write in flight any more (older
    // than the operator's replication window, by its start date). Instead of waiting that
    // long, the provider's clock runs behind the operator's (clock skew), so every password
    // looks that much older to the operator.
    let emulator = profile.config().with_clock_behind(PAST_REPLICATION_WINDOW);
    let mut c = Crash::start_with(test, emulator, "1m").await;
    kill_at(&c.s, &mut c.op, &["application.addPassword"], &[], async {
        c.s.create_app(APP, json!({})).await;
    })
    .await;
    let leaked = provider_keys(&c.s, &c.client_id().await);
    assert_eq!(leaked.len(), 1, "the password was added");
    assert!(
        c.s.secrets().get_opt(SECRET).await.unwrap().is_none(),
        "killed before the Secret write"
    );
    c.restart().await;
    let key = assert_converged(&c.s).await;
    assert!(
        !leaked.contains(&key),
        "a new secret was issued; the lost one was revoked"
    );
    c.finish().await;
}

both_profiles!(after_secret_write);

async fn after_secret_write(test: &str, profile: Profile) {
    let mut c = Crash::start(test, profile, "1m").await;
    // Pause at the service principal create (not a kill) to learn the client id, then move
    // the hold to the token request proving the new secret: the first request after the
    // Secret write. (With activation delay, the proofs the provider refuses are answered;
    // the held one is the proof that succeeded.)
    hold(&c.s, &["servicePrincipal.create"], &[]);
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

// ---------------------------------------------------------------- rotation

both_profiles!(after_rotation_add_password);

/// Killed after the rotation's addPassword, before the new key is staged anywhere: the
/// Secret keeps the old, working secret; after the restart the rotation is done again and
/// the lost key, recorded nowhere, is revoked.
async fn after_rotation_add_password(test: &str, profile: Profile) {
    // The lost key is revoked only once past the replication window: see after_add_password.
    let emulator = profile.config().with_clock_behind(PAST_REPLICATION_WINDOW);
    let mut c = Crash::start_with(test, emulator, GRACE).await;
    let (client_id, first, prover) = c.ready_and_proven().await;
    kill_at(&c.s, &mut c.op, &["application.addPassword"], &[], async {
        annotate(&c.s, ROTATE_ANNOTATION, "crash-1").await;
    })
    .await;
    let keys = provider_keys(&c.s, &client_id);
    assert_eq!(keys.len(), 2, "the new key was added: {keys:?}");
    let lost = keys.iter().find(|k| **k != first).unwrap().clone();
    let before = stored(&c.s).await;
    assert_eq!(before.live, first, "killed before anything was staged");
    assert!(before.pending.is_none() && before.pending_client_secret.is_none());
    c.restart().await;
    let key = assert_converged(&c.s).await;
    assert!(key != first && key != lost, "rotated with a new key");
    assert_eq!(
        c.app().await.status.unwrap().last_rotate_request.as_deref(),
        Some("crash-1")
    );
    assert_never_failed(&prover.stop().await);
    c.finish().await;
}

both_profiles!(after_pending_write);

async fn after_pending_write(test: &str, profile: Profile) {
    pending_write(test, profile).await;
}

/// Killed after the new key is staged in `.pending_client_secret`, at the token request
/// proving it: after the restart that key is proven and promoted, not thrown away.
async fn pending_write(test: &str, profile: Profile) {
    let mut c = Crash::start(test, profile, GRACE).await;
    let (client_id, first, prover) = c.ready_and_proven().await;
    // The operator proves with the v2 endpoint, the prover uses v1 (see support::prover).
    kill_at(&c.s, &mut c.op, &["token.v2"], &[&client_id], async {
        annotate(&c.s, ROTATE_ANNOTATION, "crash-1").await;
    })
    .await;
    let staged = stored(&c.s).await;
    assert_eq!(
        staged.live, first,
        "the old secret stays live until the new one is proven"
    );
    let pending = staged.pending.clone().expect("a staged key");
    assert!(staged.pending_client_secret.is_some(), "{staged:?}");
    assert_eq!(
        provider_keys(&c.s, &client_id),
        BTreeSet::from([first.clone(), pending.clone()])
    );
    c.restart().await;
    let key = assert_converged(&c.s).await;
    let promotions: Vec<String> =
        c.s.events()
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Rotated"))
            .filter_map(|e| e.note)
            .collect();
    assert!(
        promotions
            .iter()
            .any(|n| n.contains(&format!("secret {pending} replaced {first}"))),
        "the staged key was promoted, not replaced: {promotions:?}"
    );
    assert_eq!(key, pending, "one rotation request, one rotation");
    let data = secret_data(&c.s.secrets().get(SECRET).await.unwrap());
    assert!(
        !data.contains_key(".pending_client_secret"),
        "nothing staged any more"
    );
    assert_never_failed(&prover.stop().await);
    c.finish().await;
}

both_profiles!(after_promote);

/// Killed right after the staged key was promoted (the Secret's `client_secret` is the new
/// value, the old key recorded as superseded), before the old key is revoked: after the
/// restart it is revoked once its grace has passed. The promotion is the Secret write the
/// test watches for; the kill follows within the watch latency, well within the grace
/// (whichever way the operator reads the provider next, it cannot revoke before then).
async fn after_promote(test: &str, profile: Profile) {
    promote(test, profile).await;
}

async fn promote(test: &str, profile: Profile) {
    let mut c = Crash::start(test, profile, "3s").await;
    let (client_id, first, prover) = c.ready_and_proven().await;
    annotate(&c.s, ROTATE_ANNOTATION, "crash-1").await;
    let promoted = |s: Option<&Secret>| {
        s.and_then(|s| record_of(s).ok())
            .is_some_and(|r| r["keyId"].as_str() != Some(first.as_str()) && r["pending"].is_null())
    };
    wait_for_object(&c.s.secrets(), SECRET, "the promotion", TIMEOUT, promoted).await;
    c.op.kill().await;
    let now = stored(&c.s).await;
    assert!(now.previous.contains(&first) && now.proven, "{now:?}");
    let keys = provider_keys(&c.s, &client_id);
    assert!(
        keys.contains(&first) && keys.contains(&now.live),
        "killed before the old key was revoked: {keys:?}"
    );
    c.restart().await;
    let key = assert_converged(&c.s).await;
    assert_eq!(key, now.live, "one rotation request, one rotation");
    assert_never_failed(&prover.stop().await);
    c.finish().await;
}

both_profiles!(after_revoke);

/// Killed right after the superseded key was revoked, before the record says so.
async fn after_revoke(test: &str, profile: Profile) {
    let mut c = Crash::start(test, profile, GRACE).await;
    let (client_id, first, prover) = c.ready_and_proven().await;
    let held = kill_at(&c.s, &mut c.op, &["application.removePassword"], &[], async {
        annotate(&c.s, ROTATE_ANNOTATION, "crash-1").await;
    })
    .await;
    assert_eq!(held.status, 204);
    let now = stored(&c.s).await;
    assert_eq!(
        now.previous,
        vec![first.clone()],
        "one rotate request, one rotation; the record still names the old key"
    );
    let keys = provider_keys(&c.s, &client_id);
    assert!(
        !keys.contains(&first) && keys.contains(&now.live),
        "the old secret was revoked, the live one kept: {keys:?}"
    );
    // Killed right after the revoke: the Secret already holds the new, working secret.
    assert_secret_works(&c.s, &client_id).await;
    c.restart().await;
    let second = assert_converged(&c.s).await;
    assert_ne!(first, second, "rotated");
    assert_never_failed(&prover.stop().await);
    c.finish().await;
}

// Before the fix, the retried revoke-all also removed the key revoked before the kill (the
// status still named it), met Entra's 400 for an unknown key, failed before recording the
// request, and every retry issued one more password (hundreds within a minute).
mod mid_revoke_all {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ideal() {
        super::mid_revoke_all("mid_revoke_all", Profile::Ideal).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lag_and_throttling() {
        super::mid_revoke_all("mid_revoke_all", Profile::LagAndThrottling).await
    }
}

/// Killed in the middle of a compromise response: the new secret delivered, one of the two
/// other keys (the live one and one superseded, within its grace) revoked, the other not.
/// After the restart no key but the Secret's is left, and the request is recorded.
async fn mid_revoke_all(test: &str, profile: Profile) {
    // A long grace keeps the superseded key of the rotation below. The clock skew makes a
    // key left unrecorded revocable at once (see after_add_password).
    let emulator = profile.config().with_clock_behind(PAST_REPLICATION_WINDOW);
    let mut c = Crash::start_with(test, emulator, "1h").await;
    let (client_id, a, prover) = c.ready_and_proven().await;
    let a_secret = stored(&c.s).await.client_secret;
    annotate(&c.s, ROTATE_ANNOTATION, "before-incident").await;
    let b = wait_for("the rotation to be promoted", TIMEOUT, || async {
        let now = stored(&c.s).await;
        Ok::<_, String>((now.live != a && now.pending.is_none()).then_some(now))
    })
    .await;
    assert_eq!(b.previous, vec![a.clone()]);
    assert_eq!(
        provider_keys(&c.s, &client_id),
        BTreeSet::from([a.clone(), b.live.clone()])
    );
    let held = kill_at(&c.s, &mut c.op, &["application.removePassword"], &[], async {
        annotate(&c.s, REVOKE_ALL_ANNOTATION, "incident-1").await;
    })
    .await;
    assert_eq!(held.status, 204);
    let mid = stored(&c.s).await;
    assert!(
        mid.live != a && mid.live != b.live,
        "a new secret was delivered first"
    );
    assert!(mid.previous.is_empty(), "nothing superseded is kept: {mid:?}");
    let left = provider_keys(&c.s, &client_id);
    assert_eq!(left.len(), 2, "one of the old keys revoked, one not: {left:?}");
    assert!(left.contains(&mid.live));
    c.restart().await;
    let key = assert_converged(&c.s).await;
    assert!(key != a && key != b.live);
    assert_eq!(
        c.app().await.status.unwrap().last_revoke_all_request.as_deref(),
        Some("incident-1")
    );
    let token_url = secret_data(&c.s.secrets().get(SECRET).await.unwrap())["token_url"].clone();
    for (name, old) in [("the first", &a_secret), ("the superseded", &b.client_secret)] {
        assert!(
            c.s.token_with(&token_url, &client_id, old).await.is_err(),
            "{name} secret is dead"
        );
    }
    // A compromise response replaces the secret without staging: a consumer may read the
    // new secret before the provider accepts it, or use one revoked under it. It never
    // finds a secret the Secret records as proven failing.
    let report = prover.stop().await;
    assert!(report.ok > 0, "{report:#?}");
    assert!(
        report.failed_proven.is_empty() && report.errors.is_empty(),
        "{report:#?}"
    );
    c.finish().await;
}

// ---------------------------------------------------------------- deletion

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

async fn mid_delete(test: &str, profile: Profile, operation: &str) {
    let mut c = Crash::start(test, profile, "1m").await;
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

both_profiles!(mid_delete_after_service_principal_delete);

async fn mid_delete_after_service_principal_delete(test: &str, profile: Profile) {
    mid_delete(test, profile, "servicePrincipal.delete").await;
}

both_profiles!(mid_delete_after_application_delete);

async fn mid_delete_after_application_delete(test: &str, profile: Profile) {
    mid_delete(test, profile, "application.delete").await;
}
