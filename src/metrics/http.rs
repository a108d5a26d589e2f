//! Callback connections: how many are open, refused, and why they closed.

use prometheus::{IntCounter, IntCounterVec, IntGauge};
use tracing::{debug, warn};

use super::{ConnectionClose, Metrics, Reg};

pub(super) struct Http {
    connections: IntGauge,
    rejected: IntCounter,
    closed_of: Vec<IntCounter>,
}

impl Http {
    pub(super) fn new(r: &Reg<'_>) -> Self {
        let closed: IntCounterVec = r.counter_vec(
            "http_connections_closed_total",
            "Callback connections the bridge closed or that ended in a protocol error, by reason.",
            &["reason"],
        );
        Http {
            connections: r.gauge("http_connections", "Open connections on the callback port."),
            rejected: r.counter(
                "http_connections_rejected_total",
                "Connections closed at once because BRIDGE_MAX_CONNECTIONS were already open.",
            ),
            closed_of: ConnectionClose::ALL
                .iter()
                .map(|c| closed.with_label_values(&[c.as_str()]))
                .collect(),
        }
    }
}

impl Metrics {
    /// A connection on the callback port opened.
    pub fn connection_opened(&self) {
        self.http.connections.inc();
    }

    /// A connection on the callback port closed.
    pub fn connection_closed(&self) {
        self.http.connections.dec();
    }

    /// A connection was refused because the connection limit was reached.
    pub fn connection_refused(&self, limit: usize) {
        warn!(
            limit,
            "Connection closed at once: BRIDGE_MAX_CONNECTIONS reached."
        );
        self.http.rejected.inc();
    }

    /// The bridge closed a callback connection (idle or header timeout).
    pub fn connection_closed_by(&self, reason: ConnectionClose) {
        debug!(reason = reason.as_str(), "Callback connection closed.");
        self.http.closed_of[reason as usize].inc();
    }

    /// A callback connection ended with a protocol or I/O error. Logged at
    /// DEBUG: under attack these come by the thousand; the counter shows them.
    pub fn connection_error(&self, reason: ConnectionClose, error: &dyn std::fmt::Display) {
        debug!(reason = reason.as_str(), %error, "Callback connection ended with an error.");
        self.http.closed_of[reason as usize].inc();
    }
}
