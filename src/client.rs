//! A minimal Streamable HTTP MCP client, used by `portcullis bench` and the
//! tests to drive the relay the way an agent does.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::mcp::era::{PROTOCOL_VERSION_HEADER, SESSION_HEADER};
use crate::mcp::sse::Decoder;

/// Protocol version the client asks for.
pub const CLIENT_PROTOCOL_VERSION: &str = "2025-11-25";

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("HTTP: {0}")]
    Http(String),
    #[error("bad response: {0}")]
    Response(String),
}

/// A response: status, headers, and the JSON-RPC messages of its body (one
/// for JSON, one per SSE event).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub messages: Vec<Value>,
    pub body: Bytes,
}

impl Reply {
    /// The last message (the response to the request).
    pub fn last(&self) -> Option<&Value> {
        self.messages.last()
    }
}

/// One client session against one MCP URL.
#[derive(Clone)]
pub struct McpClient {
    http: Client<HttpConnector, Full<Bytes>>,
    url: String,
    token: Option<String>,
    pub session: Option<String>,
    next_id: u64,
}

impl McpClient {
    pub fn new(url: &str, token: Option<&str>) -> McpClient {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        McpClient {
            http: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(64)
                .build(conn),
            url: url.to_owned(),
            token: token.map(str::to_owned),
            session: None,
            next_id: 1,
        }
    }

    /// Sends raw bytes with the usual headers plus `extra`; returns the
    /// response with its body still streaming.
    pub async fn send_streaming(
        &self,
        method: Method,
        body: Bytes,
        extra: &[(&str, &str)],
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = self
            .url
            .parse()
            .map_err(|e| ClientError::Http(format!("{e}")))?;
        let h = req.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        h.insert(
            PROTOCOL_VERSION_HEADER,
            HeaderValue::from_static(CLIENT_PROTOCOL_VERSION),
        );
        if let Some(v) = self
            .token
            .as_ref()
            .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
        {
            h.insert(header::AUTHORIZATION, v);
        }
        if let Some(v) = self
            .session
            .as_ref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            h.insert(SESSION_HEADER, v);
        }
        for (k, v) in extra {
            let name = HeaderName::try_from(*k).map_err(|e| ClientError::Http(e.to_string()))?;
            let value = HeaderValue::try_from(*v).map_err(|e| ClientError::Http(e.to_string()))?;
            h.insert(name, value);
        }
        self.http
            .request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))
    }

    /// Sends raw bytes with the usual headers plus `extra`.
    pub async fn send(
        &self,
        method: Method,
        body: Bytes,
        extra: &[(&str, &str)],
    ) -> Result<Reply, ClientError> {
        let resp = self.send_streaming(method, body, extra).await?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        let ctype = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut messages = Vec::new();
        if ctype.starts_with("text/event-stream") {
            let mut d = Decoder::new(usize::MAX);
            let mut events = Vec::new();
            d.push(&body, &mut events)
                .map_err(|e| ClientError::Response(e.to_string()))?;
            for ev in events {
                if let Some(data) = ev.data.filter(|d| !d.is_empty()) {
                    messages.push(
                        serde_json::from_str(&data)
                            .map_err(|e| ClientError::Response(e.to_string()))?,
                    );
                }
            }
        } else if !body.is_empty() && ctype.starts_with("application/json") {
            messages.push(
                serde_json::from_slice(&body).map_err(|e| ClientError::Response(e.to_string()))?,
            );
        }
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            messages,
            body,
        })
    }

    /// A request body with the next id.
    pub fn request_body(&mut self, method: &str, params: Value) -> Bytes {
        let id = self.next_id;
        self.next_id += 1;
        Bytes::from(
            json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }).to_string(),
        )
    }

    /// Sends a request and returns the reply.
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Reply, ClientError> {
        let body = self.request_body(method, params);
        self.send(Method::POST, body, &[]).await
    }

    /// Initializes a session (and sends `notifications/initialized`).
    pub async fn initialize(&mut self) -> Result<Value, ClientError> {
        let reply = self
            .request(
                "initialize",
                json!({ "protocolVersion": CLIENT_PROTOCOL_VERSION, "capabilities": {},
                        "clientInfo": { "name": "portcullis-client", "version": "0" } }),
            )
            .await?;
        if !reply.status.is_success() {
            return Err(ClientError::Response(format!(
                "initialize: HTTP {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            )));
        }
        self.session = reply
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        self.send(Method::POST, Bytes::from(note.to_string()), &[])
            .await?;
        reply
            .last()
            .cloned()
            .ok_or_else(|| ClientError::Response("empty initialize reply".into()))
    }

    /// Calls a tool; returns the JSON-RPC response message.
    pub async fn call_tool(&mut self, name: &str, args: Value) -> Result<Value, ClientError> {
        let reply = self
            .request("tools/call", json!({ "name": name, "arguments": args }))
            .await?;
        reply.last().cloned().ok_or_else(|| {
            ClientError::Response(format!(
                "HTTP {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ))
        })
    }
}
