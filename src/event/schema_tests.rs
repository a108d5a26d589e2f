//! The schema itself: it accepts every stored event and rejects broken ones.

use serde_json::{Value, json};

use super::schema_check::*;

/// A valid event from `docs/events.md`, to break one field at a time.
fn subscribed() -> Value {
    json!({
        "before": false, "client_ip": "203.0.113.7",
        "command": "OfficialAccount.CallbackAfterAddSubscriber",
        "data": {"subscribers": ["user_wang", "user_zhao"]},
        "event_time_ms": 1732770000130_u64, "event_time_source": "callback", "extra": {},
        "id": "25521c21cef3ea89cd3fad3f28e6250d", "official_account": "@TOA#_weather_daily",
        "operator_account": "admin01", "platform": "RESTAPI",
        "received_at_ms": 1732770001000_u64, "sdk_app_id": 1400000001_u64,
        "type": "official_account.subscribed", "version": 1
    })
}

/// The stored snapshots (`src/callback/snapshots/`) are events too.
#[test]
fn every_snapshot_matches_the_schema() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/callback/snapshots");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("snapshot dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "snap") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read snapshot");
        // insta's header is a block between two `---` lines; the JSON follows.
        let json = text.splitn(3, "---\n").nth(2).expect("insta header");
        let event: Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        assert_valid(&event, &path.display().to_string());
        n += 1;
    }
    assert!(n >= 11, "only {n} snapshots");
}

#[test]
fn a_documented_event_is_valid_and_may_gain_fields() {
    assert_valid(&subscribed(), "subscribed");
    let mut e = subscribed();
    e["new_top_level_field"] = json!(1);
    e["data"]["new_data_field"] = json!("x");
    assert_valid(&e, "with fields added within v1");
}

/// The schema is not a rubber stamp: each broken field is caught.
#[test]
fn broken_events_are_rejected() {
    type Break = (&'static str, fn(&mut Value));
    let breaks: Vec<Break> = vec![
        ("version 2", |e| e["version"] = json!(2)),
        ("short id", |e| e["id"] = json!("abc")),
        ("unknown type", |e| {
            e["type"] = json!("official_account.renamed")
        }),
        ("app id as string", |e| {
            e["sdk_app_id"] = json!("1400000001")
        }),
        ("negative time", |e| e["event_time_ms"] = json!(-1)),
        ("time in seconds as float", |e| {
            e["received_at_ms"] = json!(1.5)
        }),
        ("bad time source", |e| {
            e["event_time_source"] = json!("guess")
        }),
        ("extra not an object", |e| e["extra"] = json!([])),
        ("null account on subscribed", |e| {
            e["official_account"] = json!(null)
        }),
        ("before on an After type", |e| e["before"] = json!(true)),
        ("subscribers missing", |e| e["data"] = json!({})),
        ("subscriber not a string", |e| {
            e["data"]["subscribers"] = json!([1])
        }),
        ("client_ip missing", |e| {
            e.as_object_mut().expect("object").remove("client_ip");
        }),
    ];
    for (what, break_it) in breaks {
        let mut e = subscribed();
        break_it(&mut e);
        assert!(!violations(&e).is_empty(), "{what}: accepted {e}");
    }
}

#[test]
fn each_type_checks_its_own_data() {
    let mut e = subscribed();
    e["type"] = json!("official_account.message_sent");
    assert!(!violations(&e).is_empty(), "subscriber data as a message");
    e["data"] = json!({"key": "k", "time_ms": 1, "online_only": false, "body": [], "cloud_custom_data": null});
    assert_valid(&e, "message_sent");
    e["type"] = json!("official_account.messages_withdrawn");
    assert!(!violations(&e).is_empty(), "message data as withdrawn");
}
