//! A consumer of a credential Secret: re-reads it and obtains a token with its
//! `client_id`/`client_secret` over and over until stopped, and says how each attempt went.
//! It uses the v1 token endpoint (`token_url_v1` from the Secret), so its requests
//! (`token.v1` in the emulator's request log) are never confused with the operator's own
//! proofs (`token.v2`), e.g. by a hold on the operator's token requests.
//!
//! A failed attempt is classified by reading the Secret again: the Secret still holding
//! the value and recording its key as proven (`verifiedAt`) is the failure the operator
//! promises never happens; a value not proven yet (a secret issued without staging, still
//! activating) or no longer in the Secret (superseded while the request was on its way)
//! are counted apart, for the test to judge.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use serde_json::Value;

use super::scenario::secret_data;

const CREDENTIAL_ANNOTATION: &str = "dcr-operator.io/credential";
/// How often a consumer re-reads its Secret: pacing, not synchronisation.
const PACE: Duration = Duration::from_millis(100);

/// What the prover saw.
#[derive(Clone, Debug, Default)]
pub struct ProverReport {
    /// Tokens obtained.
    pub ok: u32,
    /// Reads of a Secret whose live key was not proven yet.
    pub unproven_reads: u32,
    /// Failures with a value the Secret still held and recorded as proven: never allowed.
    pub failed_proven: Vec<String>,
    /// Failures with a value the Secret still held but had not proven yet.
    pub failed_unproven: Vec<String>,
    /// Failures with a value the Secret no longer held once the request came back.
    pub failed_superseded: Vec<String>,
    /// The Secret could not be read, or the token endpoint not reached.
    pub errors: Vec<String>,
}

impl ProverReport {
    /// Every failure, whatever its kind.
    pub fn failures(&self) -> usize {
        self.failed_proven.len()
            + self.failed_unproven.len()
            + self.failed_superseded.len()
            + self.errors.len()
    }
}

/// A running prover; [`Prover::stop`] ends it and returns the report.
pub struct Prover {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<ProverReport>>,
    task: tokio::task::JoinHandle<()>,
}

/// One read of the Secret: the credentials and whether the live key is recorded proven.
struct Read {
    client_id: String,
    client_secret: String,
    token_url_v1: String,
    key_id: String,
    proven: bool,
}

async fn read(secrets: &Api<Secret>, name: &str) -> Result<Read, String> {
    let secret = secrets
        .get(name)
        .await
        .map_err(|e| format!("reading Secret {name}: {e}"))?;
    let data = secret_data(&secret);
    let record: Value = secret
        .annotations()
        .get(CREDENTIAL_ANNOTATION)
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or(Value::Null);
    let field = |k: &str| data.get(k).cloned().ok_or(format!("Secret {name} lacks {k}"));
    Ok(Read {
        client_id: field("client_id")?,
        client_secret: field("client_secret")?,
        token_url_v1: field("token_url_v1")?,
        key_id: record["keyId"].as_str().unwrap_or_default().to_string(),
        proven: record["verifiedAt"].is_string(),
    })
}

/// A v1 client-credentials token request; Err carries the status and error description.
async fn token(http: &reqwest::Client, r: &Read) -> Result<Result<(), String>, String> {
    let resp = http
        .post(&r.token_url_v1)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", r.client_id.as_str()),
            ("client_secret", r.client_secret.as_str()),
            ("resource", "https://graph.microsoft.com"),
        ])
        .send()
        .await
        .map_err(|e| format!("token request: {e}"))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(Ok(()));
    }
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    Ok(Err(format!("{status}: {}", body["error_description"])))
}

impl Prover {
    /// Starts proving the Secret `name` with `http` (a client trusting the emulator).
    pub fn start(secrets: Api<Secret>, name: &str, http: reqwest::Client) -> Prover {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(ProverReport::default()));
        let (stop2, report2, name) = (stop.clone(), report.clone(), name.to_string());
        let task = tokio::spawn(async move {
            while !stop2.load(Ordering::SeqCst) {
                let outcome = match read(&secrets, &name).await {
                    Ok(r) => {
                        if !r.proven {
                            report2.lock().unwrap().unproven_reads += 1;
                        }
                        match token(&http, &r).await {
                            Ok(Ok(())) => Ok(None),
                            Ok(Err(why)) => {
                                let again = read(&secrets, &name).await;
                                let what = format!("key {} ({why})", r.key_id);
                                Ok(Some(match again {
                                    Ok(a) if a.client_secret != r.client_secret => (2, what),
                                    _ if r.proven => (0, what),
                                    _ => (1, what),
                                }))
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                {
                    let mut rep = report2.lock().unwrap();
                    match outcome {
                        Ok(None) => rep.ok += 1,
                        Ok(Some((0, what))) => rep.failed_proven.push(what),
                        Ok(Some((1, what))) => rep.failed_unproven.push(what),
                        Ok(Some((_, what))) => rep.failed_superseded.push(what),
                        Err(e) => rep.errors.push(e),
                    }
                }
                tokio::time::sleep(PACE).await;
            }
        });
        Prover { stop, report, task }
    }

    /// What was seen so far.
    pub fn report(&self) -> ProverReport {
        self.report.lock().unwrap().clone()
    }

    /// Stops proving (after the attempt under way) and returns the report.
    pub async fn stop(self) -> ProverReport {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the prover task");
        let report = self.report.lock().unwrap().clone();
        report
    }
}
