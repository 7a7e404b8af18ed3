//! `kubectl dcr status`: the tree provider -> strategies -> applications.
//!
//! With `-n NS` the tree holds that namespace's Applications and the strategies and
//! providers they use; with `-A` every object. Gathering is the only step with a client;
//! building the tree and rendering it are pure.

use super::client::{Scope, Target};
use super::error::{is_forbidden, Error};
use super::model::{self, ConditionView, Expiry, Palette};
use crate::crd::decoded::Decoded;
use crate::crd::{Application, AuthStrategy, DcrProvider};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A list the caller may or may not read.
pub enum Listing<K> {
    Items(Vec<Decoded<K>>),
    Forbidden,
}

impl<K: Resource> Listing<K> {
    fn find(&self, name: &str) -> Found<'_, K> {
        match self {
            Listing::Forbidden => Found::Forbidden,
            Listing::Items(items) => {
                items
                    .iter()
                    .find(|d| meta_name(d) == name)
                    .map_or(Found::Missing, |d| match &d.0 {
                        Ok(k) => Found::Object(k),
                        Err(e) => Found::Undecodable(e.error.clone()),
                    })
            }
        }
    }

    fn names(&self) -> Vec<String> {
        match self {
            Listing::Forbidden => vec![],
            Listing::Items(items) => items.iter().map(meta_name).collect(),
        }
    }
}

fn meta_name<K: Resource>(d: &Decoded<K>) -> String {
    match &d.0 {
        Ok(k) => k.meta().name.clone().unwrap_or_default(),
        Err(e) => e.metadata.name.clone().unwrap_or_default(),
    }
}

enum Found<'a, K> {
    Object(&'a K),
    Missing,
    Forbidden,
    Undecodable(String),
}

impl<K> Found<'_, K> {
    fn note(&self) -> Option<String> {
        match self {
            Found::Object(_) => None,
            Found::Missing => Some("not found".into()),
            Found::Forbidden => Some("not readable with your permissions".into()),
            Found::Undecodable(e) => Some(format!("does not decode: {e}")),
        }
    }
}

/// What `status` reads from the cluster.
pub struct StatusInput {
    pub scope: Scope,
    pub providers: Listing<DcrProvider>,
    pub strategies: Listing<AuthStrategy>,
    pub applications: Vec<Decoded<Application>>,
}

/// Reads the objects in scope (cluster-scoped kinds the caller may not list are marked so).
pub async fn gather(target: &Target) -> Result<StatusInput, Error> {
    let client = &target.client;
    let apps: Api<Decoded<Application>> = match target.scope.namespace() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let applications = apps
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::api("listing Applications", e))?
        .items;
    Ok(StatusInput {
        scope: target.scope.clone(),
        providers: list_cluster(Api::all(client.clone()), "DcrProviders").await?,
        strategies: list_cluster(Api::all(client.clone()), "AuthStrategies").await?,
        applications,
    })
}

async fn list_cluster<K>(api: Api<Decoded<K>>, what: &str) -> Result<Listing<K>, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
    Decoded<K>: Resource<DynamicType = K::DynamicType> + Clone + std::fmt::Debug,
{
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(Listing::Items(list.items)),
        Err(e) if is_forbidden(&e) => Ok(Listing::Forbidden),
        Err(e) => Err(Error::api(format!("listing {what}"), e)),
    }
}

/// The tree, as `-o json|yaml` prints it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// `all namespaces` or `namespace <ns>`.
    pub scope: String,
    pub providers: Vec<ProviderNode>,
    /// Applications that do not decode (so their strategy is unknown).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undecodable_applications: Vec<ApplicationNode>,
    pub summary: Summary,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderNode {
    /// Empty when unknown (its strategy is missing or does not decode).
    pub name: String,
    /// Why the object could not be shown (`not found`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<ConditionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled: Option<ConditionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orphaned_applications: Option<u32>,
    pub strategies: Vec<StrategyNode>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategyNode {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<ConditionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled: Option<ConditionView>,
    pub applications: Vec<ApplicationNode>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationNode {
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<ConditionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled: Option<ConditionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<String>,
    /// Where the credential stands at the time of the report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry: Option<Expiry>,
    /// `expires_at` relative to the time of the report (`in 29d`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub providers: usize,
    pub strategies: usize,
    pub applications: usize,
    /// Objects shown that are not Ready (missing and undecodable ones included; objects
    /// the caller may not read are not counted).
    pub not_ready: usize,
}

impl StatusReport {
    /// Everything shown is Ready.
    pub fn healthy(&self) -> bool {
        self.summary.not_ready == 0
    }
}

/// Builds the tree (pure).
pub fn build(input: &StatusInput, now: Timestamp) -> StatusReport {
    let mut by_strategy: BTreeMap<String, Vec<ApplicationNode>> = BTreeMap::new();
    let mut undecodable = Vec::new();
    for d in &input.applications {
        match &d.0 {
            Ok(app) => by_strategy
                .entry(app.spec.auth_strategy_ref.name.clone())
                .or_default()
                .push(application_node(app, now)),
            Err(e) => undecodable.push(ApplicationNode {
                namespace: e.metadata.namespace.clone().unwrap_or_default(),
                name: e.metadata.name.clone().unwrap_or_default(),
                note: Some(format!("does not decode: {}", e.error)),
                ready: model::condition(&e.conditions, "Ready", e.metadata.generation),
                throttled: None,
                client_id: None,
                expires_at: None,
                renew_at: None,
                expiry: None,
                expires_in: None,
            }),
        }
    }
    let all = input.scope == Scope::All;
    let mut strategy_names: BTreeSet<String> = by_strategy.keys().cloned().collect();
    if all {
        strategy_names.extend(input.strategies.names());
    }
    let mut by_provider: BTreeMap<String, Vec<StrategyNode>> = BTreeMap::new();
    for name in strategy_names {
        let apps = by_strategy.remove(&name).unwrap_or_default();
        let found = input.strategies.find(&name);
        let provider = match &found {
            Found::Object(s) => s.spec.provider_ref.name.clone(),
            _ => String::new(),
        };
        let (ready, throttled) = match &found {
            Found::Object(s) => {
                conditions_of(s.status.as_ref().map(|st| &st.conditions), s.metadata.generation)
            }
            _ => (None, None),
        };
        by_provider.entry(provider).or_default().push(StrategyNode {
            name,
            note: found.note(),
            ready,
            throttled,
            applications: apps,
        });
    }
    if all {
        for name in input.providers.names() {
            by_provider.entry(name).or_default();
        }
    }
    let providers: Vec<ProviderNode> = by_provider
        .into_iter()
        .map(|(name, strategies)| provider_node(input, name, strategies))
        .collect();
    let summary = summarise(&providers, &undecodable);
    StatusReport {
        scope: match &input.scope {
            Scope::All => "all namespaces".into(),
            Scope::Namespace(ns) => format!("namespace {ns}"),
        },
        providers,
        undecodable_applications: undecodable,
        summary,
    }
}

fn conditions_of(
    conditions: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>,
    generation: Option<i64>,
) -> (Option<ConditionView>, Option<ConditionView>) {
    let cs = conditions.map(Vec::as_slice).unwrap_or_default();
    let throttled = model::condition(cs, "Throttled", generation).filter(ConditionView::is_true);
    (model::condition(cs, "Ready", generation), throttled)
}

fn provider_node(input: &StatusInput, name: String, strategies: Vec<StrategyNode>) -> ProviderNode {
    if name.is_empty() {
        return ProviderNode {
            name,
            note: Some("unknown: the strategy could not be read".into()),
            ready: None,
            throttled: None,
            orphaned_applications: None,
            strategies,
        };
    }
    let found = input.providers.find(&name);
    let (ready, throttled, orphans) = match &found {
        Found::Object(p) => {
            let (r, t) = conditions_of(p.status.as_ref().map(|s| &s.conditions), p.metadata.generation);
            (r, t, p.status.as_ref().map(|s| s.orphaned_applications))
        }
        _ => (None, None, None),
    };
    ProviderNode {
        note: found.note(),
        name,
        ready,
        throttled,
        orphaned_applications: orphans,
        strategies,
    }
}

fn application_node(app: &Application, now: Timestamp) -> ApplicationNode {
    let status = app.status.clone().unwrap_or_default();
    let (ready, throttled) = conditions_of(Some(&status.conditions), app.metadata.generation);
    let credential = status.credential.as_ref();
    ApplicationNode {
        namespace: app.namespace().unwrap_or_default(),
        name: app.name_any(),
        note: None,
        ready,
        throttled,
        client_id: status.client_id.as_deref().map(|c| model::bounded(c, 64)),
        expires_at: credential.map(|c| c.expires_at.0.to_string()),
        renew_at: credential.map(|c| c.renew_at.0.to_string()),
        expiry: credential.map(|c| model::expiry(now, c.expires_at.0, c.renew_at.0)),
        expires_in: credential.map(|c| model::relative(now, c.expires_at.0)),
    }
}

/// Whether a node counts as not Ready: present and not Ready, missing, or undecodable.
fn not_ready(note: Option<&String>, ready: Option<&ConditionView>) -> bool {
    match note {
        Some(n) => !n.starts_with("not readable"),
        None => !model::is_ready(ready),
    }
}

fn summarise(providers: &[ProviderNode], undecodable: &[ApplicationNode]) -> Summary {
    let mut s = Summary {
        applications: undecodable.len(),
        not_ready: undecodable.len(),
        ..Default::default()
    };
    for p in providers {
        if !p.name.is_empty() {
            s.providers += 1;
            s.not_ready += usize::from(not_ready(p.note.as_ref(), p.ready.as_ref()));
        }
        for st in &p.strategies {
            s.strategies += 1;
            s.not_ready += usize::from(not_ready(st.note.as_ref(), st.ready.as_ref()));
            for a in &st.applications {
                s.applications += 1;
                s.not_ready += usize::from(not_ready(a.note.as_ref(), a.ready.as_ref()));
            }
        }
    }
    s
}

/// `Ready`, `False NamespaceNotAllowed: ...`, `not found`, coloured.
fn state(note: Option<&String>, ready: Option<&ConditionView>, palette: Palette) -> String {
    if let Some(note) = note {
        return if note.starts_with("not readable") {
            palette.warn(note)
        } else {
            palette.bad(note)
        };
    }
    match ready {
        None => palette.warn("no Ready condition yet"),
        Some(c) => {
            let stale = if c.current {
                ""
            } else {
                " (not yet reconciled since the last change)"
            };
            let text = if c.is_true() && c.current {
                return palette.good("Ready");
            } else if c.message.is_empty() {
                format!("{} {}{stale}", c.status, c.reason)
            } else {
                format!("{} {}: {}{stale}", c.status, c.reason, one_line(&c.message))
            };
            if c.status == "False" {
                palette.bad(&text)
            } else {
                palette.warn(&text)
            }
        }
    }
}

fn throttled(t: Option<&ConditionView>, palette: Palette) -> String {
    t.map(|t| format!(", {}", palette.warn(&format!("throttled ({})", t.reason))))
        .unwrap_or_default()
}

/// Newlines and tabs as spaces: one object per line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The tree as text (pure).
pub fn render_text(report: &StatusReport, palette: Palette) -> String {
    let mut out = String::new();
    if report.providers.is_empty() && report.undecodable_applications.is_empty() {
        out.push_str(&format!(
            "No DcrProviders, AuthStrategies or Applications in {}.\n",
            report.scope
        ));
    }
    for p in &report.providers {
        let name = if p.name.is_empty() { "?" } else { p.name.as_str() };
        let orphans = p
            .orphaned_applications
            .map(|n| {
                let text = format!(", orphans {n}");
                if n > 0 {
                    palette.warn(&text)
                } else {
                    text
                }
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "DcrProvider {name}: {}{orphans}{}\n",
            state(p.note.as_ref(), p.ready.as_ref(), palette),
            throttled(p.throttled.as_ref(), palette)
        ));
        for (i, s) in p.strategies.iter().enumerate() {
            let last = i + 1 == p.strategies.len();
            let (branch, indent) = if last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            out.push_str(&format!(
                "{branch}AuthStrategy {}: {}{}\n",
                s.name,
                state(s.note.as_ref(), s.ready.as_ref(), palette),
                throttled(s.throttled.as_ref(), palette)
            ));
            for (j, a) in s.applications.iter().enumerate() {
                let b = if j + 1 == s.applications.len() {
                    "└─ "
                } else {
                    "├─ "
                };
                out.push_str(&format!("{indent}{b}{}\n", application_line(a, palette)));
            }
        }
    }
    if !report.undecodable_applications.is_empty() {
        out.push_str("Applications that do not decode:\n");
        for a in &report.undecodable_applications {
            out.push_str(&format!("└─ {}\n", application_line(a, palette)));
        }
    }
    let s = &report.summary;
    let verdict = if s.not_ready == 0 {
        palette.good("all Ready")
    } else {
        palette.bad(&format!("{} not Ready", s.not_ready))
    };
    out.push_str(&format!(
        "{} provider(s), {} strategy(ies), {} application(s) in {}: {verdict}\n",
        s.providers, s.strategies, s.applications, report.scope
    ));
    out
}

fn application_line(a: &ApplicationNode, palette: Palette) -> String {
    let mut line = format!(
        "Application {}/{}: {}{}",
        a.namespace,
        a.name,
        state(a.note.as_ref(), a.ready.as_ref(), palette),
        throttled(a.throttled.as_ref(), palette)
    );
    if let Some(id) = &a.client_id {
        line.push_str(&format!(", client {id}"));
    }
    if let (Some(at), Some(rel)) = (&a.expires_at, &a.expires_in) {
        let text = format!("expires {at} ({rel})");
        let painted = match a.expiry {
            Some(Expiry::RenewDue) => palette.warn(&format!("{text}, inside renewBefore")),
            Some(Expiry::Expired) => palette.bad(&format!("{text}, expired")),
            _ => text,
        };
        line.push_str(&format!(", {painted}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decoded<K: serde::de::DeserializeOwned + Resource>(v: serde_json::Value) -> Decoded<K> {
        serde_json::from_value(v).unwrap()
    }

    fn ready(status: &str, reason: &str, message: &str) -> serde_json::Value {
        json!([{"type": "Ready", "status": status, "reason": reason, "message": message,
                "lastTransitionTime": "2026-12-01T00:00:00Z", "observedGeneration": 1}])
    }

    fn provider(name: &str, conditions: serde_json::Value) -> Decoded<DcrProvider> {
        decoded(json!({
            "apiVersion": "dcr-operator.io/v1alpha1", "kind": "DcrProvider",
            "metadata": {"name": name, "generation": 1},
            "spec": {"type": "AzureAD", "issuer": "https://sts.windows.net/t/",
                     "azureAD": {"tenantId": "8a4b7e9c-2f5d-4c1e-9b3a-6d2e1f0c7a58"},
                     "initialClient": {"clientId": "3f2c9d1e-7a6b-4e58-9c0d-1b2a3c4d5e6f",
                                       "clientSecretRef": {"namespace": "dcr-system", "name": "admin"}}},
            "status": {"conditions": conditions, "orphanedApplications": 2}
        }))
    }

    fn strategy(name: &str, provider: &str, conditions: serde_json::Value) -> Decoded<AuthStrategy> {
        decoded(json!({
            "apiVersion": "dcr-operator.io/v1alpha1", "kind": "AuthStrategy",
            "metadata": {"name": name, "generation": 1},
            "spec": {"providerRef": {"name": provider}, "displayName": "s",
                     "openIDConnect": {"scopes": ["api://x/.default"]}},
            "status": {"conditions": conditions}
        }))
    }

    fn app(
        name: &str,
        strategy: &str,
        conditions: serde_json::Value,
        renew_at: &str,
    ) -> Decoded<Application> {
        decoded(json!({
            "apiVersion": "dcr-operator.io/v1alpha1", "kind": "Application",
            "metadata": {"name": name, "namespace": "orders", "generation": 1},
            "spec": {"authStrategyRef": {"name": strategy}},
            "status": {"conditions": conditions, "clientId": "11111111-2222-3333-4444-555555555555",
                       "credential": {"keyId": "k", "issuedAt": "2026-11-01T00:00:00Z",
                                      "expiresAt": "2026-12-31T00:00:00Z", "renewAt": renew_at}}
        }))
    }

    fn input() -> StatusInput {
        StatusInput {
            scope: Scope::Namespace("orders".into()),
            providers: Listing::Items(vec![
                provider("entra", ready("True", "Ready", "ok")),
                provider("other", json!([])),
            ]),
            strategies: Listing::Items(vec![strategy("cc", "entra", ready("True", "Ready", "ok"))]),
            applications: vec![
                app("a", "cc", ready("True", "Ready", "ok"), "2026-12-21T00:00:00Z"),
                app(
                    "b",
                    "cc",
                    ready(
                        "False",
                        "NamespaceNotAllowed",
                        "the AuthStrategy cc does not admit\nnamespace orders",
                    ),
                    "2026-11-21T00:00:00Z",
                ),
                app(
                    "c",
                    "gone",
                    ready("False", "StrategyNotFound", "AuthStrategy gone not found"),
                    "2026-12-21T00:00:00Z",
                ),
            ],
        }
    }

    #[test]
    fn the_tree_as_text() {
        let now: Timestamp = "2026-12-02T00:00:00Z".parse().unwrap();
        let report = build(&input(), now);
        let expected = "\
DcrProvider ?: unknown: the strategy could not be read
└─ AuthStrategy gone: not found
   └─ Application orders/c: False StrategyNotFound: AuthStrategy gone not found, client 11111111-2222-3333-4444-555555555555, expires 2026-12-31T00:00:00Z (in 29d)
DcrProvider entra: Ready, orphans 2
└─ AuthStrategy cc: Ready
   ├─ Application orders/a: Ready, client 11111111-2222-3333-4444-555555555555, expires 2026-12-31T00:00:00Z (in 29d)
   └─ Application orders/b: False NamespaceNotAllowed: the AuthStrategy cc does not admit namespace orders, client 11111111-2222-3333-4444-555555555555, expires 2026-12-31T00:00:00Z (in 29d), inside renewBefore
1 provider(s), 2 strategy(ies), 3 application(s) in namespace orders: 3 not Ready
";
        assert_eq!(render_text(&report, Palette::default()), expected);
        assert!(!report.healthy());
    }

    #[test]
    fn every_namespace_shows_unused_objects_too() {
        let mut i = input();
        i.scope = Scope::All;
        let report = build(&i, "2026-12-02T00:00:00Z".parse().unwrap());
        let names: Vec<&str> = report.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["", "entra", "other"]);
        let other = report.providers.iter().find(|p| p.name == "other").unwrap();
        assert!(other.ready.is_none());
        // "other" has no Ready condition: not Ready.
        assert_eq!(report.summary.not_ready, 4);
    }

    #[test]
    fn forbidden_cluster_objects_are_unknown_not_failed() {
        let mut i = input();
        i.providers = Listing::Forbidden;
        i.strategies = Listing::Forbidden;
        i.applications.truncate(1);
        let report = build(&i, "2026-12-02T00:00:00Z".parse().unwrap());
        let text = render_text(&report, Palette::default());
        assert!(
            text.contains("AuthStrategy cc: not readable with your permissions"),
            "{text}"
        );
        assert!(report.healthy(), "{text}");
    }

    #[test]
    fn expiry_inside_renew_before_is_coloured_on_a_terminal() {
        let report = build(&input(), "2026-12-02T00:00:00Z".parse().unwrap());
        let text = render_text(&report, Palette { enabled: true });
        assert!(
            text.contains("\x1b[33mexpires 2026-12-31T00:00:00Z (in 29d), inside renewBefore\x1b[0m"),
            "{text}"
        );
    }
}
