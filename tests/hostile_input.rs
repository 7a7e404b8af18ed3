//! Hostile and broken input, end to end: a corpus of bad specs applied from one app team's
//! namespace to the real apiserver while the operator runs, and another namespace's
//! Application created, rotated and proven meanwhile.
//!
//! The local control plane is Kubernetes 1.20: it enforces the schema (patterns, lengths,
//! item and property counts) but not the CEL rules, so what CEL would refuse is stored and
//! must be refused by the operator: `Ready=False` with the field named, and not one
//! `addPassword` at the provider. Each namespace has a Graph emulator of its own, so the
//! bad namespace's request log holds only the calls its specs caused.

#[macro_use]
mod support;

use dcr_operator::crd::Application;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use support::cluster::{cluster, wait_for, TIMEOUT};
use support::prover::Prover;
use support::scenario::{secret_data, Profile, Scenario};

/// What the corpus expects of one bad spec.
enum Expect {
    /// The apiserver refuses it; the error mentions this.
    Refused(&'static str),
    /// Stored; the operator reports `Ready=False` with this reason and the field named.
    NotReady(&'static str, &'static str),
}

/// (name, spec fields over a valid spec, expectation). A `metadata` key holds object
/// metadata instead (an Application's spec has no such field).
fn corpus() -> Vec<(String, Value, Expect)> {
    use Expect::*;
    let long_name = format!("long-{}", "n".repeat(240));
    let client_secret_bomb: serde_json::Map<String, Value> = (0..16)
        .map(|i| (format!("k{i}"), json!("{{client_secret}}".repeat(481))))
        .collect();
    let many =
        |n: usize, f: &dyn Fn(usize) -> (String, Value)| -> Value { Value::Object((0..n).map(f).collect()) };
    vec![
        // Durations: the crash of issue 11 (admitted by the pattern, too large to parse),
        // one past the length bound, and the largest value the schema admits.
        (
            "huge-lifetime".into(),
            json!({"credentials": {"lifetime": "99999999999999999999h"}}),
            NotReady("InvalidSpec", "spec.credentials.lifetime"),
        ),
        (
            "huge-renew".into(),
            json!({"credentials": {"renewBefore": "9999999999999999999999999999h"}}),
            NotReady("InvalidSpec", "spec.credentials.renewBefore"),
        ),
        (
            "long-lifetime".into(),
            json!({"credentials": {"lifetime": format!("1{}h", "0".repeat(40))}}),
            Refused("lifetime"),
        ),
        (
            "bad-duration".into(),
            json!({"credentials": {"lifetime": "-5h"}}),
            Refused("lifetime"),
        ),
        (
            "max-lifetime".into(),
            json!({"credentials": {"lifetime": "87600h"}}),
            NotReady("CredentialPolicyViolation", "spec.credentials.lifetime"),
        ),
        // Secret templates the apiserver would refuse after addPassword.
        (
            "key-slash".into(),
            json!({"secret": {"template": {"keys": {"client_secret": "a/b"}}}}),
            Refused("keys"),
        ),
        (
            "key-dot".into(),
            json!({"secret": {"template": {"keys": {"client_secret": ".."}}}}),
            NotReady("InvalidSpec", "spec.secret.template.keys.client_secret"),
        ),
        (
            "label-key".into(),
            json!({"secret": {"template": {"labels": {"a/b/c": "x"}}}}),
            NotReady("InvalidSpec", "spec.secret.template.labels"),
        ),
        (
            "label-value".into(),
            json!({"secret": {"template": {"labels": {"team": "a b"}}}}),
            Refused("labels"),
        ),
        (
            "sa-token".into(),
            json!({"secret": {"template": {"type": "kubernetes.io/service-account-token", "annotations": {"kubernetes.io/service-account.name": "default"}}}}),
            NotReady("InvalidSpec", "spec.secret.template"),
        ),
        (
            "tls-type".into(),
            json!({"secret": {"template": {"type": "kubernetes.io/tls"}}}),
            NotReady("InvalidSpec", "spec.secret.template.type"),
        ),
        (
            "reserved-annotation".into(),
            json!({"secret": {"template": {"annotations": {"dcr-operator.io/credential": "{}"}}}}),
            NotReady("InvalidSpec", "reserved prefix"),
        ),
        (
            "over-1mib".into(),
            json!({"secret": {"template": {"data": client_secret_bomb}}}),
            NotReady("InvalidSpec", "spec.secret.template.data"),
        ),
        (long_name, json!({}), NotReady("InvalidSpec", "spec.secret.name")),
        // Request annotations one past the 253 characters recorded with a key.
        (
            "long-rotate".into(),
            json!({"metadata": {"annotations": {"dcr-operator.io/rotate": "r".repeat(254)}}}),
            NotReady("InvalidSpec", "metadata.annotations[dcr-operator.io/rotate]"),
        ),
        (
            "long-revoke-all".into(),
            json!({"metadata": {"annotations": {"dcr-operator.io/revoke-all": "r".repeat(254)}}}),
            NotReady("InvalidSpec", "metadata.annotations[dcr-operator.io/revoke-all]"),
        ),
        // Oversized lists and values: refused at admission.
        (
            "many-uris".into(),
            json!({"redirectUris": (0..257).map(|i| format!("https://x/{i}")).collect::<Vec<_>>()}),
            Refused("redirectUris"),
        ),
        (
            "long-display".into(),
            json!({"displayName": "d".repeat(121)}),
            Refused("displayName"),
        ),
        (
            "many-data".into(),
            json!({"secret": {"template": {"data": many(17, &|i| (format!("k{i}"), json!("x")))}}}),
            Refused("data"),
        ),
        (
            "many-labels".into(),
            json!({"secret": {"template": {"labels": many(65, &|i| (format!("l{i}"), json!("x")))}}}),
            Refused("labels"),
        ),
        (
            "long-data".into(),
            json!({"secret": {"template": {"data": {"k": "x".repeat(8193)}}}}),
            Refused("data"),
        ),
    ]
}

fn application_resource() -> ApiResource {
    ApiResource::erase::<Application>(&())
}

/// Creates an Application from raw JSON (the typed client cannot hold what the types refuse).
async fn create_raw(s: &Scenario, name: &str, spec: &Value) -> Result<(), String> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(s.client.clone(), s.ns.name(), &application_resource());
    let mut spec = spec.clone();
    let extra_metadata = spec.as_object_mut().and_then(|o| o.remove("metadata"));
    let mut metadata = json!({"name": name, "namespace": s.ns.name()});
    if let Some(extra) = &extra_metadata {
        merge(&mut metadata, extra);
    }
    let mut full = json!({"authStrategyRef": {"name": s.strategy}});
    merge(&mut full, &spec);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "dcr-operator.io/v1alpha1", "kind": "Application",
        "metadata": metadata,
        "spec": full
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

/// The Ready condition of an Application read raw (it may not decode).
async fn raw_ready(s: &Scenario, name: &str) -> Option<Value> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(s.client.clone(), s.ns.name(), &application_resource());
    let obj = api.get(name).await.ok()?;
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
}

/// The shared operator is still the process it was, and never panicked.
fn assert_operator_alive(s: &Scenario) {
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(s.operator.pid as i32, 0) } == 0;
    assert!(alive, "the operator process exited");
    let logs = s.operator.logs();
    assert!(!logs.contains("panicked at"), "the operator panicked");
}

/// Another namespace's Application: created, proven, rotated on request and proven again.
async fn converge_elsewhere(good: &Scenario) {
    good.create_app("steady", json!({})).await;
    let app = good
        .wait_ready(&good.apps(), "steady", "True", Some("Ready"))
        .await;
    let first = app.status.unwrap().credential.unwrap().key_id;
    let prover = Prover::start(good.secrets(), "steady-credentials", good.emu.http_client());
    let patch = json!({"metadata": {"annotations": {"dcr-operator.io/rotate": "hostile-1"}}});
    good.apps()
        .patch("steady", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for("the other namespace's Application to rotate", TIMEOUT, || async {
        let st = good.apps().get("steady").await?.status.unwrap_or_default();
        let key = st.credential.map(|c| c.key_id).unwrap_or_default();
        Ok::<_, kube::Error>((key != first && st.pending_credential.is_none()).then_some(()))
    })
    .await;
    let data = secret_data(&good.secrets().get("steady-credentials").await.unwrap());
    good.token_with(&data["token_url"], &data["client_id"], &data["client_secret"])
        .await
        .expect("the rotated secret works");
    let report = prover.stop().await;
    assert!(report.ok > 0, "the consumer obtained tokens: {report:?}");
    assert!(report.failed_proven.is_empty(), "{report:?}");
}

/// Applies the corpus and checks each outcome.
async fn apply_corpus(bad: &Scenario) {
    let mut stored = vec![];
    for (name, spec, expect) in corpus() {
        let created = create_raw(bad, &name, &spec).await;
        match expect {
            Expect::Refused(field) => {
                let err = created.expect_err(&format!("{name} must be refused at admission"));
                assert!(err.contains(field), "{name}: {err}");
            }
            Expect::NotReady(reason, field) => {
                created
                    .unwrap_or_else(|e| panic!("{name} must be stored (CEL is not enforced on 1.20): {e}"));
                stored.push((name, reason, field));
            }
        }
    }
    for (name, reason, field) in stored {
        let condition = wait_for(format!("{name} Ready=False {reason}"), TIMEOUT, || async {
            Ok::<_, String>(
                raw_ready(bad, &name)
                    .await
                    .filter(|c| c["status"] == "False" && c["reason"] == reason),
            )
        })
        .await;
        let message = condition["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{name}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_are_refused_and_never_stop_another_namespace() {
    let good = Scenario::start("hostile-good", Profile::Ideal).await;
    let bad = Scenario::start("hostile-bad", Profile::Ideal).await;
    bad.wait_ready(&bad.strategies(), &bad.strategy, "True", Some("Ready"))
        .await;

    tokio::join!(apply_corpus(&bad), converge_elsewhere(&good));

    assert_operator_alive(&good);
    assert_eq!(
        bad.requests_seen("application.addPassword", "", None),
        0,
        "no password was issued for a refused spec"
    );
    let events = bad.events().await;
    assert!(
        events.iter().any(|e| e.reason.as_deref() == Some("InvalidSpec")
            && e.note
                .as_deref()
                .is_some_and(|n| n.contains("spec.credentials.lifetime"))),
        "an Event names the undecodable field"
    );
    good.teardown().await;
    bad.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_strategy_is_reported_and_its_neighbours_stay_ready() {
    let s = Scenario::start("hostile-strategy", Profile::Ideal).await;
    let resource = ApiResource::erase::<dcr_operator::crd::AuthStrategy>(&());
    let api: Api<DynamicObject> = Api::all_with(s.client.clone(), &resource);
    let name = format!("{}-undecodable", s.ns.name());
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "dcr-operator.io/v1alpha1", "kind": "AuthStrategy",
        "metadata": {"name": name, "labels": s.ns.owned_labels()},
        "spec": {
            "providerRef": {"name": s.provider}, "displayName": "broken",
            "openIDConnect": {},
            "credentials": {"lifetime": "99999999999999999999h", "renewBefore": "1h"}
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .expect("stored: 1.20 skips CEL");
    let condition = wait_for("the undecodable strategy to be reported", TIMEOUT, || async {
        let obj = api.get(&name).await?;
        let ready = obj.data["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .cloned();
        Ok::<_, kube::Error>(ready.filter(|c| c["reason"] == "InvalidSpec"))
    })
    .await;
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("spec.credentials.lifetime"),
        "{condition}"
    );
    // The watch of strategies still works: the good one serves a new Application.
    s.create_app("neighbour", json!({})).await;
    s.wait_ready(&s.apps(), "neighbour", "True", Some("Ready")).await;
    assert_operator_alive(&s);
    api.delete(&name, &Default::default()).await.unwrap();
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_fields_are_held_where_cel_is_not_enforced() {
    let s = Scenario::start("hostile-immutable", Profile::Ideal).await;
    s.create_app("fixed", json!({})).await;
    s.wait_ready(&s.apps(), "fixed", "True", Some("Ready")).await;
    let issued = s.requests_seen("application.addPassword", "", None);
    for (patch, field) in [
        (
            json!({"spec": {"authStrategyRef": {"name": "elsewhere"}}}),
            "spec.authStrategyRef is immutable",
        ),
        (
            json!({"spec": {"secret": {"name": "renamed"}}}),
            "spec.secret.name is immutable",
        ),
    ] {
        let patched = s
            .apps()
            .patch("fixed", &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        if cluster().await.version().supports_cel_rules() {
            // A cluster enforcing CEL refuses it at admission: nothing for the operator to do.
            assert!(patched.is_err(), "CEL refuses the change");
            continue;
        }
        patched.expect("stored: the apiserver does not enforce CEL");
        let app = s
            .wait_ready(&s.apps(), "fixed", "False", Some("InvalidSpec"))
            .await;
        let message = Scenario::ready_condition(&app)["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains(field), "{message}");
        // Put it back: the Application is Ready again, with the same credentials.
        let back = json!({"spec": {"authStrategyRef": {"name": s.strategy}, "secret": {"name": null}}});
        s.apps()
            .patch("fixed", &PatchParams::default(), &Patch::Merge(&back))
            .await
            .unwrap();
        s.wait_ready(&s.apps(), "fixed", "True", Some("Ready")).await;
    }
    assert_eq!(
        s.requests_seen("application.addPassword", "", None),
        issued,
        "no password issued for a changed immutable field"
    );
    assert!(s.secrets().get_opt("renamed").await.unwrap().is_none());
    assert!(s.secrets().get_opt("fixed-credentials").await.unwrap().is_some());
    s.teardown().await;
}
