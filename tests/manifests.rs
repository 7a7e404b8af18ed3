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
