//! The operator's RBAC, as the apiserver judges it: `kubectl auth can-i` impersonating the
//! operator's identity, for config/rbac and for the Helm chart's rendering alike. What it
//! may do is exactly what the controllers use; everything else is denied.

mod support;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use kube::Client;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::cluster::{
    apply_cluster_role_yaml, bind_cluster_role, cluster, create_or_replace, user_subject, yaml_documents,
};

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
    ("get", "namespaces", ""),
    ("create", "events.events.k8s.io", ""),
    ("patch", "events.events.k8s.io", ""),
];

/// What it may do with the credential Secrets of an Application namespace: watch its own by
/// label (list, watch), read the one it writes (get), create, patch and replace it (delete).
const CREDENTIAL_SECRETS: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

/// What it may do with provider admin Secrets: read them, and watch their metadata.
const PROVIDER_SECRETS: &[&str] = &["get", "list", "watch"];

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

/// `kubectl auth can-i` as `user`, in `namespace` (`None`: all namespaces).
fn can_i_in(
    kubeconfig: &Path,
    user: &str,
    namespace: Option<&str>,
    (verb, resource, sub): (&str, &str, &str),
) -> bool {
    let mut cmd = Command::new(kubectl());
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["auth", "can-i", verb, resource, "--as", user]);
    match namespace {
        Some(ns) => cmd.args(["-n", ns]),
        None => cmd.arg("--all-namespaces"),
    };
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

/// `kubectl auth can-i` as `user`, in namespace `app-team` (a namespace the operator has
/// no role of its own in).
fn can_i(kubeconfig: &Path, user: &str, check: (&str, &str, &str)) -> bool {
    can_i_in(kubeconfig, user, Some("app-team"), check)
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

/// Secret verbs in `namespace` (`None`: all namespaces): exactly `allowed` of every verb.
fn check_secrets(kubeconfig: &Path, user: &str, namespace: Option<&str>, allowed: &[&str], source: &str) {
    let wrong: Vec<String> = [
        "get",
        "list",
        "watch",
        "create",
        "patch",
        "update",
        "delete",
        "deletecollection",
    ]
    .into_iter()
    .filter(|verb| can_i_in(kubeconfig, user, namespace, (verb, "secrets", "")) != allowed.contains(verb))
    .map(|verb| {
        format!(
            "{source}: {verb} secrets in {namespace:?} should be {}",
            allowed.contains(&verb)
        )
    })
    .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The credential-record key in the operator's namespace: readable by its name, creatable;
/// another Secret of that name elsewhere is not readable through this rule.
fn check_record_key(kubeconfig: &Path, user: &str, source: &str) {
    let key = ("get", "secrets/dcr-operator-record-key", "");
    assert!(
        can_i_in(kubeconfig, user, Some("dcr-system"), key),
        "{source}: get of the record key denied"
    );
    assert!(
        can_i_in(kubeconfig, user, Some("dcr-system"), ("create", "secrets", "")),
        "{source}: create of the record key denied"
    );
}

async fn ensure_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("namespace {name}: {e}"),
    }
}

/// Applies the Roles and RoleBindings of `yaml`, renamed with `prefix` and bound to `user`
/// instead of the ServiceAccount. Returns (namespace, role name) of each Role.
async fn apply_roles_yaml(client: &Client, yaml: &str, prefix: &str, user: &str) -> Vec<(String, String)> {
    let mut roles = Vec::new();
    for doc in yaml_documents(yaml).unwrap() {
        let namespace = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match doc["kind"].as_str() {
            Some("Role") => {
                ensure_namespace(client, &namespace).await;
                let mut role: Role = serde_json::from_value(doc).unwrap();
                let name = format!("{prefix}-{}", role.metadata.name.unwrap_or_default());
                role.metadata.name = Some(name.clone());
                create_or_replace(&Api::namespaced(client.clone(), &namespace), &role)
                    .await
                    .unwrap();
                roles.push((namespace, name));
            }
            Some("RoleBinding") => {
                ensure_namespace(client, &namespace).await;
                let mut binding: RoleBinding = serde_json::from_value(doc).unwrap();
                binding.metadata.name =
                    Some(format!("{prefix}-{}", binding.metadata.name.unwrap_or_default()));
                binding.role_ref.name = format!("{prefix}-{}", binding.role_ref.name);
                binding.subjects = Some(vec![user_subject(user)]);
                create_or_replace(&Api::namespaced(client.clone(), &namespace), &binding)
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
    roles
}

fn helm_template(set: &[&str]) -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    let cache = std::env::var("DCR_CACHE_DIR").unwrap_or(format!("{home}/.cache/dcr-operator"));
    let helm = std::env::var("DCR_HELM").unwrap_or(format!("{cache}/tools/bin/helm"));
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/dcr-operator");
    let mut cmd = Command::new(&helm);
    cmd.args(["template", "dcr-operator"]).arg(&chart).args([
        "--namespace",
        "dcr-system",
        "--show-only",
        "templates/rbac.yaml",
    ]);
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("helm is needed: run `make tools`");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
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
    let mut roles = Vec::new();
    for file in ["provider_secret_role.yaml", "record_key_role.yaml"] {
        let yaml = std::fs::read_to_string(repo.join("config/rbac").join(file)).unwrap();
        roles.extend(apply_roles_yaml(&admin, &yaml, "rbac-test-config", user).await);
    }
    assert_eq!(roles.len(), 2);
    let kubeconfig = cluster.kubeconfig_path();
    check_matrix(kubeconfig, user, "config/rbac");
    check_record_key(kubeconfig, user, "config/rbac");
    // All namespaces: the credential Secrets' verbs hold everywhere (RBAC cannot select by
    // label); never update or deletecollection.
    check_secrets(
        kubeconfig,
        user,
        Some("app-team"),
        CREDENTIAL_SECRETS,
        "config/rbac",
    );
    check_secrets(kubeconfig, user, None, CREDENTIAL_SECRETS, "config/rbac");
    check_secrets(
        kubeconfig,
        user,
        Some("dcr-system"),
        CREDENTIAL_SECRETS,
        "config/rbac",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_rbac_allows_exactly_what_the_controllers_use() {
    let yaml = helm_template(&[]);
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
    let roles = apply_roles_yaml(&admin, &yaml, "rbac-test-chart", user).await;
    assert_eq!(
        roles.len(),
        3,
        "leader election, record key and provider Secrets: {roles:?}"
    );
    let kubeconfig = cluster.kubeconfig_path();
    check_matrix(kubeconfig, user, "the chart");
    check_record_key(kubeconfig, user, "the chart");
    check_secrets(kubeconfig, user, None, CREDENTIAL_SECRETS, "the chart");
}

/// With operator.namespaces the operator has no Secret access cluster-wide: credential
/// Secrets only in the listed namespaces, provider admin Secrets (read-only) only in the
/// listed provider namespaces, nothing in any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_rbac_with_namespaces_confines_secrets_to_them() {
    let yaml = helm_template(&[
        "operator.namespaces={rbac-orders}",
        "operator.providerSecretNamespaces={rbac-idp}",
    ]);
    let cluster = cluster().await;
    let admin = cluster.client().await;
    let labels = Default::default();
    apply_cluster_role_yaml(&admin, &yaml, Some("rbac-test-chart-ns"), &labels)
        .await
        .unwrap();
    let user = "rbac-test:chart-ns";
    bind_cluster_role(
        &admin,
        "rbac-test-chart-ns",
        "rbac-test-chart-ns",
        user_subject(user),
        &labels,
    )
    .await
    .unwrap();
    let roles = apply_roles_yaml(&admin, &yaml, "rbac-test-chart-ns", user).await;
    let namespaces: Vec<&str> = roles.iter().map(|(ns, _)| ns.as_str()).collect();
    assert_eq!(
        namespaces,
        ["rbac-orders", "rbac-idp", "dcr-system", "dcr-system"],
        "{roles:?}"
    );
    let kubeconfig = cluster.kubeconfig_path();
    let source = "the chart with namespaces";
    check_secrets(kubeconfig, user, Some("rbac-orders"), CREDENTIAL_SECRETS, source);
    check_secrets(kubeconfig, user, Some("rbac-idp"), PROVIDER_SECRETS, source);
    // In the operator's own namespace only the record key (its admin Secrets are elsewhere).
    check_secrets(kubeconfig, user, Some("dcr-system"), &["create"], source);
    check_record_key(kubeconfig, user, source);
    check_secrets(kubeconfig, user, Some("app-team"), &[], source);
    check_secrets(kubeconfig, user, None, &[], source);
    // Everything else as without namespaces.
    let wrong: Vec<String> = ALLOWED
        .iter()
        .filter(|c| !can_i_in(kubeconfig, user, Some("rbac-orders"), **c))
        .map(|c| format!("{source} denies {c:?}"))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}
