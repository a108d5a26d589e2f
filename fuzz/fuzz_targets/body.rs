//! Body parsing and translation, through the production functions
//! (`callback::parse`, `callback::to_events`): never panics; the depth limit
//! keeps deep input from the parser; every event made from any body
//! round-trips through its JSON, and every body field is either mapped or
//! kept in `extra`; `callback` events (whole bodies and batch items) keep
//! every field in `data.body`; every event's record (`sink::Records`)
//! carries the event as its value and its id in `ce_id`.
#![no_main]

use std::sync::Arc;

use chat_kafka_bridge::callback::{JsonLimits, OfficialAccountCommand, parse, to_events};
use chat_kafka_bridge::event::{Event, Payload, Source};
use chat_kafka_bridge::sink::Records;
use libfuzzer_sys::fuzz_target;

fn source() -> Source {
    Source {
        sdk_app_id: 1_400_000_001,
        client_ip: None,
        platform: None,
        received_at_ms: 1,
    }
}

/// The production limits' defaults (`BRIDGE_MAX_JSON_DEPTH`, `BRIDGE_MAX_JSON_VALUES`).
const LIMITS: JsonLimits = JsonLimits {
    depth: 32,
    values: 10_000,
};

fn round_trips(event: &Event) {
    let json = serde_json::to_vec(event).expect("events serialize");
    let back: Event = serde_json::from_slice(&json).expect("events deserialize");
    assert_eq!(&back, event);
}

/// The record of an event holds the event's JSON and names it in `ce_id`.
fn records_of(records: &Records, event: &Event, key: Option<String>) {
    let record = records.event(event, Arc::from("events"), key.clone());
    assert_eq!(record.key, key);
    assert_eq!(record.payload, serde_json::to_vec(event).expect("events serialize"));
    let ce_id = record.headers.iter().find(|(k, _)| k == "ce_id").map(|(_, v)| v);
    assert_eq!(ce_id, Some(&event.id.as_bytes().to_vec()));
}

fuzz_target!(|data: &[u8]| {
    let records = Records::new();
    for command in OfficialAccountCommand::ALL {
        let Ok(envelope) = parse(data, command.as_str(), LIMITS) else {
            continue;
        };
        let fields = envelope.fields.clone();
        let Ok(events) = to_events(&source(), command.as_str(), envelope, &[], 100) else {
            continue;
        };
        assert_eq!(events.len(), 1);
        let event = &events[0].event;
        round_trips(event);
        records_of(&records, event, events[0].key.clone());
        // Unmapped fields survive unchanged.
        for (k, v) in &event.extra {
            assert_eq!(fields.get(k), Some(v), "{k}");
        }
    }

    // Any other command: a `callback` event with the body, or one per batch item.
    for command in ["Push.OfflinePush", "Group.CallbackAfterSendMsg"] {
        let Ok(envelope) = parse(data, command, LIMITS) else {
            continue;
        };
        let whole = envelope.clone();
        let Ok(events) = to_events(&source(), command, envelope, &[], 100) else {
            continue;
        };
        let items: Vec<_> = match whole.fields.get("Events").and_then(|e| e.as_array()) {
            Some(items) if command == "Push.OfflinePush" => items
                .iter()
                .map(|item| {
                    let mut fields = item.as_object().expect("items are objects").clone();
                    fields.remove("CallbackCommand");
                    fields
                })
                .collect(),
            _ => vec![whole.fields.clone()],
        };
        assert_eq!(events.len(), items.len());
        for (keyed, fields) in events.iter().zip(items) {
            round_trips(&keyed.event);
            records_of(&records, &keyed.event, keyed.key.clone());
            let Payload::Callback(data) = &keyed.event.payload else {
                panic!("not a callback event");
            };
            assert_eq!(data.body, fields);
        }
    }
});
