//! Durations as scenario files write them (`70m`, `1h`, `600s`, `1h 30m`, `500ms`).
//!
//! A bare number is refused: `idle: 70` could mean seconds or minutes, and a lab that
//! guesses units reproduces the wrong failure.

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
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("expected a duration such as 70m, 1h, 600s or 1h 30m, found nothing".into());
        }
        if t.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(format!(
                "expected a duration with a unit, found `{t}` (write `{t}s` for seconds or `{t}m` for minutes)"
            ));
        }
        humantime::parse_duration(t)
            .map(Dur)
            .map_err(|e| format!("expected a duration such as 70m, 1h, 600s or 1h 30m, found `{t}` ({e})"))
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0.as_secs_f64()
    }
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
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
        assert!(Dur::parse("ten minutes").is_err());
    }

    #[test]
    fn prints_short_forms() {
        assert_eq!(human(Duration::from_secs(3600)), "1h");
        assert_eq!(human(Duration::from_secs(4200)), "70m");
        assert_eq!(human(Duration::from_millis(5833)), "5.833s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
    }
}
