//! The emulator's clock: real time scaled by a speed factor, plus manual jumps forward.
//! Everything time-dependent in the directory (token expiry, password validity, replication
//! lag, activation delay, throttling buckets) reads this clock, so tests can make an hour
//! pass instantly instead of sleeping.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};

/// Emulated time = `base_emulated + (real elapsed since base_real) * speed`.
#[derive(Debug)]
pub(crate) struct Clock {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    base_real: Instant,
    base_emulated: DateTime<Utc>,
    speed: f64,
}

impl Inner {
    fn now(&self) -> DateTime<Utc> {
        let real = self.base_real.elapsed().as_secs_f64() * self.speed;
        self.base_emulated + TimeDelta::microseconds((real * 1e6) as i64)
    }
}

impl Clock {
    #[cfg(test)]
    pub(crate) fn new(speed: f64) -> Clock {
        Self::starting_behind(speed, Duration::ZERO)
    }

    /// A clock that starts `behind` in the past (clock skew).
    pub(crate) fn starting_behind(speed: f64, behind: Duration) -> Clock {
        Clock {
            inner: Mutex::new(Inner {
                base_real: Instant::now(),
                base_emulated: Utc::now() - TimeDelta::from_std(behind).unwrap_or(TimeDelta::zero()),
                speed,
            }),
        }
    }

    /// The current emulated time. Monotonic.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.inner.lock().unwrap().now()
    }

    pub(crate) fn speed(&self) -> f64 {
        self.inner.lock().unwrap().speed
    }

    /// Change the speed from now on (time already elapsed is kept).
    pub(crate) fn set_speed(&self, speed: f64) {
        let mut inner = self.inner.lock().unwrap();
        if inner.speed == speed {
            return;
        }
        inner.base_emulated = inner.now();
        inner.base_real = Instant::now();
        inner.speed = speed;
    }

    /// Jump forward.
    pub(crate) fn advance(&self, by: Duration) {
        let mut inner = self.inner.lock().unwrap();
        inner.base_emulated += TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
    }

    /// Convert an emulated duration into the real time it takes at the current speed
    /// (used for `Retry-After`). At speed 0 the emulated value is returned unchanged.
    pub(crate) fn to_real_secs(&self, emulated_secs: f64) -> f64 {
        let speed = self.speed();
        if speed > 0.0 {
            emulated_secs / speed
        } else {
            emulated_secs
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_clock_moves_only_when_advanced() {
        let clock = Clock::new(0.0);
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::from_secs(3600));
        assert_eq!(clock.now() - t0, TimeDelta::seconds(3600));
    }

    #[test]
    fn a_clock_can_start_behind_real_time() {
        let clock = Clock::starting_behind(1.0, Duration::from_secs(600));
        let lag = Utc::now() - clock.now();
        assert!(
            lag >= TimeDelta::seconds(599) && lag <= TimeDelta::seconds(601),
            "{lag}"
        );
    }

    #[test]
    fn speed_change_keeps_elapsed_time() {
        let clock = Clock::new(1000.0);
        let t0 = clock.now();
        std::thread::sleep(Duration::from_millis(5));
        clock.set_speed(0.0);
        let t1 = clock.now();
        assert!(t1 - t0 >= TimeDelta::seconds(5));
        assert_eq!(clock.now(), t1);
        assert_eq!(clock.to_real_secs(2.0), 2.0);
    }
}
