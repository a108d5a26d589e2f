//! The typed bodies of the eleven Official Account commands.
//!
//! Each body names each of its fields once, in the function that takes it
//! from the body ([`Fields`]); what no function takes stays in `extra`,
//! unchanged (numbers keep their exact text). Lenient where real payloads
//! vary (numbers sent as strings, optional profile fields) and strict where
//! a field is the point of the callback (`Official_Account`, the lists).

use serde_json::{Map, Value};

use super::body::{kind, lenient_u64, usable_id};
use super::{BodyError, OfficialAccountCommand};

/// A list item: its one required string, and its other fields.
type Item = (String, Map<String, Value>);

/// A body's fields, taken by name; what is left is the body's `extra`.
struct Fields(Map<String, Value>);

impl Fields {
    /// An optional string; `null` counts as absent.
    fn string(&mut self, name: &'static str) -> Result<Option<String>, BodyError> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(invalid(name, "a string", &other)),
        }
    }

    /// A string the command cannot do without; `null` is invalid.
    fn required_string(&mut self, name: &'static str) -> Result<String, BodyError> {
        match self.0.remove(name) {
            None => Err(BodyError::MissingField(name)),
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(invalid(name, "a string", &other)),
        }
    }

    /// The account the event is about (it becomes the key and `ce_subject`):
    /// required, not empty, a usable id.
    fn account(&mut self, name: &'static str) -> Result<String, BodyError> {
        let account = self.required_string(name)?;
        if account.is_empty() {
            return Err(BodyError::MissingField(name));
        }
        usable_id(name, &account)?;
        Ok(account)
    }

    /// An optional account: empty counts as absent.
    fn optional_account(&mut self, name: &'static str) -> Result<Option<String>, BodyError> {
        match self.string(name)? {
            Some(a) if a.is_empty() => Ok(None),
            Some(a) => {
                usable_id(name, &a)?;
                Ok(Some(a))
            }
            None => Ok(None),
        }
    }

    /// An optional non-negative integer, as a number or a string of digits.
    fn number(&mut self, name: &'static str) -> Result<Option<u64>, BodyError> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => lenient_u64(&v)
                .map(Some)
                .ok_or_else(|| invalid(name, "a number", &v)),
        }
    }

    /// Any JSON value, unchanged; `null` counts as absent.
    fn value(&mut self, name: &'static str) -> Option<Value> {
        self.0.remove(name).filter(|v| !v.is_null())
    }

    /// A required list of objects, each with the required string `item`;
    /// an item's other fields are kept with it.
    fn list(&mut self, name: &'static str, item: &'static str) -> Result<Vec<Item>, BodyError> {
        let items = match self.0.remove(name) {
            None => return Err(BodyError::MissingField(name)),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(invalid(name, "an array", &other)),
        };
        items
            .into_iter()
            .map(|v| {
                let Value::Object(mut fields) = v else {
                    return Err(invalid(name, "an array of objects", &v));
                };
                match fields.remove(item) {
                    Some(Value::String(s)) => Ok((s, fields)),
                    Some(other) => Err(BodyError::InvalidField(
                        name,
                        format!("{item} must be a string, got {}", kind(&other)),
                    )),
                    None => Err(BodyError::InvalidField(
                        name,
                        format!("an item has no {item}"),
                    )),
                }
            })
            .collect()
    }

    /// The fields no one took.
    fn rest(&mut self) -> Map<String, Value> {
        std::mem::take(&mut self.0)
    }
}

fn invalid(name: &'static str, expected: &str, got: &Value) -> BodyError {
    BodyError::InvalidField(name, format!("expected {expected}, got {}", kind(got)))
}

/// Create (Before and After) and Destroyed callbacks.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountCreation {
    /// `Official_Account`: absent in the Before form (no account yet).
    pub official_account: Option<String>,
    /// `Operator_Account`.
    pub operator_account: Option<String>,
    /// `Owner_Account`.
    pub owner_account: Option<String>,
    /// `Name`.
    pub name: Option<String>,
    /// Fields not named above.
    pub extra: Map<String, Value>,
}

impl AccountCreation {
    fn take(f: &mut Fields) -> Result<Self, BodyError> {
        Ok(AccountCreation {
            official_account: f.optional_account("Official_Account")?,
            operator_account: f.string("Operator_Account")?,
            owner_account: f.optional_account("Owner_Account")?,
            name: f.string("Name")?,
            extra: f.rest(),
        })
    }

    /// The After forms: the account exists.
    fn with_account(self) -> Result<Self, BodyError> {
        match self.official_account {
            Some(_) => Ok(self),
            None => Err(BodyError::MissingField("Official_Account")),
        }
    }
}

/// `CallbackAfterOfficialAccountInfoChanged`: only the fields Tencent sent.
#[derive(Debug, Clone, PartialEq)]
pub struct InfoChanged {
    /// `Official_Account`.
    pub official_account: String,
    /// `Operator_Account`.
    pub operator_account: Option<String>,
    /// New `Name`, if sent.
    pub name: Option<String>,
    /// New `Introduction`, if sent.
    pub introduction: Option<String>,
    /// New `FaceUrl`, if sent.
    pub face_url: Option<String>,
    /// New `Organization`, if sent.
    pub organization: Option<String>,
    /// Fields not named above.
    pub extra: Map<String, Value>,
}

impl InfoChanged {
    fn take(f: &mut Fields) -> Result<Self, BodyError> {
        Ok(InfoChanged {
            official_account: f.account("Official_Account")?,
            operator_account: f.string("Operator_Account")?,
            name: f.string("Name")?,
            introduction: f.string("Introduction")?,
            face_url: f.string("FaceUrl")?,
            organization: f.string("Organization")?,
            extra: f.rest(),
        })
    }
}

/// One item of `SubscribeAccountList`.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscriber {
    /// `Subscriber_Account`.
    pub account: String,
    /// Fields of the item not named above.
    pub extra: Map<String, Value>,
}

/// Add-subscriber (Before and After) and delete-subscriber callbacks.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribers {
    /// `Official_Account`.
    pub official_account: String,
    /// `Operator_Account`.
    pub operator_account: Option<String>,
    /// `SubscribeAccountList`.
    pub subscribers: Vec<Subscriber>,
    /// Fields not named above.
    pub extra: Map<String, Value>,
}

impl Subscribers {
    fn take(f: &mut Fields) -> Result<Self, BodyError> {
        Ok(Subscribers {
            official_account: f.account("Official_Account")?,
            operator_account: f.string("Operator_Account")?,
            subscribers: f
                .list("SubscribeAccountList", "Subscriber_Account")?
                .into_iter()
                .map(|(account, extra)| Subscriber { account, extra })
                .collect(),
            extra: f.rest(),
        })
    }
}

/// `CallbackAfterOfficialAccountFull`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountFull {
    /// `Official_Account`.
    pub official_account: String,
    /// Fields not named above.
    pub extra: Map<String, Value>,
}

impl AccountFull {
    fn take(f: &mut Fields) -> Result<Self, BodyError> {
        Ok(AccountFull {
            official_account: f.account("Official_Account")?,
            extra: f.rest(),
        })
    }
}

/// `CallbackBeforeSendMsg`.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageSend {
    /// `Official_Account`.
    pub official_account: String,
    /// `OnlineOnlyFlag` (0/1).
    pub online_only_flag: Option<u64>,
    /// `MsgBody`: message elements, unchanged.
    pub msg_body: Option<Value>,
    /// `CloudCustomData`.
    pub cloud_custom_data: Option<String>,
    /// Fields not named above.
    pub extra: Map<String, Value>,
}

impl MessageSend {
    fn take(f: &mut Fields) -> Result<Self, BodyError> {
        Ok(MessageSend {
            official_account: f.account("Official_Account")?,
            online_only_flag: f.number("OnlineOnlyFlag")?,
            msg_body: f.value("MsgBody"),
            cloud_custom_data: f.string("CloudCustomData")?,
            extra: f.rest(),
        })
    }
}

/// `CallbackAfterSendMsg`.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageSent {
    /// `Official_Account`.
    pub official_account: String,
    /// `MsgKey`: Tencent's unique message id.
    pub msg_key: Option<String>,
    /// `MsgTime` in seconds.
    pub msg_time_secs: Option<u64>,
    /// `OnlineOnlyFlag` (0/1).
    pub online_only_flag: Option<u64>,
    /// `MsgBody`: message elements, unchanged.
    pub msg_body: Option<Value>,
    /// `CloudCustomData`.
    pub cloud_custom_data: Option<String>,
    /// Fields not named above.
    pub extra: Map<String, Value>,
}

impl MessageSent {
    fn take(f: &mut Fields) -> Result<Self, BodyError> {
        Ok(MessageSent {
            official_account: f.account("Official_Account")?,
            msg_key: f.string("MsgKey")?,
            msg_time_secs: f.number("MsgTime")?,
            online_only_flag: f.number("OnlineOnlyFlag")?,
            msg_body: f.value("MsgBody"),
            cloud_custom_data: f.string("CloudCustomData")?,
            extra: f.rest(),
        })
    }
}

/// One item of `WithdrawMsgList`.
#[derive(Debug, Clone, PartialEq)]
pub struct WithdrawnMessage {
    /// `MsgKey`.
    pub msg_key: String,
    /// Fields of the item not named above.
    pub extra: Map<String, Value>,
}

/// `CallbackAfterMsgWithDraw`.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageWithdrawn {
    /// `Official_Account`.
    pub official_account: String,
    /// `WithdrawMsgList`.
    pub messages: Vec<WithdrawnMessage>,
    /// Fields not named above.
    pub extra: Map<String, Value>,
}

impl MessageWithdrawn {
    fn take(f: &mut Fields) -> Result<Self, BodyError> {
        Ok(MessageWithdrawn {
            official_account: f.account("Official_Account")?,
            messages: f
                .list("WithdrawMsgList", "MsgKey")?
                .into_iter()
                .map(|(msg_key, extra)| WithdrawnMessage { msg_key, extra })
                .collect(),
            extra: f.rest(),
        })
    }
}

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
    /// Types `fields` (an [`super::Envelope`]'s) as the body of `command`.
    pub fn parse(
        command: OfficialAccountCommand,
        fields: Map<String, Value>,
    ) -> Result<Self, BodyError> {
        use OfficialAccountCommand as C;
        let f = &mut Fields(fields);
        Ok(match command {
            C::BeforeCreate => Self::BeforeCreate(AccountCreation::take(f)?),
            C::AfterCreate => Self::AfterCreate(AccountCreation::take(f)?.with_account()?),
            C::AfterInfoChanged => Self::AfterInfoChanged(InfoChanged::take(f)?),
            C::AfterDestroyed => Self::AfterDestroyed(AccountCreation::take(f)?.with_account()?),
            C::BeforeAddSubscriber => Self::BeforeAddSubscriber(Subscribers::take(f)?),
            C::AfterAddSubscriber => Self::AfterAddSubscriber(Subscribers::take(f)?),
            C::AfterFull => Self::AfterFull(AccountFull::take(f)?),
            C::AfterDeleteSubscriber => Self::AfterDeleteSubscriber(Subscribers::take(f)?),
            C::BeforeSendMsg => Self::BeforeSendMsg(MessageSend::take(f)?),
            C::AfterSendMsg => Self::AfterSendMsg(MessageSent::take(f)?),
            C::AfterMsgWithdraw => Self::AfterMsgWithdraw(MessageWithdrawn::take(f)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
