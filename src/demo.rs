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

fn tools() -> Value {
    json!([
        {
            "name": "lookup_customer",
            "title": "Look up a customer",
            "description": "Returns a customer's record, including contact and payment details.",
            "inputSchema": {
                "type": "object",
                "properties": { "customer_id": { "type": "string", "description": "Customer id, e.g. C-1001" } },
                "required": ["customer_id"],
                "additionalProperties": false
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"}, "email": {"type": "string"},
                    "phone": {"type": "string"}, "card_number": {"type": "string"}, "iban": {"type": "string"},
                    "tier": {"type": "string"}
                },
                "required": ["id", "name"]
            },
            "annotations": { "readOnlyHint": true }
        },
        {
            "name": "issue_refund",
            "title": "Issue a refund",
            "description": "Refunds an amount (in EUR) to a customer's card.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "customer_id": { "type": "string" },
                    "amount": { "type": "number", "exclusiveMinimum": 0 },
                    "reason": { "type": "string" }
                },
                "required": ["customer_id", "amount"],
                "additionalProperties": false
            },
            "annotations": { "destructiveHint": true }
        },
        {
            "name": "search_tickets",
            "title": "Search support tickets",
            "description": "Full-text search over open support tickets.",
            "inputSchema": {
                "type": "object",
                "properties": { "query": { "type": "string" } },
                "required": ["query"]
            },
            "annotations": { "readOnlyHint": true }
        },
        {
            "name": "delete_customer",
            "title": "Delete a customer",
            "description": "Erases a customer record (GDPR erasure request).",
            "inputSchema": {
                "type": "object",
                "properties": { "customer_id": { "type": "string" } },
                "required": ["customer_id"]
            },
            "annotations": { "destructiveHint": true }
        },
        {
            "name": "get_ticket_thread",
            "title": "Read a ticket's conversation",
            "description": "The full message thread of a support ticket (about 4 KiB).",
            "inputSchema": {
                "type": "object",
                "properties": { "ticket_id": { "type": "string" } },
                "required": ["ticket_id"]
            },
            "annotations": { "readOnlyHint": true }
        },
        {
            "name": "generate_report",
            "title": "Generate a report",
            "description": "Builds a revenue report in steps, sending progress notifications.",
            "inputSchema": {
                "type": "object",
                "properties": { "steps": { "type": "integer", "minimum": 1, "maximum": MAX_REPORT_STEPS } }
            }
        }
    ])
}

fn customer(id: &str) -> Option<Value> {
    let (name, email, phone, card, iban, tier) = match id {
        "C-1001" => (
            "Ada Lovelace",
            "ada.lovelace@example.com",
            "+44 20 7946 0018",
            "4111 1111 1111 1111",
            "GB82 WEST 1234 5698 7654 32",
            "gold",
        ),
        "C-1002" => (
            "Grace Hopper",
            "grace@example.org",
            "+1 202 555 0143",
            "5500 0000 0000 0004",
            "DE89 3704 0044 0532 0130 00",
            "silver",
        ),
        "C-1003" => (
            "Alan Turing",
            "alan.turing@example.net",
            "+44 161 496 0734",
            "3400 0000 0000 009",
            "FR14 2004 1010 0505 0001 3M02 606",
            "bronze",
        ),
        _ => return None,
    };
    Some(
        json!({ "id": id, "name": name, "email": email, "phone": phone,
                 "card_number": card, "iban": iban, "tier": tier }),
    )
}

/// A support conversation of about 4 KiB: ordinary prose with the few
/// personal details real tickets carry (an e-mail address, a phone number,
/// the last digits of a card), the shape a redaction policy meets all day.
pub fn ticket_thread(id: &str) -> String {
    let turns = [
        (
            "customer",
            "Hello, I was charged twice for order 7731 last Tuesday. The second charge appeared on my statement two days later and has not been reversed yet. Could you please look into it? You can reach me at grace@example.org or on +1 202 555 0143 during office hours.",
        ),
        (
            "agent",
            "Thank you for reaching out, and sorry for the trouble. I can see two authorisations for order 7731. The first one was captured; the second one should have been released automatically after the payment provider's timeout. I have opened an investigation with our payments team and will update this ticket as soon as I hear back.",
        ),
        (
            "customer",
            "Thanks. For reference, the card ends in 0004 and the amount was 149.90 EUR both times. My bank says they cannot do anything until the merchant confirms the duplicate.",
        ),
        (
            "agent",
            "Understood. The payments team confirmed the duplicate capture. A refund of 149.90 EUR has been issued and should be visible within five to seven business days, depending on your bank. I have also added a note to your account so that this does not happen again with the saved payment method.",
        ),
        (
            "customer",
            "I still do not see the refund after a week. Is there a reference number I can give to my bank?",
        ),
        (
            "agent",
            "Of course. The refund reference is R-7731-02 and it was sent on the original payment rail. Banks sometimes show refunds as a separate credit rather than reversing the charge, so it may appear under a different description. If it has not arrived by Friday, reply here and I will escalate it to our finance team.",
        ),
    ];
    let mut out = format!("Ticket {id}: Card charged twice for order 7731\n\n");
    for (n, (who, text)) in turns.iter().cycle().enumerate() {
        if out.len() >= 4096 {
            break;
        }
        out.push_str(&format!("[{}] {who}: {text}\n\n", n + 1));
    }
    out.truncate(out.char_indices().nth(4096).map_or(out.len(), |(i, _)| i));
    out
}

fn text_result(text: String, structured: Option<Value>, is_error: bool) -> Value {
    let mut r = json!({ "content": [{ "type": "text", "text": text }], "isError": is_error });
    if let (Some(s), Some(obj)) = (structured, r.as_object_mut()) {
        obj.insert("structuredContent".into(), s);
    }
    r
}

fn arg_str<'a>(args: &'a Value, key: &str) -> Option<&'a str> {
    args.get(key).and_then(Value::as_str)
}

/// Runs a tool. `Err` is a protocol error (unknown tool, bad arguments).
fn call_tool(name: &str, args: &Value) -> Result<Value, (i64, String)> {
    let bad = |m: &str| (-32602, m.to_owned());
    match name {
        "lookup_customer" => {
            let id = arg_str(args, "customer_id").ok_or_else(|| bad("customer_id is required"))?;
            Ok(match customer(id) {
                Some(c) => text_result(c.to_string(), Some(c), false),
                None => text_result(format!("No customer with id {id}"), None, true),
            })
        }
        "issue_refund" => {
            let id = arg_str(args, "customer_id").ok_or_else(|| bad("customer_id is required"))?;
            let amount = args
                .get("amount")
                .and_then(Value::as_f64)
                .filter(|a| *a > 0.0)
                .ok_or_else(|| bad("amount must be a positive number"))?;
            if customer(id).is_none() {
                return Ok(text_result(format!("No customer with id {id}"), None, true));
            }
            let refund = json!({ "refund_id": format!("R-{}", &secret::random_id()[..8]),
                                 "customer_id": id, "amount": amount, "currency": "EUR", "status": "issued" });
            Ok(text_result(
                format!("Refunded {amount:.2} EUR to {id}"),
                Some(refund),
                false,
            ))
        }
        "search_tickets" => {
            let q = arg_str(args, "query")
                .ok_or_else(|| bad("query is required"))?
                .to_lowercase();
            let tickets = [
                ("T-501", "C-1001", "Card charged twice for order 7731"),
                (
                    "T-502",
                    "C-1002",
                    "Cannot reset password; contact grace@example.org",
                ),
                ("T-503", "C-1003", "Refund not received after 14 days"),
            ];
            let hits: Vec<Value> = tickets
                .iter()
                .filter(|(_, _, s)| q.is_empty() || s.to_lowercase().contains(&q))
                .map(|(id, c, s)| json!({ "id": id, "customer_id": c, "subject": s }))
                .collect();
            let text = serde_json::to_string(&hits).unwrap_or_default();
            Ok(text_result(text, Some(json!({ "tickets": hits })), false))
        }
        "get_ticket_thread" => {
            let id = arg_str(args, "ticket_id").ok_or_else(|| bad("ticket_id is required"))?;
            Ok(text_result(ticket_thread(id), None, false))
        }
        "delete_customer" => {
            let id = arg_str(args, "customer_id").ok_or_else(|| bad("customer_id is required"))?;
            Ok(text_result(
                format!("Customer {id} scheduled for erasure"),
                None,
                false,
            ))
        }
        "generate_report" => Ok(text_result(
            "Revenue report: Q3 EUR 1.2M, Q4 EUR 1.4M".into(),
            None,
            false,
        )),
        _ => Err((-32602, format!("Unknown tool: {name}"))),
    }
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
