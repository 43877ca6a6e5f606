//! The built-in demo MCP server that `portcullis up` tunnels: a small CRM
//! with realistic tools, among them one that returns personal data and one
//! that moves money, so policies have something to act on.
//!
//! It speaks Streamable HTTP (session era with `Mcp-Session-Id`, and
//! stateless requests of the newer era), answers JSON, and streams progress
//! notifications over SSE for `generate_report`. It is also the fast upstream
//! the benchmark measures against.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::{Body, BoxError, full, read_limited};
use crate::limits;
use crate::mcp::era::SESSION_HEADER;
use crate::mcp::sse::Event;
use crate::mcp::{Kind, McpError, Message, ParseOptions, error_response};
use crate::secret;
use crate::server::{ServeOptions, serve};

mod crm;

pub use crm::ticket_thread;
use crm::{call_tool, tools};

/// Protocol versions the demo server speaks, newest first.
const SUPPORTED_VERSIONS: &[&str] = &[LATEST_VERSION, "2025-06-18", "2025-03-26"];
/// The version offered when the client asks for one the demo lacks.
const LATEST_VERSION: &str = "2025-11-25";
/// Sessions the demo keeps before refusing new ones.
const MAX_DEMO_SESSIONS: usize = 10_000;
/// Steps `generate_report` accepts.
const MAX_REPORT_STEPS: u64 = 20;

/// The demo server's state.
#[derive(Default)]
pub struct DemoServer {
    sessions: Mutex<HashSet<String>>,
}

fn ok(id: &str, result: Value) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#)
}

fn err(id: &str, code: i64, message: &str) -> String {
    let e = json!({ "code": code, "message": message });
    format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{e}}}"#)
}

fn json_resp(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

impl DemoServer {
    /// A demo server with no sessions.
    pub fn new() -> Arc<DemoServer> {
        Arc::new(DemoServer::default())
    }

    /// Serves on `listener` (plain HTTP, path `/mcp`) until `shutdown`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let opts = ServeOptions {
            drain_grace: Duration::from_secs(1),
            ..ServeOptions::plain("demo")
        };
        serve(
            listener,
            opts,
            move |req| {
                let me = self.clone();
                async move { Ok::<_, Infallible>(me.handle(req).await) }
            },
            shutdown,
        )
        .await;
    }

    fn has_session(&self, id: &str) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }

    /// Handles one HTTP request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if req.uri().path() != "/mcp" {
            return error_response(&McpError::NotFound("the MCP endpoint is /mcp".into()), None);
        }
        let session = req
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match *req.method() {
            Method::POST => {}
            Method::DELETE => {
                let removed = session.is_some_and(|s| {
                    self.sessions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&s)
                });
                return if removed {
                    Response::new(full(Bytes::new()))
                } else {
                    error_response(&McpError::SessionNotFound, None)
                };
            }
            _ => return error_response(&McpError::MethodNotAllowed, None),
        }
        let accepts_sse = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
        let bytes = match read_limited(req.into_body(), limits::MAX_MESSAGE_BYTES).await {
            Ok(b) => b,
            Err(_) => {
                return error_response(
                    &McpError::TooLarge {
                        limit: limits::MAX_MESSAGE_BYTES,
                    },
                    None,
                );
            }
        };
        // A large message is read on the blocking pool, as the gateway does,
        // so that the demo, sharing a process with relay and gateway in
        // `up`, does not hold their workers.
        let read = if bytes.len() >= limits::OFFLOAD_PARSE_BYTES {
            crate::bulk::compute(move || read_message(bytes))
                .await
                .unwrap_or_else(|| Err(McpError::InvalidRequest("unreadable".into())))
        } else {
            read_message(bytes)
        };
        let (msg, params) = match read {
            Ok(read) => read,
            Err(e) => return error_response(&e, None),
        };
        let stateless = msg.meta_protocol_version.is_some();
        let method = msg.method_str();
        if method != "initialize" && !stateless {
            match &session {
                Some(s) if self.has_session(s) => {}
                Some(_) => return error_response(&McpError::SessionNotFound, msg.id.as_deref()),
                None => {
                    return error_response(
                        &McpError::InvalidRequest("missing Mcp-Session-Id".into()),
                        msg.id.as_deref(),
                    );
                }
            }
        }
        if msg.kind != Kind::Request {
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = StatusCode::ACCEPTED;
            return r;
        }
        let id = msg.id.clone().unwrap_or_else(|| "null".into());
        match method {
            "initialize" => {
                let requested = params
                    .get("protocolVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let version = SUPPORTED_VERSIONS
                    .iter()
                    .find(|v| **v == requested)
                    .unwrap_or(&LATEST_VERSION);
                let sid = secret::random_id();
                {
                    let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
                    if s.len() >= MAX_DEMO_SESSIONS {
                        return error_response(
                            &McpError::TooManySessions("demo".into()),
                            Some(&id),
                        );
                    }
                    s.insert(sid.clone());
                }
                let result = json!({
                    "protocolVersion": version,
                    "capabilities": { "tools": { "listChanged": false } },
                    "serverInfo": { "name": "portcullis-demo-crm", "version": env!("CARGO_PKG_VERSION") },
                    "instructions": "A demo CRM. Try lookup_customer with customer_id C-1001."
                });
                let mut r = json_resp(StatusCode::OK, ok(&id, result));
                if let Ok(v) = HeaderValue::from_str(&sid) {
                    r.headers_mut().insert(SESSION_HEADER, v);
                }
                r
            }
            "ping" => json_resp(StatusCode::OK, ok(&id, json!({}))),
            "tools/list" => json_resp(StatusCode::OK, ok(&id, json!({ "tools": tools() }))),
            "tools/call" => {
                let name = params.get("name").and_then(Value::as_str).unwrap_or("");
                let none = json!({});
                let args = params.get("arguments").unwrap_or(&none);
                if name == "generate_report" && accepts_sse {
                    return report_stream(id, args, msg.progress_token.clone());
                }
                let resp = match call_tool(name, args) {
                    Ok(result) => json_resp(StatusCode::OK, ok(&id, result)),
                    Err((code, m)) => json_resp(StatusCode::OK, err(&id, code, &m)),
                };
                // Freeing a large request's tree is work too: not on a worker.
                if msg.raw.len() >= limits::OFFLOAD_PARSE_BYTES {
                    tokio::spawn(crate::bulk::compute(move || drop((params, msg))));
                }
                resp
            }
            _ => json_resp(
                StatusCode::OK,
                err(&id, -32601, &format!("Method not found: {method}")),
            ),
        }
    }
}

/// `generate_report` over SSE: a progress notification per step, then the
/// result.
fn report_stream(id: String, args: &Value, progress_token: Option<String>) -> Response<Body> {
    let steps = args
        .get("steps")
        .and_then(Value::as_u64)
        .unwrap_or(3)
        .clamp(1, MAX_REPORT_STEPS);
    let s = futures_util::stream::unfold(0u64, move |step| {
        let id = id.clone();
        let token = progress_token.clone();
        async move {
            if step > steps {
                return None;
            }
            let data = if step < steps {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match &token {
                    Some(t) => format!(
                        r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{t},"progress":{},"total":{steps},"message":"step {} of {steps}"}}}}"#,
                        step + 1,
                        step + 1
                    ),
                    None => format!(
                        r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"level":"info","data":"step {} of {steps}"}}}}"#,
                        step + 1
                    ),
                }
            } else {
                let result = call_tool("generate_report", &json!({})).unwrap_or_default();
                ok(&id, result)
            };
            let ev = Event {
                event: Some("message".into()),
                data: Some(data),
                ..Event::default()
            };
            Some((Ok::<_, BoxError>(Frame::data(ev.encode())), step + 1))
        }
    });
    let mut r = Response::new(http_body_util::BodyExt::boxed_unsync(
        http_body_util::StreamBody::new(s),
    ));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r
}
/// One JSON-RPC message and its `params` as a value.
fn read_message(bytes: Bytes) -> Result<(Message, Value), McpError> {
    let msg = Message::parse(bytes, ParseOptions::new(limits::MAX_JSON_DEPTH))
        .map_err(|e| McpError::InvalidRequest(e.to_string()))?;
    let params = serde_json::from_slice::<Value>(&msg.raw)
        .ok()
        .and_then(|mut v| v.get_mut("params").map(Value::take))
        .unwrap_or(Value::Null);
    Ok((msg, params))
}
