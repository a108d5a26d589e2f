//! Callback connections: how many are open, refused, and why they closed.

use prometheus::{IntCounter, IntCounterVec, IntGauge};
use tracing::{debug, error, warn};

use super::limit::LogLimit;
use super::{ConnectionClose, Metrics, Reg};

pub(super) struct Http {
    connections: IntGauge,
    rejected: IntCounter,
    closed_of: Vec<IntCounter>,
    accept_errors: IntCounterVec,
    admin_rejected: IntCounter,
    refused_lines: LogLimit,
    accept_lines: LogLimit,
}

impl Http {
    pub(super) fn new(r: &Reg<'_>) -> Self {
        let closed = r.counter_vec(
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
            accept_errors: {
                let v = r.counter_vec(
                    "http_accept_errors_total",
                    "Accepts that failed (out of file descriptors, ...), by port; the accept loop backs off 50 ms after each.",
                    &["port"],
                );
                for port in ["callback", "admin"] {
                    v.with_label_values(&[port]).reset();
                }
                v
            },
            admin_rejected: r.counter(
                "admin_connections_rejected_total",
                "Admin-port connections closed at once: the full slots and the probes' reserve were all taken.",
            ),
            refused_lines: LogLimit::default(),
            accept_lines: LogLimit::default(),
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
    /// Logged at most about once a second (with the count suppressed).
    pub fn connection_refused(&self, limit: usize) {
        self.http.rejected.inc();
        if let Some(suppressed) = self.http.refused_lines.allow() {
            warn!(
                limit,
                suppressed, "Connection closed at once: BRIDGE_MAX_CONNECTIONS reached."
            );
        }
    }

    /// An admin-port connection was refused: every slot was taken.
    pub fn admin_connection_refused(&self, limit: usize) {
        self.http.admin_rejected.inc();
        if let Some(suppressed) = self.http.refused_lines.allow() {
            warn!(
                limit,
                suppressed, "Admin connection closed at once: too many open."
            );
        }
    }

    /// Accepting a connection failed (`port`: `callback` or `admin`);
    /// logged at ERROR at most about once a second.
    pub fn accept_failed(&self, port: &'static str, error: &dyn std::fmt::Display) {
        self.http.accept_errors.with_label_values(&[port]).inc();
        if let Some(suppressed) = self.http.accept_lines.allow() {
            error!(port, %error, suppressed, "Accepting a connection failed; backing off.");
        }
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
