//! Streamable HTTP semantics for a stdio session: what the agent's POST or
//! GET gets back from the stream the router fills — an SSE stream of every
//! checked message, or (clients that accept only JSON) the one response —
//! and the 202 for messages that need no answer.

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::sync::mpsc;

use super::process::Session;
use crate::body::{Body, BoxError, full};
use crate::gateway::outbound::{ReplyContext, check_reply};
use crate::mcp::McpError;
use crate::mcp::sse::Event;

/// An SSE stream of what arrives on `rx`, each message checked first.
pub(super) fn sse_response(rx: mpsc::Receiver<Bytes>, reply: ReplyContext) -> Response<Body> {
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
            .then(move |data| {
                let reply = reply.clone();
                async move { checked(&reply, data).await }
            })
            .filter_map(|data| async move { data })
            .map(|data| {
                let ev = Event {
                    event: Some("message".into()),
                    data: Some(String::from_utf8_lossy(&data).into_owned()),
                    ..Event::default()
                };
                Ok::<_, BoxError>(Frame::data(ev.encode()))
            });
    let mut resp = Response::new(http_body_util::BodyExt::boxed_unsync(StreamBody::new(
        stream,
    )));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// A server message after the reply checks, or `None` when it is dropped.
/// The reader parsed it for routing only, so a message the server's
/// policy refuses (keys that differ only in case) fails here, and is
/// dropped (fail closed).
async fn checked(reply: &ReplyContext, data: Bytes) -> Option<Bytes> {
    match check_reply(reply, data).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(server = reply.base.server, error = %e, "stdio message rejected");
            None
        }
    }
}

fn json_response(bytes: Bytes) -> Response<Body> {
    let mut resp = Response::new(full(bytes));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The answer to a message that needs none (a notification, a response).
pub(super) fn accepted() -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

/// The response to a request written to `session`'s child as `id`: an SSE
/// stream of everything routed to it, or (JSON-only clients) its response,
/// waited for within `timeout` (the server's call timeout).
pub(super) async fn respond(
    name: &str,
    timeout: std::time::Duration,
    session: &Session,
    id: &str,
    mut rx: mpsc::Receiver<Bytes>,
    accepts_sse: bool,
    reply: ReplyContext,
) -> Result<Response<Body>, McpError> {
    if accepts_sse {
        return Ok(sse_response(rx, reply));
    }
    let waited = tokio::time::timeout(timeout, rx.recv()).await;
    match waited {
        Ok(Some(bytes)) => match check_reply(&reply, bytes).await {
            Ok(Some(b)) => Ok(json_response(b)),
            Ok(None) => Ok(accepted()),
            Err(e) => {
                tracing::warn!(server = name, error = %e, "stdio server sent an invalid reply");
                Err(McpError::InvalidUpstreamResponse(
                    "the reply is not an acceptable JSON-RPC message".into(),
                ))
            }
        },
        Ok(None) => Err(McpError::UpstreamUnavailable(format!(
            "server '{name}' ended the session"
        ))),
        Err(_) => {
            session.router().forget(id);
            Err(McpError::UpstreamTimeout(timeout.as_millis()))
        }
    }
}
