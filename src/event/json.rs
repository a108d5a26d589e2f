//! Events as JSON bytes, written directly: byte for byte what
//! `serde_json::to_vec` writes for the same [`Event`] (the tests over every
//! fixture, a property test and the `body` fuzz target compare the two),
//! at a fraction of the cost.
//!
//! The profile of issue 15 found the bridge spending more on escaping
//! strings than on anything else it does to an event: serde_json looks up
//! every byte of every string in a table, twice per callback (the event,
//! and the canonical JSON its id is hashed from). Here the runs between
//! escapes (nearly every string Tencent sends is one run) are found eight
//! bytes at a time and copied at once, and each escape is serde_json's.
//! `Value`s (message bodies, `extra`, `callback` bodies) are written the
//! same way, with their keys in `Map` order (sorted: serde_json's `Map`
//! without `preserve_order`) and numbers as parsed (`arbitrary_precision`).

use serde_json::{Map, Value};

use super::{
    BatchItem, Callback, Event, InfoChanged, Lifecycle, Message, Payload, SubscriberList,
    TimeSource, TimeUnit, Withdrawn,
};

/// The event as JSON: `serde_json::to_vec(event)`, faster.
pub fn to_vec(event: &Event) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(1024));
    w.event(event);
    w.0
}

/// Appends `value` as compact JSON, as `serde_json::to_writer` would.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    let mut w = Writer(std::mem::take(out));
    w.value(value);
    *out = w.0;
}

/// Appends `s` as a JSON string, escaped as `serde_json::to_writer` escapes it:
/// `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control characters as
/// `\u00xx` (lower-case hex), everything else as it is. The runs between
/// escapes are found eight bytes at a time and copied at once.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run = 0;
    let mut from = 0;
    while let Some(at) = next_escape(bytes, from) {
        out.extend_from_slice(&bytes[run..at]);
        escape(out, bytes[at]);
        run = at + 1;
        from = at + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// The escape serde_json writes for `byte` (one [`needs_escape`] found).
fn escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match byte {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]),
    }
}

/// `true` for the bytes serde_json escapes: control characters (below
/// 0x20), `"` and `\`.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The first byte at or after `from` that [`needs_escape`], eight bytes at
/// a time: a word has a byte below `n` (n ≤ 128) exactly when
/// `(x - n·0x01…) & !x & 0x80…` is not zero, and a byte equal to `c` when
/// `x ^ c·0x01…` has a byte below 1. A word that has one is searched byte
/// by byte.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    fn below(x: u64, n: u8) -> u64 {
        x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH
    }
    let word_has_escape = |word: [u8; 8]| {
        let x = u64::from_le_bytes(word);
        below(x, 0x20)
            | below(x ^ (ONES * u64::from(b'"')), 1)
            | below(x ^ (ONES * u64::from(b'\\')), 1)
            != 0
    };
    let rest = bytes.get(from..)?;
    let mut chunks = rest.chunks_exact(8);
    let mut at = from;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if word_has_escape(word)
            && let Some(i) = chunk.iter().position(|&b| needs_escape(b))
        {
            return Some(at + i);
        }
        at += 8;
    }
    // The last bytes, padded with spaces (which need no escape) to a word.
    let tail = chunks.remainder();
    let mut word = [b' '; 8];
    word[..tail.len()].copy_from_slice(tail);
    if !word_has_escape(word) {
        return None;
    }
    tail.iter().position(|&b| needs_escape(b)).map(|i| at + i)
}

/// The output, with one method per shape (the field order of each is the
/// order of its struct's fields, as serde's derive writes them).
struct Writer(Vec<u8>);

impl Writer {
    fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    /// `,"name":`, a field of ours after the first of its object.
    fn key(&mut self, name: &'static str) {
        self.0.push(b',');
        self.first_key(name);
    }

    /// `"name":`, a field of ours (`{` is the caller's). Our field names
    /// are lower-case ASCII identifiers: nothing to escape.
    fn first_key(&mut self, name: &'static str) {
        debug_assert!(next_escape(name.as_bytes(), 0).is_none(), "{name}");
        self.0.push(b'"');
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    fn str(&mut self, s: &str) {
        write_str(&mut self.0, s);
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.raw(b"null"),
        }
    }

    fn u64(&mut self, n: u64) {
        self.raw(itoa::Buffer::new().format(n).as_bytes());
    }

    fn bool(&mut self, b: bool) {
        self.raw(if b { b"true" } else { b"false" });
    }

    fn strings(&mut self, items: &[String]) {
        self.0.push(b'[');
        for (i, s) in items.iter().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            self.str(s);
        }
        self.0.push(b']');
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.raw(b"null"),
            Value::Bool(b) => self.bool(*b),
            Value::Number(n) => self.raw(n.as_str().as_bytes()),
            Value::String(s) => self.str(s),
            Value::Array(items) => {
                self.0.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.0.push(b',');
                    }
                    self.value(item);
                }
                self.0.push(b']');
            }
            Value::Object(map) => self.map(map),
        }
    }

    fn map(&mut self, map: &Map<String, Value>) {
        self.0.push(b'{');
        for (i, (k, v)) in map.iter().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            write_str(&mut self.0, k);
            self.0.push(b':');
            self.value(v);
        }
        self.0.push(b'}');
    }

    fn event(&mut self, e: &Event) {
        self.raw(b"{");
        self.first_key("version");
        self.u64(u64::from(e.version));
        self.key("id");
        self.str(&e.id);
        self.key("type");
        self.str(e.payload.type_name());
        self.key("data");
        self.payload(&e.payload);
        self.key("command");
        self.str(&e.command);
        self.key("before");
        self.bool(e.before);
        self.key("sdk_app_id");
        self.u64(e.sdk_app_id);
        self.key("official_account");
        self.opt_str(e.official_account.as_deref());
        self.key("operator_account");
        self.opt_str(e.operator_account.as_deref());
        self.key("event_time_ms");
        self.u64(e.event_time_ms);
        self.key("event_time_source");
        self.str(match e.event_time_source {
            TimeSource::Callback => "callback",
            TimeSource::Received => "received",
        });
        self.key("event_time_unit");
        self.opt_str(e.event_time_unit.map(|u| match u {
            TimeUnit::Seconds => "s",
            TimeUnit::Millis => "ms",
        }));
        self.key("event_time_unit_assumed");
        self.bool(e.event_time_unit_assumed);
        self.key("received_at_ms");
        self.u64(e.received_at_ms);
        self.key("client_ip");
        self.opt_str(e.client_ip.as_deref());
        self.key("platform");
        self.opt_str(e.platform.as_deref());
        self.key("extra");
        self.map(&e.extra);
        self.raw(b"}");
    }

    fn payload(&mut self, p: &Payload) {
        match p {
            Payload::BeforeCreate(l) | Payload::Created(l) | Payload::Destroyed(l) => {
                self.lifecycle(l);
            }
            Payload::InfoChanged(InfoChanged { changes }) => {
                self.raw(b"{");
                self.first_key("changes");
                self.raw(b"{");
                let mut first = true;
                for (name, value) in [
                    ("name", &changes.name),
                    ("introduction", &changes.introduction),
                    ("face_url", &changes.face_url),
                    ("organization", &changes.organization),
                ] {
                    if let Some(v) = value {
                        if first {
                            self.first_key(name);
                        } else {
                            self.key(name);
                        }
                        first = false;
                        self.str(v);
                    }
                }
                self.raw(b"}}");
            }
            Payload::BeforeSubscribe(SubscriberList { subscribers })
            | Payload::Subscribed(SubscriberList { subscribers })
            | Payload::Unsubscribed(SubscriberList { subscribers }) => {
                self.raw(b"{");
                self.first_key("subscribers");
                self.strings(subscribers);
                self.raw(b"}");
            }
            Payload::Full(_) => self.raw(b"{}"),
            Payload::BeforeMessageSend(m) | Payload::MessageSent(m) => self.message(m),
            Payload::MessagesWithdrawn(Withdrawn { message_keys }) => {
                self.raw(b"{");
                self.first_key("message_keys");
                self.strings(message_keys);
                self.raw(b"}");
            }
            Payload::Callback(c) => self.callback(c),
        }
    }

    fn lifecycle(&mut self, l: &Lifecycle) {
        self.raw(b"{");
        self.first_key("owner_account");
        self.opt_str(l.owner_account.as_deref());
        self.key("name");
        self.opt_str(l.name.as_deref());
        self.raw(b"}");
    }

    fn message(&mut self, m: &Message) {
        self.raw(b"{");
        self.first_key("key");
        self.opt_str(m.key.as_deref());
        self.key("time_ms");
        match m.time_ms {
            Some(t) => self.u64(t),
            None => self.raw(b"null"),
        }
        self.key("online_only");
        self.bool(m.online_only);
        self.key("body");
        self.value(&m.body);
        self.key("cloud_custom_data");
        self.opt_str(m.cloud_custom_data.as_deref());
        self.raw(b"}");
    }

    fn callback(&mut self, c: &Callback) {
        self.raw(b"{");
        self.first_key("family");
        self.str(&c.family);
        self.key("body");
        self.map(&c.body);
        if let Some(BatchItem { index, size, id }) = &c.batch {
            self.key("batch");
            self.raw(b"{");
            self.first_key("index");
            self.u64(u64::from(*index));
            self.key("size");
            self.u64(u64::from(*size));
            if !id.is_empty() {
                self.key("id");
                self.str(id);
            }
            self.raw(b"}");
        }
        self.raw(b"}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(bytes: &[u8], from: usize) -> Option<usize> {
        (from..bytes.len()).find(|&i| bytes[i] < 0x20 || bytes[i] == b'"' || bytes[i] == b'\\')
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in [
            "",
            "plain",
            "exactly8",
            "\"",
            "a\\b",
            "line\nfeed",
            "\u{1f}\u{0}\u{7f}",
            "中文 and 😀 and \u{2028}",
            "sixteen bytes ok\t",
            "0123456789abcdef0123456789abcde\"",
        ] {
            let mut ours = Vec::new();
            write_str(&mut ours, s);
            assert_eq!(ours, serde_json::to_vec(s).expect("serialize"), "{s:?}");
        }
    }

    proptest! {
        /// The word-at-a-time search finds the byte the byte loop finds.
        #[test]
        fn next_escape_matches_the_byte_loop(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), proptest::sample::select(b"\"\\\x1f\x20!\x7f\x80\xff\xa2\xdc".to_vec())],
                0..40,
            ),
            from in 0usize..44,
        ) {
            prop_assert_eq!(next_escape(&bytes, from), naive(&bytes, from));
        }

        #[test]
        fn strings_match_serde_json(s in prop_oneof![any::<String>(), "[\"\\\\\\x00-\\x1f\\x7f a\u{e9}\u{4e2d}\u{1f600}\u{2028}]{0,40}"]) {
            let mut ours = Vec::new();
            write_str(&mut ours, &s);
            prop_assert_eq!(ours, serde_json::to_vec(&s).expect("serialize"));
        }

        /// Any JSON text, parsed and written again: the same bytes as serde_json's.
        #[test]
        fn values_match_serde_json(v in json_value()) {
            let mut ours = Vec::new();
            write_value(&mut ours, &v);
            prop_assert_eq!(ours, serde_json::to_vec(&v).expect("serialize"));
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            prop_oneof![
                Just("0"),
                Just("-1"),
                Just("1.5e3"),
                Just("12345678901234567890123"),
                Just("1E-7"),
                Just("0.10")
            ]
            .prop_map(|n| serde_json::from_str::<Value>(n).expect("a number")),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
