//! One test's world: a namespace, a Graph emulator with a tenant and an admin app, and a
//! DcrProvider + AuthStrategy pointing at it, all reconciled by the shared operator (or
//! by an operator process of the test's own, see [`Scenario::start_with`]).
#![allow(dead_code)]

use super::cluster::{cluster, wait_for, TestNamespace, TIMEOUT};
use super::operator::{operator, Operator};
use dcr_operator::crd::{Application, AuthStrategy, DcrProvider};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use sandbox::graph::{AdminApp, AppSpec, EmulatorConfig, GraphEmulator, GraphPermission, TenantSpec};
use serde_json::{json, Value};
use std::time::Duration;

pub struct Scenario {
    pub client: Client,
    pub ns: TestNamespace,
    pub emu: GraphEmulator,
    pub admin: AdminApp,
    pub operator: &'static Operator,
    /// Names of this test's cluster-scoped objects.
    pub provider: String,
    pub strategy: String,
    pub admin_secret: String,
}

/// Fault profiles the end-to-end suite runs under.
#[derive(Clone, Copy, Debug)]
pub enum Profile {
    /// A well-behaved Graph.
    Ideal,
    /// 2 s replication lag for new objects, secrets active 1 s after issue, 15% of Graph
    /// requests answered 429 with a fractional Retry-After.
    LagAndThrottling,
}

impl Profile {
    pub fn config(self) -> EmulatorConfig {
        let mut cfg = EmulatorConfig::default();
        if let Profile::LagAndThrottling = self {
            cfg.replication_lag = Duration::from_secs(2);
            cfg.secret_activation_delay = Duration::from_secs(1);
            cfg.faults.throttle_rate = 0.15;
            cfg.faults.throttle_retry_after = Some(Duration::from_millis(300));
        }
        cfg
    }
}

impl Scenario {
    /// A scenario reconciled by the test binary's shared operator (started on first use).
    pub async fn start(test: &str, profile: Profile) -> Scenario {
        Self::start_with(test, profile, operator().await).await
    }

    /// A scenario reconciled by `operator`, e.g. an
    /// [`OperatorProcess`](super::operator::OperatorProcess) of the test's own; the shared
    /// operator is not started.
    pub async fn start_with(test: &str, profile: Profile, operator: &'static Operator) -> Scenario {
        Self::start_with_config(test, profile.config(), operator).await
    }

    /// [`Scenario::start_with`] with an emulator configured as `emulator`.
    pub async fn start_with_config(
        test: &str,
        emulator: EmulatorConfig,
        operator: &'static Operator,
    ) -> Scenario {
        Self::start_with_permissions(
            test,
            emulator,
            operator,
            &[GraphPermission::ApplicationReadWriteOwnedBy],
        )
        .await
    }

    /// [`Scenario::start_with_config`] with an admin client holding `permissions`.
    pub async fn start_with_permissions(
        test: &str,
        emulator: EmulatorConfig,
        operator: &'static Operator,
        permissions: &[GraphPermission],
    ) -> Scenario {
        let cluster = cluster().await;
        let client = cluster.client().await;
        let ns = cluster.namespace(test).await;
        let emu = GraphEmulator::start(emulator).await.expect("emulator");
        let tenant = emu.seed_tenant(TenantSpec::default());
        let spec = AppSpec {
            graph_permissions: permissions.iter().map(|p| p.as_str().to_string()).collect(),
            ..AppSpec::admin(GraphPermission::ApplicationReadWriteOwnedBy)
        };
        let admin = emu.seed_app(&tenant.id, spec);
        let s = Scenario {
            provider: format!("{}-entra", ns.name()),
            strategy: format!("{}-strategy", ns.name()),
            admin_secret: "entra-admin".into(),
            client,
            ns,
            emu,
            admin,
            operator,
        };
        s.put_admin_secret(&s.admin.client_secret.clone()).await;
        s.apply_provider().await;
        s.apply_strategy(json!({"names": [s.ns.name()]})).await;
        s
    }

    pub fn providers(&self) -> Api<DcrProvider> {
        Api::all(self.client.clone())
    }
    pub fn strategies(&self) -> Api<AuthStrategy> {
        Api::all(self.client.clone())
    }
    pub fn apps(&self) -> Api<Application> {
        self.ns.api(&self.client)
    }
    pub fn secrets(&self) -> Api<Secret> {
        self.ns.api(&self.client)
    }

    /// Creates or replaces the admin client's Secret with `value`.
    pub async fn put_admin_secret(&self, value: &str) {
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": self.admin_secret, "namespace": self.ns.name()},
            "stringData": {"client_secret": value}
        }))
        .unwrap();
        self.secrets()
            .patch(
                &self.admin_secret,
                &PatchParams::apply("e2e-test").force(),
                &Patch::Apply(&secret),
            )
            .await
            .expect("admin secret");
    }

    pub fn provider_spec(&self) -> Value {
        json!({
            "type": "AzureAD",
            "issuer": format!("https://sts.windows.net/{}/", self.admin.tenant_id),
            "azureAD": {
                "tenantId": self.admin.tenant_id,
                "authorityHost": self.emu.authority_host(),
                "graphEndpoint": self.emu.graph_endpoint(),
                "deletedApplications": "Keep"
            },
            "initialClient": {
                "clientId": self.admin.client_id,
                "clientSecretRef": {"namespace": self.ns.name(), "name": self.admin_secret, "key": "client_secret"}
            }
        })
    }

    pub async fn apply_provider(&self) {
        self.apply_provider_spec(self.provider_spec()).await;
    }

    pub async fn apply_provider_spec(&self, spec: Value) {
        let obj = json!({
            "apiVersion": "dcr-operator.io/v1alpha1", "kind": "DcrProvider",
            "metadata": {"name": self.provider, "labels": self.ns.owned_labels()},
            "spec": spec
        });
        self.providers()
            .patch(
                &self.provider,
                &PatchParams::apply("e2e-test").force(),
                &Patch::Apply(&obj),
            )
            .await
            .expect("provider");
    }

    pub async fn apply_strategy(&self, allowed_namespaces: Value) {
        self.apply_strategy_with(
            allowed_namespaces,
            json!({"lifetime": "720h", "renewBefore": "240h", "revokePreviousAfter": "1m"}),
        )
        .await
    }

    /// [`Scenario::apply_strategy`] with these `spec.credentials`.
    pub async fn apply_strategy_with(&self, allowed_namespaces: Value, credentials: Value) {
        let obj = json!({
            "apiVersion": "dcr-operator.io/v1alpha1", "kind": "AuthStrategy",
            "metadata": {"name": self.strategy, "labels": self.ns.owned_labels()},
            "spec": {
                "providerRef": {"name": self.provider},
                "displayName": "e2e strategy",
                "openIDConnect": {"scopes": ["api://orders/.default"], "authMethods": ["client_credentials", "bearer"]},
                "allowedNamespaces": allowed_namespaces,
                "credentials": credentials,
                "applicationTemplate": {"azureAD": {"tags": ["e2e"]}}
            }
        });
        self.strategies()
            .patch(
                &self.strategy,
                &PatchParams::apply("e2e-test").force(),
                &Patch::Apply(&obj),
            )
            .await
            .expect("strategy");
    }

    /// Creates Application `name` with extra spec fields.
    pub async fn create_app(&self, name: &str, extra_spec: Value) -> Application {
        let mut spec = json!({"authStrategyRef": {"name": self.strategy}});
        spec.as_object_mut()
            .unwrap()
            .extend(extra_spec.as_object().cloned().unwrap_or_default());
        let app: Application = serde_json::from_value(json!({
            "apiVersion": "dcr-operator.io/v1alpha1", "kind": "Application",
            "metadata": {"name": name, "namespace": self.ns.name()},
            "spec": spec
        }))
        .unwrap();
        self.apps()
            .create(&PostParams::default(), &app)
            .await
            .expect("application")
    }

    /// Waits until the object's Ready condition has `status` and (if given) `reason`, for its
    /// current generation. Returns the object.
    pub async fn wait_ready<K>(&self, api: &Api<K>, name: &str, status: &str, reason: Option<&str>) -> K
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    {
        let what = format!("{name} Ready={status} reason={reason:?}");
        wait_for(what, TIMEOUT, || async {
            let obj = api.get(name).await?;
            let v = serde_json::to_value(&obj).unwrap();
            let generation = v["metadata"]["generation"].clone();
            let ready = v["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .cloned();
            let ok = ready.as_ref().is_some_and(|c| {
                c["status"] == status
                    && c["observedGeneration"] == generation
                    && reason.is_none_or(|r| c["reason"] == r)
            });
            Ok::<_, kube::Error>(ok.then_some(obj))
        })
        .await
    }

    /// The Ready condition of `obj` as JSON.
    pub fn ready_condition<K: serde::Serialize>(obj: &K) -> Value {
        let v = serde_json::to_value(obj).unwrap();
        v["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Events about objects in this namespace and about this test's cluster-scoped objects.
    pub async fn events(&self) -> Vec<Event> {
        let mut all = vec![];
        for ns in [self.ns.name(), "default"] {
            let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
            all.extend(api.list(&ListParams::default()).await.expect("events").items);
        }
        all
    }

    /// Gets a token from the emulated v2 token endpoint with these credentials.
    pub async fn token_with(&self, token_url: &str, client_id: &str, secret: &str) -> Result<String, String> {
        let resp = self
            .emu
            .http_client()
            .post(token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(body["access_token"].as_str().unwrap_or_default().to_string())
        } else {
            Err(format!("{status}: {}", body["error_description"]))
        }
    }

    /// Requests in the emulator's request log of `operation` (e.g. `application.addPassword`)
    /// whose path contains `path_part` (e.g. an object id; "" for any) and, if given, that
    /// were answered `status`.
    pub fn requests_seen(&self, operation: &str, path_part: &str, status: Option<u16>) -> usize {
        self.emu
            .requests()
            .iter()
            .filter(|r| r.operation == operation && r.path.contains(path_part))
            .filter(|r| status.is_none_or(|s| r.status == s))
            .count()
    }

    /// No secret value or access token in the operator's log, this test's Events, its
    /// Applications or its DcrProvider.
    pub async fn assert_no_secret_leaks(&self, secrets: &[&str]) {
        let logs = self.operator.logs();
        assert!(!logs.is_empty(), "the operator's log was captured");
        let events = serde_json::to_string(&self.events().await).unwrap();
        let apps = serde_json::to_string(&self.apps().list(&Default::default()).await.unwrap()).unwrap();
        let providers = serde_json::to_string(&self.providers().get(&self.provider).await.unwrap()).unwrap();
        for secret in secrets {
            assert!(!secret.is_empty());
            assert!(!logs.contains(secret), "a secret value is in the operator's log");
            assert!(!events.contains(secret), "a secret value is in an Event");
            assert!(!apps.contains(secret), "a secret value is in an Application");
            assert!(
                !providers.contains(secret),
                "a secret value is in the DcrProvider"
            );
        }
        let jwt = regex::Regex::new(r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}").unwrap();
        assert!(!jwt.is_match(&logs), "an access token is in the operator's log");
    }

    /// Deletes the test's objects and waits for the Applications to be gone (their
    /// finalizer needs the emulator, which goes with the scenario).
    pub async fn teardown(self) {
        let apps = self.apps();
        for app in apps
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let name = kube::ResourceExt::name_any(&app);
            let _ = apps.delete(&name, &DeleteParams::default()).await;
            super::cluster::wait_deleted(&apps, &name, TIMEOUT).await;
        }
        let _ = self
            .strategies()
            .delete(&self.strategy, &DeleteParams::default())
            .await;
        let _ = self
            .providers()
            .delete(&self.provider, &DeleteParams::default())
            .await;
    }
}

/// Values in a Secret's data, as strings.
pub fn secret_data(secret: &Secret) -> std::collections::BTreeMap<String, String> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}
