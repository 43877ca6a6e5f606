//! One exchange from the relay, up to the upstream's response: the path,
//! principal and session checks, the checkpoint on the agent's message, and
//! forwarding it (POST) or opening and ending streams (GET, DELETE). Every
//! refusal on the way is a [`Refusal`], which [`Gateway::handle`] turns
//! into the response.

use ::http::{Method, Request, Response};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::inspect::{self, Checkpoint, Exchange, InspectError, Inspected, Verdict};
use super::outbound::ReplyContext;
use super::{Gateway, server_of};
use crate::body::{Body, read_limited};
use crate::mcp::era::{PROTOCOL_VERSION_HEADER, SESSION_HEADER};
use crate::mcp::{Direction, Kind, McpError, MessageContext, Outcome, error_response};
use crate::policy::catalog::Page;
use crate::policy::verdict::Denial;
use crate::principal::{PRINCIPAL_HEADER, Principal};

/// The resumption header; its value is a gateway-minted event id.
const LAST_EVENT_ID_HEADER: &str = "last-event-id";

/// What one exchange was, for its metrics.
#[derive(Default)]
pub(super) struct CallInfo {
    pub method: Option<String>,
    pub tool: Option<String>,
    pub error: Option<i32>,
    /// The message as known so far, until its decision is recorded: a
    /// refusal before the policy chain is recorded from this.
    pub unrecorded: Option<MessageContext>,
}

/// Why an exchange was answered by the gateway instead of the upstream:
/// the error (a policy denial included) and the id of the request it
/// answers, when known.
#[derive(Debug)]
pub(super) struct Refusal {
    pub error: McpError,
    pub id: Option<String>,
}

impl From<McpError> for Refusal {
    fn from(error: McpError) -> Refusal {
        Refusal { error, id: None }
    }
}

impl From<crate::session::SessionRefused> for Refusal {
    fn from(e: crate::session::SessionRefused) -> Refusal {
        McpError::from(e).into()
    }
}

impl From<InspectError> for Refusal {
    /// A message the checkpoint refused answers its own id; one whose
    /// decision could not be recorded (strict audit) was not made.
    fn from(e: InspectError) -> Refusal {
        match e {
            InspectError::Invalid { error, id } => Refusal { error, id },
            InspectError::Unrecorded { .. } => McpError::AuditUnavailable.into(),
        }
    }
}

impl Refusal {
    /// The chain denied a message of `kind`: a request gets the denial as
    /// its JSON-RPC error, anything else a 403 answering no id.
    pub fn denied(d: &Denial, kind: Kind, id: Option<String>) -> Refusal {
        let request = kind == Kind::Request;
        Refusal {
            error: super::outbound::denial(d, request),
            id: id.filter(|_| request),
        }
    }
}

impl Gateway {
    /// Checks and forwards one exchange; `call` learns what it was.
    pub(super) async fn dispatch<B>(
        &self,
        req: Request<B>,
        tunnel: &str,
        call: &mut CallInfo,
        span: &tracing::Span,
    ) -> Result<Response<Body>, Refusal>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: Into<crate::body::BoxError>,
    {
        let (parts, body) = req.into_parts();
        let server = server_of(parts.uri.path())
            .ok_or_else(|| McpError::NotFound("unknown path".into()))?
            .to_owned();
        let principal = parts
            .headers
            .get(PRINCIPAL_HEADER)
            .and_then(|v| Principal::from_header(v.as_bytes()))
            .ok_or(McpError::Unauthorized("no verified principal"))?;
        let upstream = self.upstreams.get(&server).ok_or_else(|| {
            McpError::NotFound(format!("no server named '{server}' on this tunnel"))
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
            return Err(refused.into());
        }
        let reply = |base: MessageContext| ReplyContext {
            policy: policy.clone(),
            catalog: self.catalog.clone(),
            tasks: self.tasks.clone(),
            event_ids: self.event_ids.clone(),
            base,
            page: Page::First,
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
                    .map_err(McpError::from)?;
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
                let parsed = parsed?;
                if parsed.ctx().method.as_deref() == Some("tools/call")
                    && (policy
                        .as_deref()
                        .is_some_and(|p| p.reads_definitions(parsed.ctx()))
                        || crate::mcp::params::any(&parts.headers))
                {
                    // The call is decided against the server's definition of
                    // the tool (plugins, the mirrored parameters): a gateway
                    // that has not seen the whole listing fetches it first
                    // (`listing.rs`).
                    self.ensure_listing(&base.server, upstream, &base.principal)
                        .await;
                }
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
                let decided = tracing::Instrument::instrument(
                    Box::pin(checkpoint.decide(parsed)),
                    span.clone(),
                )
                .await;
                let Inspected {
                    ctx,
                    verdict,
                    rewritten,
                } = decided?;
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
                        span.set_attribute("portcullis.outcome", Outcome::Denied.as_str());
                        return Err(Refusal::denied(&d, ctx.kind, id));
                    }
                    Verdict::Dropped => {
                        // Not an error of the call's: answered, not counted.
                        let dropped = Denial {
                            code: -32600,
                            public_message: "Invalid request".into(),
                            private_reason: "dropped at the checkpoint".into(),
                        };
                        let r = Refusal::denied(&dropped, ctx.kind, id);
                        return Ok(error_response(&r.error, r.id.as_deref()));
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
                let page = listing_page(&msg);
                // Boxed: wrapping and instrumenting it below then moves a
                // pointer, not the upstream call's whole state machine.
                let sent = Box::pin(upstream.post(
                    &forwarded_headers,
                    msg,
                    ReplyContext {
                        page,
                        ..reply(base)
                    },
                ));
                let sent = async { sent.await.map_err(|e| Refusal { error: e, id }) };
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
                        .ok_or_else(|| {
                            McpError::InvalidRequest(
                                "Last-Event-ID names no event of this session".into(),
                            )
                        })?;
                    let upstream_id = ::http::HeaderValue::from_str(&opened.upstream)
                        .map_err(|_| McpError::InvalidRequest("bad Last-Event-ID".into()))?;
                    headers.insert(LAST_EVENT_ID_HEADER, upstream_id);
                    base.request_id = opened.request;
                    base.method = opened.method;
                    base.target = opened.target;
                }
                let sent = Box::pin(async {
                    let reply = reply(base);
                    let sent = if parts.method == Method::GET {
                        upstream.get(&headers, reply).await
                    } else {
                        upstream.delete(&headers, reply).await
                    };
                    Ok(sent?)
                });
                tracing::Instrument::instrument(sent, span.clone()).await
            }
            _ => Err(McpError::MethodNotAllowed.into()),
        }
    }
}

/// Which page of a tool listing the answer to `msg` is: a later one when
/// it is `tools/list` with a cursor.
fn listing_page(msg: &crate::mcp::Message) -> Page {
    if msg.kind != Kind::Request || msg.method_str() != "tools/list" {
        return Page::First;
    }
    let cursor = serde_json::from_slice::<serde_json::Value>(&msg.raw)
        .ok()
        .and_then(|v| v.pointer("/params/cursor").map(|c| !c.is_null()));
    if cursor == Some(true) {
        Page::Later
    } else {
        Page::First
    }
}
