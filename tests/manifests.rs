//! The install manifests, checked offline: `kubectl kustomize config/default` builds, holds
//! the CRDs, the RBAC and a hardened Deployment, and validates against the Kubernetes 1.33
//! schemas with kubernetes-validate (PyPI). `make tools` installs kubernetes-validate.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl kustomize <dir>` as parsed documents.
fn kustomize(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join(dir))
        .output()
        .expect("kubectl is needed for the manifest tests (Debian package kubectl)");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} not in the built manifests"))
}

/// The kubernetes-validate executable: $DCR_KUBERNETES_VALIDATE, the one `make tools`
/// installs, or one on PATH.
fn kubernetes_validate() -> PathBuf {
    if let Ok(p) = std::env::var("DCR_KUBERNETES_VALIDATE") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("DCR_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/dcr-operator"));
    let cached = cache.join("venv/bin/kubernetes-validate");
    if cached.exists() {
        return cached;
    }
    PathBuf::from("kubernetes-validate")
}

/// Runs kubernetes-validate --strict against Kubernetes 1.33 on `yaml`; Ok or its output.
fn validate_133(yaml: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifests.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "-k", "1.33.0"])
        .arg(&file)
        .output()
        .expect("kubernetes-validate is needed: run `make tools` (pip install kubernetes-validate)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(text)
    }
}

fn to_yaml(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
        .collect()
}

#[test]
fn default_install_holds_the_crds_rbac_and_deployment() {
    let docs = kustomize("config/default");
    for crd in [
        "dcrproviders.dcr-operator.io",
        "authstrategies.dcr-operator.io",
        "applications.dcr-operator.io",
    ] {
        find(&docs, "CustomResourceDefinition", crd);
    }
    find(&docs, "Namespace", "dcr-system");
    let sa = find(&docs, "ServiceAccount", "dcr-operator");
    assert_eq!(sa["metadata"]["namespace"], "dcr-system");
    let binding = find(&docs, "ClusterRoleBinding", "dcr-operator");
    assert_eq!(binding["roleRef"]["name"], "dcr-operator");
    assert_eq!(binding["subjects"][0]["name"], "dcr-operator");
    let role = find(&docs, "Role", "dcr-operator-leader-election");
    assert_eq!(role["metadata"]["namespace"], "dcr-system");
    assert_eq!(role["rules"][0]["resources"][0], "leases");
    find(&docs, "RoleBinding", "dcr-operator-leader-election");
    // Provider admin Secrets: read and watched in the operator's namespace only.
    let secrets = find(&docs, "Role", "dcr-operator-provider-secrets");
    assert_eq!(secrets["metadata"]["namespace"], "dcr-system");
    assert_eq!(secrets["rules"], provider_secret_rules());
    let binding = find(&docs, "RoleBinding", "dcr-operator-provider-secrets");
    assert_eq!(binding["metadata"]["namespace"], "dcr-system");
    assert_eq!(binding["subjects"][0]["name"], "dcr-operator");
}

/// The provider admin Secrets' rules: read, list and watch (metadata), nothing else.
fn provider_secret_rules() -> Value {
    serde_json::json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}])
}

#[test]
fn cluster_role_grants_only_what_the_controllers_use() {
    let docs = kustomize("config/default");
    let rules = find(&docs, "ClusterRole", "dcr-operator")["rules"]
        .as_array()
        .unwrap()
        .clone();
    let verbs_for = |group: &str, resource: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|r| {
                r["apiGroups"].as_array().unwrap().iter().any(|g| g == group)
                    && r["resources"].as_array().unwrap().iter().any(|x| x == resource)
            })
            .flat_map(|r| {
                r["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
            })
            .collect()
    };
    for rule in &rules {
        let verbs = rule["verbs"].as_array().unwrap();
        assert!(!verbs.iter().any(|v| v == "*"), "no wildcard verbs: {rule}");
        assert!(
            !rule["resources"].as_array().unwrap().iter().any(|r| r == "*"),
            "no wildcard resources"
        );
    }
    // Events are created and then patched into series by kube-runtime's Recorder.
    assert_eq!(verbs_for("events.k8s.io", "events"), ["create", "patch"]);
    // The operator never creates or deletes the cluster admins' and app teams' objects.
    let app_verbs = verbs_for("dcr-operator.io", "applications");
    assert!(
        !app_verbs.iter().any(|v| v == "create" || v == "delete"),
        "{app_verbs:?}"
    );
    assert!(verbs_for("dcr-operator.io", "applications/status").contains(&"patch".to_string()));
    assert!(verbs_for("dcr-operator.io", "applications/finalizers").contains(&"update".to_string()));
}

#[test]
fn deployment_runs_hardened_with_probes_and_resources() {
    let docs = kustomize("config/default");
    let deploy = find(&docs, "Deployment", "dcr-operator");
    assert_eq!(deploy["metadata"]["namespace"], "dcr-system");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "dcr-operator");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    for k in ["requests", "limits"] {
        assert!(
            c["resources"][k]["cpu"].is_string() && c["resources"][k]["memory"].is_string(),
            "{k}"
        );
    }
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "health");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "health");
    let ports: Vec<&str> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(ports.contains(&"health") && ports.contains(&"metrics"));
    // Leader election on, with the pod's name as identity and its namespace for the Lease
    // (where config/rbac's Role is).
    assert!(c["args"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "--leader-elect"));
    for (var, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let env = c["env"].as_array().unwrap().iter().find(|e| e["name"] == var);
        assert_eq!(
            env.map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]),
            Some(&Value::from(field)),
            "{var}"
        );
    }
}

#[test]
fn built_manifests_validate_against_kubernetes_1_33() {
    let docs = kustomize("config/default");
    validate_133(&to_yaml(&docs)).unwrap_or_else(|e| panic!("config/default does not validate:\n{e}"));
}

#[test]
fn kubernetes_validate_rejects_a_broken_deployment() {
    // The check above only means something if the validator bites.
    let mut docs = kustomize("config/default");
    let deploy = docs.iter_mut().find(|d| d["kind"] == "Deployment").unwrap();
    deploy["spec"]["replicas"] = Value::String("one".into());
    assert!(validate_133(&to_yaml(&docs)).is_err());
}

#[test]
fn samples_build_and_their_builtin_kinds_validate() {
    let docs = kustomize("config/samples");
    for kind in [
        "DcrProvider",
        "AuthStrategy",
        "Application",
        "Secret",
        "Namespace",
    ] {
        assert!(docs.iter().any(|d| d["kind"] == kind), "samples lack a {kind}");
    }
    // Custom resources are checked against the CRD schemas in tests/crd_schema.rs.
    let builtin: Vec<Value> = docs.into_iter().filter(|d| d["apiVersion"] == "v1").collect();
    validate_133(&to_yaml(&builtin)).unwrap_or_else(|e| panic!("samples do not validate:\n{e}"));
}

// ---- the Helm chart (charts/dcr-operator) ----------------------------------------------

const CHART: &str = "charts/dcr-operator";
/// Values that turn every optional part on and move every flag off its default.
const ALL_ON_VALUES: &str = "charts/dcr-operator/ci/all-on-values.yaml";

/// The helm executable: $DCR_HELM, the one `make tools` installs, or one on PATH.
fn helm() -> PathBuf {
    if let Ok(p) = std::env::var("DCR_HELM") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("DCR_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/dcr-operator"));
    let cached = cache.join("tools/bin/helm");
    if cached.exists() {
        return cached;
    }
    PathBuf::from("helm")
}

fn run_helm(args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm())
        .args(args)
        .current_dir(repo())
        .output()
        .expect("helm is needed for the chart tests: run `make tools`");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "helm {args:?} failed:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `helm template` of the chart into namespace `dcr-system` with these extra args.
fn helm_template(extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", "dcr", CHART, "--namespace", "dcr-system"];
    args.extend_from_slice(extra);
    let text = run_helm(&args).unwrap_or_else(|e| panic!("{e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one_of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
    found[0]
}

fn deployment_args(docs: &[Value]) -> Vec<String> {
    one_of_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The CRD files of `dir` by file name (other YAML, like crds/kustomization.yaml, skipped).
fn crd_files(dir: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .filter(|(_, text)| text.lines().any(|l| l == "kind: CustomResourceDefinition"))
        .collect()
}

#[test]
fn chart_crds_are_exact_copies_of_crds_dir() {
    let generated = crd_files(&repo().join("crds"));
    assert_eq!(generated.len(), 3, "{:?}", generated.keys());
    let chart_dir = repo().join(CHART).join("crds");
    let in_chart = crd_files(&chart_dir);
    // Helm installs every file in crds/: nothing else may be there.
    let files = std::fs::read_dir(&chart_dir).unwrap().count();
    assert_eq!(
        files,
        in_chart.len(),
        "only CRDs belong in {}",
        chart_dir.display()
    );
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        in_chart.keys().collect::<Vec<_>>(),
        "the chart's CRDs are stale: run `make crds`"
    );
    for (name, text) in &generated {
        assert!(
            in_chart[name] == *text,
            "{CHART}/crds/{name} differs from crds/{name}: run `make crds`"
        );
    }
}

#[test]
fn chart_app_version_follows_cargo_toml() {
    let cargo: toml_version::Manifest = toml_version::read(&repo().join("Cargo.toml"));
    let chart: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join(CHART).join("Chart.yaml")).unwrap())
            .map(|v: serde_yaml::Value| serde_json::to_value(v).unwrap())
            .unwrap();
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(
        chart["appVersion"], cargo.version,
        "Chart.yaml appVersion must be Cargo.toml's version"
    );
}

/// Cargo.toml's `[package] version`, read without a TOML parser (the first `version = ` after
/// `[package]`).
mod toml_version {
    pub struct Manifest {
        pub version: String,
    }
    pub fn read(path: &std::path::Path) -> Manifest {
        let text = std::fs::read_to_string(path).unwrap();
        let package = text.split("\n[package]").nth(1).expect("[package]");
        let line = package
            .lines()
            .find(|l| l.trim_start().starts_with("version ="))
            .expect("version");
        let version = line.split('"').nth(1).expect("quoted version").to_string();
        Manifest { version }
    }
}

#[test]
fn chart_passes_helm_lint_strict() {
    run_helm(&["lint", "--strict", CHART]).unwrap_or_else(|e| panic!("{e}"));
    run_helm(&["lint", "--strict", CHART, "-f", ALL_ON_VALUES]).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn chart_renders_valid_kubernetes_1_33_manifests() {
    for (what, extra) in [
        ("default values", vec![]),
        ("all-on values", vec!["-f", ALL_ON_VALUES]),
    ] {
        let mut args = vec!["--include-crds"];
        args.extend(extra);
        let docs = helm_template(&args);
        assert_eq!(of_kind(&docs, "CustomResourceDefinition").len(), 3, "{what}");
        // kubernetes-validate knows the built-in kinds (and CRDs) only; the ServiceMonitor
        // is the Prometheus Operator's and is checked in `chart_values_reach_the_manifests`.
        let builtin: Vec<Value> = docs
            .into_iter()
            .filter(|d| d["kind"] != "ServiceMonitor")
            .collect();
        validate_133(&to_yaml(&builtin))
            .unwrap_or_else(|e| panic!("the chart with {what} does not validate:\n{e}"));
    }
}

#[test]
fn chart_defaults_install_a_hardened_leader_electing_operator_without_optional_parts() {
    let docs = helm_template(&[]);
    for kind in [
        "ServiceMonitor",
        "PodDisruptionBudget",
        "CustomResourceDefinition",
    ] {
        assert!(of_kind(&docs, kind).is_empty(), "{kind} is off by default");
    }
    let deploy = one_of_kind(&docs, "Deployment");
    assert_eq!(deploy["metadata"]["namespace"], "dcr-system");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "ghcr.io/dcr-operator/dcr-operator:0.1.0");
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    let args = deployment_args(&docs);
    for expected in [
        "run",
        "--cluster-name=default",
        "--resync-period=10m",
        "--concurrency=4",
        "--metrics-addr=0.0.0.0:8080",
        "--health-addr=0.0.0.0:8081",
        "--leader-elect",
        "--leader-election-lease-name=dcr-operator",
        "--leader-election-lease-duration=15s",
        "--leader-election-renew-deadline=10s",
        "--leader-election-retry-period=2s",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected} not in {args:?}");
    }
    assert!(!args
        .iter()
        .any(|a| a.starts_with("--namespaces") || a.starts_with("--extra-ca-file")));
    let env: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"),
        "{env:?}"
    );
    let service = one_of_kind(&docs, "Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    assert!(!args.iter().any(|a| a.starts_with("--provider-secret-namespaces")));
    // Leader election, the record key and provider admin Secrets in the release namespace.
    let roles = of_kind(&docs, "Role");
    assert_eq!(roles.len(), 3, "{roles:?}");
    assert!(roles.iter().all(|r| r["metadata"]["namespace"] == "dcr-system"));
    assert_eq!(of_kind(&docs, "RoleBinding").len(), 3);
    let sa = one_of_kind(&docs, "ServiceAccount");
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
}

/// The rendered object of `kind` whose name ends with `suffix`.
fn named<'a>(docs: &'a [Value], kind: &str, suffix: &str) -> &'a Value {
    of_kind(docs, kind)
        .into_iter()
        .find(|d| {
            d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(suffix))
        })
        .unwrap_or_else(|| panic!("no {kind} named *{suffix}"))
}

#[test]
fn chart_rbac_grants_exactly_what_config_rbac_grants() {
    let config = kustomize("config/rbac");
    let expected_cluster = &find(&config, "ClusterRole", "dcr-operator")["rules"];
    let expected_leases = &find(&config, "Role", "dcr-operator-leader-election")["rules"];
    let expected_secrets = &find(&config, "Role", "dcr-operator-provider-secrets")["rules"];
    let expected_record_key = &find(&config, "Role", "dcr-operator-record-key")["rules"];
    let docs = helm_template(&[]);
    assert_eq!(&one_of_kind(&docs, "ClusterRole")["rules"], expected_cluster);
    assert_eq!(
        &named(&docs, "Role", "-leader-election")["rules"],
        expected_leases
    );
    assert_eq!(
        &named(&docs, "Role", "-provider-secrets")["rules"],
        expected_secrets
    );
    assert_eq!(&named(&docs, "Role", "-record-key")["rules"], expected_record_key);
    // The record key: created once, then read by its name only.
    assert_eq!(
        *expected_record_key,
        serde_json::json!([
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["dcr-operator-record-key"], "verbs": ["get"]}
        ])
    );
    // The leader-election module reads, creates and replaces its Lease: nothing more.
    assert_eq!(
        *expected_leases,
        serde_json::json!([{
            "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]
        }])
    );
    // Bindings name the rendered roles and the operator's ServiceAccount.
    let sa = one_of_kind(&docs, "ServiceAccount")["metadata"]["name"].clone();
    let b = one_of_kind(&docs, "ClusterRoleBinding");
    assert_eq!(
        b["roleRef"]["name"],
        one_of_kind(&docs, "ClusterRole")["metadata"]["name"]
    );
    assert_eq!(b["subjects"][0]["name"], sa);
    assert_eq!(b["subjects"][0]["namespace"], "dcr-system");
    for suffix in ["-leader-election", "-provider-secrets", "-record-key"] {
        let b = named(&docs, "RoleBinding", suffix);
        assert_eq!(
            b["roleRef"]["name"],
            named(&docs, "Role", suffix)["metadata"]["name"]
        );
        assert_eq!(b["subjects"][0]["name"], sa);
        assert_eq!(b["subjects"][0]["namespace"], "dcr-system");
    }

    // Without leader election: no Lease role and no --leader-elect; without rbac.create: no RBAC.
    let docs = helm_template(&["--set", "leaderElection.enabled=false"]);
    assert_eq!(of_kind(&docs, "Role").len(), 2);
    assert_eq!(
        &named(&docs, "Role", "-provider-secrets")["rules"],
        expected_secrets
    );
    assert_eq!(&named(&docs, "Role", "-record-key")["rules"], expected_record_key);
    assert!(!deployment_args(&docs)
        .iter()
        .any(|a| a.starts_with("--leader-elect")));
    let docs = helm_template(&["--set", "rbac.create=false"]);
    for kind in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert!(of_kind(&docs, kind).is_empty(), "{kind}");
    }
}

#[test]
fn chart_with_namespaces_grants_secrets_only_in_them() {
    let config = kustomize("config/rbac");
    let cluster_rules = find(&config, "ClusterRole", "dcr-operator")["rules"]
        .as_array()
        .unwrap()
        .clone();
    let is_secrets = |r: &Value| r["resources"].as_array().unwrap().iter().any(|x| x == "secrets");
    let credential_rule: Vec<Value> = cluster_rules.iter().filter(|r| is_secrets(r)).cloned().collect();
    let other_rules: Vec<Value> = cluster_rules.iter().filter(|r| !is_secrets(r)).cloned().collect();
    let docs = helm_template(&[
        "--set",
        "operator.namespaces={orders,billing}",
        "--set",
        "operator.providerSecretNamespaces={idp-admin,dcr-system}",
    ]);
    // No Secret rule cluster-wide: config/rbac's rule is a Role in each listed namespace.
    assert_eq!(
        one_of_kind(&docs, "ClusterRole")["rules"],
        Value::Array(other_rules)
    );
    let in_namespaces = |suffix: &str| -> Vec<String> {
        of_kind(&docs, "Role")
            .into_iter()
            .filter(|r| r["metadata"]["name"].as_str().unwrap().ends_with(suffix))
            .map(|r| r["metadata"]["namespace"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(in_namespaces("-credential-secrets"), ["orders", "billing"]);
    assert_eq!(in_namespaces("-provider-secrets"), ["idp-admin", "dcr-system"]);
    for role in of_kind(&docs, "Role") {
        let name = role["metadata"]["name"].as_str().unwrap();
        if name.ends_with("-credential-secrets") {
            assert_eq!(role["rules"], Value::Array(credential_rule.clone()));
        } else if name.ends_with("-provider-secrets") {
            assert_eq!(role["rules"], provider_secret_rules());
        }
    }
    for binding in of_kind(&docs, "RoleBinding") {
        assert_eq!(binding["subjects"][0]["namespace"], "dcr-system", "{binding}");
    }
    assert!(deployment_args(&docs)
        .iter()
        .any(|a| a == "--provider-secret-namespaces=idp-admin,dcr-system"));
}

/// Scalar leaves of a values file with their paths (booleans left out: they switch parts
/// on, which the assertions check by kind).
fn scalar_leaves(v: &Value, path: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| scalar_leaves(v, format!("{path}.{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| scalar_leaves(v, format!("{path}[{i}]"), out)),
        Value::String(s) => out.push((path, s.clone())),
        Value::Number(n) => out.push((path, n.to_string())),
        Value::Bool(_) | Value::Null => {}
    }
}

#[test]
fn chart_values_reach_the_manifests() {
    let docs = helm_template(&["-f", ALL_ON_VALUES]);
    let rendered = to_yaml(&docs);

    // No value is ignored: every scalar in the all-on values shows up in the output.
    let values: Value = serde_json::to_value(
        serde_yaml::from_str::<serde_yaml::Value>(
            &std::fs::read_to_string(repo().join(ALL_ON_VALUES)).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut leaves = vec![];
    scalar_leaves(&values, String::new(), &mut leaves);
    assert!(leaves.len() > 40, "{}", leaves.len());
    for (path, value) in &leaves {
        assert!(
            rendered.contains(value.as_str()),
            "value {path} = {value:?} is not in the rendered chart"
        );
    }

    // And each flag lands in the Deployment's args as the operator spells it.
    let args = deployment_args(&docs);
    for expected in [
        "--cluster-name=prod-eu-1",
        "--log-format=text",
        "--resync-period=7m",
        "--concurrency=9",
        "--activation-timeout=3m",
        "--namespaces=orders,billing",
        "--provider-secret-namespaces=idp-admin",
        "--metrics-addr=0.0.0.0:9090",
        "--health-addr=0.0.0.0:9092",
        "--extra-ca-file=/etc/dcr-operator/extra-ca/ca.crt",
        "--leader-elect",
        "--leader-election-lease-name=dcr-operator-prod",
        "--leader-election-lease-duration=20s",
        "--leader-election-renew-deadline=12s",
        "--leader-election-retry-period=3s",
        "--kubeconfig=/etc/dcr-operator/kubeconfig",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected} not in {args:?}");
    }
    let deploy = one_of_kind(&docs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["image"],
        "registry.example.com/platform/dcr-operator:9.9.9-test"
    );
    let env = c["env"].as_array().unwrap();
    assert!(env
        .iter()
        .any(|e| e["name"] == "RUST_LOG" && e["value"] == "debug,dcr_operator=trace"));
    // The extra CA: the ConfigMap's key mounted where --extra-ca-file points.
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "corporate-proxy-ca");
    assert_eq!(pod["volumes"][0]["configMap"]["items"][0]["key"], "bundle.pem");
    assert_eq!(pod["volumes"][0]["configMap"]["items"][0]["path"], "ca.crt");
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/dcr-operator/extra-ca");
    // Ports agree between the flags, the container, the Service and the ServiceMonitor.
    let ports = c["ports"].as_array().unwrap();
    assert!(ports
        .iter()
        .any(|p| p["name"] == "metrics" && p["containerPort"] == 9090));
    assert!(ports
        .iter()
        .any(|p| p["name"] == "health" && p["containerPort"] == 9092));
    let service = one_of_kind(&docs, "Service");
    assert_eq!(service["spec"]["ports"][0]["port"], 9091);
    let monitor = one_of_kind(&docs, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"]
    );
    assert_eq!(
        one_of_kind(&docs, "PodDisruptionBudget")["spec"]["minAvailable"],
        1
    );
    assert_eq!(pod["serviceAccountName"], "dcr-operator-sa");

    // A Secret instead of a ConfigMap for the CA.
    let docs = helm_template(&[
        "--set",
        "extraCA.secret.name=proxy-ca",
        "--set",
        "extraCA.secret.key=root.pem",
    ]);
    let pod = &one_of_kind(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "proxy-ca");
    assert_eq!(pod["volumes"][0]["secret"]["items"][0]["key"], "root.pem");
}

#[test]
fn chart_refuses_unsafe_combinations() {
    let template = |set: &[&str]| {
        let mut args = vec!["template", "dcr", CHART];
        for s in set {
            args.extend(["--set", s]);
        }
        run_helm(&args)
    };
    // Two replicas without leader election would reconcile at the same time.
    let err = template(&["replicaCount=2", "leaderElection.enabled=false"]).unwrap_err();
    assert!(err.contains("leaderElection.enabled"), "{err}");
    assert!(template(&["replicaCount=2"]).is_ok());
    let err = template(&["extraCA.configMap.name=a", "extraCA.secret.name=b"]).unwrap_err();
    assert!(err.contains("not both"), "{err}");
    let err = template(&[
        "metrics.serviceMonitor.enabled=true",
        "metrics.service.enabled=false",
    ])
    .unwrap_err();
    assert!(err.contains("metrics.service.enabled"), "{err}");
}

#[test]
fn chart_args_are_accepted_by_the_operator_binary() {
    // The real binary parses what the chart renders: a flag it does not know (or a bad
    // value) fails at parsing with status 2; accepted flags get as far as the Kubernetes
    // client, which cannot be built from a missing kubeconfig (status 1).
    for extra in [vec![], vec!["-f", ALL_ON_VALUES]] {
        let docs = helm_template(&extra);
        let mut args = deployment_args(&docs);
        if !args.iter().any(|a| a.starts_with("--kubeconfig")) {
            args.push("--kubeconfig=/nonexistent/dcr-operator-kubeconfig".into());
        }
        let out = Command::new(env!("CARGO_BIN_EXE_dcr-operator"))
            .args(&args)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot build a Kubernetes client"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn chart_values_schema_rejects_what_the_operator_would_reject() {
    for (set, complaint) in [
        ("operator.logFormat=xml", "/operator/logFormat"),
        ("operator.clusterName=Prod", "/operator/clusterName"),
        ("operator.resyncPeriod=10 minutes", "/operator/resyncPeriod"),
        ("leaderElection.leaseDuration=15", "/leaderElection/leaseDuration"),
        ("metrics.port=0", "/metrics/port"),
        ("metrics.prot=8080", "prot"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        (
            "operator.providerSecretNamespaces={Not_A_Namespace}",
            "/operator/providerSecretNamespaces",
        ),
        // The kubelet refuses projected tokens shorter than 10 minutes.
        (
            "workloadIdentity.expirationSeconds=60",
            "/workloadIdentity/expirationSeconds",
        ),
        ("workloadIdentity.clientId=admin", "/workloadIdentity/clientId"),
    ] {
        let err = run_helm(&["template", "dcr", CHART, "--set", set]).unwrap_err();
        assert!(err.contains(complaint), "--set {set}: {err}");
    }
}

/// The pod's projected azure-workload-identity token, if any: (audience, path in the
/// volume, mount path of the container, AZURE_FEDERATED_TOKEN_FILE).
fn workload_identity_token(deploy: &Value) -> Option<(String, String, String, String)> {
    let pod = &deploy["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == "azure-identity-token")?;
    let source = &volume["projected"]["sources"][0]["serviceAccountToken"];
    let c = &pod["containers"][0];
    let mount = c["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == "azure-identity-token")?;
    assert_eq!(mount["readOnly"], true);
    let env = c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == "AZURE_FEDERATED_TOKEN_FILE")?;
    Some((
        source["audience"].as_str()?.to_string(),
        source["path"].as_str()?.to_string(),
        mount["mountPath"].as_str()?.to_string(),
        env["value"].as_str()?.to_string(),
    ))
}

fn expected_workload_identity_token() -> (String, String, String, String) {
    (
        "api://AzureADTokenExchange".into(),
        "azure-identity-token".into(),
        "/var/run/secrets/azure/tokens".into(),
        // The operator's --federated-token-file default.
        "/var/run/secrets/azure/tokens/azure-identity-token".into(),
    )
}

#[test]
fn workload_identity_is_off_by_default_and_follows_azure_conventions_when_on() {
    // Off: no token, no label, no annotation (chart and config/default).
    let docs = helm_template(&[]);
    let deploy = one_of_kind(&docs, "Deployment");
    assert!(workload_identity_token(deploy).is_none());
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    assert!(labels.get("azure.workload.identity/use").is_none());
    let sa = one_of_kind(&docs, "ServiceAccount");
    assert!(sa["metadata"]["annotations"]
        .get("azure.workload.identity/client-id")
        .is_none());
    let default = kustomize("config/default");
    assert!(workload_identity_token(find(&default, "Deployment", "dcr-operator")).is_none());

    // On: the projected token where the operator reads it, the label, the annotations.
    let docs = helm_template(&[
        "--set",
        "workloadIdentity.enabled=true",
        "--set",
        "workloadIdentity.clientId=3f2c9d1e-7a6b-4e58-9c0d-1b2a3c4d5e6f",
    ]);
    let deploy = one_of_kind(&docs, "Deployment");
    assert_eq!(
        workload_identity_token(deploy),
        Some(expected_workload_identity_token())
    );
    let pod = &deploy["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["azure.workload.identity/use"], "true");
    let volume = &pod["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(volume["expirationSeconds"], 3600);
    let sa = one_of_kind(&docs, "ServiceAccount");
    assert_eq!(
        sa["metadata"]["annotations"]["azure.workload.identity/client-id"],
        "3f2c9d1e-7a6b-4e58-9c0d-1b2a3c4d5e6f"
    );
    validate_133(&to_yaml(&docs)).unwrap_or_else(|e| panic!("{e}"));

    // With the webhook projecting the token: only the label.
    let docs = helm_template(&[
        "--set",
        "workloadIdentity.enabled=true",
        "--set",
        "workloadIdentity.projectToken=false",
    ]);
    let deploy = one_of_kind(&docs, "Deployment");
    assert!(workload_identity_token(deploy).is_none());
    assert_eq!(
        deploy["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );

    // config/workload-identity: the same projection over config/default.
    let docs = kustomize("config/workload-identity");
    let deploy = find(&docs, "Deployment", "dcr-operator");
    assert_eq!(
        workload_identity_token(deploy),
        Some(expected_workload_identity_token())
    );
    assert_eq!(
        deploy["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    let sa = find(&docs, "ServiceAccount", "dcr-operator");
    assert!(sa["metadata"]["annotations"]["azure.workload.identity/client-id"].is_string());
    validate_133(&to_yaml(&docs)).unwrap_or_else(|e| panic!("{e}"));
}
