//! Provider admin Secrets are read only from `--provider-secret-namespaces`: a DcrProvider
//! pointing at a Secret in an app team's namespace is refused with the field named, and its
//! token endpoint never sees that Secret's value.

#[macro_use]
mod support;

use dcr_operator::crd::DcrProvider;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::Api;
use sandbox::graph::{EmulatorConfig, GraphEmulator, GraphPermission, TenantSpec};
use serde_json::json;
use support::cluster::{wait_for, TIMEOUT};
use support::scenario::{Profile, Scenario, PROVIDER_SECRET_NAMESPACE};

async fn put_secret(api: &Api<Secret>, name: &str, value: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"client_secret": value}
    }))
    .unwrap();
    api.patch(
        name,
        &PatchParams::apply("e2e-test").force(),
        &Patch::Apply(&secret),
    )
    .await
    .expect("secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_secret_in_an_app_namespace_is_refused_and_never_sent() {
    let s = Scenario::start("provider-secret-scope", Profile::Ideal).await;
    // A second IdP: any token request it sees came from the provider under test.
    let idp = GraphEmulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let tenant = idp.seed_tenant(TenantSpec::default());
    let admin = idp.seed_admin_app(&tenant.id, GraphPermission::ApplicationReadWriteOwnedBy);
    // The app team's Secret holds a value that works at that IdP: were it read and sent,
    // the provider would become Ready.
    let stolen = "app-team-secret";
    put_secret(&s.secrets(), stolen, &admin.client_secret).await;
    let spec = |namespace: &str, name: &str| {
        json!({
            "type": "AzureAD",
            "issuer": format!("https://sts.windows.net/{}/", tenant.id),
            "azureAD": {
                "tenantId": tenant.id,
                "authorityHost": idp.authority_host(),
                "graphEndpoint": idp.graph_endpoint(),
            },
            "initialClient": {
                "clientId": admin.client_id,
                "clientSecretRef": {"namespace": namespace, "name": name, "key": "client_secret"}
            }
        })
    };
    // A provider of its own (the scenario's provider's tenant is immutable).
    let name = format!("{}-refused", s.ns.name());
    let apply = |spec: serde_json::Value| {
        let obj: DcrProvider = serde_json::from_value(json!({
            "apiVersion": "dcr-operator.io/v1alpha1", "kind": "DcrProvider",
            "metadata": {"name": name, "labels": s.ns.owned_labels()},
            "spec": spec
        }))
        .unwrap();
        let providers = s.providers();
        let name = name.clone();
        async move {
            providers
                .patch(
                    &name,
                    &PatchParams::apply("e2e-test").force(),
                    &Patch::Apply(&obj),
                )
                .await
                .expect("provider");
        }
    };
    apply(spec(s.ns.name(), stolen)).await;
    let p = s
        .wait_ready(&s.providers(), &name, "False", Some("SecretNamespaceNotAllowed"))
        .await;
    let message = Scenario::ready_condition(&p)["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.starts_with(&format!(
            "spec.initialClient.clientSecretRef.namespace \"{}\" is not a namespace",
            s.ns.name()
        )),
        "{message}"
    );
    assert!(message.contains(PROVIDER_SECRET_NAMESPACE), "{message}");
    // The refusal is an Event on the provider too.
    wait_for("a SecretNamespaceNotAllowed Event", TIMEOUT, || async {
        let events = s.events().await;
        Ok::<_, kube::Error>(
            events
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("SecretNamespaceNotAllowed")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str())
                })
                .then_some(()),
        )
    })
    .await;
    // Editing the app team's Secret re-triggers nothing that reads it.
    put_secret(&s.secrets(), stolen, &format!("{}-edited", admin.client_secret)).await;
    s.wait_ready(&s.providers(), &name, "False", Some("SecretNamespaceNotAllowed"))
        .await;
    assert_eq!(
        idp.request_counts().values().map(|c| c.total).sum::<u64>(),
        0,
        "the refused provider's IdP saw requests: {:?}",
        idp.requests()
    );

    // Control: the same provider with its Secret where admin Secrets belong works, so the
    // IdP above would have seen the value had the operator read it.
    let allowed = format!("{}-other-admin", s.ns.name());
    put_secret(&s.admin_secrets(), &allowed, &admin.client_secret).await;
    apply(spec(PROVIDER_SECRET_NAMESPACE, &allowed)).await;
    s.wait_ready(&s.providers(), &name, "True", Some("Ready")).await;
    assert!(idp.requests().iter().any(|r| r.operation.starts_with("token")));

    let _ = s.admin_secrets().delete(&allowed, &DeleteParams::default()).await;
    let _ = s.secrets().delete(stolen, &DeleteParams::default()).await;
    let _ = s.providers().delete(&name, &DeleteParams::default()).await;
    s.teardown().await;
}
