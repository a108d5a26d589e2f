//! The callback endpoint: validate, normalize, enqueue, answer.
//!
//! Order matters: the cheap checks (source, path, method, query, app,
//! signature) run before the body is read, so an unauthenticated request
//! costs no body read and is never written to Kafka. A body that is not
//! UTF-8 JSON, or nests too deep, is refused: Tencent only sends JSON, and
//! the signature does not cover the body, so such a body under a valid
//! signature is a replay with a forged body. An authenticated JSON body that
//! does not have its command's shape is dead-lettered and still answered OK:
//! Tencent would not retry it. When "OK" may be said is `BRIDGE_ACK_MODE`'s
//! business ([`crate::sink::Publisher`]).

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::State;
use super::respond::Rejection;
use crate::callback::{self, BodyError, CallbackQuery, Family, OfficialAccountCommand};
use crate::config::Config;
use crate::event::{self, DeadLetter, Received};
use crate::metrics::Accepted;
use crate::sink::now_ms;

/// Handles one request on the callback port; `Ok` means "answer 200 OK".
pub async fn handle(
    state: &State,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<(Family, Accepted), Rejection> {
    let config = &state.config;
    if !config.allowed_sources.is_empty() {
        let source = client_ip(config, &req, peer);
        if !config
            .allowed_sources
            .iter()
            .any(|net| net.contains(&source))
        {
            return Err(Rejection::SourceNotAllowed(source));
        }
    }
    if req.uri().path() != config.callback_path {
        return Err(Rejection::NotFound);
    }
    if req.method() != Method::POST {
        return Err(Rejection::MethodNotAllowed);
    }
    let query = CallbackQuery::parse(req.uri().query().unwrap_or("")).map_err(Rejection::Query)?;
    let app = config
        .apps
        .get(&query.sdk_app_id)
        .ok_or(Rejection::UnknownApp(query.sdk_app_id))?;
    let received_at_ms = now_ms();
    if !app.tokens.is_empty() {
        callback::verify_any(
            &app.tokens,
            query.sign.as_deref(),
            query.request_time.as_deref(),
            i64::try_from(received_at_ms / 1000).unwrap_or(i64::MAX),
            config.signature_max_skew,
        )
        .map_err(Rejection::Signature)?;
    }

    let body = read_body(req, config).await?;
    if callback::json_depth_exceeds(&body, config.max_json_depth) {
        return Err(Rejection::BodyTooDeep {
            limit: config.max_json_depth,
        });
    }
    let family = Family::of(&query.command);
    let command = OfficialAccountCommand::parse(&query.command);

    let envelope = match callback::parse_body(&body) {
        Ok(envelope) => envelope,
        Err(BodyError::NotJson(e)) => return Err(Rejection::BodyNotJson(e.to_string())),
        Err(e) => return dead_letter(state, family, &query, received_at_ms, e, body).await,
    };
    if let Some(in_body) = &envelope.command
        && *in_body != query.command
    {
        return Err(Rejection::CommandMismatch {
            query: query.command,
            body: in_body.clone(),
        });
    }
    let Some(command) = command else {
        state.metrics.callback_ignored(family, &query.command);
        return Ok((family, Accepted::Ignored));
    };
    let received = Received {
        query: &query,
        received_at_ms,
    };
    let event = match event::normalize(received, command, envelope) {
        Ok(event) => event,
        Err(e) => return dead_letter(state, family, &query, received_at_ms, e, body).await,
    };
    let record = state.publisher.kafka.event_record(&event);
    state
        .publisher
        .accept(record)
        .await
        .map_err(Rejection::Accept)?;
    state.metrics.callback_accepted(family, Accepted::Published);
    Ok((family, Accepted::Published))
}

/// The client's address: the socket's peer, or, when configured and the
/// peer is a trusted proxy, the last address in the proxy's header.
fn client_ip<B>(config: &Config, req: &Request<B>, peer: SocketAddr) -> IpAddr {
    let peer_ip = peer.ip();
    let Some(name) = &config.trusted_proxy_header else {
        return peer_ip;
    };
    let trusted = config.trusted_proxies.is_empty()
        || config.trusted_proxies.iter().any(|n| n.contains(&peer_ip));
    if !trusted {
        return peer_ip;
    }
    // With several headers or a list, the proxy next to us wrote the last entry.
    req.headers()
        .get_all(name)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer_ip)
}

async fn dead_letter(
    state: &State,
    family: Family,
    query: &CallbackQuery,
    received_at_ms: u64,
    error: BodyError,
    body: Bytes,
) -> Result<(Family, Accepted), Rejection> {
    let dl = DeadLetter::new(
        query,
        received_at_ms,
        error.as_str(),
        error.to_string(),
        body,
    );
    let record = state.publisher.kafka.dead_letter_record(&dl);
    state
        .publisher
        .accept(record)
        .await
        .map_err(Rejection::Accept)?;
    state
        .metrics
        .callback_dead_lettered(family, error.as_str(), &query.command, &error);
    Ok((family, Accepted::DeadLettered))
}

/// Reads the whole body, refusing more than `BRIDGE_MAX_BODY_BYTES` (early,
/// from `Content-Length`, when the client announces it) and slower than
/// `BRIDGE_BODY_READ_TIMEOUT`. Framing conflicts never get this far: hyper
/// answers 400 to differing `Content-Length`s, and when `Transfer-Encoding`
/// and `Content-Length` both come it drops the length and closes the
/// connection after the answer (RFC 9112 §6.3), so nothing can be smuggled.
async fn read_body(req: Request<Incoming>, config: &Config) -> Result<Bytes, Rejection> {
    let limit = config.max_body_bytes;
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(Rejection::BodyTooLarge { limit });
    }
    #[allow(clippy::disallowed_methods)] // bounded by Limited and by the timeout
    let collect = Limited::new(req.into_body(), limit).collect();
    match tokio::time::timeout(config.body_read_timeout, collect).await {
        Err(_) => Err(Rejection::BodyTimeout {
            timeout: config.body_read_timeout,
        }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Rejection::BodyTooLarge { limit })
        }
        Ok(Err(e)) => Err(Rejection::BodyRead(e.to_string())),
    }
}
