//! The callback endpoint: validate, normalize, enqueue, answer at once.
//!
//! Order matters: the cheap checks (path, method, query, app, signature) run
//! before the body is read, so an unauthenticated request costs no body read
//! and is never written to Kafka. An authenticated body that cannot be
//! normalized is dead-lettered and still answered OK: Tencent would not retry it.
//! When "OK" may be said is `BRIDGE_ACK_MODE`'s business ([`crate::sink::Publisher`]).

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::State;
use super::respond::Rejection;
use crate::callback::{self, CallbackQuery, Family, OfficialAccountCommand};
use crate::event::{self, DeadLetter, Received};
use crate::metrics::Accepted;
use crate::sink::now_ms;

/// Handles one request on the callback port; `Ok` means "answer 200 OK".
pub async fn handle(
    state: &State,
    req: Request<Incoming>,
) -> Result<(Family, Accepted), Rejection> {
    if req.uri().path() != state.config.callback_path {
        return Err(Rejection::NotFound);
    }
    if req.method() != Method::POST {
        return Err(Rejection::MethodNotAllowed);
    }
    let query = CallbackQuery::parse(req.uri().query().unwrap_or("")).map_err(Rejection::Query)?;
    let app = state
        .config
        .apps
        .get(&query.sdk_app_id)
        .ok_or(Rejection::UnknownApp(query.sdk_app_id))?;
    let received_at_ms = now_ms();
    if let Some(token) = &app.token {
        callback::verify(
            token.expose(),
            query.sign.as_deref(),
            query.request_time.as_deref(),
            i64::try_from(received_at_ms / 1000).unwrap_or(i64::MAX),
            state.config.signature_max_skew,
        )
        .map_err(Rejection::Signature)?;
    }

    let body = read_body(req, state.config.max_body_bytes).await?;
    let family = Family::of(&query.command);
    let command = OfficialAccountCommand::parse(&query.command);

    let envelope = match callback::parse_body(&body) {
        Ok(envelope) => envelope,
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

async fn dead_letter(
    state: &State,
    family: Family,
    query: &CallbackQuery,
    received_at_ms: u64,
    error: callback::BodyError,
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

/// Reads the whole body, refusing more than `limit` bytes (early, from
/// `Content-Length`, when the client announces it).
async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, Rejection> {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(Rejection::BodyTooLarge { limit });
    }
    #[allow(clippy::disallowed_methods)] // bounded by Limited
    let collected = Limited::new(req.into_body(), limit).collect().await;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Rejection::BodyTooLarge { limit })
        }
        Err(e) => Err(Rejection::BodyRead(e.to_string())),
    }
}
