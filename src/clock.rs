//! Wall-clock time as the store keeps it: Unix milliseconds. The decision never reads the clock;
//! the shell passes `now` in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub type Millis = i64;

pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// RFC 3339 with milliseconds, UTC (`2026-11-25T12:00:00.000Z`).
pub fn rfc3339(t: Millis) -> String {
    let t = u64::try_from(t).unwrap_or(0);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(t)).to_string()
}

/// Parses RFC 3339 (`2026-11-25T12:00:00Z`) or Unix milliseconds.
pub fn parse_time(s: &str) -> Option<Millis> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as i64)
}

/// `serde(serialize_with)` helpers for API views.
pub mod serde_time {
    use serde::Serializer;

    use super::{rfc3339, Millis};

    pub fn serialize<S: Serializer>(t: &Millis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339(*t))
    }

    pub mod option {
        use serde::Serializer;

        use super::super::{rfc3339, Millis};

        pub fn serialize<S: Serializer>(t: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&rfc3339(*t)),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_time("1500"), Some(1500));
        assert_eq!(parse_time("yesterday"), None);
    }
}
