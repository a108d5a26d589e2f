//! Body parsing and normalization: never panics; the depth pre-scan keeps
//! deep input from the parser; every event normalized from any body round-trips
//! through its JSON, and every body field is either mapped or kept in `extra`.
#![no_main]

use chat_kafka_bridge::callback::{
    CallbackQuery, OfficialAccountCommand, json_depth_exceeds, parse_body,
};
use chat_kafka_bridge::event::{Event, Received, normalize};
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
});
