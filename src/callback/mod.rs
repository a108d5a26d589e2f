//! Tencent Cloud Chat's wire protocol: the query string, the signature and
//! the callback bodies, exactly as Tencent spells them.
//!
//! Nothing in this module knows about Kafka or about our event schema: it
//! turns bytes into typed, validated callbacks and says precisely what is
//! wrong when it cannot.

mod body;
mod command;
mod query;
mod signature;

pub use body::{
    AccountCreation, AccountFull, BodyError, Envelope, InfoChanged, MessageSend, MessageSent,
    MessageWithdrawn, OfficialAccountBody, Subscriber, Subscribers, WithdrawnMessage,
    json_depth_exceeds, parse_body,
};
pub use command::{Family, OfficialAccountCommand};
pub use query::{CallbackQuery, QueryError};
pub use signature::{SignatureError, sign, verify, verify_any};
