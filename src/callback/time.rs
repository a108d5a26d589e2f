//! When a callback's event happened, in Unix milliseconds: the field and
//! unit the command table gives its command (`EventTime` in milliseconds
//! for most, in seconds for the Push callbacks, `LastReadTime` in seconds
//! for read reports, ...). For a command the table does not know, an
//! `EventTime` of up to 11 digits is read as seconds and a longer one as
//! milliseconds, and the event says the unit was assumed.

use serde_json::{Map, Value};

use super::body::lenient_u64;
use super::table::{Command, Unit};
use super::{BodyError, FieldPath};
use crate::event::{TimeSource, TimeUnit};

/// The latest time an event may carry: 9999-12-31T23:59:59.999Z (RFC 3339,
/// and so the CloudEvents `ce_time` header, has four-digit years).
pub const MAX_TIME_MS: u64 = 253_402_300_799_999;

/// Below this, an unknown command's `EventTime` is taken as seconds:
/// 10^11 seconds is the year 5138; 10^11 milliseconds is 1973.
const SECONDS_BELOW: u64 = 100_000_000_000;

/// An event's time and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Time {
    pub(super) ms: u64,
    pub(super) source: TimeSource,
    pub(super) unit: Option<TimeUnit>,
    pub(super) assumed: bool,
}

impl Time {
    /// The bridge's receive time: the callback carries none.
    pub(super) fn received(received_at_ms: u64) -> Time {
        Time {
            ms: received_at_ms,
            source: TimeSource::Received,
            unit: None,
            assumed: false,
        }
    }
}

/// The time `fields` say their event happened, for the command of `row`
/// (`None`: a command the table does not know); `Ok(None)` when they say
/// nothing. A time that is not a non-negative integer, or that is after
/// [`MAX_TIME_MS`], is an invalid field: the callback is dead-lettered.
pub(super) fn time_in(
    fields: &Map<String, Value>,
    row: Option<&'static Command>,
) -> Result<Option<Time>, BodyError> {
    if let Some((field, unit)) = row.and_then(|r| r.event_time.as_ref()) {
        let value = if field.contains('.') {
            FieldPath::parse(field).ok().and_then(|p| p.value(fields))
        } else {
            fields.get(field.as_str())
        };
        if let Some(v) = value.filter(|v| !v.is_null()) {
            return read(field, v, *unit, false).map(Some);
        }
    }
    match fields.get("EventTime").filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(v) => {
            let raw = number("EventTime", v)?;
            let unit = if raw < SECONDS_BELOW {
                Unit::Seconds
            } else {
                Unit::Millis
            };
            read("EventTime", v, unit, true).map(Some)
        }
    }
}

fn number(field: &'static str, v: &Value) -> Result<u64, BodyError> {
    lenient_u64(v)
        .ok_or_else(|| BodyError::InvalidField(field, "not a non-negative integer".to_owned()))
}

fn read(field: &'static str, v: &Value, unit: Unit, assumed: bool) -> Result<Time, BodyError> {
    let raw = number(field, v)?;
    let ms = match unit {
        Unit::Seconds => raw.checked_mul(1000),
        Unit::Millis => Some(raw),
    }
    .filter(|ms| *ms <= MAX_TIME_MS)
    .ok_or_else(|| BodyError::InvalidField(field, "after 9999-12-31".to_owned()))?;
    Ok(Time {
        ms,
        source: TimeSource::Callback,
        unit: Some(match unit {
            Unit::Seconds => TimeUnit::Seconds,
            Unit::Millis => TimeUnit::Millis,
        }),
        assumed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::table;
    use serde_json::json;

    fn time(body: Value, command: &str) -> Result<Option<Time>, BodyError> {
        time_in(body.as_object().expect("object"), table().get(command))
    }

    #[test]
    fn each_command_is_read_in_its_own_unit() {
        let push = time(json!({"EventTime": 1557481127}), "Push.OfflinePush").expect("valid");
        assert_eq!(push.map(|t| t.ms), Some(1_557_481_127_000));
        assert_eq!(push.map(|t| t.assumed), Some(false));
        let group = time(
            json!({"EventTime": "1670574414123"}),
            "Group.CallbackAfterSendMsg",
        )
        .expect("valid")
        .expect("a time");
        assert_eq!(group.ms, 1_670_574_414_123);
        assert_eq!(group.unit, Some(TimeUnit::Millis));
        // A command whose time is another field, in seconds.
        let report = time(
            json!({"LastReadTime": 1557481127}),
            "C2C.CallbackAfterMsgReport",
        )
        .expect("valid")
        .expect("a time");
        assert_eq!(report.ms, 1_557_481_127_000);
        assert_eq!(
            time(json!({}), "Group.CallbackAfterSendMsg").expect("valid"),
            None
        );
    }

    #[test]
    fn unknown_commands_assume_the_unit_from_the_digits_and_say_so() {
        let s = time(json!({"EventTime": 1557481127}), "Brand.New")
            .expect("valid")
            .expect("t");
        assert_eq!(
            (s.ms, s.unit, s.assumed),
            (1_557_481_127_000, Some(TimeUnit::Seconds), true)
        );
        let ms = time(json!({"EventTime": 1670574414123u64}), "Brand.New")
            .expect("valid")
            .expect("t");
        assert_eq!(
            (ms.ms, ms.unit, ms.assumed),
            (1_670_574_414_123, Some(TimeUnit::Millis), true)
        );
    }

    /// Issue 12, finding 5: a time past 9999-12-31 panicked the worker when
    /// `ce_time` was formatted; it is an invalid field now.
    #[test]
    fn times_out_of_range_or_not_numbers_are_invalid() {
        for body in [
            json!({"EventTime": 253_402_300_800_000u64}),
            json!({"EventTime": u64::MAX}),
            json!({"EventTime": "soon"}),
            json!({"EventTime": -5}),
        ] {
            let e = time(body.clone(), "Group.CallbackAfterSendMsg").expect_err("invalid");
            assert_eq!(e.as_str(), "body_invalid_field", "{body}");
        }
        // Seconds that overflow when made milliseconds.
        let e = time(json!({"EventTime": u64::MAX / 10}), "Push.OfflinePush").expect_err("invalid");
        assert_eq!(e.as_str(), "body_invalid_field");
        assert!(
            time(
                json!({"EventTime": MAX_TIME_MS}),
                "Group.CallbackAfterSendMsg"
            )
            .is_ok()
        );
    }
}
