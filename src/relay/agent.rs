//! The agent endpoint: `/t/{tunnel}/{server}/mcp`.
//!
//! Order of checks: route, `Host`, `Origin`, credential, tunnel scope, size,
//! session owner; then one h2 stream down a live tunnel connection, streamed
//! both ways. The agent's `Authorization` never goes further: only
//! allow-listed headers are forwarded, plus the verified principal.

use http::{HeaderMap, HeaderName, Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;

use super::Relay;
use super::auth::bearer;
use crate::audit::DecisionRecord;
use crate::body::{Body, Holding, boxed, full, read_limited};
use crate::limits;
use crate::mcp::era::is_forwarded_request_header;
use crate::mcp::{Direction, Kind, McpError, MessageContext, Outcome, error_response};
use crate::principal::{PRINCIPAL_HEADER, Principal};
use crate::session::{Presented, Unknown};
use crate::tunnel::TUNNEL_AUTHORITY;
use crate::tunnel::registry::Refused;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// A parsed agent path.
struct Route<'a> {
    tunnel: &'a str,
    server: &'a str,
}

fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/t/")?;
    let mut parts = rest.split('/');
    let tunnel = parts.next()?;
    let server = parts.next()?;
    if parts.next()? != "mcp" || parts.next().is_some() || tunnel.is_empty() || server.is_empty() {
        return None;
    }
    Some(Route { tunnel, server })
}

/// The host name (no port) the request was sent to.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))?;
    let auth: http::uri::Authority = raw.parse().ok()?;
    Some(
        auth.host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
    )
}

/// True when `origin` (`scheme://host[:port]`) names exactly the authority
/// the request was sent to.
fn is_same_origin(origin: &str, req: &Request<Incoming>) -> bool {
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    host.is_some_and(|h| h.eq_ignore_ascii_case(authority))
}

fn forwarded_headers(from: &HeaderMap, principal: &Principal) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(from.len() + 1);
    for (name, value) in from {
        // Content-Length too: it saves chunked framing on the way down.
        if is_forwarded_request_header(name.as_str()) || name == header::CONTENT_LENGTH {
            out.append(name.clone(), value.clone());
        }
    }
    if let Ok(v) = principal.to_header().parse() {
        out.insert(HeaderName::from_static(PRINCIPAL_HEADER), v);
    }
    out
}

/// What the relay learned of one agent request, for its audit record.
#[derive(Default)]
struct AgentCall {
    /// Tunnel and server, once the path named an MCP endpoint.
    route: Option<(String, String)>,
    /// The verified agent, once authenticated.
    principal: Option<Principal>,
    session: Option<String>,
    protocol_version: Option<String>,
    /// Method, target and id, once the body was read.
    peek: crate::telemetry::span::Peek,
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl AgentCall {
    /// The audit record of this request, when it addressed an MCP endpoint
    /// (requests for other paths are not MCP traffic and not recorded), in
    /// the trace of `span`.
    fn record(
        &self,
        outcome: Outcome,
        reason: Option<String>,
        span: &tracing::Span,
    ) -> Option<DecisionRecord> {
        let (tunnel, server) = self.route.clone()?;
        // The relay does not validate messages (the gateway does): one it
        // could not read counts as a request.
        let kind = match (&self.peek.method, &self.peek.id) {
            (Some(_), None) => Kind::Notification,
            (None, Some(_)) => Kind::Response,
            _ => Kind::Request,
        };
        let ctx = MessageContext {
            direction: Direction::ToServer,
            tunnel,
            server,
            kind,
            method: self.peek.method.clone(),
            target: self.peek.target.clone(),
            related_tool: None,
            request_id: self.peek.id.clone(),
            session_id: self.session.clone(),
            protocol_version: self.protocol_version.clone(),
            principal: self.principal.clone().unwrap_or_else(|| Principal {
                subject: UNAUTHENTICATED.into(),
                groups: Vec::new(),
            }),
        };
        let trace = crate::telemetry::span::ids(span);
        let mut record = DecisionRecord::new(&ctx, Vec::new(), outcome, None, trace);
        record.reason = reason;
        Some(record)
    }
}

/// The subject recorded for a request whose credential was missing or wrong.
pub const UNAUTHENTICATED: &str = "(unauthenticated)";

impl Relay {
    /// Handles one agent request; never fails, every error is a response.
    /// One span per agent request (the root of the gateway's and the
    /// upstream's, and a child of the agent's own when it sent one).
    pub async fn handle_agent(&self, req: Request<Incoming>) -> Response<Body> {
        let span = crate::mcp_span!("portcullis::relay", "server");
        if !span.is_disabled() {
            span.set_attribute("network.transport", "tcp");
            span.set_attribute("network.protocol.name", "http");
            if let Some(host) = request_host(&req) {
                span.set_attribute("server.address", host);
            }
        }
        let started = std::time::Instant::now();
        let is_post = req.method() == http::Method::POST;
        let mut call = AgentCall::default();
        // Entered only once forward has named it and set its parent.
        let result = self.forward(req, &mut call, &span).await;
        let (resp, error) = match result {
            Ok(resp) => {
                let status = resp.status();
                let error = (!status.is_success()).then(|| status.as_u16().to_string());
                if let Some(e) = &error {
                    crate::telemetry::span::fail(&span, None, e);
                }
                (resp, error)
            }
            Err(e) => {
                tracing::info!(error = %e, "agent request refused");
                crate::telemetry::span::fail(&span, Some(e.code()), "");
                if let Some(spool) = self.audit.get()
                    && let Some(record) = call.record(Outcome::Refused, Some(e.to_string()), &span)
                {
                    // Already refused: a record that cannot be written
                    // changes nothing for the caller (the spool counts it).
                    let _ = spool.append(&record).await;
                }
                let code = e.code().to_string();
                (error_response(&e, None), Some(code))
            }
        };
        if is_post {
            crate::telemetry::metrics::record_operation(
                "relay",
                started.elapsed(),
                None,
                call.peek.method,
                None,
                error,
            );
        }
        resp
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        call: &mut AgentCall,
        span: &tracing::Span,
    ) -> Result<Response<Body>, McpError> {
        let s = &self.settings;
        if req.uri().path() == "/healthz" {
            return Ok(Response::new(full("ok\n")));
        }
        let path = req.uri().path().to_owned();
        let Some(Route { tunnel, server }) = route(&path) else {
            return Err(McpError::NotFound(
                "no MCP endpoint here; agent URLs look like /t/{tunnel}/{server}/mcp".into(),
            ));
        };
        call.route = Some((tunnel.to_owned(), server.to_owned()));
        call.session = header_text(req.headers(), crate::mcp::era::SESSION_HEADER);
        call.protocol_version =
            header_text(req.headers(), crate::mcp::era::PROTOCOL_VERSION_HEADER);
        // DNS rebinding defence: the Host must be one of ours (when the
        // list is set), and a browser Origin must be allow-listed or the
        // very origin of that checked Host.
        let mut host_checked = false;
        if let Some(hosts) = &s.allowed_hosts {
            let host = request_host(&req).unwrap_or_default();
            if !hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
                return Err(McpError::Forbidden(format!("Host '{host}' is not allowed")));
            }
            host_checked = true;
        }
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let same_origin = host_checked && is_same_origin(origin, &req);
            if !same_origin && !s.allowed_origins.iter().any(|o| o == origin) {
                return Err(McpError::Forbidden(format!(
                    "Origin '{origin}' is not allowed"
                )));
            }
        }
        let principal = if s.insecure_no_auth {
            Principal::anonymous()
        } else {
            let token = bearer(req.headers().get(header::AUTHORIZATION))
                .ok_or(McpError::Unauthorized("missing bearer token"))?;
            let grant = s
                .agents
                .verify(token)
                .ok_or(McpError::Unauthorized("invalid API key"))?;
            call.principal = Some(grant.principal.clone());
            if !grant.tunnels.allows(tunnel) {
                return Err(McpError::Forbidden(format!(
                    "this key may not use tunnel '{tunnel}'"
                )));
            }
            grant.principal.clone()
        };
        call.principal = Some(principal.clone());
        let too_large = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > s.max_message_bytes as u64);
        if too_large {
            return Err(McpError::TooLarge {
                limit: s.max_message_bytes,
            });
        }
        // Offline is told at once, before the body is read.
        if !self.registry.is_online(tunnel) {
            return Err(McpError::TunnelOffline(tunnel.to_owned()));
        }

        let path_and_query = match req.uri().query() {
            Some(q) => format!("/{server}/mcp?{q}"),
            None => format!("/{server}/mcp"),
        };
        let uri = Uri::builder()
            .scheme("http")
            .authority(TUNNEL_AUTHORITY)
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| McpError::InvalidRequest("invalid path".into()))?;
        let (parts, body) = req.into_parts();
        // An MCP request body is one JSON-RPC message, bounded by the
        // message limit: read it here, so an oversized one is refused before
        // it uses the tunnel, and h2 sends it without a body-pipe task.
        let body = read_limited(body, s.max_message_bytes).await?;
        // What the message is, for the span and the audit record; the
        // gateway parses it fully, so this reads only when someone asks.
        if !span.is_disabled() || self.audit.get().is_some() {
            call.peek = crate::telemetry::span::peek(&body);
        }
        if !span.is_disabled() {
            crate::telemetry::span::adopt_parent(span, &parts.headers, Some(&body));
            crate::telemetry::span::describe(
                span,
                &crate::telemetry::span::Call {
                    method: call.peek.method.as_deref(),
                    target: call.peek.target.as_deref(),
                    request_id: call.peek.id.as_deref(),
                    session_id: call.session.as_deref(),
                    protocol_version: call.protocol_version.as_deref(),
                },
            );
            span.set_attribute("portcullis.tunnel", tunnel.to_owned());
            span.set_attribute("portcullis.server", server.to_owned());
        }
        // A stream of the tunnel, held until the response ends; when all are
        // in use the call waits, within bounds, and is refused beyond them.
        let lease = self
            .registry
            .lease(tunnel, body.len(), s.queue)
            .await
            .map_err(|r| match r {
                Refused::Offline => McpError::TunnelOffline(tunnel.to_owned()),
                Refused::Overloaded => McpError::Overloaded {
                    tunnel: tunnel.to_owned(),
                    retry_after_secs: limits::OVERLOAD_RETRY_AFTER_SECS,
                },
            })?;
        let mut sender = lease.sender.clone();
        // A session belongs to the agent that opened it. An id this relay
        // has not bound goes on: the gateway, which sees every relay's
        // traffic, refuses it unless it is this agent's.
        let presented = Presented {
            scope: tunnel,
            server,
            session: call.session.as_deref(),
            who: &principal,
        };
        self.sessions.check(&presented, Unknown::Pass)?;
        // Recorded before it goes down the tunnel: in strict mode a request
        // whose record cannot be made durable is not forwarded.
        if let Some(spool) = self.audit.get()
            && let Some(record) = call.record(Outcome::Forwarded, None, span)
        {
            spool
                .append(&record)
                .await
                .map_err(|_| McpError::AuditUnavailable)?;
        }
        let method = parts.method.clone();
        let mut down = Request::new(full(body));
        *down.method_mut() = parts.method;
        *down.uri_mut() = uri;
        *down.headers_mut() = forwarded_headers(&parts.headers, &principal);
        crate::telemetry::span::inject(span, down.headers_mut());

        let tunnel = tunnel.to_owned();
        // The relay's own deadline: a gateway that froze or was cut off
        // gets the agent a clean 504, not the agent's own timeout.
        let deadline = s.call_deadline;
        let sent = tokio::time::timeout(deadline, sender.send_request(down));
        let resp = tracing::Instrument::instrument(sent, span.clone())
            .await
            .map_err(|_| {
                tracing::warn!(
                    tunnel,
                    "the gateway did not answer within the call deadline"
                );
                McpError::GatewayTimeout(deadline.as_millis())
            })?
            .map_err(|e| {
                tracing::warn!(tunnel, error = %e, "tunnel stream failed");
                McpError::UpstreamUnavailable(format!("the tunnel '{tunnel}' dropped the call"))
            })?;
        let (mut parts, body) = resp.into_parts();
        // h2 forbids connection-specific headers, so there is nothing
        // hop-by-hop to strip; the gateway chose what to expose. A
        // Content-Length it sent lets the agent side skip chunked framing.
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(McpError::UpstreamUnavailable("unexpected upgrade".into()));
        }
        self.sessions
            .learn(&presented, &method, parts.status, &mut parts.headers);
        Ok(Response::from_parts(
            parts,
            boxed(Holding::new(body, lease)),
        ))
    }
}

#[cfg(test)]
mod tests;
