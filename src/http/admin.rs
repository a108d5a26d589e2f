//! The admin port: `/metrics`, `/healthz`, `/readyz`. Never on the callback port.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;

use super::State;

/// Scrapes rendered at once: probes never wait behind them.
const SCRAPES: usize = 2;

/// Answers one admin request. On a connection admitted into the probes'
/// reserve (`probes_only`), only `/healthz` and `/readyz` are answered.
pub async fn handle<B>(
    state: &State,
    req: &Request<B>,
    probes_only: bool,
) -> Response<Full<Bytes>> {
    static RENDERING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(SCRAPES);
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/metrics" if probes_only => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy: this connection may only ask /healthz and /readyz\n",
        ),
        "/metrics" => {
            let Ok(_rendering) = RENDERING.try_acquire() else {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy: too many scrapes at once\n",
                );
            };
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match state.health.not_ready_reason() {
            None => text(StatusCode::OK, "ready\n"),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, why.as_str()),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
