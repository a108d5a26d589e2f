//! chat-kafka-bridge receives Tencent Cloud Chat webhooks and publishes them to
//! Kafka as normalized, versioned events.
//!
//! The parts, in the order a callback meets them:
//!
//! - [`http`]: accept loops, limits and drain; [`http::callback`] validates and
//!   answers at once; [`http::respond`] is the only place that picks a status.
//! - [`callback`]: Tencent's wire protocol (query string, signature, bodies),
//!   knowing nothing of Kafka.
//! - [`route`]: the routing table: each command's topic, record key and
//!   action; [`dedup`]: the optional window of recently published ids.
//! - [`event`]: our versioned event schema and the hand-written conversion
//!   from callbacks; the only types written to Kafka.
//! - [`sink`]: the acknowledgement modes, the Kafka producer (keys,
//!   CloudEvents headers, delivery reports), the forwarder that replays the
//!   spool, the local durable queue for records Kafka has not confirmed
//!   ([`sink::spool`]), and the embedded broker for zero-config runs.
//! - [`metrics`]: every metric, one method per thing that happens, each of
//!   which logs and counts.
//! - [`config`]: flags, environment and file, validated into plain data.
//! - [`health`]: readiness, with typed handles for who sets and who reads it.
//! - [`app`]: wiring and the shutdown sequence; [`telemetry`]: log setup.
//!
//! See `ARCHITECTURE.md` for the invariants.

pub mod app;
pub mod callback;
pub mod clock;
pub mod config;
pub mod dedup;
pub mod event;
pub mod health;
pub mod http;
pub mod metrics;
pub mod route;
pub mod sink;
pub mod telemetry;
