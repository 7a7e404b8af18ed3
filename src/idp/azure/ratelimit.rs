//! Client-side request budget, shaped like Graph's own throttling (contract §2.2).
//!
//! Graph limits identity calls per app and tenant with two token buckets: one of resource
//! units (RU; 3,500/5,000/8,000 per 10 s by tenant size) and one of writes (3,000 per
//! 150 s). Every request here is priced the way Graph prices it ([`Cost::of`]) and takes
//! its cost from both buckets before it is sent, so the client shapes its own traffic and
//! Graph's 429s stay rare rather than being the flow control. An optional flat
//! requests-per-second bucket (`requestBudget.qps`/`burst`) lowers the rate further.
//!
//! One budget per [`super::GraphClient`] (one DcrProvider), shared fairly by the namespaces
//! that use it: callers wait in one FIFO queue per namespace, and the queues are served in
//! turn (round robin, one request each). A namespace that sends hundreds of requests
//! therefore delays another namespace's request by at most one request per other waiting
//! namespace, not by its own backlog.
//!
//! Nobody sleeps long in here: a caller not served within `max_wait` leaves its queue and
//! gets [`MustWait`] with an estimate, so a reconcile gives its worker slot back and requeues
//! instead of holding it. A server `Retry-After` pauses the whole budget
//! ([`RateLimiter::pause_until`]): once Graph says "wait", no call of this client sends before
//! the time is up, not only the call that was throttled.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reqwest::Method;
use tokio::sync::oneshot;
use url::Url;

use super::config::{RateLimit, RequestBudget, RESOURCE_UNIT_WINDOW, WRITE_WINDOW};

/// The shortest wait [`MustWait`] reports: requeues sooner than this are a spin.
const MIN_REPORTED_WAIT: Duration = Duration::from_millis(100);

/// The caller was not served within the limiter's bound; come back after `wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MustWait {
    /// The estimated time until the budget serves this caller.
    pub wait: Duration,
}

/// What one request costs in Graph's identity buckets (contract §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    /// Resource units (at least 1).
    pub resource_units: u32,
    /// Writes (1 for POST/PATCH/PUT/DELETE, else 0).
    pub writes: u32,
}

impl Cost {
    /// Graph's price of `method url`: `GET applications` (the collection) 2 RU, any other
    /// GET 1 RU; a write 1 RU and 1 write; `$select` -1, `$expand` +1, `$top` below 20 -1;
    /// at least 1 RU.
    pub fn of(method: &Method, url: &Url) -> Self {
        let write = !matches!(*method, Method::GET | Method::HEAD);
        let collection = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .is_some_and(|last| last.eq_ignore_ascii_case("applications"));
        let mut ru: i64 = if !write && collection { 2 } else { 1 };
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "$select" => ru -= 1,
                "$expand" => ru += 1,
                "$top" if value.parse::<u32>().is_ok_and(|t| t < 20) => ru -= 1,
                _ => {}
            }
        }
        Self {
            resource_units: u32::try_from(ru.max(1)).unwrap_or(1),
            writes: u32::from(write),
        }
    }

    /// The amounts taken from each bucket, in [`Scheduler`] bucket order.
    fn amounts(self) -> [f64; BUCKETS] {
        [f64::from(self.resource_units), f64::from(self.writes), 1.0]
    }
}

/// Resource units, writes, requests (the optional flat rate).
const BUCKETS: usize = 3;

/// The Graph-shaped budget of one [`super::GraphClient`].
#[derive(Debug)]
pub struct RateLimiter {
    max_wait: Duration,
    state: Mutex<Scheduler<oneshot::Sender<()>>>,
}

impl RateLimiter {
    /// Full buckets; callers wait at most `max_wait` to be served.
    pub fn new(budget: RequestBudget, max_wait: Duration) -> Self {
        Self {
            max_wait,
            state: Mutex::new(Scheduler::new(budget, Instant::now())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Scheduler<oneshot::Sender<()>>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the budget covers `cost` on behalf of `namespace` (`""` for
    /// cluster-scoped work); returns how long it waited (zero when served at once), or
    /// [`MustWait`] when it was not served within the bound.
    pub async fn acquire(&self, namespace: &str, cost: Cost) -> Result<Duration, MustWait> {
        let start = Instant::now();
        let deadline = start + self.max_wait;
        let (tx, mut rx) = oneshot::channel();
        let id = {
            let mut s = self.lock();
            if let Some(wait) = s.paused_past(start, deadline) {
                return Err(MustWait { wait });
            }
            s.enqueue(namespace, cost, tx)
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
                        wait: s.estimate(now, cost),
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

    /// Serves the waiters the budget covers now; returns when the next one is due.
    fn dispatch(&self) -> Option<Instant> {
        let mut s = self.lock();
        let (granted, next) = s.dispatch(Instant::now());
        for (tx, cost) in granted {
            if tx.send(()).is_err() {
                // Its caller is gone: the cost goes back.
                s.refund(cost);
            }
        }
        next
    }

    /// Serves nobody before `until` (a server's `Retry-After`).
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

/// One token bucket: `capacity` tokens, refilled at `rate` per second.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
}

impl Bucket {
    /// A full bucket; capacity at least 1 and a positive, finite rate, whatever it is given.
    fn full(capacity: f64, rate: f64) -> Self {
        let capacity = if capacity.is_finite() {
            capacity.clamp(1.0, 1e9)
        } else {
            1.0
        };
        let rate = if rate.is_finite() {
            rate.clamp(1e-3, 1e9)
        } else {
            1e-3
        };
        Self {
            capacity,
            rate,
            tokens: capacity,
        }
    }

    /// A request dearer than the whole bucket is priced at the bucket's capacity, so it is
    /// served (slowly) rather than never.
    fn price(&self, amount: f64) -> f64 {
        amount.min(self.capacity)
    }

    /// The epsilon keeps float rounding of the refill from missing tokens that are due.
    fn covers(&self, amount: f64) -> bool {
        self.tokens >= self.price(amount) - 1e-9
    }

    /// Time until `amount` more than the current tokens are available.
    fn time_for(&self, amount: f64) -> f64 {
        ((amount - self.tokens) / self.rate).max(0.0)
    }
}

/// A queued caller and what it costs.
#[derive(Debug)]
struct Waiter<T> {
    id: u64,
    cost: Cost,
    waiter: T,
}

/// The pure part: the buckets and per-namespace queues served round robin, driven by the
/// instants it is given (so it is tested without sleeping).
#[derive(Debug)]
struct Scheduler<T> {
    /// Resource units, writes, and the optional flat request rate (see [`Cost::amounts`]).
    buckets: [Option<Bucket>; BUCKETS],
    last: Instant,
    /// Nobody is served before this instant (server-side throttling).
    paused_until: Option<Instant>,
    /// Waiters per namespace, first come first served within a namespace.
    queues: HashMap<String, VecDeque<Waiter<T>>>,
    /// Namespaces with waiters, in the order they are served.
    ring: VecDeque<String>,
    next_id: u64,
}

impl<T> Scheduler<T> {
    fn new(budget: RequestBudget, now: Instant) -> Self {
        let per_window = |limit: u32, window: Duration| {
            Bucket::full(f64::from(limit), f64::from(limit) / window.as_secs_f64())
        };
        let flat = budget
            .requests
            .map(|RateLimit { qps, burst }| Bucket::full(f64::from(burst), qps));
        Self {
            buckets: [
                Some(per_window(budget.resource_units, RESOURCE_UNIT_WINDOW)),
                Some(per_window(budget.writes, WRITE_WINDOW)),
                flat,
            ],
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
            for b in self.buckets.iter_mut().flatten() {
                b.tokens = (b.tokens + dt * b.rate).min(b.capacity);
            }
            self.last = now;
        }
    }

    /// Per bucket: whether it lacks what `cost` takes from it.
    fn short_of(&self, cost: Cost) -> [bool; BUCKETS] {
        let mut short = [false; BUCKETS];
        for ((s, b), amount) in short.iter_mut().zip(&self.buckets).zip(cost.amounts()) {
            *s = b.as_ref().is_some_and(|b| amount > 0.0 && !b.covers(amount));
        }
        short
    }

    fn take(&mut self, cost: Cost) {
        for (b, amount) in self.buckets.iter_mut().zip(cost.amounts()) {
            if let Some(b) = b {
                b.tokens -= b.price(amount);
            }
        }
    }

    /// Gives a cost back (its waiter went away before it could use it).
    fn refund(&mut self, cost: Cost) {
        for (b, amount) in self.buckets.iter_mut().zip(cost.amounts()) {
            if let Some(b) = b {
                b.tokens = (b.tokens + b.price(amount)).min(b.capacity);
            }
        }
    }

    /// Seconds until `cost` is covered, priced as [`Bucket::price`] does.
    fn seconds_until_covered(&self, cost: Cost) -> f64 {
        self.buckets
            .iter()
            .zip(cost.amounts())
            .filter_map(|(b, amount)| b.as_ref().map(|b| b.time_for(b.price(amount))))
            .fold(0.0, f64::max)
    }

    /// Seconds until every bucket has refilled `amounts` (queued costs included) beyond
    /// what it holds now.
    fn seconds_for(&self, amounts: [f64; BUCKETS]) -> f64 {
        self.buckets
            .iter()
            .zip(amounts)
            .filter_map(|(b, amount)| b.as_ref().map(|b| b.time_for(amount)))
            .fold(0.0, f64::max)
    }

    /// How long the budget stays paused after `now`, when that is beyond `deadline`.
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
    fn enqueue(&mut self, namespace: &str, cost: Cost, waiter: T) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let queue = self.queues.entry(namespace.to_string()).or_default();
        if queue.is_empty() {
            self.ring.push_back(namespace.to_string());
        }
        queue.push_back(Waiter { id, cost, waiter });
        id
    }

    /// Removes waiter `id`; false when it is not queued (granted already).
    fn cancel(&mut self, id: u64) -> bool {
        let found = self.queues.iter_mut().find_map(|(ns, q)| {
            let at = q.iter().position(|w| w.id == id)?;
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

    /// Serves the waiters the buckets cover at `now`, one namespace at a time; returns them
    /// with their costs, and when the next one is due (None when nobody waits).
    ///
    /// A namespace whose request the buckets do not cover keeps its turn and reserves the
    /// buckets it is short of: later namespaces are served only from the other buckets (a
    /// read passes a write held by the write bucket, as Graph throttles writes while reads
    /// succeed), so nobody overtakes it on what it waits for.
    fn dispatch(&mut self, now: Instant) -> (Vec<(T, Cost)>, Option<Instant>) {
        self.refill(now);
        let mut granted = Vec::new();
        if let Some(until) = self.paused_until.filter(|&t| t > now) {
            return (granted, (!self.ring.is_empty()).then_some(until));
        }
        let mut reserved = [false; BUCKETS];
        let mut due: Option<f64> = None;
        let mut blocked = VecDeque::new();
        while let Some(ns) = self.ring.pop_front() {
            let Some(cost) = self.queues.get(&ns).and_then(|q| q.front()).map(|w| w.cost) else {
                self.queues.remove(&ns);
                continue;
            };
            let short = self.short_of(cost);
            if short.iter().any(|s| *s) {
                for (r, s) in reserved.iter_mut().zip(short) {
                    *r |= s;
                }
                let wait = self.seconds_until_covered(cost);
                due = Some(due.map_or(wait, |d| d.min(wait)));
                blocked.push_back(ns);
                continue;
            }
            if draws_on(&reserved, cost) {
                blocked.push_back(ns);
                continue;
            }
            self.take(cost);
            if let Some(queue) = self.queues.get_mut(&ns) {
                if let Some(w) = queue.pop_front() {
                    granted.push((w.waiter, cost));
                }
                if queue.is_empty() {
                    self.queues.remove(&ns);
                } else {
                    self.ring.push_back(ns);
                }
            }
        }
        // The namespaces still waiting keep their order for the next turn.
        self.ring = blocked;
        let next = due.map(|d| now + Duration::from_secs_f64(d.min(86_400.0)));
        (granted, next)
    }

    /// When a caller arriving at `now` with `cost` could expect to be served: after the
    /// pause, and after everyone queued (an estimate for the requeue, not a promise).
    fn estimate(&self, now: Instant, cost: Cost) -> Duration {
        let mut needed = cost.amounts();
        // Only the buckets this caller draws on hold it up (a read does not wait for writes).
        for w in self.queues.values().flatten() {
            for (n, a) in needed.iter_mut().zip(w.cost.amounts()) {
                if *n > 0.0 {
                    *n += a;
                }
            }
        }
        let bucket = Duration::from_secs_f64(self.seconds_for(needed).min(86_400.0));
        let pause = self
            .paused_until
            .filter(|&t| t > now)
            .map_or(Duration::ZERO, |t| t - now);
        bucket.max(pause).max(MIN_REPORTED_WAIT)
    }
}

/// Whether `cost` takes anything from a reserved bucket.
fn draws_on(reserved: &[bool; BUCKETS], cost: Cost) -> bool {
    reserved
        .iter()
        .zip(cost.amounts())
        .any(|(r, amount)| *r && amount > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: Cost = Cost {
        resource_units: 1,
        writes: 0,
    };
    const WRITE: Cost = Cost {
        resource_units: 1,
        writes: 1,
    };

    /// Only the flat request rate binds (the Graph buckets are far larger).
    fn scheduler(qps: f64, burst: u32, now: Instant) -> Scheduler<&'static str> {
        Scheduler::new(
            RequestBudget {
                resource_units: 1_000_000,
                writes: 1_000_000,
                requests: Some(RateLimit { qps, burst }),
            },
            now,
        )
    }

    fn graph_shaped(resource_units: u32, writes: u32, now: Instant) -> Scheduler<&'static str> {
        Scheduler::new(
            RequestBudget {
                resource_units,
                writes,
                requests: None,
            },
            now,
        )
    }

    /// Runs the scheduler from `t0`, dispatching whenever it says a waiter is due; returns
    /// the waiters in the order they were served and when.
    fn serve_all(s: &mut Scheduler<&'static str>, t0: Instant) -> Vec<(&'static str, Duration)> {
        let mut served = Vec::new();
        let mut now = t0;
        for _ in 0..10_000 {
            let (granted, next) = s.dispatch(now);
            served.extend(granted.into_iter().map(|(w, _)| (w, now - t0)));
            match next {
                Some(n) => now = n.max(now + Duration::from_nanos(1)),
                None => return served,
            }
        }
        panic!("the scheduler did not drain");
    }

    fn cost(method: Method, url: &str) -> (u32, u32) {
        let c = Cost::of(&method, &Url::parse(url).unwrap());
        (c.resource_units, c.writes)
    }

    #[test]
    fn requests_are_priced_like_graph_prices_them() {
        let g = "https://graph.microsoft.com/v1.0";
        let cases = [
            (Method::GET, format!("{g}/applications"), (2, 0)),
            (
                Method::GET,
                format!("{g}/applications?$filter=tags/any(t:t eq 'x')"),
                (2, 0),
            ),
            (Method::GET, format!("{g}/applications?$select=id,appId"), (1, 0)),
            (Method::GET, format!("{g}/applications?$top=5"), (1, 0)),
            (Method::GET, format!("{g}/applications?$top=100"), (2, 0)),
            (Method::GET, format!("{g}/applications?$select=id&$top=5"), (1, 0)),
            (Method::GET, format!("{g}/applications(uniqueName='a')"), (1, 0)),
            (Method::GET, format!("{g}/applications/abc/owners"), (1, 0)),
            (
                Method::GET,
                format!("{g}/servicePrincipals?$expand=owners"),
                (2, 0),
            ),
            (Method::GET, format!("{g}/applications?$expand=owners"), (3, 0)),
            (Method::PATCH, format!("{g}/applications(uniqueName='a')"), (1, 1)),
            (Method::POST, format!("{g}/servicePrincipals"), (1, 1)),
            (Method::POST, format!("{g}/applications/abc/addPassword"), (1, 1)),
            (Method::DELETE, format!("{g}/applications/abc"), (1, 1)),
            // A path prefix (a proxy) changes nothing.
            (
                Method::GET,
                "https://proxy.example/graph/v1.0/applications".into(),
                (2, 0),
            ),
        ];
        for (method, url, want) in cases {
            assert_eq!(cost(method.clone(), &url), want, "{method} {url}");
        }
    }

    #[test]
    fn the_write_bucket_refills_over_its_window() {
        let t0 = Instant::now();
        // 3 writes per 150 s: one every 50 s once the bucket is empty.
        let mut s = graph_shaped(1_000, 3, t0);
        for _ in 0..5 {
            s.enqueue("a", WRITE, "w");
        }
        let at: Vec<u64> = serve_all(&mut s, t0)
            .iter()
            .map(|(_, d)| d.as_secs_f64().round() as u64)
            .collect();
        assert_eq!(at, vec![0, 0, 0, 50, 100]);
        // Idle for an hour: full again, never above capacity.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..4 {
            s.enqueue("a", WRITE, "w");
        }
        let (granted, next) = s.dispatch(later);
        assert_eq!(granted.len(), 3);
        assert_eq!(next, Some(later + Duration::from_secs(50)));
    }

    #[test]
    fn the_resource_unit_bucket_charges_each_request_its_cost() {
        let t0 = Instant::now();
        // 10 RU per 10 s: 1 RU a second.
        let mut s = graph_shaped(10, 1_000, t0);
        let list = Cost {
            resource_units: 2,
            writes: 0,
        };
        for _ in 0..5 {
            s.enqueue("a", list, "list");
        }
        let (granted, next) = s.dispatch(t0);
        assert_eq!(granted.len(), 5, "5 lists of 2 RU empty a 10 RU bucket");
        assert_eq!(next, None);
        s.enqueue("a", list, "list");
        s.enqueue("a", READ, "read");
        let served = serve_all(&mut s, t0);
        assert_eq!(
            served,
            vec![("list", Duration::from_secs(2)), ("read", Duration::from_secs(3))]
        );
        // A request dearer than the whole bucket is served at the bucket's capacity.
        let mut tiny = graph_shaped(1, 1_000, t0);
        tiny.enqueue("a", list, "list");
        assert_eq!(tiny.dispatch(t0).0.len(), 1);
    }

    #[test]
    fn reads_pass_writes_held_by_the_write_bucket() {
        let t0 = Instant::now();
        let mut s = graph_shaped(1_000, 1, t0);
        s.enqueue("a", WRITE, "w1");
        s.enqueue("a", WRITE, "w2");
        s.enqueue("b", READ, "r1");
        s.enqueue("c", WRITE, "w3");
        s.enqueue("c", READ, "r2");
        let (granted, next) = s.dispatch(t0);
        let names: Vec<&str> = granted.iter().map(|(w, _)| *w).collect();
        // The write bucket is empty after w1: b's read passes, c's and a's writes wait.
        assert_eq!(names, vec!["w1", "r1"]);
        assert_eq!(next, Some(t0 + Duration::from_secs(150)));
        let rest: Vec<&str> = serve_all(&mut s, t0 + Duration::from_secs(150))
            .into_iter()
            .map(|(w, _)| w)
            .collect();
        // c's turn comes before a's second write; c's read then passes a's held write.
        assert_eq!(rest, vec!["w3", "r2", "w2"]);
    }

    #[test]
    fn burst_then_steady_rate() {
        let t0 = Instant::now();
        let mut s = scheduler(10.0, 3, t0);
        for _ in 0..6 {
            s.enqueue("a", READ, "a");
        }
        let served = serve_all(&mut s, t0);
        let at: Vec<u128> = served.iter().map(|(_, d)| d.as_millis()).collect();
        // Three at once, then one every 100 ms.
        assert_eq!(at, vec![0, 0, 0, 100, 200, 300]);
        // After a long idle period the bucket is full again, but never above burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..4 {
            s.enqueue("a", READ, "a");
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
            s.enqueue("hog", WRITE, "hog");
        }
        let (first, _) = s.dispatch(t0);
        assert_eq!(first.len(), 1);
        // Then a new Application's request arrives in another namespace.
        s.enqueue("team-b", WRITE, "team-b");
        s.enqueue("team-b", READ, "team-b");
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
            s.enqueue("a", READ, w);
        }
        for w in ["b1", "b2"] {
            s.enqueue("b", WRITE, w);
        }
        s.enqueue("", READ, "cluster");
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
        let a = s.enqueue("a", READ, "a");
        let b = s.enqueue("b", READ, "b");
        assert!(s.cancel(a));
        assert!(!s.cancel(a), "cancelled once");
        assert_eq!(s.ring, VecDeque::from(["b".to_string()]));
        let (granted, next) = s.dispatch(t0);
        assert_eq!((granted, next), (vec![("b", READ)], None));
        assert!(!s.cancel(b), "granted: no longer queued");
        // A refund gives the cost back, up to capacity.
        s.refund(READ);
        s.enqueue("c", READ, "c");
        assert_eq!(s.dispatch(t0).0.len(), 1);
    }

    #[test]
    fn server_pause_holds_every_caller() {
        let t0 = Instant::now();
        let mut s = scheduler(100.0, 100, t0);
        s.pause_until(t0 + Duration::from_millis(2128));
        s.enqueue("a", READ, "a");
        let (granted, next) = s.dispatch(t0);
        assert!(granted.is_empty());
        assert_eq!(next, Some(t0 + Duration::from_millis(2128)));
        // An earlier pause does not shorten a later one.
        s.pause_until(t0 + Duration::from_secs(1));
        assert!(s.dispatch(t0 + Duration::from_secs(2)).0.is_empty());
        assert_eq!(s.dispatch(t0 + Duration::from_secs(3)).0, vec![("a", READ)]);
        // A pause beyond a caller's bound is reported at once, with its remaining length.
        s.pause_until(t0 + Duration::from_secs(30));
        let now = t0 + Duration::from_secs(3);
        assert_eq!(
            s.paused_past(now, now + Duration::from_secs(2)),
            Some(Duration::from_secs(27))
        );
        assert_eq!(s.paused_past(now, now + Duration::from_secs(28)), None);
        assert_eq!(s.estimate(now, READ), Duration::from_secs(27));
    }

    #[test]
    fn the_estimate_counts_everyone_queued() {
        let t0 = Instant::now();
        let mut s = scheduler(2.0, 1, t0);
        s.enqueue("a", READ, "a");
        s.enqueue("b", READ, "b");
        s.enqueue("c", READ, "c");
        assert_eq!(s.dispatch(t0).0, vec![("a", READ)]);
        // Empty bucket, two still queued: a newcomer's permit is the third, 1.5 s away.
        assert_eq!(s.estimate(t0, READ), Duration::from_millis(1500));
        let idle = scheduler(2.0, 1, t0);
        assert_eq!(idle.estimate(t0, READ), MIN_REPORTED_WAIT, "never a zero requeue");
        // Writes queued behind an empty write bucket: 60 per 150 s is one per 2.5 s.
        let mut w = graph_shaped(1_000, 60, t0);
        for _ in 0..61 {
            w.enqueue("a", WRITE, "w");
        }
        assert_eq!(w.dispatch(t0).0.len(), 60);
        assert_eq!(w.estimate(t0, WRITE), Duration::from_secs(5));
        assert_eq!(
            w.estimate(t0, READ),
            MIN_REPORTED_WAIT,
            "reads are not held by writes"
        );
    }

    #[test]
    fn hostile_limits_are_bounded() {
        let t0 = Instant::now();
        for qps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut s = scheduler(qps, 0, t0);
            s.enqueue("a", READ, "a");
            s.enqueue("a", READ, "a");
            let (granted, next) = s.dispatch(t0);
            assert_eq!(granted.len(), 1, "burst 0 still lets one through");
            assert!(next.is_some());
            assert!(s.estimate(t0, READ) <= Duration::from_secs(86_400));
        }
        let mut zero = graph_shaped(0, 0, t0);
        zero.enqueue("a", WRITE, "w");
        assert_eq!(zero.dispatch(t0).0.len(), 1, "a zero budget still serves one");
    }

    #[tokio::test]
    async fn acquire_hands_back_what_it_cannot_serve_in_time() {
        let budget = RequestBudget {
            resource_units: 1_000,
            writes: 1,
            requests: Some(RateLimit { qps: 0.01, burst: 1 }),
        };
        let limiter = RateLimiter::new(budget, Duration::from_millis(50));
        assert_eq!(
            limiter.acquire("a", READ).await,
            Ok(Duration::ZERO),
            "a full bucket serves at once"
        );
        let refused = limiter
            .acquire("b", READ)
            .await
            .expect_err("the bucket is empty for 100 s");
        assert!(refused.wait > Duration::from_secs(90), "{refused:?}");
        assert!(
            limiter.lock().queues.is_empty(),
            "the refused caller left its queue"
        );
        limiter.pause_until(Instant::now() + Duration::from_secs(600));
        let paused = limiter.acquire("c", READ).await.expect_err("paused");
        assert!(paused.wait > Duration::from_secs(590), "{paused:?}");
    }
}
