//! Kafka records as the bridge builds them, independent of librdkafka: the
//! one [`OutRecord`] that is sent, spooled and replayed byte for byte, and
//! the builders that lay out an event's or a dead letter's record (key,
//! CloudEvents headers, value).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::clock::rfc3339_ms;
use crate::event::{DeadLetter, Event};
use crate::metrics::Stream;

/// An event's `ce_source` header before its app id: written by
/// [`Records::event`], read back by [`OutRecord::sdk_app_id`].
const CE_SOURCE_PREFIX: &str = "/tencent-cloud-chat/apps/";

/// A Kafka record as the bridge builds it, independent of librdkafka: what
/// is sent, spooled and replayed (byte for byte the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Events or dead letters (a metric label).
    pub stream: Stream,
    /// The topic. `None` only in records spooled by bridges before 0.2,
    /// which go to the configured topic of their stream.
    pub topic: Option<Arc<str>>,
    /// The event or dead-letter id, for logs.
    pub id: String,
    /// Record key.
    pub key: Option<String>,
    /// Record headers: name and value. The bridge's own names are
    /// constants, not allocated per record.
    pub headers: Vec<(Cow<'static, str>, Vec<u8>)>,
    /// Record value.
    pub payload: Vec<u8>,
    /// Record timestamp (receive time), Unix milliseconds.
    pub timestamp_ms: i64,
}

impl OutRecord {
    /// The record's size as the limits count it: key, value, headers, and
    /// the per-record framing Kafka adds (generously).
    pub fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum();
        self.key.as_ref().map_or(0, String::len) + self.payload.len() + headers + 64
    }

    /// The app the record belongs to, from its headers (`ce_source` of an
    /// event, `bridge_sdk_app_id` of a dead letter).
    pub fn sdk_app_id(&self) -> Option<u64> {
        self.headers.iter().find_map(|(k, v)| {
            let v = std::str::from_utf8(v).ok()?;
            match k.as_ref() {
                "ce_source" => v.strip_prefix(CE_SOURCE_PREFIX)?.parse().ok(),
                "bridge_sdk_app_id" => v.parse().ok(),
                _ => None,
            }
        })
    }
}

/// The dead letter of a record Kafka refused as too large: on `topic`, its
/// value the first bytes of the record's value, trimmed so that the whole
/// record is at most `limit`; its headers the record's CloudEvents and
/// bridge headers, and why (`bridge_reason: record_too_large`). `None` when
/// even an empty value would not fit.
pub fn trimmed_dead_letter(record: &OutRecord, limit: usize, topic: Arc<str>) -> Option<OutRecord> {
    let mut headers: Vec<(Cow<'static, str>, Vec<u8>)> = vec![
        ("bridge_id".into(), record.id.as_bytes().to_vec()),
        ("bridge_reason".into(), b"record_too_large".to_vec()),
        (
            "bridge_original_bytes".into(),
            record.size().to_string().into_bytes(),
        ),
    ];
    for (k, v) in &record.headers {
        let keep = (k.starts_with("ce_") || k.starts_with("bridge_"))
            && !matches!(k.as_ref(), "bridge_id" | "bridge_reason" | "bridge_error");
        if keep {
            headers.push((k.clone(), v.clone()));
        }
    }
    headers.push(("content-type".into(), b"application/octet-stream".to_vec()));
    let mut dl = OutRecord {
        stream: Stream::DeadLetter,
        topic: Some(topic),
        id: record.id.clone(),
        key: None,
        headers,
        payload: Vec::new(),
        timestamp_ms: record.timestamp_ms,
    };
    // Room for the error header, which names the sizes.
    let error = format!(
        "the record ({} bytes) is larger than Kafka accepts ({limit}); its value is cut to fit",
        record.size()
    );
    let room = limit.checked_sub(dl.size() + "bridge_error".len() + error.len() + 8)?;
    dl.payload = record.payload[..room.min(record.payload.len())].to_vec();
    dl.headers.push(("bridge_error".into(), error.into_bytes()));
    (dl.size() <= limit).then_some(dl)
}

/// Builds records, numbering them for this process (`bridge_instance`,
/// `bridge_seq` headers).
pub struct Records {
    /// Identifies this process in the `bridge_instance` header.
    instance: String,
    /// Per-instance sequence for the `bridge_seq` header.
    seq: AtomicU64,
}

impl Default for Records {
    fn default() -> Self {
        Records::new()
    }
}

impl Records {
    /// A builder with a fresh random instance id.
    pub fn new() -> Self {
        Records {
            instance: instance_id(),
            seq: AtomicU64::new(0),
        }
    }

    fn bridge_headers(&self, headers: &mut Vec<(Cow<'static, str>, Vec<u8>)>) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        headers.push(("bridge_instance".into(), self.instance.as_bytes().to_vec()));
        headers.push((
            "bridge_seq".into(),
            itoa::Buffer::new().format(seq).as_bytes().to_vec(),
        ));
    }

    /// The record for an event: its topic and key (the route's), CloudEvents
    /// headers, the event as JSON.
    pub fn event(&self, event: &Event, topic: Arc<str>, key: Option<String>) -> OutRecord {
        let payload = crate::event::json::to_vec(event);
        let mut headers: Vec<(Cow<'static, str>, Vec<u8>)> = vec![
            ("ce_specversion".into(), b"1.0".to_vec()),
            ("ce_id".into(), event.id.as_bytes().to_vec()),
            (
                "ce_source".into(),
                joined(
                    CE_SOURCE_PREFIX,
                    itoa::Buffer::new().format(event.sdk_app_id),
                ),
            ),
            (
                "ce_type".into(),
                joined("com.tencentcloud.chat.", event.payload.type_name()),
            ),
            (
                "ce_time".into(),
                rfc3339_ms(event.event_time_ms).into_bytes(),
            ),
            ("content-type".into(), b"application/json".to_vec()),
        ];
        if let Some(account) = &event.official_account {
            headers.push(("ce_subject".into(), account.as_bytes().to_vec()));
        }
        self.bridge_headers(&mut headers);
        OutRecord {
            stream: Stream::Events,
            topic: Some(topic),
            id: event.id.clone(),
            key,
            headers,
            payload,
            timestamp_ms: i64::try_from(event.received_at_ms).unwrap_or(i64::MAX),
        }
    }

    /// The record for a dead letter: the raw body, the reason in headers.
    pub fn dead_letter(&self, dl: &DeadLetter, topic: Arc<str>) -> OutRecord {
        let mut headers: Vec<(Cow<'static, str>, Vec<u8>)> = vec![
            ("bridge_id".into(), dl.id.as_bytes().to_vec()),
            ("bridge_reason".into(), dl.reason.as_bytes().to_vec()),
            ("bridge_error".into(), dl.error.as_bytes().to_vec()),
            (
                "bridge_sdk_app_id".into(),
                dl.source.sdk_app_id.to_string().into_bytes(),
            ),
            ("bridge_command".into(), dl.command.as_bytes().to_vec()),
            (
                "bridge_received_at_ms".into(),
                dl.source.received_at_ms.to_string().into_bytes(),
            ),
            ("content-type".into(), b"application/octet-stream".to_vec()),
        ];
        if let Some(ip) = &dl.source.client_ip {
            headers.push(("bridge_client_ip".into(), ip.as_bytes().to_vec()));
        }
        if let Some(p) = &dl.source.platform {
            headers.push(("bridge_platform".into(), p.as_bytes().to_vec()));
        }
        self.bridge_headers(&mut headers);
        OutRecord {
            stream: Stream::DeadLetter,
            topic: Some(topic),
            id: dl.id.clone(),
            key: None,
            headers,
            payload: dl.body.to_vec(),
            timestamp_ms: i64::try_from(dl.source.received_at_ms).unwrap_or(i64::MAX),
        }
    }
}

/// `prefix` then `rest`, in one allocation of the right size (`format!`
/// costs several times more per record).
fn joined(prefix: &str, rest: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + rest.len());
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(rest.as_bytes());
    out
}

/// A short random id for this process (`bridge_instance` header).
fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: usize) -> OutRecord {
        OutRecord {
            stream: Stream::Events,
            topic: Some(Arc::from("t")),
            id: "abc".into(),
            key: Some("k".repeat(100)),
            headers: vec![
                ("ce_source".into(), b"/tencent-cloud-chat/apps/7".to_vec()),
                ("ce_type".into(), b"com.tencentcloud.chat.callback".to_vec()),
            ],
            payload: vec![b'x'; payload],
            timestamp_ms: 1,
        }
    }

    #[test]
    fn a_too_large_record_becomes_a_dead_letter_that_fits() {
        let big = record(2_000_000);
        assert_eq!(big.sdk_app_id(), Some(7));
        let dl = trimmed_dead_letter(&big, 1_000_000, Arc::from("dlq")).expect("fits");
        assert!(dl.size() <= 1_000_000, "{}", dl.size());
        assert!(dl.payload.len() > 990_000);
        assert_eq!(dl.key, None);
        assert_eq!(dl.stream, Stream::DeadLetter);
        let h = |name: &str| {
            dl.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            h("bridge_reason").as_deref(),
            Some(&b"record_too_large"[..])
        );
        assert_eq!(
            h("ce_source").as_deref(),
            Some(&b"/tencent-cloud-chat/apps/7"[..])
        );
        assert!(trimmed_dead_letter(&big, 100, Arc::from("dlq")).is_none());
    }
}
