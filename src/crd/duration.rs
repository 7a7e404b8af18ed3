//! `GoDuration`: a non-negative Go duration (`2160h`, `90m`, `1h30m`, `1.5h`) parsed with
//! checked integer arithmetic and bounded by [`MAX_DURATION`].
//!
//! kube's `Duration` multiplies floats and panics on values the schema pattern admits
//! (`99999999999999999999h`), and a panic while the watcher decodes a list takes the whole
//! operator down. Here every value the pattern admits either parses or is a decode error.

use schemars::{json_schema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The longest duration any field accepts: 10 years (87600h).
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// [`MAX_DURATION`] as the schema's CEL rule and the messages spell it.
pub const MAX_DURATION_TEXT: &str = "87600h";
/// Longest string a duration field accepts (`1h2m3s4ms5us6ns` and the like fit easily).
pub const MAX_DURATION_LENGTH: usize = 32;

/// Regex of a Go-style duration as `metav1.Duration` accepts it, without a sign: the
/// format CEL's `duration()` understands, so schema and CEL rules agree.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// Why a duration string is refused. Names the value (never long: see `shown`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("duration {0:?} is longer than {MAX_DURATION_LENGTH} characters")]
    TooLong(String),
    #[error("duration {0:?} is not a Go duration such as 2160h, 90m or 1h30m")]
    Syntax(String),
    #[error("duration {0:?} exceeds the maximum of {MAX_DURATION_TEXT}")]
    TooLarge(String),
}

/// A non-negative duration of at most [`MAX_DURATION`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(Duration);

impl GoDuration {
    /// `d`, if within the bound.
    pub fn new(d: Duration) -> Option<Self> {
        (d <= MAX_DURATION).then_some(Self(d))
    }

    /// Whole hours (for defaults); `hours` must be within the bound.
    pub const fn from_hours(hours: u64) -> Self {
        Self(Duration::from_secs(hours * 3600))
    }

    pub const fn as_std(self) -> Duration {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Self {
        d.0
    }
}

/// Nanoseconds per unit.
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{00b5}s" | "\u{03bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// A value shown in an error: at most the first 40 characters.
fn shown(s: &str) -> String {
    s.chars().take(40).collect()
}

/// `digits` (ASCII, non-empty) times `unit` nanoseconds, None on overflow.
fn integer_part(digits: &str, unit: u128) -> Option<u128> {
    digits
        .bytes()
        .try_fold(0u128, |acc, b| {
            acc.checked_mul(10)?.checked_add(u128::from(b.checked_sub(b'0')?))
        })?
        .checked_mul(unit)
}

/// `0.digits` times `unit` nanoseconds, truncated to whole nanoseconds as Go does.
fn fraction_part(digits: &str, unit: u128) -> Option<u128> {
    let mut value = 0u128;
    let mut scale = unit;
    for b in digits.bytes() {
        if scale == 0 {
            break;
        }
        scale /= 10;
        value = value.checked_add(u128::from(b.checked_sub(b'0')?).checked_mul(scale)?)?;
    }
    Some(value)
}

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_DURATION_LENGTH {
            return Err(DurationError::TooLong(shown(s)));
        }
        let syntax = || DurationError::Syntax(shown(s));
        let too_large = || DurationError::TooLarge(shown(s));
        if s == "0" {
            return Ok(Self(Duration::ZERO));
        }
        let max = MAX_DURATION.as_nanos();
        let mut total: u128 = 0;
        let mut rest = s;
        if rest.is_empty() {
            return Err(syntax());
        }
        while !rest.is_empty() {
            let number_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(syntax)?;
            let (number, tail) = rest.split_at(number_end);
            let unit_end = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_end);
            let unit = unit_nanos(unit).ok_or_else(syntax)?;
            let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
            let fraction_ok = fraction.bytes().all(|b| b.is_ascii_digit());
            if whole.is_empty() || !fraction_ok || (number.contains('.') && fraction.is_empty()) {
                return Err(syntax());
            }
            let part = integer_part(whole, unit)
                .and_then(|w| w.checked_add(fraction_part(fraction, unit)?))
                .ok_or_else(too_large)?;
            total = total
                .checked_add(part)
                .filter(|t| *t <= max)
                .ok_or_else(too_large)?;
            rest = tail;
        }
        let secs = u64::try_from(total / 1_000_000_000).map_err(|_| too_large())?;
        let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| too_large())?;
        Ok(Self(Duration::new(secs, nanos)))
    }
}

impl fmt::Display for GoDuration {
    /// The largest unit that divides the value: `2160h`, `90m`, `30s`, `250ms`, `7ns`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        for (unit, size) in [
            ("h", 3_600_000_000_000u128),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
        ] {
            if nanos >= size && nanos.is_multiple_of(size) {
                return write!(f, "{}{unit}", nanos / size);
            }
        }
        if nanos == 0 {
            return f.write_str("0s");
        }
        write!(f, "{nanos}ns")
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Go duration such as 2160h")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// The CEL rule bounding a duration field, for clusters that enforce CEL (>= 1.25); the
/// pattern and length bound it everywhere.
fn max_rule() -> serde_json::Value {
    serde_json::json!([{
        "rule": format!("duration(self) <= duration('{MAX_DURATION_TEXT}')"),
        "message": format!("must be at most {MAX_DURATION_TEXT} (10 years)"),
    }])
}

/// Schema of a duration field: a bounded string in Go duration syntax.
pub fn duration_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": DURATION_PATTERN,
        "maxLength": MAX_DURATION_LENGTH,
        "x-kubernetes-validations": max_rule(),
    })
}

/// Schema of an optional duration field (the derive marks `Option` fields nullable itself).
pub fn optional_duration_schema(g: &mut SchemaGenerator) -> Schema {
    let mut schema = duration_schema(g);
    schema.insert("nullable".into(), true.into());
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Duration, DurationError> {
        s.parse::<GoDuration>().map(Duration::from)
    }

    #[test]
    fn go_durations_parse_exactly() {
        assert_eq!(parse("2160h"), Ok(Duration::from_secs(2160 * 3600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0.1s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("1ms2us3ns"), Ok(Duration::new(0, 1_002_003)));
        assert_eq!(parse("2µs"), Ok(Duration::from_micros(2)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("87600h"), Ok(MAX_DURATION));
        assert_eq!(parse("0.0000000001s"), Ok(Duration::ZERO), "below 1ns truncates");
    }

    #[test]
    fn values_the_pattern_admits_but_too_large_are_errors_not_panics() {
        for s in [
            "99999999999999999999h",
            "87600h1ns",
            "87601h",
            "5256000m1s",
            "340282366920938463463374607431768211455ns",
            "18446744073709551616s",
            "9999999999999999999999999999h",
            "87599h60m1s",
        ] {
            assert!(parse(s).is_err(), "{s}");
        }
        assert!(matches!(parse("87601h"), Err(DurationError::TooLarge(_))));
    }

    #[test]
    fn malformed_values_are_syntax_errors() {
        for s in [
            "", "h", "1", "-1h", "+1h", "1.h", ".5h", "1x", "1h-", "1hh", "1 h", "1e3s", "1.2.3s",
        ] {
            assert!(parse(s).is_err(), "{s:?}");
        }
        assert!(matches!(parse(&"1".repeat(33)), Err(DurationError::TooLong(_))));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "2160h", "90m", "30s", "250ms", "7us", "3ns", "0s", "1h30m", "1.5h", "87600h",
        ] {
            let d: GoDuration = s.parse().unwrap();
            let again: GoDuration = d.to_string().parse().unwrap();
            assert_eq!(d, again, "{s} -> {d}");
        }
        assert_eq!(GoDuration::from_hours(2160).to_string(), "2160h");
        assert_eq!("1h30m".parse::<GoDuration>().unwrap().to_string(), "90m");
    }

    #[test]
    fn deserialization_reports_instead_of_panicking() {
        let err = serde_json::from_str::<GoDuration>("\"99999999999999999999h\"").unwrap_err();
        assert!(err.to_string().contains("exceeds the maximum of 87600h"), "{err}");
        assert!(serde_json::from_str::<GoDuration>("5").is_err());
    }

    #[test]
    fn every_short_digit_string_with_a_unit_parses_or_errs() {
        // Exhaustive over a small alphabet: no input of up to 4 characters panics.
        let alphabet = ['0', '9', '.', 'h', 'm', 's', 'n', 'u'];
        let mut inputs = vec![String::new()];
        for _ in 0..4 {
            inputs = inputs
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            for s in &inputs {
                let _ = parse(s);
            }
        }
    }
}
