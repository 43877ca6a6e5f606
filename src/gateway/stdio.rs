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
use crate::mcp::era::{SESSION_HEADER, STATELESS_SINCE};
use crate::mcp::sse::Event;
use crate::mcp::{Kind, McpError, Message, ParseOptions};
use crate::principal::Principal;
use crate::secret;
use crate::session::SessionTable;

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
    /// The id on the wire to the child.
    id: String,
    /// The agent's id, when the gateway replaced it (stateless requests).
    restore: Option<String>,
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
    /// Next request id the gateway puts on stateless requests.
    next_id: std::sync::atomic::AtomicU64,
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

/// Which protocol family a stdio server speaks, once a probe has shown it
/// cannot serve 2026-07-28.
#[derive(Debug, Clone)]
struct LegacyOnly {
    /// The version it negotiated when the gateway initialized it.
    supported: Vec<String>,
}

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

/// The stateless era's per-request envelope keys.
const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// Ids of the gateway's own probe requests (never an agent's: those are
/// replaced by numbers on stateless processes).
const PROBE_DISCOVER_ID: &str = "\"portcullis-probe-discover\"";
const PROBE_INITIALIZE_ID: &str = "\"portcullis-probe-initialize\"";
/// The session-era version the gateway offers when probing a legacy server.
const PROBE_LEGACY_VERSION: &str = "2025-11-25";

/// `raw` (one JSON-RPC object) with its `id` replaced by `id` (JSON text).
fn with_id(raw: &[u8], id: &str) -> Option<Bytes> {
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(raw).ok()?;
    v.insert("id".into(), serde_json::from_str(id).ok()?);
    serde_json::to_vec(&v).ok().map(Bytes::from)
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

/// What probing a fresh stdio process found.
enum Probe {
    /// It answered `server/discover` at the requested version.
    Serves,
    /// It speaks the stateless era, but not the requested version.
    Unsupported(Vec<String>),
    /// It does not speak the stateless era; what it negotiated instead.
    Legacy(Vec<String>),
    /// It exited before answering.
    Dead,
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
        let id = secret::random_id();
        let session = self.spawn_into(&self.sessions, id.clone(), Some(owner))?;
        Ok((id, session))
    }

    /// Starts the server process and files it in `map` under `key` (bound
    /// to `owner` when it is a session id); the supervisor takes it out,
    /// and unbinds it, when it ends.
    fn spawn_into(
        &self,
        map: &Sessions,
        key: String,
        owner: Option<&Principal>,
    ) -> Result<Arc<Session>, McpError> {
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
        let (stdin_tx, mut stdin_rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
        let session = Arc::new(Session {
            stdin: stdin_tx,
            router: Mutex::new(Router::default()),
            ended: CancellationToken::new(),
            last_used: Mutex::new(Instant::now()),
            next_id: std::sync::atomic::AtomicU64::new(1),
        });
        let name = self.name.clone();
        // Bound before the supervisor runs, so its unbinding comes after.
        if let Some(owner) = owner {
            self.bindings.bind(&name, &name, &key, owner);
        }
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
            let sessions = map.clone();
            let key = key.clone();
            let bindings = owner.is_some().then(|| self.bindings.clone());
            let idle = self.idle_timeout;
            async move {
                supervise(&mut child, &session, idle, &name).await;
                let _ = child.kill().await;
                let mut map = sessions.lock().unwrap_or_else(|p| p.into_inner());
                // A stateless key may already name this process's successor.
                if map.get(&key).is_some_and(|s| Arc::ptr_eq(s, &session)) {
                    map.remove(&key);
                }
                drop(map);
                // Before the pending requests fail: a client that sees the
                // end and retries finds the session unknown.
                if let Some(bindings) = bindings {
                    bindings.unbind(&name, &name, &key);
                }
                fail_pending(&session);
            }
        });
        map.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, session.clone());
        Ok(session)
    }

    /// The stateless process serving `subject`, started and probed when
    /// there is none. A server that cannot serve `requested` is an
    /// [`McpError::UnsupportedProtocolVersion`] naming what it can.
    async fn stateless_session(
        &self,
        subject: &str,
        requested: &str,
    ) -> Result<Arc<Session>, McpError> {
        let live = |map: &Sessions| {
            map.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(subject)
                .filter(|s| !s.ended.is_cancelled())
                .cloned()
        };
        if let Some(s) = live(&self.stateless) {
            return Ok(s);
        }
        let _one_at_a_time = self.probing.lock().await;
        if let Some(s) = live(&self.stateless) {
            return Ok(s);
        }
        let legacy = self
            .legacy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(l) = legacy {
            return Err(McpError::UnsupportedProtocolVersion {
                requested: requested.to_owned(),
                supported: l.supported,
            });
        }
        let session = self.spawn_into(&self.stateless, subject.to_owned(), None)?;
        match self.probe(&session, requested).await {
            Probe::Serves => Ok(session),
            Probe::Dead => Err(McpError::UpstreamUnavailable(format!(
                "server '{}' exited before answering",
                self.name
            ))),
            Probe::Unsupported(supported) => {
                session.ended.cancel();
                Err(McpError::UnsupportedProtocolVersion {
                    requested: requested.to_owned(),
                    supported,
                })
            }
            Probe::Legacy(supported) => {
                session.ended.cancel();
                tracing::info!(
                    server = self.name,
                    ?supported,
                    "stdio server speaks only the session-based protocol; stateless requests are refused with -32022"
                );
                *self.legacy.lock().unwrap_or_else(|p| p.into_inner()) = Some(LegacyOnly {
                    supported: supported.clone(),
                });
                Err(McpError::UnsupportedProtocolVersion {
                    requested: requested.to_owned(),
                    supported,
                })
            }
        }
    }

    /// Asks a fresh process `server/discover` at `requested`; when that is
    /// not understood, initializes it to learn the session-era version it
    /// speaks. The first message also fixes the era of servers that serve
    /// both on one stream (the Python SDK does).
    async fn probe(&self, session: &Session, requested: &str) -> Probe {
        let discover = serde_json::json!({
            "jsonrpc": "2.0", "id": "portcullis-probe-discover", "method": "server/discover",
            "params": {"_meta": {META_PROTOCOL_VERSION: requested, META_CLIENT_CAPABILITIES: {}}},
        });
        match self.ask(session, PROBE_DISCOVER_ID, &discover).await {
            Some(reply) if reply.get("result").is_some() => return Probe::Serves,
            Some(reply) => {
                let error = reply.get("error");
                let code = error.and_then(|e| e.get("code")).and_then(|c| c.as_i64());
                if code == Some(-32022) {
                    let supported = error
                        .and_then(|e| e.pointer("/data/supported"))
                        .and_then(|s| s.as_array())
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(str::to_owned))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default();
                    let modern = supported.iter().any(|v| v.as_str() >= STATELESS_SINCE);
                    if modern {
                        return Probe::Unsupported(supported);
                    }
                }
            }
            None if session.ended.is_cancelled() => return Probe::Dead,
            None => {}
        }
        let initialize = serde_json::json!({
            "jsonrpc": "2.0", "id": "portcullis-probe-initialize", "method": "initialize",
            "params": {"protocolVersion": PROBE_LEGACY_VERSION, "capabilities": {},
                       "clientInfo": {"name": "portcullis", "version": env!("CARGO_PKG_VERSION")}},
        });
        let negotiated = self
            .ask(session, PROBE_INITIALIZE_ID, &initialize)
            .await
            .and_then(|r| {
                r.pointer("/result/protocolVersion")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            });
        Probe::Legacy(negotiated.into_iter().collect())
    }

    /// Sends one gateway-made request to the child and waits (bounded) for
    /// its answer.
    async fn ask(
        &self,
        session: &Session,
        id: &str,
        request: &serde_json::Value,
    ) -> Option<serde_json::Value> {
        let (tx, mut rx) = mpsc::channel(STREAM_BUFFER);
        session.router().pending.push(Pending {
            id: id.to_owned(),
            restore: None,
            sse: false,
            tx,
        });
        let line = Bytes::from(serde_json::to_vec(request).ok()?);
        session.stdin.send(line).await.ok()?;
        let answer = tokio::time::timeout(limits::STDIO_PROBE_TIMEOUT, rx.recv()).await;
        session.router().pending.retain(|p| p.id != id);
        serde_json::from_slice(&answer.ok()??).ok()
    }

    /// Handles a stateless (2026-07-28) POST from `subject`.
    pub async fn post_stateless(
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
            let line = self
                .restamp_cancel(&session, &msg)
                .unwrap_or_else(|| to_line(&msg.raw));
            session
                .stdin
                .send(line)
                .await
                .map_err(|_| McpError::SessionNotFound)?;
            return Ok(accepted());
        }
        let wire_id = session
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string();
        let line = with_id(&msg.raw, &wire_id)
            .ok_or_else(|| McpError::InvalidRequest("the request is not a JSON object".into()))?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        session.router().pending.push(Pending {
            id: wire_id.clone(),
            restore: msg.id.clone(),
            sse: accepts_sse,
            tx,
        });
        self.send_request(&session, &wire_id, line, rx, accepts_sse, reply)
            .await
    }

    /// A `notifications/cancelled` naming one of the agent's in-flight
    /// requests, re-addressed to the id the child knows it by.
    fn restamp_cancel(&self, session: &Session, msg: &Message) -> Option<Bytes> {
        if msg.method.as_deref() != Some("notifications/cancelled") {
            return None;
        }
        let mut v: serde_json::Value = serde_json::from_slice(&msg.raw).ok()?;
        let theirs = v.pointer("/params/requestId")?.to_string();
        let wire = session
            .router()
            .pending
            .iter()
            .find(|p| p.restore.as_deref() == Some(theirs.as_str()))
            .map(|p| p.id.clone())?;
        *v.pointer_mut("/params/requestId")? = serde_json::from_str(&wire).ok()?;
        serde_json::to_vec(&v).ok().map(Bytes::from)
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
            session
                .stdin
                .send(line)
                .await
                .map_err(|_| McpError::SessionNotFound)?;
            return Ok(accepted());
        }
        let id = msg.id.clone().unwrap_or_default();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        {
            let mut r = session.router();
            if r.pending.iter().any(|p| p.id == id) {
                return Err(McpError::InvalidRequest(format!(
                    "request id {id} is already in flight"
                )));
            }
            r.pending.push(Pending {
                id: id.clone(),
                restore: None,
                sse: accepts_sse,
                tx,
            });
        }
        let mut resp = self
            .send_request(&session, &id, line, rx, accepts_sse, reply)
            .await?;
        if let Some(v) = new.then(|| HeaderValue::from_str(&sid).ok()).flatten() {
            resp.headers_mut().insert(SESSION_HEADER, v);
        }
        Ok(resp)
    }

    /// Writes a request registered in `pending` as `id` to the child and
    /// returns its response. A child that cannot take it leaves no pending
    /// entry behind.
    async fn send_request(
        &self,
        session: &Session,
        id: &str,
        line: Bytes,
        rx: mpsc::Receiver<Bytes>,
        accepts_sse: bool,
        reply: ReplyContext,
    ) -> Result<Response<Body>, McpError> {
        if session.stdin.send(line).await.is_err() {
            session.router().pending.retain(|p| p.id != id);
            return Err(McpError::UpstreamUnavailable(format!(
                "server '{}' has exited",
                self.name
            )));
        }
        self.respond(session, id, rx, accepts_sse, reply).await
    }

    /// The response to a request written to the child as `id`: an SSE stream
    /// of everything routed to it, or (JSON-only clients) its response.
    async fn respond(
        &self,
        session: &Session,
        id: &str,
        mut rx: mpsc::Receiver<Bytes>,
        accepts_sse: bool,
        reply: ReplyContext,
    ) -> Result<Response<Body>, McpError> {
        if accepts_sse {
            return Ok(sse_response(rx, reply));
        }
        let waited = tokio::time::timeout(self.limits.call_timeout, rx.recv()).await;
        match waited {
            Ok(Some(bytes)) => match check_reply(&reply, bytes).await {
                Ok(Some(b)) => Ok(json_response(b)),
                Ok(None) => Ok(accepted()),
                Err(e) => {
                    tracing::warn!(server = self.name, error = %e, "stdio server sent an invalid reply");
                    Err(McpError::InvalidUpstreamResponse(
                        "the reply is not an acceptable JSON-RPC message".into(),
                    ))
                }
            },
            Ok(None) => Err(McpError::UpstreamUnavailable(format!(
                "server '{}' ended the session",
                self.name
            ))),
            Err(_) => {
                session.router().pending.retain(|p| p.id != id);
                Err(McpError::UpstreamTimeout(
                    self.limits.call_timeout.as_millis(),
                ))
            }
        }
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
        self.bindings.unbind(&self.name, &self.name, sid);
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
        let body = crate::mcp::error::error_body(&err, Some(p.restore.as_deref().unwrap_or(&p.id)));
        let _ = p.tx.try_send(Bytes::from(body));
    }
    session.router().get_stream = None;
}

/// Delivers one message from the child to the right stream.
async fn route(session: &Session, msg: Message, name: &str) {
    let mut restored = None;
    let target = {
        let mut r = session.router();
        match msg.kind {
            Kind::Response | Kind::Error => {
                let id = msg.id.as_deref().unwrap_or("");
                match r.pending.iter().position(|p| p.id == id) {
                    Some(i) => {
                        let p = r.pending.remove(i);
                        // The agent's id back in place of the gateway's.
                        if let Some(theirs) = p.restore {
                            match with_id(&msg.raw, &theirs) {
                                Some(raw) => restored = Some(raw),
                                None => return,
                            }
                        }
                        Some(p.tx)
                    }
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
    let Err(lost) = tx.send(restored.unwrap_or(msg.raw)).await else {
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
