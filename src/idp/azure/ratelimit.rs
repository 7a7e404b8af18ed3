//! Client-side request budget: every Graph request takes one permit before it is sent.
//!
//! One token bucket per [`super::GraphClient`] (one DcrProvider), shared fairly by the
//! namespaces that use it: callers wait in one FIFO queue per namespace, and permits go to
//! the queues in turn (round robin, one permit each, i.e. deficit round robin with equal
//! costs). A namespace that sends hundreds of requests therefore delays another
//! namespace's request by at most one permit per other waiting namespace, not by its own
//! backlog.
//!
//! Nobody sleeps long in here: a caller not served within `max_wait` leaves its queue and
//! gets [`MustWait`] with an estimate, so a reconcile gives its worker slot back and requeues
//! instead of holding it. A server `Retry-After` pauses the whole bucket
//! ([`RateLimiter::pause_until`]): once Graph says "wait", no call of this client sends before
//! the time is up, not only the call that was throttled.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::config::RateLimit;

/// The shortest wait [`MustWait`] reports: requeues sooner than this are a spin.
const MIN_REPORTED_WAIT: Duration = Duration::from_millis(100);

/// The caller was not served within the limiter's bound; come back after `wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MustWait {
    /// The estimated time until a permit is free for this caller.
    pub wait: Duration,
}

/// The fair token bucket of one [`super::GraphClient`].
#[derive(Debug)]
pub struct RateLimiter {
    max_wait: Duration,
    state: Mutex<Scheduler<oneshot::Sender<()>>>,
}

impl RateLimiter {
    /// A full bucket; callers wait at most `max_wait` for a permit.
    pub fn new(limit: RateLimit, max_wait: Duration) -> Self {
        Self {
            max_wait,
            state: Mutex::new(Scheduler::new(limit, Instant::now())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Scheduler<oneshot::Sender<()>>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a permit on behalf of `namespace` (`""` for cluster-scoped work); returns how
    /// long it waited (zero when a permit was free), or [`MustWait`] when no permit came
    /// within the bound.
    pub async fn acquire(&self, namespace: &str) -> Result<Duration, MustWait> {
        let start = Instant::now();
        let deadline = start + self.max_wait;
        let (tx, mut rx) = oneshot::channel();
        let id = {
            let mut s = self.lock();
            if let Some(wait) = s.paused_past(start, deadline) {
                return Err(MustWait { wait });
            }
            s.enqueue(namespace, tx)
        };
        // Leaves the queue if this future is dropped while waiting.
        let mut enlisted = Enlisted {
            limiter: self,
            id: Some(id),
        };
        let mut waited = Duration::ZERO;
        loop {
            let next = self.dispatch();
            if rx.try_recv().is_ok() {
                enlisted.id = None;
                return Ok(waited);
            }
            let now = Instant::now();
            if now >= deadline {
                enlisted.id = None;
                let mut s = self.lock();
                return if s.cancel(id) {
                    Err(MustWait {
                        wait: s.estimate(now),
                    })
                } else {
                    // Granted between the dispatch above and now.
                    Ok(now - start)
                };
            }
            let wake = next.map_or(deadline, |n| n.min(deadline));
            tokio::select! {
                granted = &mut rx => {
                    if granted.is_ok() {
                        enlisted.id = None;
                        return Ok(start.elapsed());
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            waited = start.elapsed();
        }
    }

    /// Hands out the permits that are due; returns when the next one is.
    fn dispatch(&self) -> Option<Instant> {
        let mut s = self.lock();
        let (granted, next) = s.dispatch(Instant::now());
        for tx in granted {
            if tx.send(()).is_err() {
                // Its caller is gone: the permit goes back.
                s.refund();
            }
        }
        next
    }

    /// Grants no permit before `until` (a server's `Retry-After`).
    pub fn pause_until(&self, until: Instant) {
        self.lock().pause_until(until);
    }
}

/// Removes a waiter whose `acquire` was dropped.
struct Enlisted<'a> {
    limiter: &'a RateLimiter,
    id: Option<u64>,
}

impl Drop for Enlisted<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.limiter.lock().cancel(id);
        }
    }
}

/// The pure part: a token bucket and per-namespace queues served round robin, driven by the
/// instants it is given (so it is tested without sleeping).
#[derive(Debug)]
struct Scheduler<T> {
    qps: f64,
    burst: f64,
    /// Permits available at `last`.
    tokens: f64,
    last: Instant,
    /// No permit is granted before this instant (server-side throttling).
    paused_until: Option<Instant>,
    /// Waiters per namespace, first come first served within a namespace.
    queues: HashMap<String, VecDeque<(u64, T)>>,
    /// Namespaces with waiters, in the order they are served.
    ring: VecDeque<String>,
    next_id: u64,
}

impl<T> Scheduler<T> {
    fn new(limit: RateLimit, now: Instant) -> Self {
        let burst = f64::from(limit.burst.max(1));
        Self {
            qps: if limit.qps.is_finite() {
                limit.qps.max(1e-3)
            } else {
                1e-3
            },
            burst,
            tokens: burst,
            last: now,
            paused_until: None,
            queues: HashMap::new(),
            ring: VecDeque::new(),
            next_id: 0,
        }
    }

    fn refill(&mut self, now: Instant) {
        if now > self.last {
            let dt = (now - self.last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.qps).min(self.burst);
            self.last = now;
        }
    }

    /// How long the bucket stays paused after `now`, when that is beyond `deadline`.
    fn paused_past(&self, now: Instant, deadline: Instant) -> Option<Duration> {
        self.paused_until
            .filter(|&until| until > deadline)
            .map(|until| until - now)
    }

    fn pause_until(&mut self, until: Instant) {
        if self.paused_until.is_none_or(|t| t < until) {
            self.paused_until = Some(until);
        }
    }

    /// Queues a waiter for `namespace`; returns its id.
    fn enqueue(&mut self, namespace: &str, waiter: T) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let queue = self.queues.entry(namespace.to_string()).or_default();
        if queue.is_empty() {
            self.ring.push_back(namespace.to_string());
        }
        queue.push_back((id, waiter));
        id
    }

    /// Removes waiter `id`; false when it is not queued (granted already).
    fn cancel(&mut self, id: u64) -> bool {
        let found = self.queues.iter_mut().find_map(|(ns, q)| {
            let at = q.iter().position(|(i, _)| *i == id)?;
            q.remove(at);
            Some((ns.clone(), q.is_empty()))
        });
        match found {
            Some((ns, emptied)) => {
                if emptied {
                    self.queues.remove(&ns);
                    self.ring.retain(|n| *n != ns);
                }
                true
            }
            None => false,
        }
    }

    /// Gives a permit back (its waiter went away before it could use it).
    fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }

    /// Grants the permits available at `now`, one namespace at a time; returns the granted
    /// waiters and when the next permit is due (None when nobody waits).
    fn dispatch(&mut self, now: Instant) -> (Vec<T>, Option<Instant>) {
        self.refill(now);
        let mut granted = Vec::new();
        if let Some(until) = self.paused_until.filter(|&t| t > now) {
            return (granted, (!self.ring.is_empty()).then_some(until));
        }
        // The epsilon keeps float rounding of the refill from missing a permit that is due.
        while self.tokens >= 1.0 - 1e-9 {
            let Some(ns) = self.ring.pop_front() else {
                break;
            };
            let Some(queue) = self.queues.get_mut(&ns) else {
                continue;
            };
            if let Some((_, waiter)) = queue.pop_front() {
                self.tokens -= 1.0;
                granted.push(waiter);
            }
            if queue.is_empty() {
                self.queues.remove(&ns);
            } else {
                self.ring.push_back(ns);
            }
        }
        let next = (!self.ring.is_empty())
            .then(|| now + Duration::from_secs_f64(((1.0 - self.tokens) / self.qps).max(0.0)));
        (granted, next)
    }

    /// When a caller arriving at `now` could expect a permit: after the pause, and after
    /// everyone queued (an estimate for the requeue, not a promise).
    fn estimate(&self, now: Instant) -> Duration {
        let queued: usize = self.queues.values().map(VecDeque::len).sum();
        let needed = (queued as f64 + 1.0 - self.tokens).max(0.0);
        let bucket = Duration::from_secs_f64((needed / self.qps).min(86_400.0));
        let pause = self
            .paused_until
            .filter(|&t| t > now)
            .map_or(Duration::ZERO, |t| t - now);
        bucket.max(pause).max(MIN_REPORTED_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheduler(qps: f64, burst: u32, now: Instant) -> Scheduler<&'static str> {
        Scheduler::new(RateLimit { qps, burst }, now)
    }

    /// Runs the scheduler from `t0`, dispatching whenever it says a permit is due; returns
    /// the waiters in the order they were served and when.
    fn serve_all(s: &mut Scheduler<&'static str>, t0: Instant) -> Vec<(&'static str, Duration)> {
        let mut served = Vec::new();
        let mut now = t0;
        for _ in 0..10_000 {
            let (granted, next) = s.dispatch(now);
            served.extend(granted.into_iter().map(|w| (w, now - t0)));
            match next {
                Some(n) => now = n.max(now + Duration::from_nanos(1)),
                None => return served,
            }
        }
        panic!("the scheduler did not drain");
    }

    #[test]
    fn burst_then_steady_rate() {
        let t0 = Instant::now();
        let mut s = scheduler(10.0, 3, t0);
        for _ in 0..6 {
            s.enqueue("a", "a");
        }
        let served = serve_all(&mut s, t0);
        let at: Vec<u128> = served.iter().map(|(_, d)| d.as_millis()).collect();
        // Three at once, then one every 100 ms.
        assert_eq!(at, vec![0, 0, 0, 100, 200, 300]);
        // After a long idle period the bucket is full again, but never above burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..4 {
            s.enqueue("a", "a");
        }
        let (granted, next) = s.dispatch(later);
        assert_eq!(granted.len(), 3);
        assert_eq!(next, Some(later + Duration::from_millis(100)));
    }

    #[test]
    fn a_burst_in_one_namespace_delays_another_by_one_permit() {
        let t0 = Instant::now();
        let mut s = scheduler(2.0, 1, t0);
        // The hog queued 50 requests first, and keeps its bucket empty.
        for _ in 0..50 {
            s.enqueue("hog", "hog");
        }
        let (first, _) = s.dispatch(t0);
        assert_eq!(first, vec!["hog"]);
        // Then a new Application's request arrives in another namespace.
        s.enqueue("team-b", "team-b");
        s.enqueue("team-b", "team-b");
        let served = serve_all(&mut s, t0);
        let b: Vec<Duration> = served
            .iter()
            .filter(|(w, _)| *w == "team-b")
            .map(|(_, at)| *at)
            .collect();
        // Every other permit (one each 500 ms at 2/s): after one more of the hog's, not after
        // its 49 queued requests.
        assert_eq!(b, vec![Duration::from_secs(1), Duration::from_secs(2)]);
        assert_eq!(served[0], ("hog", Duration::from_millis(500)));
        assert_eq!(served[1], ("team-b", Duration::from_secs(1)));
        assert_eq!(served.len(), 51);
    }

    #[test]
    fn namespaces_take_turns() {
        let t0 = Instant::now();
        let mut s = scheduler(1.0, 1, t0 - Duration::from_secs(10));
        for w in ["a1", "a2", "a3"] {
            s.enqueue("a", w);
        }
        for w in ["b1", "b2"] {
            s.enqueue("b", w);
        }
        s.enqueue("", "cluster");
        let order: Vec<&str> = serve_all(&mut s, t0).into_iter().map(|(w, _)| w).collect();
        assert_eq!(order, vec!["a1", "b1", "cluster", "a2", "b2", "a3"]);
        assert!(
            s.queues.is_empty() && s.ring.is_empty(),
            "nothing is kept for idle namespaces"
        );
    }

    #[test]
    fn cancelled_waiters_leave_their_queue() {
        let t0 = Instant::now();
        let mut s = scheduler(1.0, 1, t0);
        let (granted, _) = s.dispatch(t0);
        assert!(granted.is_empty());
        let a = s.enqueue("a", "a");
        let b = s.enqueue("b", "b");
        assert!(s.cancel(a));
        assert!(!s.cancel(a), "cancelled once");
        assert_eq!(s.ring, VecDeque::from(["b".to_string()]));
        let (granted, next) = s.dispatch(t0);
        assert_eq!((granted, next), (vec!["b"], None));
        assert!(!s.cancel(b), "granted: no longer queued");
    }

    #[test]
    fn server_pause_holds_every_caller() {
        let t0 = Instant::now();
        let mut s = scheduler(100.0, 100, t0);
        s.pause_until(t0 + Duration::from_millis(2128));
        s.enqueue("a", "a");
        let (granted, next) = s.dispatch(t0);
        assert!(granted.is_empty());
        assert_eq!(next, Some(t0 + Duration::from_millis(2128)));
        // An earlier pause does not shorten a later one.
        s.pause_until(t0 + Duration::from_secs(1));
        assert!(s.dispatch(t0 + Duration::from_secs(2)).0.is_empty());
        assert_eq!(s.dispatch(t0 + Duration::from_secs(3)).0, vec!["a"]);
        // A pause beyond a caller's bound is reported at once, with its remaining length.
        s.pause_until(t0 + Duration::from_secs(30));
        let now = t0 + Duration::from_secs(3);
        assert_eq!(
            s.paused_past(now, now + Duration::from_secs(2)),
            Some(Duration::from_secs(27))
        );
        assert_eq!(s.paused_past(now, now + Duration::from_secs(28)), None);
        assert_eq!(s.estimate(now), Duration::from_secs(27));
    }

    #[test]
    fn the_estimate_counts_everyone_queued() {
        let t0 = Instant::now();
        let mut s = scheduler(2.0, 1, t0);
        s.enqueue("a", "a");
        s.enqueue("b", "b");
        s.enqueue("c", "c");
        assert_eq!(s.dispatch(t0).0, vec!["a"]);
        // Empty bucket, two still queued: a newcomer's permit is the third, 1.5 s away.
        assert_eq!(s.estimate(t0), Duration::from_millis(1500));
        let idle = scheduler(2.0, 1, t0);
        assert_eq!(idle.estimate(t0), MIN_REPORTED_WAIT, "never a zero requeue");
    }

    #[test]
    fn hostile_limits_are_bounded() {
        let t0 = Instant::now();
        for qps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut s = scheduler(qps, 0, t0);
            s.enqueue("a", "a");
            s.enqueue("a", "a");
            let (granted, next) = s.dispatch(t0);
            assert_eq!(granted.len(), 1, "burst 0 still lets one through");
            assert!(next.is_some());
            assert!(s.estimate(t0) <= Duration::from_secs(86_400));
        }
    }

    #[tokio::test]
    async fn acquire_hands_back_what_it_cannot_serve_in_time() {
        let limiter = RateLimiter::new(RateLimit { qps: 0.01, burst: 1 }, Duration::from_millis(50));
        assert_eq!(
            limiter.acquire("a").await,
            Ok(Duration::ZERO),
            "a full bucket serves at once"
        );
        let refused = limiter
            .acquire("b")
            .await
            .expect_err("the bucket is empty for 100 s");
        assert!(refused.wait > Duration::from_secs(90), "{refused:?}");
        assert!(
            limiter.lock().queues.is_empty(),
            "the refused caller left its queue"
        );
        limiter.pause_until(Instant::now() + Duration::from_secs(600));
        let paused = limiter.acquire("c").await.expect_err("paused");
        assert!(paused.wait > Duration::from_secs(590), "{paused:?}");
    }
}
