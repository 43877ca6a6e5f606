//! Everything an upstream sends back, checked before it enters the tunnel:
//! JSON bodies are parsed whole (bounded), SSE streams event by event, and
//! only allow-listed response headers leave.

use std::collections::VecDeque;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::body::{Body, BoxError, ReadError, full, read_limited};
use crate::mcp::sse::{Decoder, Event};
use crate::mcp::{McpError, Message, error_response};

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

/// Checks a server→client message. Today: it must be a well-formed,
/// bounded JSON-RPC message. The policy chain hooks in here.
fn check_message(data: Bytes, limits: &OutboundLimits) -> Result<Message, String> {
    Message::parse(data, limits.max_depth).map_err(|e| e.to_string())
}

/// Turns an upstream response into the response sent up the tunnel.
pub async fn filter_response<B>(
    resp: Response<B>,
    limits: OutboundLimits,
    server: &str,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = resp.into_parts();
    let mut headers = response_headers(&parts.headers);
    let ctype = content_type(&parts.headers).to_ascii_lowercase();
    if ctype.starts_with("text/event-stream") {
        headers.insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache"),
        );
        let mut out = Response::new(sse_body(body, limits, server.to_owned()));
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
                None,
            );
        }
        Ok(Err(ReadError::Io(e))) => {
            tracing::warn!(server, error = %e, "upstream response body failed");
            return error_response(
                &McpError::UpstreamUnavailable("the upstream response was cut off".into()),
                None,
            );
        }
        Err(_) => {
            return error_response(
                &McpError::UpstreamTimeout(limits.call_timeout.as_millis()),
                None,
            );
        }
    };
    if ctype.starts_with("application/json") && !bytes.is_empty() {
        if let Err(e) = check_message(bytes.clone(), &limits) {
            tracing::warn!(server, error = %e, "upstream sent an invalid message");
            return error_response(
                &McpError::UpstreamUnavailable(
                    "the upstream sent an invalid JSON-RPC message".into(),
                ),
                None,
            );
        }
    } else if parts.status.is_success() && !bytes.is_empty() && parts.status != StatusCode::ACCEPTED
    {
        // A success body that is neither JSON nor SSE is not MCP: it could be
        // anything the upstream has, so it does not leave.
        tracing::warn!(server, content_type = ctype, "upstream sent a non-MCP body");
        return error_response(
            &McpError::UpstreamUnavailable("the upstream sent a response that is not MCP".into()),
            None,
        );
    }
    let mut out = Response::new(full(bytes));
    *out.status_mut() = parts.status;
    *out.headers_mut() = headers;
    out
}

struct SseState<B> {
    body: std::pin::Pin<Box<B>>,
    decoder: Decoder,
    ready: VecDeque<Event>,
    limits: OutboundLimits,
    server: String,
}

/// A body that re-emits the upstream's SSE stream one checked event at a
/// time. An invalid or oversized event ends the stream (fail closed): the
/// agent's client reconnects or reports the error; the bad data never leaves.
fn sse_body<B>(body: B, limits: OutboundLimits, server: String) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let state = SseState {
        body: Box::pin(body),
        decoder: Decoder::new(limits.max_message_bytes),
        ready: VecDeque::new(),
        limits,
        server,
    };
    let s = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.ready.pop_front() {
                let data = ev.data.as_deref().filter(|d| !d.is_empty());
                if let Some(Err(e)) =
                    data.map(|d| check_message(Bytes::copy_from_slice(d.as_bytes()), &st.limits))
                {
                    tracing::warn!(server = st.server, error = %e, "upstream SSE event rejected; ending stream");
                    return None;
                }
                return Some((Ok::<_, BoxError>(Frame::data(ev.encode())), st));
            }
            let frame = match st.body.as_mut().frame().await {
                None => return None,
                Some(Err(e)) => {
                    tracing::debug!(server = st.server, error = %e.into(), "upstream SSE stream ended with error");
                    return None;
                }
                Some(Ok(f)) => f,
            };
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            let mut events = Vec::new();
            if let Err(e) = st.decoder.push(&chunk, &mut events) {
                tracing::warn!(server = st.server, error = %e, "upstream SSE stream rejected");
                return None;
            }
            st.ready.extend(events);
        }
    });
    BodyExt::boxed(StreamBody::new(s))
}
