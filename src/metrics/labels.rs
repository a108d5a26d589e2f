//! Every label vocabulary: closed enums, each with `ALL` (the series created
//! at start) and `as_str` (the label value). A label value can come from
//! nowhere else.

/// Declares a label enum with `ALL` and `as_str`, the value written once.
macro_rules! label {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vm])* $var,)*
        }

        impl $name {
            /// Every value, in declaration order (`value as usize` indexes it).
            pub const ALL: &'static [$name] = &[$($name::$var,)*];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$var => $s,)*
                }
            }
        }
    };
}

label! {
    /// Which Kafka stream a record belongs to: normalized events or dead letters.
    Stream {
        /// Normalized events, on their route's topic.
        Events => "events",
        /// Raw callbacks that could not be normalized, on the dead-letter topic.
        DeadLetter => "dead_letter",
    }
}

label! {
    /// What happened to a callback that was answered `200 OK`.
    Accepted {
        /// Its events were handed to the acknowledgement mode.
        Published => "published",
        /// Authentic but not parseable: handed to the producer for the dead-letter topic.
        DeadLettered => "dead_lettered",
        /// Counted, not published: its route's action is `count`, it is a Before
        /// callback with `BRIDGE_PUBLISH_BEFORE=false`, or it is an empty batch.
        Counted => "counted",
        /// Every event it carried was published within `BRIDGE_DEDUP_WINDOW`.
        Duplicate => "duplicate",
    }
}

label! {
    /// Why a callback was answered OK and only counted (a log field).
    Counted {
        /// Its route's action is `count`.
        Route => "route",
        /// A Before callback, and `BRIDGE_PUBLISH_BEFORE=false`.
        Before => "before",
        /// A batch without items.
        EmptyBatch => "empty_batch",
    }
}

label! {
    /// Why a request on the callback port got a FAIL answer
    /// (`chat_bridge_callbacks_rejected_total{reason}`).
    Reason {
        /// The source address is not in `BRIDGE_ALLOWED_SOURCES`.
        SourceNotAllowed => "source_not_allowed",
        /// Not `BRIDGE_CALLBACK_PATH`.
        NotFound => "not_found",
        /// Not a POST.
        MethodNotAllowed => "method_not_allowed",
        /// The query string lacks or repeats a parameter.
        QueryMalformed => "query_malformed",
        /// `SdkAppid` is not configured.
        UnknownApp => "unknown_app",
        /// `Sign` or `RequestTime` is missing.
        SignatureMissing => "signature_missing",
        /// `Sign` or `RequestTime` is malformed.
        SignatureMalformed => "signature_malformed",
        /// `RequestTime` is outside the skew.
        SignatureStale => "signature_stale",
        /// `Sign` is wrong.
        SignatureMismatch => "signature_mismatch",
        /// Larger than `BRIDGE_MAX_BODY_BYTES`.
        BodyTooLarge => "body_too_large",
        /// The body could not be read.
        BodyReadFailed => "body_read_failed",
        /// Slower than `BRIDGE_BODY_READ_TIMEOUT`.
        BodyTimeout => "body_timeout",
        /// Deeper than `BRIDGE_MAX_JSON_DEPTH`.
        BodyTooDeep => "body_too_deep",
        /// More values than `BRIDGE_MAX_JSON_VALUES`.
        BodyTooComplex => "body_too_complex",
        /// `BRIDGE_MAX_INFLIGHT_BODY_BYTES` is taken by other bodies.
        BodyBudgetFull => "body_budget_full",
        /// The body names another command than the query.
        CommandMismatch => "command_mismatch",
        /// The record is larger than the producer accepts.
        RecordTooLarge => "record_too_large",
        /// The spool is full.
        SpoolFull => "spool_full",
        /// Writing the spool failed.
        SpoolFailed => "spool_failed",
    }
}

label! {
    /// Why a callback connection was closed (`http_connections_closed_total{reason}`).
    ConnectionClose {
        /// The TLS handshake failed or timed out.
        TlsHandshake => "tls_handshake",
        /// Idle longer than `BRIDGE_IDLE_TIMEOUT`.
        IdleTimeout => "idle_timeout",
        /// No complete head within `BRIDGE_HEADER_READ_TIMEOUT`.
        HeaderTimeout => "header_timeout",
        /// A head larger than `BRIDGE_MAX_HEADER_BYTES`.
        HeadersTooLarge => "headers_too_large",
        /// Not HTTP/1.1.
        MalformedHttp => "malformed_http",
        /// The client left mid-request.
        IncompleteRequest => "incomplete_request",
        /// Any other I/O error.
        IoError => "io_error",
        /// A write the client did not take within the write timeout.
        WriteTimeout => "write_timeout",
    }
}

label! {
    /// Why an acknowledged record was dropped (`events_discarded_total{reason}`).
    Discard {
        /// The spool was full.
        SpoolFull => "spool_full",
        /// Writing the spool failed.
        SpoolWriteFailed => "spool_write_failed",
        /// The spool was closed.
        SpoolClosed => "spool_closed",
        /// Larger than the producer accepts.
        RecordTooLarge => "record_too_large",
        /// A spooled record in a format this version cannot read.
        Undecodable => "undecodable",
    }
}

label! {
    /// The class of a Kafka delivery failure (`kafka_deliveries_total{error_class}`).
    ErrorClass {
        /// The message or request timed out.
        Timeout => "timeout",
        /// Larger than the broker or topic accepts.
        MessageTooLarge => "message_too_large",
        /// The topic or partition does not exist.
        UnknownTopic => "unknown_topic",
        /// Authentication or authorization failed.
        Authorization => "authorization",
        /// Purged at shutdown.
        Purged => "purged",
        /// No broker could be reached.
        BrokerUnavailable => "broker_unavailable",
        /// Fewer in-sync replicas than `min.insync.replicas`.
        NotEnoughReplicas => "not_enough_replicas",
        /// The idempotent producer failed fatally.
        Fatal => "fatal",
        /// Anything else.
        Other => "other",
    }
}

label! {
    /// Why a record went to the spool (`spool_appends_total{cause}`).
    SpoolCause {
        /// `BRIDGE_ACK_MODE=spooled`: every callback is spooled before the answer.
        Accepted => "accepted",
        /// The producer's queue was full.
        QueueFull => "queue_full",
        /// The producer refused the record for another reason.
        ProducerError => "producer_error",
        /// The producer reported a delivery failure.
        DeliveryFailed => "delivery_failed",
        /// `BRIDGE_ACK_MODE=delivered`: no acknowledgement within the deadline.
        Deadline => "deadline",
        /// A replayed record failed again.
        ReplayFailed => "replay_failed",
        /// The dead letter, trimmed to fit, of a record Kafka refused as too large.
        TooLarge => "too_large",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_declaration_order_and_values_are_unique() {
        fn check<T: Copy + std::fmt::Debug>(
            all: &[T],
            index: impl Fn(T) -> usize,
            s: impl Fn(T) -> &'static str,
        ) {
            let mut seen = std::collections::HashSet::new();
            for (i, v) in all.iter().enumerate() {
                assert_eq!(index(*v), i, "{v:?}");
                assert!(seen.insert(s(*v)), "{v:?} twice");
            }
        }
        check(Stream::ALL, |v| v as usize, Stream::as_str);
        check(Accepted::ALL, |v| v as usize, Accepted::as_str);
        check(Reason::ALL, |v| v as usize, Reason::as_str);
        check(
            ConnectionClose::ALL,
            |v| v as usize,
            ConnectionClose::as_str,
        );
        check(Discard::ALL, |v| v as usize, Discard::as_str);
        check(ErrorClass::ALL, |v| v as usize, ErrorClass::as_str);
        check(SpoolCause::ALL, |v| v as usize, SpoolCause::as_str);
    }
}
