//! Everything an upstream sends back, checked before it enters the tunnel.
//! What leaves is produced by the gateway from what the checkpoint
//! ([`super::inspect`]) parsed and the chain saw, never copied through:
//!
//! - JSON bodies are parsed whole (bounded) and each message passes the
//!   checkpoint; a body that is not one JSON-RPC message is replaced by a
//!   gateway-made JSON-RPC error of the same status class; a 202 carries no
//!   body.
//! - SSE streams are re-emitted event by event: the checked `data`, a
//!   gateway-minted id ([`super::event_id`]) and a bounded numeric `retry`; upstream
//!   comments and `event:` names are not forwarded.
//! - Response headers pass an allow-list, each value validated.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

mod headers;

pub use headers::response_headers;

use crate::audit::Spool;
use crate::body::{Body, BoxError, ReadError, full, read_limited};
use crate::gateway::event_id::{EventIds, Scope};
use crate::gateway::inspect::{Checkpoint, Exchange, InspectError, Inspected, Verdict};
use crate::mcp::error::error_body;
use crate::mcp::sse::{Decoder, Event};
use crate::mcp::{Kind, MessageContext};
use crate::mcp::{McpError, error_response};
use crate::policy::Policy;
use crate::policy::catalog::{Catalog, Page};
use crate::policy::verdict::Denial;

/// Limits applied to what comes back.
#[derive(Debug, Clone, Copy)]
pub struct OutboundLimits {
    pub max_message_bytes: usize,
    pub max_depth: usize,
    pub call_timeout: std::time::Duration,
}

/// What the gateway knows when a reply comes back: the policy in force, the
/// catalog, and the context of the exchange (direction to-client; method and
/// target of the request answered, when there is one).
#[derive(Clone)]
pub struct ReplyContext {
    pub policy: Option<Arc<Policy>>,
    pub catalog: Arc<Catalog>,
    pub tasks: Arc<crate::gateway::tasks::Tasks>,
    pub event_ids: Arc<EventIds>,
    pub base: MessageContext,
    /// Which page of a tool listing the reply is (a `tools/list` request
    /// with a cursor asks for a later one).
    pub page: Page,
    pub limits: OutboundLimits,
    pub audit: Option<Arc<Spool>>,
    /// The exchange's span: replies checked later (SSE events) stay in it.
    pub span: tracing::Span,
}

impl ReplyContext {
    fn checkpoint(&self) -> Checkpoint<'_> {
        Checkpoint {
            policy: self.policy.as_deref(),
            catalog: &self.catalog,
            tasks: &self.tasks,
            audit: self.audit.as_deref(),
            limits: self.limits,
        }
    }

    /// What an event id minted on this exchange is bound to.
    pub fn scope(&self) -> Scope<'_> {
        Scope {
            server: &self.base.server,
            session: self.base.session_id.as_deref(),
            subject: &self.base.principal.subject,
        }
    }
}

/// A policy denial as the agent sees it: the chain's public code and
/// message, never its private reason. `request`: whether the message
/// denied is answered as a request ([`McpError::Denied`]).
pub fn denial(d: &Denial, request: bool) -> McpError {
    McpError::Denied {
        code: d.code,
        message: d.public_message.clone(),
        request,
    }
}

/// Checks one server→client message at the checkpoint. `Ok(Some)` is what
/// to send (the message, a rewrite, or an error replacing a denied
/// response); `Ok(None)` drops it (a denied notification or server request,
/// a response that answers nothing in flight); `Err` is a message that is
/// not valid JSON-RPC.
pub async fn check_reply(rc: &ReplyContext, data: Bytes) -> Result<Option<Bytes>, McpError> {
    let answers = rc.base.request_id.as_deref();
    let inspected = rc
        .checkpoint()
        .inspect(
            &rc.base,
            data,
            Exchange::Upstream {
                answers,
                page: rc.page,
            },
        )
        .await;
    match inspected {
        Ok(Inspected {
            verdict: Verdict::Forward(m),
            ..
        }) => Ok(Some(m.raw)),
        Ok(Inspected {
            ctx,
            verdict: Verdict::Denied(d),
            ..
        }) if is_reply(ctx.kind) => Ok(Some(Bytes::from(error_body(
            &denial(&d, true),
            ctx.request_id.as_deref(),
        )))),
        Ok(_) => Ok(None),
        Err(InspectError::Unrecorded { reply_to }) => {
            Ok(reply_to
                .map(|id| Bytes::from(error_body(&McpError::ResultUnrecorded, id.as_deref()))))
        }
        Err(InspectError::Invalid { error, .. }) => Err(error),
    }
}

fn is_reply(kind: Kind) -> bool {
    matches!(kind, Kind::Response | Kind::Error)
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Turns an upstream response into the response sent up the tunnel.
pub async fn filter_response<B>(resp: Response<B>, rc: ReplyContext) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = resp.into_parts();
    let mut headers = response_headers(&parts.headers);
    let ctype = content_type(&parts.headers).to_ascii_lowercase();
    let server = rc.base.server.clone();
    let limits = rc.limits;
    let status = parts.status;
    let answering = rc.base.request_id.clone();
    if status == StatusCode::ACCEPTED {
        // Nothing to check and nothing to send: whatever body came with it
        // stays here.
        return gateway_response(status, headers, Bytes::new(), None);
    }
    if ctype.starts_with("text/event-stream") && status.is_success() {
        headers.insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache"),
        );
        headers.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        let mut out = Response::new(sse_body(body, rc));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        return out;
    }
    let bytes = match tokio::time::timeout(
        limits.call_timeout,
        read_limited(body, limits.max_message_bytes),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(ReadError::TooLarge { limit })) => {
            tracing::warn!(server, limit, "upstream response too large");
            return error_response(
                &McpError::InvalidUpstreamResponse(format!("the response exceeded {limit} bytes")),
                answering.as_deref(),
            );
        }
        Ok(Err(ReadError::Io(e))) => {
            tracing::warn!(server, error = %e, "upstream response body failed");
            return error_response(
                &McpError::UpstreamUnavailable("the upstream response was cut off".into()),
                answering.as_deref(),
            );
        }
        Err(_) => {
            return error_response(
                &McpError::UpstreamTimeout(limits.call_timeout.as_millis()),
                answering.as_deref(),
            );
        }
    };
    let json = ctype.starts_with("application/json");
    if json && !bytes.is_empty() {
        match check_reply(&rc, bytes.clone()).await {
            Ok(Some(b)) => return gateway_response(status, headers, b, Some("application/json")),
            Ok(None) if answering.is_none() => {
                return gateway_response(status, headers, Bytes::new(), None);
            }
            Ok(None) => {
                return error_response(
                    &McpError::InvalidUpstreamResponse(
                        "the body answers no request in flight".into(),
                    ),
                    answering.as_deref(),
                );
            }
            Err(e) if status.is_success() => {
                tracing::warn!(server, error = %e, "upstream sent an invalid message");
                return error_response(
                    &McpError::InvalidUpstreamResponse(
                        "the body is not exactly one JSON-RPC message".into(),
                    ),
                    answering.as_deref(),
                );
            }
            Err(_) => {}
        }
    }
    if status.is_success() && bytes.is_empty() {
        return gateway_response(status, headers, Bytes::new(), None);
    }
    if status.is_success() {
        // A success body that is neither JSON-RPC nor SSE is not MCP: it
        // could be anything the upstream has, so it does not leave.
        tracing::warn!(server, content_type = ctype, "upstream sent a non-MCP body");
        return error_response(
            &McpError::InvalidUpstreamResponse(format!(
                "a {} body is not an MCP message",
                if ctype.is_empty() {
                    "untyped"
                } else {
                    "non-JSON"
                }
            )),
            answering.as_deref(),
        );
    }
    // An error status without a JSON-RPC message: the status stays (a 404
    // tells the client its session is gone), the body is the gateway's.
    tracing::info!(
        server,
        status = status.as_u16(),
        "upstream error status without a JSON-RPC body"
    );
    let err = if status == StatusCode::NOT_FOUND && rc.base.session_id.is_some() {
        McpError::SessionNotFound
    } else {
        McpError::UpstreamStatus(status.as_u16())
    };
    let body = error_body(&err, answering.as_deref());
    gateway_response(status, headers, Bytes::from(body), Some("application/json"))
}

/// A response made by the gateway: `status`, the validated `headers`, and
/// `body` of `ctype`.
fn gateway_response(
    status: StatusCode,
    mut headers: HeaderMap,
    body: Bytes,
    ctype: Option<&'static str>,
) -> Response<Body> {
    if let Some(ct) = ctype {
        headers.insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
    }
    let mut out = Response::new(full(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

struct SseState<B> {
    body: std::pin::Pin<Box<B>>,
    decoder: Decoder,
    ready: VecDeque<Event>,
    rc: ReplyContext,
}

/// A body that re-emits the upstream's SSE stream one checked event at a
/// time ([`reemit`]). An invalid or oversized event ends the stream (fail
/// closed): the agent's client reconnects or reports the error; the bad
/// data never leaves.
/// The event the agent gets for one upstream event, made by the gateway:
/// the checked data, a minted id, a numeric retry; `None` ends the stream
/// (an invalid message: fail closed).
async fn reemit(rc: &ReplyContext, ev: Event) -> Option<Event> {
    let data = match ev.data {
        // Empty data (the priming event a server sends before closing a
        // stream for polling) keeps its `data:` line: without it,
        // EventSource-based clients never record the id.
        Some(d) if d.is_empty() => Some(d),
        Some(d) => {
            let checked =
                tracing::Instrument::instrument(check_reply(rc, Bytes::from(d)), rc.span.clone());
            match checked.await {
                Ok(Some(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
                // Dropped: the event keeps its (minted) id, so resumption
                // cursors stay intact.
                Ok(None) => Some(String::new()),
                Err(e) => {
                    tracing::warn!(server = rc.base.server, error = %e, "upstream SSE event rejected; ending stream");
                    return None;
                }
            }
        }
        None => None,
    };
    let id = ev.id.and_then(|upstream| {
        let minted = rc.event_ids.seal(
            &rc.scope(),
            &upstream,
            crate::gateway::event_id::StreamOf {
                request: rc.base.request_id.as_deref(),
                method: rc.base.method.as_deref(),
                target: rc.base.target.as_deref(),
            },
        );
        if minted.is_none() {
            tracing::info!(
                server = rc.base.server,
                "upstream SSE event id too long to carry; sent without one"
            );
        }
        minted
    });
    let mut out = Event {
        id,
        data,
        // A number the chain never sees: bounded, so it cannot carry one.
        retry: ev.retry.map(|r| r.min(crate::limits::MAX_SSE_RETRY_MS)),
        ..Event::default()
    };
    if out.id.is_none() && out.data.is_none() && out.retry.is_none() {
        // A comment or bare `event:` block: a keep-alive at most. The
        // gateway sends its own, empty.
        out.comments.push(String::new());
    }
    Some(out)
}

fn sse_body<B>(body: B, rc: ReplyContext) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let state = SseState {
        body: Box::pin(body),
        decoder: Decoder::new(rc.limits.max_message_bytes),
        ready: VecDeque::new(),
        rc,
    };
    let s = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.ready.pop_front() {
                let out = reemit(&st.rc, ev).await?;
                return Some((Ok::<_, BoxError>(Frame::data(out.encode())), st));
            }
            let frame = match st.body.as_mut().frame().await {
                None => return None,
                Some(Err(e)) => {
                    tracing::debug!(server = st.rc.base.server, error = %e.into(), "upstream SSE stream ended with error");
                    return None;
                }
                Some(Ok(f)) => f,
            };
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            let mut events = Vec::new();
            if let Err(e) = st.decoder.push(&chunk, &mut events) {
                tracing::warn!(server = st.rc.base.server, error = %e, "upstream SSE stream rejected");
                return None;
            }
            st.ready.extend(events);
        }
    });
    BodyExt::boxed_unsync(StreamBody::new(s))
}
