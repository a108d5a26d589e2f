//! Callback bodies as Tencent sends them, before they are typed: the
//! depth pre-scan, the [`Envelope`] every callback shares (`CallbackCommand`,
//! `EventTime`, everything else), batches, and why a body is unusable.

use std::fmt;

use serde_json::{Map, Value};

/// A body that is JSON but not (yet) typed: its own `CallbackCommand`,
/// and every other field, unchanged (`EventTime` included: its unit
/// depends on the command, and the event keeps the value as sent).
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The body's own `CallbackCommand`, when it has one.
    pub command: Option<String>,
    /// Every other field, unchanged.
    pub fields: Map<String, Value>,
}

/// Why an authentic callback's body cannot be normalized. Such callbacks go to
/// the dead-letter topic, raw, with [`BodyError::as_str`] as the reason.
#[derive(Debug)]
pub enum BodyError {
    /// Not valid JSON (or not UTF-8).
    NotJson(serde_json::Error),
    /// Valid JSON, but not an object.
    NotObject,
    /// A field the command needs is absent.
    MissingField(&'static str),
    /// A field has a type or value the command cannot use.
    InvalidField(&'static str, String),
}

/// What is wrong with a body, as a bounded label (the dead-letter
/// `reason`, metrics and the `bridge_reason` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Not valid JSON (or not UTF-8).
    NotJson,
    /// Valid JSON, but not an object.
    NotObject,
    /// A field the command needs is absent.
    MissingField,
    /// A field has a type or value the command cannot use.
    InvalidField,
}

impl Fault {
    /// Every fault, in declaration order.
    pub const ALL: &'static [Fault] = &[
        Fault::NotJson,
        Fault::NotObject,
        Fault::MissingField,
        Fault::InvalidField,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::NotJson => "body_not_json",
            Fault::NotObject => "body_not_object",
            Fault::MissingField => "body_missing_field",
            Fault::InvalidField => "body_invalid_field",
        }
    }
}

impl BodyError {
    /// What kind of fault this is.
    pub fn fault(&self) -> Fault {
        match self {
            BodyError::NotJson(_) => Fault::NotJson,
            BodyError::NotObject => Fault::NotObject,
            BodyError::MissingField(_) => Fault::MissingField,
            BodyError::InvalidField(..) => Fault::InvalidField,
        }
    }

    /// Bounded label for metrics and the dead-letter header.
    pub fn as_str(&self) -> &'static str {
        self.fault().as_str()
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::NotJson(e) => write!(f, "body is not JSON: {e}"),
            BodyError::NotObject => f.write_str("body is JSON but not an object"),
            BodyError::MissingField(name) => write!(f, "body field {name} is missing"),
            BodyError::InvalidField(name, why) => write!(f, "body field {name} is invalid: {why}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// How much JSON a body may hold before it is parsed: the parser's
/// recursion and memory grow with nesting and with the number of values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Deepest nesting of arrays and objects.
    pub depth: usize,
    /// Most values (each container, member and element).
    pub values: usize,
}

/// Which [`JsonLimits`] a body is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    /// It nests deeper than `depth`.
    Depth,
    /// It holds more values than `values`.
    Values,
}

/// The limit `bytes` are over, if any: a linear scan that respects strings,
/// run before parsing, so deep nesting never reaches the parser's recursion
/// and a body of a million tiny values never becomes a million-node tree
/// (issue 12, finding 6). Values are counted as the containers plus the
/// separators between members and elements.
pub fn json_over_limits(bytes: &[u8], limits: JsonLimits) -> Option<OverLimit> {
    let mut depth = 0usize;
    let mut values = 1usize;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match b {
            // A string: jump to its closing quote (memchr, not byte by
            // byte: most of a body is text), past every escaped byte. An
            // unterminated string ends the scan, as the end of the body would.
            b'"' => loop {
                let at = memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
                let quote = bytes[i + at] == b'"';
                i += at + if quote { 1 } else { 2 };
                if quote {
                    break;
                }
            },
            b'[' | b'{' => {
                depth += 1;
                values += 1;
                if depth > limits.depth {
                    return Some(OverLimit::Depth);
                }
            }
            b',' => values += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => continue,
        }
        if values > limits.values {
            return Some(OverLimit::Values);
        }
    }
    None
}

/// `true` when `bytes` nest JSON arrays/objects deeper than `max`.
pub fn json_depth_exceeds(bytes: &[u8], max: usize) -> bool {
    let limits = JsonLimits {
        depth: max,
        values: usize::MAX,
    };
    json_over_limits(bytes, limits) == Some(OverLimit::Depth)
}

/// The longest account, group or room id accepted where it becomes a record
/// key or a header (Tencent's UserIDs are at most 32 bytes, GroupIds 48).
pub const MAX_ID_BYTES: usize = 255;

/// An id that becomes a record key or a header: at most [`MAX_ID_BYTES`],
/// no control characters (CR, LF, NUL, ESC, ... in a header or a key are
/// trouble for every consumer; issue 12, finding 11).
pub(super) fn usable_id(field: &'static str, value: &str) -> Result<(), BodyError> {
    if value.len() > MAX_ID_BYTES {
        return Err(BodyError::InvalidField(
            field,
            format!("{} bytes, more than {MAX_ID_BYTES}", value.len()),
        ));
    }
    if has_control(value) {
        return Err(BodyError::InvalidField(
            field,
            "holds a control character".to_owned(),
        ));
    }
    Ok(())
}

/// `true` when `s` holds a control character (`char::is_control`: C0,
/// DEL, C1). ASCII text, which nearly every id and query value is, is
/// checked byte by byte without decoding characters.
pub(super) fn has_control(s: &str) -> bool {
    if s.is_ascii() {
        s.bytes().any(|b| b < 0x20 || b == 0x7f)
    } else {
        s.chars().any(char::is_control)
    }
}

/// Parses a body into its [`Envelope`].
pub fn parse_body(bytes: &[u8]) -> Result<Envelope, BodyError> {
    let value: Value = serde_json::from_slice(bytes).map_err(BodyError::NotJson)?;
    let Value::Object(fields) = value else {
        return Err(BodyError::NotObject);
    };
    into_envelope(fields)
}

/// A batched body, split.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Each item, as its own callback.
    pub items: Vec<Envelope>,
    /// The batch's fields besides its items.
    pub rest: Map<String, Value>,
}

/// The items of a batched body (`{"Events": [...]}`, as `Push.OfflinePush`
/// sends): `field` holds them, at most `max_items`. `None` when the body has
/// no such field (not a batch after all).
pub fn split_batch(
    envelope: &mut Envelope,
    field: &str,
    max_items: usize,
) -> Option<Result<Batch, BodyError>> {
    let events = envelope.fields.remove(field)?;
    let Value::Array(items) = events else {
        return Some(Err(BodyError::InvalidField(
            "Events",
            format!("expected an array of callbacks, got {}", kind(&events)),
        )));
    };
    if items.len() > max_items {
        return Some(Err(BodyError::InvalidField(
            "Events",
            format!(
                "{} items, more than {max_items} (BRIDGE_MAX_BATCH_ITEMS)",
                items.len()
            ),
        )));
    }
    let items = items
        .into_iter()
        .map(|item| match item {
            Value::Object(fields) => into_envelope(fields),
            other => Err(BodyError::InvalidField(
                "Events",
                format!("an item is {}, not an object", kind(&other)),
            )),
        })
        .collect::<Result<Vec<_>, _>>();
    Some(items.map(|items| Batch {
        items,
        rest: std::mem::take(&mut envelope.fields),
    }))
}

/// Splits `CallbackCommand` off a body object.
fn into_envelope(mut fields: Map<String, Value>) -> Result<Envelope, BodyError> {
    let command = match fields.remove("CallbackCommand") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(BodyError::InvalidField(
                "CallbackCommand",
                format!("expected a string, got {}", kind(&other)),
            ));
        }
    };
    Ok(Envelope { command, fields })
}

/// What kind of JSON value `v` is, for error messages (never the value
/// itself: a message must not grow with the body).
pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A non-negative integer, sent as a JSON number or as a string of digits.
pub(super) fn lenient_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nesting_depth_is_measured_outside_strings() {
        assert!(!json_depth_exceeds(br#"{"a":[{"b":1}]}"#, 3));
        assert!(json_depth_exceeds(br#"{"a":[{"b":[1]}]}"#, 3));
        // Brackets inside strings, and escaped quotes, do not count.
        assert!(!json_depth_exceeds(br#"{"a":"[[[[{{{{\"[[[["}"#, 1));
        assert!(json_depth_exceeds(&b"[".repeat(10_000), 32));
        assert!(!json_depth_exceeds(b"", 1));
    }

    #[test]
    fn values_are_counted_outside_strings() {
        let limits = JsonLimits {
            depth: 32,
            values: 5,
        };
        assert_eq!(json_over_limits(br#"{"a":1,"b":[1,2]}"#, limits), None);
        assert_eq!(
            json_over_limits(br#"{"a":1,"b":[1,2,3,4,5]}"#, limits),
            Some(OverLimit::Values)
        );
        assert_eq!(json_over_limits(br#"{"a":",,,,,,,,[[[["}"#, limits), None);
        let many = format!("[{}0]", "0,".repeat(200_000));
        let big = JsonLimits {
            depth: 32,
            values: 10_000,
        };
        assert_eq!(
            json_over_limits(many.as_bytes(), big),
            Some(OverLimit::Values)
        );
    }

    /// The scan before issue 15 (byte by byte, also inside strings).
    fn byte_by_byte(bytes: &[u8], limits: JsonLimits) -> Option<OverLimit> {
        let (mut depth, mut values, mut in_string, mut escaped) = (0usize, 1usize, false, false);
        for &b in bytes {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    values += 1;
                    if depth > limits.depth {
                        return Some(OverLimit::Depth);
                    }
                }
                b',' => values += 1,
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => continue,
            }
            if values > limits.values {
                return Some(OverLimit::Values);
            }
        }
        None
    }

    proptest::proptest! {
        /// Issue 15: skipping strings with memchr finds what the byte-by-byte
        /// scan found, escapes and unterminated strings included.
        #[test]
        fn the_string_skipping_scan_agrees_with_the_byte_scan(
            body in proptest::collection::vec(proptest::sample::select(b"[]{},\"\\ a".to_vec()), 0..64),
            depth in 0usize..6,
            // From 1: a body is one value before any byte is read, and the
            // two scans stop at different bytes when even that is over the
            // limit (the configuration's minimum is 100).
            values in 1usize..12,
        ) {
            let limits = JsonLimits { depth, values };
            proptest::prop_assert_eq!(json_over_limits(&body, limits), byte_by_byte(&body, limits));
        }
    }

    #[test]
    fn has_control_is_char_is_control() {
        for c in (0u32..0x800).filter_map(char::from_u32) {
            for s in [c.to_string(), format!("ab{c}cd"), format!("{c}\u{4e2d}")] {
                assert_eq!(has_control(&s), s.chars().any(char::is_control), "{s:?}");
            }
        }
    }

    #[test]
    fn envelope_takes_the_command_and_keeps_every_other_field() {
        let e = parse_body(br#"{"CallbackCommand":"A.B","EventTime":"1670574414123","X":1}"#)
            .expect("valid");
        assert_eq!(e.command.as_deref(), Some("A.B"));
        assert_eq!(
            Value::Object(e.fields),
            json!({"EventTime": "1670574414123", "X": 1})
        );
        let e = parse_body(br#"{}"#).expect("valid");
        assert_eq!(e.command, None);
    }

    #[test]
    fn envelope_errors_are_classified() {
        for e in [
            BodyError::NotObject,
            BodyError::MissingField("x"),
            BodyError::InvalidField("x", String::new()),
            parse_body(b"{").unwrap_err(),
        ] {
            assert!(Fault::ALL.contains(&e.fault()), "{}", e.as_str());
        }
        assert_eq!(parse_body(b"{").unwrap_err().as_str(), "body_not_json");

        assert_eq!(parse_body(b"\xff").unwrap_err().as_str(), "body_not_json");
        assert_eq!(parse_body(b"[1]").unwrap_err().as_str(), "body_not_object");
        assert_eq!(
            parse_body(br#"{"CallbackCommand":7}"#)
                .unwrap_err()
                .as_str(),
            "body_invalid_field"
        );
    }
}
