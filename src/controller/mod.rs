//! The controllers: one per kind, sharing one [`Context`].
//!
//! ```text
//!   Secret (admin) --> DcrProvider --> AuthStrategy --> Application --> Secret (credentials)
//! ```
//! Each arrow is a watch: a change on the left re-queues the objects on the right that
//! refer to it. `run` wires them, serves health and metrics, and stops on SIGTERM/SIGINT.

pub mod application;
pub mod context;
pub mod error;
pub mod events;
pub mod health;
pub mod provider;
pub mod providers;
mod read;
pub mod record_key;
pub mod status;
pub mod strategy;
pub mod undecodable;

pub use context::{Context, Settings};
pub use error::Error;

use crate::config::RunConfig;
use crate::crd::decoded::Decoded;
use crate::crd::{Application, AuthStrategy, DcrProvider};
use crate::metrics::Metrics;
use futures::{future, Stream, StreamExt};
use health::{Health, WatchProbe};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Longest wait between attempts for an object that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot build a Kubernetes client: {0}")]
    Client(String),
    #[error("cannot read --extra-ca-file {path}: {source}")]
    ExtraCa { path: String, source: std::io::Error },
    #[error("cannot serve on {addr}: {source}")]
    Serve {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The providers whose admin Secret `secret` is.
fn admin_secret_users(
    providers: &kube::runtime::reflector::Store<Decoded<DcrProvider>>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<Decoded<DcrProvider>>> {
    let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
    providers
        .state()
        .into_iter()
        .filter(|p| {
            p.ok()
                .and_then(|p| p.admin_secret_ref())
                .is_some_and(|r| r.namespace == ns && r.name == name)
        })
        .map(|p| ObjectRef::from_obj(&*p))
        .collect()
}

/// Runs every controller until a shutdown signal.
pub async fn run(config: RunConfig) -> Result<(), RunError> {
    let client = kube_client(&config).await?;
    let extra_ca = match &config.extra_ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|source| RunError::ExtraCa {
            path: path.display().to_string(),
            source,
        })?),
        None => None,
    };
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health::new(config.unhealthy_after);
    let servers = serve(&config, metrics.clone(), ready.clone(), health.clone()).await?;
    tracing::info!(cluster = %config.cluster_name, namespaces = ?config.namespaces, "dcr-operator starting");
    // Every replica needs the key before it may lead: a standby must be able to take over.
    let operator_namespace = config.operator_namespace();
    let record_key = tokio::select! {
        key = record_key::load(client.clone(), &operator_namespace, &config.record_key_secret) => key,
        _ = crate::leader::shutdown_signal() => {
            servers.abort();
            tracing::info!("dcr-operator stopped");
            return Ok(());
        }
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        config.instance.clone(),
        metrics,
        Settings::from(&config),
        extra_ca,
        record_key,
    ));

    // With --leader-elect the controllers start only once this instance holds the Lease; a
    // standby serves health and metrics and is ready meanwhile.
    let elector = config
        .leader_elect
        .then(|| crate::leader::Elector::new(client.clone(), crate::leader::Settings::from_config(&config)));
    let leadership = match &elector {
        None => None,
        Some(elector) => {
            ready.store(true, Ordering::SeqCst);
            tokio::select! {
                acquired = elector.acquire() => Some((elector, acquired)),
                _ = crate::leader::shutdown_signal() => {
                    servers.abort();
                    tracing::info!("dcr-operator stopped");
                    return Ok(());
                }
            }
        }
    };

    let concurrency = controller::Config::default().concurrency(config.concurrency);

    // DcrProvider, re-run when its admin Secret changes. Admin Secrets may only be in the
    // --provider-secret-namespaces, so only those are watched, as metadata: the data of
    // other Secrets there is never sent to the operator; the admin Secret itself is read
    // when a provider is reconciled.
    // Every watch decodes into `Decoded`: an object the types refuse is reported on itself
    // and never fails the list of its kind.
    // Every watch reports to `health` (see `watched`).
    let (provider_store, writer) = reflector::store();
    let providers = Controller::for_stream(
        watched(
            Api::<Decoded<DcrProvider>>::all(client.clone()),
            watcher::Config::default(),
            health.probe("provider/DcrProvider"),
        )
        .reflect(writer)
        .applied_objects(),
        provider_store.clone(),
    );
    // `Api<PartialObjectMeta<_>>` lists and watches with metadata-only requests.
    let providers = config
        .provider_secret_namespaces()
        .into_iter()
        .fold(providers, |providers, namespace| {
            let store = provider_store.clone();
            providers.watches_stream(
                watched(
                    Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), &namespace),
                    watcher::Config::default(),
                    health.probe(format!("provider/Secret/{namespace}")),
                )
                .touched_objects(),
                move |secret: PartialObjectMeta<Secret>| admin_secret_users(&store, &secret),
            )
        })
        .with_config(concurrency.clone())
        .shutdown_on_signal()
        .run(
            instrumented(provider::KIND, provider::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(log_controller_error);
    let providers = until_end(providers, health.probe("provider"));

    // AuthStrategy, re-run when its provider changes.
    let (strategy_store, writer) = reflector::store();
    let strategies = Controller::for_stream(
        watched(
            Api::<Decoded<AuthStrategy>>::all(client.clone()),
            watcher::Config::default(),
            health.probe("strategy/AuthStrategy"),
        )
        .reflect(writer)
        .applied_objects(),
        strategy_store.clone(),
    );
    let strategies = strategies
        .watches_stream(
            watched(
                Api::<Decoded<DcrProvider>>::all(client.clone()),
                watcher::Config::default(),
                health.probe("strategy/DcrProvider"),
            )
            .touched_objects(),
            move |p: Decoded<DcrProvider>| {
                let name = p.name_any();
                strategy_store
                    .state()
                    .into_iter()
                    .filter(|s| s.ok().is_some_and(|s| s.spec.provider_ref.name == name))
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
            },
        )
        .with_config(concurrency.clone())
        .shutdown_on_signal()
        .run(
            instrumented(strategy::KIND, strategy::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(log_controller_error);
    let strategies = until_end(strategies, health.probe("strategy"));

    // Applications (all namespaces, or one controller per listed namespace), re-run when
    // their strategy or their Secret changes.
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let applications = future::join_all(scopes.into_iter().map(|scope| {
        let name = match &scope {
            None => "application".to_string(),
            Some(ns) => format!("application[{ns}]"),
        };
        let (apps, secrets) = match &scope {
            None => (
                Api::<Decoded<Application>>::all(client.clone()),
                Api::<PartialObjectMeta<Secret>>::all(client.clone()),
            ),
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
        };
        let owned = watcher::Config::default().labels(&format!(
            "{}={}",
            crate::secret::LABEL_MANAGED_BY,
            crate::secret::MANAGED_BY
        ));
        // The primary watch passes only changes in substance (spec, metadata a user or
        // the API server sets): the operator's own status writes do not trigger a pass.
        // Secret and strategy changes still do (below), and drift is caught by requeues.
        let (app_store, writer) = kube::runtime::reflector::store();
        let triggers = watched(
            apps,
            watcher::Config::default(),
            health.probe(format!("{name}/Application")),
        )
        .reflect(writer)
        .applied_objects()
        .predicate_filter(substance, Default::default());
        let apps = Controller::for_stream(triggers, app_store.clone());
        // Owned Secrets only as metadata: the owner reference is all a trigger needs.
        let owned = watched(secrets, owned, health.probe(format!("{name}/Secret"))).touched_objects();
        let strategies = watched(
            Api::<Decoded<AuthStrategy>>::all(client.clone()),
            watcher::Config::default(),
            health.probe(format!("{name}/AuthStrategy")),
        )
        .touched_objects();
        let controller = apps
            .owns_stream(owned)
            .watches_stream(strategies, move |s: Decoded<AuthStrategy>| {
                let name = s.name_any();
                app_store
                    .state()
                    .into_iter()
                    .filter(|a| a.ok().is_some_and(|a| a.spec.auth_strategy_ref.name == name))
                    .map(|a| ObjectRef::from_obj(&*a))
                    .collect::<Vec<_>>()
            })
            .with_config(concurrency.clone())
            .shutdown_on_signal()
            .run(
                instrumented(application::KIND, application::reconcile),
                error_policy,
                ctx.clone(),
            )
            .for_each(log_controller_error);
        until_end(controller, health.probe(name))
    }));

    ready.store(true, Ordering::SeqCst);
    // After SIGTERM in-flight reconciles may finish, for at most `grace`: kube-runtime 5.0's
    // graceful shutdown never ends for a controller whose cache had not filled yet (its
    // watch stops first), so the controllers are then dropped.
    let grace = Duration::from_secs(20);
    let controllers = async {
        tokio::select! {
            _ = async { tokio::join!(providers, strategies, applications) } => {}
            _ = async { crate::leader::shutdown_signal().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_secs = grace.as_secs(), "the controllers did not stop in time after the shutdown signal; stopping them")
            }
        }
    };
    match leadership {
        None => controllers.await,
        // `hold` renews the Lease, and exits the process when that fails; the Lease is
        // released only after the controllers have stopped.
        Some((elector, acquired)) => tokio::select! {
            _ = controllers => elector.release().await,
            lost = elector.hold(acquired) => match lost {},
        },
    }
    servers.abort();
    tracing::info!("dcr-operator stopped");
    Ok(())
}

/// A watch with the operator's backoff, reporting every event and error to `probe`, and
/// its end, which only a shutdown should bring.
fn watched<K>(
    api: Api<K>,
    config: watcher::Config,
    probe: WatchProbe,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let end = probe.clone();
    watcher(api, config)
        .backoff(health::watch_backoff())
        .inspect(move |item| probe.observe(item.is_ok()))
        .chain(futures::stream::poll_fn(move |_| {
            end.ended();
            std::task::Poll::Ready(None)
        }))
}

/// Runs a controller's stream to its end, which before a shutdown means it died: reported
/// to `probe`, so that `/healthz` fails.
async fn until_end(controller: impl Future<Output = ()>, probe: WatchProbe) {
    controller.await;
    probe.ended();
}

/// What a pass must react to: everything but status (and bookkeeping such as
/// resourceVersion and managedFields). A user's edit of status is not a trigger either; the
/// next requeue picks it up. An object that does not decode is judged by the same
/// metadata, so fixing its spec (a new generation) triggers a pass.
fn substance(app: &Decoded<Application>) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = app.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.annotations.hash(&mut h);
    meta.labels.hash(&mut h);
    meta.finalizers.hash(&mut h);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut h);
    Some(h.finish())
}

/// Logs what a controller stream reports besides reconcile results: watch failures, and
/// reconciles dropped because the object left the cache.
fn log_controller_error<K, E1, E2>(
    result: Result<(ObjectRef<K>, Action), controller::Error<E1, E2>>,
) -> future::Ready<()>
where
    K: Resource,
    E1: std::error::Error,
    E2: std::error::Error,
{
    match result {
        Ok(_) => {}
        // Reconcile failures are logged (with their category) by the error policy.
        Err(controller::Error::ReconcilerFailed(..)) => {}
        Err(e) => tracing::warn!(error = %e, "controller"),
    }
    future::ready(())
}

async fn kube_client(config: &RunConfig) -> Result<Client, RunError> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(path).map_err(|e| RunError::Client(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| RunError::Client(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| RunError::Client(e.to_string()))?,
    };
    Client::try_from(kube_config).map_err(|e| RunError::Client(e.to_string()))
}

type ReconcileFuture = std::pin::Pin<Box<dyn Future<Output = Result<Action, Error>> + Send>>;

/// Wraps a reconciler: reports an object that did not decode instead of reconciling it,
/// counts the result and resets the object's backoff on success.
fn instrumented<K, F, Fut>(
    kind: &'static str,
    reconcile: F,
) -> impl FnMut(Arc<Decoded<K>>, Arc<Context>) -> ReconcileFuture
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    move |obj, ctx| {
        let reconcile = reconcile.clone();
        Box::pin(async move {
            let key = object_key(kind, obj.as_ref());
            let result = match &obj.0 {
                Ok(decoded) => reconcile(Arc::new(decoded.clone()), ctx.clone()).await,
                Err(bad) => undecodable::report(obj.as_ref(), bad, &ctx).await,
            };
            if result.is_ok() {
                ctx.record_success(&key);
                ctx.metrics.reconciled(kind, Ok(()));
            }
            result
        })
    }
}

fn object_key<K: Resource>(kind: &str, obj: &K) -> String {
    format!(
        "{kind}/{}/{}",
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default()
    )
}

/// The one error policy: the provider's Retry-After when it gave one, else exponential
/// backoff per object (1 s doubling to 5 min); a Warning Event and a log line each time.
fn error_policy<K>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    let kind = K::kind(&()).to_string();
    let kind: &'static str = match kind.as_str() {
        "DcrProvider" => provider::KIND,
        "AuthStrategy" => strategy::KIND,
        _ => application::KIND,
    };
    let key = object_key(kind, obj.as_ref());
    let failures = ctx.record_failure(&key);
    ctx.metrics.reconciled(kind, Err(error.category()));
    let delay = requeue_delay(error.retry_after(), error.is_persistent(), failures);
    tracing::warn!(
        object = %key,
        category = error.category(),
        error = %error,
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed"
    );
    let note = error.to_string();
    let reason = error.category();
    tokio::spawn(async move {
        events::publish(&ctx, obj.as_ref(), EventType::Warning, reason, "Reconcile", note).await;
    });
    Action::requeue(delay)
}

/// When to retry after an error: the provider's Retry-After, else the backoff for its kind;
/// never later than [`MAX_BACKOFF`], whatever a server asked for (a day-long Retry-After
/// must not park an object for a day).
fn requeue_delay(retry_after: Option<Duration>, persistent: bool, failures: u32) -> Duration {
    let delay = retry_after.unwrap_or_else(|| {
        if persistent {
            persistent_backoff(failures)
        } else {
            backoff(failures)
        }
    });
    delay.min(MAX_BACKOFF)
}

/// 1 s, 2 s, 4 s ... capped at [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

/// For errors retrying will not fix by itself (a 403, a 400): 10 s, 20 s, 40 s ... capped at
/// [`MAX_BACKOFF`]; at most 3 passes in the first minute, then at most one a minute.
pub fn persistent_backoff(failures: u32) -> Duration {
    (backoff(failures) * 10).min(MAX_BACKOFF)
}

/// Serves `/metrics` and `/healthz` + `/readyz`; returns a handle to stop them.
///
/// `/healthz` fails (503, naming the watches) when a controller's watch has failed for
/// `--unhealthy-after` or a controller stream ended; a standby runs no controllers and is
/// healthy. `/readyz` says whether the instance has started (a standby is ready).
async fn serve(
    config: &RunConfig,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    health: Arc<Health>,
) -> Result<tokio::task::JoinHandle<()>, RunError> {
    use axum::{http::StatusCode, routing::get, Router};
    let metrics_app = Router::new().route("/metrics", get(move || future::ready(metrics.encode())));
    let health_app = Router::new()
        .route(
            "/healthz",
            get(move || {
                future::ready(match health.check(tokio::time::Instant::now()) {
                    Ok(()) => (StatusCode::OK, "ok".to_string()),
                    Err(problems) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("unhealthy\n{}\n", problems.join("\n")),
                    ),
                })
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let ok = ready.load(Ordering::SeqCst);
                future::ready(if ok {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                })
            }),
        );
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Serve { addr, source })
    };
    let metrics_listener = bind(config.metrics_addr).await?;
    let health_listener = bind(config.health_addr).await?;
    let local = |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(metrics = %local(&metrics_listener), health = %local(&health_listener), "serving metrics and health");
    Ok(tokio::spawn(async move {
        let a = axum::serve(metrics_listener, metrics_app);
        let b = axum::serve(health_listener, health_app);
        let _ = tokio::join!(a, b);
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn a_servers_retry_after_is_honoured_up_to_the_backoff_cap() {
        let secs = Duration::from_secs;
        assert_eq!(requeue_delay(Some(secs(7)), false, 1), secs(7));
        assert_eq!(requeue_delay(Some(secs(86_400)), false, 1), MAX_BACKOFF);
        assert_eq!(requeue_delay(None, false, 3), secs(4));
        assert_eq!(requeue_delay(None, true, 1), secs(10));
    }

    #[test]
    fn persistent_errors_back_off_from_ten_seconds() {
        assert_eq!(persistent_backoff(1), Duration::from_secs(10));
        assert_eq!(persistent_backoff(3), Duration::from_secs(40));
        assert_eq!(persistent_backoff(6), MAX_BACKOFF);
        assert_eq!(persistent_backoff(u32::MAX), MAX_BACKOFF);
        // Passes at 0, 10 and 30 s: three within the first minute.
        let first_minute = (1..)
            .scan(Duration::ZERO, |at, n| {
                *at += persistent_backoff(n);
                Some(*at)
            })
            .take_while(|at| *at < Duration::from_secs(60))
            .count();
        assert_eq!(first_minute + 1, 3);
    }

    #[test]
    fn own_status_writes_are_not_substance() {
        let mut app: Application = serde_json::from_value(serde_json::json!({
            "apiVersion": "dcr-operator.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "a", "namespace": "n", "generation": 1, "resourceVersion": "1"},
            "spec": {"authStrategyRef": {"name": "s"}}
        }))
        .unwrap();
        let before = substance(&Decoded(Ok(app.clone())));
        app.metadata.resource_version = Some("2".into());
        app.status = Some(Default::default());
        assert_eq!(substance(&Decoded(Ok(app.clone()))), before, "a status write");
        app.metadata.annotations = Some([("dcr-operator.io/rotate".to_string(), "1".to_string())].into());
        assert_ne!(substance(&Decoded(Ok(app.clone()))), before, "a rotation request");
        let annotated = substance(&Decoded(Ok(app.clone())));
        app.metadata.generation = Some(2);
        assert_ne!(substance(&Decoded(Ok(app.clone()))), annotated, "a spec change");
    }
}
