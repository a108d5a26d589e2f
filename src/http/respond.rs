//! The one place that chooses status codes: every [`Rejection`] maps, in one
//! exhaustive `match`, to an HTTP status, our `ErrorCode` and a fixed
//! `ErrorInfo`. Documented in `docs/errors.md`.
//!
//! Error codes avoid `0` (allow), `1` (deny), `2` (discard) and Tencent's
//! custom range 120001–130000, so no FAIL answer can ever be read as a
//! decision on a "Before" callback.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::callback::{QueryError, SignatureError};
use crate::metrics::Reason;
use crate::sink::AcceptError;

/// The body Tencent expects for every handled callback ("allow" for Before ones).
pub const OK_BODY: &str = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;

/// Why a request on the callback port was not accepted.
#[derive(Debug)]
pub enum Rejection {
    /// The client's address is not in `BRIDGE_ALLOWED_SOURCES`.
    SourceNotAllowed(std::net::IpAddr),
    /// The path is not `BRIDGE_CALLBACK_PATH`.
    NotFound,
    /// Not a POST.
    MethodNotAllowed,
    /// The query string lacks or repeats a required parameter.
    Query(QueryError),
    /// `SdkAppid` is not a configured app.
    UnknownApp(u64),
    /// The signature is missing, malformed, stale or wrong.
    Signature(SignatureError),
    /// The body is larger than `BRIDGE_MAX_BODY_BYTES`.
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body could not be read (client went away, bad chunking).
    BodyRead(String),
    /// The body did not arrive within `BRIDGE_BODY_READ_TIMEOUT`.
    BodyTimeout {
        /// The configured timeout.
        timeout: std::time::Duration,
    },
    /// The body nests deeper than `BRIDGE_MAX_JSON_DEPTH`.
    BodyTooDeep {
        /// The configured depth.
        limit: usize,
    },
    /// The body holds more values than `BRIDGE_MAX_JSON_VALUES`.
    BodyTooComplex {
        /// The configured count.
        limit: usize,
    },
    /// Other bodies being read and parsed hold `BRIDGE_MAX_INFLIGHT_BODY_BYTES`.
    BodyBudgetFull {
        /// The configured budget.
        limit: usize,
    },
    /// The body's `CallbackCommand` differs from the query's.
    CommandMismatch {
        /// From the query.
        query: String,
        /// From the body.
        body: String,
    },
    /// Neither the producer nor the spool would take the record.
    Accept(AcceptError),
}

/// How a rejection is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// `ErrorCode` in the FAIL body.
    pub code: u32,
    /// Metric label and log `reason`.
    pub reason: Reason,
    /// `ErrorInfo` in the FAIL body (fixed text: details go to the log only).
    pub info: &'static str,
}

impl Rejection {
    /// The status, code, reason and text for this rejection.
    pub fn answer(&self) -> Answer {
        use Reason as R;
        use StatusCode as S;
        let (status, code, reason, info) = match self {
            Rejection::SourceNotAllowed(_) => (
                S::FORBIDDEN,
                4031,
                R::SourceNotAllowed,
                "the source address is not allowed to send callbacks",
            ),
            Rejection::NotFound => (
                S::NOT_FOUND,
                4040,
                R::NotFound,
                "no callback endpoint at this path",
            ),
            Rejection::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                4050,
                R::MethodNotAllowed,
                "callbacks must be POSTed",
            ),
            Rejection::Query(_) => (
                S::BAD_REQUEST,
                4001,
                R::QueryMalformed,
                "query string lacks or repeats SdkAppid or CallbackCommand",
            ),
            Rejection::UnknownApp(_) => (
                S::FORBIDDEN,
                4030,
                R::UnknownApp,
                "SdkAppid is not configured on this bridge",
            ),
            Rejection::Signature(SignatureError::Missing) => (
                S::UNAUTHORIZED,
                4011,
                R::SignatureMissing,
                "Sign and RequestTime are required for this app",
            ),
            Rejection::Signature(SignatureError::Malformed) => (
                S::UNAUTHORIZED,
                4012,
                R::SignatureMalformed,
                "Sign must be 64 hex digits and RequestTime a number",
            ),
            Rejection::Signature(SignatureError::Stale { .. }) => (
                S::UNAUTHORIZED,
                4013,
                R::SignatureStale,
                "RequestTime is outside the allowed clock skew",
            ),
            Rejection::Signature(SignatureError::Mismatch) => (
                S::UNAUTHORIZED,
                4014,
                R::SignatureMismatch,
                "Sign does not match the app's token",
            ),
            Rejection::BodyTooLarge { .. } => (
                S::PAYLOAD_TOO_LARGE,
                4130,
                R::BodyTooLarge,
                "body is larger than the bridge accepts",
            ),
            Rejection::BodyRead(_) => (
                S::BAD_REQUEST,
                4002,
                R::BodyReadFailed,
                "body could not be read",
            ),
            Rejection::BodyTimeout { .. } => (
                S::REQUEST_TIMEOUT,
                4080,
                R::BodyTimeout,
                "the body did not arrive in time",
            ),
            Rejection::BodyTooDeep { .. } => (
                S::BAD_REQUEST,
                4005,
                R::BodyTooDeep,
                "the body's JSON nests too deep",
            ),
            Rejection::BodyTooComplex { .. } => (
                S::BAD_REQUEST,
                4006,
                R::BodyTooComplex,
                "the body's JSON holds too many values",
            ),
            Rejection::BodyBudgetFull { .. } => (
                S::SERVICE_UNAVAILABLE,
                5034,
                R::BodyBudgetFull,
                "too many bodies are being read at once",
            ),
            Rejection::CommandMismatch { .. } => (
                S::BAD_REQUEST,
                4003,
                R::CommandMismatch,
                "body CallbackCommand differs from the query's",
            ),
            Rejection::Accept(AcceptError::TooLarge) => (
                S::PAYLOAD_TOO_LARGE,
                4131,
                R::RecordTooLarge,
                "the event is larger than the Kafka producer accepts",
            ),
            Rejection::Accept(AcceptError::SpoolFull) => (
                S::SERVICE_UNAVAILABLE,
                5032,
                R::SpoolFull,
                "Kafka cannot take the event now and the bridge's spool is full",
            ),
            Rejection::Accept(AcceptError::SpoolFailed(_)) => (
                S::SERVICE_UNAVAILABLE,
                5033,
                R::SpoolFailed,
                "Kafka cannot take the event now and writing the bridge's spool failed",
            ),
        };
        Answer {
            status,
            code,
            reason,
            info,
        }
    }

    /// The FAIL response.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let a = self.answer();
        let body = format!(
            r#"{{"ActionStatus":"FAIL","ErrorInfo":"{}: {}","ErrorCode":{}}}"#,
            a.reason.as_str(),
            a.info,
            a.code
        );
        json(a.status, Bytes::from(body))
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::SourceNotAllowed(ip) => {
                write!(f, "source {ip} is not in BRIDGE_ALLOWED_SOURCES")
            }
            Rejection::NotFound => f.write_str("unknown path"),
            Rejection::MethodNotAllowed => f.write_str("method is not POST"),
            Rejection::Query(e) => e.fmt(f),
            Rejection::UnknownApp(id) => write!(f, "SdkAppid {id} is not configured"),
            Rejection::Signature(e) => e.fmt(f),
            Rejection::BodyTooLarge { limit } => write!(f, "body exceeds {limit} bytes"),
            Rejection::BodyRead(e) => write!(f, "reading the body failed: {e}"),
            Rejection::BodyTimeout { timeout } => {
                write!(f, "the body did not arrive within {timeout:?}")
            }
            Rejection::BodyTooDeep { limit } => {
                write!(f, "the body's JSON nests deeper than {limit}")
            }
            Rejection::BodyTooComplex { limit } => {
                write!(f, "the body's JSON holds more than {limit} values")
            }
            Rejection::BodyBudgetFull { limit } => write!(
                f,
                "bodies being read and parsed already hold BRIDGE_MAX_INFLIGHT_BODY_BYTES ({limit})"
            ),
            Rejection::CommandMismatch { query, body } => {
                write!(
                    f,
                    "query CallbackCommand {query:?} but body CallbackCommand {body:?}"
                )
            }
            Rejection::Accept(e) => e.fmt(f),
        }
    }
}

/// `200 OK` with [`OK_BODY`].
pub fn ok() -> Response<Full<Bytes>> {
    json(StatusCode::OK, Bytes::from_static(OK_BODY.as_bytes()))
}

/// `200 OK` for an accepted callback of `command`: the neutral answer the
/// command table gives it (for a sync callback, whose answer Tencent reads
/// as data), else [`OK_BODY`] ("allow" for a Before callback).
pub fn accepted(command: &str) -> Response<Full<Bytes>> {
    match crate::callback::table()
        .get(command)
        .and_then(|c| c.answer.as_deref())
    {
        Some(answer) => json(StatusCode::OK, Bytes::from_static(answer.as_bytes())),
        None => ok(),
    }
}

fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Rejection> {
        vec![
            Rejection::SourceNotAllowed([127, 0, 0, 1].into()),
            Rejection::NotFound,
            Rejection::MethodNotAllowed,
            Rejection::Query(QueryError::MissingAppId),
            Rejection::UnknownApp(1),
            Rejection::Signature(SignatureError::Missing),
            Rejection::Signature(SignatureError::Malformed),
            Rejection::Signature(SignatureError::Stale { age_secs: 99 }),
            Rejection::Signature(SignatureError::Mismatch),
            Rejection::BodyTooLarge { limit: 1 },
            Rejection::BodyRead("x".into()),
            Rejection::BodyTimeout {
                timeout: std::time::Duration::from_secs(1),
            },
            Rejection::BodyTooDeep { limit: 1 },
            Rejection::BodyTooComplex { limit: 1 },
            Rejection::BodyBudgetFull { limit: 1 },
            Rejection::CommandMismatch {
                query: "a".into(),
                body: "b".into(),
            },
            Rejection::Accept(AcceptError::TooLarge),
            Rejection::Accept(AcceptError::SpoolFull),
            Rejection::Accept(crate::sink::SpoolError::Io("disk".into()).into()),
            Rejection::Accept(crate::sink::SpoolError::Closed.into()),
        ]
    }

    #[test]
    fn codes_and_reasons_are_unique_and_never_a_decision() {
        let answers: Vec<_> = all().iter().map(Rejection::answer).collect();
        // Several variants may share one answer; one code never has two reasons.
        let pairs: std::collections::BTreeSet<_> =
            answers.iter().map(|a| (a.code, a.reason)).collect();
        let codes: std::collections::BTreeSet<_> = pairs.iter().map(|p| p.0).collect();
        let reasons: std::collections::BTreeSet<_> = pairs.iter().map(|p| p.1).collect();
        assert_eq!(codes.len(), pairs.len(), "a code with two reasons");
        assert_eq!(reasons.len(), pairs.len(), "a reason with two codes");
        for a in &answers {
            assert!(
                a.code > 2 && !(120_001..=130_000).contains(&a.code),
                "{a:?}"
            );
            assert!(
                a.status.is_client_error() || a.status.is_server_error(),
                "{a:?}"
            );
        }
    }

    #[test]
    fn fail_bodies_are_tencent_shaped_json() {
        for r in all() {
            let a = r.answer();
            let resp = r.response();
            assert_eq!(resp.status(), a.status);
            let body = futures_body(resp);
            let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
            assert_eq!(v["ActionStatus"], "FAIL");
            assert_eq!(v["ErrorCode"], a.code);
            assert!(
                v["ErrorInfo"]
                    .as_str()
                    .expect("string")
                    .starts_with(a.reason.as_str())
            );
        }
        let v: serde_json::Value = serde_json::from_str(OK_BODY).expect("JSON");
        assert_eq!(
            v,
            serde_json::json!({"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0})
        );
    }

    /// Every reason label is the answer of some rejection.
    #[test]
    fn every_reason_is_an_answer() {
        let answered: std::collections::HashSet<_> =
            all().iter().map(|r| r.answer().reason).collect();
        for reason in Reason::ALL {
            assert!(answered.contains(reason), "{reason:?}");
        }
    }

    /// `docs/errors.md` lists every answer with its status, code and reason.
    #[test]
    fn every_answer_is_documented() {
        let doc = include_str!("../../docs/errors.md");
        for r in all() {
            let a = r.answer();
            let row = format!(
                "| {} | {} | `{}` |",
                a.status.as_u16(),
                a.code,
                a.reason.as_str()
            );
            assert!(doc.contains(&row), "docs/errors.md lacks the row {row}");
        }
    }

    fn futures_body(resp: Response<Full<Bytes>>) -> Bytes {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        #[allow(clippy::disallowed_methods)] // a Full body we built ourselves
        let collected = rt.block_on(resp.into_body().collect());
        collected.expect("Full never fails").to_bytes()
    }
}
