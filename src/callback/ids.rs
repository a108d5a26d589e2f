//! Content-derived ids: the same callback sent twice gets the same id,
//! different callbacks get different ids. Each is 32 hex digits of SHA-256
//! over a domain prefix, the app, the command and the content in canonical
//! (sorted-key, compact) JSON; the query's `Sign` and `RequestTime`, which
//! differ between retries, do not enter it.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::Envelope;
use super::body::lenient_u64;
use crate::event::json;

/// The id of one callback's event. `EventTime` enters as its integer (so
/// `1` and `"1"` are the same callback), the other fields as canonical JSON.
/// Unchanged since 0.1: the same callback has the same id across versions.
pub fn event_id(sdk_app_id: u64, command: &str, envelope: &Envelope) -> String {
    let mut h = start(b"chat-kafka-bridge/v1\0", sdk_app_id, command);
    fields(&mut h, &envelope.fields);
    finish(h)
}

/// The id of item `index` of the batch whose id is `batch_id`: two equal
/// items of one batch differ by position, and the same item in two batches
/// by the batch.
pub(super) fn batch_item_id(
    sdk_app_id: u64,
    command: &str,
    batch_id: &str,
    index: u32,
    item: &Envelope,
) -> String {
    let mut h = start(b"chat-kafka-bridge/v1/item\0", sdk_app_id, command);
    h.update(batch_id.as_bytes());
    h.update(b"\0");
    h.update(index.to_string().as_bytes());
    h.update(b"\0");
    fields(&mut h, &item.fields);
    finish(h)
}

/// The id of a dead letter: the raw body, byte for byte.
pub(super) fn dead_letter_id(sdk_app_id: u64, command: &str, body: &[u8]) -> String {
    let mut h = start(b"chat-kafka-bridge/dlq/v1\0", sdk_app_id, command);
    h.update(body);
    finish(h)
}

fn start(prefix: &[u8], sdk_app_id: u64, command: &str) -> Sha256 {
    let mut h = Sha256::new();
    h.update(prefix);
    h.update(sdk_app_id.to_string().as_bytes());
    h.update(b"\0");
    h.update(command.as_bytes());
    h.update(b"\0");
    h
}

/// `EventTime`'s integer (or `-`), then every other field in canonical JSON.
fn fields(h: &mut Sha256, fields: &Map<String, Value>) {
    match fields.get("EventTime").and_then(lenient_u64) {
        Some(t) => h.update(t.to_string().as_bytes()),
        None => h.update(b"-"),
    }
    h.update(b"\0");
    // Written into one buffer and hashed in one call: feeding the hasher
    // many small writes cost more than the hashing itself. The map is
    // sorted by key (serde_json's Map without preserve_order); the bytes
    // are serde_json's compact output (`event::json`, tested against it).
    let mut canonical = Vec::with_capacity(1024);
    canonical.push(b'{');
    let mut first = true;
    for (k, v) in fields {
        if k == "EventTime" {
            continue;
        }
        if !first {
            canonical.push(b',');
        }
        first = false;
        json::write_str(&mut canonical, k);
        canonical.push(b':');
        json::write_value(&mut canonical, v);
    }
    canonical.push(b'}');
    h.update(&canonical);
}

fn finish(h: Sha256) -> String {
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::parse_body;

    /// The id of a callback is what 0.2 gave it (computed then from
    /// `EventTime` as a number and the other fields as `serde_json`'s
    /// compact map): consumers that drop repeats keep working across the
    /// upgrade.
    #[test]
    fn ids_are_unchanged_from_0_2() {
        let body = br#"{"CallbackCommand":"OfficialAccount.CallbackAfterOfficialAccountFull","Official_Account":"a","EventTime":1}"#;
        let e = parse_body(body).expect("valid");
        // 0.2's formula, written out.
        let mut h = Sha256::new();
        h.update(b"chat-kafka-bridge/v1\0");
        h.update(b"7\0OfficialAccount.CallbackAfterOfficialAccountFull\0");
        h.update(b"1\0");
        h.update(br#"{"Official_Account":"a"}"#);
        let expected = hex::encode(&h.finalize()[..16]);
        assert_eq!(
            event_id(7, "OfficialAccount.CallbackAfterOfficialAccountFull", &e),
            expected
        );
        let string_time =
            parse_body(br#"{"Official_Account":"a","EventTime":"1"}"#).expect("valid");
        assert_eq!(
            event_id(
                7,
                "OfficialAccount.CallbackAfterOfficialAccountFull",
                &string_time
            ),
            expected
        );
    }

    /// Issue 12, finding 12: equal items of one batch, and one item in two
    /// batches, get different ids; the same batch twice gets the same ones.
    #[test]
    fn batch_items_differ_by_position_and_batch() {
        let item = parse_body(br#"{"To_Account":"u","EventTime":1}"#).expect("valid");
        let a0 = batch_item_id(1, "Push.OfflinePush", "batch-a", 0, &item);
        assert_ne!(
            a0,
            batch_item_id(1, "Push.OfflinePush", "batch-a", 1, &item)
        );
        assert_ne!(
            a0,
            batch_item_id(1, "Push.OfflinePush", "batch-b", 0, &item)
        );
        assert_eq!(
            a0,
            batch_item_id(1, "Push.OfflinePush", "batch-a", 0, &item)
        );
        assert_eq!(a0.len(), 32);
    }
}
