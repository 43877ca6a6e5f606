//! Streamable HTTP upstreams: the gateway is an MCP client of a configured
//! URL. Sessions, SSE and resumption are the upstream's; the gateway forwards
//! the protocol headers and adds the configured credentials. Which agent
//! opened each session it learns from the `Mcp-Session-Id` the upstream
//! answers an `initialize` with (`src/session.rs`); the agent gets an id the
//! gateway mints in its place, never the upstream's text.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::outbound::{OutboundLimits, ReplyContext, filter_response};
use crate::body::{Body, empty, full};
use crate::limits;
use crate::mcp::McpError;
use crate::mcp::era::{SESSION_HEADER, is_forwarded_request_header};
use crate::session::{Presented, SessionTable};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// One configured HTTP upstream.
pub struct HttpUpstream {
    name: String,
    url: Uri,
    /// Static headers from config (credentials included).
    headers: Vec<(HeaderName, HeaderValue)>,
    client: HttpsClient,
    limits: OutboundLimits,
    /// Which principal opened each of this upstream's sessions.
    sessions: SessionTable,
    /// A minted identity token on every request, when configured.
    identity: Option<super::identity::UpstreamIdentity>,
}

impl HttpUpstream {
    /// An upstream at `url`, sending `headers` on every request. HTTPS
    /// upstreams are verified against the system roots or `tls`.
    pub fn new(
        name: &str,
        url: Uri,
        headers: Vec<(HeaderName, HeaderValue)>,
        tls: Arc<rustls::ClientConfig>,
        limits: OutboundLimits,
    ) -> HttpUpstream {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        // Idle pooled connections are dropped before the upstream drops
        // them: Node's HTTP server (the TypeScript SDK's servers) and
        // uvicorn (the Python SDK's) close keep-alive connections idle for
        // 5 s, and a call written into a connection the server is closing
        // fails as "not reachable" (hyper's IncompleteMessage). hyper's
        // default, 90 s, left every call after a 5–90 s pause, an agent's
        // usual rhythm, exposed to that race. The timer reaps them.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(limits::UPSTREAM_POOL_IDLE)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        HttpUpstream {
            name: name.to_owned(),
            url,
            headers,
            client,
            limits,
            sessions: SessionTable::minting(
                limits::MAX_SESSIONS_PER_SERVER,
                limits::SESSION_BINDING_IDLE,
            ),
            identity: None,
        }
    }

    /// Sends every request with `Authorization: Bearer <token>`, a token
    /// the gateway mints for the calling principal and this upstream
    /// ([`super::identity`]); it replaces a configured `Authorization`.
    pub fn set_identity(&mut self, identity: super::identity::UpstreamIdentity) {
        self.identity = Some(identity);
    }

    /// The session bindings the gateway checks before forwarding.
    pub fn sessions(&self) -> &SessionTable {
        &self.sessions
    }

    /// Sends one request (POST with a message body, GET, DELETE) and returns
    /// the checked response.
    pub async fn call(
        &self,
        method: Method,
        incoming: &HeaderMap,
        body: Option<Bytes>,
        mut reply: ReplyContext,
    ) -> Result<Response<Body>, McpError> {
        // This upstream's own timeout bounds its JSON body too.
        reply.limits.call_timeout = self.limits.call_timeout;
        let mut req = Request::new(match body {
            Some(b) => full(b),
            None => empty(),
        });
        *req.method_mut() = method;
        *req.uri_mut() = self.url.clone();
        let http_method = req.method().clone();
        let h = req.headers_mut();
        // The agent's credential never arrived here; upstream credentials
        // come from config below.
        for (name, value) in incoming {
            if is_forwarded_request_header(name.as_str()) {
                h.append(name.clone(), value.clone());
            }
        }
        for (name, value) in &self.headers {
            h.insert(name.clone(), value.clone());
        }
        if let Some(id) = &self.identity {
            let token = id
                .minter
                .mint(&reply.base.principal, &id.audience)
                .map_err(|e| {
                    tracing::error!(server = self.name, error = %e, "cannot mint the identity token");
                    McpError::UpstreamUnavailable(format!("server '{}' is not reachable", self.name))
                })?;
            let mut v = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
                McpError::UpstreamUnavailable(format!("server '{}' is not reachable", self.name))
            })?;
            v.set_sensitive(true);
            h.insert(http::header::AUTHORIZATION, v);
        }
        // The agent holds the gateway's id for the session; the upstream
        // gets its own back.
        if let Some(ours) = reply.base.session_id.as_deref() {
            let theirs = self
                .sessions
                .upstream_id(&self.name, &self.name, ours)
                .and_then(|u| HeaderValue::from_str(&u).ok())
                .ok_or(McpError::SessionNotFound)?;
            h.insert(SESSION_HEADER, theirs);
        }
        // The upstream joins the trace: a client span for this hop, whose
        // context replaces the one that came down the tunnel.
        let span = crate::mcp_span!("portcullis::upstream", "client");
        if !span.is_disabled() {
            match reply.base.method.as_deref() {
                Some(m) => crate::telemetry::span::describe(
                    &span,
                    &crate::telemetry::span::Call {
                        method: Some(m),
                        target: reply.base.target.as_deref(),
                        request_id: reply.base.request_id.as_deref(),
                        session_id: reply.base.session_id.as_deref(),
                        protocol_version: reply.base.protocol_version.as_deref(),
                    },
                ),
                None => {
                    span.record("otel.name", http_method.as_str());
                }
            }
            span.set_attribute("server.address", self.url.host().unwrap_or("").to_owned());
            if let Some(port) = self.url.port_u16() {
                span.set_attribute("server.port", i64::from(port));
            }
            span.set_attribute("network.transport", "tcp");
            span.set_attribute("network.protocol.name", "http");
            span.set_attribute("portcullis.server", self.name.clone());
        }
        crate::telemetry::span::inject(&span, h);
        let sent = tokio::time::timeout(self.limits.call_timeout, self.client.request(req));
        let resp = tracing::Instrument::instrument(sent, span.clone())
            .await
            .map_err(|_| McpError::UpstreamTimeout(self.limits.call_timeout.as_millis()))?
            .map_err(|e| {
                tracing::warn!(server = self.name, error = %e, "upstream request failed");
                McpError::UpstreamUnavailable(format!("server '{}' is not reachable", self.name))
            })?;
        let presented = Presented {
            scope: &self.name,
            server: &self.name,
            session: reply.base.session_id.as_deref(),
            who: &reply.base.principal,
        };
        let mut resp = resp;
        let status = resp.status();
        self.sessions
            .learn(&presented, &http_method, status, resp.headers_mut());
        Ok(filter_response(resp, reply).await)
    }
}
