//! Injected faults: latency, dropped connections, 503/504s, 429s (contract §2.1, §2.2,
//! checklist 6). Decisions come from counters (`*_next`, counted down) and from seeded dice.
//! Lost responses (a processed request whose answer is held back) are decided by
//! [`holds`] and carried out by the server after processing.

use std::time::Duration;

use rand::{rngs::StdRng, Rng, SeedableRng};

use super::config::{FaultConfig, FaultScope};

/// The dice, reseeded whenever `FaultConfig::seed` changes.
#[derive(Debug)]
pub(crate) struct Dice {
    rng: StdRng,
    seed: Option<u64>,
}

impl Dice {
    pub(crate) fn new(seed: Option<u64>) -> Dice {
        Dice {
            rng: Self::rng(seed),
            seed,
        }
    }

    fn rng(seed: Option<u64>) -> StdRng {
        match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        }
    }

    fn sync(&mut self, seed: Option<u64>) {
        if seed != self.seed {
            self.rng = Self::rng(seed);
            self.seed = seed;
        }
    }

    fn roll(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.rng.gen::<f64>() < rate
    }
}

/// Faults that act before the request is processed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TransportFaults {
    pub latency: Option<Duration>,
    pub drop: bool,
    /// Status (503/504) and optional `Retry-After`.
    pub error: Option<(u16, Option<Duration>)>,
}

fn applies(cfg: &FaultConfig, operation: &str) -> bool {
    cfg.operations.is_empty() || cfg.operations.iter().any(|o| o == operation)
}

fn take(counter: &mut u32) -> bool {
    if *counter > 0 {
        *counter -= 1;
        true
    } else {
        false
    }
}

/// Latency, drop and 503 for a Graph (`graph = true`) or token request.
pub(crate) fn transport(
    cfg: &mut FaultConfig,
    dice: &mut Dice,
    graph: bool,
    operation: &str,
) -> TransportFaults {
    dice.sync(cfg.seed);
    let in_scope = match cfg.scope {
        FaultScope::Graph => graph,
        FaultScope::Token => !graph,
        FaultScope::All => true,
    };
    if !in_scope || !applies(cfg, operation) {
        return TransportFaults::default();
    }
    let mut f = TransportFaults::default();
    if !cfg.latency.is_zero() && dice.roll(cfg.latency_rate) {
        f.latency = Some(cfg.latency);
    }
    if take(&mut cfg.drop_next) || dice.roll(cfg.drop_rate) {
        f.drop = true;
        return f;
    }
    if take(&mut cfg.error_next) || dice.roll(cfg.error_rate) {
        f.error = Some((cfg.error_status, cfg.error_retry_after));
    }
    f
}

/// Whether a processed request's 2xx answer is held back (a lost response): its operation
/// is in `hold_after_apply` and its caller matches `hold_callers`.
pub(crate) fn holds(cfg: &FaultConfig, operation: &str, caller: Option<&str>) -> bool {
    cfg.hold_after_apply.iter().any(|o| o == operation)
        && (cfg.hold_callers.is_empty()
            || caller.is_some_and(|c| cfg.hold_callers.iter().any(|h| h.eq_ignore_ascii_case(c))))
}

/// Whether a processed request's 2xx answer is lost (its connection dropped): uses up the
/// first `lose_after_apply` entry naming `operation`.
pub(crate) fn loses(cfg: &mut FaultConfig, operation: &str) -> bool {
    match cfg.lose_after_apply.iter().position(|o| o == operation) {
        Some(i) => {
            cfg.lose_after_apply.remove(i);
            true
        }
        None => false,
    }
}

/// An injected 429 for an authenticated Graph request: `Some(retry_after)` when throttled.
pub(crate) fn throttle(cfg: &mut FaultConfig, dice: &mut Dice, operation: &str) -> Option<Option<Duration>> {
    dice.sync(cfg.seed);
    if !applies(cfg, operation) {
        return None;
    }
    if take(&mut cfg.throttle_next) || dice.roll(cfg.throttle_rate) {
        Some(cfg.throttle_retry_after)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_down_and_filter_by_operation() {
        let mut cfg = FaultConfig::drop_next(1).only(&["application.create"]);
        let mut dice = Dice::new(Some(1));
        assert!(!transport(&mut cfg, &mut dice, true, "application.get").drop);
        assert!(transport(&mut cfg, &mut dice, true, "application.create").drop);
        assert!(!transport(&mut cfg, &mut dice, true, "application.create").drop);
        assert_eq!(cfg.drop_next, 0);
    }

    #[test]
    fn scope_limits_transport_faults() {
        let mut cfg = FaultConfig::error_next(1);
        let mut dice = Dice::new(Some(1));
        assert!(transport(&mut cfg, &mut dice, false, "token.v2").error.is_none());
        assert!(transport(&mut cfg, &mut dice, true, "application.get")
            .error
            .is_some());
    }

    #[test]
    fn holds_match_operation_and_caller() {
        let cfg = FaultConfig::hold_after_apply(&["application.upsert", "token.v2"]);
        assert!(holds(&cfg, "token.v2", None));
        assert!(!holds(&cfg, "application.get", None));
        let cfg = cfg.from_callers(&["ABC"]);
        assert!(holds(&cfg, "token.v2", Some("abc")));
        assert!(!holds(&cfg, "token.v2", Some("def")));
        assert!(!holds(&cfg, "token.v2", None));
        assert!(!holds(&FaultConfig::default(), "token.v2", None));
    }

    #[test]
    fn seeded_rates_are_reproducible() {
        let run = || {
            let mut cfg = FaultConfig {
                throttle_rate: 0.5,
                seed: Some(7),
                ..FaultConfig::default()
            };
            let mut dice = Dice::new(None);
            (0..32)
                .map(|_| throttle(&mut cfg, &mut dice, "x").is_some())
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        assert!(a.iter().any(|x| *x) && a.iter().any(|x| !*x));
    }

    #[test]
    fn a_lost_answer_uses_up_its_entry() {
        let mut cfg = FaultConfig {
            lose_after_apply: vec!["application.upsert".into(), "application.upsert".into()],
            ..FaultConfig::default()
        };
        assert!(!loses(&mut cfg, "application.get"));
        assert!(loses(&mut cfg, "application.upsert"));
        assert!(loses(&mut cfg, "application.upsert"));
        assert!(!loses(&mut cfg, "application.upsert"));
    }
}
