//! The one retry policy of the Graph client (token endpoint included), as a pure function.
//!
//! [`RetryPolicy::decide`] looks at what one attempt produced and answers "wait this long and
//! try again", "refresh the token and try again", or "stop". It takes the clock (elapsed time)
//! and the randomness (jitter) as arguments, so every rule is unit-tested without sleeping.
//!
//! Rules, in order:
//! 1. **Attempts and time are bounded**: no attempt beyond `max_attempts`, and no retry whose
//!    wait would end after `max_elapsed` since the call started (the caller then gets the last
//!    error, e.g. `Throttled { retry_after }`, and requeues).
//!    **Long waits are not slept inline**: a throttling or backoff wait longer than
//!    `max_inline_wait` stops with [`StopReason::MustWait`], so the caller (a reconcile
//!    holding a worker slot) requeues for that long instead of sleeping. Replication waits
//!    are the exception: a 404 given back would read as "gone", so they stay inline (within
//!    `max_elapsed`).
//! 2. **401 `InvalidAuthenticationToken`** (expired or revoked token): refresh the token once and
//!    retry at once. A second 401 stops.
//! 3. **429, and 503 with `Retry-After`**: wait exactly `Retry-After` (fractional seconds or an
//!    HTTP-date, contract §2.2) — even beyond `max_delay`, never less. Without the header:
//!    exponential backoff.
//! 4. **500, 502, 503, 504, timeouts and dropped connections**: exponential backoff with full
//!    jitter (`random(0, min(max_delay, base·2^(n-1)))`).
//! 5. **Connect failures** (the request never left): backoff as in 4.
//! 6. **Replication** (contract §5, §7): a 404 on a read, PATCH or addPassword of an object the
//!    caller says it just created ([`Freshness::JustCreated`]); SP create's 400
//!    `NoBackingApplicationObject` (always: the contract calls it retryable and nothing was
//!    created); SP create's 403 "backing application ... must in the local tenant" (only when
//!    just created, since a 403 is otherwise a real permission problem). Backoff from
//!    `replication_base_delay` (1, 2, 4, 8, 16 s with equal jitter).
//! 7. **Non-idempotent calls** (addPassword, SP create): repeated only after outcomes that prove
//!    the operation was not applied — a connect failure, a 429 (throttled requests are
//!    rejected, not executed), a 401, or a replication 404/400 (the target was not found).
//!    After a 5xx, a timeout or a dropped connection the outcome is unknown: stop and let the
//!    caller reconcile, because a repeated addPassword could leave an unrecorded password
//!    behind.
//! 8. Everything else (other 4xx) stops at once.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::config::RetryConfig;

/// Whether repeating a request can apply its effect twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idempotency {
    /// GET, PATCH, DELETE, upsert, removePassword, token requests.
    Idempotent,
    /// addPassword (each call mints a password), POST create.
    NonIdempotent,
}

/// Whether the object the call targets was created moments ago, so that a 404 is most likely
/// replication lag (contract §7) rather than a real absence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Freshness {
    /// Created by this reconcile (or shortly before): 404s are retried.
    JustCreated,
    /// An object known for a while: a 404 means it is gone.
    #[default]
    Settled,
}

/// What kind of call failed, as far as the policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallClass {
    /// Repeating may duplicate the effect.
    pub idempotency: Idempotency,
    /// The target was just created.
    pub freshness: Freshness,
    /// This is `POST /servicePrincipals` (its replication errors are 400/403, not 404).
    pub service_principal_create: bool,
}

impl CallClass {
    /// An idempotent call on a settled object.
    pub const fn idempotent() -> Self {
        Self {
            idempotency: Idempotency::Idempotent,
            freshness: Freshness::Settled,
            service_principal_create: false,
        }
    }

    /// A non-idempotent call.
    pub const fn non_idempotent() -> Self {
        Self {
            idempotency: Idempotency::NonIdempotent,
            freshness: Freshness::Settled,
            service_principal_create: false,
        }
    }

    /// The same class with the given freshness.
    pub const fn with_freshness(mut self, freshness: Freshness) -> Self {
        self.freshness = freshness;
        self
    }
}

/// What one attempt produced.
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    /// The server answered (with a non-success status).
    Response {
        /// HTTP status.
        status: u16,
        /// Parsed `Retry-After`.
        retry_after: Option<Duration>,
        /// `error.details[0].code`.
        detail_code: Option<&'a str>,
        /// Graph `error.message` (only consulted for the SP-create 400/403 texts).
        message: &'a str,
    },
    /// The connection could not be established (DNS, TCP, TLS): the request was never sent.
    ConnectFailed,
    /// The request may have been sent but no complete answer came back (timeout, reset).
    Interrupted,
}

/// Why a retry is scheduled (for logs and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryReason {
    /// The server's `Retry-After`.
    RetryAfter,
    /// Throttled without `Retry-After`.
    Throttled,
    /// A 5xx.
    ServerError,
    /// Connect failure, timeout, dropped connection.
    Transport,
    /// Replication lag on a just-created object.
    Replication,
}

/// Why the policy stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The outcome is final (a 4xx that retrying cannot fix).
    NotRetryable,
    /// A non-idempotent request may have been applied.
    OutcomeUnknown,
    /// `max_attempts` reached.
    AttemptsExhausted,
    /// The next wait would end after `max_elapsed`.
    TimeBudgetExhausted,
    /// The next wait is longer than `max_inline_wait`: come back after `wait`.
    MustWait {
        /// How long the server or the backoff asked to wait.
        wait: Duration,
    },
}

/// The policy's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Sleep `delay`, then send the request again.
    Retry {
        /// How long to wait.
        delay: Duration,
        /// Why.
        reason: RetryReason,
    },
    /// Drop the cached token, get a new one, send again at once.
    RefreshTokenAndRetry,
    /// Give up; surface the last error.
    Stop(StopReason),
}

/// The retry policy: [`RetryConfig`] bounds plus the rules in the module doc.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    cfg: RetryConfig,
}

impl RetryPolicy {
    /// A policy with these bounds.
    pub fn new(cfg: RetryConfig) -> Self {
        Self { cfg }
    }

    /// The bounds.
    pub fn config(&self) -> &RetryConfig {
        &self.cfg
    }

    /// Decides what to do after attempt number `attempt` (1-based) of a call of class `class`
    /// ended with `outcome`, `elapsed` after the call started. `token_refreshed` tells whether
    /// this call already refreshed its token after a 401. `jitter` is a uniform random number
    /// in `[0, 1)`.
    pub fn decide(
        &self,
        class: CallClass,
        outcome: &Outcome<'_>,
        attempt: u32,
        elapsed: Duration,
        token_refreshed: bool,
        jitter: f64,
    ) -> Decision {
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let non_idempotent = class.idempotency == Idempotency::NonIdempotent;
        let just_created = class.freshness == Freshness::JustCreated;

        let (delay, reason) = match *outcome {
            Outcome::ConnectFailed => (self.full_jitter(attempt, jitter), RetryReason::Transport),
            Outcome::Interrupted => {
                if non_idempotent {
                    return Decision::Stop(StopReason::OutcomeUnknown);
                }
                (self.full_jitter(attempt, jitter), RetryReason::Transport)
            }
            Outcome::Response {
                status,
                retry_after,
                detail_code,
                message,
            } => match status {
                401 => {
                    if token_refreshed || attempt >= self.cfg.max_attempts {
                        return Decision::Stop(StopReason::NotRetryable);
                    }
                    // Any 401 from Graph means the token was not accepted.
                    return Decision::RefreshTokenAndRetry;
                }
                429 => match retry_after {
                    Some(ra) => (ra, RetryReason::RetryAfter),
                    None => (
                        self.equal_jitter(self.cfg.base_delay, attempt, jitter),
                        RetryReason::Throttled,
                    ),
                },
                503 if retry_after.is_some() => {
                    if non_idempotent {
                        return Decision::Stop(StopReason::OutcomeUnknown);
                    }
                    (retry_after.unwrap_or_default(), RetryReason::RetryAfter)
                }
                500 | 502 | 503 | 504 => {
                    if non_idempotent {
                        return Decision::Stop(StopReason::OutcomeUnknown);
                    }
                    (self.full_jitter(attempt, jitter), RetryReason::ServerError)
                }
                404 if just_created => (
                    self.equal_jitter(self.cfg.replication_base_delay, attempt, jitter),
                    RetryReason::Replication,
                ),
                400 if class.service_principal_create
                    && (detail_code == Some("NoBackingApplicationObject")
                        || message.contains("does not reference a valid application object")) =>
                {
                    (
                        self.equal_jitter(self.cfg.replication_base_delay, attempt, jitter),
                        RetryReason::Replication,
                    )
                }
                403 if class.service_principal_create
                    && just_created
                    && message.contains("backing application of the service principal") =>
                {
                    (
                        self.equal_jitter(self.cfg.replication_base_delay, attempt, jitter),
                        RetryReason::Replication,
                    )
                }
                _ => return Decision::Stop(StopReason::NotRetryable),
            },
        };

        if attempt >= self.cfg.max_attempts {
            return Decision::Stop(StopReason::AttemptsExhausted);
        }
        if delay > self.cfg.max_inline_wait && reason != RetryReason::Replication {
            return Decision::Stop(StopReason::MustWait { wait: delay });
        }
        if elapsed.saturating_add(delay) > self.cfg.max_elapsed {
            return Decision::Stop(StopReason::TimeBudgetExhausted);
        }
        Decision::Retry { delay, reason }
    }

    /// `min(max_delay, base_delay·2^(attempt-1))` — the ceiling of the backoff step.
    pub fn backoff_ceiling(&self, base: Duration, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        base.saturating_mul(1u32 << exp).min(self.cfg.max_delay)
    }

    /// Full jitter: uniform in `[0, ceiling]`.
    fn full_jitter(&self, attempt: u32, jitter: f64) -> Duration {
        self.backoff_ceiling(self.cfg.base_delay, attempt).mul_f64(jitter)
    }

    /// Equal jitter: uniform in `[ceiling/2, ceiling]` — used where the wait must not collapse
    /// to zero (replication lag, throttling without a hint).
    fn equal_jitter(&self, base: Duration, attempt: u32, jitter: f64) -> Duration {
        let c = self.backoff_ceiling(base, attempt);
        c / 2 + (c / 2).mul_f64(jitter)
    }
}

/// The longest `Retry-After` honoured, in either form: a server (or anything between) that
/// asks for more is treated as asking for a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// Parses a `Retry-After` value: non-negative seconds, fractional allowed (`2.128`, contract
/// §2.2), or an HTTP-date (RFC 9110), measured from `now`. Dates in the past give zero; both
/// forms are capped at [`MAX_RETRY_AFTER`]. Anything else gives `None` (treated as no header).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            // Capped before conversion: Duration::from_secs_f64 panics on overflow.
            return Some(Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())));
        }
        return None;
    }
    let date = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some(
        (date - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// A uniform random number in `[0, 1)` for jitter, from the OS RNG behind `uuid` v4 (keeps
/// `rand` out of the dependency graph).
pub fn random_jitter() -> f64 {
    // The low 64 bits of a v4 UUID start with the 2 fixed variant bits; bits 0..62 are
    // random. Keep 53 of them (an f64 mantissa).
    let low = uuid::Uuid::new_v4().as_u128() as u64;
    let bits = (low & ((1u64 << 62) - 1)) >> 9;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(RetryConfig::default())
    }

    /// The policy with no inline bound, to test the rules beneath it.
    fn sleeps_any_wait() -> RetryPolicy {
        RetryPolicy::new(RetryConfig {
            max_inline_wait: Duration::MAX,
            ..RetryConfig::default()
        })
    }

    fn resp(status: u16, retry_after: Option<Duration>) -> Outcome<'static> {
        Outcome::Response {
            status,
            retry_after,
            detail_code: None,
            message: "",
        }
    }

    const S: Duration = Duration::ZERO;

    #[test]
    fn retry_after_parses_fractional_seconds_and_http_dates() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        assert_eq!(parse_retry_after("2.128", now), Some(Duration::from_millis(2128)));
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("0.5", now), Some(Duration::from_millis(500)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["-1", "NaN", "inf", "soon", ""] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
        assert_eq!(parse_retry_after("1e12", now), Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn an_http_date_retry_after_is_capped_like_seconds() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        // A day and a second ahead, and years ahead: both a day.
        assert_eq!(
            parse_retry_after("Fri, 02 Jan 2026 12:00:01 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        // Just under the cap is kept.
        assert_eq!(
            parse_retry_after("Fri, 02 Jan 2026 11:59:59 GMT", now),
            Some(Duration::from_secs(86_399))
        );
    }

    #[test]
    fn long_waits_are_handed_back_instead_of_slept() {
        let p = policy();
        let c = CallClass::idempotent();
        let bound = p.config().max_inline_wait;
        assert_eq!(bound, Duration::from_secs(2));
        // Within the bound: slept inline.
        assert!(matches!(
            p.decide(c, &resp(429, Some(bound)), 1, S, false, 0.0),
            Decision::Retry { delay, .. } if delay == bound
        ));
        // Beyond: the caller requeues for exactly the server's wait.
        let long = Duration::from_secs(30);
        assert_eq!(
            p.decide(c, &resp(429, Some(long)), 1, S, false, 0.0),
            Decision::Stop(StopReason::MustWait { wait: long })
        );
        assert_eq!(
            p.decide(
                CallClass::non_idempotent(),
                &resp(429, Some(long)),
                1,
                S,
                false,
                0.0
            ),
            Decision::Stop(StopReason::MustWait { wait: long })
        );
        // Backoff steps beyond the bound too (attempt 5: ceiling 8 s, jitter 0.5 gives 4 s).
        assert_eq!(
            p.decide(c, &resp(500, None), 5, S, false, 0.5),
            Decision::Stop(StopReason::MustWait {
                wait: Duration::from_secs(4)
            })
        );
        // Replication lag stays inline: a 404 handed back would read as "gone".
        assert!(matches!(
            p.decide(
                c.with_freshness(Freshness::JustCreated),
                &resp(404, None),
                4,
                S,
                false,
                0.5
            ),
            Decision::Retry {
                reason: RetryReason::Replication,
                ..
            }
        ));
    }

    #[test]
    fn throttling_waits_exactly_retry_after_even_beyond_max_delay() {
        let p = RetryPolicy::new(RetryConfig {
            max_inline_wait: Duration::from_secs(60),
            ..RetryConfig::default()
        });
        let ra = Duration::from_millis(2128);
        for class in [CallClass::idempotent(), CallClass::non_idempotent()] {
            assert_eq!(
                p.decide(class, &resp(429, Some(ra)), 1, S, false, 0.99),
                Decision::Retry {
                    delay: ra,
                    reason: RetryReason::RetryAfter
                }
            );
        }
        let long = Duration::from_secs(30); // > max_delay (16 s), < max_elapsed (60 s)
        assert_eq!(
            p.decide(CallClass::idempotent(), &resp(429, Some(long)), 1, S, false, 0.0),
            Decision::Retry {
                delay: long,
                reason: RetryReason::RetryAfter
            }
        );
        assert_eq!(
            p.decide(CallClass::idempotent(), &resp(503, Some(ra)), 1, S, false, 0.0),
            Decision::Retry {
                delay: ra,
                reason: RetryReason::RetryAfter
            }
        );
    }

    #[test]
    fn throttling_without_header_backs_off_but_never_to_zero() {
        let p = policy();
        match p.decide(CallClass::idempotent(), &resp(429, None), 3, S, false, 0.0) {
            Decision::Retry {
                delay,
                reason: RetryReason::Throttled,
            } => {
                assert_eq!(delay, Duration::from_secs(1)) // ceiling 2 s, equal jitter floor 1 s
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn server_errors_use_full_jitter_within_the_exponential_ceiling() {
        let p = sleeps_any_wait();
        for attempt in 1..8 {
            let ceiling = p.backoff_ceiling(Duration::from_millis(500), attempt);
            assert!(ceiling <= Duration::from_secs(16));
            for (jitter, expect) in [(0.0, Duration::ZERO), (0.5, ceiling / 2)] {
                for status in [500, 502, 503, 504] {
                    assert_eq!(
                        p.decide(
                            CallClass::idempotent(),
                            &resp(status, None),
                            attempt,
                            S,
                            false,
                            jitter
                        ),
                        Decision::Retry {
                            delay: expect,
                            reason: RetryReason::ServerError
                        }
                    );
                }
            }
        }
        assert_eq!(
            p.backoff_ceiling(Duration::from_millis(500), 1),
            Duration::from_millis(500)
        );
        assert_eq!(
            p.backoff_ceiling(Duration::from_millis(500), 4),
            Duration::from_secs(4)
        );
        assert_eq!(
            p.backoff_ceiling(Duration::from_millis(500), 40),
            Duration::from_secs(16)
        );
    }

    #[test]
    fn non_idempotent_calls_stop_when_the_outcome_is_unknown() {
        let p = policy();
        let c = CallClass::non_idempotent();
        for o in [
            resp(500, None),
            resp(503, None),
            resp(504, None),
            Outcome::Interrupted,
        ] {
            assert_eq!(
                p.decide(c, &o, 1, S, false, 0.5),
                Decision::Stop(StopReason::OutcomeUnknown),
                "{o:?}"
            );
        }
        assert_eq!(
            p.decide(c, &resp(503, Some(Duration::from_secs(1))), 1, S, false, 0.5),
            Decision::Stop(StopReason::OutcomeUnknown)
        );
        // Proven not applied: connect failure, 429, 401.
        assert!(matches!(
            p.decide(c, &Outcome::ConnectFailed, 1, S, false, 0.5),
            Decision::Retry {
                reason: RetryReason::Transport,
                ..
            }
        ));
        assert_eq!(
            p.decide(c, &resp(401, None), 1, S, false, 0.5),
            Decision::RefreshTokenAndRetry
        );
        // Idempotent calls do retry interrupted exchanges.
        assert!(matches!(
            p.decide(CallClass::idempotent(), &Outcome::Interrupted, 1, S, false, 0.5),
            Decision::Retry {
                reason: RetryReason::Transport,
                ..
            }
        ));
    }

    #[test]
    fn token_refresh_happens_once() {
        let p = policy();
        let c = CallClass::idempotent();
        assert_eq!(
            p.decide(c, &resp(401, None), 1, S, false, 0.0),
            Decision::RefreshTokenAndRetry
        );
        assert_eq!(
            p.decide(c, &resp(401, None), 2, S, true, 0.0),
            Decision::Stop(StopReason::NotRetryable)
        );
    }

    #[test]
    fn replication_errors_retry_only_where_safe() {
        let p = policy();
        let fresh = CallClass::idempotent().with_freshness(Freshness::JustCreated);
        let add_password = CallClass::non_idempotent().with_freshness(Freshness::JustCreated);
        for c in [fresh, add_password] {
            match p.decide(c, &resp(404, None), 1, S, false, 0.0) {
                Decision::Retry {
                    delay,
                    reason: RetryReason::Replication,
                } => {
                    assert_eq!(delay, Duration::from_millis(500))
                }
                d => panic!("{d:?}"),
            }
        }
        // Settled objects: a 404 is final.
        assert_eq!(
            p.decide(CallClass::idempotent(), &resp(404, None), 1, S, false, 0.0),
            Decision::Stop(StopReason::NotRetryable)
        );
        // Replication backoff grows 1, 2, 4, 8, 16 s (ceilings).
        assert_eq!(
            p.backoff_ceiling(Duration::from_secs(1), 5),
            Duration::from_secs(16)
        );

        let sp = CallClass {
            idempotency: Idempotency::NonIdempotent,
            freshness: Freshness::Settled,
            service_principal_create: true,
        };
        let no_backing = Outcome::Response {
            status: 400,
            retry_after: None,
            detail_code: Some("NoBackingApplicationObject"),
            message: "",
        };
        assert!(matches!(
            p.decide(sp, &no_backing, 1, S, false, 0.0),
            Decision::Retry {
                reason: RetryReason::Replication,
                ..
            }
        ));
        let other_400 = Outcome::Response {
            status: 400,
            retry_after: None,
            detail_code: None,
            message: "One or more properties contains invalid values.",
        };
        assert_eq!(
            p.decide(sp, &other_400, 1, S, false, 0.0),
            Decision::Stop(StopReason::NotRetryable)
        );
        let forbidden = Outcome::Response {
            status: 403,
            retry_after: None,
            detail_code: None,
            message: "When using this permission, the backing application of the service principal being created must in the local tenant",
        };
        assert_eq!(
            p.decide(sp, &forbidden, 1, S, false, 0.0),
            Decision::Stop(StopReason::NotRetryable)
        );
        assert!(matches!(
            p.decide(
                sp.with_freshness(Freshness::JustCreated),
                &forbidden,
                1,
                S,
                false,
                0.0
            ),
            Decision::Retry {
                reason: RetryReason::Replication,
                ..
            }
        ));
        // The same 400 outside SP create is final.
        assert_eq!(
            p.decide(CallClass::idempotent(), &no_backing, 1, S, false, 0.0),
            Decision::Stop(StopReason::NotRetryable)
        );
    }

    #[test]
    fn client_errors_are_final() {
        let p = policy();
        for status in [400, 403, 405, 409, 412, 501] {
            assert_eq!(
                p.decide(CallClass::idempotent(), &resp(status, None), 1, S, false, 0.0),
                Decision::Stop(StopReason::NotRetryable),
                "{status}"
            );
        }
    }

    #[test]
    fn attempts_and_time_are_bounded() {
        let p = sleeps_any_wait();
        let c = CallClass::idempotent();
        assert_eq!(
            p.decide(c, &resp(500, None), 8, S, false, 0.0),
            Decision::Stop(StopReason::AttemptsExhausted)
        );
        assert_eq!(
            p.decide(
                c,
                &resp(429, Some(Duration::from_secs(5))),
                1,
                Duration::from_secs(56),
                false,
                0.0
            ),
            Decision::Stop(StopReason::TimeBudgetExhausted)
        );
        assert!(matches!(
            p.decide(
                c,
                &resp(429, Some(Duration::from_secs(5))),
                1,
                Duration::from_secs(55),
                false,
                0.0
            ),
            Decision::Retry { .. }
        ));
        assert_eq!(
            p.decide(c, &resp(429, Some(Duration::from_secs(61))), 1, S, false, 0.0),
            Decision::Stop(StopReason::TimeBudgetExhausted)
        );
    }

    #[test]
    fn jitter_is_uniform_in_unit_interval() {
        let xs: Vec<f64> = (0..4000).map(|_| random_jitter()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((0.45..0.55).contains(&mean), "{mean}");
        // Each quarter of the interval gets about a quarter of the samples.
        for q in 0..4 {
            let lo = f64::from(q) / 4.0;
            let n = xs.iter().filter(|x| (lo..lo + 0.25).contains(*x)).count();
            assert!((800..1200).contains(&n), "quarter {q}: {n}");
        }
    }
}
