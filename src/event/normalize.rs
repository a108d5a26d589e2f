//! Callback → event, by hand: the one place that knows both spellings.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{
    Empty, Event, InfoChanged, Lifecycle, Message, Payload, ProfileChanges, SCHEMA_VERSION,
    SubscriberList, TimeSource, Withdrawn,
};
use crate::callback::{
    BodyError, CallbackQuery, Envelope, OfficialAccountBody, OfficialAccountCommand, Subscriber,
    WithdrawnMessage,
};

/// What the bridge knows about a callback besides its body.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// The authenticated query string.
    pub query: &'a CallbackQuery,
    /// Receive time, Unix milliseconds.
    pub received_at_ms: u64,
}

/// The content-derived event id: 32 hex digits of SHA-256 over the app, the
/// command, `EventTime` and the body's other fields in canonical (sorted-key,
/// compact) JSON. Whitespace and key order do not change it; the query's
/// `Sign`/`RequestTime` (which differ between retries) do not enter it.
pub fn event_id(sdk_app_id: u64, command: &str, envelope: &Envelope) -> String {
    let mut h = Sha256::new();
    h.update(b"chat-kafka-bridge/v1\0");
    h.update(sdk_app_id.to_string().as_bytes());
    h.update(b"\0");
    h.update(command.as_bytes());
    h.update(b"\0");
    match envelope.event_time_ms {
        Some(t) => h.update(t.to_string().as_bytes()),
        None => h.update(b"-"),
    }
    h.update(b"\0");
    // Serialized into one buffer and hashed in one call: feeding the hasher
    // serde's many small writes cost more than the hashing itself.
    let mut canonical = Vec::with_capacity(1024);
    serde_json::to_writer(&mut canonical, &envelope.fields).expect("a Vec never fails to write");
    h.update(&canonical);
    let digest = h.finalize();
    hex::encode(&digest[..16])
}

/// Turns an authenticated Official Account callback into an [`Event`].
///
/// Fails only when the body does not have the shape its command documents;
/// the caller then dead-letters the raw body.
pub fn normalize(
    received: Received<'_>,
    command: OfficialAccountCommand,
    envelope: Envelope,
) -> Result<Event, BodyError> {
    let query = received.query;
    let id = event_id(query.sdk_app_id, command.as_str(), &envelope);
    let (event_time_ms, event_time_source) = match envelope.event_time_ms {
        Some(t) => (t, TimeSource::Callback),
        None => (received.received_at_ms, TimeSource::Received),
    };
    let body = OfficialAccountBody::parse(command, envelope.fields)?;

    let (payload, official_account, operator_account, extra) = match body {
        OfficialAccountBody::BeforeCreate(b) => {
            let l = lifecycle(b.owner_account, b.name);
            (
                Payload::BeforeCreate(l),
                b.official_account,
                b.operator_account,
                b.extra,
            )
        }
        OfficialAccountBody::AfterCreate(b) => {
            let l = lifecycle(b.owner_account, b.name);
            (
                Payload::Created(l),
                b.official_account,
                b.operator_account,
                b.extra,
            )
        }
        OfficialAccountBody::AfterDestroyed(b) => {
            let l = lifecycle(b.owner_account, b.name);
            (
                Payload::Destroyed(l),
                b.official_account,
                b.operator_account,
                b.extra,
            )
        }
        OfficialAccountBody::AfterInfoChanged(b) => {
            let changes = ProfileChanges {
                name: b.name,
                introduction: b.introduction,
                face_url: b.face_url,
                organization: b.organization,
            };
            (
                Payload::InfoChanged(InfoChanged { changes }),
                Some(b.official_account),
                b.operator_account,
                b.extra,
            )
        }
        OfficialAccountBody::BeforeAddSubscriber(b) => {
            let (list, extra) = subscribers(b.subscribers, b.extra);
            (
                Payload::BeforeSubscribe(list),
                Some(b.official_account),
                b.operator_account,
                extra,
            )
        }
        OfficialAccountBody::AfterAddSubscriber(b) => {
            let (list, extra) = subscribers(b.subscribers, b.extra);
            (
                Payload::Subscribed(list),
                Some(b.official_account),
                b.operator_account,
                extra,
            )
        }
        OfficialAccountBody::AfterDeleteSubscriber(b) => {
            let (list, extra) = subscribers(b.subscribers, b.extra);
            (
                Payload::Unsubscribed(list),
                Some(b.official_account),
                b.operator_account,
                extra,
            )
        }
        OfficialAccountBody::AfterFull(b) => (
            Payload::Full(Empty {}),
            Some(b.official_account),
            None,
            b.extra,
        ),
        OfficialAccountBody::BeforeSendMsg(b) => {
            let message = Message {
                key: None,
                time_ms: None,
                online_only: b.online_only_flag.is_some_and(|f| f != 0),
                body: b.msg_body.unwrap_or(Value::Null),
                cloud_custom_data: b.cloud_custom_data,
            };
            (
                Payload::BeforeMessageSend(message),
                Some(b.official_account),
                None,
                b.extra,
            )
        }
        OfficialAccountBody::AfterSendMsg(b) => {
            let message = Message {
                key: b.msg_key,
                time_ms: b.msg_time_secs.map(|s| s.saturating_mul(1000)),
                online_only: b.online_only_flag.is_some_and(|f| f != 0),
                body: b.msg_body.unwrap_or(Value::Null),
                cloud_custom_data: b.cloud_custom_data,
            };
            (
                Payload::MessageSent(message),
                Some(b.official_account),
                None,
                b.extra,
            )
        }
        OfficialAccountBody::AfterMsgWithdraw(b) => {
            let (withdrawn, extra) = withdrawn(b.messages, b.extra);
            (
                Payload::MessagesWithdrawn(withdrawn),
                Some(b.official_account),
                None,
                extra,
            )
        }
    };

    Ok(Event {
        version: SCHEMA_VERSION,
        id,
        payload,
        command: command.as_str().to_owned(),
        before: command.is_before(),
        sdk_app_id: query.sdk_app_id,
        official_account,
        operator_account,
        event_time_ms,
        event_time_source,
        received_at_ms: received.received_at_ms,
        client_ip: query.client_ip.clone(),
        platform: query.platform.clone(),
        extra,
    })
}

fn lifecycle(owner_account: Option<String>, name: Option<String>) -> Lifecycle {
    Lifecycle {
        owner_account,
        name,
    }
}

/// The subscriber ids; if any item carried more than `Subscriber_Account`,
/// the whole original list also goes into `extra` so nothing is dropped.
fn subscribers(
    items: Vec<Subscriber>,
    mut extra: Map<String, Value>,
) -> (SubscriberList, Map<String, Value>) {
    if items.iter().any(|s| !s.extra.is_empty()) {
        let original = items
            .iter()
            .map(|s| {
                let mut item = s.extra.clone();
                item.insert(
                    "Subscriber_Account".into(),
                    Value::String(s.account.clone()),
                );
                Value::Object(item)
            })
            .collect();
        extra.insert("SubscribeAccountList".into(), Value::Array(original));
    }
    let subscribers = items.into_iter().map(|s| s.account).collect();
    (SubscriberList { subscribers }, extra)
}

/// The withdrawn keys; richer items are kept whole in `extra`, as above.
fn withdrawn(
    items: Vec<WithdrawnMessage>,
    mut extra: Map<String, Value>,
) -> (Withdrawn, Map<String, Value>) {
    if items.iter().any(|m| !m.extra.is_empty()) {
        let original = items
            .iter()
            .map(|m| {
                let mut item = m.extra.clone();
                item.insert("MsgKey".into(), Value::String(m.msg_key.clone()));
                Value::Object(item)
            })
            .collect();
        extra.insert("WithdrawMsgList".into(), Value::Array(original));
    }
    let message_keys = items.into_iter().map(|m| m.msg_key).collect();
    (Withdrawn { message_keys }, extra)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::parse_body;

    const RECEIVED_AT_MS: u64 = 1_732_770_001_000;

    fn query(command: &str) -> CallbackQuery {
        CallbackQuery {
            sdk_app_id: 1_400_000_001,
            command: command.to_owned(),
            sign: None,
            request_time: None,
            client_ip: Some("203.0.113.7".into()),
            platform: Some("RESTAPI".into()),
        }
    }

    fn normalize_bytes(body: &[u8]) -> Result<Event, BodyError> {
        let envelope = parse_body(body)?;
        let command = envelope
            .command
            .clone()
            .expect("fixtures name their command");
        let q = query(&command);
        let cmd = OfficialAccountCommand::parse(&command).expect("an Official Account command");
        normalize(
            Received {
                query: &q,
                received_at_ms: RECEIVED_AT_MS,
            },
            cmd,
            envelope,
        )
    }

    /// Every Official Account fixture normalizes to its snapshot in
    /// `src/event/snapshots/`. Adding a case is adding a fixture file.
    #[test]
    fn every_official_account_fixture_normalizes_to_its_snapshot() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/callbacks");
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .expect("fixture dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .into_string()
                    .expect("utf-8 name")
            })
            .filter(|n| n.starts_with("oa-") && n.ends_with(".json"))
            .collect();
        names.sort();
        assert!(
            names.len() >= 11,
            "expected every command's fixture, found {names:?}"
        );
        let mut types = std::collections::BTreeSet::new();
        for name in names {
            let bytes = std::fs::read(format!("{dir}/{name}")).expect("read fixture");
            let event = normalize_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            types.insert(event.payload.type_name());
            // The round trip through our own types is lossless.
            let json = serde_json::to_value(&event).expect("serialize");
            let back: Event = serde_json::from_value(json.clone()).expect("deserialize");
            assert_eq!(back, event, "{name}");
            assert_eq!(json["type"], event.payload.type_name(), "{name}");
            insta::assert_json_snapshot!(name.trim_end_matches(".json"), json);
        }
        assert_eq!(types.len(), OfficialAccountCommand::ALL.len(), "{types:?}");
    }

    #[test]
    fn missing_event_time_falls_back_to_receipt_and_says_so() {
        let e = normalize_bytes(
            br#"{"CallbackCommand":"OfficialAccount.CallbackAfterOfficialAccountFull","Official_Account":"a"}"#,
        )
        .expect("valid");
        assert_eq!(e.event_time_ms, RECEIVED_AT_MS);
        assert_eq!(e.event_time_source, TimeSource::Received);
    }

    #[test]
    fn id_ignores_layout_but_not_content() {
        let a = br#"{"CallbackCommand":"OfficialAccount.CallbackAfterOfficialAccountFull","Official_Account":"a","EventTime":1}"#;
        let b = br#"{ "EventTime": 1, "Official_Account": "a",
                      "CallbackCommand": "OfficialAccount.CallbackAfterOfficialAccountFull" }"#;
        let c = br#"{"CallbackCommand":"OfficialAccount.CallbackAfterOfficialAccountFull","Official_Account":"a","EventTime":2}"#;
        let d = br#"{"CallbackCommand":"OfficialAccount.CallbackAfterOfficialAccountFull","Official_Account":"b","EventTime":1}"#;
        let id = |x: &[u8]| normalize_bytes(x).expect("valid").id;
        assert_eq!(id(a), id(b));
        assert_eq!(id(a).len(), 32);
        assert_ne!(id(a), id(c));
        assert_ne!(id(a), id(d));
    }

    #[test]
    fn nothing_tencent_sends_is_dropped() {
        let e = normalize_bytes(
            br#"{"CallbackCommand":"OfficialAccount.CallbackAfterAddSubscriber","Official_Account":"a",
                 "SubscribeAccountList":[{"Subscriber_Account":"u1","Nick":"x"},{"Subscriber_Account":"u2"}],
                 "TopicId":"t","EventTime":5}"#,
        )
        .expect("valid");
        let Payload::Subscribed(list) = &e.payload else {
            panic!("wrong type {:?}", e.payload)
        };
        assert_eq!(list.subscribers, ["u1", "u2"]);
        assert_eq!(
            Value::Object(e.extra),
            serde_json::json!({
                "TopicId": "t",
                "SubscribeAccountList": [{"Subscriber_Account":"u1","Nick":"x"},{"Subscriber_Account":"u2"}]
            })
        );
    }
}
