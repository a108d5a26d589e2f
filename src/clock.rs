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

/// `2024-11-28T05:40:00.123Z` for Unix milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_millis_and_utc() {
        assert_eq!(rfc3339_ms(1_732_770_000_125), "2024-11-28T05:00:00.125Z");
    }
}
