//! Stdio upstreams: one child process per MCP session, with Streamable HTTP
//! semantics mapped onto its stdin/stdout.
//!
//! - `initialize` without a session starts a process and mints a session id
//!   (128 random bits); later requests name it in `Mcp-Session-Id`.
//! - A request's POST gets an SSE stream carrying whatever the server sends
//!   while the request is the newest in flight (progress, logging, sampling or
//!   elicitation requests) and ends with the response; clients that accept
//!   only JSON get just the response.
//! - Messages with no request in flight go to the session's GET stream, or
//!   wait in a bounded backlog until one opens.
//! - Notifications and the client's responses are written and answered 202.
//! - DELETE, idleness and process exit end the session.
//!
//! Limitations: no SSE event ids (resumption) and no stateless era for stdio;
//! both are answered with clear errors.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::sync::CancellationToken;

use super::outbound::{OutboundLimits, ReplyContext, check_reply};
use crate::body::{Body, BoxError, full};
use crate::limits;
use crate::mcp::era::SESSION_HEADER;
use crate::mcp::sse::Event;
use crate::mcp::{Kind, McpError, Message, ParseOptions};
use crate::secret;

/// Messages buffered per in-flight request stream before the child's stdout
/// is paused (backpressure).
const STREAM_BUFFER: usize = 64;
/// Environment variables a child inherits; everything else comes from config.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER"];

/// How to start the server process.
#[derive(Debug, Clone)]
pub struct StdioCommand {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
}

struct Pending {
    id: String,
    sse: bool,
    tx: mpsc::Sender<Bytes>,
}

#[derive(Default)]
struct Router {
    /// In-flight requests, oldest first.
    pending: Vec<Pending>,
    get_stream: Option<mpsc::Sender<Bytes>>,
    backlog: VecDeque<Bytes>,
}

struct Session {
    stdin: mpsc::Sender<Bytes>,
    router: Mutex<Router>,
    ended: CancellationToken,
    last_used: Mutex<Instant>,
}

impl Session {
    fn router(&self) -> std::sync::MutexGuard<'_, Router> {
        self.router.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

type Sessions = Arc<Mutex<HashMap<String, Arc<Session>>>>;

/// One configured stdio upstream.
pub struct StdioUpstream {
    name: String,
    command: StdioCommand,
    sessions: Sessions,
    limits: OutboundLimits,
    max_sessions: usize,
    idle_timeout: Duration,
}

fn sse_response(rx: mpsc::Receiver<Bytes>, reply: ReplyContext) -> Response<Body> {
    let stream = tokio_stream_from(rx)
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

fn tokio_stream_from(rx: mpsc::Receiver<Bytes>) -> impl futures_util::Stream<Item = Bytes> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

fn json_response(bytes: Bytes) -> Response<Body> {
    let mut resp = Response::new(full(bytes));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn accepted() -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

/// One line for the child: JSON whitespace newlines become spaces (newlines
/// inside strings are escaped in valid JSON, which the parser enforced).
fn to_line(raw: &Bytes) -> Bytes {
    if raw.iter().any(|b| *b == b'\n' || *b == b'\r') {
        let mut v = raw.to_vec();
        for b in &mut v {
            if *b == b'\n' || *b == b'\r' {
                *b = b' ';
            }
        }
        Bytes::from(v)
    } else {
        raw.clone()
    }
}

impl StdioUpstream {
    pub fn new(name: &str, command: StdioCommand, limits: OutboundLimits) -> StdioUpstream {
        StdioUpstream {
            name: name.to_owned(),
            command,
            sessions: Arc::default(),
            limits,
            max_sessions: limits::MAX_STDIO_SESSIONS,
            idle_timeout: limits::STDIO_SESSION_IDLE,
        }
    }

    fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Live sessions (child processes).
    pub fn session_count(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    fn spawn(&self) -> Result<(String, Arc<Session>), McpError> {
        if self.session_count() >= self.max_sessions {
            return Err(McpError::TooManySessions(self.name.clone()));
        }
        let mut cmd = Command::new(&self.command.program);
        cmd.args(&self.command.args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for key in INHERITED_ENV {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        for (k, v) in &self.command.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.command.cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| {
            tracing::warn!(server = self.name, program = self.command.program, error = %e, "cannot start stdio server");
            McpError::UpstreamUnavailable(format!("server '{}' could not be started", self.name))
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(McpError::UpstreamUnavailable(
                "stdio pipes unavailable".into(),
            ));
        };
        let id = secret::random_id();
        let (stdin_tx, mut stdin_rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
        let session = Arc::new(Session {
            stdin: stdin_tx,
            router: Mutex::new(Router::default()),
            ended: CancellationToken::new(),
            last_used: Mutex::new(Instant::now()),
        });
        let name = self.name.clone();
        // Writer.
        tokio::spawn({
            let ended = session.ended.clone();
            async move {
                let mut stdin = stdin;
                while let Some(line) = stdin_rx.recv().await {
                    let ok = stdin.write_all(&line).await.is_ok()
                        && stdin.write_all(b"\n").await.is_ok()
                        && stdin.flush().await.is_ok();
                    if !ok {
                        ended.cancel();
                        break;
                    }
                }
            }
        });
        // Stderr goes to the log, at debug: it may carry payload data.
        tokio::spawn({
            let name = name.clone();
            async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(server = name, "stderr: {line}");
                }
            }
        });
        // Reader.
        tokio::spawn({
            let session = session.clone();
            let limits = self.limits;
            let name = name.clone();
            async move {
                let codec = LinesCodec::new_with_max_length(limits.max_message_bytes);
                let mut lines = FramedRead::new(stdout, codec);
                while let Some(line) = lines.next().await {
                    let line = match line {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::warn!(server = name, error = %e, "stdio server output rejected; ending session");
                            break;
                        }
                    };
                    if line.trim().is_empty() {
                        continue;
                    }
                    // Read for routing only: every message then passes
                    // check_reply, which applies the server's key rule.
                    let routing = ParseOptions {
                        allow_case_colliding_keys: true,
                        ..ParseOptions::new(limits.max_depth)
                    };
                    match Message::parse(Bytes::from(line), routing) {
                        Ok(msg) => route(&session, msg, &name).await,
                        Err(e) => {
                            tracing::warn!(server = name, error = %e, "stdio server sent an invalid message; dropped");
                        }
                    }
                }
                session.ended.cancel();
            }
        });
        // Supervisor: exit, DELETE, or idleness ends the session.
        tokio::spawn({
            let session = session.clone();
            let sessions = self.sessions.clone();
            let id = id.clone();
            let idle = self.idle_timeout;
            async move {
                supervise(&mut child, &session, idle, &name).await;
                let _ = child.kill().await;
                sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                fail_pending(&session);
            }
        });
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// Handles a POST carrying `msg`.
    pub async fn post(
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
                let (sid, s) = self.spawn()?;
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
            session
                .stdin
                .send(line)
                .await
                .map_err(|_| McpError::SessionNotFound)?;
            return Ok(accepted());
        }
        let id = msg.id.clone().unwrap_or_default();
        let (tx, mut rx) = mpsc::channel(STREAM_BUFFER);
        {
            let mut r = session.router();
            if r.pending.iter().any(|p| p.id == id) {
                return Err(McpError::InvalidRequest(format!(
                    "request id {id} is already in flight"
                )));
            }
            r.pending.push(Pending {
                id: id.clone(),
                sse: accepts_sse,
                tx,
            });
        }
        if session.stdin.send(line).await.is_err() {
            return Err(McpError::UpstreamUnavailable(format!(
                "server '{}' has exited",
                self.name
            )));
        }
        let mut resp = if accepts_sse {
            sse_response(rx, reply)
        } else {
            let waited = tokio::time::timeout(self.limits.call_timeout, rx.recv()).await;
            match waited {
                Ok(Some(bytes)) => match check_reply(&reply, bytes).await {
                    Ok(Some(b)) => json_response(b),
                    Ok(None) => accepted(),
                    Err(e) => {
                        tracing::warn!(server = self.name, error = %e, "stdio server sent an invalid reply");
                        return Err(McpError::UpstreamUnavailable(
                            "the upstream sent an invalid JSON-RPC message".into(),
                        ));
                    }
                },
                Ok(None) => {
                    return Err(McpError::UpstreamUnavailable(format!(
                        "server '{}' ended the session",
                        self.name
                    )));
                }
                Err(_) => {
                    session.router().pending.retain(|p| p.id != id);
                    return Err(McpError::UpstreamTimeout(
                        self.limits.call_timeout.as_millis(),
                    ));
                }
            }
        };
        if let Some(v) = new.then(|| HeaderValue::from_str(&sid).ok()).flatten() {
            resp.headers_mut().insert(SESSION_HEADER, v);
        }
        Ok(resp)
    }

    /// Opens the session's GET stream.
    pub fn get(
        &self,
        session_id: Option<&str>,
        reply: ReplyContext,
    ) -> Result<Response<Body>, McpError> {
        let sid = session_id
            .ok_or_else(|| McpError::InvalidRequest("missing Mcp-Session-Id header".into()))?;
        let session = self.session(sid).ok_or(McpError::SessionNotFound)?;
        session.touch();
        let (tx, rx) = mpsc::channel(limits::STDIO_BACKLOG.max(STREAM_BUFFER));
        let mut r = session.router();
        while let Some(b) = r.backlog.pop_front() {
            let _ = tx.try_send(b);
        }
        r.get_stream = Some(tx);
        drop(r);
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
        session.ended.cancel();
        Ok(Response::new(full(Bytes::new())))
    }
}

async fn supervise(child: &mut Child, session: &Session, idle: Duration, name: &str) {
    let check = (idle / 4).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            status = child.wait() => {
                tracing::info!(server = name, ?status, "stdio server exited");
                return;
            }
            () = session.ended.cancelled() => return,
            () = tokio::time::sleep(check) => {
                if session.idle_for() >= idle {
                    tracing::info!(server = name, "stdio session idle; ending it");
                    return;
                }
            }
        }
    }
}

/// Answers every in-flight request of an ended session with an error.
fn fail_pending(session: &Session) {
    let pending = std::mem::take(&mut session.router().pending);
    for p in pending {
        let err = McpError::UpstreamUnavailable("the server process ended".into());
        let body = crate::mcp::error::error_body(&err, Some(&p.id));
        let _ = p.tx.try_send(Bytes::from(body));
    }
    session.router().get_stream = None;
}

/// Delivers one message from the child to the right stream.
async fn route(session: &Session, msg: Message, name: &str) {
    let target = {
        let mut r = session.router();
        match msg.kind {
            Kind::Response | Kind::Error => {
                let id = msg.id.as_deref().unwrap_or("");
                match r.pending.iter().position(|p| p.id == id) {
                    Some(i) => Some(r.pending.remove(i).tx),
                    None => {
                        tracing::warn!(
                            server = name,
                            id,
                            "response to no request in flight; dropped"
                        );
                        None
                    }
                }
            }
            Kind::Request | Kind::Notification => {
                let newest = r.pending.iter().rev().find(|p| p.sse).map(|p| p.tx.clone());
                match newest.or_else(|| r.get_stream.clone()) {
                    Some(tx) => Some(tx),
                    None => {
                        if r.backlog.len() >= limits::STDIO_BACKLOG {
                            r.backlog.pop_front();
                            tracing::warn!(
                                server = name,
                                "stdio backlog full; oldest message dropped"
                            );
                        }
                        r.backlog.push_back(msg.raw.clone());
                        None
                    }
                }
            }
        }
    };
    let Some(tx) = target else { return };
    let Err(lost) = tx.send(msg.raw).await else {
        return;
    };
    // The agent closed that stream. A response is lost with it (the client
    // abandoned the request); anything else waits for the next GET stream.
    if matches!(msg.kind, Kind::Request | Kind::Notification) {
        let mut r = session.router();
        if r.get_stream.as_ref().is_some_and(|g| g.is_closed()) {
            r.get_stream = None;
        }
        if r.backlog.len() < limits::STDIO_BACKLOG {
            r.backlog.push_back(lost.0);
        }
    }
}
