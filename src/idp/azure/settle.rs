//! When a just-created application is likely visible to `POST /servicePrincipals`.
//!
//! Graph accepts a write, then replicates it (contract §7): a service principal created for
//! an application moments old fails with `NoBackingApplicationObject` until the application
//! has replicated. Retrying that with backoff from the first attempt spent most of the
//! Graph requests of a new Application (3.4 service-principal creates each in the 200
//! Application soak). So the client remembers when it created each application and lets
//! the first create wait until the typical lag has passed; the retry policy covers the rest.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Applications remembered at most; the oldest are dropped beyond it (their wait is over
/// long before a provider creates this many).
const MAX_REMEMBERED: usize = 4_096;

/// Creation times of this client's new applications, by appId.
#[derive(Debug)]
pub struct Settling {
    lag: Duration,
    created: Mutex<HashMap<String, Instant>>,
}

impl Settling {
    /// Applications need `lag` after their creation before a dependent create.
    pub fn new(lag: Duration) -> Self {
        Self {
            lag,
            created: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.created.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `app_id` was created at `at`.
    pub fn created(&self, app_id: &str, at: Instant) {
        if self.lag.is_zero() {
            return;
        }
        let mut created = self.lock();
        // Settled entries are of no use; past the bound, the oldest go.
        created.retain(|_, t| at.saturating_duration_since(*t) < self.lag);
        while created.len() >= MAX_REMEMBERED {
            let Some(oldest) = created.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) else {
                break;
            };
            created.remove(&oldest);
        }
        created.insert(app_id.to_ascii_lowercase(), at);
    }

    /// How long a dependent create for `app_id` should still wait at `now` (zero for an
    /// application this client did not create, or created long enough ago).
    pub fn remaining(&self, app_id: &str, now: Instant) -> Duration {
        let created = self.lock();
        created
            .get(&app_id.to_ascii_lowercase())
            .map_or(Duration::ZERO, |t| (*t + self.lag).saturating_duration_since(now))
    }

    /// The dependent create is done: forget `app_id`.
    pub fn settled(&self, app_id: &str) {
        self.lock().remove(&app_id.to_ascii_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_out_the_lag_from_the_creation_only_for_known_applications() {
        let t0 = Instant::now();
        let s = Settling::new(Duration::from_secs(2));
        s.created("AAAA", t0);
        assert_eq!(s.remaining("aaaa", t0), Duration::from_secs(2));
        assert_eq!(
            s.remaining("aaaa", t0 + Duration::from_millis(1500)),
            Duration::from_millis(500)
        );
        assert_eq!(s.remaining("aaaa", t0 + Duration::from_secs(3)), Duration::ZERO);
        assert_eq!(s.remaining("bbbb", t0), Duration::ZERO, "not created here");
        s.settled("aaaa");
        assert_eq!(s.remaining("aaaa", t0), Duration::ZERO);
        let off = Settling::new(Duration::ZERO);
        off.created("aaaa", t0);
        assert_eq!(off.remaining("aaaa", t0), Duration::ZERO);
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let s = Settling::new(Duration::from_secs(3600));
        for i in 0..(MAX_REMEMBERED + 10) {
            s.created(&format!("app-{i}"), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(s.lock().len(), MAX_REMEMBERED);
        assert_eq!(s.remaining("app-0", t0), Duration::ZERO, "the oldest went first");
        // Settled ones are dropped on the next insert.
        let later = t0 + Duration::from_secs(7200);
        s.created("new", later);
        assert_eq!(s.lock().len(), 1);
    }
}
