//! Durations as scenario files write them (`70m`, `1h`, `600s`, `1h 30m`, `500ms`).
//!
//! A bare number is refused: `idle: 70` could mean seconds or minutes, and a lab that
//! guesses units reproduces the wrong failure.
//!
//! The grammar: one or more `NUMBER UNIT` terms, summed (`1h 30m`, `1h30m`, `1.5h`); a space
//! may separate a number from its unit (`5 m`) and terms from each other. `NUMBER` is digits
//! with an optional decimal part; `UNIT` is case-sensitive: `ms`; `s`, `sec`, `secs`,
//! `second(s)`; `m`, `min`, `mins`, `minute(s)`; `h`, `hr`, `hrs`, `hour(s)`; `d`, `day(s)`.
//! Refused, each with its own message and hint ([`hint_for`]): a sign (`-5m` is not a
//! length of time), a number without a unit (`70`, `1h 30`), an unknown unit (`0x`, `70M`,
//! `2w`; months and years have no fixed length), and any other character (`5m,`, `1_000s`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A real-world duration from a scenario file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    /// A duration as scenario files write it; the error says what is wrong (see [`hint_for`]).
    pub fn parse(text: &str) -> Result<Self, String> {
        parse_nanos(text).map(|ns| Dur(Duration::from_nanos(ns))).map_err(|e| e.to_string())
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0.as_secs_f64()
    }
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DurError {
    Empty,
    /// Only a number (`70`, `1.5`): seconds or minutes?
    Bare(String),
    /// `-5m`, `+5m`.
    Signed {
        text: String,
        sign: char,
    },
    /// `1h 30`: a number of a compound duration without its unit.
    NoUnit {
        text: String,
        number: String,
    },
    /// `0x`, `70M`.
    UnknownUnit {
        text: String,
        unit: String,
    },
    /// `m`, `1h m`: a unit with no number before it.
    NoNumber {
        text: String,
        unit: String,
    },
    /// `1.s`: a decimal point without digits after it.
    BadNumber {
        text: String,
        number: String,
    },
    /// `5m,`, `1_000s`.
    Unexpected {
        text: String,
        c: char,
    },
    TooLarge(String),
}

/// The phrases [`hint_for`] recognises; each error's message contains exactly one.
const BARE: &str = "a duration with a unit";
const SIGNED: &str = "a duration cannot be";
const NO_UNIT: &str = "has no unit";
const UNKNOWN_UNIT: &str = "is not a duration unit";
const NO_NUMBER: &str = "has no number before it";
const BAD_NUMBER: &str = "is not a number";
const UNEXPECTED: &str = "cannot be in a duration";
const TOO_LARGE: &str = "is too large for a duration";
const EMPTY: &str = "a duration such as";

impl fmt::Display for DurError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurError::Empty => write!(f, "expected {EMPTY} 70m, 1h, 600s or 1h 30m, found nothing"),
            DurError::Bare(t) => {
                write!(f, "expected {BARE}, found `{t}` (write `{t}s` for seconds or `{t}m` for minutes)")
            }
            DurError::Signed { text, sign: '-' } => write!(f, "{SIGNED} negative, found `{text}`"),
            DurError::Signed { text, .. } => write!(f, "{SIGNED} signed, found `{text}`"),
            DurError::NoUnit { text, number } => write!(f, "`{number}` in `{text}` {NO_UNIT}"),
            DurError::UnknownUnit { text, unit } => write!(f, "`{unit}` in `{text}` {UNKNOWN_UNIT}"),
            DurError::NoNumber { text, unit } => write!(f, "the unit `{unit}` in `{text}` {NO_NUMBER}"),
            DurError::BadNumber { text, number } => write!(f, "`{number}` in `{text}` {BAD_NUMBER}"),
            DurError::Unexpected { text, c } => write!(f, "`{c}` {UNEXPECTED} (in `{text}`)"),
            DurError::TooLarge(t) => write!(f, "`{t}` {TOO_LARGE}"),
        }
    }
}

const UNITS: &str = "ms; s (sec, second); m (min, minute); h (hr, hour); d (day)";

/// The hint for a duration error's message (as [`Dur::parse`] or a deserializer wrote it),
/// saying what is wrong with it; `None` when the message is not about a duration.
pub fn hint_for(message: &str) -> Option<String> {
    let hint = if message.contains(SIGNED) {
        // The text as written is the first `quoted` part of the message.
        let written = message.split('`').nth(1).unwrap_or("-5m");
        let unsigned: String = written.chars().filter(|c| *c != '-' && *c != '+').collect();
        format!(
            "a duration is how long something lasts, always ≥ 0: drop the sign (`{}`); where a key allows it, `0s` means off",
            unsigned.split_whitespace().collect::<Vec<_>>().join(" ")
        )
    } else if message.contains(NO_UNIT) {
        "every number takes its unit: `1h 30m`, not `1h 30`".into()
    } else if message.contains(UNKNOWN_UNIT) {
        format!(
            "units (case-sensitive: `m` is minutes): {UNITS}; months and years are refused, they have no fixed length"
        )
    } else if message.contains(NO_NUMBER) {
        "write the number before its unit: `1m`, `1h 30m`".into()
    } else if message.contains(BAD_NUMBER) {
        "numbers are digits with an optional decimal part: `1.5h`, `500ms`".into()
    } else if message.contains(UNEXPECTED) {
        format!("a duration is numbers with their units, spaces allowed: `1h 30m`, `1h30m`, `5 m`; units: {UNITS}")
    } else if message.contains(TOO_LARGE) {
        "durations go up to about 584 years".into()
    } else if message.contains(BARE) || message.contains(EMPTY) {
        format!("durations take a unit: 600s, 70m, 1h, 1h 30m; units: {UNITS}")
    } else {
        return None;
    };
    Some(hint)
}

fn unit_nanos(unit: &str) -> Option<u128> {
    const S: u128 = 1_000_000_000;
    Some(match unit {
        "ms" => S / 1000,
        "s" | "sec" | "secs" | "second" | "seconds" => S,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * S,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600 * S,
        "d" | "day" | "days" => 86400 * S,
        _ => return None,
    })
}

/// Nanoseconds of a duration text (the grammar in the module's documentation).
fn parse_nanos(text: &str) -> Result<u64, DurError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(DurError::Empty);
    }
    if let Some(sign) = t.chars().next().filter(|c| *c == '-' || *c == '+') {
        return Err(DurError::Signed { text: t.into(), sign });
    }
    if t.chars().all(|c| c.is_ascii_digit() || c == '.') && t.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(DurError::Bare(t.into()));
    }
    let chars: Vec<char> = t.chars().collect();
    let (mut i, mut total) = (0usize, 0u128);
    let take = |i: &mut usize, f: &dyn Fn(char) -> bool| -> String {
        let start = *i;
        while *i < chars.len() && f(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect()
    };
    while i < chars.len() {
        take(&mut i, &|c| c.is_whitespace());
        if i == chars.len() {
            break;
        }
        let c = chars[i];
        if c.is_alphabetic() {
            let unit = take(&mut i, &|c| c.is_alphabetic());
            return Err(DurError::NoNumber { text: t.into(), unit });
        }
        if !c.is_ascii_digit() {
            return Err(match c {
                '-' | '+' => DurError::Signed { text: t.into(), sign: c },
                _ => DurError::Unexpected { text: t.into(), c },
            });
        }
        let number = take(&mut i, &|c| c.is_ascii_digit() || c == '.');
        let (whole, frac) = number.split_once('.').unwrap_or((&number, ""));
        if number.contains('.') && (frac.is_empty() || frac.contains('.')) {
            return Err(DurError::BadNumber { text: t.into(), number });
        }
        take(&mut i, &|c| c.is_whitespace());
        let unit = take(&mut i, &|c| c.is_alphabetic());
        if unit.is_empty() {
            return Err(match chars.get(i) {
                Some(c) if !c.is_ascii_digit() => DurError::Unexpected { text: t.into(), c: *c },
                _ => DurError::NoUnit { text: t.into(), number },
            });
        }
        let per = unit_nanos(&unit).ok_or_else(|| DurError::UnknownUnit { text: t.into(), unit })?;
        let too_large = || DurError::TooLarge(t.into());
        let whole: u128 = whole.parse().map_err(|_| too_large())?;
        let frac_ns = if frac.is_empty() {
            0
        } else {
            let digits = &frac[..frac.len().min(18)];
            let n: u128 = digits.parse().map_err(|_| too_large())?;
            n * per / 10u128.pow(digits.len() as u32)
        };
        total = whole
            .checked_mul(per)
            .and_then(|w| w.checked_add(frac_ns))
            .and_then(|x| total.checked_add(x))
            .ok_or_else(too_large)?;
    }
    u64::try_from(total).map_err(|_| DurError::TooLarge(t.into()))
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", human(self.0))
    }
}

/// `1h`, `70m`, `5.833s`, `250ms`: short and exact enough for summaries.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        if ms < 1000 {
            return format!("{ms}ms");
        }
        return format!("{:.3}s", d.as_secs_f64());
    }
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 70m, 1h, 600s or 1h 30m")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                Dur::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                Dur::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                Dur::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Dur, E> {
                Dur::parse(&v.to_string()).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(Dur::parse("70m").unwrap().0, Duration::from_secs(4200));
        assert_eq!(Dur::parse("1h 30m").unwrap().0, Duration::from_secs(5400));
        assert_eq!(Dur::parse("0s").unwrap().0, Duration::ZERO);
        assert_eq!(Dur::parse("500ms").unwrap().0, Duration::from_millis(500));
    }

    #[test]
    fn refuses_bare_numbers_with_a_hint() {
        let e = Dur::parse("70").unwrap_err();
        assert!(e.contains("`70s`"), "{e}");
        assert!(hint_for(&e).unwrap().contains("durations take a unit"), "{e}");
        assert!(Dur::parse("ten minutes").is_err());
    }

    #[test]
    fn accepts_spaces_compounds_fractions_and_long_unit_names() {
        assert_eq!(Dur::parse("5 m").unwrap(), Dur::secs(300));
        assert_eq!(Dur::parse("1h30m").unwrap(), Dur::secs(5400));
        assert_eq!(Dur::parse("2 hours 5 secs").unwrap(), Dur::secs(7205));
        assert_eq!(Dur::parse("1.5h").unwrap(), Dur::secs(5400));
        assert_eq!(Dur::parse("5.833s").unwrap().0, Duration::from_millis(5833));
        assert_eq!(Dur::parse("3d").unwrap(), Dur::secs(3 * 86400));
        // What `Display` prints parses back.
        for d in [Dur::secs(4200), Dur(Duration::from_millis(2335)), Dur(Duration::from_millis(250))] {
            assert_eq!(Dur::parse(&d.to_string()).unwrap(), d);
        }
    }

    /// Each refusal says what is wrong, and its hint is about that, not "take a unit".
    #[test]
    fn each_malformed_duration_gets_its_own_message_and_hint() {
        for (text, says, hint) in [
            ("-5m", "cannot be negative, found `-5m`", "drop the sign (`5m`)"),
            ("-90", "cannot be negative", "drop the sign"),
            ("+2h", "cannot be signed, found `+2h`", "drop the sign (`2h`)"),
            ("4m -30s", "cannot be negative, found `4m -30s`", "drop the sign (`4m 30s`)"),
            ("0x", "`x` in `0x` is not a duration unit", "case-sensitive"),
            ("12M", "`M` in `12M` is not a duration unit", "`m` is minutes"),
            ("3w", "`w` in `3w` is not a duration unit", "months and years"),
            ("2h 15", "`15` in `2h 15` has no unit", "every number takes its unit"),
            ("7 7m", "`7` in `7 7m` has no unit", "every number takes its unit"),
            ("min", "the unit `min` in `min` has no number", "number before its unit"),
            ("2.s", "`2.` in `2.s` is not a number", "decimal part"),
            ("45s;", "`;` cannot be in a duration", "spaces allowed"),
            ("1_000s", "`_` cannot be in a duration", "spaces allowed"),
            ("99999999999999999999d", "too large", "584 years"),
        ] {
            let e = Dur::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
            let h = hint_for(&e).unwrap_or_else(|| panic!("{text}: no hint for {e}"));
            assert!(h.contains(hint), "{text}: hint `{h}` for {e}");
            assert!(!h.contains("take a unit"), "{text}: the hint is about what is wrong: {h}");
        }
        assert_eq!(hint_for("unknown field `idel`"), None);
    }

    #[test]
    fn prints_short_forms() {
        assert_eq!(human(Duration::from_secs(3600)), "1h");
        assert_eq!(human(Duration::from_secs(4200)), "70m");
        assert_eq!(human(Duration::from_millis(5833)), "5.833s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
    }
}
