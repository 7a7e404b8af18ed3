//! The operator's RBAC, as the apiserver judges it: `kubectl auth can-i` impersonating the
//! operator's identity, for config/rbac and for the Helm chart's rendering alike. What it
//! may do is exactly what the controllers use; everything else is denied.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::cluster::{apply_cluster_role_yaml, bind_cluster_role, cluster, user_subject};

/// (verb, resource, subresource) the operator must be allowed, in any namespace.
const ALLOWED: &[(&str, &str, &str)] = &[
    ("get", "applications.dcr-operator.io", ""),
    ("list", "applications.dcr-operator.io", ""),
    ("watch", "applications.dcr-operator.io", ""),
    ("patch", "applications.dcr-operator.io", ""),
    ("patch", "applications.dcr-operator.io", "status"),
    ("update", "applications.dcr-operator.io", "finalizers"),
    ("watch", "dcrproviders.dcr-operator.io", ""),
    ("patch", "dcrproviders.dcr-operator.io", "status"),
    ("watch", "authstrategies.dcr-operator.io", ""),
    ("patch", "authstrategies.dcr-operator.io", "status"),
    ("get", "secrets", ""),
    ("watch", "secrets", ""),
    ("create", "secrets", ""),
    ("patch", "secrets", ""),
    ("delete", "secrets", ""),
    ("get", "namespaces", ""),
    ("create", "events.events.k8s.io", ""),
    ("patch", "events.events.k8s.io", ""),
];

/// What it must never be allowed.
const DENIED: &[(&str, &str, &str)] = &[
    ("create", "applications.dcr-operator.io", ""),
    ("delete", "applications.dcr-operator.io", ""),
    ("get", "applications.dcr-operator.io", "status"),
    ("patch", "dcrproviders.dcr-operator.io", ""),
    ("delete", "dcrproviders.dcr-operator.io", ""),
    ("patch", "authstrategies.dcr-operator.io", ""),
    ("update", "secrets", ""),
    ("list", "namespaces", ""),
    ("watch", "namespaces", ""),
    ("get", "configmaps", ""),
    ("get", "pods", ""),
    ("create", "serviceaccounts", "token"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", ""),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", ""),
    ("impersonate", "users", ""),
    ("update", "leases.coordination.k8s.io", ""),
];

fn kubectl() -> PathBuf {
    if let Ok(p) = std::env::var("DCR_KUBECTL") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cache = std::env::var("DCR_CACHE_DIR").unwrap_or(format!("{home}/.cache/dcr-operator"));
    let cached = Path::new(&cache).join("tools/bin/kubectl");
    if cached.exists() {
        return cached;
    }
    PathBuf::from("kubectl")
}

/// `kubectl auth can-i` as `user`, in namespace `app-team` (a namespace the operator has
/// no role of its own in).
fn can_i(kubeconfig: &Path, user: &str, (verb, resource, sub): (&str, &str, &str)) -> bool {
    let mut cmd = Command::new(kubectl());
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["auth", "can-i", verb, resource, "--as", user, "-n", "app-team"]);
    if !sub.is_empty() {
        cmd.arg(format!("--subresource={sub}"));
    }
    let out = cmd.output().expect("kubectl is needed: run `make tools`");
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "kubectl auth can-i {verb} {resource}: {answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    answer == "yes"
}

fn check_matrix(kubeconfig: &Path, user: &str, source: &str) {
    let wrong: Vec<String> = ALLOWED
        .iter()
        .filter(|c| !can_i(kubeconfig, user, **c))
        .map(|c| format!("{source} denies {c:?}"))
        .chain(
            DENIED
                .iter()
                .filter(|c| can_i(kubeconfig, user, **c))
                .map(|c| format!("{source} allows {c:?}")),
        )
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_rbac_allows_exactly_what_the_controllers_use() {
    let cluster = cluster().await;
    let admin = cluster.client().await;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let yaml = std::fs::read_to_string(repo.join("config/rbac/cluster_role.yaml")).unwrap();
    let labels = Default::default();
    apply_cluster_role_yaml(&admin, &yaml, Some("rbac-test-config"), &labels)
        .await
        .unwrap();
    let user = "rbac-test:config";
    bind_cluster_role(
        &admin,
        "rbac-test-config",
        "rbac-test-config",
        user_subject(user),
        &labels,
    )
    .await
    .unwrap();
    check_matrix(cluster.kubeconfig_path(), user, "config/rbac");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_rbac_allows_exactly_what_the_controllers_use() {
    let home = std::env::var("HOME").unwrap_or_default();
    let cache = std::env::var("DCR_CACHE_DIR").unwrap_or(format!("{home}/.cache/dcr-operator"));
    let helm = std::env::var("DCR_HELM").unwrap_or(format!("{cache}/tools/bin/helm"));
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/dcr-operator");
    let out = Command::new(&helm)
        .args(["template", "dcr-operator"])
        .arg(&chart)
        .args(["--namespace", "dcr-system", "--show-only", "templates/rbac.yaml"])
        .output()
        .expect("helm is needed: run `make tools`");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8(out.stdout).unwrap();
    let cluster = cluster().await;
    let admin = cluster.client().await;
    let labels = Default::default();
    let roles = apply_cluster_role_yaml(&admin, &yaml, Some("rbac-test-chart"), &labels)
        .await
        .unwrap();
    assert_eq!(roles.len(), 1, "the chart renders one ClusterRole");
    let user = "rbac-test:chart";
    bind_cluster_role(
        &admin,
        "rbac-test-chart",
        "rbac-test-chart",
        user_subject(user),
        &labels,
    )
    .await
    .unwrap();
    check_matrix(cluster.kubeconfig_path(), user, "the chart");
}
