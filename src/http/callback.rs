//! The callback endpoint: validate, route, normalize, enqueue, answer.
//!
//! Order matters: the cheap checks (source, path, method, query, app,
//! signature) run before the body is read, so an unauthenticated request
//! costs no body read and is never written to Kafka. A body that nests too
//! deep, or is larger than the limit, is refused before it is parsed. An
//! authenticated body that is not UTF-8 JSON, or does not have its
//! command's shape, is dead-lettered and still answered OK: Tencent would
//! not send it again, and refusing it would only lose it (HTTPS, not a
//! refusal, is what protects the body). The route ([`crate::route`])
//! decides the topic, the key and whether to publish at all; every command
//! has one. When "OK" may be said is `BRIDGE_ACK_MODE`'s business
//! ([`crate::sink::Publisher`]), except for "Before" and sync callbacks,
//! which a user's action waits for: they are answered once queued, with
//! the neutral answer Tencent documents (allow, or no reply).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::State;
use super::respond::{self, Rejection};
use crate::callback::{
    self, BodyError, CallbackQuery, Family, JsonLimits, Keyed, NoEvents, Unparsed,
};
use crate::clock::now_ms;
use crate::config::{App, Config};
use crate::dedup::Claim;
use crate::event::{Payload, Source};
use crate::metrics::{Accepted, Counted};
use crate::route::{Action, Destination};

/// What an authentic callback answered 200 OK came to.
#[derive(Debug)]
pub enum Handled {
    /// Its events were handed to the acknowledgement mode.
    Published {
        /// Its command's family.
        family: Family,
        /// The query's `CallbackCommand`.
        command: String,
        /// `callback` events (no type of their own).
        generic: bool,
        /// How many (a batch makes one per item).
        events: usize,
    },
    /// Every event it carried was published within the de-duplication window.
    Duplicate {
        /// Its command's family.
        family: Family,
        /// The query's `CallbackCommand`.
        command: String,
    },
    /// Answered OK and only counted.
    Counted {
        /// Its command's family.
        family: Family,
        /// The query's `CallbackCommand`.
        command: String,
        /// Why.
        why: Counted,
    },
    /// Authentic but unusable: published raw to the dead-letter topic.
    DeadLettered {
        /// Its command's family.
        family: Family,
        /// The query's `CallbackCommand`.
        command: String,
        /// What is wrong with the body.
        error: BodyError,
    },
}

/// Serves one request on the callback port: handles it, then answers,
/// logs and counts it in one place (`account`).
pub async fn serve(
    state: &State,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let result = handle(state, req, peer).await;
    let response = account(state, result);
    state.metrics.request_finished(started.elapsed());
    response
}

/// The one place a handled request becomes its answer, its log line and
/// its counters.
fn account(state: &State, result: Result<Handled, Rejection>) -> Response<Full<Bytes>> {
    let metrics = &state.metrics;
    let command = match result {
        Ok(Handled::Published {
            family,
            command,
            generic,
            events,
        }) => {
            metrics.events_published(family, &command, generic, events);
            metrics.callback_accepted(family, Accepted::Published);
            command
        }
        Ok(Handled::Duplicate { family, command }) => {
            metrics.callback_accepted(family, Accepted::Duplicate);
            command
        }
        Ok(Handled::Counted {
            family,
            command,
            why,
        }) => {
            metrics.callback_counted(family, &command, why);
            command
        }
        Ok(Handled::DeadLettered {
            family,
            command,
            error,
        }) => {
            metrics.callback_dead_lettered(family, error.fault(), &command, &error);
            command
        }
        Err(rejection) => {
            let a = rejection.answer();
            metrics.callback_rejected(a.reason, a.status.as_u16(), &rejection);
            return rejection.response();
        }
    };
    respond::accepted(&command)
}

/// The source, path, method, query, app and signature checks, before the
/// body is read: the query, its app and the receive time.
fn authenticate<'s>(
    config: &'s Config,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<(CallbackQuery, &'s App, u64), Rejection> {
    if !config.listen.allowed_sources.is_empty() {
        let source = client_ip(config, req, peer);
        if !config
            .listen
            .allowed_sources
            .iter()
            .any(|net| net.contains(&source))
        {
            return Err(Rejection::SourceNotAllowed(source));
        }
    }
    if req.uri().path() != config.listen.callback_path {
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
            config.limits.signature_max_skew,
        )
        .map_err(Rejection::Signature)?;
    }
    Ok((query, app, received_at_ms))
}

/// Handles one request on the callback port; `Ok` means "answer 200 OK".
async fn handle(
    state: &State,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Handled, Rejection> {
    let config = &state.config;
    let (query, app, received_at_ms) = authenticate(config, &req, peer)?;
    // The permit holds this body's share of the in-flight budget until the
    // request is done.
    let (body, _budget) = read_body(req, config, &state.body_budget).await?;
    let family = Family::of(&query.command);
    let source = callback::source(&query, received_at_ms);
    let limits = JsonLimits {
        depth: config.limits.max_json_depth,
        values: config.limits.max_json_values,
    };
    let envelope = match callback::parse(&body, &query.command, limits) {
        Ok(envelope) => envelope,
        Err(Unparsed::TooDeep) => {
            return Err(Rejection::BodyTooDeep {
                limit: config.limits.max_json_depth,
            });
        }
        Err(Unparsed::TooComplex) => {
            return Err(Rejection::BodyTooComplex {
                limit: config.limits.max_json_values,
            });
        }
        Err(Unparsed::CommandMismatch { query, body }) => {
            return Err(Rejection::CommandMismatch { query, body });
        }
        Err(Unparsed::Invalid(e)) => {
            return dead_letter(state, app, family, query.command, &source, e, body).await;
        }
    };
    let counted = |why| {
        Ok(Handled::Counted {
            family,
            command: query.command.clone(),
            why,
        })
    };
    let route = config.routing.routes.find(&query.command);
    if route.action == Action::Count {
        return counted(Counted::Route);
    }
    if !config.routing.publish_before && callback::is_before(&query.command) {
        return counted(Counted::Before);
    }
    let topic = match &route.destination {
        Destination::OfficialAccount => app.topics.official_account.clone(),
        Destination::General => app.topics.general.clone(),
        Destination::Topic(t) => t.clone(),
    };
    let events = match callback::to_events(
        &source,
        &query.command,
        envelope,
        &route.key,
        config.limits.max_batch_items,
    ) {
        Ok(events) => events,
        Err(NoEvents::Invalid(e)) => {
            return dead_letter(state, app, family, query.command, &source, e, body).await;
        }
        Err(NoEvents::EmptyBatch) => return counted(Counted::EmptyBatch),
        Err(NoEvents::CommandMismatch { query, body }) => {
            return Err(Rejection::CommandMismatch { query, body });
        }
    };
    publish(state, family, query.command, topic, events).await
}

/// Hands a callback's events to the acknowledgement mode, less those the
/// de-duplication window has seen; `Ok` once they are as safe as it promises.
async fn publish(
    state: &State,
    family: Family,
    command: String,
    topic: Arc<str>,
    events: Vec<Keyed>,
) -> Result<Handled, Rejection> {
    // The events of one callback share its command: what one says of being
    // a Before callback or a `callback` event holds for all of them.
    let Some(Keyed { event: first, .. }) = events.first() else {
        return Ok(Handled::Duplicate { family, command });
    };
    // A user's action waits for a Before (or sync) callback's answer: its
    // audit event is acknowledged once queued, whatever BRIDGE_ACK_MODE says.
    let at_once = first.before || callback::is_sync(&command);
    let generic = matches!(first.payload, Payload::Callback(_));
    let mut fresh = Vec::with_capacity(events.len());
    // Released on every path that does not end in an acknowledged record.
    let mut claims = state.dedup.as_ref().map(|d| d.claims());
    for Keyed { event, key } in &events {
        if let Some(claims) = &mut claims {
            let outcome = claims.claim(&event.id, Instant::now());
            state.metrics.dedup_claimed(&outcome);
            if outcome.claim == Claim::Duplicate {
                state.metrics.event_duplicate(&command, &event.id);
                continue;
            }
        }
        fresh.push((event, key.clone()));
    }
    let published = fresh.len();
    if published == 0 {
        return Ok(Handled::Duplicate { family, command });
    }
    state
        .publisher
        .publish(fresh, &topic, at_once)
        .await
        .map_err(Rejection::Accept)?;
    if let Some(claims) = claims {
        claims.keep();
    }
    Ok(Handled::Published {
        family,
        command,
        generic,
        events: published,
    })
}

/// The client's address: the socket's peer, or, when configured and the
/// peer is a trusted proxy, the last address in the proxy's header. An
/// IPv4-mapped IPv6 address (`::ffff:203.0.113.7`, as a dual-stack listener
/// or a proxy may give it) is its IPv4 address, so IPv4 allow-lists and
/// proxy lists match it (issue 12, finding 10).
fn client_ip<B>(config: &Config, req: &Request<B>, peer: SocketAddr) -> IpAddr {
    let peer_ip = unmapped(peer.ip());
    let Some(name) = &config.listen.trusted_proxy_header else {
        return peer_ip;
    };
    let trusted = config.listen.trusted_proxies.is_empty()
        || config
            .listen
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&peer_ip));
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
        .map_or(peer_ip, unmapped)
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; every other address as it is.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

async fn dead_letter(
    state: &State,
    app: &App,
    family: Family,
    command: String,
    source: &Source,
    error: BodyError,
    body: Bytes,
) -> Result<Handled, Rejection> {
    let dl = callback::dead_letter(source, &command, &error, body);
    state
        .publisher
        .dead_letter(&dl, app.topics.dead_letter.clone())
        .await
        .map_err(Rejection::Accept)?;
    Ok(Handled::DeadLettered {
        family,
        command,
        error,
    })
}

/// Reads the whole body, refusing more than `BRIDGE_MAX_BODY_BYTES` (early,
/// from `Content-Length`, when the client announces it), slower than
/// `BRIDGE_BODY_READ_TIMEOUT`, or more than what is left of the process-wide
/// `BRIDGE_MAX_INFLIGHT_BODY_BYTES` (taken as the bytes arrive, or at once
/// for an announced length, and held by the returned permit until the
/// request is done: its body is then parsed and published). Framing
/// conflicts never get this far: hyper answers 400 to differing
/// `Content-Length`s, and when `Transfer-Encoding` and `Content-Length`
/// both come it drops the length and closes the connection after the
/// answer (RFC 9112 §6.3), so nothing can be smuggled.
async fn read_body(
    req: Request<Incoming>,
    config: &Config,
    budget: &Arc<Semaphore>,
) -> Result<(Bytes, OwnedSemaphorePermit), Rejection> {
    let limit = config.limits.max_body_bytes;
    let full = || Rejection::BodyBudgetFull {
        limit: config.limits.max_inflight_body_bytes,
    };
    let take = |n: usize| -> Result<OwnedSemaphorePermit, Rejection> {
        let n = u32::try_from(n).map_err(|_| full())?;
        budget.clone().try_acquire_many_owned(n).map_err(|_| full())
    };
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(Rejection::BodyTooLarge { limit });
    }
    let announced = announced.map_or(0, |n| usize::try_from(n).unwrap_or(limit));
    let mut permit = take(announced)?;
    let mut body = Limited::new(req.into_body(), limit);
    let mut buf = Vec::with_capacity(announced);
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Rejection::BodyTooLarge { limit }
                } else {
                    Rejection::BodyRead(e.to_string())
                }
            })?;
            if let Ok(data) = frame.into_data() {
                let after = buf.len() + data.len();
                if after > permit.num_permits() {
                    permit.merge(take(after - permit.num_permits())?);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok::<_, Rejection>(())
    };
    match tokio::time::timeout(config.limits.body_read_timeout, read).await {
        Err(_) => Err(Rejection::BodyTimeout {
            timeout: config.limits.body_read_timeout,
        }),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => Ok((Bytes::from(buf), permit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12, finding 10: `::ffff:127.0.0.1` was not in `127.0.0.1/32`.
    #[test]
    fn ipv4_mapped_addresses_match_ipv4_lists() {
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("addr");
        let net: ipnet::IpNet = "127.0.0.0/8".parse().expect("net");
        assert!(!net.contains(&mapped), "the bug: ipnet does not map");
        assert!(net.contains(&unmapped(mapped)));
        let v6: IpAddr = "2001:db8::1".parse().expect("addr");
        assert_eq!(unmapped(v6), v6);
    }
}
