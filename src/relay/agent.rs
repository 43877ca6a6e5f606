//! The agent endpoint: `/t/{tunnel}/{server}/mcp`.
//!
//! Order of checks: route, `Host`, `Origin`, credential (an API key, or on
//! a tunnel that takes them an OAuth access token), tunnel scope, size,
//! session owner; then one h2 stream down a live tunnel connection, streamed
//! both ways. The agent's `Authorization` never goes further: only
//! allow-listed headers are forwarded, plus the verified principal.
//!
//! Beside each endpoint, for tunnels that take OAuth, its RFC 9728
//! protected-resource metadata at
//! `/.well-known/oauth-protected-resource/t/{tunnel}/{server}/mcp`.

use http::{HeaderMap, HeaderName, Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;

use super::Relay;
use super::auth::bearer;
use super::oauth::{self, OAuthError, Resource};
use crate::audit::DecisionRecord;
use crate::body::{Body, Gathered, Holding, Resumed, boxed, full, gather, read_limited};
use crate::limits;
use crate::mcp::era::is_forwarded_request_header;
use crate::mcp::{Direction, Kind, McpError, MessageContext, Outcome, error_response};
use crate::principal::{PRINCIPAL_HEADER, Principal};
use crate::session::owner::Owner;
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
            principal: self
                .principal
                .clone()
                .unwrap_or_else(|| Principal::named(UNAUTHENTICATED, Vec::new())),
        };
        let trace = crate::telemetry::span::ids(span);
        let mut record = DecisionRecord::new(&ctx, Vec::new(), outcome, None, trace);
        record.reason = reason;
        Some(record)
    }
}

impl Relay {
    /// The `Host` check (when hosts are configured); true when it ran.
    fn check_host(&self, req: &Request<Incoming>) -> Result<bool, McpError> {
        let Some(hosts) = &self.settings.allowed_hosts else {
            return Ok(false);
        };
        let host = request_host(req).unwrap_or_default();
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
            return Err(McpError::Forbidden(format!("Host '{host}' is not allowed")));
        }
        Ok(true)
    }

    /// The endpoint URLs tokens are bound to, from the configured public
    /// URL. Never from the request's `Host`: an agent could then choose the
    /// audience its token is checked against.
    fn resource(&self, tunnel: &str, server: &str) -> Result<Resource, McpError> {
        let base = self.settings.public_url.as_deref().ok_or_else(|| {
            tracing::error!(
                tunnel,
                "a tunnel takes OAuth but the relay has no public URL"
            );
            McpError::Forbidden("OAuth is misconfigured on this relay".into())
        })?;
        Ok(Resource::new(base, tunnel, server))
    }

    /// The agent's credential: an OAuth access token on a tunnel that takes
    /// them (a JWT, or anything once the tunnel takes no API keys), else an
    /// API key. Records the principal in `call` as soon as it is known.
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        tunnel: &str,
        server: &str,
        call: &mut AgentCall,
    ) -> Result<Principal, McpError> {
        let token = bearer(headers.get(header::AUTHORIZATION));
        let Some(policy) = self.settings.oauth.get(tunnel) else {
            let token = token.ok_or(McpError::Unauthorized("missing bearer token"))?;
            return self.api_key(token, tunnel, call);
        };
        let resource = self.resource(tunnel, server)?;
        let refuse = |e: OAuthError| policy.refusal(&resource, &e);
        let token = token.ok_or_else(|| refuse(OAuthError::Missing))?;
        if policy.api_keys && !oauth::looks_like_jwt(token) {
            return match self.api_key(token, tunnel, call) {
                Err(McpError::Unauthorized(_)) => {
                    Err(refuse(OAuthError::InvalidToken("invalid API key or token")))
                }
                other => other,
            };
        }
        // Boxed: a token check may fetch the issuer's keys, a large state
        // machine that would otherwise sit inline in every call's future,
        // API-key calls included.
        let principal = Box::pin(policy.authenticate(token, &resource))
            .await
            .map_err(refuse)?;
        call.principal = Some(principal.clone());
        Ok(principal)
    }

    fn api_key(
        &self,
        token: &str,
        tunnel: &str,
        call: &mut AgentCall,
    ) -> Result<Principal, McpError> {
        let grant = self
            .settings
            .agents
            .verify(token)
            .ok_or(McpError::Unauthorized("invalid API key"))?;
        call.principal = Some(grant.principal.clone());
        if !grant.tunnels.allows(tunnel) {
            return Err(McpError::Forbidden(format!(
                "this key may not use tunnel '{tunnel}'"
            )));
        }
        Ok(grant.principal.clone())
    }

    /// RFC 9728 metadata for the endpoint at `endpoint` (the path after the
    /// well-known prefix), for tunnels that take OAuth.
    fn resource_metadata(
        &self,
        req: &Request<Incoming>,
        endpoint: &str,
    ) -> Result<Response<Body>, McpError> {
        self.check_host(req)?;
        let not_found = || McpError::NotFound("no protected resource here".into());
        let Route { tunnel, server } = route(endpoint).ok_or_else(not_found)?;
        let policy = self.settings.oauth.get(tunnel).ok_or_else(not_found)?;
        if req.method() != http::Method::GET {
            return Err(McpError::MethodNotAllowed);
        }
        let doc = policy.metadata(&self.resource(tunnel, server)?);
        let mut resp = Response::new(full(doc.to_string()));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("max-age=300"),
        );
        Ok(resp)
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
        if let Some(endpoint) = path.strip_prefix(oauth::METADATA_PREFIX) {
            return self.resource_metadata(&req, endpoint);
        }
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
        let host_checked = self.check_host(&req)?;
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
            self.authenticate(req.headers(), tunnel, server, call)
                .await?
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
        // Offline is told at once, before the body is read. A gateway's own
        // listener serves its one tunnel, and that is always up.
        let online = match &self.local {
            Some(local) => local.tunnel == tunnel,
            None => self.registry.is_online(tunnel),
        };
        if !online {
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
        // The gateway replica that owns the request's session (or resumed
        // stream), read from its ids: any relay replica routes it alike.
        let owner = crate::session::owner::owner_of(req.headers());
        let (parts, body) = req.into_parts();
        // An MCP request body is one JSON-RPC message, bounded by the
        // message limit: read it here, so an oversized one is refused before
        // it uses the tunnel, and h2 sends it without a body-pipe task.
        let body = read_limited(body, s.max_message_bytes).await?;
        // What the message is, for the span and the audit record; the
        // gateway parses it fully, so this reads only when someone asks.
        // Behind a gateway's own listener the gateway parses and records
        // the message itself: peeked only for the span.
        let recorded_here = self.audit.get().is_some() && self.local.is_none();
        if !span.is_disabled() || recorded_here {
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
        let pinned = owner.map(|o| o.instance());
        let via = match &self.local {
            Some(local) => Via::Local(&local.gateway),
            None => Via::Tunnel(
                self.registry
                    .lease(tunnel, body.len(), s.queue, pinned)
                    .await
                    .map_err(|r| refusal(r, tunnel, owner))?,
            ),
        };
        // A session belongs to the agent that opened it. An id this relay
        // has not bound goes on: the gateway, which sees every relay's
        // traffic, refuses it unless it is this agent's.
        let presented = Presented {
            scope: tunnel,
            server,
            session: call.session.as_deref(),
            who: &principal,
        };
        // Behind a gateway's own listener the gateway's table is the only
        // one: it refuses any id not bound to this agent.
        if self.local.is_none() {
            self.sessions.check(&presented, Unknown::Pass)?;
        }
        // Recorded before it goes down the tunnel: in strict mode a request
        // whose record cannot be made durable is not forwarded. Behind a
        // gateway's own listener, the gateway's decision record is the
        // record of the call (the front end records what it refused).
        if let Some(spool) = self.audit.get().filter(|_| self.local.is_none())
            && let Some(record) = call.record(Outcome::Forwarded, None, span)
        {
            spool
                .append(&record)
                .await
                .map_err(|_| McpError::AuditUnavailable)?;
        }
        let method = parts.method.clone();
        // The request without its body: the tunnel takes a boxed one, the
        // local gateway a plain one (whose error type holds no lifetime).
        let down = || {
            let mut down = Request::new(());
            *down.method_mut() = parts.method.clone();
            *down.uri_mut() = uri.clone();
            *down.headers_mut() = forwarded_headers(&parts.headers, &principal);
            crate::telemetry::span::inject(span, down.headers_mut());
            down
        };

        let deadline = s.call_deadline;
        let resp = match via {
            Via::Local(gateway) => {
                let req = down().map(|()| http_body_util::Full::new(body.clone()));
                let local = async { Ok(gateway.handle(req, tunnel).await) };
                within(deadline, tunnel, span, local).await?
            }
            Via::Tunnel(lease) => {
                let sent = async {
                    let mut lease = lease;
                    let mut resends = 0;
                    loop {
                        let req = down().map(|()| body.clone());
                        match lease.sender.send(req).await {
                            Ok(resp) => return answer(resp, lease, tunnel).await,
                            // A gateway going away refuses new streams
                            // unprocessed (RFC 9113 §8.7): the call goes to
                            // another of the tunnel's connections (the same
                            // gateway's, when the session is pinned), and the
                            // agent sees no failure.
                            Err(e) if resends < limits::TUNNEL_RESENDS && e.unprocessed() => {
                                resends += 1;
                                lease.retire();
                                tracing::info!(tunnel, error = %e, "the gateway refused the stream unprocessed; sending the call on another connection");
                                lease = self
                                    .registry
                                    .lease(tunnel, body.len(), s.queue, pinned)
                                    .await
                                    .map_err(|r| refusal(r, tunnel, owner))?;
                            }
                            Err(e) => {
                                tracing::warn!(tunnel, error = %e, "tunnel stream failed");
                                return Err(McpError::UpstreamUnavailable(format!(
                                    "the tunnel '{tunnel}' dropped the call"
                                )));
                            }
                        }
                    }
                };
                // Boxed, so that the deadline and the span around it move
                // a pointer rather than the stream's whole state machine.
                within(deadline, tunnel, span, Box::pin(sent)).await?
            }
        };
        let (mut parts, body) = resp.into_parts();
        // h2 forbids connection-specific headers, so there is nothing
        // hop-by-hop to strip; the gateway chose what to expose. A
        // Content-Length it sent lets the agent side skip chunked framing.
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(McpError::UpstreamUnavailable("unexpected upgrade".into()));
        }
        if self.local.is_none() {
            self.sessions
                .learn(&presented, &method, parts.status, &mut parts.headers);
        }
        Ok(Response::from_parts(parts, body))
    }
}

/// `answer` within the relay's call deadline: a gateway that froze or was
/// cut off gets the agent a clean 504, not the agent's own timeout.
async fn within<F>(
    deadline: std::time::Duration,
    tunnel: &str,
    span: &tracing::Span,
    answer: F,
) -> Result<Response<Body>, McpError>
where
    F: Future<Output = Result<Response<Body>, McpError>>,
{
    tracing::Instrument::instrument(tokio::time::timeout(deadline, answer), span.clone())
        .await
        .map_err(|_| {
            tracing::warn!(
                tunnel,
                "the gateway did not answer within the call deadline"
            );
            McpError::GatewayTimeout(deadline.as_millis())
        })?
}

/// The agent's answer from the gateway's. An event stream streams on,
/// holding its tunnel stream; any other answer (one JSON-RPC message, or
/// none) is read whole first when it is small: the agent gets it with its
/// length, the tunnel stream is free again as soon as it is read, the call
/// deadline covers the body, and a body cut off on the way is a clean
/// error, not a truncated answer.
async fn answer(
    resp: Response<crate::tunnel::client::Recv>,
    lease: crate::tunnel::registry::Lease,
    tunnel: &str,
) -> Result<Response<Body>, McpError> {
    let (mut parts, body) = resp.into_parts();
    if crate::mcp::era::is_event_stream(&parts.headers) {
        return Ok(Response::from_parts(
            parts,
            boxed(Holding::new(body, lease)),
        ));
    }
    let body = match gather(body, limits::GATHER_ANSWER_BYTES).await {
        Ok(Gathered::Whole(bytes)) => {
            drop(lease);
            // A 204 or 304 has no body and must not say it has one.
            let bodiless =
                parts.status == StatusCode::NO_CONTENT || parts.status == StatusCode::NOT_MODIFIED;
            if !bodiless {
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, http::HeaderValue::from(bytes.len()));
            }
            full(bytes)
        }
        Ok(Gathered::Partial { head, rest }) => {
            boxed(Holding::new(Resumed::new(head, rest), lease))
        }
        Err(e) => {
            tracing::warn!(tunnel, error = %e, "the gateway's answer was cut off");
            return Err(McpError::UpstreamUnavailable(format!(
                "the tunnel '{tunnel}' dropped the call"
            )));
        }
    };
    Ok(Response::from_parts(parts, body))
}

/// Where an agent request goes: down a leased tunnel stream, or to the
/// gateway this listener belongs to.
enum Via<'a> {
    Tunnel(crate::tunnel::registry::Lease),
    Local(&'a std::sync::Arc<crate::gateway::Gateway>),
}

/// The agent's answer when no tunnel stream can be had.
fn refusal(r: Refused, tunnel: &str, owner: Option<Owner>) -> McpError {
    match r {
        Refused::Offline => McpError::TunnelOffline(tunnel.to_owned()),
        // The spec's answer for a session that ended: the agent
        // initializes a new one, which any live gateway takes.
        Refused::OwnerGone => match owner {
            Some(Owner::Stream(_)) => {
                McpError::InvalidRequest("Last-Event-ID names no event of this session".into())
            }
            _ => McpError::SessionNotFound,
        },
        Refused::Overloaded => McpError::Overloaded {
            tunnel: tunnel.to_owned(),
            retry_after_secs: limits::OVERLOAD_RETRY_AFTER_SECS,
        },
    }
}

#[cfg(test)]
mod tests;
