//! Stateless (2026-07-28) stdio processes: one per principal, opened with
//! a `server/discover` probe that tells whether the server serves the
//! stateless era, speaks it at other versions, or speaks only the
//! session-based protocol (then remembered, and refused with `-32022`).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::process::{STREAM_BUFFER, Session};
use super::router::Pending;
use super::{Sessions, StdioUpstream};
use crate::limits;
use crate::mcp::McpError;
use crate::mcp::era::STATELESS_SINCE;

/// Which protocol family a stdio server speaks, once a probe has shown it
/// cannot serve 2026-07-28.
#[derive(Debug, Clone)]
pub(super) struct LegacyOnly {
    /// The version it negotiated when the gateway initialized it.
    supported: Vec<String>,
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

impl StdioUpstream {
    /// The stateless process serving `subject`, started and probed when
    /// there is none. A server that cannot serve `requested` is an
    /// [`McpError::UnsupportedProtocolVersion`] naming what it can.
    pub(super) async fn stateless_session(
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
        // One probe at a time per process: its ids are never in flight.
        session
            .router()
            .register(Pending {
                id: id.to_owned(),
                restore: None,
                sse: false,
                tx,
            })
            .ok()?;
        let line = Bytes::from(serde_json::to_vec(request).ok()?);
        session.stdin.send(line).await.ok()?;
        let answer = tokio::time::timeout(limits::STDIO_PROBE_TIMEOUT, rx.recv()).await;
        session.router().forget(id);
        serde_json::from_slice(&answer.ok()??).ok()
    }
}
