//! The two kinds of upstream behind one method set: the gateway forwards a
//! checked message, opens a GET stream or ends a session without asking
//! which kind it has.

use ::http::{HeaderMap, Method, Response, header};

use super::outbound::ReplyContext;
use super::{http, stdio};
use crate::body::Body;
use crate::mcp::{McpError, Message};
use crate::session::SessionTable;

/// An upstream MCP server.
pub enum Upstream {
    Http(Box<http::HttpUpstream>),
    Stdio(Box<stdio::StdioUpstream>),
}

/// Whether the agent's client reads SSE (else it gets only JSON).
fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream") || v.contains("*/*"))
}

impl Upstream {
    /// Which principal opened each of its sessions (`src/session.rs`).
    pub fn sessions(&self) -> &SessionTable {
        match self {
            Upstream::Http(u) => u.sessions(),
            Upstream::Stdio(u) => u.sessions(),
        }
    }

    /// Forwards `msg`, which passed the checkpoint, with the agent's
    /// `headers` (those the chain's rewrite left valid); the reply is
    /// checked against `reply`.
    pub async fn post(
        &self,
        headers: &HeaderMap,
        msg: Message,
        reply: ReplyContext,
    ) -> Result<Response<Body>, McpError> {
        match self {
            Upstream::Http(u) => u.call(Method::POST, headers, Some(msg.raw), reply).await,
            Upstream::Stdio(u) => u.post(msg, accepts_sse(headers), reply).await,
        }
    }

    /// Opens the session's GET stream (resumed when `headers` carry the
    /// upstream's own `Last-Event-ID`).
    pub async fn get(
        &self,
        headers: &HeaderMap,
        reply: ReplyContext,
    ) -> Result<Response<Body>, McpError> {
        match self {
            Upstream::Http(u) => u.call(Method::GET, headers, None, reply).await,
            Upstream::Stdio(u) => u.get(reply),
        }
    }

    /// Ends the session `reply` names.
    pub async fn delete(
        &self,
        headers: &HeaderMap,
        reply: ReplyContext,
    ) -> Result<Response<Body>, McpError> {
        match self {
            Upstream::Http(u) => u.call(Method::DELETE, headers, None, reply).await,
            Upstream::Stdio(u) => u.delete(reply.base.session_id.as_deref()),
        }
    }
}
