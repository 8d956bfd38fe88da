//! The time now, and times and durations as people read them. Below every other module: the
//! stores, the session and the commands read the clock here, and the error type and the
//! commands format times the same way without the one reaching up into the other.

/// The time, injectable for tests.
pub trait Clock: Send + Sync {
    /// Unix seconds.
    fn now(&self) -> i64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// Unix seconds as an RFC 3339 UTC time, for people and JSON.
pub fn format_time(unix: i64) -> String {
    // RFC 3339 stops at the year 9999 (humantime refuses later times): clamp, never panic on
    // a nonsense time read from a file or the keychain.
    const LAST_SECOND_OF_9999: i64 = 253_402_300_799;
    let secs = unix.clamp(0, LAST_SECOND_OF_9999) as u64;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A duration in seconds as "1 h 5 min", "12 min", "40 s", "3 days".
pub fn format_span(secs: i64) -> String {
    let s = secs.unsigned_abs();
    let text = if s >= 2 * 86_400 {
        format!("{} days", s / 86_400)
    } else if s >= 3600 {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    };
    if secs < 0 {
        format!("{text} ago")
    } else {
        text
    }
}
