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

pub mod event_id;
pub mod http;
pub mod inspect;
pub mod outbound;
pub mod stdio;
pub mod tasks;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ::http::{HeaderMap, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::audit::{DecisionRecord, Spool, StepEntry};
use crate::body::{Body, ReadError, full, read_limited};
use crate::mcp::era::{PROTOCOL_VERSION_HEADER, SESSION_HEADER};
use crate::mcp::{Direction, Era, Kind, McpError, MessageContext, Outcome, error_response};
use crate::policy::catalog::Catalog;
use crate::policy::{Policy, StepRecord};
use crate::principal::{PRINCIPAL_HEADER, Principal};
use crate::tunnel::connector::{self, PoolConfig, PoolStatus};
use crate::tunnel::dial::DialConfig;
use inspect::{Checkpoint, Exchange, InspectError, Inspected, Verdict};
use outbound::{OutboundLimits, ReplyContext, denial_body};

/// The resumption header; its value is a gateway-minted event id.
const LAST_EVENT_ID_HEADER: &str = "last-event-id";

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
    Stdio(Box<stdio::StdioUpstream>),
}

impl Upstream {
    /// Which principal opened each of its sessions (`src/session.rs`).
    pub fn sessions(&self) -> &crate::session::SessionTable {
        match self {
            Upstream::Http(u) => u.sessions(),
            Upstream::Stdio(u) => u.sessions(),
        }
    }
}

/// The gateway's upstreams, limits, policy and tool catalog.
pub struct Gateway {
    upstreams: HashMap<String, Upstream>,
    limits: OutboundLimits,
    policy: RwLock<Option<Arc<Policy>>>,
    catalog: Arc<Catalog>,
    tasks: Arc<tasks::Tasks>,
    event_ids: Arc<event_id::EventIds>,
    audit: std::sync::OnceLock<Arc<Spool>>,
}

impl crate::policy::reload::Serving for Gateway {
    fn catalog(&self) -> Arc<Catalog> {
        Gateway::catalog(self)
    }

    fn set_policy(&self, policy: Option<Arc<Policy>>) {
        Gateway::set_policy(self, policy);
    }
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
            decision = r.decision.as_str(),
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
    outcome: Outcome,
    forwarded: Option<&[u8]>,
) -> Result<(), crate::audit::SpoolError> {
    crate::policy::chain::observe::count_decision(&ctx.server, ctx.direction, outcome, steps);
    let Some(spool) = audit else {
        return Ok(());
    };
    let mut record = DecisionRecord::new(
        ctx,
        steps.iter().map(StepEntry::from).collect(),
        outcome,
        policy.map(|p| p.digest.as_str()),
        crate::telemetry::span::ids(&tracing::Span::current()),
    );
    if let Some(m) = forwarded.filter(|_| policy.is_some_and(|p| p.records_payload(&ctx.server))) {
        record = record.with_payload(m);
    }
    spool.append(&record).await
}

/// The response to a message the chain denied: a JSON-RPC error for a
/// request (HTTP 200, as for any JSON-RPC error), 403 for anything else.
fn denied_response(
    kind: Kind,
    id: Option<&str>,
    d: &crate::policy::verdict::Denial,
) -> Response<Body> {
    let is_request = kind == Kind::Request;
    let id = if is_request { id } else { None };
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
        // Without system randomness nothing here is safe to run.
        #[allow(clippy::expect_used)]
        let event_ids = event_id::EventIds::new().expect("the system's random number generator");
        Arc::new(Gateway {
            upstreams,
            limits,
            policy: RwLock::new(None),
            catalog: Arc::new(Catalog::default()),
            tasks: Arc::default(),
            event_ids: Arc::new(event_ids),
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
                    let trace = crate::telemetry::span::ids(&span);
                    let mut record =
                        DecisionRecord::new(&ctx, Vec::new(), Outcome::Refused, None, trace);
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
            kind: Kind::Notification,
            method: None,
            target: None,
            related_tool: None,
            request_id: None,
            session_id: session.clone(),
            protocol_version: parts
                .headers
                .get(PROTOCOL_VERSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            principal,
        };
        // Sessions belong to their principal: another's id, or one never
        // bound here, is a session that does not exist (fail closed).
        let presented = crate::session::Presented {
            scope: &base.server,
            server: &base.server,
            session: session.as_deref(),
            who: &base.principal,
        };
        let admitted = upstream
            .sessions()
            .check(&presented, crate::session::Unknown::Refuse);
        if let Err(refused) = admitted {
            call.unrecorded = Some(MessageContext {
                direction: Direction::ToServer,
                kind: Kind::Request,
                ..base
            });
            return Err((refused.into(), None));
        }
        let reply = |base: MessageContext| ReplyContext {
            policy: policy.clone(),
            catalog: self.catalog.clone(),
            tasks: self.tasks.clone(),
            event_ids: self.event_ids.clone(),
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
                    kind: Kind::Request,
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
                // The checkpoint records from here on, whatever happens.
                call.unrecorded = None;
                let checkpoint = Checkpoint {
                    policy: policy.as_deref(),
                    catalog: &self.catalog,
                    tasks: &self.tasks,
                    audit: self.audit.get().map(|a| &**a),
                    limits: self.limits,
                };
                let inbound = MessageContext {
                    direction: Direction::ToServer,
                    ..base.clone()
                };
                let parsed = checkpoint
                    .parse(
                        &inbound,
                        bytes,
                        Exchange::Agent {
                            headers: &parts.headers,
                        },
                        span,
                    )
                    .await;
                let refused = |e: InspectError, call: &mut CallInfo| match e {
                    InspectError::Invalid { error, id } => {
                        call.error = Some(error.code());
                        crate::telemetry::span::fail(span, Some(error.code()), "");
                        (error, id)
                    }
                    InspectError::Unrecorded { .. } => (McpError::AuditUnavailable, None),
                };
                let parsed = parsed.map_err(|e| refused(e, call))?;
                {
                    let ctx = parsed.ctx();
                    call.method = ctx.method.clone();
                    if ctx.method.as_deref() == Some("tools/call") {
                        call.tool = ctx.target.clone();
                    }
                    // Named before the span is entered: its name and parent
                    // are final from then on.
                    crate::telemetry::span::describe(
                        span,
                        &crate::telemetry::span::Call {
                            method: ctx.method.as_deref(),
                            target: ctx.target.as_deref(),
                            request_id: ctx.request_id.as_deref(),
                            session_id: session.as_deref(),
                            protocol_version: ctx.protocol_version.as_deref(),
                        },
                    );
                }
                let decided =
                    tracing::Instrument::instrument(checkpoint.decide(parsed), span.clone()).await;
                let Inspected {
                    ctx,
                    verdict,
                    rewritten,
                } = decided.map_err(|e| refused(e, call))?;
                let id = ctx.request_id.clone();
                let mut forwarded_headers = parts.headers.clone();
                let msg = match verdict {
                    Verdict::Forward(m) => {
                        if rewritten
                            && ctx.method.as_deref() == Some("tools/call")
                            && crate::mcp::params::any(&forwarded_headers)
                        {
                            // The chain may have rewritten the arguments:
                            // the mirrored headers follow the body sent.
                            let tool = ctx.target.as_deref().unwrap_or("");
                            let mapping = self
                                .catalog
                                .tool(&ctx.server, tool)
                                .map(|d| crate::mcp::params::mirrored(&d))
                                .unwrap_or_default();
                            let args = inspect::arguments(&m.raw);
                            crate::mcp::params::recompute(
                                &mut forwarded_headers,
                                args.as_ref(),
                                &mapping,
                            );
                        }
                        m
                    }
                    Verdict::Denied(d) => {
                        call.error = Some(d.code);
                        crate::telemetry::span::fail(span, Some(d.code), "");
                        span.set_attribute("portcullis.outcome", Outcome::Denied.as_str());
                        return Ok(denied_response(ctx.kind, id.as_deref(), &d));
                    }
                    Verdict::Dropped => {
                        return Ok(denied_response(
                            ctx.kind,
                            id.as_deref(),
                            &crate::policy::verdict::Denial {
                                code: -32600,
                                public_message: "Invalid request".into(),
                                private_reason: "dropped at the checkpoint".into(),
                            },
                        ));
                    }
                };
                // What the upstream's reply answers: this request (the agent
                // answering a server request gets a 202 with no message).
                base.method = ctx.method.clone();
                base.target = ctx.target.clone();
                base.protocol_version = ctx.protocol_version.clone();
                base.request_id = (msg.kind == Kind::Request)
                    .then(|| msg.id.clone())
                    .flatten();
                // The version the checkpoint settled on (the header's, or the
                // body's when there was none), read by the same rule.
                let era = Era::of_version(ctx.protocol_version.as_deref());
                let sent = async {
                    match upstream {
                        Upstream::Http(u) => {
                            u.call(
                                Method::POST,
                                &forwarded_headers,
                                Some(msg.raw.clone()),
                                reply(base),
                            )
                            .await
                        }
                        Upstream::Stdio(u) if era == Era::Stateless => {
                            let requested = base
                                .protocol_version
                                .clone()
                                .unwrap_or_else(|| crate::mcp::era::STATELESS_SINCE.to_owned());
                            let subject = base.principal.subject.clone();
                            u.post_stateless(
                                &subject,
                                &requested,
                                msg,
                                accepts_sse(&parts.headers),
                                reply(base),
                            )
                            .await
                        }
                        Upstream::Stdio(u) => {
                            u.post(
                                session.as_deref(),
                                msg,
                                accepts_sse(&parts.headers),
                                reply(base),
                            )
                            .await
                        }
                    }
                    .map_err(|e| (e, id))
                };
                tracing::Instrument::instrument(sent, span.clone()).await
            }
            Method::GET | Method::DELETE => {
                let mut headers = parts.headers.clone();
                if let Some(minted) = headers.remove(LAST_EVENT_ID_HEADER) {
                    // Resumption: the upstream gets its own id back, and the
                    // resumed stream may answer the request it came from.
                    let scope = crate::gateway::event_id::Scope {
                        server: &base.server,
                        session: session.as_deref(),
                        subject: &base.principal.subject,
                    };
                    let opened = minted
                        .to_str()
                        .ok()
                        .and_then(|m| self.event_ids.open(&scope, m))
                        .ok_or((
                            McpError::InvalidRequest(
                                "Last-Event-ID names no event of this session".into(),
                            ),
                            None,
                        ))?;
                    let upstream_id =
                        ::http::HeaderValue::from_str(&opened.upstream).map_err(|_| {
                            (McpError::InvalidRequest("bad Last-Event-ID".into()), None)
                        })?;
                    headers.insert(LAST_EVENT_ID_HEADER, upstream_id);
                    base.request_id = opened.request;
                    base.method = opened.method;
                    base.target = opened.target;
                }
                let sent = async {
                    match upstream {
                        Upstream::Http(u) => {
                            u.call(parts.method.clone(), &headers, None, reply(base))
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
