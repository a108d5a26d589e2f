//! chat-kafka-bridge receives Tencent Cloud Chat webhooks and publishes them to
//! Kafka as normalized, versioned events.
//!
//! The parts, in the order a callback meets them:
//!
//! - [`http`]: accept loops, limits and drain; [`http::callback`] runs the
//!   request pipeline and answers, logs and counts in one place;
//!   [`http::respond`] maps every rejection to its answer.
//! - [`callback`]: Tencent's wire protocol (query string, signature, bodies)
//!   and the hand-written translation into events; knows neither Kafka nor HTTP.
//! - [`route`]: the routing table: each command's topic, record key and
//!   action; [`dedup`]: the optional window of recently published ids.
//! - [`event`]: our versioned event schema, a leaf; the only types written
//!   to Kafka.
//! - [`sink`]: the acknowledgement modes ([`sink::Publisher`]), the records
//!   ([`sink::record`]), the Kafka producer, the local durable queue for
//!   records Kafka has not confirmed ([`sink::spool`]), the forwarder that
//!   replays it, and the embedded broker for zero-config runs.
//! - [`metrics`]: every metric, one method per thing that happens, each of
//!   which logs and counts; label sets are closed enums.
//! - [`config`]: flags, environment and file, validated into plain data by group.
//! - [`health`]: readiness, with typed handles for who sets and who reads it.
//! - [`app`]: wiring and the shutdown steps; [`clock`]: time; [`telemetry`]: log setup.
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
