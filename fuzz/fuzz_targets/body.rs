//! Body parsing and normalization: never panics; the depth pre-scan keeps
//! deep input from the parser; every event normalized from any body round-trips
//! through its JSON, and every body field is either mapped or kept in `extra`;
//! `callback` events (whole bodies and batch items) keep every field in `data.body`.
#![no_main]

use chat_kafka_bridge::callback::{
    CallbackQuery, OfficialAccountCommand, json_depth_exceeds, parse_body, split_batch,
};
use chat_kafka_bridge::event::{BatchItem, Event, Payload, Received, generic, normalize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if json_depth_exceeds(data, 32) {
        return;
    }
    let Ok(envelope) = parse_body(data) else {
        return;
    };
    for command in OfficialAccountCommand::ALL {
        let query = CallbackQuery {
            sdk_app_id: 1_400_000_001,
            command: command.as_str().to_owned(),
            ..CallbackQuery::default()
        };
        let received = Received {
            query: &query,
            received_at_ms: 1,
        };
        let Ok(event) = normalize(received, command, envelope.clone()) else {
            continue;
        };
        let json = serde_json::to_vec(&event).expect("events serialize");
        let back: Event = serde_json::from_slice(&json).expect("events deserialize");
        assert_eq!(back, event);
        // Unmapped fields survive unchanged.
        for (k, v) in &event.extra {
            assert_eq!(envelope.fields.get(k), Some(v), "{k}");
        }
    }

    // Any other command: a `callback` event with the body, or one per batch item.
    let query = CallbackQuery {
        sdk_app_id: 1_400_000_001,
        command: "Push.OfflinePush".to_owned(),
        ..CallbackQuery::default()
    };
    let received = Received {
        query: &query,
        received_at_ms: 1,
    };
    let mut outer = envelope.clone();
    let cases = match split_batch(&mut outer) {
        Some(Ok(batch)) => batch
            .items
            .into_iter()
            .map(|item| (item, Some(batch.rest.clone())))
            .collect(),
        Some(Err(_)) => Vec::new(),
        None => vec![(envelope, None)],
    };
    for (item, rest) in cases {
        let place = rest.as_ref().map(|r| (BatchItem { index: 0, size: 1 }, r));
        let event = generic(received, &query.command, item.clone(), place);
        let json = serde_json::to_vec(&event).expect("events serialize");
        let back: Event = serde_json::from_slice(&json).expect("events deserialize");
        assert_eq!(back, event);
        let Payload::Callback(data) = &event.payload else {
            panic!("not a callback event");
        };
        assert_eq!(data.body, item.fields);
    }
});
