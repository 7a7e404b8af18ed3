//! Plain views of what the operator wrote (conditions, times), shared by the commands'
//! reports. Pure: no client calls, the clock is a parameter.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

/// Longest condition or Event message kept in a report (the apiserver allows 32 KiB).
const MAX_MESSAGE: usize = 1024;

/// One condition as a report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    /// When the status last flipped (RFC 3339).
    pub since: String,
    /// Computed for the object's current generation; a stale condition is not trusted.
    pub current: bool,
}

impl ConditionView {
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// The condition `type_` of an object at `generation`.
pub fn condition(conditions: &[Condition], type_: &str, generation: Option<i64>) -> Option<ConditionView> {
    let c = conditions.iter().find(|c| c.type_ == type_)?;
    let current = match (c.observed_generation, generation) {
        (Some(observed), Some(generation)) => observed >= generation,
        _ => true,
    };
    Some(ConditionView {
        status: bounded(&c.status, 16),
        reason: bounded(&c.reason, 128),
        message: bounded(&c.message, MAX_MESSAGE),
        since: c.last_transition_time.0.to_string(),
        current,
    })
}

/// Ready and computed for the current generation.
pub fn is_ready(ready: Option<&ConditionView>) -> bool {
    ready.is_some_and(|c| c.is_true() && c.current)
}

/// `text` cut to `max` characters (with "…" when cut), control characters (a terminal
/// escape written into a status by anyone who may write it) shown as `?`, newlines and
/// tabs as spaces.
pub fn bounded(text: &str, max: usize) -> String {
    let clean = |c: char| match c {
        '\n' | '\r' | '\t' => ' ',
        c if c.is_control() => '?',
        c => c,
    };
    if text.chars().count() <= max {
        return text.chars().map(clean).collect();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).map(clean).collect();
    s.push('…');
    s
}

/// The Entra error codes (`AADSTS7000215`, ...) named in `texts`, each once, in order.
pub fn idp_codes<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut codes: Vec<String> = Vec::new();
    for text in texts {
        let mut rest = text;
        while let Some(at) = rest.find("AADSTS") {
            let tail = rest.get(at + 6..).unwrap_or_default();
            let digits: String = tail.chars().take_while(char::is_ascii_digit).take(10).collect();
            if !digits.is_empty() {
                let code = format!("AADSTS{digits}");
                if !codes.contains(&code) {
                    codes.push(code);
                }
            }
            rest = tail;
        }
    }
    codes
}

/// How far `then` is from `now`, roughly: `in 29d`, `3h ago`, `in 5m`, `now`.
pub fn relative(now: Timestamp, then: Timestamp) -> String {
    let secs = then.as_second().saturating_sub(now.as_second());
    let abs = secs.unsigned_abs();
    let amount = match abs {
        0..=59 => return "now".to_string(),
        60..=3599 => format!("{}m", abs / 60),
        3600..=172_799 => format!("{}h", abs / 3600),
        _ => format!("{}d", abs / 86_400),
    };
    if secs > 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// Where a credential stands against its renewal time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Expiry {
    /// Before `renewAt`.
    Valid,
    /// Inside `renewBefore`: the operator should have replaced it, or is about to.
    RenewDue,
    /// Past `expiresAt`.
    Expired,
}

/// The state of a credential expiring at `expires_at` and due for renewal at `renew_at`.
pub fn expiry(now: Timestamp, expires_at: Timestamp, renew_at: Timestamp) -> Expiry {
    if now >= expires_at {
        Expiry::Expired
    } else if now >= renew_at {
        Expiry::RenewDue
    } else {
        Expiry::Valid
    }
}

/// Terminal colours, only when stdout is a terminal and `NO_COLOR` is unset
/// (<https://no-color.org>).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Palette {
    pub enabled: bool,
}

impl Palette {
    /// The palette for this process's stdout.
    pub fn detect() -> Self {
        use std::io::IsTerminal;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Palette {
            enabled: !no_color && std::io::stdout().is_terminal(),
        }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Yellow: inside renewBefore, throttled.
    pub fn warn(self, text: &str) -> String {
        self.paint("33", text)
    }

    /// Red: not Ready, expired, failed.
    pub fn bad(self, text: &str) -> String {
        self.paint("31", text)
    }

    /// Green: Ready, ok.
    pub fn good(self, text: &str) -> String {
        self.paint("32", text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn codes_are_found_once_each() {
        let codes = idp_codes([
            "AADSTS7000215: Invalid client secret provided. AADSTS7000215 again",
            "no code here; AADSTS; AADSTS90002: tenant",
        ]);
        assert_eq!(codes, vec!["AADSTS7000215", "AADSTS90002"]);
    }

    #[test]
    fn relative_times_read_naturally() {
        let now = ts("2026-12-02T00:00:00Z");
        assert_eq!(relative(now, ts("2026-12-31T00:00:00Z")), "in 29d");
        assert_eq!(relative(now, ts("2026-12-01T21:00:00Z")), "3h ago");
        assert_eq!(relative(now, ts("2026-12-02T00:00:30Z")), "now");
        assert_eq!(relative(now, ts("2026-12-02T00:05:00Z")), "in 5m");
    }

    #[test]
    fn expiry_inside_renew_before_is_due() {
        let (exp, renew) = (ts("2026-12-31T00:00:00Z"), ts("2026-12-21T00:00:00Z"));
        assert_eq!(expiry(ts("2026-12-01T00:00:00Z"), exp, renew), Expiry::Valid);
        assert_eq!(expiry(ts("2026-12-22T00:00:00Z"), exp, renew), Expiry::RenewDue);
        assert_eq!(expiry(ts("2027-01-01T00:00:00Z"), exp, renew), Expiry::Expired);
    }

    #[test]
    fn colour_only_when_enabled() {
        assert_eq!(Palette { enabled: false }.warn("x"), "x");
        assert_eq!(Palette { enabled: true }.warn("x"), "\x1b[33mx\x1b[0m");
    }

    #[test]
    fn long_messages_are_cut() {
        assert_eq!(bounded("abcdef", 4), "abc…");
        assert_eq!(bounded("abc", 4), "abc");
    }

    #[test]
    fn terminal_escapes_are_defused() {
        assert_eq!(bounded("a\x1b[2Jb\nc", 64), "a?[2Jb c");
    }
}
