//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas (two
//! during a rolling update, say) only one reconciles. It follows client-go's leaderelection:
//!
//! - a candidate takes the Lease when it does not exist, has no holder, is held by this
//!   identity already, or has not changed for `leaseDurationSeconds` as this candidate
//!   observed it ([`decide`], [`Observation`]);
//! - every write is a create, or a replace carrying the `resourceVersion` that was read
//!   (optimistic concurrency): of two candidates racing for the Lease, the apiserver lets
//!   exactly one win and answers 409 to the other;
//! - the leader renews every retry period; when no renewal succeeded for the renew deadline
//!   (shorter than the lease duration, so before anybody else may take over) it stops
//!   reconciling the only safe way: the process exits with status 1, as controller-runtime
//!   does, and Kubernetes restarts it as a candidate;
//! - on graceful shutdown, once the controllers stopped, the leader releases the Lease (no
//!   holder) so that a standby takes over at its next retry instead of after expiry.
//!
//! Expiry is judged by locally observed time, as client-go does: a candidate notes on its
//! own monotonic clock when it last saw the Lease change (holder, times, resourceVersion),
//! and the Lease has expired when `leaseDurationSeconds` passed locally since then. The
//! `renewTime` written by another node's clock is never compared with this node's, so
//! clock skew between nodes cannot make a standby take over a live leader, nor delay the
//! takeover of a dead one.
//! The API calls need `get`, `create` and `update` on leases (config/rbac).
//!
//! Not a crate: kube-lease-manager (0.13, kube 5) judges expiry as `renewTime +
//! duration` against the local wall clock, the skew bug this module avoids;
//! kube-coordinate does not support kube 5.

use crate::config::RunConfig;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Namespace of the Lease when neither the flag nor `POD_NAMESPACE` names one.
pub const DEFAULT_NAMESPACE: &str = "dcr-system";

/// What a candidate does about the Lease it has just read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// There is no Lease: create it, held by us.
    Create,
    /// The Lease is free or expired: take it over.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Somebody else holds a live Lease: try again later.
    Wait { holder: String, expires_in: Duration },
}

/// Longest lease duration a Lease may claim (a bound on a hostile or broken value): a day.
const MAX_LEASE_DURATION_SECS: i32 = 86_400;

/// When this candidate last saw the Lease change, on its own monotonic clock.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    resource_version: Option<String>,
    spec: LeaseSpec,
    /// When the record above was first seen.
    pub seen_at: Instant,
}

impl Observation {
    /// The observation after reading `spec` (at `resource_version`) at `now`: the previous
    /// one if nothing changed, so that its `seen_at` keeps counting.
    pub fn update(
        previous: Option<Observation>,
        resource_version: Option<&str>,
        spec: &LeaseSpec,
        now: Instant,
    ) -> Observation {
        match previous {
            Some(p) if p.resource_version.as_deref() == resource_version && &p.spec == spec => p,
            _ => Observation {
                resource_version: resource_version.map(str::to_string),
                spec: spec.clone(),
                seen_at: now,
            },
        }
    }
}

/// The decision, from the Lease's spec (`None`: no Lease), when we first saw it as it is
/// (`seen_at`, local monotonic time), the local time now, and our identity.
pub fn decide(lease: Option<&LeaseSpec>, seen_at: Instant, now: Instant, me: &str) -> Action {
    let Some(spec) = lease else {
        return Action::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == me {
        return Action::Renew;
    }
    if holder.is_empty() {
        return Action::Acquire;
    }
    let secs = spec
        .lease_duration_seconds
        .unwrap_or(0)
        .clamp(0, MAX_LEASE_DURATION_SECS);
    let duration = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    let unchanged_for = now.saturating_duration_since(seen_at);
    match duration.checked_sub(unchanged_for) {
        Some(left) if !left.is_zero() => Action::Wait {
            holder: holder.to_string(),
            expires_in: left,
        },
        _ => Action::Acquire,
    }
}

/// The spec to write for `action` (not [`Action::Wait`]) over the current one.
pub fn next_spec(
    current: Option<&LeaseSpec>,
    action: &Action,
    now: Timestamp,
    me: &str,
    duration: Duration,
) -> LeaseSpec {
    let current = current.cloned().unwrap_or_default();
    let transitions = current.lease_transitions.unwrap_or(0);
    let (acquire_time, transitions) = match action {
        Action::Renew => (current.acquire_time.or(Some(MicroTime(now))), transitions),
        Action::Create => (Some(MicroTime(now)), 0),
        Action::Acquire | Action::Wait { .. } => (Some(MicroTime(now)), transitions.saturating_add(1)),
    };
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(duration.as_secs().clamp(1, i32::MAX as u64) as i32),
        acquire_time,
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..current
    }
}

/// The spec that gives the Lease up: no holder, expiring a second after `now`.
pub fn released_spec(current: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        ..current.clone()
    }
}

/// Where the Lease is, who we are, and the timing (see `dcr-operator run --help`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Settings {
    /// From the flags: the namespace defaults to `POD_NAMESPACE`, then [`DEFAULT_NAMESPACE`];
    /// the identity is the instance name (`POD_NAME`), else the host name with a random
    /// suffix.
    pub fn from_config(config: &RunConfig) -> Settings {
        let namespace = config.operator_namespace();
        let identity = config
            .instance
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .or_else(|| std::env::var("HOSTNAME").ok())
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "dcr-operator".into());
                format!("{host}_{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
            });
        Settings {
            namespace,
            lease_name: config.leader_election_lease_name.clone(),
            identity,
            lease_duration: config.leader_election_lease_duration,
            renew_deadline: config.leader_election_renew_deadline,
            retry_period: config.leader_election_retry_period,
        }
    }
}

/// A candidate for the Lease.
pub struct Elector {
    api: Api<Lease>,
    settings: Settings,
    /// The Lease as last read, and since when it looked so.
    observed: Mutex<Option<Observation>>,
}

/// The outcome of one attempt.
enum Attempt {
    /// We held the Lease and renewed it.
    Renewed,
    /// We created the Lease or took it over from nobody or an expired holder.
    Acquired,
    /// Somebody else holds it.
    Follower(String),
    /// Somebody wrote the Lease between our read and our write (409).
    Conflict,
}

impl Elector {
    pub fn new(client: Client, settings: Settings) -> Elector {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &str {
        &self.settings.identity
    }

    /// Returns once we hold the Lease, with the instant our hold was counted from.
    pub async fn acquire(&self) -> Instant {
        let s = &self.settings;
        tracing::info!(lease = %s.lease_name, namespace = %s.namespace, identity = %s.identity, "waiting to acquire the leader-election lease");
        let mut last_holder = String::new();
        loop {
            let started = Instant::now();
            match tokio::time::timeout(s.renew_deadline, self.attempt()).await {
                Ok(Ok(Attempt::Acquired | Attempt::Renewed)) => {
                    tracing::info!(lease = %s.lease_name, identity = %s.identity, "acquired leadership");
                    return started;
                }
                Ok(Ok(Attempt::Follower(holder))) if holder != last_holder => {
                    tracing::info!(holder = %holder, "the lease is held by another instance; standing by");
                    last_holder = holder;
                }
                Ok(Ok(Attempt::Follower(_))) => {}
                Ok(Ok(Attempt::Conflict)) => {
                    tracing::debug!("leader election: another candidate wrote the lease first")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election: cannot acquire the lease"),
                Err(_) => tracing::warn!("leader election: acquiring the lease timed out"),
            }
            tokio::time::sleep(s.retry_period).await;
        }
    }

    /// Renews the Lease every retry period. Never returns: when no renewal succeeded for
    /// the renew deadline, or somebody else holds (or held) the Lease meanwhile, the
    /// process exits with status 1.
    pub async fn hold(&self, acquired: Instant) -> Infallible {
        let s = &self.settings;
        let mut renewed = acquired;
        let reason = loop {
            tokio::time::sleep(s.retry_period).await;
            let started = Instant::now();
            let deadline = renewed + s.renew_deadline;
            if started >= deadline {
                // E.g. the process was paused: do not even try, others may have led since.
                break format!("no renewal succeeded within {:?}", s.renew_deadline);
            }
            match tokio::time::timeout_at(deadline, self.attempt()).await {
                Ok(Ok(Attempt::Renewed)) => {
                    renewed = started;
                    continue;
                }
                Ok(Ok(Attempt::Follower(holder))) => break format!("the lease is held by {holder}"),
                // Our Lease had expired or been released: somebody may have led in between.
                Ok(Ok(Attempt::Acquired)) => break "the lease had expired before it was renewed".into(),
                // Read again and decide at the next attempt.
                Ok(Ok(Attempt::Conflict)) => {
                    tracing::warn!("leader election: the lease changed while renewing it")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election: renewing the lease failed"),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                break format!("no renewal succeeded within {:?}", s.renew_deadline);
            }
        };
        tracing::error!(lease = %s.lease_name, identity = %s.identity, reason = %reason, "lost leadership; exiting so that no two instances reconcile");
        std::process::exit(1)
    }

    /// Gives the Lease up if we still hold it (after the controllers stopped).
    pub async fn release(&self) {
        let result = tokio::time::timeout(self.settings.renew_deadline, async {
            let Some(mut lease) = self.api.get_opt(&self.settings.lease_name).await? else {
                return Ok(false);
            };
            let spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.identity()) {
                return Ok(false);
            }
            lease.spec = Some(released_spec(&spec, Timestamp::now()));
            self.api
                .replace(&self.settings.lease_name, &PostParams::default(), &lease)
                .await
                .map(|_| true)
        })
        .await;
        match result {
            Ok(Ok(true)) => {
                tracing::info!(lease = %self.settings.lease_name, "released the leader-election lease")
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "leader election: cannot release the lease"),
            Err(_) => tracing::warn!("leader election: releasing the lease timed out"),
        }
    }

    /// Records the Lease as read at `now`; returns since when it has looked like this.
    fn observe(&self, lease: Option<&Lease>, spec: Option<&LeaseSpec>, now: Instant) -> Instant {
        // A poisoned lock only means a panic elsewhere mid-update; the value is still usable.
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        let Some(spec) = spec else {
            *observed = None;
            return now;
        };
        let rv = lease.and_then(|l| l.metadata.resource_version.as_deref());
        let next = Observation::update(observed.take(), rv, spec, now);
        let seen_at = next.seen_at;
        *observed = Some(next);
        seen_at
    }

    /// Reads the Lease and creates, takes or renews it when [`decide`] says so; a write
    /// another one beat (409) is a [`Attempt::Conflict`], and we do not hold the Lease.
    async fn attempt(&self) -> Result<Attempt, kube::Error> {
        let s = &self.settings;
        let current = self.api.get_opt(&s.lease_name).await?;
        let local_now = Instant::now();
        let empty = LeaseSpec::default();
        let spec = current.as_ref().map(|l| l.spec.as_ref().unwrap_or(&empty));
        let seen_at = self.observe(current.as_ref(), spec, local_now);
        let action = decide(spec, seen_at, local_now, &s.identity);
        // The written times are for people and tools; no candidate judges expiry by them.
        let next = next_spec(spec, &action, Timestamp::now(), &s.identity, s.lease_duration);
        let written = match (&action, current) {
            (Action::Wait { holder, .. }, _) => return Ok(Attempt::Follower(holder.clone())),
            (Action::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(s.lease_name.clone()),
                        namespace: Some(s.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(next),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (_, Some(mut lease)) => {
                // The resourceVersion read above stays in the metadata: the replace fails
                // with 409 if anybody wrote the Lease since.
                lease.spec = Some(next);
                self.api
                    .replace(&s.lease_name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(_) if action == Action::Renew => Ok(Attempt::Renewed),
            Ok(_) => Ok(Attempt::Acquired),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }
}

/// Resolves on SIGTERM or SIGINT (used while a standby waits for the Lease).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn held_by(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(duration),
            acquire_time: Some(MicroTime(at(renewed - 100))),
            renew_time: Some(MicroTime(at(renewed))),
            lease_transitions: Some(3),
            ..Default::default()
        }
    }

    /// Local monotonic time, `secs` after an origin.
    fn local(secs: u64) -> Instant {
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *ORIGIN.get_or_init(Instant::now) + Duration::from_secs(secs)
    }

    #[test]
    fn a_missing_lease_is_created() {
        assert_eq!(decide(None, local(0), local(0), "me"), Action::Create);
    }

    #[test]
    fn a_lease_without_holder_is_acquired() {
        assert_eq!(
            decide(Some(&LeaseSpec::default()), local(0), local(0), "me"),
            Action::Acquire
        );
        let released = released_spec(&held_by("other", 0, 15), at(0));
        assert_eq!(decide(Some(&released), local(0), local(0), "me"), Action::Acquire);
    }

    #[test]
    fn our_own_lease_is_renewed_even_when_expired() {
        let ours = held_by("me", 0, 15);
        assert_eq!(decide(Some(&ours), local(0), local(5), "me"), Action::Renew);
        assert_eq!(decide(Some(&ours), local(0), local(500), "me"), Action::Renew);
    }

    #[test]
    fn a_lease_of_another_holder_is_waited_for_until_unchanged_for_its_duration() {
        let theirs = held_by("other", 0, 15);
        assert_eq!(
            decide(Some(&theirs), local(0), local(5), "me"),
            Action::Wait {
                holder: "other".into(),
                expires_in: Duration::from_secs(10)
            }
        );
        assert_eq!(decide(Some(&theirs), local(0), local(15), "me"), Action::Acquire);
        assert_eq!(decide(Some(&theirs), local(0), local(60), "me"), Action::Acquire);
    }

    #[test]
    fn a_skewed_renew_time_changes_nothing() {
        // Written by a leader whose clock is 60 s behind or ahead, or far off: only when we
        // saw it counts.
        for renewed in [-60, 60, -86_400 * 365, 86_400 * 365] {
            let theirs = held_by("other", renewed, 15);
            assert_eq!(
                decide(Some(&theirs), local(100), local(101), "me"),
                Action::Wait {
                    holder: "other".into(),
                    expires_in: Duration::from_secs(14)
                },
                "renewed {renewed}s off"
            );
            assert_eq!(
                decide(Some(&theirs), local(100), local(115), "me"),
                Action::Acquire,
                "renewed {renewed}s off"
            );
        }
    }

    #[test]
    fn an_observation_restarts_when_the_lease_changes_and_only_then() {
        let first = held_by("other", 0, 15);
        let seen = Observation::update(None, Some("1"), &first, local(0));
        assert_eq!(seen.seen_at, local(0));
        let same = Observation::update(Some(seen.clone()), Some("1"), &first, local(10));
        assert_eq!(
            same.seen_at,
            local(0),
            "unchanged: still counting from the first sight"
        );
        // A renewal (new renewTime and resourceVersion), even one written with a clock far
        // behind ours, restarts the count.
        let renewed = held_by("other", -3600, 15);
        let again = Observation::update(Some(same.clone()), Some("2"), &renewed, local(12));
        assert_eq!(again.seen_at, local(12));
        assert!(matches!(
            decide(Some(&renewed), again.seen_at, local(20), "me"),
            Action::Wait { .. }
        ));
        // A write that changes only the resourceVersion counts as a change too.
        let touched = Observation::update(Some(again), Some("3"), &renewed, local(25));
        assert_eq!(touched.seen_at, local(25));
    }

    #[test]
    fn a_holder_without_duration_counts_as_expired_and_a_huge_one_is_bounded() {
        let spec = LeaseSpec {
            holder_identity: Some("other".into()),
            ..Default::default()
        };
        assert_eq!(decide(Some(&spec), local(0), local(0), "me"), Action::Acquire);
        let negative = LeaseSpec {
            lease_duration_seconds: Some(-5),
            ..held_by("other", 0, 15)
        };
        assert_eq!(decide(Some(&negative), local(0), local(0), "me"), Action::Acquire);
        let huge = held_by("other", 0, i32::MAX);
        assert_eq!(
            decide(Some(&huge), local(0), local(86_400), "me"),
            Action::Acquire
        );
    }

    #[test]
    fn renewing_keeps_the_acquire_time_and_transitions() {
        let current = held_by("me", 0, 15);
        let next = next_spec(
            Some(&current),
            &Action::Renew,
            at(2),
            "me",
            Duration::from_secs(15),
        );
        assert_eq!(next.holder_identity.as_deref(), Some("me"));
        assert_eq!(next.acquire_time, current.acquire_time);
        assert_eq!(next.renew_time, Some(MicroTime(at(2))));
        assert_eq!(next.lease_transitions, Some(3));
        assert_eq!(next.lease_duration_seconds, Some(15));
    }

    #[test]
    fn taking_over_counts_a_transition_and_restarts_the_acquire_time() {
        let current = held_by("other", 0, 15);
        let next = next_spec(
            Some(&current),
            &Action::Acquire,
            at(20),
            "me",
            Duration::from_secs(15),
        );
        assert_eq!(next.holder_identity.as_deref(), Some("me"));
        assert_eq!(next.acquire_time, Some(MicroTime(at(20))));
        assert_eq!(next.renew_time, Some(MicroTime(at(20))));
        assert_eq!(next.lease_transitions, Some(4));
    }

    #[test]
    fn a_created_lease_starts_at_zero_transitions() {
        let next = next_spec(None, &Action::Create, at(0), "me", Duration::from_secs(15));
        assert_eq!(next.lease_transitions, Some(0));
        assert_eq!(next.holder_identity.as_deref(), Some("me"));
        assert_eq!(
            decide(Some(&next), local(0), local(1), "other"),
            Action::Wait {
                holder: "me".into(),
                expires_in: Duration::from_secs(14)
            }
        );
    }

    #[test]
    fn releasing_clears_the_holder_and_keeps_the_history() {
        let released = released_spec(&held_by("me", 0, 15), at(3));
        assert_eq!(released.holder_identity, None);
        assert_eq!(released.lease_transitions, Some(3));
        assert_eq!(released.lease_duration_seconds, Some(1));
    }
}
