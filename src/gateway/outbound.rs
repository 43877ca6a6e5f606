//! Everything an upstream sends back, checked before it enters the tunnel:
//! JSON bodies are parsed whole (bounded), SSE streams event by event, and
//! only allow-listed response headers leave. Every server→client message
//! passes [`check_reply`]: parse, learn the tool catalog, run the policy
//! chain's response phase.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::audit::Spool;
use crate::body::{Body, BoxError, ReadError, full, read_limited};
use crate::mcp::sse::{Decoder, Event};
use crate::mcp::{Kind, McpError, Message, error_response};
use crate::policy::catalog::Catalog;
use crate::policy::verdict::{Denial, MessageContext};
use crate::policy::{Outcome, Policy};

/// Response headers an upstream may send to the agent.
const FORWARDED_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "cache-control",
    "retry-after",
    "allow",
];

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
    pub base: MessageContext,
    pub limits: OutboundLimits,
    pub audit: Option<Arc<Spool>>,
    /// The exchange's span: replies checked later (SSE events) stay in it.
    pub span: tracing::Span,
}

/// A JSON-RPC error answering `id` (raw JSON text) with a policy denial.
pub fn denial_body(id: Option<&str>, d: &Denial) -> String {
    let error = serde_json::json!({ "code": d.code, "message": d.public_message });
    format!(
        r#"{{"jsonrpc":"2.0","id":{},"error":{error}}}"#,
        id.unwrap_or("null")
    )
}

/// Checks one server→client message. `Ok(Some)` is what to send (the
/// message, a rewrite, or an error replacing a denied response); `Ok(None)`
/// drops a denied notification or server request; `Err` is a message that
/// is not valid JSON-RPC.
pub async fn check_reply(rc: &ReplyContext, data: Bytes) -> Result<Option<Bytes>, String> {
    let reading =
        crate::policy::parse_options(rc.policy.as_deref(), &rc.base.server, rc.limits.max_depth);
    let msg = Message::parse(data, reading).map_err(|e| e.to_string())?;
    let is_reply = matches!(msg.kind, Kind::Response | Kind::Error);
    if is_reply && msg.kind == Kind::Response && rc.base.method.as_deref() == Some("tools/list") {
        rc.catalog.learn(&rc.base.server, &msg.raw, false);
    }
    if rc.policy.is_none() && rc.audit.is_none() {
        return Ok(Some(msg.raw));
    }
    let mut ctx = rc.base.clone();
    ctx.kind = msg.kind.into();
    ctx.request_id = msg.id.clone();
    if !is_reply {
        ctx.method = msg.method.clone();
        ctx.target = msg.name.clone();
    }
    let (outcome, records) = match &rc.policy {
        Some(p) if p.wants(&ctx) => p.apply(&ctx, msg.raw.clone(), rc.limits.max_depth).await,
        _ => (Outcome::Pass(msg.raw.clone()), Vec::new()),
    };
    crate::gateway::log_records(&ctx, &records);
    let label = match &outcome {
        Outcome::Pass(b) if *b == msg.raw => "forwarded",
        Outcome::Pass(_) => "rewritten",
        Outcome::Deny(_) if is_reply => "denied",
        Outcome::Deny(_) => "dropped",
    };
    let forwarded = match &outcome {
        Outcome::Pass(b) => Some(&b[..]),
        Outcome::Deny(_) => None,
    };
    let recorded = crate::gateway::record_decision(
        rc.audit.as_deref(),
        rc.policy.as_deref(),
        &ctx,
        &records,
        label,
        forwarded,
    )
    .await;
    if let Err(e) = recorded {
        // Strict mode: what cannot be recorded does not leave.
        tracing::error!(error = %e, "audit record not persisted; reply withheld");
        let err = McpError::AuditUnavailable;
        return Ok(
            is_reply.then(|| Bytes::from(crate::mcp::error::error_body(&err, msg.id.as_deref())))
        );
    }
    Ok(match outcome {
        Outcome::Pass(bytes) => Some(bytes),
        Outcome::Deny(d) if is_reply => Some(Bytes::from(denial_body(msg.id.as_deref(), &d))),
        Outcome::Deny(_) => None,
    })
}

/// Copies the allow-listed headers.
pub fn response_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in FORWARDED_RESPONSE_HEADERS {
        for v in from.get_all(*name) {
            out.append(*name, v.clone());
        }
    }
    out
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
    if ctype.starts_with("text/event-stream") {
        headers.insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache"),
        );
        let mut out = Response::new(sse_body(body, rc));
        *out.status_mut() = parts.status;
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
                &McpError::UpstreamUnavailable(format!(
                    "the upstream response exceeded {limit} bytes"
                )),
                rc.base.request_id.as_deref(),
            );
        }
        Ok(Err(ReadError::Io(e))) => {
            tracing::warn!(server, error = %e, "upstream response body failed");
            return error_response(
                &McpError::UpstreamUnavailable("the upstream response was cut off".into()),
                rc.base.request_id.as_deref(),
            );
        }
        Err(_) => {
            return error_response(
                &McpError::UpstreamTimeout(limits.call_timeout.as_millis()),
                rc.base.request_id.as_deref(),
            );
        }
    };
    let bytes = if ctype.starts_with("application/json") && !bytes.is_empty() {
        match check_reply(&rc, bytes).await {
            Ok(Some(b)) => b,
            Ok(None) => Bytes::new(),
            Err(e) => {
                tracing::warn!(server, error = %e, "upstream sent an invalid message");
                return error_response(
                    &McpError::UpstreamUnavailable(
                        "the upstream sent an invalid JSON-RPC message".into(),
                    ),
                    rc.base.request_id.as_deref(),
                );
            }
        }
    } else if parts.status.is_success() && !bytes.is_empty() && parts.status != StatusCode::ACCEPTED
    {
        // A success body that is neither JSON nor SSE is not MCP: it could be
        // anything the upstream has, so it does not leave.
        tracing::warn!(server, content_type = ctype, "upstream sent a non-MCP body");
        return error_response(
            &McpError::UpstreamUnavailable("the upstream sent a response that is not MCP".into()),
            rc.base.request_id.as_deref(),
        );
    } else {
        bytes
    };
    let mut out = Response::new(full(bytes));
    *out.status_mut() = parts.status;
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
/// time. An invalid or oversized event ends the stream (fail closed): the
/// agent's client reconnects or reports the error; the bad data never leaves.
/// A dropped event keeps its id (as an empty event), so resumption cursors
/// stay intact.
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
            if let Some(mut ev) = st.ready.pop_front() {
                if let Some(data) = ev.data.take().filter(|d| !d.is_empty()) {
                    let checked = tracing::Instrument::instrument(
                        check_reply(&st.rc, Bytes::from(data)),
                        st.rc.span.clone(),
                    );
                    match checked.await {
                        Ok(Some(b)) => ev.data = Some(String::from_utf8_lossy(&b).into_owned()),
                        Ok(None) => ev.data = Some(String::new()),
                        Err(e) => {
                            tracing::warn!(server = st.rc.base.server, error = %e, "upstream SSE event rejected; ending stream");
                            return None;
                        }
                    }
                }
                return Some((Ok::<_, BoxError>(Frame::data(ev.encode())), st));
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
