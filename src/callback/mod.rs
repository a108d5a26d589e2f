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
    AccountCreation, AccountFull, Batch, BodyError, Envelope, InfoChanged, MAX_BATCH_ITEMS,
    MessageSend, MessageSent, MessageWithdrawn, OfficialAccountBody, Subscriber, Subscribers,
    WithdrawnMessage, json_depth_exceeds, parse_body, split_batch,
};
pub use command::{BATCH_COMMANDS, Family, OfficialAccountCommand, is_before};
pub use query::{CallbackQuery, QueryError};
pub use signature::{SignatureError, sign, verify, verify_any};
