//! Our versioned event schema: what other services read from Kafka.
//!
//! These types are our contract, not Tencent's: field names are ours, units
//! are explicit (`_ms`), and the conversion from Tencent's wire types is
//! written by hand in `callback/to_event.rs`. This module imports nothing
//! from the rest of the crate, so a consumer could depend on it alone.
//! Documented in `docs/events.md`; compatibility rules are there too.

pub mod json;
#[cfg(test)]
pub(crate) mod schema_check;
#[cfg(test)]
mod schema_tests;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `version` of every event this bridge writes.
pub const SCHEMA_VERSION: u32 = 1;

/// One normalized change event, serialized as the Kafka record's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub version: u32,
    /// Derived from the callback's content: the same callback delivered twice
    /// gets the same id, different callbacks get different ids.
    pub id: String,
    /// The normalized type and its type-specific `data`.
    #[serde(flatten)]
    pub payload: Payload,
    /// The original `CallbackCommand`.
    pub command: String,
    /// `true` for Tencent's "Before" callbacks (the bridge answered "allow";
    /// the event is an audit record of the request).
    pub before: bool,
    /// The app (`SdkAppid`) the callback came from.
    pub sdk_app_id: u64,
    /// `Official_Account`; `null` for `official_account.before_create`, and
    /// for `callback` events whose body has none.
    pub official_account: Option<String>,
    /// `Operator_Account`, when Tencent sent one.
    pub operator_account: Option<String>,
    /// When the change happened, Unix milliseconds.
    pub event_time_ms: u64,
    /// Where `event_time_ms` came from.
    pub event_time_source: TimeSource,
    /// The unit the callback's time field was read in (`event_time_source`
    /// `callback`); `null` when the receive time is used. The field's
    /// original value stays in the body (`data.body` or `extra`).
    #[serde(default)]
    pub event_time_unit: Option<TimeUnit>,
    /// `true` when the bridge did not know the command's unit and read a
    /// 10-digit time as seconds, a 13-digit one as milliseconds.
    #[serde(default)]
    pub event_time_unit_assumed: bool,
    /// When the bridge received the callback, Unix milliseconds.
    pub received_at_ms: u64,
    /// `ClientIP` from the query, when present.
    pub client_ip: Option<String>,
    /// `OptPlatform` from the query, when present.
    pub platform: Option<String>,
    /// Every body field not mapped above, unchanged.
    pub extra: Map<String, Value>,
}

/// Where an event's time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// The callback's `EventTime`.
    Callback,
    /// The callback had no `EventTime`; the bridge's receive time is used.
    Received,
}

/// The unit of a callback's time field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeUnit {
    /// Unix seconds.
    #[serde(rename = "s")]
    Seconds,
    /// Unix milliseconds.
    #[serde(rename = "ms")]
    Millis,
}

/// The event's `type` and its `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Payload {
    /// Someone asked to create an account (not created yet).
    #[serde(rename = "official_account.before_create")]
    BeforeCreate(Lifecycle),
    /// An account was created.
    #[serde(rename = "official_account.created")]
    Created(Lifecycle),
    /// An account's profile changed.
    #[serde(rename = "official_account.info_changed")]
    InfoChanged(InfoChanged),
    /// An account was destroyed.
    #[serde(rename = "official_account.destroyed")]
    Destroyed(Lifecycle),
    /// Users asked to subscribe.
    #[serde(rename = "official_account.before_subscribe")]
    BeforeSubscribe(SubscriberList),
    /// Users subscribed.
    #[serde(rename = "official_account.subscribed")]
    Subscribed(SubscriberList),
    /// The account reached its subscriber limit.
    #[serde(rename = "official_account.full")]
    Full(Empty),
    /// Users unsubscribed or were removed.
    #[serde(rename = "official_account.unsubscribed")]
    Unsubscribed(SubscriberList),
    /// The account is about to send a message.
    #[serde(rename = "official_account.before_message_send")]
    BeforeMessageSend(Message),
    /// The account sent a message.
    #[serde(rename = "official_account.message_sent")]
    MessageSent(Message),
    /// Messages were withdrawn (recalled).
    #[serde(rename = "official_account.messages_withdrawn")]
    MessagesWithdrawn(Withdrawn),
    /// Any other command (group, one-to-one, status, push, bot, ..., and
    /// commands nobody has heard of), published with its body unchanged.
    #[serde(rename = "callback")]
    Callback(Callback),
}

impl Payload {
    /// The `type` string, as serialized.
    pub fn type_name(&self) -> &'static str {
        match self {
            Payload::BeforeCreate(_) => "official_account.before_create",
            Payload::Created(_) => "official_account.created",
            Payload::InfoChanged(_) => "official_account.info_changed",
            Payload::Destroyed(_) => "official_account.destroyed",
            Payload::BeforeSubscribe(_) => "official_account.before_subscribe",
            Payload::Subscribed(_) => "official_account.subscribed",
            Payload::Full(_) => "official_account.full",
            Payload::Unsubscribed(_) => "official_account.unsubscribed",
            Payload::BeforeMessageSend(_) => "official_account.before_message_send",
            Payload::MessageSent(_) => "official_account.message_sent",
            Payload::MessagesWithdrawn(_) => "official_account.messages_withdrawn",
            Payload::Callback(_) => "callback",
        }
    }
}

/// `data` of create and destroy events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// `Owner_Account`.
    pub owner_account: Option<String>,
    /// The account's `Name`.
    pub name: Option<String>,
}

/// `data` of `official_account.info_changed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfoChanged {
    /// Only the profile fields Tencent sent, with their new values.
    pub changes: ProfileChanges,
}

/// New profile values; a field is present only if Tencent sent it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileChanges {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New introduction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introduction: Option<String>,
    /// New avatar URL (`FaceUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_url: Option<String>,
    /// New organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
}

/// `data` of subscriber events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriberList {
    /// The subscribers' account ids, in Tencent's order.
    pub subscribers: Vec<String>,
}

/// `data` with no fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

/// `data` of message events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `MsgKey`, Tencent's unique message id (`message_sent` only).
    pub key: Option<String>,
    /// `MsgTime` converted to milliseconds (`message_sent` only).
    pub time_ms: Option<u64>,
    /// `OnlineOnlyFlag`: delivered only to online subscribers.
    pub online_only: bool,
    /// `MsgBody`: the message elements, unchanged.
    pub body: Value,
    /// `CloudCustomData`, when sent.
    pub cloud_custom_data: Option<String>,
}

/// `data` of `official_account.messages_withdrawn`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Withdrawn {
    /// `MsgKey` of each withdrawn message.
    pub message_keys: Vec<String>,
}

/// `data` of `callback` events: a command the bridge has no type for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    /// The command's family (`group`, `c2c`, `state`, `push`, ..., `other`).
    pub family: String,
    /// Every body field except `CallbackCommand` (the event's `command`),
    /// unchanged. For an item of a batch (`Push.OfflinePush`), the item's
    /// fields; the batch's other fields are in the `extra` of its first
    /// item's event only.
    pub body: Map<String, Value>,
    /// Set when the callback was one item of a batch body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchItem>,
}

/// Where an event's item sat in a batched body (`{"Events": [...]}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItem {
    /// Position in `Events`, from 0.
    pub index: u32,
    /// Items in the batch.
    pub size: u32,
    /// The batch's content-derived id (the same for every item of one
    /// batch, and for the same batch sent again).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
}

/// Where and when a callback came from: what every event takes from its
/// request besides the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The app (`SdkAppid`).
    pub sdk_app_id: u64,
    /// `ClientIP` from the query, when present.
    pub client_ip: Option<String>,
    /// `OptPlatform` from the query, when present.
    pub platform: Option<String>,
    /// When the bridge received the callback, Unix milliseconds.
    pub received_at_ms: u64,
}

/// An authentic callback whose body could not be normalized, published raw
/// to the dead-letter topic with the reason in headers (see `docs/events.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// 32 hex digits of SHA-256 over the app, the command and the raw body.
    pub id: String,
    /// Bounded reason, e.g. `body_not_json`.
    pub reason: &'static str,
    /// Human-readable detail.
    pub error: String,
    /// The query's `CallbackCommand`.
    pub command: String,
    /// Where and when it came from.
    pub source: Source,
    /// The body exactly as received.
    pub body: bytes::Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/events.md` has one example per type, each a valid `Event` of
    /// the type its heading names.
    #[test]
    fn documented_examples_are_valid_events() {
        let doc = include_str!("../../docs/events.md");
        let examples = doc
            .split("## Examples")
            .nth(1)
            .expect("an Examples section");
        let mut seen = Vec::new();
        for section in examples.split("\n### ").skip(1) {
            let heading = section.lines().next().expect("heading").trim_matches('`');
            let json = section
                .split("```json")
                .nth(1)
                .and_then(|s| s.split("```").next())
                .unwrap_or_else(|| panic!("{heading}: no JSON example"));
            let event: Event = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("{heading}: not an Event: {e}"));
            assert_eq!(event.payload.type_name(), heading);
            let value: serde_json::Value = serde_json::from_str(json).expect("JSON");
            schema_check::assert_valid(&value, heading);
            // The example is the named fixture's event, as its snapshot has it.
            let fixture = section
                .split("fixture `tests/fixtures/callbacks/")
                .nth(1)
                .and_then(|s| s.split(".json`").next())
                .unwrap_or_else(|| panic!("{heading}: names no fixture"));
            let stem = if section.contains("the second item") {
                format!("{fixture}-1")
            } else {
                fixture.to_owned()
            };
            let snapshot = std::fs::read_to_string(format!(
                "{}/src/callback/snapshots/chat_kafka_bridge__callback__to_event__tests__{stem}.snap",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap_or_else(|e| panic!("{heading}: snapshot of {stem}: {e}"));
            let snapped: serde_json::Value =
                serde_json::from_str(snapshot.splitn(3, "---\n").nth(2).expect("insta header"))
                    .expect("snapshot JSON");
            assert_eq!(
                value, snapped,
                "{heading}: docs/events.md differs from {stem}'s snapshot"
            );
            seen.push(heading.to_owned());
        }
        assert_eq!(seen.len(), 12, "{seen:?}");
    }
}
