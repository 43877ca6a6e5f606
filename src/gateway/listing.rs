//! The catalog on demand. A gateway that has not learned a server's whole
//! tool listing (a fresh replica, a restart, a server that announced
//! `notifications/tools/list_changed`) lists the tools itself before it
//! decides a `tools/call`, so that schema-guard, pinning and the mirrored
//! parameters check the call against the definition the server serves,
//! not against nothing.
//!
//! The gateway holds its own MCP conversation with the upstream, apart from
//! every agent's: over HTTP one session (`initialize`, `tools/list` through
//! every page, `DELETE`) with the upstream's configured credentials (or, when
//! it mints identities, a token for the principal whose call needs the
//! listing); over stdio a process of its own, ended when the walk is done.
//! Every page is learned, in order, as one listing
//! ([`crate::policy::catalog::Catalog::learn_listing`]).
//!
//! One walk per server at a time: a burst of first calls waits for one.
//! A walk that fails (a dead upstream, an error, more than
//! [`MAX_LISTING_PAGES`] pages, longer than [`limits::LISTING_TIMEOUT`]) is
//! logged, and calls are decided with what is known, which fails closed
//! (schema-guard refuses a tool it has no definition of); the next walk is
//! tried [`limits::LISTING_RETRY_AFTER`] later, not on every call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio_util::codec::{FramedRead, LinesCodec};

use super::Gateway;
use super::http::{HttpUpstream, answers_id};
use super::stdio::StdioUpstream;
use super::upstream::Upstream;
use crate::limits;
use crate::principal::Principal;

/// Most pages of one listing the gateway reads (a server that never stops
/// paging fails the walk instead of holding it).
pub const MAX_LISTING_PAGES: usize = 1000;

/// Per server: the single-flight lock, holding when the last walk failed.
#[derive(Default)]
pub(super) struct Walks {
    servers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
}

impl Walks {
    fn lock_for(&self, server: &str) -> Arc<tokio::sync::Mutex<Option<Instant>>> {
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(server.to_owned())
            .or_default()
            .clone()
    }
}

impl Gateway {
    /// Makes sure the catalog holds `server`'s whole listing before a call
    /// is decided: walks it when it does not (see the module's text).
    pub(super) async fn ensure_listing(&self, server: &str, upstream: &Upstream, who: &Principal) {
        if self.catalog.is_complete(server) {
            return;
        }
        let lock = self.walks.lock_for(server);
        let mut failed_at = lock.lock().await;
        // Another call's walk may have finished while this one waited.
        if self.catalog.is_complete(server)
            || failed_at.is_some_and(|t| t.elapsed() < limits::LISTING_RETRY_AFTER)
        {
            return;
        }
        let walk = tokio::time::timeout(limits::LISTING_TIMEOUT, walk(upstream, who));
        match walk.await {
            Ok(Ok(pages)) => {
                self.catalog.learn_listing(server, &pages);
                *failed_at = None;
                tracing::info!(
                    server,
                    pages = pages.len(),
                    "learned the server's tool listing"
                );
            }
            Ok(Err(e)) => {
                *failed_at = Some(Instant::now());
                tracing::warn!(server, error = %e, "cannot list the server's tools; calls are decided with what is known");
            }
            Err(_) => {
                *failed_at = Some(Instant::now());
                tracing::warn!(
                    server,
                    timeout_ms = limits::LISTING_TIMEOUT.as_millis() as u64,
                    "listing the server's tools timed out; calls are decided with what is known"
                );
            }
        }
    }
}

/// The response messages of every page of `upstream`'s tool listing.
async fn walk(upstream: &Upstream, who: &Principal) -> Result<Vec<Bytes>, String> {
    let mut conversation = match upstream {
        Upstream::Http(u) => Conversation::Http {
            upstream: u,
            who,
            session: None,
            next_id: 0,
        },
        Upstream::Stdio(u) => Conversation::stdio(u)?,
    };
    let walked = conversation.list().await;
    conversation.end().await;
    walked
}

/// The gateway's own MCP conversation with one upstream.
enum Conversation<'a> {
    Http {
        upstream: &'a HttpUpstream,
        who: &'a Principal,
        session: Option<http::HeaderValue>,
        next_id: u64,
    },
    Stdio {
        // Held so the process lives as long as the walk (killed on drop).
        _child: tokio::process::Child,
        stdin: tokio::process::ChildStdin,
        // Boxed: the reader's buffers would make every conversation large.
        lines: Box<FramedRead<tokio::process::ChildStdout, LinesCodec>>,
        next_id: u64,
    },
}

impl Conversation<'_> {
    fn stdio(u: &StdioUpstream) -> Result<Conversation<'static>, String> {
        let mut cmd = u.command();
        // Nothing reads its diagnostics here: they must not fill a pipe.
        cmd.stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().map_err(|e| format!("cannot start it: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("its pipes are unavailable".into());
        };
        Ok(Conversation::Stdio {
            _child: child,
            stdin,
            lines: Box::new(FramedRead::new(
                stdout,
                LinesCodec::new_with_max_length(limits::MAX_MESSAGE_BYTES),
            )),
            next_id: 0,
        })
    }

    /// `initialize`, `notifications/initialized`, then `tools/list` through
    /// every page.
    async fn list(&mut self) -> Result<Vec<Bytes>, String> {
        let init = self
            .request(
                "initialize",
                json!({"protocolVersion": crate::client::CLIENT_PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "portcullis-gateway", "version": env!("CARGO_PKG_VERSION")}}),
            )
            .await?;
        if let Some(e) = error_of(&init) {
            return Err(format!("initialize failed: {e}"));
        }
        self.notify("notifications/initialized").await?;
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_LISTING_PAGES {
            let params = cursor
                .as_ref()
                .map_or(json!({}), |c| json!({ "cursor": c }));
            let page = self.request("tools/list", params).await?;
            cursor = next_cursor(&page)?;
            pages.push(page);
            if cursor.is_none() {
                return Ok(pages);
            }
        }
        Err(format!(
            "tools/list has more than {MAX_LISTING_PAGES} pages"
        ))
    }

    async fn request(&mut self, method: &str, params: Value) -> Result<Bytes, String> {
        let id = match self {
            Conversation::Http { next_id, .. } | Conversation::Stdio { next_id, .. } => {
                *next_id += 1;
                *next_id
            }
        };
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        match self {
            Conversation::Http {
                upstream,
                who,
                session,
                ..
            } => {
                let reply = upstream
                    .send_own(
                        msg.to_string().into_bytes(),
                        Some(id),
                        session.as_ref(),
                        who,
                    )
                    .await
                    .map_err(|e| format!("{method}: {e}"))?;
                if session.is_none() {
                    *session = reply.session;
                }
                reply.message.ok_or_else(|| format!("{method}: no answer"))
            }
            Conversation::Stdio { stdin, lines, .. } => {
                stdin
                    .write_all(format!("{msg}\n").as_bytes())
                    .await
                    .map_err(|e| format!("{method}: cannot write to it: {e}"))?;
                stdin
                    .flush()
                    .await
                    .map_err(|e| format!("{method}: cannot write to it: {e}"))?;
                // Skips what is not the answer: notifications, requests of
                // the server's own, log lines on stdout.
                while let Some(line) = lines.next().await {
                    // A line over the message size limit is an error too.
                    let line = line.map_err(|e| format!("{method}: cannot read from it: {e}"))?;
                    if answers_id(line.as_bytes(), id) {
                        return Ok(Bytes::from(line));
                    }
                }
                Err(format!("{method}: it exited before answering"))
            }
        }
    }

    async fn notify(&mut self, method: &str) -> Result<(), String> {
        let msg = json!({"jsonrpc": "2.0", "method": method}).to_string();
        match self {
            Conversation::Http {
                upstream,
                who,
                session,
                ..
            } => upstream
                .send_own(msg.into_bytes(), None, session.as_ref(), who)
                .await
                .map(|_| ())
                .map_err(|e| format!("{method}: {e}")),
            Conversation::Stdio { stdin, .. } => {
                stdin
                    .write_all(format!("{msg}\n").as_bytes())
                    .await
                    .map_err(|e| format!("{method}: cannot write to it: {e}"))?;
                stdin
                    .flush()
                    .await
                    .map_err(|e| format!("{method}: cannot write to it: {e}"))
            }
        }
    }

    /// Ends the session (HTTP); a stdio process is killed when dropped.
    async fn end(self) {
        if let Conversation::Http {
            upstream,
            who,
            session: Some(s),
            ..
        } = self
        {
            upstream.end_own(s, who).await;
        }
    }
}

/// The error of a JSON-RPC answer, as text.
fn error_of(message: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(message).ok()?;
    v.get("error").map(Value::to_string)
}

/// The `nextCursor` of a `tools/list` answer; an error, or an answer that
/// is not a tool listing, fails the walk.
fn next_cursor(message: &[u8]) -> Result<Option<String>, String> {
    let v: Value =
        serde_json::from_slice(message).map_err(|e| format!("tools/list: not JSON: {e}"))?;
    if let Some(e) = v.get("error") {
        return Err(format!("tools/list failed: {e}"));
    }
    let result = v.get("result").ok_or("tools/list: no result")?;
    if !result.get("tools").is_some_and(Value::is_array) {
        return Err("tools/list: no tools array".into());
    }
    match result.get("nextCursor") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(c)) => Ok(Some(c.clone())),
        Some(_) => Err("tools/list: nextCursor is not a string".into()),
    }
}
