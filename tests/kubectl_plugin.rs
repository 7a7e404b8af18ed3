//! `kubectl dcr` (the `kubectl-dcr` binary) against the local control plane, the operator
//! and the Graph emulator: golden output for a healthy setup and for each broken link of
//! the chain, `check` before and after a revoke-all, `rotate --wait`, and no secret value
//! in any output.
//!
//! Golden files live in tests/golden/kubectl_plugin/; volatile fields (the namespace,
//! GUIDs, timestamps, relative times, the emulator's address) are normalised first.
//! `DCR_UPDATE_GOLDEN=1 cargo test --test kubectl_plugin` rewrites them.

#[macro_use]
mod support;

use kube::api::DeleteParams;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;
use support::cluster::{cluster, wait_for, TIMEOUT};
use support::scenario::{secret_data, Profile, Scenario};

/// Everything every plugin run printed, for the leak check at the end of each test.
static OUTPUTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `kubectl-dcr` as the cluster admin with `args`.
async fn plugin(args: &[&str]) -> Run {
    let kubeconfig = cluster().await.kubeconfig_path().to_path_buf();
    plugin_as(&kubeconfig, args).await
}

async fn plugin_as(kubeconfig: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-dcr"));
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    cmd.env_remove("KUBECONFIG").env_remove("KUBECTL_DCR_CA_FILE");
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("running kubectl-dcr");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    OUTPUTS
        .lock()
        .unwrap()
        .push(format!("{}\n{}", run.stdout, run.stderr));
    eprintln!(
        "$ kubectl dcr {}\n{}{}(exit {}, {:.2?})",
        args.join(" "),
        run.stdout,
        run.stderr,
        run.code,
        started.elapsed()
    );
    run
}

/// No plugin output so far holds any of `secrets`.
fn assert_no_secret_in_outputs(secrets: &[&str]) {
    let outputs = OUTPUTS.lock().unwrap();
    assert!(!outputs.is_empty());
    for secret in secrets {
        assert!(secret.len() >= 8, "a real secret value: {secret:?}");
        for out in outputs.iter() {
            assert!(
                !out.contains(secret),
                "a secret value is in the plugin's output:\n{out}"
            );
        }
    }
    let jwt = regex::Regex::new(r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}").unwrap();
    for out in outputs.iter() {
        assert!(
            !jwt.is_match(out),
            "an access token is in the plugin's output:\n{out}"
        );
    }
}

/// `text` with the namespace, GUIDs, times and the emulator's address replaced.
fn normalise(text: &str, s: &Scenario) -> String {
    let text = text.replace(s.ns.name(), "NS");
    let text = text.replace(&s.emu.base_url(), "https://IDP");
    let rules = [
        (
            r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
            "GUID",
        ),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", "TIME"),
        (r"\bin \d+[dhm]\b|\b\d+[dhm] ago\b", "REL"),
        (r"https://127\.0\.0\.1:\d+", "https://IDP"),
    ];
    let mut text = text;
    for (re, with) in rules {
        text = regex::Regex::new(re)
            .unwrap()
            .replace_all(&text, with)
            .into_owned();
    }
    text
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/kubectl_plugin")
        .join(format!("{name}.txt"))
}

/// Compares `actual` with the golden file `name` (or rewrites it with DCR_UPDATE_GOLDEN=1).
fn assert_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var("DCR_UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (DCR_UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, expected, "golden {name} differs:\n{actual}");
}

/// `explain`'s text without its Events section (their number depends on timing), and the
/// Events section.
fn split_events(text: &str) -> (String, String) {
    match text.split_once("\nRecent Events:\n") {
        Some((head, events)) => (format!("{head}\n"), events.to_string()),
        None => panic!("no Events section:\n{text}"),
    }
}

async fn ready_app(s: &Scenario, name: &str) -> Value {
    s.create_app(name, json!({})).await;
    let app = s.wait_ready(&s.apps(), name, "True", Some("Ready")).await;
    serde_json::to_value(app).unwrap()
}

async fn check_args(s: &Scenario, target: &str) -> Vec<String> {
    vec![
        "-n".into(),
        s.ns.name().into(),
        "check".into(),
        target.into(),
        "--ca-file".into(),
        s.emu.ca_path().display().to_string(),
        // The emulator issues tokens for Graph only; the Secret's scope names the API.
        "--scope".into(),
        "https://graph.microsoft.com/.default".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_setup() {
    let s = Scenario::start("plugin-healthy", Profile::Ideal).await;
    ready_app(&s, "web").await;
    s.wait_ready(&s.providers(), &s.provider, "True", Some("Ready"))
        .await;
    let ns = s.ns.name().to_string();

    let status = plugin(&["-n", &ns, "status"]).await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert_golden("healthy_status", &normalise(&status.stdout, &s));

    let explain = plugin(&["-n", &ns, "explain", "application", "web"]).await;
    assert_eq!(explain.code, 0, "{}", explain.stderr);
    let (head, events) = split_events(&explain.stdout);
    assert_golden("healthy_explain", &normalise(&head, &s));
    assert!(events.contains("Normal Registered Application/web"), "{events}");

    let check = plugin(&strs(&check_args(&s, "web").await)).await;
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    assert_golden("healthy_check", &normalise(&check.stdout, &s));

    // -o json and -o yaml carry the same report.
    let json_out = plugin(&["-n", &ns, "-o", "json", "status"]).await;
    assert_eq!(json_out.code, 0);
    let report: Value = serde_json::from_str(&json_out.stdout).unwrap();
    let app = &report["providers"][0]["strategies"][0]["applications"][0];
    assert_eq!(app["name"], "web");
    assert_eq!(app["ready"]["status"], "True");
    assert_eq!(report["summary"]["notReady"], 0);
    let yaml_out = plugin(&["-n", &ns, "-o", "yaml", "status"]).await;
    let yaml: Value = serde_yaml::from_str(&yaml_out.stdout).unwrap();
    assert_eq!(yaml, report);

    // The operator's own objects only: the admin secret and the delivered one never show.
    let secret = secret_data(&s.secrets().get("web-credentials").await.unwrap());
    assert_no_secret_in_outputs(&[&secret["client_secret"], &s.admin.client_secret]);
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_provider_secret() {
    let s = Scenario::start("plugin-no-admin-secret", Profile::Ideal).await;
    s.wait_ready(&s.providers(), &s.provider, "True", Some("Ready"))
        .await;
    s.admin_secrets()
        .delete(&s.admin_secret, &DeleteParams::default())
        .await
        .unwrap();
    s.wait_ready(&s.providers(), &s.provider, "False", Some("SecretNotFound"))
        .await;
    s.wait_ready(&s.strategies(), &s.strategy, "False", Some("ProviderNotReady"))
        .await;
    s.create_app("web", json!({})).await;
    s.wait_ready(&s.apps(), "web", "False", Some("StrategyNotReady"))
        .await;
    let ns = s.ns.name().to_string();

    let explain = plugin(&["-n", &ns, "explain", "application", "web"]).await;
    assert_eq!(explain.code, 1, "not Ready is exit 1: {}", explain.stderr);
    let (head, _) = split_events(&explain.stdout);
    assert_golden("missing_provider_secret_explain", &normalise(&head, &s));

    let status = plugin(&["-n", &ns, "status"]).await;
    assert_eq!(status.code, 1);
    assert_golden("missing_provider_secret_status", &normalise(&status.stdout, &s));
    assert_no_secret_in_outputs(&[&s.admin.client_secret]);
    // The Application's finalizer needs a working provider.
    s.put_admin_secret(&s.admin.client_secret).await;
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_not_allowed() {
    let s = Scenario::start("plugin-ns-not-allowed", Profile::Ideal).await;
    s.apply_strategy(json!({"names": ["somewhere-else"]})).await;
    s.wait_ready(&s.strategies(), &s.strategy, "True", Some("Ready"))
        .await;
    s.create_app("web", json!({})).await;
    s.wait_ready(&s.apps(), "web", "False", Some("NamespaceNotAllowed"))
        .await;
    let ns = s.ns.name().to_string();

    let explain = plugin(&["-n", &ns, "explain", "application", "web"]).await;
    assert_eq!(explain.code, 1, "{}", explain.stderr);
    let (head, events) = split_events(&explain.stdout);
    assert_golden("namespace_not_allowed_explain", &normalise(&head, &s));
    assert!(events.contains("NamespaceNotAllowed Application/web"), "{events}");

    let status = plugin(&["-n", &ns, "status"]).await;
    assert_eq!(status.code, 1);
    assert_golden("namespace_not_allowed_status", &normalise(&status.stdout, &s));

    // Nothing to check: no Secret was written.
    let check = plugin(&strs(&check_args(&s, "web").await)).await;
    assert_eq!(check.code, 1);
    assert!(
        check.stdout.contains("Secret web-credentials not found"),
        "{}",
        check.stdout
    );
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategy_not_ready() {
    let s = Scenario::start("plugin-strategy-not-ready", Profile::Ideal).await;
    // A second strategy naming a provider that does not exist.
    let broken = format!("{}-broken", s.ns.name());
    let obj = json!({
        "apiVersion": "dcr-operator.io/v1alpha1", "kind": "AuthStrategy",
        "metadata": {"name": broken, "labels": s.ns.owned_labels()},
        "spec": {
            "providerRef": {"name": format!("{}-nowhere", s.ns.name())},
            "displayName": "broken",
            "openIDConnect": {"scopes": ["api://orders/.default"]}
        }
    });
    s.strategies()
        .patch(
            &broken,
            &kube::api::PatchParams::apply("e2e-test").force(),
            &kube::api::Patch::Apply(&obj),
        )
        .await
        .unwrap();
    s.wait_ready(&s.strategies(), &broken, "False", Some("ProviderNotFound"))
        .await;
    s.create_app("web", json!({"authStrategyRef": {"name": broken}}))
        .await;
    s.wait_ready(&s.apps(), "web", "False", Some("StrategyNotReady"))
        .await;
    let ns = s.ns.name().to_string();

    let explain = plugin(&["-n", &ns, "explain", "application", "web"]).await;
    assert_eq!(explain.code, 1, "{}", explain.stderr);
    let (head, _) = split_events(&explain.stdout);
    assert_golden("strategy_not_ready_explain", &normalise(&head, &s));

    let status = plugin(&["-n", &ns, "status"]).await;
    assert_eq!(status.code, 1);
    assert_golden("strategy_not_ready_status", &normalise(&status.stdout, &s));
    let _ = s.strategies().delete(&broken, &DeleteParams::default()).await;
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_after_revoke_all_and_passes_once_the_new_secret_is_proven() {
    let s = Scenario::start("plugin-revoke-all", Profile::Ideal).await;
    ready_app(&s, "web").await;
    let args = check_args(&s, "web").await;
    let before = secret_data(&s.secrets().get("web-credentials").await.unwrap());
    let ok = plugin(&strs(&args)).await;
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);

    // New secrets stay inactive at the IdP for an hour of its clock: the revoke-all's new
    // secret cannot work until the clock moves.
    s.emu
        .update_config(|c| c.secret_activation_delay = Duration::from_secs(3600));
    let ns = s.ns.name().to_string();
    let revoke = plugin(&["-n", &ns, "revoke-all", "web", "--reason", "INC-42"]).await;
    assert_eq!(revoke.code, 0, "{}", revoke.stderr);
    assert!(
        revoke.stdout.contains("dcr-operator.io/revoke-all=INC-42"),
        "{}",
        revoke.stdout
    );
    let after = wait_for("the revoke-all's new secret in the Secret", TIMEOUT, || async {
        let data = secret_data(&s.secrets().get("web-credentials").await?);
        Ok::<_, kube::Error>((data["client_secret"] != before["client_secret"]).then_some(data))
    })
    .await;

    let failed = plugin(&strs(&args)).await;
    assert_eq!(failed.code, 1, "{}{}", failed.stdout, failed.stderr);
    assert!(
        failed
            .stdout
            .contains("FAILED (invalid_client, AADSTS7000215, HTTP 401)"),
        "the IdP's error is reported: {}",
        failed.stdout
    );
    // Once served, the same request again is refused (served once per value).
    wait_for("the revoke-all to be recorded", TIMEOUT, || async {
        let app = s.apps().get("web").await?;
        let served = app.status.and_then(|st| st.last_revoke_all_request);
        Ok::<_, kube::Error>((served.as_deref() == Some("INC-42")).then_some(()))
    })
    .await;
    let again = plugin(&["-n", &ns, "revoke-all", "web", "--reason", "INC-42"]).await;
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("served already"), "{}", again.stderr);

    // The clock moves past the activation: the operator proves the new secret.
    s.emu
        .update_config(|c| c.secret_activation_delay = Duration::ZERO);
    s.emu.advance_clock(Duration::from_secs(3660));
    wait_for("the new secret to be proven", TIMEOUT, || async {
        let secret = s.secrets().get("web-credentials").await?;
        let record: Value = kube::ResourceExt::annotations(&secret)
            .get("dcr-operator.io/credential")
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or(Value::Null);
        Ok::<_, kube::Error>(record["verifiedAt"].is_string().then_some(()))
    })
    .await;
    let passed = plugin(&strs(&args)).await;
    assert_eq!(passed.code, 0, "{}{}", passed.stdout, passed.stderr);

    // --all: one summary for the namespace.
    let mut all = args.clone();
    all[3] = "--all".into();
    let all_run = plugin(&strs(&all)).await;
    assert_eq!(all_run.code, 0);
    assert!(
        all_run.stdout.ends_with("1 checked: 1 ok, 0 failed\n"),
        "{}",
        all_run.stdout
    );

    assert_no_secret_in_outputs(&[
        &before["client_secret"],
        &after["client_secret"],
        &s.admin.client_secret,
    ]);
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_wait_completes() {
    let s = Scenario::start("plugin-rotate", Profile::Ideal).await;
    // Two rotations in a row: the per-Application request rate limit (minRenewalInterval
    // after the newest secret, default 1h) would hold the second one back.
    s.apply_strategy_with(
        json!({"names": [s.ns.name()]}),
        json!({"lifetime": "720h", "renewBefore": "240h", "minRenewalInterval": "1s"}),
    )
    .await;
    let app = ready_app(&s, "web").await;
    let old_key = app["status"]["credential"]["keyId"].as_str().unwrap().to_string();
    let before = secret_data(&s.secrets().get("web-credentials").await.unwrap());
    let ns = s.ns.name().to_string();

    let rotate = plugin(&[
        "-n",
        &ns,
        "-o",
        "json",
        "rotate",
        "web",
        "--wait",
        "--timeout",
        "2m",
    ])
    .await;
    assert_eq!(rotate.code, 0, "{}{}", rotate.stdout, rotate.stderr);
    let report: Value = serde_json::from_str(&rotate.stdout).unwrap();
    assert_eq!(report["outcome"]["result"], "completed", "{report}");
    assert_eq!(report["request"], "rotate");
    assert_eq!(report["previousKeyId"], old_key.as_str());
    let new_key = report["outcome"]["keyId"].as_str().unwrap().to_string();
    assert_ne!(new_key, old_key);

    let app = s.apps().get("web").await.unwrap();
    let status = app.status.unwrap();
    assert_eq!(status.credential.unwrap().key_id, new_key);
    assert_eq!(status.last_rotate_request.as_deref(), report["value"].as_str());
    let after = secret_data(&s.secrets().get("web-credentials").await.unwrap());
    assert_ne!(after["client_secret"], before["client_secret"]);
    let check = plugin(&strs(&check_args(&s, "web").await)).await;
    assert_eq!(check.code, 0, "{}", check.stdout);

    // Text output of a second rotation.
    let text = plugin(&["-n", &ns, "rotate", "web", "--wait", "--timeout", "2m"]).await;
    assert_eq!(text.code, 0, "{}{}", text.stdout, text.stderr);
    assert!(
        text.stdout.contains(&format!("(was {new_key})")),
        "{}",
        text.stdout
    );

    // Unknown objects and bad flags have their own exit codes.
    assert_eq!(plugin(&["-n", &ns, "rotate", "nope"]).await.code, 3);
    assert_eq!(
        plugin(&["-n", &ns, "rotate", "web", "--timeout", "2h"])
            .await
            .code,
        2
    );
    assert_no_secret_in_outputs(&[&before["client_secret"], &after["client_secret"]]);
    s.teardown().await;
}

/// A kubeconfig for ServiceAccount `name` of the test namespace (a TokenRequest token), so
/// the plugin runs with that identity's RBAC only.
async fn service_account_kubeconfig(s: &Scenario, name: &str) -> (tempfile::TempDir, PathBuf) {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let sas: kube::Api<ServiceAccount> = s.ns.api(&s.client);
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    sas.create(&Default::default(), &sa).await.unwrap();
    let request: k8s_openapi::api::authentication::v1::TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": [], "expirationSeconds": 3600}
    }))
    .unwrap();
    let token = sas
        .create_token_request(name, &Default::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let admin = cluster().await.kubeconfig_path();
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
    for user in config["users"].as_sequence_mut().unwrap() {
        user["user"] = serde_yaml::to_value(json!({"token": token})).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_own_permissions_apply() {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let s = Scenario::start("plugin-rbac", Profile::Ideal).await;
    ready_app(&s, "web").await;
    let ns = s.ns.name().to_string();
    // May read Applications in its namespace; not Secrets, not the cluster-scoped kinds.
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "app-reader"},
        "rules": [{"apiGroups": ["dcr-operator.io"], "resources": ["applications"], "verbs": ["get", "list"]}]
    }))
    .unwrap();
    s.ns.api::<Role>(&s.client)
        .create(&Default::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "app-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "app-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "dev", "namespace": ns}]
    }))
    .unwrap();
    s.ns.api::<RoleBinding>(&s.client)
        .create(&Default::default(), &binding)
        .await
        .unwrap();
    let (_dir, kubeconfig) = service_account_kubeconfig(&s, "dev").await;

    let mut args = check_args(&s, "web").await;
    let check = plugin_as(&kubeconfig, &strs(&args)).await;
    assert_eq!(check.code, 1, "{}{}", check.stdout, check.stderr);
    assert!(
        check.stdout.contains("you may not read Secret web-credentials"),
        "{}",
        check.stdout
    );
    // Its status: the Application is seen, the cluster-scoped objects are not readable,
    // which is not counted as not Ready.
    let status = plugin_as(&kubeconfig, &["-n", &ns, "status"]).await;
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    assert_golden("rbac_status", &normalise(&status.stdout, &s));
    // Another namespace's Applications: refused by the apiserver, exit 3.
    args[1] = "default".into();
    args[3] = "--all".into();
    assert_eq!(plugin_as(&kubeconfig, &strs(&args)).await.code, 3);
    s.teardown().await;
}

#[test]
fn the_krew_manifest_names_the_binary_and_its_placeholders() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let template = std::fs::read_to_string(repo.join("config/krew/dcr.yaml")).unwrap();
    for placeholder in ["{{VERSION}}", "{{URL}}", "{{SHA256}}"] {
        assert!(
            template.contains(placeholder),
            "{placeholder} is filled in by make plugin"
        );
    }
    let filled = template
        .replace("{{VERSION}}", env!("CARGO_PKG_VERSION"))
        .replace("{{URL}}", "https://example.invalid/kubectl-dcr.tar.gz")
        .replace("{{SHA256}}", &"0".repeat(64));
    let manifest: Value = serde_yaml::from_str(&filled).unwrap();
    assert_eq!(manifest["kind"], "Plugin");
    assert_eq!(manifest["metadata"]["name"], "dcr", "kubectl dcr");
    assert_eq!(
        manifest["spec"]["version"],
        format!("v{}", env!("CARGO_PKG_VERSION"))
    );
    let platform = &manifest["spec"]["platforms"][0];
    assert_eq!(platform["bin"], "kubectl-dcr");
    assert_eq!(platform["files"][0]["from"], "kubectl-dcr");
    let script = std::fs::read_to_string(repo.join("sandbox/scripts/build-plugin.sh")).unwrap();
    assert!(script.contains("config/krew/dcr.yaml"));
    let makefile = std::fs::read_to_string(repo.join("Makefile")).unwrap();
    assert!(makefile.contains("build-plugin.sh"));
}

#[test]
fn completions_and_usage_need_no_cluster() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kubectl-dcr"))
            .args(args)
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .unwrap()
    };
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completion", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("revoke-all") && script.contains("kubeconfig"),
            "{shell}: {script}"
        );
    }
    // Usage errors exit 2, an unreadable kubeconfig 3.
    assert_eq!(run(&["check"]).status.code(), Some(2));
    assert_eq!(run(&["explain", "application"]).status.code(), Some(2));
    assert_eq!(run(&["status"]).status.code(), Some(3));
    let version = String::from_utf8(run(&["--version"]).stdout).unwrap();
    assert!(
        version.starts_with(&format!("kubectl-dcr {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
}
