//! Client-side token bucket: every Graph request takes one permit before it is sent.
//!
//! Permits are *reserved*: a caller that finds the bucket empty takes a permit on credit and
//! sleeps until it is due, so waiting callers are served in arrival order and the rate holds
//! under any concurrency. A server `Retry-After` also pauses the whole bucket
//! ([`RateLimiter::pause_until`]): once Graph says "wait", no call of this client sends before
//! the time is up, not only the call that was throttled.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::config::RateLimit;

/// A token bucket shared by all calls of one [`super::GraphClient`].
#[derive(Debug)]
pub struct RateLimiter {
    qps: f64,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Permits available at `last` (negative: reserved on credit).
    tokens: f64,
    last: Instant,
    /// No permit is granted before this instant (server-side throttling).
    paused_until: Option<Instant>,
}

impl RateLimiter {
    /// A full bucket.
    pub fn new(limit: RateLimit) -> Self {
        Self::new_at(limit, Instant::now())
    }

    fn new_at(limit: RateLimit, now: Instant) -> Self {
        let burst = f64::from(limit.burst.max(1));
        Self {
            qps: limit.qps.max(f64::MIN_POSITIVE),
            burst,
            state: Mutex::new(State {
                tokens: burst,
                last: now,
                paused_until: None,
            }),
        }
    }

    /// Takes one permit at `now` and returns how long the caller must wait before sending.
    pub fn reserve(&self, now: Instant) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Refill for the time since the last reservation (never backwards).
        if now > s.last {
            let dt = (now - s.last).as_secs_f64();
            s.tokens = (s.tokens + dt * self.qps).min(self.burst);
            s.last = now;
        }
        s.tokens -= 1.0;
        let bucket_wait = if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / self.qps)
        };
        let pause_wait = match s.paused_until {
            Some(t) if t > now => t - now,
            _ => Duration::ZERO,
        };
        bucket_wait.max(pause_wait)
    }

    /// Waits for a permit; returns how long it waited.
    pub async fn acquire(&self) -> Duration {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }

    /// Grants no permit before `until` (a server's `Retry-After`).
    pub fn pause_until(&self, until: Instant) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.paused_until.is_none_or(|t| t < until) {
            s.paused_until = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(qps: f64, burst: u32, now: Instant) -> RateLimiter {
        RateLimiter::new_at(RateLimit { qps, burst }, now)
    }

    #[test]
    fn burst_then_steady_rate() {
        let t0 = Instant::now();
        let l = limiter(10.0, 3, t0);
        for _ in 0..3 {
            assert_eq!(l.reserve(t0), Duration::ZERO);
        }
        // The 4th..6th wait 100, 200, 300 ms: reservations queue up.
        for n in 1..=3u32 {
            let w = l.reserve(t0);
            assert!((w.as_secs_f64() - 0.1 * f64::from(n)).abs() < 1e-9, "{w:?}");
        }
        // After a long idle period the bucket is full again, but never above burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(l.reserve(later), Duration::ZERO);
        }
        assert!(l.reserve(later) > Duration::ZERO);
    }

    #[test]
    fn server_pause_holds_every_caller() {
        let t0 = Instant::now();
        let l = limiter(100.0, 100, t0);
        l.pause_until(t0 + Duration::from_millis(2128));
        assert_eq!(l.reserve(t0), Duration::from_millis(2128));
        assert_eq!(l.reserve(t0 + Duration::from_millis(128)), Duration::from_secs(2));
        // An earlier pause does not shorten a later one.
        l.pause_until(t0 + Duration::from_secs(1));
        assert_eq!(l.reserve(t0 + Duration::from_secs(2)), Duration::from_millis(128));
        assert_eq!(l.reserve(t0 + Duration::from_secs(3)), Duration::ZERO);
    }
}
