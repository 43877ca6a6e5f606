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
        self.credentials(h, &reply.base.principal).map_err(|e| {
            tracing::error!(server = self.name, error = %e, "upstream credentials unavailable");
            McpError::UpstreamUnavailable(format!("server '{}' is not reachable", self.name))
        })?;
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

impl HttpUpstream {
    /// This upstream's credentials on a request: the configured headers,
    /// then, when it mints identities, `Authorization: Bearer` with a token
    /// for `principal` (replacing a configured one). Every request the
    /// gateway sends upstream, the agents' and its own, carries these.
    fn credentials(
        &self,
        h: &mut HeaderMap,
        principal: &crate::principal::Principal,
    ) -> Result<(), String> {
        for (name, value) in &self.headers {
            h.insert(name.clone(), value.clone());
        }
        if let Some(id) = &self.identity {
            let token = id
                .minter
                .mint(principal, &id.audience)
                .map_err(|e| format!("cannot mint the identity token: {e}"))?;
            let mut v = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| "the minted token is not a header value".to_owned())?;
            v.set_sensitive(true);
            h.insert(http::header::AUTHORIZATION, v);
        }
        Ok(())
    }
}

/// What an upstream answered a message the gateway sent itself.
pub(super) struct OwnReply {
    /// The `Mcp-Session-Id` the upstream set, when it set one.
    pub session: Option<HeaderValue>,
    /// The JSON-RPC message answering the request (`None` for a
    /// notification's 202).
    pub message: Option<Bytes>,
}

impl HttpUpstream {
    /// Sends one JSON-RPC message of the gateway's own ([`super::listing`]):
    /// the configured headers, and when this upstream mints identities a
    /// token for `principal`; nothing of any agent's. `answers` is the id of
    /// the request (`None` for a notification); the answer is read from a
    /// JSON body or from the SSE stream, which is left as soon as it came.
    /// Bounded by the caller's timeout and by the message size limit.
    pub(super) async fn send_own(
        &self,
        body: Vec<u8>,
        answers: Option<u64>,
        session: Option<&HeaderValue>,
        principal: &crate::principal::Principal,
    ) -> Result<OwnReply, String> {
        use http_body_util::BodyExt as _;
        let mut req = Request::new(full(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.url.clone();
        let h = req.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        h.insert(
            crate::mcp::era::PROTOCOL_VERSION_HEADER,
            HeaderValue::from_static(crate::client::CLIENT_PROTOCOL_VERSION),
        );
        if let Some(s) = session {
            h.insert(SESSION_HEADER, s.clone());
        }
        self.credentials(h, principal)?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("answered HTTP {status}"));
        }
        let session = resp.headers().get(SESSION_HEADER).cloned();
        let Some(answers) = answers else {
            return Ok(OwnReply {
                session,
                message: None,
            });
        };
        let sse = crate::mcp::era::is_event_stream(resp.headers());
        let limit = self.limits.max_message_bytes;
        if !sse {
            let bytes = crate::body::read_limited(resp.into_body(), limit)
                .await
                .map_err(|e| format!("cannot read the answer: {e}"))?;
            return Ok(OwnReply {
                session,
                message: Some(bytes),
            });
        }
        let mut body = resp.into_body();
        let mut decoder = crate::mcp::sse::Decoder::new(limit);
        let mut events = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("the stream broke: {e}"))?;
            let Some(chunk) = frame.data_ref() else {
                continue;
            };
            decoder
                .push(chunk, &mut events)
                .map_err(|e| format!("unreadable stream: {e}"))?;
            for event in events.drain(..) {
                let Some(data) = event.data else { continue };
                if answers_id(data.as_bytes(), answers) {
                    return Ok(OwnReply {
                        session,
                        message: Some(Bytes::from(data)),
                    });
                }
            }
        }
        Err("the stream ended without the answer".into())
    }
}

/// True when `message` is a response or error to request `id`.
pub(super) fn answers_id(message: &[u8], id: u64) -> bool {
    serde_json::from_slice::<serde_json::Value>(message).is_ok_and(|v| {
        v.get("id").and_then(serde_json::Value::as_u64) == Some(id)
            && (v.get("result").is_some() || v.get("error").is_some())
    })
}

impl HttpUpstream {
    /// Ends a session the gateway opened itself (best effort: a server that
    /// refuses DELETE lets it expire).
    pub(super) async fn end_own(
        &self,
        session: HeaderValue,
        principal: &crate::principal::Principal,
    ) {
        let mut req = Request::new(empty());
        *req.method_mut() = Method::DELETE;
        *req.uri_mut() = self.url.clone();
        let h = req.headers_mut();
        h.insert(SESSION_HEADER, session);
        h.insert(
            crate::mcp::era::PROTOCOL_VERSION_HEADER,
            HeaderValue::from_static(crate::client::CLIENT_PROTOCOL_VERSION),
        );
        if let Err(e) = self.credentials(h, principal) {
            tracing::debug!(server = self.name, error = %e, "cannot end the listing session");
            return;
        }
        if let Err(e) = self.client.request(req).await {
            tracing::debug!(server = self.name, error = %e, "ending the listing session failed");
        }
    }
}
