//! Liveness of the controllers' watch streams, for `/healthz`.
//!
//! Every watch the controllers run reports each item it yields to a [`WatchProbe`]: an event
//! is progress, an error starts (or continues) a failure streak, and a stream that returns
//! ends the watch for good. A watch is unhealthy when it ended, or when it has kept failing
//! for the bound (`--unhealthy-after`) without one event in between.
//!
//! A watcher that reconnects after errors does so silently: resuming from its last
//! resourceVersion yields no event when nothing changed. So a streak whose last error is
//! older than [`QUIET`] counts as over: a watch still failing would have failed again by
//! then (the watchers retry at least every [`MAX_RETRY_INTERVAL`], and an attempt to an
//! unreachable apiserver gives up within the client's 30 s connect timeout).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The longest wait of the watchers between two attempts ([`watch_backoff`]).
pub const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// How long after its last error a failing watch counts as reconnected.
pub const QUIET: Duration = Duration::from_secs(60);

/// The backoff of every watch: 0.8 s doubling to [`MAX_RETRY_INTERVAL`], no jitter, so
/// that a failing watch reports an error at least every [`MAX_RETRY_INTERVAL`]. Reset by
/// the watcher after each success.
#[derive(Clone, Debug)]
pub struct WatchBackoff {
    next: Duration,
}

const FIRST_RETRY: Duration = Duration::from_millis(800);

pub fn watch_backoff() -> WatchBackoff {
    WatchBackoff { next: FIRST_RETRY }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (delay * 2).min(MAX_RETRY_INTERVAL);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = FIRST_RETRY;
    }
}

/// What is known of one watch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct WatchState {
    /// First error of the current streak, and its latest.
    failing: Option<(Instant, Instant)>,
    ended: bool,
}

/// The health of every watch, keyed by `<controller>/<watched kind>`.
#[derive(Debug)]
pub struct Health {
    bound: Duration,
    watches: Mutex<BTreeMap<String, WatchState>>,
}

impl Health {
    pub fn new(bound: Duration) -> Arc<Health> {
        Arc::new(Health {
            bound,
            watches: Mutex::new(BTreeMap::new()),
        })
    }

    /// Registers a watch (healthy until it says otherwise).
    pub fn probe(self: &Arc<Self>, name: impl Into<String>) -> WatchProbe {
        let name = name.into();
        self.update(&name, |_| {});
        WatchProbe {
            health: self.clone(),
            name: Arc::from(name),
        }
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut WatchState)) {
        // A poisoned lock only means a panic elsewhere mid-update; the state is still usable.
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        f(watches.entry(name.to_string()).or_default());
    }

    /// `Ok` when every watch is healthy at `now`, else one line per unhealthy watch.
    pub fn check(&self, now: Instant) -> Result<(), Vec<String>> {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let problems: Vec<String> = watches
            .iter()
            .filter_map(|(name, state)| judge(state, now, self.bound).map(|why| format!("{name}: {why}")))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Why a watch is unhealthy at `now`, if it is.
fn judge(state: &WatchState, now: Instant, bound: Duration) -> Option<String> {
    if state.ended {
        return Some("the watch stream ended".into());
    }
    let (since, last) = state.failing?;
    let failing_for = now.saturating_duration_since(since);
    let recent = now.saturating_duration_since(last) <= QUIET;
    (recent && failing_for >= bound).then(|| {
        format!(
            "the watch has failed for {}s without an event (bound {}s)",
            failing_for.as_secs(),
            bound.as_secs()
        )
    })
}

/// The reporting end of one watch.
#[derive(Clone, Debug)]
pub struct WatchProbe {
    health: Arc<Health>,
    name: Arc<str>,
}

impl WatchProbe {
    /// An item of the watch stream: an event (`true`) or an error.
    pub fn observe(&self, ok: bool) {
        self.observe_at(ok, Instant::now());
    }

    fn observe_at(&self, ok: bool, now: Instant) {
        self.health.update(&self.name, |s| {
            s.failing = match (ok, s.failing) {
                (true, _) => None,
                // A streak silent for longer than QUIET was over: this error starts anew.
                (false, Some((since, last))) if now.saturating_duration_since(last) <= QUIET => {
                    Some((since, now))
                }
                (false, _) => Some((now, now)),
            }
        });
    }

    /// The watch stream returned: it will not deliver anything any more.
    pub fn ended(&self) {
        self.health.update(&self.name, |s| s.ended = true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(60);

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn a_watch_without_errors_is_healthy() {
        let t0 = Instant::now();
        assert_eq!(judge(&WatchState::default(), at(t0, 1000), BOUND), None);
    }

    #[test]
    fn a_watch_failing_past_the_bound_is_unhealthy_and_names_how_long() {
        let t0 = Instant::now();
        let s = WatchState {
            failing: Some((t0, at(t0, 55))),
            ended: false,
        };
        assert_eq!(judge(&s, at(t0, 59), BOUND), None, "within the bound");
        let why = judge(&s, at(t0, 61), BOUND).expect("unhealthy");
        assert!(why.contains("61s"), "{why}");
    }

    #[test]
    fn a_streak_whose_errors_stopped_counts_as_reconnected() {
        let t0 = Instant::now();
        let s = WatchState {
            failing: Some((t0, at(t0, 70))),
            ended: false,
        };
        assert!(judge(&s, at(t0, 70 + QUIET.as_secs()), BOUND).is_some());
        assert_eq!(judge(&s, at(t0, 71 + QUIET.as_secs()), BOUND), None);
    }

    #[test]
    fn an_ended_stream_is_unhealthy_for_good() {
        let t0 = Instant::now();
        let s = WatchState {
            failing: None,
            ended: true,
        };
        assert!(judge(&s, t0, BOUND).is_some());
    }

    #[test]
    fn the_watch_backoff_doubles_to_its_cap_and_resets() {
        use kube::runtime::utils::Backoff;
        let mut b = watch_backoff();
        let first: Vec<u64> = b.by_ref().take(6).map(|d| d.as_millis() as u64).collect();
        assert_eq!(first, [800, 1600, 3200, 6400, 10_000, 10_000]);
        b.reset();
        assert_eq!(b.next(), Some(FIRST_RETRY));
    }

    #[test]
    fn a_failing_watch_reports_more_often_than_the_quiet_period() {
        // Otherwise a watch failing for good would look reconnected between two attempts.
        assert!(MAX_RETRY_INTERVAL * 2 < QUIET);
    }

    #[test]
    fn probes_track_streaks_and_the_report_names_the_watch() {
        let t0 = Instant::now();
        let health = Health::new(Duration::from_secs(5));
        let ok = health.probe("provider/DcrProvider");
        let bad = health.probe("application/Secret");
        ok.observe_at(true, t0);
        bad.observe_at(false, t0);
        assert_eq!(health.check(t0), Ok(()));
        bad.observe_at(false, at(t0, 4));
        let problems = health.check(at(t0, 6)).expect_err("unhealthy");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("application/Secret: "), "{problems:?}");
        // One event ends the streak.
        bad.observe_at(true, at(t0, 6));
        assert_eq!(health.check(at(t0, 6)), Ok(()));
        // A lone error after a long silence starts a new streak.
        bad.observe_at(false, at(t0, 100));
        bad.observe_at(false, at(t0, 200));
        bad.observe_at(false, at(t0, 203));
        assert_eq!(health.check(at(t0, 204)), Ok(()), "3 s into a new streak");
        ok.ended();
        assert!(health.check(at(t0, 204)).is_err());
    }
}
