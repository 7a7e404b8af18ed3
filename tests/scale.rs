//! Scale benchmark (issue 14, "Benchmarks"): N new Applications (1,000 by default,
//! `DCR_BENCH_APPS`) against the Graph emulator's documented throttling buckets, 2 s
//! replication lag, 1% 503s and no random 429s, so Graph's own limits and the operator's
//! request budget shape the run. It measures, and writes to `target/bench/scale.json` with a
//! chart of Applications Ready over time against the optimum (`target/bench/scale.svg`):
//! - time to all Ready, against the optimum N x 3 writes / 20 writes/s;
//! - Graph requests per Application by operation, and the share answered 429;
//! - kube-apiserver requests (its own `apiserver_request_total`) per reconcile;
//! - operator RSS and CPU seconds per Application;
//! - one steady-state resync; an operator restart with every Application Ready.
//!
//! A benchmark, not a test of behaviour: `#[ignore]`d; `make bench` runs it. It starts an
//! operator process of its own (flags below), so this binary holds nothing else. Skipped,
//! saying so, on a cluster of the user's (its apiserver metrics are not ours to read).

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dcr_operator::crd::Application;
use futures::{stream, StreamExt};
use kube::api::ListParams;
use kube::{Api, Client};
use sandbox::graph::{EmulatorConfig, FaultConfig, OperationCount, ThrottleConfig};
use serde_json::json;
use support::cluster::{cluster, wait_for};
use support::operator::{emulator_ca_path, operator_kubeconfig, OperatorProcess};
use support::scenario::Scenario;

/// Applications in the default run (`DCR_BENCH_APPS` overrides, e.g. 10000).
const DEFAULT_APPS: usize = 1_000;
const REPLICATION_LAG: Duration = Duration::from_secs(2);
/// Fraction of Graph requests answered 503 (no Retry-After).
const ERROR_RATE: f64 = 0.01;
const FAULT_SEED: u64 = 0x5ca1e;
/// Graph's write quota per app and tenant (contract §2.2): 3,000 per 150 s.
const GRAPH_WRITES_PER_S: f64 = 3_000.0 / 150.0;
const GRAPH_WRITE_BUCKET: f64 = 3_000.0;
/// Writes a new Application needs at least: the upsert (with the owner bind), the service
/// principal, addPassword.
const WRITES_PER_APP: f64 = 3.0;
/// The operator's flags on top of the harness's (tests/support/operator.rs). The resync is
/// longer than the harness's 30 s so the ramp is not mostly resyncs; the concurrency is
/// higher than the default 4 because a new Application holds its worker through the 2 s
/// replication wait (see the README's Scale section).
/// `DCR_BENCH_RESYNC_S` overrides it (for a short trial run).
fn resync_period() -> Duration {
    Duration::from_secs(env_number("DCR_BENCH_RESYNC_S").unwrap_or(120))
}
fn concurrency() -> u16 {
    env_number("DCR_BENCH_CONCURRENCY").unwrap_or(32)
}
/// Client-side concurrency for creating Applications.
const PARALLEL: usize = 32;
/// Sampling interval of the Ready count (the chart's resolution).
const SAMPLE: Duration = Duration::from_secs(1);
const READY_DEADLINE: Duration = Duration::from_secs(90 * 60);

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok()?.parse().ok()
}

fn app_count() -> usize {
    env_number("DCR_BENCH_APPS")
        .filter(|n: &usize| *n >= 2)
        .unwrap_or(DEFAULT_APPS)
}

fn is_ready(app: &Application) -> bool {
    let c = Scenario::ready_condition(app);
    c["status"] == "True" && c["observedGeneration"] == json!(app.metadata.generation)
}

async fn count_ready(api: &Api<Application>) -> kube::Result<usize> {
    let list = api.list(&ListParams::default()).await?;
    Ok(list.items.iter().filter(|a| is_ready(a)).count())
}

/// `apiserver_request_total` by `verb resource[/subresource]`, from the apiserver's own
/// `/metrics`.
async fn apiserver_requests(client: &Client) -> BTreeMap<String, f64> {
    // A GET built by kube's request builder, pointed at the apiserver's /metrics.
    let mut req = kube::core::Request::new("/metrics")
        .list(&ListParams::default())
        .expect("a GET request");
    *req.uri_mut() = "/metrics".parse().expect("a path");
    let text = client.request_text(req).await.expect("kube-apiserver /metrics");
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(&format!("{name}=\"")[..])
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let sub = label("subresource");
        let key = format!(
            "{} {}{}",
            label("verb"),
            label("resource"),
            if sub.is_empty() {
                String::new()
            } else {
                format!("/{sub}")
            }
        );
        *out.entry(key).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// The resources the operator reads or writes; the apiserver's other clients (the
/// controller-manager) touch others.
const OPERATOR_RESOURCES: [&str; 7] = [
    "applications",
    "authstrategies",
    "dcrproviders",
    "namespaces",
    "secrets",
    "events",
    "leases",
];

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(k, _)| {
            let resource = k.split_once(' ').map_or("", |(_, r)| r);
            let resource = resource.split('/').next().unwrap_or("");
            OPERATOR_RESOURCES.contains(&resource)
        })
        .map(|(k, v)| {
            (
                k.clone(),
                (v - before.get(k).copied().unwrap_or(0.0)).round() as u64,
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Graph requests by operation between two snapshots, and how many were answered 429.
fn graph_between(
    before: &BTreeMap<String, OperationCount>,
    after: &BTreeMap<String, OperationCount>,
) -> (BTreeMap<String, u64>, u64) {
    let mut by_op = BTreeMap::new();
    let mut throttled = 0;
    for (op, c) in after {
        let b = before.get(op);
        let n = c.total - b.map_or(0, |b| b.total);
        if n > 0 {
            by_op.insert(op.clone(), n);
        }
        let t429 = |c: &OperationCount| c.by_status.get("429").copied().unwrap_or(0);
        throttled += t429(c) - b.map_or(0, t429);
    }
    (by_op, throttled)
}

/// `dcr_reconciliations_total` for Applications, from the operator's own metrics.
async fn application_reconciles(metrics: &str) -> u64 {
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .and_then(|r| r.error_for_status())
        .expect("operator /metrics")
        .text()
        .await
        .expect("operator /metrics body");
    text.lines()
        .filter(|l| l.starts_with("dcr_reconciliations_total{") && l.contains("kind=\"Application\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The metrics address the operator's latest run logged.
fn metrics_addr(logs: &str) -> String {
    logs.lines()
        .rev()
        .find(|l| l.contains("serving metrics and health"))
        .and_then(|l| l.split("metrics=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .expect("the operator logs its metrics address")
        .trim_matches('"')
        .to_string()
}

/// RSS in KiB and CPU seconds (user + system) of a process.
fn process_usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15: indexes 11 and 12 after the state.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (rss, (ticks(11) + ticks(12)) / hz)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn out_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench")
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Applications Ready over time (s, count) against the optimum line, as an SVG.
fn chart(n: usize, samples: &[(f64, usize)], optimum_s: f64) -> String {
    const W: f64 = 640.0;
    const H: f64 = 360.0;
    const PAD: f64 = 48.0;
    let t_max = samples.last().map_or(1.0, |s| s.0).max(optimum_s).max(1.0);
    let x = |t: f64| PAD + t / t_max * (W - 2.0 * PAD);
    let y = |c: f64| H - PAD - c / n as f64 * (H - 2.0 * PAD);
    let measured: Vec<String> = samples
        .iter()
        .map(|(t, c)| format!("{:.1},{:.1}", x(*t), y(*c as f64)))
        .collect();
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{b}\" stroke=\"black\"/>\n",
        b = H - PAD,
        r = W - PAD
    );
    for i in 0..=4 {
        let t = t_max * f64::from(i) / 4.0;
        let c = n as f64 * f64::from(i) / 4.0;
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t:.0} s</text>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{c:.0}</text>\n",
            x(t),
            H - PAD + 16.0,
            PAD - 4.0,
            y(c) + 4.0
        );
    }
    svg += &format!(
        "<polyline fill=\"none\" stroke=\"#999\" stroke-dasharray=\"6,4\" points=\"{:.1},{:.1} {:.1},{:.1}\"/>\n",
        x(0.0),
        y(0.0),
        x(optimum_s),
        y(n as f64)
    );
    svg += &format!(
        "<polyline fill=\"none\" stroke=\"#1f6feb\" stroke-width=\"2\" points=\"{}\"/>\n",
        measured.join(" ")
    );
    svg += &format!(
        "<text x=\"{PAD}\" y=\"20\">{n} Applications Ready over time (blue) against the optimum N x 3 / 20 s (dashed, {optimum_s:.0} s)</text>\n</svg>\n"
    );
    svg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark (minutes): run with `make bench`"]
async fn scale_new_applications_at_graphs_limits() {
    let cluster = cluster().await;
    if !cluster.is_local() {
        eprintln!("SKIPPED scale bench: it reads the local kube-apiserver's metrics");
        return;
    }
    let n = app_count();
    let load_at_start = loadavg();
    let conc = concurrency().to_string();
    let resync = format!("{}s", resync_period().as_secs());
    let ca = emulator_ca_path().await;
    let mut op = OperatorProcess::start_with_kubeconfig(
        operator_kubeconfig().await,
        &ca,
        &["--concurrency", &conc, "--resync-period", &resync],
    )
    .await;
    let emulator = EmulatorConfig {
        replication_lag: REPLICATION_LAG,
        throttling: ThrottleConfig::default(),
        faults: FaultConfig {
            error_rate: ERROR_RATE,
            seed: Some(FAULT_SEED),
            ..FaultConfig::default()
        },
        ..EmulatorConfig::default()
    };
    let s = Scenario::start_with_config("scale", emulator, op.operator()).await;
    s.wait_ready(&s.providers(), &s.provider, "True", Some("Ready"))
        .await;
    s.wait_ready(&s.strategies(), &s.strategy, "True", Some("Ready"))
        .await;
    let kube = cluster.client().await;
    let api = s.apps();

    // Ramp: N new Applications, the Ready count sampled every second.
    let graph0 = s.emu.request_counts();
    let kube0 = apiserver_requests(&kube).await;
    let metrics0 = metrics_addr(&op.logs());
    let reconciles0 = application_reconciles(&metrics0).await;
    let (rss0, cpu0) = process_usage(op.pid());
    let t0 = Instant::now();
    let creator = {
        let s_apps = s.apps();
        let ns = s.ns.name().to_string();
        let strategy = s.strategy.clone();
        tokio::spawn(async move {
            stream::iter(0..n)
                .for_each_concurrent(PARALLEL, |i| {
                    let apps = s_apps.clone();
                    let ns = ns.clone();
                    let strategy = strategy.clone();
                    async move {
                        let app: Application = serde_json::from_value(json!({
                            "apiVersion": "dcr-operator.io/v1alpha1", "kind": "Application",
                            "metadata": {"name": format!("scale-{i:05}"), "namespace": ns},
                            "spec": {"displayName": format!("Scale {i}"), "authStrategyRef": {"name": strategy}},
                        }))
                        .unwrap();
                        apps.create(&Default::default(), &app)
                            .await
                            .unwrap_or_else(|e| panic!("creating scale-{i:05}: {e}"));
                    }
                })
                .await;
        })
    };
    let mut samples = vec![(0.0, 0usize)];
    let mut polls = 0u64;
    let mut created_in = None;
    loop {
        let ready = count_ready(&api).await.expect("listing Applications");
        polls += 1;
        let t = t0.elapsed();
        samples.push((t.as_secs_f64(), ready));
        if created_in.is_none() && creator.is_finished() {
            created_in = Some(t);
        }
        if ready == n {
            break;
        }
        assert!(t < READY_DEADLINE, "{ready}/{n} Ready after {t:?}");
        // The sampling interval of the measurement, not a synchronisation.
        tokio::time::sleep(SAMPLE).await;
    }
    creator.await.expect("creating Applications");
    let all_ready = t0.elapsed();
    let graph1 = s.emu.request_counts();
    let kube1 = apiserver_requests(&kube).await;
    let reconciles1 = application_reconciles(&metrics0).await;
    let (rss1, cpu1) = process_usage(op.pid());
    eprintln!("scale: all {n} Ready in {all_ready:.1?}");

    // Steady state: one resync period, nothing changing (the sleep is the interval).
    tokio::time::sleep(resync_period()).await;
    let graph2 = s.emu.request_counts();
    let kube2 = apiserver_requests(&kube).await;
    let reconciles2 = application_reconciles(&metrics0).await;
    let (rss2, cpu2) = process_usage(op.pid());

    // Restart with every Application Ready: until each was reconciled once by the new run.
    op.kill().await;
    let restart0 = Instant::now();
    op.restart().await;
    let metrics1 = metrics_addr(&op.logs());
    wait_for(
        format!("the restarted operator to reconcile all {n} Applications"),
        READY_DEADLINE,
        || async { Ok::<_, String>((application_reconciles(&metrics1).await >= n as u64).then_some(())) },
    )
    .await;
    let restart_in = restart0.elapsed();
    let graph3 = s.emu.request_counts();
    let kube3 = apiserver_requests(&kube).await;
    let still_ready = count_ready(&api).await.expect("listing Applications");
    assert_eq!(still_ready, n, "every Application stays Ready across the restart");
    let (rss3, _) = process_usage(op.pid());

    // Figures.
    let optimum = n as f64 * WRITES_PER_APP / GRAPH_WRITES_PER_S;
    let bucket_optimum = ((n as f64 * WRITES_PER_APP - GRAPH_WRITE_BUCKET) / GRAPH_WRITES_PER_S).max(0.0);
    let (ramp_ops, ramp_429) = graph_between(&graph0, &graph1);
    let ramp_total: u64 = ramp_ops.values().sum();
    let per_app: BTreeMap<String, f64> = ramp_ops
        .iter()
        .map(|(op, c)| (op.clone(), round2(*c as f64 / n as f64)))
        .collect();
    let mut ramp_kube = delta(&kube0, &kube1);
    // The bench's own requests: its Ready polls and the creates.
    for (key, own) in [("LIST applications", polls), ("POST applications", n as u64)] {
        if let Some(v) = ramp_kube.get_mut(key) {
            *v = v.saturating_sub(own);
        }
    }
    let ramp_kube_total: u64 = ramp_kube.values().sum();
    let ramp_reconciles = reconciles1 - reconciles0;
    let (steady_ops, steady_429) = graph_between(&graph1, &graph2);
    let steady_kube = delta(&kube1, &kube2);
    let steady_kube_total: u64 = steady_kube.values().sum();
    let steady_reconciles = reconciles2 - reconciles1;
    let (restart_ops, restart_429) = graph_between(&graph2, &graph3);
    let mut restart_kube = delta(&kube2, &kube3);
    if let Some(v) = restart_kube.get_mut("LIST applications") {
        *v = v.saturating_sub(1);
    }
    let summary = json!({
        "applications": n,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |p| p.get()),
            "loadavg_at_start": load_at_start,
            "loadavg_at_end": loadavg(),
        },
        "setup": {
            "graph": "documented throttling buckets (3,000 writes per 150 s, 3,500 RU per 10 s), no random 429s",
            "error_rate_503": ERROR_RATE,
            "replication_lag_s": REPLICATION_LAG.as_secs_f64(),
            "seed": FAULT_SEED,
            "request_budget": "default (2,850 writes per 150 s, 3,325 RU per 10 s)",
            "operator": {"concurrency": concurrency(), "resync_period_s": resync_period().as_secs()},
        },
        "ramp": {
            "created_all_s": created_in.map(|d| round2(d.as_secs_f64())),
            "all_ready_s": round2(all_ready.as_secs_f64()),
            "optimum_s": round2(optimum),
            "optimum_with_full_write_bucket_s": round2(bucket_optimum),
            "ratio_optimum_to_measured": round2(optimum / all_ready.as_secs_f64()),
            "graph_requests": ramp_total,
            "graph_per_application": round2(ramp_total as f64 / n as f64),
            "graph_per_application_by_operation": per_app,
            "graph_429": ramp_429,
            "graph_429_share": if ramp_total > 0 { ramp_429 as f64 / ramp_total as f64 } else { 0.0 },
            "apiserver_requests": ramp_kube_total,
            "apiserver_by_request": ramp_kube,
            "application_reconciles": ramp_reconciles,
            "apiserver_per_reconcile": round2(ramp_kube_total as f64 / ramp_reconciles.max(1) as f64),
            "operator_cpu_s_per_application": round2((cpu1 - cpu0) / n as f64),
        },
        "steady_resync": {
            "period_s": resync_period().as_secs(),
            "graph_requests": steady_ops.values().sum::<u64>(),
            "graph_by_operation": steady_ops,
            "graph_429": steady_429,
            "apiserver_requests": steady_kube_total,
            "apiserver_by_request": steady_kube,
            "application_reconciles": steady_reconciles,
            "apiserver_per_reconcile": round2(steady_kube_total as f64 / steady_reconciles.max(1) as f64),
            "operator_cpu_s": round2(cpu2 - cpu1),
        },
        "restart_all_ready": {
            "until_all_reconciled_s": round2(restart_in.as_secs_f64()),
            "graph_requests": restart_ops.values().sum::<u64>(),
            "graph_by_operation": restart_ops,
            "graph_429": restart_429,
            "apiserver_requests": restart_kube.values().sum::<u64>(),
            "apiserver_by_request": restart_kube,
        },
        "operator_rss_kib": {"before": rss0, "all_ready": rss1, "steady": rss2, "after_restart": rss3},
        "ready_over_time": samples.iter().map(|(t, c)| json!([round2(*t), c])).collect::<Vec<_>>(),
    });
    let dir = out_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let pretty = serde_json::to_string_pretty(&summary).unwrap();
    let mut shown = summary.clone();
    shown["ready_over_time"] = json!(format!("{} samples", samples.len()));
    eprintln!(
        "scale summary:\n{}",
        serde_json::to_string_pretty(&shown).unwrap()
    );
    std::fs::write(dir.join("scale.json"), pretty + "\n").unwrap();
    std::fs::write(dir.join("scale.svg"), chart(n, &samples, optimum)).unwrap();
    eprintln!("scale: wrote {}", dir.join("scale.json").display());
    s.teardown().await;
    op.terminate().await;
}
