//! Stdio upstreams: one child process per MCP session, with Streamable HTTP
//! semantics mapped onto its stdin/stdout.
//!
//! - `initialize` without a session starts a process and mints a session id
//!   (128 random bits), bound to the principal that sent it
//!   (`src/session.rs`); later requests name it in `Mcp-Session-Id`.
//! - A request's POST gets an SSE stream carrying whatever the server sends
//!   while the request is the newest in flight (progress, logging, sampling or
//!   elicitation requests) and ends with the response; clients that accept
//!   only JSON get just the response.
//! - Messages with no request in flight go to the session's GET stream, or
//!   wait in a bounded backlog until one opens.
//! - Notifications and the client's responses are written and answered 202.
//! - DELETE, idleness and process exit end the session and its binding.
//!
//! - 2026-07-28 (stateless) requests go to one process per principal,
//!   opened with a `server/discover` probe: a server that answers it serves
//!   them (request ids are replaced by the gateway's own on the way in and
//!   restored on the way out, so two clients of one principal cannot
//!   collide); a server that does not speaks only the session-based
//!   protocol, and the agent gets the spec's `-32022` naming the version it
//!   negotiated instead.
//!
//! Limitation: no SSE event ids (resumption), answered with a clear error.

mod http;
mod probe;
mod process;
mod router;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::http::{HeaderValue, Response};
use bytes::Bytes;
use tokio::sync::mpsc;

use self::http::{accepted, respond, sse_response};
use super::outbound::{OutboundLimits, ReplyContext};
use crate::body::{Body, full};
use crate::limits;
use crate::mcp::era::{Era, SESSION_HEADER, STATELESS_SINCE};
use crate::mcp::{Kind, McpError, Message};
use crate::principal::Principal;
use crate::session::SessionTable;
use probe::LegacyOnly;
use process::{STREAM_BUFFER, Session, to_line};
use router::{Pending, with_id};

/// How to start the server process.
#[derive(Debug, Clone)]
pub struct StdioCommand {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
}

type Sessions = Arc<Mutex<HashMap<String, Arc<Session>>>>;

/// One configured stdio upstream.
pub struct StdioUpstream {
    name: String,
    command: StdioCommand,
    /// Session-era processes, by the session id the gateway minted.
    sessions: Sessions,
    /// Stateless-era processes, by principal subject. A separate map: an
    /// agent naming a subject in `Mcp-Session-Id` reaches nothing here.
    stateless: Sessions,
    /// Set once a probe found the server cannot serve stateless requests.
    legacy: Mutex<Option<LegacyOnly>>,
    /// One probe at a time, so a burst of first calls starts one process.
    probing: tokio::sync::Mutex<()>,
    /// Which principal opened each session; shared with the supervisors,
    /// which forget a session's binding when it ends.
    bindings: Arc<SessionTable>,
    limits: OutboundLimits,
    max_sessions: usize,
    idle_timeout: Duration,
}

impl StdioUpstream {
    pub fn new(name: &str, command: StdioCommand, limits: OutboundLimits) -> StdioUpstream {
        StdioUpstream {
            name: name.to_owned(),
            command,
            sessions: Arc::default(),
            stateless: Arc::default(),
            legacy: Mutex::new(None),
            probing: tokio::sync::Mutex::new(()),
            bindings: Arc::new(SessionTable::new(
                limits::MAX_SESSIONS_PER_SERVER,
                limits::SESSION_BINDING_IDLE,
            )),
            limits,
            max_sessions: limits::MAX_STDIO_SESSIONS,
            idle_timeout: limits::STDIO_SESSION_IDLE,
        }
    }

    /// The session bindings the gateway checks before forwarding.
    pub fn sessions(&self) -> &SessionTable {
        &self.bindings
    }

    fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Live child processes (session-era sessions and stateless ones).
    pub fn session_count(&self) -> usize {
        let count = |m: &Sessions| m.lock().unwrap_or_else(|p| p.into_inner()).len();
        count(&self.sessions) + count(&self.stateless)
    }

    /// Starts a process for a new session-era session under a fresh id,
    /// bound to `owner`.
    fn spawn(&self, owner: &Principal) -> Result<(String, Arc<Session>), McpError> {
        let id = self.bindings.new_id();
        let session = self.spawn_into(&self.sessions, id.clone(), Some(owner))?;
        Ok((id, session))
    }

    /// Handles a POST carrying `msg`, in the era of the protocol version
    /// the checkpoint settled on (`reply.base`): stateless requests go to
    /// the principal's process, session-era ones to the session's.
    pub async fn post(
        &self,
        msg: Message,
        accepts_sse: bool,
        reply: ReplyContext,
    ) -> Result<Response<Body>, McpError> {
        let base = &reply.base;
        match Era::of_version(base.protocol_version.as_deref()) {
            Era::Stateless => {
                let requested = base.protocol_version.as_deref().unwrap_or(STATELESS_SINCE);
                let (subject, requested) = (base.principal.subject.clone(), requested.to_owned());
                self.post_stateless(&subject, &requested, msg, accepts_sse, reply)
                    .await
            }
            Era::Session => {
                let session_id = base.session_id.clone();
                self.post_session(session_id.as_deref(), msg, accepts_sse, reply)
                    .await
            }
        }
    }

    /// Handles a stateless (2026-07-28) POST from `subject`.
    async fn post_stateless(
        &self,
        subject: &str,
        requested: &str,
        msg: Message,
        accepts_sse: bool,
        reply: ReplyContext,
    ) -> Result<Response<Body>, McpError> {
        let session = self.stateless_session(subject, requested).await?;
        session.touch();
        if msg.kind != Kind::Request {
            let cancel = msg.method.as_deref() == Some("notifications/cancelled");
            let restamped = cancel
                .then(|| session.router().restamp_cancel(&msg.raw))
                .flatten();
            let line = restamped.unwrap_or_else(|| to_line(&msg.raw));
            return pass_on(&session, line).await;
        }
        let wire_id = session.next_wire_id();
        let line = with_id(&msg.raw, &wire_id)
            .ok_or_else(|| McpError::InvalidRequest("the request is not a JSON object".into()))?;
        self.send_request(&session, wire_id, msg.id.clone(), line, accepts_sse, reply)
            .await
    }

    /// Handles a session-era POST carrying `msg`.
    async fn post_session(
        &self,
        session_id: Option<&str>,
        msg: Message,
        accepts_sse: bool,
        reply: ReplyContext,
    ) -> Result<Response<Body>, McpError> {
        let (sid, session, new) = match session_id {
            Some(sid) => {
                let s = self.session(sid).ok_or(McpError::SessionNotFound)?;
                (sid.to_owned(), s, false)
            }
            None if msg.method_str() == "initialize" => {
                let (sid, s) = self.spawn(&reply.base.principal)?;
                (sid, s, true)
            }
            None => {
                return Err(McpError::InvalidRequest(
                    "missing Mcp-Session-Id header; send initialize first".into(),
                ));
            }
        };
        session.touch();
        let line = to_line(&msg.raw);
        if msg.kind != Kind::Request {
            return pass_on(&session, line).await;
        }
        let id = msg.id.clone().unwrap_or_default();
        let mut resp = self
            .send_request(&session, id, None, line, accepts_sse, reply)
            .await?;
        if let Some(v) = new.then(|| HeaderValue::from_str(&sid).ok()).flatten() {
            resp.headers_mut().insert(SESSION_HEADER, v);
        }
        Ok(resp)
    }

    /// Files a request as `id` (the agent's, `restore`d on the way out
    /// when the gateway replaced it), writes it to the child and returns its
    /// response. A child that cannot take it leaves no pending entry behind.
    async fn send_request(
        &self,
        session: &Session,
        id: String,
        restore: Option<String>,
        line: Bytes,
        accepts_sse: bool,
        reply: ReplyContext,
    ) -> Result<Response<Body>, McpError> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        session.router().register(Pending {
            id: id.clone(),
            restore,
            sse: accepts_sse,
            tx,
        })?;
        if session.stdin.send(line).await.is_err() {
            session.router().forget(&id);
            return Err(McpError::UpstreamUnavailable(format!(
                "server '{}' has exited",
                self.name
            )));
        }
        let timeout = self.limits.call_timeout;
        respond(&self.name, timeout, session, &id, rx, accepts_sse, reply).await
    }

    /// Opens the GET stream of the session `reply` names.
    pub fn get(&self, reply: ReplyContext) -> Result<Response<Body>, McpError> {
        let sid = reply
            .base
            .session_id
            .as_deref()
            .ok_or_else(|| McpError::InvalidRequest("missing Mcp-Session-Id header".into()))?;
        let session = self.session(sid).ok_or(McpError::SessionNotFound)?;
        session.touch();
        let (tx, rx) = mpsc::channel(limits::STDIO_BACKLOG.max(STREAM_BUFFER));
        session.router().open_get_stream(tx);
        Ok(sse_response(rx, reply))
    }

    /// Ends a session and its process.
    pub fn delete(&self, session_id: Option<&str>) -> Result<Response<Body>, McpError> {
        let sid = session_id
            .ok_or_else(|| McpError::InvalidRequest("missing Mcp-Session-Id header".into()))?;
        let session = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sid)
            .ok_or(McpError::SessionNotFound)?;
        self.bindings.unbind(&self.name, &self.name, sid);
        session.ended.cancel();
        Ok(Response::new(full(Bytes::new())))
    }
}

/// Writes a message that needs no answer (a notification, the agent's
/// response to a server request) to the child: 202 once it is queued.
async fn pass_on(session: &Session, line: Bytes) -> Result<Response<Body>, McpError> {
    session
        .stdin
        .send(line)
        .await
        .map_err(|_| McpError::SessionNotFound)?;
    Ok(accepted())
}
