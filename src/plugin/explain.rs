//! `kubectl dcr explain application NAME`: walk Application -> AuthStrategy -> DcrProvider
//! -> admin Secret (and the credential Secret), say what is wrong and what to do, with the
//! last Events and the IdP error codes the conditions carry.
//!
//! Gathering reads with the caller's own permissions; a link the caller may not read is
//! shown as such, never guessed. Diagnosing and rendering are pure.

use super::advice;
use super::client::Target;
use super::error::{is_forbidden, Error};
use super::model::{self, ConditionView, Palette};
use super::status::one_line;
use crate::crd::decoded::Decoded;
use crate::crd::{Application, AuthStrategy, DcrProvider};
use k8s_openapi::api::core::v1::{Event, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;

/// Namespace of the Events about cluster-scoped objects.
const CLUSTER_EVENTS_NAMESPACE: &str = "default";

/// An object read with the caller's permissions.
#[derive(Clone, Debug)]
pub enum Fetched<K> {
    Object(K),
    Undecodable(String),
    Missing,
    Forbidden,
}

impl<K> Fetched<K> {
    fn object(&self) -> Option<&K> {
        match self {
            Fetched::Object(k) => Some(k),
            _ => None,
        }
    }
}

/// What `explain` reads from the cluster.
pub struct ExplainInput {
    pub application: Application,
    pub strategy: Fetched<AuthStrategy>,
    pub provider: Option<Fetched<DcrProvider>>,
    /// The admin client's Secret: whether its key is there (its value is never kept).
    pub admin_secret: Option<Fetched<SecretShape>>,
    pub credential_secret: Fetched<SecretShape>,
    pub events: Vec<EventView>,
}

/// A Secret's shape: which keys it has, whether the Application owns it. Never a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretShape {
    pub keys: Vec<String>,
    pub owned: bool,
}

fn shape(secret: &Secret, app: &Application) -> SecretShape {
    SecretShape {
        keys: secret
            .data
            .as_ref()
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default(),
        owned: crate::secret::is_owned_by(secret, app),
    }
}

async fn fetch<K>(api: Api<Decoded<K>>, name: &str, what: &str) -> Result<Fetched<K>, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    Decoded<K>: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(Some(Decoded(Ok(k)))) => Ok(Fetched::Object(k)),
        Ok(Some(Decoded(Err(e)))) => Ok(Fetched::Undecodable(e.error)),
        Ok(None) => Ok(Fetched::Missing),
        Err(e) if is_forbidden(&e) => Ok(Fetched::Forbidden),
        Err(e) => Err(Error::api(format!("reading {what} {name}"), e)),
    }
}

async fn fetch_secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
    app: &Application,
) -> Result<Fetched<SecretShape>, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(s)) => Ok(Fetched::Object(shape(&s, app))),
        Ok(None) => Ok(Fetched::Missing),
        Err(e) if is_forbidden(&e) => Ok(Fetched::Forbidden),
        Err(e) => Err(Error::api(format!("reading Secret {ns}/{name}"), e)),
    }
}

/// Reads the chain of Application `name` in the target's namespace.
pub async fn gather(target: &Target, name: &str, events: usize) -> Result<ExplainInput, Error> {
    let client = &target.client;
    let ns = target.namespace.as_str();
    let apps: Api<Decoded<Application>> = Api::namespaced(client.clone(), ns);
    let application = match fetch(apps, name, "Application").await? {
        Fetched::Object(a) => a,
        Fetched::Missing => {
            return Err(Error::NotFound {
                kind: "Application",
                name: format!("{ns}/{name}"),
            })
        }
        Fetched::Forbidden => return Err(Error::Usage(format!("you may not read Application {ns}/{name}"))),
        Fetched::Undecodable(e) => {
            return Err(Error::Render(format!(
                "Application {ns}/{name} does not decode: {e}"
            )))
        }
    };
    let strategy_name = application.spec.auth_strategy_ref.name.clone();
    let strategy: Fetched<AuthStrategy> =
        fetch(Api::all(client.clone()), &strategy_name, "AuthStrategy").await?;
    let provider = match strategy.object() {
        Some(s) => Some(
            fetch::<DcrProvider>(Api::all(client.clone()), &s.spec.provider_ref.name, "DcrProvider").await?,
        ),
        None => None,
    };
    let admin_secret = match provider
        .as_ref()
        .and_then(Fetched::object)
        .and_then(DcrProvider::admin_secret_ref)
    {
        Some(r) => Some(fetch_secret(client, &r.namespace, &r.name, &application).await?),
        None => None,
    };
    let credential_secret =
        fetch_secret(client, ns, &credential_secret_name(&application), &application).await?;
    let mut all_events = object_events(client, ns, &application, events).await;
    if let Some(s) = strategy.object() {
        all_events.extend(object_events(client, CLUSTER_EVENTS_NAMESPACE, s, events).await);
    }
    if let Some(p) = provider.as_ref().and_then(Fetched::object) {
        all_events.extend(object_events(client, CLUSTER_EVENTS_NAMESPACE, p, events).await);
    }
    all_events.sort_by(|a, b| a.last_seen.cmp(&b.last_seen));
    Ok(ExplainInput {
        application,
        strategy,
        provider,
        admin_secret,
        credential_secret,
        events: all_events,
    })
}

/// The credential Secret's name: what status recorded, else what the spec asks for.
pub fn credential_secret_name(app: &Application) -> String {
    app.status
        .as_ref()
        .and_then(|s| s.secret_name.clone())
        .unwrap_or_else(|| crate::secret::secret_name(app))
}

/// One Event as `explain` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// `Application/orders-client`.
    pub object: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub note: String,
    pub count: i32,
    /// RFC 3339.
    pub last_seen: String,
}

/// The last `limit` Events about `obj` (none when the caller may not list Events: they
/// are context, not the diagnosis).
async fn object_events<K: Resource<DynamicType = ()>>(
    client: &kube::Client,
    ns: &str,
    obj: &K,
    limit: usize,
) -> Vec<EventView> {
    let (Some(uid), Some(name)) = (obj.meta().uid.clone(), obj.meta().name.clone()) else {
        return vec![];
    };
    if limit == 0 {
        return vec![];
    }
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
    let Ok(list) = api.list(&lp).await else {
        return vec![];
    };
    let kind = K::kind(&()).to_string();
    let mut views: Vec<EventView> = list
        .items
        .iter()
        .map(|e| EventView {
            object: format!("{kind}/{name}"),
            type_: e.type_.clone().unwrap_or_default(),
            reason: model::bounded(e.reason.as_deref().unwrap_or_default(), 128),
            note: model::bounded(&one_line(e.message.as_deref().unwrap_or_default()), 1024),
            count: e.series.as_ref().and_then(|s| s.count).or(e.count).unwrap_or(1),
            last_seen: last_seen(e).map(|t| t.to_string()).unwrap_or_default(),
        })
        .collect();
    views.sort_by(|a, b| a.last_seen.cmp(&b.last_seen));
    let skip = views.len().saturating_sub(limit);
    views.split_off(skip)
}

fn last_seen(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or(e.last_timestamp.as_ref().map(|t| t.0))
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// One link of the chain.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    /// `Application`, `AuthStrategy`, `DcrProvider`, `Secret`.
    pub kind: String,
    pub name: String,
    /// What the link is for (`the admin client's secret`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `not found`, `not readable with your permissions`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<ConditionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled: Option<ConditionView>,
    /// Facts worth a line each (client id, expiry, keys present).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// A problem found, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub what: String,
    pub to_do: String,
}

/// `explain`'s answer, as `-o json|yaml` prints it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExplainReport {
    /// `namespace/name`.
    pub application: String,
    pub ready: bool,
    pub chain: Vec<Link>,
    /// Root cause first: the link furthest down the chain.
    pub problems: Vec<Problem>,
    /// Entra error codes (`AADSTS...`) the chain's conditions carry.
    pub idp_error_codes: Vec<String>,
    pub events: Vec<EventView>,
}

fn conditions(
    cs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>,
    generation: Option<i64>,
) -> (Option<ConditionView>, Option<ConditionView>) {
    let cs = cs.map(Vec::as_slice).unwrap_or_default();
    (
        model::condition(cs, "Ready", generation),
        model::condition(cs, "Throttled", generation).filter(ConditionView::is_true),
    )
}

fn note_of<K>(f: &Fetched<K>) -> Option<String> {
    match f {
        Fetched::Object(_) => None,
        Fetched::Missing => Some("not found".into()),
        Fetched::Forbidden => Some("not readable with your permissions".into()),
        Fetched::Undecodable(e) => Some(format!("does not decode: {e}")),
    }
}

/// Builds the report (pure).
pub fn diagnose(input: &ExplainInput, now: Timestamp) -> ExplainReport {
    let app = &input.application;
    let ns = app.namespace().unwrap_or_default();
    let app_name = format!("{ns}/{}", app.name_any());
    let mut chain = vec![application_link(app, now)];
    let mut problems: Vec<Problem> = Vec::new();
    let strategy_name = &app.spec.auth_strategy_ref.name;

    chain.push(strategy_link(strategy_name, &input.strategy));
    if let Some(p) = &input.provider {
        let name = input
            .strategy
            .object()
            .map(|s| s.spec.provider_ref.name.clone())
            .unwrap_or_default();
        chain.push(provider_link(&name, p));
    }
    if let (Some(secret), Some(provider)) = (
        &input.admin_secret,
        input.provider.as_ref().and_then(Fetched::object),
    ) {
        if let Some(link) = admin_secret_link(provider, secret) {
            chain.push(link);
        }
    }

    // Root cause first: from the admin Secret back to the Application; the credential
    // Secret, which the Application produces, last.
    for link in chain.iter().rev() {
        let found = link_problems(link, &ns, input, !problems.is_empty());
        problems.extend(found);
    }
    let credential = credential_secret_link(app, &input.credential_secret);
    let found = link_problems(&credential, &ns, input, !problems.is_empty());
    problems.extend(found);
    chain.push(credential);
    let codes = model::idp_codes(
        chain
            .iter()
            .filter_map(|l| l.ready.as_ref())
            .map(|c| c.message.as_str()),
    );
    let ready = chain
        .first()
        .and_then(|l| l.ready.as_ref())
        .is_some_and(|c| model::is_ready(Some(c)));
    ExplainReport {
        application: app_name,
        ready,
        chain,
        problems,
        idp_error_codes: codes,
        events: input.events.clone(),
    }
}

fn application_link(app: &Application, now: Timestamp) -> Link {
    let status = app.status.clone().unwrap_or_default();
    let (ready, throttled) = conditions(Some(&status.conditions), app.metadata.generation);
    let mut details = Vec::new();
    if let Some(id) = &status.client_id {
        details.push(format!("client id {}", model::bounded(id, 64)));
    }
    if let Some(c) = &status.credential {
        let due = match model::expiry(now, c.expires_at.0, c.renew_at.0) {
            model::Expiry::Valid => String::new(),
            model::Expiry::RenewDue => ", inside renewBefore".into(),
            model::Expiry::Expired => ", expired".into(),
        };
        details.push(format!(
            "secret {} expires {} ({}{due}), renewal from {}",
            model::bounded(&c.key_id, 64),
            c.expires_at.0,
            model::relative(now, c.expires_at.0),
            c.renew_at.0
        ));
    }
    if let Some(p) = &status.pending_credential {
        details.push(format!(
            "rotation under way: secret {} issued {}, not yet proven",
            model::bounded(&p.key_id, 64),
            p.issued_at.0
        ));
    }
    if !status.previous_credentials.is_empty() {
        details.push(format!(
            "{} superseded secret(s) awaiting revocation",
            status.previous_credentials.len()
        ));
    }
    if app.metadata.deletion_timestamp.is_some() {
        details.push("being deleted".into());
    }
    Link {
        kind: "Application".into(),
        name: format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any()),
        role: None,
        note: None,
        ready,
        throttled,
        details,
    }
}

fn strategy_link(name: &str, f: &Fetched<AuthStrategy>) -> Link {
    let (ready, throttled, details) = match f.object() {
        Some(s) => {
            let (r, t) = conditions(s.status.as_ref().map(|st| &st.conditions), s.metadata.generation);
            let admits = match &s.spec.allowed_namespaces {
                None => "admits every namespace".to_string(),
                Some(a) => {
                    let mut parts = Vec::new();
                    if !a.names.is_empty() {
                        parts.push(format!("names {}", a.names.join(", ")));
                    }
                    if let Some(sel) = &a.selector {
                        parts.push(format!("selector {}", selector_text(sel)));
                    }
                    format!(
                        "admits {}",
                        if parts.is_empty() {
                            "no namespace".into()
                        } else {
                            parts.join("; ")
                        }
                    )
                }
            };
            (r, t, vec![admits])
        }
        None => (None, None, vec![]),
    };
    Link {
        kind: "AuthStrategy".into(),
        name: name.into(),
        role: None,
        note: note_of(f),
        ready,
        throttled,
        details,
    }
}

fn selector_text(sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(format!("{} {} ({values})", e.key, e.operator));
    }
    parts.join(", ")
}

fn provider_link(name: &str, f: &Fetched<DcrProvider>) -> Link {
    let (ready, throttled, details) = match f.object() {
        Some(p) => {
            let (r, t) = conditions(p.status.as_ref().map(|s| &s.conditions), p.metadata.generation);
            let orphans = p.status.as_ref().map_or(0, |s| s.orphaned_applications);
            (r, t, vec![format!("orphaned applications {orphans}")])
        }
        None => (None, None, vec![]),
    };
    Link {
        kind: "DcrProvider".into(),
        name: name.into(),
        role: None,
        note: note_of(f),
        ready,
        throttled,
        details,
    }
}

fn admin_secret_link(provider: &DcrProvider, f: &Fetched<SecretShape>) -> Option<Link> {
    let r = provider.admin_secret_ref()?;
    let details = match f.object() {
        Some(s) if s.keys.contains(&r.key) => vec![format!("key {} present", r.key)],
        Some(_) => vec![format!("key {} missing", r.key)],
        None => vec![],
    };
    Some(Link {
        kind: "Secret".into(),
        name: format!("{}/{}", r.namespace, r.name),
        role: Some("the admin client's secret".into()),
        note: note_of(f),
        ready: None,
        throttled: None,
        details,
    })
}

/// The credential Secret's key names: the defaults, renamed by `spec.secret.template.keys`.
pub fn key_name(app: &Application, field: &str) -> String {
    app.spec
        .secret
        .template
        .as_ref()
        .and_then(|t| t.keys.get(field).cloned())
        .unwrap_or_else(|| field.to_string())
}

fn credential_secret_link(app: &Application, f: &Fetched<SecretShape>) -> Link {
    let ns = app.namespace().unwrap_or_default();
    let details = match f.object() {
        Some(s) => {
            let missing: Vec<String> = ["client_id", "client_secret", "token_url"]
                .iter()
                .map(|k| key_name(app, k))
                .filter(|k| !s.keys.contains(k))
                .collect();
            let mut d = vec![if s.owned {
                "owned by the Application"
            } else {
                "NOT owned by the Application"
            }
            .to_string()];
            d.push(if missing.is_empty() {
                "client_id, client_secret and token_url present".to_string()
            } else {
                format!("keys missing: {}", missing.join(", "))
            });
            d
        }
        None => vec![],
    };
    Link {
        kind: "Secret".into(),
        name: format!("{ns}/{}", credential_secret_name(app)),
        role: Some("the credentials".into()),
        note: note_of(f),
        ready: None,
        throttled: None,
        details,
    }
}

/// Reasons that only pass on a problem further up the chain.
const CONSEQUENCES: &[&str] = &[
    "ProviderNotReady",
    "StrategyNotReady",
    "ProviderNotFound",
    "StrategyNotFound",
    "SecretNotFound",
    "SecretKeyNotFound",
];

/// The problems of one link; with `upstream_broken`, those that merely follow from an
/// earlier link's problem are left out (the chain lines still show them).
fn link_problems(link: &Link, ns: &str, input: &ExplainInput, upstream_broken: bool) -> Vec<Problem> {
    let mut out = Vec::new();
    if upstream_broken && link.role.as_deref() == Some("the credentials") && link.note.is_some() {
        return out;
    }
    let what = match &link.role {
        Some(role) => format!("{} {} ({role})", link.kind, link.name),
        None => format!("{} {}", link.kind, link.name),
    };
    if let Some(note) = &link.note {
        if note.starts_with("not readable") {
            return out;
        }
        let to_do = match (link.kind.as_str(), link.role.as_deref(), note.as_str()) {
            ("AuthStrategy", _, "not found") => advice::for_reason("StrategyNotFound"),
            ("DcrProvider", _, "not found") => advice::for_reason("ProviderNotFound"),
            ("Secret", Some("the admin client's secret"), "not found") => advice::for_reason("SecretNotFound"),
            ("Secret", _, "not found") => "Nothing if the Application is progressing: the operator writes it (a deleted Secret gets a new secret). Otherwise see the Application's reason.",
            _ => advice::for_reason("InvalidSpec"),
        };
        out.push(Problem {
            what: format!("{what} is {note}."),
            to_do: to_do.into(),
        });
        return out;
    }
    for d in &link.details {
        if d.starts_with("key ") && d.ends_with(" missing") {
            out.push(Problem {
                what: format!("{what}: {d}."),
                to_do: advice::for_reason("SecretKeyNotFound").into(),
            });
        }
        if d == "NOT owned by the Application" {
            out.push(Problem {
                what: format!("{what} is not owned by the Application."),
                to_do: advice::for_reason("SecretConflict").into(),
            });
        }
    }
    if link.kind == "Secret" {
        return out;
    }
    match &link.ready {
        None => out.push(Problem {
            what: format!("{what} has no Ready condition yet."),
            to_do:
                "Check that the operator runs (its log, its Deployment); it sets one at the first reconcile."
                    .into(),
        }),
        Some(c) if upstream_broken && CONSEQUENCES.contains(&c.reason.as_str()) => {}
        Some(c) if !model::is_ready(Some(c)) => {
            let mut text = format!("{what} is not Ready: {} {}", c.reason, one_line(&c.message));
            if c.reason == "NamespaceNotAllowed" {
                text.push_str(&format!(
                    " (namespace {ns}; the strategy {})",
                    strategy_admits(input)
                ));
            }
            if !c.current {
                text.push_str(" (not yet reconciled since the last change)");
            }
            out.push(Problem {
                what: text,
                to_do: advice::for_reason(&c.reason).into(),
            });
        }
        Some(_) => {}
    }
    out
}

fn strategy_admits(input: &ExplainInput) -> String {
    strategy_link("", &input.strategy)
        .details
        .first()
        .cloned()
        .unwrap_or_else(|| "could not be read".into())
}

/// The report as text (pure).
pub fn render_text(report: &ExplainReport, palette: Palette) -> String {
    let mut out = String::new();
    for link in &report.chain {
        let role = link.role.as_ref().map(|r| format!(" ({r})")).unwrap_or_default();
        let state = match (&link.note, &link.ready) {
            (Some(n), _) => palette.bad(n),
            (None, Some(c)) if model::is_ready(Some(c)) => palette.good("Ready"),
            (None, Some(c)) => palette.bad(&format!("{} {}: {}", c.status, c.reason, one_line(&c.message))),
            (None, None) if link.kind == "Secret" => "present".to_string(),
            (None, None) => palette.warn("no Ready condition yet"),
        };
        let throttled = link
            .throttled
            .as_ref()
            .map(|t| format!(", {}", palette.warn(&format!("throttled ({})", t.reason))))
            .unwrap_or_default();
        out.push_str(&format!(
            "{} {}{role}: {state}{throttled}\n",
            link.kind, link.name
        ));
        for d in &link.details {
            out.push_str(&format!("    {d}\n"));
        }
    }
    out.push('\n');
    if report.problems.is_empty() {
        if report.ready {
            out.push_str(&format!(
                "{}\n",
                palette.good("Nothing is wrong: the Application is Ready.")
            ));
        } else {
            out.push_str(
                "No broken link found; the Application is not Ready yet: see its condition and Events.\n",
            );
        }
    } else {
        out.push_str("What is wrong (root cause first; the links after it fail because of it):\n");
        for (i, p) in report.problems.iter().enumerate() {
            out.push_str(&format!("  {}. {}\n     To do: {}\n", i + 1, p.what, p.to_do));
        }
    }
    if !report.idp_error_codes.is_empty() {
        out.push_str(&format!(
            "IdP error codes: {}\n",
            report.idp_error_codes.join(", ")
        ));
    }
    out.push_str("\nRecent Events:\n");
    if report.events.is_empty() {
        out.push_str("  none\n");
    }
    for e in &report.events {
        let type_ = if e.type_ == "Warning" {
            palette.warn(&e.type_)
        } else {
            e.type_.clone()
        };
        let count = if e.count > 1 {
            format!(" x{}", e.count)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  {} {type_} {} {}{count}: {}\n",
            e.last_seen, e.reason, e.object, e.note
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app() -> Application {
        serde_json::from_value(json!({
            "apiVersion": "dcr-operator.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "web", "namespace": "orders", "generation": 1, "uid": "u1"},
            "spec": {"authStrategyRef": {"name": "cc"}, "secret": {"template": {"keys": {"client_secret": "CLIENT_SECRET"}}}},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "StrategyNotReady",
                "message": "AuthStrategy cc is not Ready (ProviderNotReady)", "lastTransitionTime": "2026-12-01T00:00:00Z", "observedGeneration": 1}]}
        }))
        .unwrap()
    }

    fn strategy() -> AuthStrategy {
        serde_json::from_value(json!({
            "apiVersion": "dcr-operator.io/v1alpha1", "kind": "AuthStrategy",
            "metadata": {"name": "cc", "generation": 1},
            "spec": {"providerRef": {"name": "entra"}, "displayName": "s", "openIDConnect": {"scopes": ["api://x/.default"]},
                     "allowedNamespaces": {"names": ["orders"]}},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "ProviderNotReady",
                "message": "DcrProvider entra is not Ready", "lastTransitionTime": "2026-12-01T00:00:00Z", "observedGeneration": 1}]}
        }))
        .unwrap()
    }

    fn provider() -> DcrProvider {
        serde_json::from_value(json!({
            "apiVersion": "dcr-operator.io/v1alpha1", "kind": "DcrProvider",
            "metadata": {"name": "entra", "generation": 1},
            "spec": {"type": "AzureAD", "issuer": "https://sts.windows.net/t/",
                     "azureAD": {"tenantId": "8a4b7e9c-2f5d-4c1e-9b3a-6d2e1f0c7a58"},
                     "initialClient": {"clientId": "3f2c9d1e-7a6b-4e58-9c0d-1b2a3c4d5e6f",
                                       "clientSecretRef": {"namespace": "dcr-system", "name": "admin"}}},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "InvalidClientSecret",
                "message": "the token endpoint refused the admin client's secret: AADSTS7000215 invalid_client",
                "lastTransitionTime": "2026-12-01T00:00:00Z", "observedGeneration": 1}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_broken_provider_is_the_root_cause() {
        let input = ExplainInput {
            application: app(),
            strategy: Fetched::Object(strategy()),
            provider: Some(Fetched::Object(provider())),
            admin_secret: Some(Fetched::Object(SecretShape {
                keys: vec!["client_secret".into()],
                owned: false,
            })),
            credential_secret: Fetched::Missing,
            events: vec![],
        };
        let report = diagnose(&input, "2026-12-02T00:00:00Z".parse().unwrap());
        assert!(!report.ready);
        assert_eq!(report.idp_error_codes, vec!["AADSTS7000215"]);
        let expected = "\
Application orders/web: False StrategyNotReady: AuthStrategy cc is not Ready (ProviderNotReady)
AuthStrategy cc: False ProviderNotReady: DcrProvider entra is not Ready
    admits names orders
DcrProvider entra: False InvalidClientSecret: the token endpoint refused the admin client's secret: AADSTS7000215 invalid_client
    orphaned applications 0
Secret dcr-system/admin (the admin client's secret): present
    key client_secret present
Secret orders/web-credentials (the credentials): not found

What is wrong (root cause first; the links after it fail because of it):
  1. DcrProvider entra is not Ready: InvalidClientSecret the token endpoint refused the admin client's secret: AADSTS7000215 invalid_client
     To do: Put a valid (unexpired) admin client secret into the Secret that spec.initialClient.clientSecretRef names.
IdP error codes: AADSTS7000215

Recent Events:
  none
";
        assert_eq!(render_text(&report, Palette::default()), expected);
    }

    #[test]
    fn renamed_keys_are_looked_up_under_their_new_names() {
        let a = app();
        assert_eq!(key_name(&a, "client_secret"), "CLIENT_SECRET");
        assert_eq!(key_name(&a, "client_id"), "client_id");
        let shape = SecretShape {
            keys: vec!["client_id".into(), "CLIENT_SECRET".into(), "token_url".into()],
            owned: true,
        };
        let link = credential_secret_link(&a, &Fetched::Object(shape));
        assert_eq!(
            link.details,
            vec![
                "owned by the Application",
                "client_id, client_secret and token_url present"
            ]
        );
    }
}
