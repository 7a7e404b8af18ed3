//! Leader election against the real control plane: two operator processes with
//! `--leader-elect`, running as the operator's ServiceAccount user with config/rbac's
//! ClusterRole and its leader-election Role (applied verbatim), share one Lease. Exactly one
//! reconciles; when it is SIGKILLed the other takes over once the Lease expires, and when it
//! is SIGTERMed it releases the Lease so that the other takes over at once.
//!
//! The two tests run one after the other (both reconcile every namespace's objects, so two
//! leaders of different tests would work on each other's Applications).

mod support;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::PostParams;
use kube::{Api, Client};
use std::time::{Duration, Instant};
use support::cluster::{cluster, create_or_replace, wait_for, yaml_documents, OPERATOR_NAMESPACE, TIMEOUT};
use support::operator::{emulator_ca_path, operator_kubeconfig, OperatorProcess};
use support::scenario::{Profile, Scenario};

/// The operator's defaults (`--leader-election-lease-duration` etc.), which these tests use.
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RETRY_PERIOD: Duration = Duration::from_secs(2);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Applies config/rbac/leader_election_role.yaml (Role and RoleBinding in dcr-system, the
/// namespace created if missing) as shipped.
async fn apply_leader_election_rbac(client: &Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": OPERATOR_NAMESPACE}
    }))
    .unwrap();
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace {OPERATOR_NAMESPACE}: {e}"),
    }
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let yaml = std::fs::read_to_string(repo.join("config/rbac/leader_election_role.yaml")).unwrap();
    for doc in yaml_documents(&yaml).unwrap() {
        assert_eq!(doc["metadata"]["namespace"], OPERATOR_NAMESPACE);
        match doc["kind"].as_str() {
            Some("Role") => {
                let role: Role = serde_json::from_value(doc).unwrap();
                create_or_replace(&Api::namespaced(client.clone(), OPERATOR_NAMESPACE), &role)
                    .await
                    .expect("leader-election Role");
            }
            Some("RoleBinding") => {
                let binding: RoleBinding = serde_json::from_value(doc).unwrap();
                create_or_replace(&Api::namespaced(client.clone(), OPERATOR_NAMESPACE), &binding)
                    .await
                    .expect("leader-election RoleBinding");
            }
            other => panic!("unexpected {other:?} in leader_election_role.yaml"),
        }
    }
}

/// A candidate: an operator process as the operator's user, electing on `lease`.
/// (`operator_kubeconfig` rewrites its file: call it once before starting candidates at once.)
async fn candidate(lease: &str, instance: &str) -> OperatorProcess {
    candidate_with(operator_kubeconfig().await, lease, instance).await
}

async fn candidate_with(kubeconfig: std::path::PathBuf, lease: &str, instance: &str) -> OperatorProcess {
    let args = [
        "--leader-elect",
        "--leader-election-namespace",
        OPERATOR_NAMESPACE,
        "--leader-election-lease-name",
        lease,
        "--instance",
        instance,
    ];
    OperatorProcess::start_with_kubeconfig(kubeconfig, &emulator_ca_path().await, &args).await
}

fn is_leader(op: &OperatorProcess) -> bool {
    op.logs().contains("acquired leadership")
}

async fn lease(client: &Client, name: &str) -> Lease {
    Api::<Lease>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .get(name)
        .await
        .expect("the Lease")
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

/// A Lease name of this run's own (the tests may run against a cluster of the user's).
fn lease_name(test: &str) -> String {
    format!("{test}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6])
}

/// Waits until exactly one of `a` and `b` has acquired leadership; returns (leader, standby).
async fn elected(a: OperatorProcess, b: OperatorProcess) -> (OperatorProcess, OperatorProcess) {
    wait_for("one of the two operators to acquire leadership", TIMEOUT, || {
        let found = is_leader(&a) || is_leader(&b);
        async move { Ok::<_, String>(found.then_some(())) }
    })
    .await;
    match (is_leader(&a), is_leader(&b)) {
        (true, false) => (a, b),
        (false, true) => (b, a),
        _ => panic!("both operators say they lead:\n{}\n----\n{}", a.logs(), b.logs()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_a_standby_takes_over_when_it_is_killed() {
    let _serial = SERIAL.lock().await;
    let client = cluster().await.client().await;
    apply_leader_election_rbac(&client).await;
    let lease_name = lease_name("killed");

    // Both start at once and race for the Lease (a create, or replaces with resourceVersion).
    let kubeconfig = operator_kubeconfig().await;
    let (a, b) = tokio::join!(
        candidate_with(kubeconfig.clone(), &lease_name, "op-a"),
        candidate_with(kubeconfig, &lease_name, "op-b")
    );
    let (mut leader, standby) = elected(a, b).await;
    let leader_id = if leader.logs().contains("op-a") {
        "op-a"
    } else {
        "op-b"
    };
    let standby_id = if leader_id == "op-a" { "op-b" } else { "op-a" };
    assert_eq!(
        holder(&lease(&client, &lease_name).await).as_deref(),
        Some(leader_id)
    );
    wait_for("the standby to see the Lease held", TIMEOUT, || {
        let logs = standby.logs();
        async move { Ok::<_, String>(logs.contains("standing by").then_some(())) }
    })
    .await;

    // The leader reconciles; the standby never touches this test's objects.
    let s = Scenario::start_with("leader-killed", Profile::Ideal, leader.operator()).await;
    s.create_app("before", serde_json::json!({})).await;
    s.wait_ready(&s.apps(), "before", "True", Some("Ready")).await;
    assert!(
        leader.logs().contains(s.ns.name()),
        "the leader reconciled the Application"
    );
    assert!(
        !standby.logs().contains(s.ns.name()) && !is_leader(&standby),
        "the standby reconciled while the leader held the Lease:\n{}",
        standby.logs()
    );

    // kill -9: no release. The standby takes over once the Lease has expired.
    let renewed = lease(&client, &lease_name).await;
    leader.kill().await;
    let killed = Instant::now();
    wait_for("the standby to take over", TIMEOUT, || {
        let led = is_leader(&standby);
        async move { Ok::<_, String>(led.then_some(())) }
    })
    .await;
    let failover = killed.elapsed();
    eprintln!("failover after SIGKILL: {failover:.1?} (lease {LEASE_DURATION:?}, retry {RETRY_PERIOD:?})");
    let taken = lease(&client, &lease_name).await;
    assert_eq!(holder(&taken).as_deref(), Some(standby_id));
    let transitions = |l: &Lease| l.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0);
    assert_eq!(transitions(&taken), transitions(&renewed) + 1);
    // Not before the Lease expired (it was renewed at most a retry period before the kill)...
    assert!(
        failover + RETRY_PERIOD + Duration::from_secs(1) >= LEASE_DURATION,
        "took over after {failover:?}, before the lease duration"
    );
    // ...and soon after (a retry period, plus the time to notice on a loaded machine).
    assert!(
        failover < LEASE_DURATION + 3 * RETRY_PERIOD + Duration::from_secs(5),
        "{failover:?}"
    );

    // The new leader reconciles what was created after the failover.
    s.create_app("after", serde_json::json!({})).await;
    s.wait_ready(&s.apps(), "after", "True", Some("Ready")).await;
    s.teardown().await;
    drop(standby);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_gracefully_releases_the_lease_and_the_standby_takes_over_at_once() {
    let _serial = SERIAL.lock().await;
    let client = cluster().await.client().await;
    apply_leader_election_rbac(&client).await;
    let lease_name = lease_name("released");

    let mut leader = candidate(&lease_name, "op-first").await;
    wait_for("the first operator to lead", TIMEOUT, || {
        let led = is_leader(&leader);
        async move { Ok::<_, String>(led.then_some(())) }
    })
    .await;
    let standby = candidate(&lease_name, "op-second").await;
    wait_for("the second operator to stand by", TIMEOUT, || {
        let logs = standby.logs();
        async move { Ok::<_, String>(logs.contains("standing by").then_some(())) }
    })
    .await;
    assert!(!is_leader(&standby));
    let s = Scenario::start_with("leader-released", Profile::Ideal, leader.operator()).await;
    s.create_app("before", serde_json::json!({})).await;
    s.wait_ready(&s.apps(), "before", "True", Some("Ready")).await;

    // SIGTERM: the controllers stop, then the Lease is released.
    let stopped = Instant::now();
    leader.terminate().await;
    let logs = leader.logs();
    assert!(logs.contains("released the leader-election lease"), "{logs}");
    assert!(
        logs.contains("dcr-operator stopped") && !logs.contains("dcr-operator failed"),
        "{logs}"
    );
    wait_for("the standby to take over", TIMEOUT, || {
        let led = is_leader(&standby);
        async move { Ok::<_, String>(led.then_some(())) }
    })
    .await;
    let handover = stopped.elapsed();
    eprintln!("handover after SIGTERM: {handover:.1?} (lease {LEASE_DURATION:?}, retry {RETRY_PERIOD:?})");
    assert!(
        handover < LEASE_DURATION - RETRY_PERIOD,
        "the standby waited for expiry ({handover:?}) instead of taking the released Lease"
    );
    assert_eq!(
        holder(&lease(&client, &lease_name).await).as_deref(),
        Some("op-second")
    );

    s.create_app("after", serde_json::json!({})).await;
    s.wait_ready(&s.apps(), "after", "True", Some("Ready")).await;
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_exits_before_its_lease_expires() {
    let _serial = SERIAL.lock().await;
    let client = cluster().await.client().await;
    apply_leader_election_rbac(&client).await;
    let lease_name = lease_name("revoked");

    let leader = candidate(&lease_name, "op-revoked").await;
    wait_for("the operator to lead", TIMEOUT, || {
        let led = is_leader(&leader);
        async move { Ok::<_, String>(led.then_some(())) }
    })
    .await;

    // Take its Lease permissions away: every renewal now fails with 403.
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    bindings
        .delete("dcr-operator-leader-election", &Default::default())
        .await
        .expect("deleting the leader-election RoleBinding");
    let revoked = Instant::now();
    wait_for("the leader to give up", TIMEOUT, || {
        let logs = leader.logs();
        async move { Ok::<_, String>(logs.contains("lost leadership").then_some(())) }
    })
    .await;
    let gave_up = revoked.elapsed();
    // Still its Lease, and still valid: nobody else could have taken over yet.
    let held = lease(&client, &lease_name).await;
    assert_eq!(holder(&held).as_deref(), Some("op-revoked"));
    let spec = held.spec.unwrap();
    let expires = spec.renew_time.unwrap().0
        + k8s_openapi::jiff::SignedDuration::from_secs(spec.lease_duration_seconds.unwrap().into());
    assert!(
        k8s_openapi::jiff::Timestamp::now() < expires,
        "the leader outlived its Lease"
    );
    eprintln!("gave up {gave_up:.1?} after losing the Lease permissions (renew deadline 10s)");
    // The last renewal was at most a retry period before the revocation.
    assert!(
        gave_up + RETRY_PERIOD >= Duration::from_secs(10),
        "gave up early: {gave_up:?}"
    );
    // And the process is gone (exit status 1 after the log line).
    let pid = leader.pid() as libc::pid_t;
    wait_for("the leader process to exit", TIMEOUT, || {
        // SAFETY: signal 0 only checks that the (not yet reaped, or reaped) pid exists.
        let gone = unsafe { libc::kill(pid, 0) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        async move { Ok::<_, String>(gone.then_some(())) }
    })
    .await;
    apply_leader_election_rbac(&client).await;
}

/// Keeps a Lease held by `holder` as a live leader on a skewed clock would: every retry
/// period it renews, writing a `renewTime` `skew_secs` off this machine's clock. Returns
/// the task (abort it to let the leader die) and the instant of its latest renewal.
fn skewed_leader(
    client: &Client,
    lease_name: &str,
    holder: &str,
    skew_secs: i64,
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::Mutex<Instant>>,
) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    let api: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let last = std::sync::Arc::new(std::sync::Mutex::new(Instant::now()));
    let (name, holder, renewed) = (lease_name.to_string(), holder.to_string(), last.clone());
    let task = tokio::spawn(async move {
        loop {
            let at = MicroTime(Timestamp::now() + SignedDuration::from_secs(skew_secs));
            let lease: Lease = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
                "spec": {
                    "holderIdentity": holder,
                    "leaseDurationSeconds": LEASE_DURATION.as_secs(),
                    "acquireTime": at,
                    "renewTime": at,
                    "leaseTransitions": 0
                }
            }))
            .unwrap();
            create_or_replace(&api, &lease)
                .await
                .expect("renewing the skewed Lease");
            *renewed.lock().unwrap() = Instant::now();
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    });
    (task, last)
}

/// A leader whose clock is 60 s behind or ahead of the standby's: the standby judges the
/// Lease by when it saw it change, so it never takes over while the leader renews, and
/// takes over within the lease duration (plus a retry period) once it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_of_a_minute_either_way_neither_steals_a_live_lease_nor_delays_taking_a_dead_one() {
    let _serial = SERIAL.lock().await;
    let client = cluster().await.client().await;
    apply_leader_election_rbac(&client).await;
    let kubeconfig = operator_kubeconfig().await;
    let mut cases = Vec::new();
    for skew in [-60i64, 60] {
        let name = lease_name(if skew < 0 { "skew-behind" } else { "skew-ahead" });
        let (leader, renewed) = skewed_leader(&client, &name, "skewed-leader", skew);
        wait_for("the skewed leader's first renewal", TIMEOUT, || {
            let api: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
            let name = name.clone();
            async move { Ok::<_, String>(api.get_opt(&name).await.map_err(|e| e.to_string())?.map(|_| ())) }
        })
        .await;
        let standby = candidate_with(kubeconfig.clone(), &name, &format!("standby{skew}")).await;
        cases.push((skew, name, leader, renewed, standby));
    }
    for (skew, _, _, _, standby) in &cases {
        wait_for(format!("the standby (skew {skew}s) to stand by"), TIMEOUT, || {
            let logs = standby.logs();
            async move { Ok::<_, String>(logs.contains("standing by").then_some(())) }
        })
        .await;
    }

    // A live leader keeps its Lease: over twice the lease duration, neither standby leads.
    // (A property over time: this window is what is being tested, not a synchronisation.)
    let window = Instant::now() + 2 * LEASE_DURATION;
    while Instant::now() < window {
        for (skew, name, _, _, standby) in &cases {
            assert!(
                !is_leader(standby),
                "skew {skew}s: the standby took over a live leader:\n{}",
                standby.logs()
            );
            assert_eq!(
                holder(&lease(&client, name).await).as_deref(),
                Some("skewed-leader")
            );
        }
        tokio::time::sleep(RETRY_PERIOD / 2).await;
    }

    // The leader dies: each standby takes over one lease duration after the last renewal
    // it saw, whatever that renewal's renewTime said.
    for (_, _, leader, _, _) in &cases {
        leader.abort();
    }
    for (skew, name, leader, renewed, standby) in cases {
        let _ = leader.await;
        let last_renewal = *renewed.lock().unwrap();
        wait_for(
            format!("the standby (skew {skew}s) to take over"),
            TIMEOUT,
            || {
                let led = is_leader(&standby);
                async move { Ok::<_, String>(led.then_some(())) }
            },
        )
        .await;
        let after = last_renewal.elapsed();
        eprintln!("skew {skew:+}s: took over {after:.1?} after the last renewal (lease {LEASE_DURATION:?}, retry {RETRY_PERIOD:?})");
        assert!(
            after + RETRY_PERIOD >= LEASE_DURATION,
            "skew {skew}s: took over early, {after:?}"
        );
        assert!(
            after < LEASE_DURATION + 2 * RETRY_PERIOD + Duration::from_secs(3),
            "skew {skew}s: took over late, {after:?}"
        );
        assert_eq!(
            holder(&lease(&client, &name).await).as_deref(),
            Some(format!("standby{skew}").as_str())
        );
    }
}
