//! Soak benchmark (issue 6, "Soak"): 200 Applications against a Graph that answers 10% of
//! its requests 429 and 5% 503, with 2 s replication lag, while the kube-apiserver is
//! restarted mid-run. It checks that everything converges (all Ready, exactly one Entra
//! application per Application, exactly the passwords the Secrets record, every delivered
//! secret obtains a token, every deletion reaches Entra) and prints the figures the README's
//! "Scale" section quotes; the same figures go to `target/bench/soak.json`.
//!
//! A benchmark, not a unit test: `#[ignore]`d so `make test` skips it. Run it with
//! `make bench` (or `cargo test --release --test soak -- --ignored --nocapture`).
//! `DCR_SOAK_APPS=20` runs a smaller soak (for trying changes); `DCR_SOAK_BUDGET=50,100`
//! sets a provider request budget; `DCR_SOAK_NO_RESTART=1` leaves the apiserver alone.
//!
//! It uses the test binary's shared control plane and operator (tests/support) and
//! restarts that control plane's apiserver ([`Cluster::restart_apiserver`]), so this
//! binary must hold nothing else that minds the restart. Skipped, saying so, on a cluster
//! of the user's (nothing to restart).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dcr_operator::crd::Application;
use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use sandbox::graph::{FaultConfig, OperationCount, RequestRecord};
use serde_json::{json, Value};
use support::cluster::{cluster, wait_for, Cluster};
use support::scenario::{secret_data, Profile, Scenario};

/// Applications in the soak (`DCR_SOAK_APPS` overrides).
const DEFAULT_APPS: usize = 200;
/// Fraction of Graph requests answered 429, with [`THROTTLE_RETRY_AFTER`].
const THROTTLE_RATE: f64 = 0.10;
/// `Retry-After` on the injected 429s: the end-to-end suite's throttling profile. With the
/// Graph docs' sample value (2.128 s, the emulator's default) the operator's client, which
/// pauses *all* its calls for a `Retry-After`, got about 380 Graph requests/min through, and
/// with 120 Applications Ready, 95% of them were the resync reads (one application and one
/// service-principal GET per Application every 30 s, the harness's resync period).
const THROTTLE_RETRY_AFTER: Duration = Duration::from_millis(300);
/// Fraction of Graph requests answered 503 (no Retry-After).
const ERROR_RATE: f64 = 0.05;
const REPLICATION_LAG: Duration = Duration::from_secs(2);
/// A flat cap in the DcrProvider's `requestBudget` (`DCR_SOAK_BUDGET=qps,burst`); by
/// default none, so the operator's own Graph-shaped budget applies, which is what users get.
fn request_budget() -> Option<(u32, u32)> {
    let v = std::env::var("DCR_SOAK_BUDGET").ok()?;
    let (qps, burst) = v.split_once(',')?;
    Some((qps.trim().parse().ok()?, burst.trim().parse().ok()?))
}
/// Fixed seed for the fault dice, so two runs draw the same sequence.
const FAULT_SEED: u64 = 0x50a6;
/// The harness's `--resync-period` (tests/support/operator.rs).
const RESYNC_PERIOD: Duration = Duration::from_secs(30);
/// The apiserver is restarted once this fraction of the first half is Ready.
const RESTART_AT: f64 = 0.25;
/// Deadlines: generous, this is a benchmark on a possibly busy 2-core machine.
const READY_DEADLINE: Duration = Duration::from_secs(30 * 60);
const DELETE_DEADLINE: Duration = Duration::from_secs(10 * 60);
/// Unrecorded passwords (issued while a Secret write failed, e.g. during the restart) are
/// revoked once older than the operator's replication window (120 s), at the next
/// reconcile (within one resync).
const PASSWORD_CONVERGENCE_DEADLINE: Duration = Duration::from_secs(120 + 2 * 30 + 60);
/// Client-side concurrency for creating, deleting and token checks.
const PARALLEL: usize = 16;

fn app_count() -> usize {
    std::env::var("DCR_SOAK_APPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 2)
        .unwrap_or(DEFAULT_APPS)
}

/// `DCR_SOAK_NO_RESTART=1`: the same soak without the apiserver restart (to tell the
/// restart's effects from the load's; the restart figures then measure nothing).
fn skip_restart() -> bool {
    std::env::var("DCR_SOAK_NO_RESTART").is_ok_and(|v| v == "1")
}

fn app_name(i: usize) -> String {
    format!("soak-{i:03}")
}

fn is_ready(app: &Application) -> bool {
    let c = Scenario::ready_condition(app);
    c["status"] == "True" && c["observedGeneration"] == json!(app.metadata.generation)
}

async fn count_ready(api: &Api<Application>) -> kube::Result<(usize, usize)> {
    let list = api.list(&ListParams::default()).await?;
    Ok((
        list.items.iter().filter(|a| is_ready(a)).count(),
        list.items.len(),
    ))
}

/// Like `wait_for`, polling every 100 ms (a finer clock for the restart measurement).
async fn wait_for_fine<T, E: std::fmt::Display, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, E>>,
{
    let started = Instant::now();
    let mut last_error = String::new();
    loop {
        match f().await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(e) => last_error = e.to_string(),
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}; last error: {last_error}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_apps(s: &Scenario, names: &[String]) {
    stream::iter(names.iter().cloned())
        .for_each_concurrent(PARALLEL, |name| async move {
            s.create_app(&name, json!({"displayName": format!("Soak {name}")}))
                .await;
        })
        .await;
}

/// Per-operation totals between two `request_counts()` snapshots.
fn counts_between(
    before: &BTreeMap<String, OperationCount>,
    after: &BTreeMap<String, OperationCount>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(op, c)| {
            let b = before.get(op).map_or(0, |b| b.total);
            (op.clone(), c.total - b)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Faults and statuses in a slice of the request log.
fn fault_tally(records: &[RequestRecord]) -> (BTreeMap<String, u64>, BTreeMap<u16, u64>) {
    let mut faults = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    for r in records {
        if let Some(f) = &r.fault {
            *faults.entry(f.clone()).or_default() += 1;
        }
        *statuses.entry(r.status).or_default() += 1;
    }
    (faults, statuses)
}

fn records_after(s: &Scenario, seq: u64) -> Vec<RequestRecord> {
    s.emu.requests().into_iter().filter(|r| r.seq > seq).collect()
}

fn last_seq(s: &Scenario) -> u64 {
    s.emu.requests().last().map_or(0, |r| r.seq)
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
/// Unrelated Secrets in the cluster (Helm releases, certificates): 100 of 100 KiB. The
/// operator watches every Secret for provider admin Secrets, as metadata only, so their data
/// never reaches it (measured once with the full watch instead: RSS +1.5 MiB for these,
/// against +0.07 MiB). Returns the figures for soak.json.
async fn unrelated_secrets(s: &Scenario, pid: u32) -> Value {
    const COUNT: usize = 100;
    const SIZE: usize = 100 * 1024;
    let (before, _) = memory_kib(pid);
    let blob = "x".repeat(SIZE);
    let secrets = s.secrets();
    stream::iter(0..COUNT)
        .for_each_concurrent(PARALLEL, |i| {
            let secrets = secrets.clone();
            let blob = blob.clone();
            async move {
                let secret: Secret = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": format!("unrelated-{i}")},
                    "stringData": {"blob": blob},
                }))
                .unwrap();
                secrets
                    .create(&Default::default(), &secret)
                    .await
                    .expect("unrelated Secret");
            }
        })
        .await;
    // Watch events arrive in order: once the operator reacts to a change of the provider's
    // admin Secret made after them, it has seen all 100.
    let log_mark = s.operator.logs().len();
    let touch = json!({"metadata": {"annotations": {"soak.dcr-operator.io/touch": "1"}}});
    secrets
        .patch(
            &s.admin_secret,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&touch),
        )
        .await
        .expect("touch the admin Secret");
    wait_for(
        "the operator to see the admin Secret change",
        Duration::from_secs(60),
        || async {
            let log = s.operator.logs();
            let seen = log
                .get(log_mark..)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("related object updated") && l.contains(&s.admin_secret));
            Ok::<_, String>(seen.then_some(()))
        },
    )
    .await;
    let (after, _) = memory_kib(pid);
    eprintln!(
        "soak: {COUNT} unrelated Secrets of {} KiB: operator RSS {before} KiB -> {after} KiB",
        SIZE / 1024
    );
    json!({"count": COUNT, "size_kib": SIZE / 1024, "rss_before_kib": before, "rss_after_kib": after})
}

fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("operator /proc status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Key ids the Secret's `dcr-operator.io/credential` annotation records: the live key,
/// the superseded ones awaiting revocation, and a pending rotation key if any.
fn recorded_keys(secret: &Secret) -> Result<BTreeSet<String>, String> {
    let raw = secret
        .annotations()
        .get("dcr-operator.io/credential")
        .ok_or("no dcr-operator.io/credential annotation")?;
    let record: Value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    let mut keys = BTreeSet::new();
    keys.insert(
        record["keyId"]
            .as_str()
            .ok_or("no keyId in the record")?
            .to_string(),
    );
    for p in record["previous"].as_array().into_iter().flatten() {
        keys.extend(p["keyId"].as_str().map(str::to_string));
    }
    keys.extend(record["pending"]["keyId"].as_str().map(str::to_string));
    Ok(keys)
}

/// Every way the provider side differs from the cluster; empty when they agree.
async fn discrepancies(s: &Scenario) -> Result<Vec<String>, kube::Error> {
    let apps = s.apps().list(&ListParams::default()).await?.items;
    let secrets: BTreeMap<String, Secret> = s
        .secrets()
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|x| (x.name_any(), x))
        .collect();
    let state = s.emu.state();
    let mut problems = Vec::new();
    let mut uids = BTreeSet::new();
    for app in &apps {
        let name = app.name_any();
        let uid = app.uid().unwrap_or_default();
        uids.insert(uid.clone());
        if !is_ready(app) {
            problems.push(format!("{name}: not Ready: {}", Scenario::ready_condition(app)));
        }
        let tag = format!("dcr-operator:uid:{uid}");
        let entra: Vec<_> = state.applications().filter(|a| a.tags.contains(&tag)).collect();
        if entra.len() != 1 {
            problems.push(format!("{name}: {} Entra applications tagged {tag}", entra.len()));
            continue;
        }
        let entra = entra[0];
        if entra.deleted_date_time.is_some() {
            problems.push(format!("{name}: its Entra application is deleted"));
        }
        let status = app.status.clone().unwrap_or_default();
        if status.client_id.as_deref() != Some(entra.app_id.as_str()) {
            problems.push(format!(
                "{name}: status.clientId {:?} is not {}",
                status.client_id, entra.app_id
            ));
        }
        let secret_name = format!("{name}-credentials");
        let Some(secret) = secrets.get(&secret_name) else {
            problems.push(format!("{name}: no Secret {secret_name}"));
            continue;
        };
        if secret_data(secret).get("client_id") != Some(&entra.app_id) {
            problems.push(format!("{name}: the Secret's client_id is not {}", entra.app_id));
        }
        let at_provider: BTreeSet<String> = entra.passwords.iter().map(|p| p.key_id.clone()).collect();
        match recorded_keys(secret) {
            Ok(recorded) if recorded == at_provider => {}
            Ok(recorded) => problems.push(format!(
                "{name}: passwords at the provider {at_provider:?}, recorded in the Secret {recorded:?}"
            )),
            Err(e) => problems.push(format!("{name}: Secret {secret_name}: {e}")),
        }
    }
    for a in state.applications() {
        if !a.tags.iter().any(|t| t == "dcr-operator") {
            continue;
        }
        let owner = a
            .tags
            .iter()
            .find_map(|t| t.strip_prefix("dcr-operator:uid:"))
            .unwrap_or_default();
        if !uids.contains(owner) {
            problems.push(format!(
                "Entra application {} ({:?}, deleted: {}) has no Application (uid {owner:?})",
                a.app_id,
                a.unique_name,
                a.deleted_date_time.is_some()
            ));
        }
    }
    Ok(problems)
}

fn bench_output_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench/soak.json")
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark (minutes): run with `make bench`"]
async fn soak_applications_under_faults_and_an_apiserver_restart() {
    let cluster: &Cluster = cluster().await;
    if !cluster.is_local() {
        eprintln!("SKIPPED soak: it restarts the kube-apiserver, which needs the local control plane");
        return;
    }
    let n = app_count();
    let load_at_start = loadavg();
    let s = Scenario::start("soak", Profile::Ideal).await;
    let pid = s.operator.pid;
    s.emu.update_config(|c| {
        c.replication_lag = REPLICATION_LAG;
        c.faults = FaultConfig {
            throttle_rate: THROTTLE_RATE,
            throttle_retry_after: Some(THROTTLE_RETRY_AFTER),
            error_rate: ERROR_RATE,
            seed: Some(FAULT_SEED),
            ..FaultConfig::default()
        };
    });
    if let Some((qps, burst)) = request_budget() {
        let mut provider = s.provider_spec();
        provider["requestBudget"] = json!({"qps": qps, "burst": burst});
        s.apply_provider_spec(provider).await;
    }
    s.wait_ready(&s.providers(), &s.provider, "True", Some("Ready"))
        .await;
    s.wait_ready(&s.strategies(), &s.strategy, "True", Some("Ready"))
        .await;
    // Everything from here on is the Applications' doing.
    s.emu.clear_requests();
    let counts0 = s.emu.request_counts();
    let (rss_before_kib, _) = memory_kib(pid);
    let unrelated = unrelated_secrets(&s, pid).await;
    let names: Vec<String> = (0..n).map(app_name).collect();
    let (first, second) = names.split_at(n / 2);
    let api = s.apps();

    // Phase 1: half of them, then the apiserver restart while they are in flight.
    let t0 = Instant::now();
    create_apps(&s, first).await;
    let trigger = ((first.len() as f64 * RESTART_AT).ceil() as usize).max(1);
    wait_for(
        format!("{trigger} Applications Ready before the restart"),
        READY_DEADLINE,
        || async { count_ready(&api).await.map(|(r, _)| r >= trigger) },
    )
    .await;
    let (ready_at_restart, _) = count_ready(&api).await.expect("listing Applications");
    let log_offset = std::fs::metadata(&s.operator.log_path).map_or(0, |m| m.len());
    let restart_begin = Instant::now();
    let down_for = if skip_restart() {
        eprintln!("soak: DCR_SOAK_NO_RESTART=1: no apiserver restart");
        Duration::ZERO
    } else {
        cluster
            .restart_apiserver()
            .await
            .expect("local control plane")
            .expect("restarting kube-apiserver")
    };
    eprintln!(
        "soak: kube-apiserver restarted in {down_for:.1?} with {ready_at_restart}/{} Ready",
        first.len()
    );
    // Measure the operator's recovery before adding work, when some are still in flight.
    let in_flight = ready_at_restart < first.len();
    if !in_flight {
        create_apps(&s, second).await;
    }
    let first_ready_after_restart = wait_for_fine(
        "an Application to turn Ready after the apiserver restart",
        READY_DEADLINE,
        || async {
            let (ready, _) = count_ready(&api).await?;
            Ok::<_, kube::Error>((ready > ready_at_restart).then(|| restart_begin.elapsed()))
        },
    )
    .await;
    eprintln!(
        "soak: first Application Ready {first_ready_after_restart:.1?} after the restart began ({:.1?} after the apiserver was back)",
        first_ready_after_restart.saturating_sub(down_for)
    );

    // Phase 2: the other half, created after the restart (the watches must have resumed).
    if in_flight {
        create_apps(&s, second).await;
    }
    let created_in = t0.elapsed();
    wait_for(format!("all {n} Applications Ready"), READY_DEADLINE, || async {
        let (ready, total) = count_ready(&api).await?;
        Ok::<_, kube::Error>(ready == n && total == n)
    })
    .await;
    let all_ready_in = t0.elapsed();
    let counts_ready = s.emu.request_counts();
    let records_ready = s.emu.requests();
    let seq_ready = records_ready.last().map_or(0, |r| r.seq);
    let (rss_ready_kib, _) = memory_kib(pid);
    eprintln!("soak: all {n} Ready in {all_ready_in:.1?} (created in {created_in:.1?})");
    let log_tail = {
        let all = s.operator.logs();
        all.get(log_offset as usize..).unwrap_or_default().to_string()
    };
    let failed_reconciles_after_restart = log_tail.matches("reconcile failed").count();

    // Convergence: one Entra application per Application, exactly the recorded passwords,
    // nothing tagged by the operator without an Application. Passwords issued while a
    // Secret write failed (the restart) are revoked after the replication window: wait.
    let problems_at_ready = discrepancies(&s).await.expect("listing");
    for p in &problems_at_ready {
        eprintln!("soak: at all-Ready: {p}");
    }
    let converge_start = Instant::now();
    wait_for(
        "the provider side to match the Applications and Secrets exactly",
        PASSWORD_CONVERGENCE_DEADLINE,
        || async {
            let problems = discrepancies(&s).await.map_err(|e| e.to_string())?;
            if problems.is_empty() {
                Ok(true)
            } else {
                Err(format!("{} discrepancies: {problems:#?}", problems.len()))
            }
        },
    )
    .await;
    let converged_after = converge_start.elapsed();
    let state = s.emu.state();
    let live_tagged = state
        .live_applications()
        .filter(|a| a.tags.iter().any(|t| t == "dcr-operator"))
        .count();
    assert_eq!(
        live_tagged, n,
        "exactly one live Entra application per Application"
    );
    let passwords: usize = state
        .live_applications()
        .filter(|a| a.tags.iter().any(|t| t == "dcr-operator"))
        .map(|a| a.passwords.len())
        .sum::<usize>();

    // Steady state: one full resync period with nothing changing. The sleep is the
    // measurement interval, not a synchronisation.
    let counts_steady0 = s.emu.request_counts();
    let seq_steady0 = last_seq(&s);
    tokio::time::sleep(RESYNC_PERIOD).await;
    let counts_steady1 = s.emu.request_counts();
    let steady_records = records_after(&s, seq_steady0);
    let steady_by_op = counts_between(&counts_steady0, &counts_steady1);
    let steady_total: u64 = steady_by_op.values().sum();
    let (steady_faults, _) = fault_tally(&steady_records);
    let (rss_steady_kib, hwm_steady_kib) = memory_kib(pid);
    eprintln!("soak: steady state, one {RESYNC_PERIOD:?} resync: {steady_total} requests {steady_by_op:?}, faults {steady_faults:?}");

    // Every delivered secret obtains a token.
    let http = s.emu.http_client();
    let secrets = s.secrets().list(&ListParams::default()).await.unwrap().items;
    let delivered: Vec<_> = secrets
        .iter()
        .filter(|x| x.name_any().starts_with("soak-"))
        .map(secret_data)
        .collect();
    assert_eq!(delivered.len(), n, "one Secret per Application");
    let token_start = Instant::now();
    let failures: Vec<String> = stream::iter(delivered)
        .map(|data| {
            let http = http.clone();
            async move {
                let resp = http
                    .post(&data["token_url"])
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", data["client_id"].as_str()),
                        ("client_secret", data["client_secret"].as_str()),
                        ("scope", "https://graph.microsoft.com/.default"),
                    ])
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().is_success() => None,
                    Ok(r) => Some(format!("{}: {}", data["client_id"], r.status())),
                    Err(e) => Some(format!("{}: {e}", data["client_id"])),
                }
            }
        })
        .buffer_unordered(PARALLEL)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    assert!(failures.is_empty(), "secrets that obtain no token: {failures:?}");
    let tokens_in = token_start.elapsed();

    // Delete them all: every Entra application soft-deleted, every Application gone.
    let seq_delete0 = last_seq(&s);
    let counts_delete0 = s.emu.request_counts();
    let delete_start = Instant::now();
    stream::iter(names.iter())
        .for_each_concurrent(PARALLEL, |name| {
            let api = api.clone();
            async move {
                api.delete(name, &DeleteParams::default())
                    .await
                    .unwrap_or_else(|e| panic!("deleting {name}: {e}"));
            }
        })
        .await;
    wait_for(
        format!("all {n} Applications to be gone"),
        DELETE_DEADLINE,
        || async {
            let left = api.list(&ListParams::default()).await?.items.len();
            Ok::<_, kube::Error>(left == 0)
        },
    )
    .await;
    let deleted_in = delete_start.elapsed();
    let delete_by_op = counts_between(&counts_delete0, &s.emu.request_counts());
    let (delete_faults, _) = fault_tally(&records_after(&s, seq_delete0));
    let state = s.emu.state();
    let tagged: Vec<_> = state
        .applications()
        .filter(|a| a.tags.iter().any(|t| t == "dcr-operator"))
        .collect();
    assert_eq!(tagged.len(), n, "no Entra application appeared or vanished");
    let not_deleted: Vec<_> = tagged
        .iter()
        .filter(|a| a.deleted_date_time.is_none())
        .map(|a| a.app_id.clone())
        .collect();
    assert!(
        not_deleted.is_empty(),
        "Entra applications left live: {not_deleted:?}"
    );
    let live_sps: Vec<_> = tagged
        .iter()
        .filter(|a| {
            state
                .service_principal(&a.app_id)
                .is_some_and(|sp| sp.deleted_date_time.is_none())
        })
        .map(|a| a.app_id.clone())
        .collect();
    assert!(live_sps.is_empty(), "service principals left live: {live_sps:?}");
    eprintln!("soak: all {n} deleted in {deleted_in:.1?}");

    // The operator survived the restart: the same process ran throughout.
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the operator process {pid} is gone"
    );
    let logs = s.operator.logs();
    assert!(!logs.contains("dcr-operator stopped") && !logs.contains("dcr-operator failed"));

    // Figures.
    let registration_by_op = counts_between(&counts0, &counts_ready);
    let registration_total: u64 = registration_by_op.values().sum();
    let (registration_faults, registration_statuses) = fault_tally(&records_ready);
    let per_app: BTreeMap<String, f64> = registration_by_op
        .iter()
        .map(|(op, c)| (op.clone(), (*c as f64 / n as f64 * 100.0).round() / 100.0))
        .collect();
    let summary = json!({
        "applications": n,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |p| p.get()),
            "loadavg_at_start": load_at_start,
            "loadavg_at_end": loadavg(),
        },
        "faults": {
            "throttle_rate": THROTTLE_RATE,
            "throttle_retry_after_s": THROTTLE_RETRY_AFTER.as_secs_f64(),
            "error_rate": ERROR_RATE,
            "replication_lag_s": REPLICATION_LAG.as_secs_f64(),
            "seed": FAULT_SEED,
            "provider_request_budget": request_budget()
                .map_or_else(|| json!("default (2,850 writes per 150 s, 3,325 RU per 10 s)"), |(q, b)| json!({"qps": q, "burst": b})),
            "operator": {"concurrency": 8, "resync_period_s": RESYNC_PERIOD.as_secs()},
        },
        "wall_s": {
            "created_all": secs(created_in),
            "all_ready": secs(all_ready_in),
            "apiserver_restart": secs(down_for),
            "restart_to_first_ready": secs(first_ready_after_restart),
            "apiserver_back_to_first_ready": secs(first_ready_after_restart.saturating_sub(down_for)),
            "provider_converged_after_all_ready": secs(converged_after),
            "token_checks": secs(tokens_in),
            "delete_all": secs(deleted_in),
        },
        "restart": {
            "skipped": skip_restart(),
            "ready_when_restarted": ready_at_restart,
            "of": first.len(),
            "reconcile_failures_logged_after_restart_until_all_ready": failed_reconciles_after_restart,
        },
        "graph_requests": {
            "to_all_ready": {
                "total": registration_total,
                "per_application": (registration_total as f64 / n as f64 * 100.0).round() / 100.0,
                "by_operation": registration_by_op,
                "per_application_by_operation": per_app,
                "faults": registration_faults,
                "by_status": registration_statuses,
            },
            "steady_state_one_resync": {
                "period_s": RESYNC_PERIOD.as_secs(),
                "total": steady_total,
                "per_application": (steady_total as f64 / n as f64 * 100.0).round() / 100.0,
                "by_operation": steady_by_op,
                "faults": steady_faults,
            },
            "delete_all": {
                "total": delete_by_op.values().sum::<u64>(),
                "by_operation": delete_by_op,
                "faults": delete_faults,
            },
        },
        "leaks": {
            "discrepancies_at_all_ready": problems_at_ready,
            "live_passwords_after_convergence": passwords,
        },
        "operator_memory_kib": {
            "rss_before": rss_before_kib,
            "unrelated_secrets": unrelated,
            "rss_all_ready": rss_ready_kib,
            "rss_steady": rss_steady_kib,
            "peak_hwm": hwm_steady_kib,
        },
        "last_request_seq_at_all_ready": seq_ready,
    });
    let pretty = serde_json::to_string_pretty(&summary).unwrap();
    eprintln!("soak summary:\n{pretty}");
    let out = bench_output_path();
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, pretty + "\n").unwrap();
    eprintln!("soak: wrote {}", out.display());
    s.teardown().await;
}
