//! What the operator relies on from the Kubernetes API, checked through kube's `Client`
//! against the test cluster (by default a local kube-apiserver v1.20.2 + etcd +
//! kube-controller-manager; see `tests/support/cluster.rs`): the CRDs of `crds/`
//! install and get established, structural schemas validate and default, the status
//! subresource, finalizers, ownerReference garbage collection, RBAC, and kubectl.
//!
//! Run with `cargo test --test cluster_api` (libtest: the tests share one control plane).

mod support;

use std::time::Instant;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use support::cluster::*;

fn api_error(err: &kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(s) => (s.code, s.message.clone()),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn crds_from_the_crds_dir_are_accepted_and_established() {
    let cluster = cluster().await;
    let client = cluster.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let files = read_crd_dir(&crds_dir()).unwrap();
    if files.is_empty() {
        eprintln!("crds/ holds no CRD yet: checking the mechanism with the test CRD only");
    }
    assert_eq!(files.len(), cluster.installed_crds().len());

    // The same path the harness took for crds/, on a directory holding the test CRD.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("widgets.yaml"), WIDGET_CRD_YAML).unwrap();
    let mut names = install_crds_from_dir(&client, dir.path(), cluster.version())
        .await
        .unwrap();
    names.extend(cluster.installed_crds().iter().cloned());

    for name in names {
        let crd = crds.get(&name).await.unwrap();
        let conds = crd.status.clone().unwrap().conditions.unwrap_or_default();
        for wanted in ["Established", "NamesAccepted"] {
            assert!(
                conds.iter().any(|c| c.type_ == wanted && c.status == "True"),
                "{name}: {wanted} is not True: {conds:?}"
            );
        }
        // Every served version answers a list.
        for v in crd.spec.versions.iter().filter(|v| v.served) {
            let gvk = kube::api::GroupVersionKind::gvk(&crd.spec.group, &v.name, &crd.spec.names.kind);
            let ar = ApiResource::from_gvk_with_plural(&gvk, &crd.spec.names.plural);
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            api.list(&ListParams::default())
                .await
                .unwrap_or_else(|e| panic!("listing {name} {}: {e}", v.name));
        }
        // Below 1.25 the CEL rules were stripped before creating (the server would drop
        // them anyway); from 1.25 on they are kept.
        let mut stored = serde_json::to_value(&crd).unwrap();
        let rules = strip_cel_rules(&mut stored);
        if !cluster.version().supports_cel_rules() {
            assert_eq!(
                rules,
                0,
                "{name} kept CEL rules on {}",
                cluster.version().git_version
            );
        }
    }
}

#[test]
fn cel_rules_are_stripped_but_fields_named_like_them_are_kept() {
    let mut v = json!({
        "x-kubernetes-validations": [{"rule": "true"}],
        "properties": {
            "x-kubernetes-validations": {"type": "string", "x-kubernetes-validations": [{"rule": "1 == 1"}]},
            "a": {"type": "array", "items": {"type": "object", "x-kubernetes-validations": []}}
        }
    });
    assert_eq!(strip_cel_rules(&mut v), 3);
    assert_eq!(
        v,
        json!({"properties": {
            "x-kubernetes-validations": {"type": "string"},
            "a": {"type": "array", "items": {"type": "object"}}
        }})
    );
}

#[tokio::test]
async fn structural_schema_rejects_invalid_objects_and_applies_defaults() {
    let cluster = cluster().await;
    let client = cluster.client().await;
    let ns = cluster.namespace("schema").await;
    let api = widgets(&client, cluster, ns.name()).await;
    let pp = PostParams::default();

    let rejected = |name: &'static str, spec: serde_json::Value| {
        let api = api.clone();
        async move {
            let err = api
                .create(&PostParams::default(), &widget(name, spec))
                .await
                .expect_err(name);
            api_error(&err)
        }
    };
    let (code, msg) = rejected("no-size", json!({"label": "x"})).await;
    assert_eq!(code, 422, "{msg}");
    assert!(msg.contains("spec.size") && msg.contains("Required"), "{msg}");
    let (code, msg) = rejected("bad-size", json!({"size": "huge"})).await;
    assert_eq!(code, 422, "{msg}");
    assert!(msg.contains("Unsupported value") && msg.contains("huge"), "{msg}");
    let (code, msg) = rejected(
        "long-label",
        json!({"size": "small", "label": "far-too-long-label"}),
    )
    .await;
    assert_eq!(code, 422, "{msg}");
    assert!(msg.contains("spec.label") && msg.contains("10"), "{msg}");
    let (code, msg) = rejected("negative", json!({"size": "small", "replicas": -1})).await;
    assert_eq!(code, 422, "{msg}");
    assert!(msg.contains("spec.replicas"), "{msg}");

    // Defaults are applied, unknown fields pruned.
    let w = api
        .create(
            &pp,
            &widget("defaults", json!({"size": "medium", "unknown": "dropped"})),
        )
        .await
        .unwrap();
    assert_eq!(
        w.data["spec"],
        json!({"size": "medium", "replicas": 1, "color": "blue"})
    );

    // The CEL rule (replicas <= 10): enforced from 1.25 on; on older servers it was
    // stripped and an object breaking it is stored (unit tests check CEL rules there).
    let over = api
        .create(&pp, &widget("cel", json!({"size": "large", "replicas": 11})))
        .await;
    if cluster.version().supports_cel_rules() {
        let (code, msg) = api_error(&over.expect_err("CEL rule enforced"));
        assert_eq!(code, 422);
        assert!(msg.contains("replicas must be at most 10"), "{msg}");
    } else {
        over.expect("CEL rules are not enforced before 1.25");
    }
}

#[tokio::test]
async fn status_subresource_changes_neither_spec_nor_generation() {
    let cluster = cluster().await;
    let client = cluster.client().await;
    let ns = cluster.namespace("status").await;
    let api = widgets(&client, cluster, ns.name()).await;
    let w = api
        .create(&PostParams::default(), &widget("w", json!({"size": "small"})))
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(1));

    // Status through /status: status changes, spec and generation do not, even when the
    // patch tries to change spec.
    let pp = PatchParams::default();
    let patched = api
        .patch_status(
            "w",
            &pp,
            &Patch::Merge(
                json!({"spec": {"size": "large"}, "status": {"phase": "Ready", "observedGeneration": 1}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["phase"], "Ready");
    assert_eq!(patched.data["spec"]["size"], "small");
    assert_eq!(patched.metadata.generation, Some(1));

    // Through the main resource: status is ignored, a spec change bumps generation.
    let patched = api
        .patch(
            "w",
            &pp,
            &Patch::Merge(json!({"spec": {"size": "large"}, "status": {"phase": "Hacked"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["phase"], "Ready");
    assert_eq!(patched.data["spec"]["size"], "large");
    assert_eq!(patched.metadata.generation, Some(2));

    // Server-side apply of a custom resource works too (the CRD itself must not be).
    let ssa = PatchParams::apply("dcr-tests").force();
    let applied = api
        .patch(
            "w",
            &ssa,
            &Patch::Apply(json!({
                "apiVersion": "tests.dcr-operator.io/v1", "kind": "Widget",
                "metadata": {"name": "w"}, "spec": {"size": "medium"}
            })),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["spec"]["size"], "medium");
    assert_eq!(applied.metadata.generation, Some(3));
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let cluster = cluster().await;
    let client = cluster.client().await;
    let ns = cluster.namespace("finalizers").await;
    let api = widgets(&client, cluster, ns.name()).await;
    let mut w = widget("held", json!({"size": "small"}));
    w.metadata.finalizers = Some(vec!["tests.dcr-operator.io/hold".into()]);
    api.create(&PostParams::default(), &w).await.unwrap();

    api.delete("held", &DeleteParams::default()).await.unwrap();
    let held = api.get("held").await.expect("still there while the finalizer is");
    assert!(
        held.metadata.deletion_timestamp.is_some(),
        "deletionTimestamp set"
    );
    assert_eq!(held.finalizers(), ["tests.dcr-operator.io/hold"]);

    // Removing the finalizer lets it go.
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": "tests.dcr-operator.io/hold"},
                {"op": "remove", "path": "/metadata/finalizers/0"}
            ]))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    wait_deleted(&api, "held", TIMEOUT).await;
}

#[tokio::test]
async fn owner_reference_garbage_collection_removes_an_owned_secret() {
    let cluster = cluster().await;
    let client = cluster.client().await;
    let ns = cluster.namespace("gc").await;
    let widgets = widgets(&client, cluster, ns.name()).await;
    let secrets: Api<Secret> = ns.api(&client);
    let configmaps: Api<ConfigMap> = ns.api(&client);

    // A Secret owned by a custom resource (as the operator's Secrets are owned by their
    // Application), and one owned by a ConfigMap.
    let owner = widgets
        .create(&PostParams::default(), &widget("owner", json!({"size": "small"})))
        .await
        .unwrap();
    let cm = configmaps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let owned = |name: &str, api_version: &str, kind: &str, owner_name: &str, uid: String| -> Secret {
        serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "ownerReferences": [serde_json::to_value(OwnerReference {
                    api_version: api_version.into(), kind: kind.into(), name: owner_name.into(), uid,
                    controller: Some(true), block_owner_deletion: Some(true),
                }).unwrap()]
            },
            "stringData": {"client_secret": "s3cr3t"}
        }))
        .unwrap()
    };
    let pp = PostParams::default();
    secrets
        .create(
            &pp,
            &owned(
                "by-widget",
                "tests.dcr-operator.io/v1",
                "Widget",
                "owner",
                owner.uid().unwrap(),
            ),
        )
        .await
        .unwrap();
    secrets
        .create(
            &pp,
            &owned("by-configmap", "v1", "ConfigMap", "owner", cm.uid().unwrap()),
        )
        .await
        .unwrap();
    // An unrelated Secret stays.
    secrets
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "unowned"}})).unwrap(),
        )
        .await
        .unwrap();

    let t0 = Instant::now();
    widgets
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    configmaps
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    wait_deleted(&secrets, "by-configmap", TIMEOUT).await;
    // The harness restarted kube-controller-manager after installing the CRDs, so its
    // garbage collector knows Widgets (it rediscovers resources only every 30 s).
    wait_deleted(&secrets, "by-widget", TIMEOUT).await;
    eprintln!(
        "owned Secrets collected {:.1?} after their owners were deleted",
        t0.elapsed()
    );
    assert!(secrets.get_opt("unowned").await.unwrap().is_some());
}

const CONFIGMAP_READER_ROLE: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: configmap-reader
rules:
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [get, list, watch]
"#;

#[tokio::test]
async fn rbac_allows_what_a_cluster_role_grants_a_service_account_and_forbids_the_rest() {
    let cluster = cluster().await;
    let admin = cluster.client().await;
    let ns = cluster.namespace("rbac-sa").await;
    let sa_client = ns.service_account_client(&admin, "reader").await;
    let as_sa: Api<ConfigMap> = Api::namespaced(sa_client.clone(), ns.name());

    let err = as_sa.list(&ListParams::default()).await.expect_err("no RBAC yet");
    assert!(is_forbidden(&err), "{err}");

    grant_cluster_role_yaml(
        &admin,
        &ns,
        CONFIGMAP_READER_ROLE,
        service_account_subject(ns.name(), "reader"),
    )
    .await
    .unwrap();
    // The RBAC authorizer reads bindings through an informer: wait until it has this one.
    wait_for(
        "the ServiceAccount to be allowed to list ConfigMaps",
        TIMEOUT,
        || {
            let as_sa = as_sa.clone();
            async move { as_sa.list(&ListParams::default()).await.map(|_| true) }
        },
    )
    .await;

    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
    let err = as_sa
        .create(&PostParams::default(), &cm)
        .await
        .expect_err("create is not granted");
    assert!(is_forbidden(&err), "{err}");
    let secrets: Api<Secret> = Api::namespaced(sa_client.clone(), ns.name());
    let err = secrets
        .list(&ListParams::default())
        .await
        .expect_err("secrets are not granted");
    assert!(is_forbidden(&err), "{err}");
    let namespaces: Api<Namespace> = Api::all(sa_client);
    let err = namespaces
        .list(&ListParams::default())
        .await
        .expect_err("namespaces are not granted");
    assert!(is_forbidden(&err), "{err}");
}

#[tokio::test]
async fn rbac_checks_the_operator_identity_from_the_token_file() {
    let cluster = cluster().await;
    let Some(operator) = cluster.client_for_user(&operator_user()).await else {
        eprintln!("SKIPPED rbac_checks_the_operator_identity_from_the_token_file: static-token users exist only on the local control plane");
        return;
    };
    let admin = cluster.client().await;
    let ns = cluster.namespace("rbac-operator").await;
    let as_operator: Api<ConfigMap> = Api::namespaced(operator.clone(), ns.name());
    let err = as_operator
        .list(&ListParams::default())
        .await
        .expect_err("no RBAC yet");
    assert!(is_forbidden(&err), "{err}");

    // A ServiceAccount subject matches the token-file user of the same name.
    grant_cluster_role_yaml(
        &admin,
        &ns,
        CONFIGMAP_READER_ROLE,
        service_account_subject(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT),
    )
    .await
    .unwrap();
    wait_for(
        "the operator identity to be allowed to list ConfigMaps",
        TIMEOUT,
        || {
            let api = as_operator.clone();
            async move { api.list(&ListParams::default()).await.map(|_| true) }
        },
    )
    .await;
    let err = as_operator
        .delete("anything", &DeleteParams::default())
        .await
        .expect_err("delete is not granted");
    assert!(is_forbidden(&err), "{err}");
}

// ---- kubectl ---------------------------------------------------------------------------

/// kubectl: `$DCR_KUBECTL`, else `/usr/bin/kubectl`, else the first `kubectl` on `PATH`
/// (`make tools` puts one there).
fn kubectl_path() -> Option<std::path::PathBuf> {
    let explicit = std::env::var_os("DCR_KUBECTL").map(std::path::PathBuf::from);
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("kubectl"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    explicit
        .into_iter()
        .chain(std::iter::once("/usr/bin/kubectl".into()))
        .chain(on_path)
        .find(|p| p.is_file())
}

fn samples_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples")
}

/// The objects of `config/samples/*.yaml`, moved so that they cannot collide with anything
/// else on the cluster: Namespaces are left out, namespaced objects go to `ns`, cluster-
/// scoped ones get `ns` as a name prefix, and every string equal to an old namespace or
/// cluster-scoped name (references such as `providerRef.name` or a secret reference's
/// namespace) is rewritten the same way.
fn relocate_samples(dir: &std::path::Path, ns: &str, namespaced_kinds: &[String]) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml"))
            .collect(),
        Err(_) => return Vec::new(),
    };
    files.sort();
    let docs: Vec<serde_json::Value> = files
        .iter()
        .flat_map(|f| yaml_documents(&std::fs::read_to_string(f).unwrap()).unwrap())
        .filter(|d| d["kind"] != "Namespace" && d["kind"] != "Kustomization")
        .collect();
    let mut renames = std::collections::HashMap::new();
    for d in &docs {
        let kind = d["kind"].as_str().unwrap_or_default();
        if let Some(old_ns) = d["metadata"]["namespace"].as_str() {
            renames.insert(old_ns.to_string(), ns.to_string());
        } else if !namespaced_kinds.iter().any(|k| k == kind) {
            let name = d["metadata"]["name"].as_str().unwrap_or_default();
            renames.insert(name.to_string(), format!("{ns}-{name}"));
        }
    }
    fn rewrite(v: &mut serde_json::Value, renames: &std::collections::HashMap<String, String>) {
        match v {
            serde_json::Value::String(s) => {
                if let Some(new) = renames.get(s.as_str()) {
                    *s = new.clone();
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| rewrite(i, renames)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|i| rewrite(i, renames)),
            _ => {}
        }
    }
    docs.into_iter()
        .map(|mut d| {
            rewrite(&mut d, &renames);
            d
        })
        .collect()
}

fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    let out = std::process::Command::new(kubectl_path().expect("kubectl"))
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("running kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {} failed ({}):\n{stdout}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn kubectl_applies_crds_and_samples_then_gets_describes_and_deletes() {
    let Some(kubectl_bin) = kubectl_path() else {
        eprintln!(
            "SKIPPED kubectl_applies_crds_and_samples_then_gets_describes_and_deletes: no kubectl \
             (looked at $DCR_KUBECTL, /usr/bin/kubectl and $PATH)"
        );
        return;
    };
    eprintln!("kubectl: {}", kubectl_bin.display());
    let cluster = cluster().await;
    let client = cluster.client().await;
    let ns = cluster.namespace("kubectl").await;

    // CRDs as this server takes them (CEL rules stripped below 1.25: kubectl's own
    // validation refuses the unknown field too), plus the test CRD.
    let dir = tempfile::tempdir().unwrap();
    let crd_dir = dir.path().join("crds");
    std::fs::create_dir(&crd_dir).unwrap();
    let mut crds = read_crd_dir(&crds_dir()).unwrap();
    crds.extend(
        yaml_documents(WIDGET_CRD_YAML)
            .unwrap()
            .into_iter()
            .map(|d| (crd_dir.clone(), d)),
    );
    let mut categories = Vec::new();
    let mut namespaced_kinds = vec!["Secret".to_string(), "ConfigMap".to_string()];
    for (i, (_, crd)) in crds.into_iter().enumerate() {
        let crd = crd_for_server(crd, cluster.version());
        if crd["spec"]["scope"] == "Namespaced" {
            namespaced_kinds.extend(crd["spec"]["names"]["kind"].as_str().map(String::from));
        }
        if let Some(cats) = crd["spec"]["names"]["categories"].as_array() {
            categories.extend(cats.iter().filter_map(|c| c.as_str().map(String::from)));
        }
        std::fs::write(
            crd_dir.join(format!("{i:02}.yaml")),
            serde_yaml::to_string(&crd).unwrap(),
        )
        .unwrap();
    }
    let crd_dir_arg = crd_dir.to_str().unwrap();
    let out = kubectl(cluster, &["apply", "-f", crd_dir_arg]);
    assert!(out.contains("widgets.tests.dcr-operator.io"), "{out}");
    kubectl(
        cluster,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            crd_dir_arg,
        ],
    );

    // Samples: the test Widget, and config/samples/*.yaml moved into this test's
    // namespace (see `relocate_samples`).
    let sample = dir.path().join("widget.yaml");
    std::fs::write(
        &sample,
        "apiVersion: tests.dcr-operator.io/v1\nkind: Widget\nmetadata:\n  name: sample\nspec:\n  size: large\n  label: kubectl\n",
    )
    .unwrap();
    let mut files = vec![sample.clone()];
    let samples = relocate_samples(&samples_dir(), ns.name(), &namespaced_kinds);
    for (i, doc) in samples.iter().enumerate() {
        let f = dir.path().join(format!("sample-{i:02}.yaml"));
        std::fs::write(&f, serde_yaml::to_string(doc).unwrap()).unwrap();
        files.push(f);
    }
    for f in &files {
        kubectl(cluster, &["apply", "-n", ns.name(), "-f", f.to_str().unwrap()]);
    }

    let out = kubectl(cluster, &["get", "widgets", "-n", ns.name()]);
    assert!(
        out.contains("sample") && out.contains("large"),
        "printer columns: {out}"
    );
    let out = kubectl(cluster, &["get", "wdg", "-n", ns.name(), "-o", "name"]);
    assert_eq!(out.trim(), "widget.tests.dcr-operator.io/sample");
    let out = kubectl(cluster, &["get", "dcrtest", "-n", ns.name(), "-o", "name"]);
    assert!(
        out.contains("widget.tests.dcr-operator.io/sample"),
        "category: {out}"
    );
    if categories.iter().any(|c| c == "dcr") {
        let out = kubectl(cluster, &["get", "dcr", "-A", "-o", "name"]);
        for doc in samples.iter().filter(|d| {
            d["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("dcr-operator.io/"))
        }) {
            let name = doc["metadata"]["name"].as_str().unwrap();
            assert!(
                out.contains(&format!("/{name}\n")),
                "`kubectl get dcr -A` lists {name}: {out}"
            );
        }
    }
    for doc in &samples {
        let kind = doc["kind"].as_str().unwrap();
        let name = doc["metadata"]["name"].as_str().unwrap();
        let out = kubectl(cluster, &["describe", "-n", ns.name(), kind, name]);
        assert!(out.contains(name), "describe {kind} {name}: {out}");
    }
    let out = kubectl(cluster, &["describe", "widget", "sample", "-n", ns.name()]);
    assert!(out.contains("Size:") && out.contains("large"), "{out}");
    assert!(
        out.contains("Replicas:") && out.contains('1'),
        "defaulted field in describe: {out}"
    );

    for f in files.iter().rev() {
        kubectl(
            cluster,
            &[
                "delete",
                "-n",
                ns.name(),
                "--wait=true",
                "-f",
                f.to_str().unwrap(),
            ],
        );
    }
    let api: Api<DynamicObject> = Api::namespaced_with(client, ns.name(), &widget_resource());
    assert!(api.get_opt("sample").await.unwrap().is_none());
}
