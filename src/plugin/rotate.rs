//! `kubectl dcr rotate NAME` and `kubectl dcr revoke-all NAME --reason TEXT`: set the
//! annotation the operator acts on, then (`--wait`) follow the Application until the
//! request is served or fails.
//!
//! A request is served once per annotation value: `rotate` uses the current Unix time
//! (like `date +%s` in the README), `revoke-all` the reason. The operator records the value
//! it served in `status.lastRotateRequest` / `status.lastRevokeAllRequest`.

use super::cli::WaitArgs;
use super::client::Target;
use super::error::{is_not_found, Error, EXIT_NOT_OK, EXIT_OK, EXIT_TIMEOUT};
use super::model::{self, Palette};
use super::status::one_line;
use crate::controller::application::{REVOKE_ALL_ANNOTATION, ROTATE_ANNOTATION};
use crate::crd::Application;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// The operator refuses longer values (README "Rotation"); refused here before sending.
const MAX_VALUE: usize = 253;
/// How often `--wait` reads the Application.
const POLL: Duration = Duration::from_millis(500);
/// Ready reasons that mean "still working on it", not "failed".
const TRANSIENT: &[&str] = &["Progressing", "Throttled", "Unreachable"];

/// Which request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestKind {
    Rotate,
    RevokeAll,
}

impl RequestKind {
    fn annotation(self) -> &'static str {
        match self {
            RequestKind::Rotate => ROTATE_ANNOTATION,
            RequestKind::RevokeAll => REVOKE_ALL_ANNOTATION,
        }
    }

    fn served(self, app: &Application) -> Option<&str> {
        let status = app.status.as_ref()?;
        match self {
            RequestKind::Rotate => status.last_rotate_request.as_deref(),
            RequestKind::RevokeAll => status.last_revoke_all_request.as_deref(),
        }
    }
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "result")]
pub enum Outcome {
    /// Annotated; not waited for.
    Requested,
    /// Served: `key_id` is the live secret.
    Completed { key_id: String },
    /// The Application went not Ready for a reason retrying alone does not fix.
    Failed { reason: String, message: String },
    /// `--timeout` passed; the last Ready state seen.
    TimedOut { waited_seconds: u64, last_state: String },
}

/// The answer of `rotate` / `revoke-all`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestReport {
    pub application: String,
    pub request: RequestKind,
    pub annotation: String,
    pub value: String,
    /// The live secret's key id when the request was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_key_id: Option<String>,
    pub outcome: Outcome,
}

impl RequestReport {
    pub fn exit_code(&self) -> u8 {
        match self.outcome {
            Outcome::Requested | Outcome::Completed { .. } => EXIT_OK,
            Outcome::Failed { .. } => EXIT_NOT_OK,
            Outcome::TimedOut { .. } => EXIT_TIMEOUT,
        }
    }
}

/// The annotation value for a request (pure): `rotate` takes the time (made unique against
/// the current value), `revoke-all` the reason, which must be new.
pub fn request_value(
    kind: RequestKind,
    app: &Application,
    reason: Option<&str>,
    now: Timestamp,
) -> Result<String, Error> {
    let current = app.annotations().get(kind.annotation()).map(String::as_str);
    let value = match (kind, reason) {
        (RequestKind::RevokeAll, Some(reason)) => {
            let reason = reason.trim();
            if reason.is_empty() {
                return Err(Error::Usage("--reason must not be empty".into()));
            }
            if kind.served(app) == Some(reason) {
                return Err(Error::Usage(format!(
                    "revoke-all {reason:?} was served already: a request is served once per value; give a new --reason"
                )));
            }
            reason.to_string()
        }
        _ => {
            let secs = now.as_second().to_string();
            if current == Some(secs.as_str()) {
                format!("{secs}.{:03}", now.subsec_millisecond())
            } else {
                secs
            }
        }
    };
    if value.chars().count() > MAX_VALUE {
        return Err(Error::Usage(format!(
            "the request value is longer than {MAX_VALUE} characters"
        )));
    }
    Ok(value)
}

/// Where a request stands on `app` (pure): `None` while it is under way.
pub fn progress(
    kind: RequestKind,
    app: &Application,
    value: &str,
    previous_key: Option<&str>,
) -> Option<Outcome> {
    let status = app.status.as_ref()?;
    let ready = model::condition(&status.conditions, "Ready", app.metadata.generation);
    if let Some(c) = ready
        .as_ref()
        .filter(|c| c.status == "False" && !TRANSIENT.contains(&c.reason.as_str()))
    {
        return Some(Outcome::Failed {
            reason: c.reason.clone(),
            message: one_line(&c.message),
        });
    }
    let key = status.credential.as_ref().map(|c| c.key_id.as_str());
    let done = kind.served(app) == Some(value)
        && status.pending_credential.is_none()
        && model::is_ready(ready.as_ref())
        && key.is_some()
        && (kind == RequestKind::RevokeAll || key != previous_key);
    done.then(|| Outcome::Completed {
        key_id: model::bounded(key.unwrap_or_default(), 64),
    })
}

/// Annotates Application `name` and, with `--wait`, follows it.
pub async fn run(
    target: &Target,
    kind: RequestKind,
    name: &str,
    reason: Option<&str>,
    wait: WaitArgs,
) -> Result<RequestReport, Error> {
    let api: Api<Application> = Api::namespaced(target.client.clone(), &target.namespace);
    let what = format!("{}/{name}", target.namespace);
    let app = match api.get(name).await {
        Ok(a) => a,
        Err(e) if is_not_found(&e) => {
            return Err(Error::NotFound {
                kind: "Application",
                name: what,
            })
        }
        Err(e) => return Err(Error::api(format!("reading Application {what}"), e)),
    };
    let value = request_value(kind, &app, reason, Timestamp::now())?;
    let previous_key_id = app
        .status
        .as_ref()
        .and_then(|s| s.credential.as_ref())
        .map(|c| c.key_id.clone());
    let patch = serde_json::json!({"metadata": {"annotations": {kind.annotation(): value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::api(format!("annotating Application {what}"), e))?;
    let outcome = if wait.wait {
        follow(&api, kind, name, &value, previous_key_id.as_deref(), wait.timeout).await?
    } else {
        Outcome::Requested
    };
    Ok(RequestReport {
        application: what,
        request: kind,
        annotation: kind.annotation().to_string(),
        value,
        previous_key_id: previous_key_id.map(|k| model::bounded(&k, 64)),
        outcome,
    })
}

async fn follow(
    api: &Api<Application>,
    kind: RequestKind,
    name: &str,
    value: &str,
    previous: Option<&str>,
    timeout: Duration,
) -> Result<Outcome, Error> {
    let start = Instant::now();
    let mut last_state;
    loop {
        match api.get(name).await {
            Ok(app) => {
                if let Some(outcome) = progress(kind, &app, value, previous) {
                    return Ok(outcome);
                }
                last_state = ready_text(&app);
            }
            Err(e) if is_not_found(&e) => {
                return Ok(Outcome::Failed {
                    reason: "Deleted".into(),
                    message: "the Application was deleted".into(),
                })
            }
            // A blip of the apiserver is waited out like any other delay.
            Err(e) => last_state = format!("apiserver: {e}"),
        }
        if start.elapsed() + POLL > timeout {
            return Ok(Outcome::TimedOut {
                waited_seconds: start.elapsed().as_secs(),
                last_state,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

fn ready_text(app: &Application) -> String {
    let status = app.status.clone().unwrap_or_default();
    match model::condition(&status.conditions, "Ready", app.metadata.generation) {
        Some(c) => format!("Ready={} {}: {}", c.status, c.reason, one_line(&c.message)),
        None => "no Ready condition".into(),
    }
}

/// The report as text (pure).
pub fn render_text(r: &RequestReport, palette: Palette) -> String {
    let what = match r.request {
        RequestKind::Rotate => "rotation",
        RequestKind::RevokeAll => "revoke-all",
    };
    let mut out = format!(
        "Application {}: {what} requested ({}={})\n",
        r.application, r.annotation, r.value
    );
    match &r.outcome {
        Outcome::Requested => out.push_str("Not waiting: add --wait to follow it.\n"),
        Outcome::Completed { key_id } => {
            let was = r
                .previous_key_id
                .as_deref()
                .map(|k| format!(" (was {k})"))
                .unwrap_or_default();
            let done = match r.request {
                RequestKind::Rotate => format!("rotated: secret {key_id} is live{was}"),
                RequestKind::RevokeAll => format!("revoked all: secret {key_id} is the only one left"),
            };
            out.push_str(&palette.good(&done));
            out.push('\n');
        }
        Outcome::Failed { reason, message } => {
            out.push_str(&palette.bad(&format!("failed: {reason}: {message}")));
            out.push('\n');
        }
        Outcome::TimedOut {
            waited_seconds,
            last_state,
        } => {
            out.push_str(&palette.warn(&format!(
                "not done after {waited_seconds}s; last seen {last_state}"
            )));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(status: serde_json::Value, annotations: serde_json::Value) -> Application {
        serde_json::from_value(json!({
            "apiVersion": "dcr-operator.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "web", "namespace": "orders", "generation": 1, "annotations": annotations},
            "spec": {"authStrategyRef": {"name": "cc"}},
            "status": status
        }))
        .unwrap()
    }

    fn ready(status: &str, reason: &str) -> serde_json::Value {
        json!([{"type": "Ready", "status": status, "reason": reason, "message": "m",
                "lastTransitionTime": "2026-12-01T00:00:00Z", "observedGeneration": 1}])
    }

    fn credential(key: &str) -> serde_json::Value {
        json!({"keyId": key, "issuedAt": "2026-12-01T00:00:00Z", "expiresAt": "2027-01-01T00:00:00Z", "renewAt": "2026-12-20T00:00:00Z"})
    }

    #[test]
    fn a_rotation_completes_when_the_new_key_is_live() {
        let staged = app(
            json!({"conditions": ready("True", "Ready"), "credential": credential("old"),
            "pendingCredential": {"keyId": "new", "issuedAt": "2026-12-01T00:00:00Z"}, "lastRotateRequest": "100"}),
            json!({}),
        );
        assert_eq!(progress(RequestKind::Rotate, &staged, "100", Some("old")), None);
        let before = app(
            json!({"conditions": ready("True", "Ready"), "credential": credential("old")}),
            json!({}),
        );
        assert_eq!(progress(RequestKind::Rotate, &before, "100", Some("old")), None);
        let done = app(
            json!({"conditions": ready("True", "Ready"), "credential": credential("new"), "lastRotateRequest": "100"}),
            json!({}),
        );
        assert_eq!(
            progress(RequestKind::Rotate, &done, "100", Some("old")),
            Some(Outcome::Completed { key_id: "new".into() })
        );
    }

    #[test]
    fn a_lasting_failure_ends_the_wait_and_a_transient_one_does_not() {
        let failed = app(json!({"conditions": ready("False", "InvalidSpec")}), json!({}));
        assert!(matches!(
            progress(RequestKind::Rotate, &failed, "1", None),
            Some(Outcome::Failed { .. })
        ));
        let throttled = app(json!({"conditions": ready("False", "Throttled")}), json!({}));
        assert_eq!(progress(RequestKind::Rotate, &throttled, "1", None), None);
    }

    #[test]
    fn request_values_are_new_and_bounded() {
        let now: Timestamp = "2026-12-02T00:00:00.250Z".parse().unwrap();
        let secs = now.as_second().to_string();
        let a = app(
            json!({"lastRevokeAllRequest": "INC-1"}),
            json!({ROTATE_ANNOTATION: secs}),
        );
        assert_eq!(
            request_value(RequestKind::Rotate, &a, None, now).unwrap(),
            format!("{secs}.250")
        );
        assert!(request_value(RequestKind::RevokeAll, &a, Some("INC-1"), now).is_err());
        assert!(request_value(RequestKind::RevokeAll, &a, Some("  "), now).is_err());
        assert!(request_value(RequestKind::RevokeAll, &a, Some(&"x".repeat(254)), now).is_err());
        assert_eq!(
            request_value(RequestKind::RevokeAll, &a, Some("INC-2"), now).unwrap(),
            "INC-2"
        );
    }
}
