//! Kafka records as the bridge builds them, independent of librdkafka: the
//! one [`OutRecord`] that is sent, spooled and replayed byte for byte, and
//! the builders that lay out an event's or a dead letter's record (key,
//! CloudEvents headers, value).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::clock::rfc3339_ms;
use crate::event::{DeadLetter, Event};
use crate::metrics::Stream;

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
    /// Record headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Record value.
    pub payload: Vec<u8>,
    /// Record timestamp (receive time), Unix milliseconds.
    pub timestamp_ms: i64,
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

    fn bridge_headers(&self, headers: &mut Vec<(String, Vec<u8>)>) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        headers.push(("bridge_instance".into(), self.instance.as_bytes().to_vec()));
        headers.push(("bridge_seq".into(), seq.to_string().into_bytes()));
    }

    /// The record for an event: its topic and key (the route's), CloudEvents
    /// headers, the event as JSON.
    pub fn event(&self, event: &Event, topic: Arc<str>, key: Option<String>) -> OutRecord {
        let payload = serde_json::to_vec(event).expect("events always serialize");
        let mut headers: Vec<(String, Vec<u8>)> = vec![
            ("ce_specversion".into(), b"1.0".to_vec()),
            ("ce_id".into(), event.id.as_bytes().to_vec()),
            (
                "ce_source".into(),
                format!("/tencent-cloud-chat/apps/{}", event.sdk_app_id).into_bytes(),
            ),
            (
                "ce_type".into(),
                format!("com.tencentcloud.chat.{}", event.payload.type_name()).into_bytes(),
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
        let mut headers: Vec<(String, Vec<u8>)> = vec![
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
