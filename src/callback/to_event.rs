//! Callback → events, by hand: the one place that knows both Tencent's
//! spelling ([`super`]) and ours ([`crate::event`]).
//!
//! [`parse`] checks a body the way Tencent sends it (depth, JSON, the
//! command it names); [`to_events`] turns it into its events: one typed
//! event for an Official Account command, one `callback` event per item of
//! a batch, or one `callback` event keeping the whole body. [`dead_letter`]
//! wraps an authentic body that has no events.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::body::usable_id;
use super::ids::{batch_item_id, dead_letter_id, event_id};
use super::table::Command;
use super::time::{Time, time_in};
use super::{
    Batch, BodyError, CallbackQuery, Envelope, Family, FieldPath, JsonLimits, OfficialAccountBody,
    OfficialAccountCommand, OverLimit, Subscriber, WithdrawnMessage, is_before, json_over_limits,
    parse_body, split_batch, table,
};
use crate::event::{
    BatchItem, Callback, DeadLetter, Empty, Event, InfoChanged, Lifecycle, Message, Payload,
    ProfileChanges, SCHEMA_VERSION, Source, SubscriberList, Withdrawn,
};

/// Where an authenticated callback came from, as our events describe it.
pub fn source(query: &CallbackQuery, received_at_ms: u64) -> Source {
    Source {
        sdk_app_id: query.sdk_app_id,
        client_ip: query.client_ip.clone(),
        platform: query.platform.clone(),
        received_at_ms,
    }
}

/// Why a body is refused or has no events.
#[derive(Debug)]
pub enum Unparsed {
    /// It nests deeper than the limit (checked before parsing).
    TooDeep,
    /// It holds more values than the limit (checked before parsing).
    TooComplex,
    /// It is not UTF-8 JSON, or JSON but not the shape of a callback:
    /// dead-letter it (Tencent does not send it again; refusing it would
    /// only lose it).
    Invalid(BodyError),
    /// It, or an item of its batch, names another `CallbackCommand` than the query.
    CommandMismatch {
        /// The query's.
        query: String,
        /// The body's.
        body: String,
    },
}

/// Parses an authenticated body: within `limits` (checked first), JSON, an
/// object, naming `command` (the query's) if it names one.
pub fn parse(bytes: &[u8], command: &str, limits: JsonLimits) -> Result<Envelope, Unparsed> {
    match json_over_limits(bytes, limits) {
        Some(OverLimit::Depth) => return Err(Unparsed::TooDeep),
        Some(OverLimit::Values) => return Err(Unparsed::TooComplex),
        None => {}
    }
    let envelope = parse_body(bytes).map_err(Unparsed::Invalid)?;
    check_command(command, envelope.command.as_deref())?;
    Ok(envelope)
}

/// An event and its record key.
#[derive(Debug, Clone, PartialEq)]
pub struct Keyed {
    /// The event.
    pub event: Event,
    /// The first of the route's key fields present in its body, if any.
    pub key: Option<String>,
}

/// Why an authentic callback has no events.
#[derive(Debug)]
pub enum NoEvents {
    /// Its body does not have its command's shape: dead-letter it.
    Invalid(BodyError),
    /// A batch without items: count it.
    EmptyBatch,
    /// A batch item names another command: refuse it.
    CommandMismatch {
        /// The query's.
        query: String,
        /// The item's.
        body: String,
    },
}

/// The events of an authenticated callback of `command` (the query's),
/// each keyed by the first of `key` present in its body: one typed event
/// for an Official Account command, one `callback` event per item of a
/// batch (the command table says which commands are batches; at most
/// `max_batch_items` items), or one `callback` event with the whole body.
/// Times are read in the unit the command table gives.
pub fn to_events(
    source: &Source,
    command: &str,
    mut envelope: Envelope,
    key: &[FieldPath],
    max_batch_items: usize,
) -> Result<Vec<Keyed>, NoEvents> {
    let row = table().get(command);
    let key_of = |fields: &Map<String, Value>| -> Result<Option<String>, NoEvents> {
        let key = key.iter().find_map(|p| p.get(fields));
        if let Some(k) = &key {
            usable_id("key", k).map_err(NoEvents::Invalid)?;
        }
        Ok(key)
    };
    if let Some(typed) = OfficialAccountCommand::parse(command) {
        let key = key_of(&envelope.fields)?;
        let event = normalize(source, typed, row, envelope).map_err(NoEvents::Invalid)?;
        return Ok(vec![Keyed { event, key }]);
    }
    if let Some(field) = row.and_then(|r| r.batch.as_deref()) {
        let batch_id = event_id(source.sdk_app_id, command, &envelope);
        if let Some(batch) = split_batch(&mut envelope, field, max_batch_items) {
            let batch = batch.map_err(NoEvents::Invalid)?;
            return batch_events(source, command, row, &batch_id, batch, &key_of);
        }
    }
    let time = time_in(&envelope.fields, row)
        .map_err(NoEvents::Invalid)?
        .unwrap_or_else(|| Time::received(source.received_at_ms));
    let id = event_id(source.sdk_app_id, command, &envelope);
    let key = key_of(&envelope.fields)?;
    let event = generic(source, command, envelope, time, id, None, Map::new())
        .map_err(NoEvents::Invalid)?;
    Ok(vec![Keyed { event, key }])
}

/// Finds (and checks) an event's key in its body's fields.
type KeyOf<'a> = dyn Fn(&Map<String, Value>) -> Result<Option<String>, NoEvents> + 'a;

/// One event per item of a batch. The batch's fields besides its items
/// (rare, but one body must not multiply memory) go once, into the first
/// item's `extra`; every item names the batch by its id. An item without a
/// time takes the batch's, else the receive time.
fn batch_events(
    source: &Source,
    command: &str,
    row: Option<&'static Command>,
    batch_id: &str,
    Batch { items, rest }: Batch,
    key_of: &KeyOf<'_>,
) -> Result<Vec<Keyed>, NoEvents> {
    if items.is_empty() {
        return Err(NoEvents::EmptyBatch);
    }
    for item in &items {
        if let Err(Unparsed::CommandMismatch { query, body }) =
            check_command(command, item.command.as_deref())
        {
            return Err(NoEvents::CommandMismatch { query, body });
        }
    }
    let outer = time_in(&rest, row).map_err(NoEvents::Invalid)?;
    let size = u32::try_from(items.len()).unwrap_or(u32::MAX);
    let mut rest = Some(rest);
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in (0..size).zip(items) {
        let time = time_in(&item.fields, row)
            .map_err(NoEvents::Invalid)?
            .or(outer)
            .unwrap_or_else(|| Time::received(source.received_at_ms));
        let id = batch_item_id(source.sdk_app_id, command, batch_id, index, &item);
        let key = key_of(&item.fields)?;
        let place = BatchItem {
            index,
            size,
            id: batch_id.to_owned(),
        };
        let extra = rest.take().unwrap_or_default();
        let event = generic(source, command, item, time, id, Some(place), extra)
            .map_err(NoEvents::Invalid)?;
        out.push(Keyed { event, key });
    }
    Ok(out)
}

/// The body's own `CallbackCommand` (or a batch item's), when present, must
/// be the query's.
fn check_command(query: &str, body: Option<&str>) -> Result<(), Unparsed> {
    match body {
        Some(in_body) if in_body != query => Err(Unparsed::CommandMismatch {
            query: query.to_owned(),
            body: in_body.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The dead letter of an authentic `body` of `command` that has no events
/// (`error` says why), with an id derived from the raw body.
pub fn dead_letter(source: &Source, command: &str, error: &BodyError, body: Bytes) -> DeadLetter {
    DeadLetter {
        id: dead_letter_id(source.sdk_app_id, command, &body),
        reason: error.as_str(),
        error: error.to_string(),
        command: command.to_owned(),
        source: source.clone(),
        body,
    }
}

/// Turns an authenticated Official Account callback into an [`Event`].
///
/// Fails only when the body does not have the shape its command documents;
/// the caller then dead-letters the raw body.
fn normalize(
    source: &Source,
    command: OfficialAccountCommand,
    row: Option<&'static Command>,
    envelope: Envelope,
) -> Result<Event, BodyError> {
    let id = event_id(source.sdk_app_id, command.as_str(), &envelope);
    let time =
        time_in(&envelope.fields, row)?.unwrap_or_else(|| Time::received(source.received_at_ms));
    let body = OfficialAccountBody::parse(command, envelope.fields)?;
    Ok(assemble(
        source,
        command.as_str(),
        id,
        time,
        official_account(body),
    ))
}

/// What a typed Official Account body gives an event.
fn official_account(body: OfficialAccountBody) -> Mapped {
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
    Mapped {
        payload,
        official_account,
        operator_account,
        extra,
    }
}
/// Turns an authenticated callback the bridge has no type for into a
/// `callback` event that keeps the body's fields unchanged. `command` is the
/// query's (a body's own must equal it). `batch` places an item in its
/// batch; `extra` holds the batch's other fields (first item only).
fn generic(
    source: &Source,
    command: &str,
    envelope: Envelope,
    time: Time,
    id: String,
    batch: Option<BatchItem>,
    extra: Map<String, Value>,
) -> Result<Event, BodyError> {
    let text = |name: &str| {
        let s = envelope.fields.get(name)?.as_str()?;
        (!s.is_empty()).then(|| s.to_owned())
    };
    // It becomes the `ce_subject` header: a usable id, or the callback is
    // dead-lettered.
    let official_account = text("Official_Account");
    if let Some(a) = &official_account {
        usable_id("Official_Account", a)?;
    }
    let operator_account = text("Operator_Account");
    let mapped = Mapped {
        payload: Payload::Callback(Callback {
            family: Family::of(command).as_str().to_owned(),
            body: envelope.fields,
            batch,
        }),
        official_account,
        operator_account,
        extra,
    };
    Ok(assemble(source, command, id, time, mapped))
}

/// What a conversion took from the body.
struct Mapped {
    payload: Payload,
    official_account: Option<String>,
    operator_account: Option<String>,
    extra: Map<String, Value>,
}

/// The event: what the body gave, and what every event takes from the query.
fn assemble(source: &Source, command: &str, id: String, time: Time, mapped: Mapped) -> Event {
    Event {
        version: SCHEMA_VERSION,
        id,
        payload: mapped.payload,
        command: command.to_owned(),
        before: is_before(command),
        sdk_app_id: source.sdk_app_id,
        official_account: mapped.official_account,
        operator_account: mapped.operator_account,
        event_time_ms: time.ms,
        event_time_source: time.source,
        event_time_unit: time.unit,
        event_time_unit_assumed: time.assumed,
        received_at_ms: source.received_at_ms,
        client_ip: source.client_ip.clone(),
        platform: source.platform.clone(),
        extra: mapped.extra,
    }
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

/// The production translation for tests: [`parse`] then [`to_events`],
/// with no key fields.
#[cfg(test)]
pub(crate) fn translate(source: &Source, command: &str, body: &[u8]) -> Result<Vec<Event>, String> {
    let limits = JsonLimits {
        depth: 32,
        values: 10_000,
    };
    let envelope = parse(body, command, limits).map_err(|e| format!("{e:?}"))?;
    let keyed = to_events(source, command, envelope, &[], 100).map_err(|e| format!("{e:?}"))?;
    Ok(keyed.into_iter().map(|k| k.event).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECEIVED_AT_MS: u64 = 1_732_770_001_000;

    fn test_source() -> Source {
        Source {
            sdk_app_id: 1_400_000_001,
            client_ip: Some("203.0.113.7".into()),
            platform: Some("RESTAPI".into()),
            received_at_ms: RECEIVED_AT_MS,
        }
    }

    /// The one event of an Official Account body that names its command.
    fn normalize_bytes(body: &[u8]) -> Result<Event, String> {
        let envelope = parse_body(body).map_err(|e| e.to_string())?;
        let command = envelope.command.expect("fixtures name their command");
        assert!(
            OfficialAccountCommand::parse(&command).is_some(),
            "{command}"
        );
        let mut events = translate(&test_source(), &command, body)?;
        assert_eq!(events.len(), 1);
        Ok(events.remove(0))
    }

    /// Every fixture (`tests/fixtures/callbacks/*.json` and `variants/`):
    /// its file name before `.json` (and before a `+variant` suffix) is its
    /// command.
    pub(crate) fn fixtures() -> Vec<(String, String, Vec<u8>)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/callbacks");
        let mut out = Vec::new();
        for sub in ["", "variants/"] {
            for entry in std::fs::read_dir(format!("{dir}/{sub}")).expect("fixture dir") {
                let name = entry
                    .expect("entry")
                    .file_name()
                    .into_string()
                    .expect("utf-8");
                let Some(stem) = name.strip_suffix(".json") else {
                    continue;
                };
                let command = stem.split('+').next().expect("a name").to_owned();
                let bytes = std::fs::read(format!("{dir}/{sub}{name}")).expect("read fixture");
                out.push((stem.to_owned(), command, bytes));
            }
        }
        out.sort();
        out
    }

    /// Every fixture translates to the events of its snapshots in
    /// `src/callback/snapshots/`, valid against the schema and lossless
    /// through our types: one typed event per Official Account command, one
    /// `callback` event per other callback or batch item, keeping the body.
    /// Adding a case is adding a fixture file.
    #[test]
    fn every_fixture_translates_to_its_snapshot() {
        let fixtures = fixtures();
        assert!(fixtures.len() >= 60, "{} fixtures", fixtures.len());
        let mut types = std::collections::BTreeSet::new();
        for (stem, command, bytes) in fixtures {
            let original: Value = serde_json::from_slice(&bytes).expect("JSON");
            let out = translate(&test_source(), &command, &bytes)
                .unwrap_or_else(|e| panic!("{stem}: {e}"));
            let batch = original.get("Events").and_then(Value::as_array);
            let mut ids = std::collections::HashSet::new();
            for (i, event) in out.iter().enumerate() {
                assert!(ids.insert(event.id.clone()), "{stem}: ids differ per item");
                types.insert(event.payload.type_name());
                if let Payload::Callback(data) = &event.payload {
                    // The body's fields, unchanged, but the command (the event's own).
                    let item = match batch {
                        Some(items) if table().get(&command).is_some_and(|r| r.batch.is_some()) => {
                            &items[i]
                        }
                        _ => &original,
                    };
                    for (k, v) in item.as_object().expect("object") {
                        match k.as_str() {
                            "CallbackCommand" => assert_eq!(v, command.as_str()),
                            _ => assert_eq!(data.body.get(k), Some(v), "{stem}: {k}"),
                        }
                    }
                }
                // The record's bytes are serde_json's, written by hand.
                assert_eq!(
                    String::from_utf8(crate::event::json::to_vec(event)).expect("UTF-8"),
                    serde_json::to_string(event).expect("serialize"),
                    "{stem}"
                );
                let json = serde_json::to_value(event).expect("serialize");
                let back: Event = serde_json::from_value(json.clone()).expect("deserialize");
                assert_eq!(&back, event, "{stem}");
                assert_eq!(json["type"], event.payload.type_name(), "{stem}");
                crate::event::schema_check::assert_valid(&json, &stem);
                // Pretty JSON with sorted keys, as text: insta's own JSON writer
                // does not know serde_json's arbitrary-precision numbers.
                let pretty = serde_json::to_string_pretty(&json).expect("serialize");
                let name = if out.len() > 1 {
                    format!("{stem}-{i}")
                } else {
                    stem.clone()
                };
                insta::assert_snapshot!(name, pretty);
            }
        }
        // Every Official Account type and the generic one.
        assert_eq!(
            types.len(),
            OfficialAccountCommand::ALL.len() + 1,
            "{types:?}"
        );
    }

    #[test]
    fn missing_event_time_falls_back_to_receipt_and_says_so() {
        let e = normalize_bytes(
            br#"{"CallbackCommand":"OfficialAccount.CallbackAfterOfficialAccountFull","Official_Account":"a"}"#,
        )
        .expect("valid");
        assert_eq!(e.event_time_ms, RECEIVED_AT_MS);
        assert_eq!(e.event_time_source, crate::event::TimeSource::Received);
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
                "EventTime": 5,
                "TopicId": "t",
                "SubscribeAccountList": [{"Subscriber_Account":"u1","Nick":"x"},{"Subscriber_Account":"u2"}]
            })
        );
    }
}

#[cfg(test)]
mod properties {
    //! Any valid callback body round-trips its fields into the event, and
    //! `extra` keeps exactly the fields that were not mapped.

    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::*;

    fn account() -> impl Strategy<Value = String> {
        "[@#_A-Za-z0-9]{1,24}"
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            Just(Value::Null),
        ]
    }

    /// Fields Tencent may add one day: names no command maps.
    fn unknown_fields() -> impl Strategy<Value = Map<String, Value>> {
        proptest::collection::btree_map("X[A-Za-z]{0,8}", json_leaf(), 0..4)
            .prop_map(|m| m.into_iter().collect())
    }

    fn normalize_value(command: OfficialAccountCommand, body: &Value) -> Event {
        let bytes = serde_json::to_vec(body).expect("serialize");
        let source = Source {
            sdk_app_id: 1,
            client_ip: None,
            platform: None,
            received_at_ms: 7,
        };
        let event = translate(&source, command.as_str(), &bytes)
            .expect("normalizes")
            .remove(0);
        let json = serde_json::to_value(&event).expect("serialize");
        crate::event::schema_check::assert_valid(&json, command.as_str());
        assert_eq!(
            crate::event::json::to_vec(&event),
            serde_json::to_vec(&event).expect("serialize")
        );
        event
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn info_changed_round_trips(
            official in account(),
            operator in proptest::option::of(account()),
            name in proptest::option::of(".{0,20}"),
            intro in proptest::option::of(".{0,20}"),
            face in proptest::option::of(".{0,20}"),
            org in proptest::option::of(".{0,20}"),
            time in proptest::option::of(0u64..=crate::callback::MAX_TIME_MS),
            time_as_string in any::<bool>(),
            extra in unknown_fields(),
        ) {
            let command = OfficialAccountCommand::AfterInfoChanged;
            let mut body = extra.clone();
            body.insert("CallbackCommand".into(), json!(command.as_str()));
            body.insert("Official_Account".into(), json!(official));
            for (k, v) in [("Operator_Account", &operator), ("Name", &name), ("Introduction", &intro), ("FaceUrl", &face), ("Organization", &org)] {
                if let Some(v) = v {
                    body.insert(k.into(), json!(v));
                }
            }
            if let Some(t) = time {
                body.insert("EventTime".into(), if time_as_string { json!(t.to_string()) } else { json!(t) });
            }
            let event = normalize_value(command, &Value::Object(body));
            prop_assert_eq!(event.official_account.as_deref(), Some(official.as_str()));
            prop_assert_eq!(&event.operator_account, &operator);
            let Payload::InfoChanged(InfoChanged { changes }) = &event.payload else {
                panic!("wrong type")
            };
            prop_assert_eq!(&changes.name, &name);
            prop_assert_eq!(&changes.introduction, &intro);
            prop_assert_eq!(&changes.face_url, &face);
            prop_assert_eq!(&changes.organization, &org);
            prop_assert_eq!(event.event_time_ms, time.unwrap_or(7));
            // EventTime stays in extra, as sent.
            let mut want = extra;
            if let Some(t) = time {
                want.insert("EventTime".into(), if time_as_string { json!(t.to_string()) } else { json!(t) });
            }
            prop_assert_eq!(event.extra, want);
        }

        #[test]
        fn subscriber_lists_round_trip(
            official in account(),
            subscribers in proptest::collection::vec(account(), 0..20),
            item_extra in proptest::option::of(unknown_fields()),
            extra in unknown_fields(),
        ) {
            let command = OfficialAccountCommand::AfterAddSubscriber;
            let list: Vec<Value> = subscribers
                .iter()
                .map(|s| {
                    let mut item = item_extra.clone().unwrap_or_default();
                    item.insert("Subscriber_Account".into(), json!(s));
                    Value::Object(item)
                })
                .collect();
            let mut body = extra.clone();
            body.insert("Official_Account".into(), json!(official));
            body.insert("SubscribeAccountList".into(), Value::Array(list.clone()));
            let event = normalize_value(command, &Value::Object(body));
            let Payload::Subscribed(got) = &event.payload else { panic!("wrong type") };
            prop_assert_eq!(&got.subscribers, &subscribers);
            // Items with fields beyond the account are kept whole in `extra`.
            let mut want = extra;
            if item_extra.is_some_and(|m| !m.is_empty()) && !subscribers.is_empty() {
                want.insert("SubscribeAccountList".into(), Value::Array(list));
            }
            prop_assert_eq!(event.extra, want);
        }

        #[test]
        fn messages_round_trip(
            official in account(),
            key in proptest::option::of("[0-9_]{1,30}"),
            secs in proptest::option::of(0u64..4_000_000_000),
            flag in proptest::option::of(0u64..3),
            text in ".{0,40}",
            custom in proptest::option::of(".{0,20}"),
            extra in unknown_fields(),
        ) {
            let command = OfficialAccountCommand::AfterSendMsg;
            let msg_body = json!([{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}]);
            let mut body = extra.clone();
            body.insert("Official_Account".into(), json!(official));
            body.insert("MsgBody".into(), msg_body.clone());
            if let Some(k) = &key { body.insert("MsgKey".into(), json!(k)); }
            if let Some(s) = secs { body.insert("MsgTime".into(), json!(s)); }
            if let Some(f) = flag { body.insert("OnlineOnlyFlag".into(), json!(f)); }
            if let Some(c) = &custom { body.insert("CloudCustomData".into(), json!(c)); }
            let event = normalize_value(command, &Value::Object(body));
            let Payload::MessageSent(m) = &event.payload else { panic!("wrong type") };
            prop_assert_eq!(&m.key, &key);
            prop_assert_eq!(m.time_ms, secs.map(|s| s * 1000));
            prop_assert_eq!(m.online_only, flag.is_some_and(|f| f != 0));
            prop_assert_eq!(&m.body, &msg_body);
            prop_assert_eq!(&m.cloud_custom_data, &custom);
            prop_assert_eq!(event.extra, extra);
        }
    }
}

#[cfg(test)]
mod regressions {
    use super::*;

    fn source() -> Source {
        Source {
            sdk_app_id: 1,
            client_ip: None,
            platform: None,
            received_at_ms: 1,
        }
    }

    fn events(command: &str, body: &str, key: &[&str]) -> Result<Vec<Keyed>, NoEvents> {
        let limits = JsonLimits {
            depth: 32,
            values: 10_000,
        };
        let envelope = parse(body.as_bytes(), command, limits).expect("parses");
        let key: Vec<FieldPath> = key
            .iter()
            .map(|k| FieldPath::parse(k).expect("path"))
            .collect();
        to_events(&source(), command, envelope, &key, 100)
    }

    fn invalid(r: Result<Vec<Keyed>, NoEvents>) -> &'static str {
        match r {
            Err(NoEvents::Invalid(e)) => e.as_str(),
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }

    /// Issue 12, finding 11: control characters and huge ids reached the
    /// record key and the `ce_subject` header; an empty account gave an
    /// unkeyed typed event.
    #[test]
    fn keys_and_subjects_are_usable_ids() {
        let g = "Group.CallbackAfterSendMsg";
        assert_eq!(
            invalid(events(
                g,
                r#"{"GroupId":"@TGS#1\r\nX-Injected: 1"}"#,
                &["GroupId"]
            )),
            "body_invalid_field"
        );
        let huge = format!(r#"{{"GroupId":"{}"}}"#, "g".repeat(900_000));
        assert_eq!(
            invalid(events(g, &huge, &["GroupId"])),
            "body_invalid_field"
        );
        assert_eq!(
            invalid(events(
                g,
                r#"{"GroupId":"g","Official_Account":"a\u0000b"}"#,
                &["GroupId"]
            )),
            "body_invalid_field"
        );
        let ok = events(g, r#"{"GroupId":"@TGS#1"}"#, &["GroupId"]).expect("valid");
        assert_eq!(ok[0].key.as_deref(), Some("@TGS#1"));
        let full = "OfficialAccount.CallbackAfterOfficialAccountFull";
        assert_eq!(
            invalid(events(
                full,
                r#"{"Official_Account":""}"#,
                &["Official_Account"]
            )),
            "body_missing_field"
        );
        assert_eq!(
            invalid(events(
                full,
                r#"{"Official_Account":"a\nb"}"#,
                &["Official_Account"]
            )),
            "body_invalid_field"
        );
    }

    /// Issue 12, finding 12: two equal items of one batch shared an id, and
    /// so did one item in two batches with different batch fields.
    #[test]
    fn batch_items_have_ids_of_their_own() {
        let p = "Push.OfflinePush";
        let item =
            r#"{"CallbackCommand":"Push.OfflinePush","To_Account":"u","EventTime":1557481127}"#;
        let one = events(
            p,
            &format!(r#"{{"Events":[{item},{item}]}}"#),
            &["To_Account"],
        )
        .expect("valid");
        assert_ne!(one[0].event.id, one[1].event.id);
        let other = events(
            p,
            &format!(r#"{{"Events":[{item},{item}],"X":1}}"#),
            &["To_Account"],
        )
        .expect("valid");
        assert_ne!(one[0].event.id, other[0].event.id);
        let again = events(
            p,
            &format!(r#"{{"Events":[{item},{item}]}}"#),
            &["To_Account"],
        )
        .expect("valid");
        assert_eq!(
            one[0].event.id, again[0].event.id,
            "the same batch again: the same ids"
        );
    }

    /// Issue 12, finding 4: a field beside `Events` was copied into every
    /// item's `extra` (1000 items x 400 KB). It is kept once now.
    #[test]
    fn batch_fields_are_kept_once() {
        let big = "x".repeat(100_000);
        let items: Vec<String> = (0..100)
            .map(|i| format!(r#"{{"CallbackCommand":"Push.OfflinePush","To_Account":"u{i}","EventTime":1557481127}}"#))
            .collect();
        let body = format!(r#"{{"Events":[{}],"Big":"{big}"}}"#, items.join(","));
        let out = events("Push.OfflinePush", &body, &["To_Account"]).expect("valid");
        assert_eq!(out.len(), 100);
        let bytes: usize = out
            .iter()
            .map(|k| serde_json::to_vec(&k.event).expect("serialize").len())
            .sum();
        assert!(
            bytes < 2 * body.len(),
            "{bytes} bytes of events for a {}-byte body",
            body.len()
        );
        assert!(out[0].event.extra.contains_key("Big"));
        assert!(out[1..].iter().all(|k| k.event.extra.is_empty()));
        // Over BRIDGE_MAX_BATCH_ITEMS: dead-lettered whole.
        let many: Vec<&str> = vec![r#"{"To_Account":"u"}"#; 101];
        let body = format!(r#"{{"Events":[{}]}}"#, many.join(","));
        assert_eq!(
            invalid(events("Push.OfflinePush", &body, &[])),
            "body_invalid_field"
        );
    }

    /// Found by `fuzz/fuzz_targets/body.rs` (issue 7): a number no machine type
    /// holds (here an integer beyond u64) came back from `extra` rounded, so
    /// the event did not keep what Tencent sent. serde_json's
    /// `arbitrary_precision` now keeps numbers as their original text.
    #[test]
    fn unmapped_numbers_keep_their_exact_text() {
        let body = br#"{"CallbackCommand":"OfficialAccount.CallbackBeforeCreateOfficialAccount","Ofcial_AccoventTime": 101334698616216252381,"F":0.1000000000000000055511151231257827,"N":-0.0}"#;
        let source = Source {
            sdk_app_id: 0,
            client_ip: None,
            platform: None,
            received_at_ms: 1,
        };
        let event = translate(&source, OfficialAccountCommand::BeforeCreate.as_str(), body)
            .expect("normalizes")
            .remove(0);
        let json = serde_json::to_string(&event.extra).expect("serialize");
        assert_eq!(
            json,
            r#"{"F":0.1000000000000000055511151231257827,"N":-0.0,"Ofcial_AccoventTime":101334698616216252381}"#
        );
        let back: Event = serde_json::from_str(&serde_json::to_string(&event).expect("serialize"))
            .expect("parse");
        assert_eq!(back, event);
    }
}
