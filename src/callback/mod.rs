//! Tencent Cloud Chat's wire protocol: the query string, the signature and
//! the callback bodies, exactly as Tencent spells them.
//!
//! Nothing in this module knows about Kafka or HTTP. It turns bytes into
//! typed, validated callbacks, says precisely what is wrong when it cannot,
//! and translates them, by hand, into our events ([`to_events`]): the side
//! that knows the wire converts, so [`crate::event`] imports nothing.

mod body;
mod command;
mod field;
mod ids;
mod official_account;
mod query;
mod signature;
mod table;
mod time;
mod to_event;

pub use body::{
    Batch, BodyError, Envelope, Fault, JsonLimits, OverLimit, json_depth_exceeds, json_over_limits,
    parse_body, split_batch,
};
pub use command::{Family, OfficialAccountCommand, is_before, is_sync};
pub use field::FieldPath;
pub use ids::event_id;
pub use official_account::{
    AccountCreation, AccountFull, InfoChanged, MessageSend, MessageSent, MessageWithdrawn,
    OfficialAccountBody, Subscriber, Subscribers, WithdrawnMessage,
};
pub use query::{CallbackQuery, QueryError};
pub use signature::{SignatureError, sign, verify, verify_any};
pub use table::{Command, Kind, Table, Unit, table};
pub use time::MAX_TIME_MS;
pub use to_event::{Keyed, NoEvents, Unparsed, dead_letter, parse, source, to_events};
