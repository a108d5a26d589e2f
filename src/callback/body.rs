//! Callback bodies as Tencent sends them.
//!
//! Lenient where real payloads vary (numbers sent as strings, unknown fields,
//! optional profile fields) and strict where a field is the point of the
//! callback (`Official_Account`, the subscriber list). Every struct keeps the
//! fields it does not name in `extra`, so nothing Tencent sends is dropped.

use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::OfficialAccountCommand;

/// A body that is JSON but not (yet) typed: the two fields every callback
/// shares, and everything else.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The body's own `CallbackCommand`, when it has one.
    pub command: Option<String>,
    /// `EventTime` in milliseconds, from an integer or a numeric string.
    pub event_time_ms: Option<u64>,
    /// Every other field, unchanged.
    pub fields: Map<String, Value>,
}

/// Why an authentic callback's body cannot be normalized. Such callbacks go to
/// the dead-letter topic, raw, with [`BodyError::as_str`] as the reason.
#[derive(Debug)]
pub enum BodyError {
    /// Not valid JSON (or not UTF-8).
    NotJson(serde_json::Error),
    /// Valid JSON, but not an object.
    NotObject,
    /// A field the command needs is absent.
    MissingField(&'static str),
    /// A field has a type or value the command cannot use.
    InvalidField(&'static str, String),
    /// The body does not have the shape its command documents.
    Shape(serde_json::Error),
}

impl BodyError {
    /// Every value [`BodyError::as_str`] returns.
    pub const REASONS: [&'static str; 4] = [
        "body_not_json",
        "body_not_object",
        "body_missing_field",
        "body_invalid_field",
    ];

    /// Bounded label for metrics and the dead-letter header.
    pub fn as_str(&self) -> &'static str {
        match self {
            BodyError::NotJson(_) => "body_not_json",
            BodyError::NotObject => "body_not_object",
            BodyError::MissingField(_) => "body_missing_field",
            BodyError::InvalidField(..) | BodyError::Shape(_) => "body_invalid_field",
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::NotJson(e) => write!(f, "body is not JSON: {e}"),
            BodyError::NotObject => f.write_str("body is JSON but not an object"),
            BodyError::MissingField(name) => write!(f, "body field {name} is missing"),
            BodyError::InvalidField(name, why) => write!(f, "body field {name} is invalid: {why}"),
            BodyError::Shape(e) => write!(f, "body does not match its command: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// `true` when `bytes` nest JSON arrays/objects deeper than `max`. A linear
/// scan that respects strings, run before parsing so that deep nesting never
/// reaches the parser's recursion.
pub fn json_depth_exceeds(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses a body into its [`Envelope`].
pub fn parse_body(bytes: &[u8]) -> Result<Envelope, BodyError> {
    let value: Value = serde_json::from_slice(bytes).map_err(BodyError::NotJson)?;
    let Value::Object(fields) = value else {
        return Err(BodyError::NotObject);
    };
    into_envelope(fields)
}

/// Most items a batched body may hold (Tencent sends at most 100).
pub const MAX_BATCH_ITEMS: usize = 1000;

/// A batched body, split.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Each item of `Events`, as its own callback.
    pub items: Vec<Envelope>,
    /// The batch's fields besides `Events`.
    pub rest: Map<String, Value>,
}

/// The items of a batched body (`{"Events": [...]}`, as `Push.OfflinePush`
/// sends). `None` when the body has no `Events` field (not a batch).
pub fn split_batch(envelope: &mut Envelope) -> Option<Result<Batch, BodyError>> {
    let events = envelope.fields.remove("Events")?;
    let Value::Array(items) = events else {
        return Some(Err(BodyError::InvalidField(
            "Events",
            format!("expected an array of callbacks, got {events}"),
        )));
    };
    if items.len() > MAX_BATCH_ITEMS {
        return Some(Err(BodyError::InvalidField(
            "Events",
            format!("{} items, more than {MAX_BATCH_ITEMS}", items.len()),
        )));
    }
    let items = items
        .into_iter()
        .map(|item| match item {
            Value::Object(fields) => into_envelope(fields),
            other => Err(BodyError::InvalidField(
                "Events",
                format!("an item is not an object: {other}"),
            )),
        })
        .collect::<Result<Vec<_>, _>>();
    Some(items.map(|items| Batch {
        items,
        rest: std::mem::take(&mut envelope.fields),
    }))
}

/// Splits `CallbackCommand` and `EventTime` off a body object.
fn into_envelope(mut fields: Map<String, Value>) -> Result<Envelope, BodyError> {
    let command = match fields.remove("CallbackCommand") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(BodyError::InvalidField(
                "CallbackCommand",
                format!("expected a string, got {other}"),
            ));
        }
    };
    let event_time_ms =
        match fields.remove("EventTime") {
            None | Some(Value::Null) => None,
            Some(v) => Some(lenient_u64(&v).ok_or_else(|| {
                BodyError::InvalidField("EventTime", format!("not a number: {v}"))
            })?),
        };
    Ok(Envelope {
        command,
        event_time_ms,
        fields,
    })
}

/// A non-negative integer, sent as a JSON number or as a string of digits.
fn lenient_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn de_lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => lenient_u64(&v)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("expected a number, got {v}"))),
    }
}

/// Create (Before and After) and Destroyed callbacks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AccountCreation {
    /// `Official_Account`: absent in the Before form (no account yet).
    #[serde(rename = "Official_Account", default)]
    pub official_account: Option<String>,
    /// `Operator_Account`.
    #[serde(rename = "Operator_Account", default)]
    pub operator_account: Option<String>,
    /// `Owner_Account`.
    #[serde(rename = "Owner_Account", default)]
    pub owner_account: Option<String>,
    /// `Name`.
    #[serde(rename = "Name", default)]
    pub name: Option<String>,
    /// Fields not named above.
    #[serde(skip)]
    pub extra: Map<String, Value>,
}

/// `CallbackAfterOfficialAccountInfoChanged`: only the fields Tencent sent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InfoChanged {
    /// `Official_Account`.
    #[serde(rename = "Official_Account")]
    pub official_account: String,
    /// `Operator_Account`.
    #[serde(rename = "Operator_Account", default)]
    pub operator_account: Option<String>,
    /// New `Name`, if sent.
    #[serde(rename = "Name", default)]
    pub name: Option<String>,
    /// New `Introduction`, if sent.
    #[serde(rename = "Introduction", default)]
    pub introduction: Option<String>,
    /// New `FaceUrl`, if sent.
    #[serde(rename = "FaceUrl", default)]
    pub face_url: Option<String>,
    /// New `Organization`, if sent.
    #[serde(rename = "Organization", default)]
    pub organization: Option<String>,
    /// Fields not named above.
    #[serde(skip)]
    pub extra: Map<String, Value>,
}

/// One item of `SubscribeAccountList`.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscriber {
    /// `Subscriber_Account`.
    pub account: String,
    /// Fields of the item not named above.
    pub extra: Map<String, Value>,
}

impl<'de> Deserialize<'de> for Subscriber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (account, extra) = item_with_string(d, "Subscriber_Account")?;
        Ok(Subscriber { account, extra })
    }
}

/// An object item with one required string field; the rest is kept.
fn item_with_string<'de, D: Deserializer<'de>>(
    d: D,
    field: &'static str,
) -> Result<(String, Map<String, Value>), D::Error> {
    let mut item = Map::deserialize(d)?;
    match item.remove(field) {
        Some(Value::String(s)) => Ok((s, item)),
        Some(other) => Err(serde::de::Error::custom(format!(
            "{field} must be a string, got {other}"
        ))),
        None => Err(serde::de::Error::missing_field(field)),
    }
}

/// Add-subscriber (Before and After) and delete-subscriber callbacks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Subscribers {
    /// `Official_Account`.
    #[serde(rename = "Official_Account")]
    pub official_account: String,
    /// `Operator_Account`.
    #[serde(rename = "Operator_Account", default)]
    pub operator_account: Option<String>,
    /// `SubscribeAccountList`.
    #[serde(rename = "SubscribeAccountList")]
    pub subscribers: Vec<Subscriber>,
    /// Fields not named above.
    #[serde(skip)]
    pub extra: Map<String, Value>,
}

/// `CallbackAfterOfficialAccountFull`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AccountFull {
    /// `Official_Account`.
    #[serde(rename = "Official_Account")]
    pub official_account: String,
    /// Fields not named above.
    #[serde(skip)]
    pub extra: Map<String, Value>,
}

/// `CallbackBeforeSendMsg`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MessageSend {
    /// `Official_Account`.
    #[serde(rename = "Official_Account")]
    pub official_account: String,
    /// `OnlineOnlyFlag` (0/1).
    #[serde(
        rename = "OnlineOnlyFlag",
        default,
        deserialize_with = "de_lenient_u64"
    )]
    pub online_only_flag: Option<u64>,
    /// `MsgBody`: message elements, unchanged.
    #[serde(rename = "MsgBody", default)]
    pub msg_body: Option<Value>,
    /// `CloudCustomData`.
    #[serde(rename = "CloudCustomData", default)]
    pub cloud_custom_data: Option<String>,
    /// Fields not named above.
    #[serde(skip)]
    pub extra: Map<String, Value>,
}

/// `CallbackAfterSendMsg`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MessageSent {
    /// `Official_Account`.
    #[serde(rename = "Official_Account")]
    pub official_account: String,
    /// `MsgKey`: Tencent's unique message id.
    #[serde(rename = "MsgKey", default)]
    pub msg_key: Option<String>,
    /// `MsgTime` in seconds.
    #[serde(rename = "MsgTime", default, deserialize_with = "de_lenient_u64")]
    pub msg_time_secs: Option<u64>,
    /// `OnlineOnlyFlag` (0/1).
    #[serde(
        rename = "OnlineOnlyFlag",
        default,
        deserialize_with = "de_lenient_u64"
    )]
    pub online_only_flag: Option<u64>,
    /// `MsgBody`: message elements, unchanged.
    #[serde(rename = "MsgBody", default)]
    pub msg_body: Option<Value>,
    /// `CloudCustomData`.
    #[serde(rename = "CloudCustomData", default)]
    pub cloud_custom_data: Option<String>,
    /// Fields not named above.
    #[serde(skip)]
    pub extra: Map<String, Value>,
}

/// One item of `WithdrawMsgList`.
#[derive(Debug, Clone, PartialEq)]
pub struct WithdrawnMessage {
    /// `MsgKey`.
    pub msg_key: String,
    /// Fields of the item not named above.
    pub extra: Map<String, Value>,
}

impl<'de> Deserialize<'de> for WithdrawnMessage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (msg_key, extra) = item_with_string(d, "MsgKey")?;
        Ok(WithdrawnMessage { msg_key, extra })
    }
}

/// `CallbackAfterMsgWithDraw`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MessageWithdrawn {
    /// `Official_Account`.
    #[serde(rename = "Official_Account")]
    pub official_account: String,
    /// `WithdrawMsgList`.
    #[serde(rename = "WithdrawMsgList")]
    pub messages: Vec<WithdrawnMessage>,
    /// Fields not named above.
    #[serde(skip)]
    pub extra: Map<String, Value>,
}

/// A body struct: the wire names of its fields, and where the rest goes.
trait Typed: for<'de> Deserialize<'de> {
    const FIELDS: &'static [&'static str];
    fn extra_mut(&mut self) -> &mut Map<String, Value>;
}

macro_rules! typed {
    ($t:ty, [$($f:literal),* $(,)?]) => {
        impl Typed for $t {
            const FIELDS: &'static [&'static str] = &[$($f),*];
            fn extra_mut(&mut self) -> &mut Map<String, Value> {
                &mut self.extra
            }
        }
    };
}

typed!(
    AccountCreation,
    [
        "Official_Account",
        "Operator_Account",
        "Owner_Account",
        "Name"
    ]
);
typed!(
    InfoChanged,
    [
        "Official_Account",
        "Operator_Account",
        "Name",
        "Introduction",
        "FaceUrl",
        "Organization"
    ]
);
typed!(
    Subscribers,
    [
        "Official_Account",
        "Operator_Account",
        "SubscribeAccountList"
    ]
);
typed!(AccountFull, ["Official_Account"]);
typed!(
    MessageSend,
    [
        "Official_Account",
        "OnlineOnlyFlag",
        "MsgBody",
        "CloudCustomData"
    ]
);
typed!(
    MessageSent,
    [
        "Official_Account",
        "MsgKey",
        "MsgTime",
        "OnlineOnlyFlag",
        "MsgBody",
        "CloudCustomData"
    ]
);
typed!(MessageWithdrawn, ["Official_Account", "WithdrawMsgList"]);

/// The typed body of one of the eleven Official Account commands.
#[derive(Debug, Clone, PartialEq)]
pub enum OfficialAccountBody {
    /// `CallbackBeforeCreateOfficialAccount`
    BeforeCreate(AccountCreation),
    /// `CallbackAfterCreateOfficialAccount`
    AfterCreate(AccountCreation),
    /// `CallbackAfterOfficialAccountInfoChanged`
    AfterInfoChanged(InfoChanged),
    /// `CallbackAfterOfficialAccountDestroyed`
    AfterDestroyed(AccountCreation),
    /// `CallbackBeforeAddSubscriber`
    BeforeAddSubscriber(Subscribers),
    /// `CallbackAfterAddSubscriber`
    AfterAddSubscriber(Subscribers),
    /// `CallbackAfterOfficialAccountFull`
    AfterFull(AccountFull),
    /// `CallbackAfterDeleteSubscriber`
    AfterDeleteSubscriber(Subscribers),
    /// `CallbackBeforeSendMsg`
    BeforeSendMsg(MessageSend),
    /// `CallbackAfterSendMsg`
    AfterSendMsg(MessageSent),
    /// `CallbackAfterMsgWithDraw`
    AfterMsgWithdraw(MessageWithdrawn),
}

impl OfficialAccountBody {
    /// Types `fields` (an [`Envelope`]'s) as the body of `command`.
    pub fn parse(
        command: OfficialAccountCommand,
        fields: Map<String, Value>,
    ) -> Result<Self, BodyError> {
        use OfficialAccountCommand as C;
        fn typed<T: Typed>(mut fields: Map<String, Value>) -> Result<T, BodyError> {
            // The named fields are typed; the rest stays as it came, numbers
            // included (no `flatten`: it would round big numbers through serde's buffer).
            let mut known = Map::new();
            for name in T::FIELDS {
                if let Some(v) = fields.remove(*name) {
                    known.insert((*name).to_owned(), v);
                }
            }
            let mut typed: T = serde_json::from_value(Value::Object(known)).map_err(|e| {
                // serde names the first missing field; keep that as its own reason.
                let msg = e.to_string();
                match msg
                    .strip_prefix("missing field `")
                    .and_then(|m| m.split('`').next())
                {
                    Some(name) => match name {
                        "Official_Account" => BodyError::MissingField("Official_Account"),
                        "SubscribeAccountList" => BodyError::MissingField("SubscribeAccountList"),
                        "WithdrawMsgList" => BodyError::MissingField("WithdrawMsgList"),
                        _ => BodyError::Shape(e),
                    },
                    None => BodyError::Shape(e),
                }
            })?;
            *typed.extra_mut() = fields;
            Ok(typed)
        }
        fn with_account(body: AccountCreation) -> Result<AccountCreation, BodyError> {
            match body.official_account {
                Some(_) => Ok(body),
                None => Err(BodyError::MissingField("Official_Account")),
            }
        }
        Ok(match command {
            C::BeforeCreate => Self::BeforeCreate(typed(fields)?),
            C::AfterCreate => Self::AfterCreate(with_account(typed(fields)?)?),
            C::AfterInfoChanged => Self::AfterInfoChanged(typed(fields)?),
            C::AfterDestroyed => Self::AfterDestroyed(with_account(typed(fields)?)?),
            C::BeforeAddSubscriber => Self::BeforeAddSubscriber(typed(fields)?),
            C::AfterAddSubscriber => Self::AfterAddSubscriber(typed(fields)?),
            C::AfterFull => Self::AfterFull(typed(fields)?),
            C::AfterDeleteSubscriber => Self::AfterDeleteSubscriber(typed(fields)?),
            C::BeforeSendMsg => Self::BeforeSendMsg(typed(fields)?),
            C::AfterSendMsg => Self::AfterSendMsg(typed(fields)?),
            C::AfterMsgWithdraw => Self::AfterMsgWithdraw(typed(fields)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nesting_depth_is_measured_outside_strings() {
        assert!(!json_depth_exceeds(br#"{"a":[{"b":1}]}"#, 3));
        assert!(json_depth_exceeds(br#"{"a":[{"b":[1]}]}"#, 3));
        // Brackets inside strings, and escaped quotes, do not count.
        assert!(!json_depth_exceeds(br#"{"a":"[[[[{{{{\"[[[["}"#, 1));
        assert!(json_depth_exceeds(&b"[".repeat(10_000), 32));
        assert!(!json_depth_exceeds(b"", 1));
    }

    #[test]
    fn envelope_takes_command_and_event_time_in_both_spellings() {
        let e = parse_body(br#"{"CallbackCommand":"A.B","EventTime":"1670574414123","X":1}"#)
            .expect("valid");
        assert_eq!(e.command.as_deref(), Some("A.B"));
        assert_eq!(e.event_time_ms, Some(1_670_574_414_123));
        assert_eq!(Value::Object(e.fields), json!({"X": 1}));
        let e = parse_body(br#"{"EventTime":1670574414123}"#).expect("valid");
        assert_eq!(e.event_time_ms, Some(1_670_574_414_123));
        assert_eq!(e.command, None);
        let e = parse_body(br#"{}"#).expect("valid");
        assert_eq!(e.event_time_ms, None);
    }

    #[test]
    fn envelope_errors_are_classified() {
        for e in [
            BodyError::NotObject,
            BodyError::MissingField("x"),
            BodyError::InvalidField("x", String::new()),
            parse_body(b"{").unwrap_err(),
        ] {
            assert!(BodyError::REASONS.contains(&e.as_str()), "{}", e.as_str());
        }
        assert_eq!(parse_body(b"{").unwrap_err().as_str(), "body_not_json");

        assert_eq!(parse_body(b"\xff").unwrap_err().as_str(), "body_not_json");
        assert_eq!(parse_body(b"[1]").unwrap_err().as_str(), "body_not_object");
        assert_eq!(
            parse_body(br#"{"EventTime":"soon"}"#).unwrap_err().as_str(),
            "body_invalid_field"
        );
        assert_eq!(
            parse_body(br#"{"EventTime":-5}"#).unwrap_err().as_str(),
            "body_invalid_field"
        );
        assert_eq!(
            parse_body(br#"{"CallbackCommand":7}"#)
                .unwrap_err()
                .as_str(),
            "body_invalid_field"
        );
    }

    fn fields(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test passes objects"),
        }
    }

    #[test]
    fn typed_bodies_keep_unknown_fields_and_accept_numeric_strings() {
        let body = OfficialAccountBody::parse(
            OfficialAccountCommand::AfterSendMsg,
            fields(json!({
                "Official_Account": "@TOA#_a", "MsgKey": "k", "MsgTime": "1732770011",
                "OnlineOnlyFlag": "1", "MsgBody": [], "MsgId": "new-field"
            })),
        )
        .expect("valid");
        let OfficialAccountBody::AfterSendMsg(m) = body else {
            panic!("wrong variant: {body:?}")
        };
        assert_eq!(m.msg_time_secs, Some(1_732_770_011));
        assert_eq!(m.online_only_flag, Some(1));
        assert_eq!(Value::Object(m.extra), json!({"MsgId": "new-field"}));
    }

    #[test]
    fn missing_account_and_lists_are_reported_by_name() {
        for (cmd, body, field) in [
            (
                OfficialAccountCommand::AfterFull,
                json!({}),
                "Official_Account",
            ),
            (
                OfficialAccountCommand::AfterCreate,
                json!({"Name": "n"}),
                "Official_Account",
            ),
            (
                OfficialAccountCommand::AfterDestroyed,
                json!({"Name": "n"}),
                "Official_Account",
            ),
            (
                OfficialAccountCommand::AfterAddSubscriber,
                json!({"Official_Account": "a"}),
                "SubscribeAccountList",
            ),
            (
                OfficialAccountCommand::AfterMsgWithdraw,
                json!({"Official_Account": "a"}),
                "WithdrawMsgList",
            ),
        ] {
            match OfficialAccountBody::parse(cmd, fields(body)) {
                Err(BodyError::MissingField(f)) => assert_eq!(f, field, "{cmd:?}"),
                other => panic!("{cmd:?}: expected MissingField({field}), got {other:?}"),
            }
        }
        // The Before form of create has no account yet.
        assert!(
            OfficialAccountBody::parse(OfficialAccountCommand::BeforeCreate, fields(json!({})))
                .is_ok()
        );
    }

    #[test]
    fn wrong_types_are_invalid_fields() {
        let err = OfficialAccountBody::parse(
            OfficialAccountCommand::AfterInfoChanged,
            fields(json!({"Official_Account": 5})),
        )
        .unwrap_err();
        assert_eq!(err.as_str(), "body_invalid_field");
        let err = OfficialAccountBody::parse(
            OfficialAccountCommand::AfterSendMsg,
            fields(json!({"Official_Account": "a", "MsgTime": "yesterday"})),
        )
        .unwrap_err();
        assert_eq!(err.as_str(), "body_invalid_field");
    }
}
