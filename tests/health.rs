//! `/healthz` against a real kube-apiserver that goes away: it turns 503, naming the
//! controllers' watches, once they have failed for `--unhealthy-after`, and back to ok
//! after the apiserver returns; the process keeps running throughout. Runs on a control
//! plane of its own (stopping the apiserver would disturb other tests); skipped, saying so,
//! on a cluster of the user's.
//!
//! Run with `cargo test --test health`.

mod support;

use std::time::{Duration, Instant};
use support::cluster::*;
use support::operator::{emulator_ca_path, OperatorProcess};

const UNHEALTHY_AFTER: Duration = Duration::from_secs(5);
/// A reconnected watch is judged healthy once it stayed quiet for this long
/// (`controller::health::QUIET`), plus a retry interval; after a restart the watches also
/// meet `410 Expired` for a while and re-list (about 100 s in all, measured).
const RECOVERY: Duration = Duration::from_secs(60 + 10);

/// The address the operator logged for its health endpoints.
fn health_addr(logs: &str) -> Option<String> {
    let line = logs.lines().find(|l| l.contains("serving metrics and health"))?;
    let field = line.split_whitespace().find_map(|w| w.strip_prefix("health="))?;
    Some(field.trim_matches('"').to_string())
}

/// `GET /healthz`: status and body.
async fn healthz(http: &reqwest::Client, addr: &str) -> Result<(u16, String), String> {
    let resp = http
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.map_err(|e| e.to_string())?))
}

async fn wait_healthz(
    http: &reqwest::Client,
    addr: &str,
    want: u16,
    what: &str,
    timeout: Duration,
) -> String {
    wait_for(what, timeout, || async {
        let (status, body) = healthz(http, addr).await?;
        Ok::<_, String>((status == want).then_some(body))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_while_the_apiserver_is_gone_and_recovers_after() {
    let Some(mut cp) =
        private_control_plane("healthz_fails_while_the_apiserver_is_gone_and_recovers_after").await
    else {
        return;
    };
    let client = client_from_kubeconfig(cp.kubeconfig_path()).await.unwrap();
    let version = server_version(&client).await.unwrap();
    install_crds_from_dir(&client, &crds_dir(), &version)
        .await
        .unwrap();
    ensure_namespace(&client, OPERATOR_NAMESPACE).await.unwrap();
    let op = OperatorProcess::start_with_kubeconfig(
        cp.kubeconfig_path().to_path_buf(),
        &emulator_ca_path().await,
        &["--unhealthy-after", "5s"],
    )
    .await;
    let addr = wait_for("the operator to log its health address", TIMEOUT, || {
        let addr = health_addr(&op.logs());
        async move { Ok::<_, String>(addr) }
    })
    .await;
    let http = reqwest::Client::new();
    let body = wait_healthz(&http, &addr, 200, "/healthz ok at start", TIMEOUT).await;
    assert_eq!(body, "ok");
    // Ready: the record key is loaded and the controllers (and their watches) run.
    wait_for("/readyz", TIMEOUT, || async {
        let resp = http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(resp.status().is_success().then_some(()))
    })
    .await;

    // Watches fail from the moment the apiserver gets SIGTERM, before stop returns.
    let stopped = Instant::now();
    cp.stop_apiserver();
    let body = wait_healthz(
        &http,
        &addr,
        503,
        "/healthz to fail without the apiserver",
        TIMEOUT,
    )
    .await;
    let noticed = stopped.elapsed();
    eprintln!(
        "/healthz failed {noticed:.1?} after the apiserver stopped (bound {UNHEALTHY_AFTER:?}):\n{body}"
    );
    assert!(noticed >= UNHEALTHY_AFTER, "failed before the bound: {noticed:?}");
    let watches = [
        "provider/DcrProvider",
        "provider/Secret/dcr-e2e-providers",
        "strategy/AuthStrategy",
        "strategy/DcrProvider",
        "application/Application",
        "application/Secret",
        "application/AuthStrategy",
    ];
    // Each watch's streak starts when its own retry fails (0-10 s apart, measured), and a
    // watch that reconnects for a moment starts a new one: so every watch must be named,
    // not necessarily all in the same answer.
    let named = std::sync::Mutex::new(std::collections::BTreeSet::<&str>::new());
    let body = wait_for("/healthz to name every watch", TIMEOUT, || async {
        let (status, body) = healthz(&http, &addr).await?;
        let mut named = named.lock().unwrap();
        if status == 503 {
            named.extend(
                watches
                    .iter()
                    .copied()
                    .filter(|w| body.contains(&format!("{w}: "))),
            );
        }
        let unnamed: Vec<_> = watches.iter().filter(|w| !named.contains(*w)).collect();
        if unnamed.is_empty() {
            return Ok(Some(body));
        }
        // Reported by wait_for on timeout: which watches were never named, and what the
        // operator said of its watches meanwhile.
        let said: Vec<_> = op
            .logs()
            .lines()
            .filter(|l| l.contains("watch"))
            .map(str::to_string)
            .collect();
        Err(format!(
            "never named: {unnamed:?}; last answer {status}:\n{body}\noperator's watch lines (last 20):\n{}",
            said[said.len().saturating_sub(20)..].join("\n")
        ))
    })
    .await;
    eprintln!(
        "every watch named {:.1?} after the stop; the last answer:\n{body}",
        stopped.elapsed()
    );

    cp.start_apiserver().await.expect("starting the apiserver again");
    let started = Instant::now();
    let body = wait_healthz(
        &http,
        &addr,
        200,
        "/healthz ok after the apiserver returned",
        // The re-list after `410 Expired` and the first quiet period come on top; on a loaded
        // CI machine the whole test took 191 s, so leave room: this bounds "never recovers",
        // not how fast.
        RECOVERY + 4 * TIMEOUT,
    )
    .await;
    assert_eq!(body, "ok");
    eprintln!(
        "/healthz ok {:.1?} after the apiserver was back",
        started.elapsed()
    );
    let logs = op.logs();
    assert!(
        !logs.contains("dcr-operator failed") && !logs.contains("dcr-operator stopped"),
        "{logs}"
    );
}
