//! Wall-clock time as the bridge records it: Unix milliseconds, and their
//! RFC 3339 form for the CloudEvents `ce_time` header. A leaf: it imports
//! nothing from the crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The latest time RFC 3339 can write: 9999-12-31T23:59:59.999Z.
pub const MAX_RFC3339_MS: u64 = 253_402_300_799_999;

/// `2024-11-28T05:40:00.123Z` for Unix milliseconds. Times past
/// [`MAX_RFC3339_MS`] are written as that time: formatting never panics
/// (the translation refuses such times before they get here).
pub fn rfc3339_ms(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.min(MAX_RFC3339_MS));
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_millis_and_utc() {
        assert_eq!(rfc3339_ms(1_732_770_000_125), "2024-11-28T05:00:00.125Z");
    }

    /// Issue 12, finding 5: a time after 9999-12-31 panicked here.
    #[test]
    fn times_beyond_rfc3339_do_not_panic() {
        assert_eq!(rfc3339_ms(MAX_RFC3339_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
