//! The gateway: inside the private network. It serves the HTTP/2 streams the
//! relay sends down the tunnel, checks every message in both directions, and
//! reaches only the upstreams its configuration names.
//!
//! - [`outbound`]: checks on everything an upstream sends back.
//! - [`http`]: Streamable HTTP upstreams.
//! - [`stdio`]: stdio upstreams, one process per session.
//!
//! Every message passes the policy chain (`src/policy`): requests from the
//! agent before they are forwarded, and every reply — JSON bodies and each
//! SSE event — in [`outbound::check_reply`] before it enters the tunnel.

pub mod http;
pub mod outbound;
pub mod stdio;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ::http::{HeaderMap, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::audit::{DecisionRecord, Spool};
use crate::body::{Body, ReadError, full, read_limited};
use crate::mcp::era::{PROTOCOL_VERSION_HEADER, SESSION_HEADER};
use crate::mcp::{Era, Kind, McpError, Message, check_standard_headers, error_response};
use crate::policy::catalog::Catalog;
use crate::policy::verdict::{Direction, MessageContext, MessageKind};
use crate::policy::{Outcome, Policy, StepRecord};
use crate::principal::{PRINCIPAL_HEADER, Principal};
use crate::tunnel::connector::{self, PoolConfig, PoolStatus};
use crate::tunnel::dial::DialConfig;
use outbound::{OutboundLimits, ReplyContext, denial_body};

/// What one exchange was, for its metrics.
#[derive(Default)]
struct CallInfo {
    method: Option<String>,
    tool: Option<String>,
    error: Option<i32>,
    /// The message as known so far, until its decision is recorded: a
    /// refusal before the policy chain is recorded from this.
    unrecorded: Option<MessageContext>,
}

/// An upstream MCP server.
pub enum Upstream {
    Http(Box<http::HttpUpstream>),
    Stdio(stdio::StdioUpstream),
}

/// The gateway's upstreams, limits, policy and tool catalog.
pub struct Gateway {
    upstreams: HashMap<String, Upstream>,
    limits: OutboundLimits,
    policy: RwLock<Option<Arc<Policy>>>,
    catalog: Arc<Catalog>,
    audit: std::sync::OnceLock<Arc<Spool>>,
}

fn server_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let (server, tail) = rest.split_once('/')?;
    (tail == "mcp" && !server.is_empty()).then_some(server)
}

fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream") || v.contains("*/*"))
}

/// Logs what each plugin decided (the audit issue turns these into durable
/// records). Never logs message contents.
pub fn log_records(ctx: &MessageContext, records: &[StepRecord]) {
    for r in records {
        tracing::debug!(
            server = ctx.server,
            subject = ctx.principal.subject,
            method = ctx.method.as_deref().unwrap_or(""),
            plugin = r.plugin,
            decision = r.decision,
            elapsed_us = r.elapsed.as_micros() as u64,
            "policy step"
        );
    }
}

/// Counts one decision in the metrics and appends its record to `audit`
/// (with the message that left the chain, `forwarded`, when the policy
/// opted in). An error means strict mode could not persist it. Both
/// directions record through here.
pub async fn record_decision(
    audit: Option<&Spool>,
    policy: Option<&Policy>,
    ctx: &MessageContext,
    steps: &[StepRecord],
    outcome: &'static str,
    forwarded: Option<&[u8]>,
) -> Result<(), crate::audit::SpoolError> {
    crate::telemetry::metrics::record_decision(&ctx.server, ctx.direction, outcome, steps);
    let Some(spool) = audit else {
        return Ok(());
    };
    let mut record = DecisionRecord::new(ctx, steps, outcome, policy.map(|p| p.digest.as_str()));
    if let Some(m) = forwarded {
        record = record.with_payload(policy, m);
    }
    spool.append(&record).await
}

/// The response to a request the chain denied: a JSON-RPC error for a
/// request (HTTP 200, as for any JSON-RPC error), 403 for anything else.
fn denied_response(msg: &Message, d: &crate::policy::verdict::Denial) -> Response<Body> {
    let is_request = msg.kind == Kind::Request;
    let id = if is_request { msg.id.as_deref() } else { None };
    let mut resp = Response::new(full(denial_body(id, d)));
    if !is_request {
        *resp.status_mut() = StatusCode::FORBIDDEN;
    }
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        ::http::HeaderValue::from_static("application/json"),
    );
    resp
}

impl Gateway {
    /// A gateway serving `upstreams`, with no policy.
    pub fn new(upstreams: HashMap<String, Upstream>, limits: OutboundLimits) -> Arc<Gateway> {
        Arc::new(Gateway {
            upstreams,
            limits,
            policy: RwLock::new(None),
            catalog: Arc::new(Catalog::default()),
            audit: std::sync::OnceLock::new(),
        })
    }

    /// Names of the configured servers.
    pub fn server_names(&self) -> impl Iterator<Item = &str> {
        self.upstreams.keys().map(String::as_str)
    }

    /// The catalog plugins read tool definitions from.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.clone()
    }

    /// Swaps the policy in; calls in flight finish on the one they started
    /// with.
    pub fn set_policy(&self, policy: Option<Arc<Policy>>) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    /// The audit spool, when one is set.
    pub fn audit(&self) -> Option<Arc<Spool>> {
        self.audit.get().cloned()
    }

    /// Records every decision in `spool` from now on (set once).
    pub fn set_audit(&self, spool: Arc<Spool>) {
        let _ = self.audit.set(spool);
    }

    fn policy(&self) -> Option<Arc<Policy>> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Opens the tunnel connections and serves them until `shutdown`.
    pub fn connect(
        self: &Arc<Self>,
        dial: DialConfig,
        pool: PoolConfig,
        shutdown: CancellationToken,
    ) -> (PoolStatus, tokio::task::JoinHandle<()>) {
        let gw = self.clone();
        let tunnel: Arc<str> = Arc::from(dial.tunnel_id.as_str());
        connector::start(
            dial,
            pool,
            move |req| {
                let gw = gw.clone();
                let tunnel = tunnel.clone();
                async move { Ok(gw.handle(req, &tunnel).await) }
            },
            shutdown,
        )
    }

    /// Handles one stream from the relay; every error becomes a response.
    /// One span per exchange, a child of the relay's (whose context the
    /// tunnel request carries).
    pub async fn handle(&self, req: Request<Incoming>, tunnel: &str) -> Response<Body> {
        let span = crate::mcp_span!("portcullis::gateway", "server");
        crate::telemetry::span::adopt_parent(&span, req.headers(), None);
        if !span.is_disabled() {
            span.record("otel.name", req.method().as_str());
            span.set_attribute("network.transport", "tcp");
            span.set_attribute("portcullis.tunnel", tunnel.to_owned());
        }
        let started = std::time::Instant::now();
        let is_post = req.method() == Method::POST;
        let server = server_of(req.uri().path()).unwrap_or("").to_owned();
        let mut call = CallInfo::default();
        // Not entered yet: its name and parent are final only once dispatch
        // knows the method; dispatch runs the rest inside it.
        let result = self.dispatch(req, tunnel, &mut call, &span).await;
        let resp = match result {
            Ok(r) => r,
            Err((e, id)) => {
                tracing::info!(error = %e, "call refused at the gateway");
                call.error = Some(e.code());
                if let (Some(spool), Some(ctx)) = (self.audit.get(), call.unrecorded.take()) {
                    let mut record =
                        span.in_scope(|| DecisionRecord::new(&ctx, &[], "refused", None));
                    record.reason = Some(e.to_string());
                    // Already refused; the spool counts a record it loses.
                    let _ = spool.append(&record).await;
                }
                crate::telemetry::span::fail(&span, Some(e.code()), "");
                error_response(&e, id.as_deref())
            }
        };
        if is_post {
            crate::telemetry::metrics::record_operation(
                "gateway",
                started.elapsed(),
                Some(server),
                call.method,
                call.tool,
                call.error.map(|c| c.to_string()),
            );
        }
        resp
    }

    async fn dispatch(
        &self,
        req: Request<Incoming>,
        tunnel: &str,
        call: &mut CallInfo,
        span: &tracing::Span,
    ) -> Result<Response<Body>, (McpError, Option<String>)> {
        let (parts, body) = req.into_parts();
        let server = server_of(parts.uri.path())
            .ok_or_else(|| (McpError::NotFound("unknown path".into()), None))?
            .to_owned();
        let principal = parts
            .headers
            .get(PRINCIPAL_HEADER)
            .and_then(|v| Principal::from_header(v.as_bytes()))
            .ok_or((McpError::Unauthorized("no verified principal"), None))?;
        let upstream = self.upstreams.get(&server).ok_or_else(|| {
            (
                McpError::NotFound(format!("no server named '{server}' on this tunnel")),
                None,
            )
        })?;
        let session = parts
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let policy = self.policy();
        let mut base = MessageContext {
            direction: Direction::ToClient,
            tunnel: tunnel.to_owned(),
            server,
            kind: MessageKind::Notification,
            method: None,
            target: None,
            request_id: None,
            session_id: session.clone(),
            protocol_version: parts
                .headers
                .get(PROTOCOL_VERSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            principal,
        };
        let reply = |base: MessageContext| ReplyContext {
            policy: policy.clone(),
            catalog: self.catalog.clone(),
            base,
            limits: self.limits,
            audit: self.audit.get().cloned(),
            span: tracing::Span::current(),
        };
        match parts.method {
            Method::POST => {
                // Until parsed, all that is known is who sent it where.
                call.unrecorded = Some(MessageContext {
                    direction: Direction::ToServer,
                    kind: MessageKind::Request,
                    ..base.clone()
                });
                let bytes = read_limited(body, self.limits.max_message_bytes)
                    .await
                    .map_err(|e| match e {
                        ReadError::TooLarge { limit } => (McpError::TooLarge { limit }, None),
                        ReadError::Io(e) => (
                            McpError::InvalidRequest(format!("request body failed: {e}")),
                            None,
                        ),
                    })?;
                let reading = crate::policy::parse_options(
                    policy.as_deref(),
                    &base.server,
                    self.limits.max_depth,
                );
                let mut msg = Message::parse(bytes, reading).map_err(|e| {
                    let err = if e.code() == -32700 {
                        McpError::Parse(e.to_string())
                    } else {
                        McpError::InvalidRequest(e.to_string())
                    };
                    (err, None)
                })?;
                let id = msg.id.clone();
                let era = Era::of(&parts.headers, Some(&msg));
                if era == Era::Stateless && base.protocol_version.is_none() {
                    base.protocol_version = msg.meta_protocol_version.clone();
                }
                base.method = msg.method.clone();
                base.target = msg.name.clone();
                call.method = msg.method.clone();
                if msg.method.as_deref() == Some("tools/call") {
                    call.tool = msg.name.clone();
                }
                let mut ctx = base.clone();
                ctx.direction = Direction::ToServer;
                ctx.kind = msg.kind.into();
                ctx.request_id = msg.id.clone();
                call.unrecorded = Some(ctx.clone());
                crate::telemetry::span::describe(
                    span,
                    &crate::telemetry::span::Call {
                        method: msg.method.as_deref(),
                        target: msg.name.as_deref(),
                        request_id: msg.id.as_deref(),
                        session_id: session.as_deref(),
                        protocol_version: base.protocol_version.as_deref(),
                    },
                );
                if era == Era::Stateless {
                    check_standard_headers(&parts.headers, &msg).map_err(|e| (e, id.clone()))?;
                }
                let rest = async {
                    call.unrecorded = None; // recorded below, whatever the verdict
                    let (outcome, records) = match &policy {
                        Some(p) if p.wants(&ctx) => {
                            p.apply(&ctx, msg.raw.clone(), self.limits.max_depth).await
                        }
                        _ => (Outcome::Pass(msg.raw.clone()), Vec::new()),
                    };
                    log_records(&ctx, &records);
                    match outcome {
                        Outcome::Deny(d) => {
                            call.error = Some(d.code);
                            let span = tracing::Span::current();
                            crate::telemetry::span::fail(&span, Some(d.code), "");
                            span.set_attribute("portcullis.outcome", "denied");
                            // A denial is recorded; whether or not that worked,
                            // the call is not made.
                            let _ = record_decision(
                                self.audit.get().map(|a| &**a),
                                policy.as_deref(),
                                &ctx,
                                &records,
                                "denied",
                                None,
                            )
                            .await;
                            return Ok(denied_response(&msg, &d));
                        }
                        Outcome::Pass(b) => {
                            let label = if b == msg.raw {
                                "forwarded"
                            } else {
                                "rewritten"
                            };
                            if record_decision(
                                self.audit.get().map(|a| &**a),
                                policy.as_deref(),
                                &ctx,
                                &records,
                                label,
                                Some(&b),
                            )
                            .await
                            .is_err()
                            {
                                return Err((McpError::AuditUnavailable, id));
                            }
                            if b != msg.raw {
                                msg = Message::parse(b, reading).map_err(|e| {
                                    (McpError::InvalidRequest(e.to_string()), id.clone())
                                })?;
                            }
                        }
                    }
                    if msg.kind == Kind::Response || msg.kind == Kind::Error {
                        // The agent answering a server request: the reply that
                        // comes back (202) carries no message to check.
                        base.method = None;
                        base.target = None;
                    }
                    base.request_id = msg.id.clone();
                    match upstream {
                        Upstream::Http(u) => u
                            .call(
                                Method::POST,
                                &parts.headers,
                                Some(msg.raw.clone()),
                                reply(base),
                            )
                            .await
                            .map_err(|e| (e, id)),
                        Upstream::Stdio(u) => {
                            if era == Era::Stateless {
                                return Err((
                                McpError::InvalidRequest(
                                    "this server is a stdio server, which speaks only the session-based protocol (2025-11-25 and earlier)".into(),
                                ),
                                id,
                            ));
                            }
                            u.post(
                                session.as_deref(),
                                msg,
                                accepts_sse(&parts.headers),
                                reply(base),
                            )
                            .await
                            .map_err(|e| (e, id))
                        }
                    }
                };
                tracing::Instrument::instrument(rest, span.clone()).await
            }
            Method::GET | Method::DELETE => {
                let sent = async {
                    match upstream {
                        Upstream::Http(u) => {
                            u.call(parts.method.clone(), &parts.headers, None, reply(base))
                                .await
                        }
                        Upstream::Stdio(u) if parts.method == Method::GET => {
                            u.get(session.as_deref(), reply(base))
                        }
                        Upstream::Stdio(u) => u.delete(session.as_deref()),
                    }
                    .map_err(|e| (e, None))
                };
                tracing::Instrument::instrument(sent, span.clone()).await
            }
            _ => Err((McpError::MethodNotAllowed, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(server_of("/crm/mcp"), Some("crm"));
        assert_eq!(server_of("/crm/other"), None);
        assert_eq!(server_of("//mcp"), None);
    }
}
