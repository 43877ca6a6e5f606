//! The child process behind a stdio session: starting it with a clean
//! environment, its writer, reader (which hands each message to the
//! [`Router`]), stderr and supervisor tasks, and what happens when it ends.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::sync::CancellationToken;

use super::router::{Route, Router};
use super::{Sessions, StdioUpstream};
use crate::limits;
use crate::mcp::{McpError, Message, ParseOptions};
use crate::principal::Principal;

/// Messages buffered per in-flight request stream before the child's stdout
/// is paused (backpressure).
pub(super) const STREAM_BUFFER: usize = 64;
/// Environment variables a child inherits; everything else comes from config.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER"];

/// One running child process and its routing state.
pub(super) struct Session {
    pub stdin: mpsc::Sender<Bytes>,
    router: Mutex<Router>,
    pub ended: CancellationToken,
    last_used: Mutex<Instant>,
    /// Next request id the gateway puts on stateless requests.
    next_id: std::sync::atomic::AtomicU64,
}

impl Session {
    pub fn router(&self) -> std::sync::MutexGuard<'_, Router> {
        self.router.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// A fresh id for a stateless request (JSON text).
    pub fn next_wire_id(&self) -> String {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string()
    }
}

/// One line for the child: JSON whitespace newlines become spaces (newlines
/// inside strings are escaped in valid JSON, which the parser enforced).
pub(super) fn to_line(raw: &Bytes) -> Bytes {
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
    /// The server's command: its program, arguments, working directory and
    /// configured environment over a cleared one (only [`INHERITED_ENV`]
    /// kept), stdio piped, killed when dropped.
    pub(in crate::gateway) fn command(&self) -> Command {
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
        cmd
    }

    /// Starts the server process and files it in `map` under `key` (bound
    /// to `owner` when it is a session id); the supervisor takes it out,
    /// and unbinds it, when it ends.
    pub(super) fn spawn_into(
        &self,
        map: &Sessions,
        key: String,
        owner: Option<&Principal>,
    ) -> Result<Arc<Session>, McpError> {
        if self.session_count() >= self.max_sessions {
            return Err(McpError::TooManySessions(self.name.clone()));
        }
        let mut child = self.command().spawn().map_err(|e| {
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
        let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
        let session = Arc::new(Session {
            stdin: stdin_tx,
            router: Mutex::new(Router::new(limits::STDIO_BACKLOG)),
            ended: CancellationToken::new(),
            last_used: Mutex::new(Instant::now()),
            next_id: std::sync::atomic::AtomicU64::new(1),
        });
        let name = self.name.clone();
        // Bound before the supervisor runs, so its unbinding comes after.
        if let Some(owner) = owner {
            self.bindings.bind(&name, &name, &key, owner);
        }
        tokio::spawn(write_stdin(stdin, stdin_rx, session.ended.clone()));
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
        tokio::spawn(read_stdout(
            stdout,
            session.clone(),
            self.limits,
            name.clone(),
        ));
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
}

/// Writes each queued line to the child; a failed write ends the session.
async fn write_stdin(
    mut stdin: tokio::process::ChildStdin,
    mut lines: mpsc::Receiver<Bytes>,
    ended: CancellationToken,
) {
    while let Some(line) = lines.recv().await {
        let ok = stdin.write_all(&line).await.is_ok()
            && stdin.write_all(b"\n").await.is_ok()
            && stdin.flush().await.is_ok();
        if !ok {
            ended.cancel();
            break;
        }
    }
}

/// Reads the child's messages, one per line, and routes each; an oversized
/// line or the end of output ends the session.
async fn read_stdout(
    stdout: tokio::process::ChildStdout,
    session: Arc<Session>,
    limits: crate::gateway::outbound::OutboundLimits,
    name: String,
) {
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
        // Read for routing only: every message then passes check_reply,
        // which applies the server's key rule.
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
    let pending = session.router().take_all();
    for p in pending {
        let err = McpError::UpstreamUnavailable("the server process ended".into());
        let body = crate::mcp::error::error_body(&err, Some(p.restore.as_deref().unwrap_or(&p.id)));
        let _ = p.tx.try_send(Bytes::from(body));
    }
}

/// Delivers one message from the child to the stream its router picks.
async fn route(session: &Session, msg: Message, name: &str) {
    let route = session
        .router()
        .route(msg.kind, msg.id.as_deref(), msg.raw.clone());
    match route {
        Route::Deliver { tx, bytes, requeue } => {
            // The agent closed that stream. A response is lost with it (the
            // client abandoned the request); anything else waits for the
            // next GET stream.
            if let Err(lost) = tx.send(bytes).await
                && requeue
            {
                session.router().requeue(lost.0);
            }
        }
        Route::Backlogged {
            dropped_oldest: true,
        } => {
            tracing::warn!(server = name, "stdio backlog full; oldest message dropped");
        }
        Route::Backlogged { .. } => {}
        Route::Dropped => {
            let id = msg.id.as_deref().unwrap_or("");
            tracing::warn!(
                server = name,
                id,
                "response to no request in flight; dropped"
            );
        }
    }
}
