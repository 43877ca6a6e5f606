//! Issue 12's acceptance tests: the perimeter is complete, nothing leaves
//! unchecked. A hostile Streamable HTTP upstream, written here on raw TCP so
//! nothing normalises its framing, puts personal data and secrets in every
//! field and framing the protocol allows; the real relay → tunnel → gateway
//! stack, with `builtin:redact` on responses, stands between it and the
//! agent. Every exchange the agent makes is checked for the secrets in its
//! status line, headers and body ([`AgentGot::assert_clean`]); each test then
//! says exactly what the agent gets and what the upstream received.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use portcullis::audit::{AuditMode, Spool, SpoolConfig};
use portcullis::client::McpClient;
use portcullis::mcp::sse::{Decoder, Event};
use portcullis::plugin::PluginEngine;
use portcullis::secret;
use portcullis::tls::GeneratedCa;
use portcullis::tunnel::dial::ProxyConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::support::*;

mod agent;
mod bodies;
mod fields;
mod headers;
mod streams;

const CARD: &str = "4111 1111 1111 1111";
const EMAIL: &str = "leak.victim@example.org";
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const CANARY: &str = "CANARY-7Q3ZK9XW";

/// Text carrying every secret, and what redaction makes of it.
const LOUD: &str = "card 4111 1111 1111 1111 mail leak.victim@example.org key AKIAIOSFODNN7EXAMPLE CANARY-7Q3ZK9XW";
const REDACTED: &str =
    "card [REDACTED:card] mail [REDACTED:email] key [REDACTED:aws_access_key] [REDACTED:canary]";

/// What must never reach the agent, in any spelling the upstream uses.
const NEVER: &[&str] = &[
    "4111 1111",
    "41111111",
    "4111-1111",
    "leak.victim",
    "AKIAIOSFODNN7",
    "CANARY-7Q3ZK9XW",
    "7Q3ZK9XW",
];

/// `builtin:redact` on every message to the agent, with a detector for the
/// canary (built-ins find the card, the e-mail and the AWS key).
const REDACT: &str = r#"
[plugins.redact]
source = "builtin:redact"

[plugins.redact.config]
custom = [{ name = "canary", regex = "CANARY-[A-Z0-9]{8}" }]

[[servers."*"]]
plugin = "redact"
phase = "response"
"#;

/// The same, but only for calls of the tool `lookup` (and what their
/// streams carry).
const REDACT_LOOKUP: &str = r#"
[plugins.redact]
source = "builtin:redact"

[plugins.redact.config]
custom = [{ name = "canary", regex = "CANARY-[A-Z0-9]{8}" }]

[[servers."*"]]
plugin = "redact"
phase = "response"
tools = ["lookup"]
"#;

/// One engine for the whole test binary: the redact component is compiled
/// once, not once per test.
fn engine() -> &'static PluginEngine {
    static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
    ENGINE.get_or_init(|| PluginEngine::new(None).unwrap())
}

// ---------------------------------------------------------------------------
// The hostile upstream.

/// One request as the hostile upstream received it.
#[derive(Clone, Debug)]
struct Got {
    method: String,
    /// Names lowercased, in arrival order.
    headers: Vec<(String, String)>,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }

    /// The JSON-RPC method, or the HTTP method for a bodiless request.
    fn rpc(&self) -> String {
        self.json()["method"]
            .as_str()
            .map_or_else(|| self.method.clone(), str::to_owned)
    }

    /// `params.name` of the request (the tests' case selector).
    fn name(&self) -> String {
        self.json()["params"]["name"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

type Script = dyn Fn(&Got) -> Vec<u8> + Send + Sync;

/// Reads one HTTP/1.1 request (head, then a Content-Length body).
async fn read_request(tcp: &mut TcpStream) -> Option<Got> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let method = lines.next()?.split(' ').next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    assert!(
        !headers.iter().any(|(k, _)| k == "transfer-encoding"),
        "the gateway sent a chunked request; this upstream reads Content-Length only"
    );
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf.split_off(head_end + 4);
    while body.len() < len {
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Got {
        method,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Serves `script`'s raw bytes for each request, one request per
/// connection (it closes after writing, so close-delimited bodies end).
async fn hostile(script: Arc<Script>) -> (std::net::SocketAddr, Arc<Mutex<Vec<Got>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Got>>> = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let (s, script) = (s.clone(), script.clone());
            tokio::spawn(async move {
                let Some(got) = read_request(&mut tcp).await else {
                    return;
                };
                s.lock().unwrap().push(got.clone());
                let out = script(&got);
                let _ = tcp.write_all(&out).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    (addr, seen)
}

/// A response with `status` ("500 Whatever"), `headers`, and a
/// Content-Length `body`.
fn respond(status: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    out.into_bytes()
}

/// 200 `application/json` with `body`.
fn json_reply(body: &str) -> Vec<u8> {
    respond("200 OK", &[("content-type", "application/json")], body)
}

/// 200 `text/event-stream`, `headers`, then `events` until the connection
/// closes.
fn sse_reply(headers: &[(&str, &str)], events: &str) -> Vec<u8> {
    let mut out = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n".to_owned();
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("connection: close\r\n\r\n");
    out.push_str(events);
    out.into_bytes()
}

/// One SSE event with `data` only.
fn data(msg: &str) -> String {
    format!("data: {msg}\n\n")
}

/// A tool result whose one text block is `text`, answering `id`.
fn result_text(id: &str, text: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 0, "result": {"content": [{"type": "text", "text": text}]}})
        .to_string()
        .replacen(r#""id":0"#, &format!(r#""id":{id}"#), 1)
}

/// A `notifications/message` whose data is `text`.
fn log_note(text: &str) -> String {
    json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": text}})
        .to_string()
}

// ---------------------------------------------------------------------------
// The stack and the agent.

/// Relay, tunnel and gateway in front of one hostile upstream (server
/// `evil`), two agent keys (two principals), a policy, a strict audit spool.
struct Stack {
    relay: TestRelay,
    cred: TunnelCred,
    keys: [String; 2],
    seen: Arc<Mutex<Vec<Got>>>,
    audit_dir: PathBuf,
    stop: CancellationToken,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop.cancel();
        self.relay.shutdown.cancel();
    }
}

impl Stack {
    async fn start(
        policy: &str,
        script: impl Fn(&Got) -> Vec<u8> + Send + Sync + 'static,
    ) -> Stack {
        let (addr, seen) = hostile(Arc::new(script)).await;
        let ca = Arc::new(GeneratedCa::new("perimeter test CA").unwrap());
        let cred = TunnelCred::new();
        let keys = [
            secret::generate(secret::AGENT_KEY_PREFIX),
            secret::generate(secret::AGENT_KEY_PREFIX),
        ];
        let relay = start_relay(
            ca.clone(),
            &[&cred],
            &[
                (&keys[0], vec![cred.id.clone()]),
                (&keys[1], vec![cred.id.clone()]),
            ],
            None,
            None,
        )
        .await;
        let upstreams = HashMap::from([(
            "evil".to_owned(),
            http_upstream("evil", &format!("http://{addr}/mcp")),
        )]);
        let (gw, mut status, stop, _task) = start_gateway(
            &ca,
            &cred,
            relay.tunnel_addr,
            upstreams,
            1,
            ProxyConfig::default(),
            None,
        );
        within("the tunnel connection", status.wait_connected(1)).await;
        let policy = portcullis::policy::file::load_text(
            policy,
            Path::new("perimeter.toml"),
            engine(),
            gw.catalog(),
        )
        .await
        .unwrap();
        gw.set_policy(Some(Arc::new(policy)));
        let audit_dir = scratch();
        let spool = Spool::open(SpoolConfig::new(audit_dir.clone(), AuditMode::Strict)).unwrap();
        gw.set_audit(Arc::new(spool));
        Stack {
            relay,
            cred,
            keys,
            seen,
            audit_dir,
            stop,
        }
    }

    /// An agent (principal `who`, 0 or 1) for server `evil`.
    fn agent(&self, who: usize) -> McpClient {
        McpClient::new(
            &self.relay.url(&self.cred.id, "evil"),
            Some(&self.keys[who]),
        )
    }

    /// Every request the upstream received.
    fn upstream_got(&self) -> Vec<Got> {
        self.seen.lock().unwrap().clone()
    }

    /// The gateway's decision records.
    fn decisions(&self) -> Vec<Value> {
        spool_text(&self.audit_dir)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l.rsplit_once('\t')?.0).ok())
            .filter(|l| l["type"] == "decision")
            .map(|l| l["body"].clone())
            .collect()
    }
}

/// What the agent received for one exchange.
#[derive(Debug)]
struct AgentGot {
    status: StatusCode,
    /// A reason phrase other than the status's canonical one.
    reason: Option<Vec<u8>>,
    headers: HeaderMap,
    body: Bytes,
}

impl AgentGot {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Header names, sorted.
    fn header_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.headers.keys().map(|k| k.to_string()).collect();
        names.sort();
        names.dedup();
        names
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The SSE events of the body.
    fn events(&self) -> Vec<Event> {
        let mut d = Decoder::new(usize::MAX);
        let mut out = Vec::new();
        d.push(&self.body, &mut out).unwrap();
        out
    }

    /// The JSON-RPC messages: the JSON body, or every SSE event's data that
    /// is not empty.
    fn messages(&self) -> Vec<Value> {
        if self.header("content-type") == Some("text/event-stream") {
            self.events()
                .into_iter()
                .filter_map(|e| e.data.filter(|d| !d.is_empty()))
                .map(|d| serde_json::from_str(&d).unwrap())
                .collect()
        } else if self.body.is_empty() {
            Vec::new()
        } else {
            vec![serde_json::from_slice(&self.body).unwrap()]
        }
    }

    /// No secret in the status line, any header name or value, or the body.
    fn assert_clean(&self) {
        let mut places: Vec<(String, Vec<u8>)> = vec![
            ("the body".into(), self.body.to_vec()),
            (
                "the reason phrase".into(),
                self.reason.clone().unwrap_or_default(),
            ),
        ];
        for (name, value) in &self.headers {
            places.push((format!("header {name}"), value.as_bytes().to_vec()));
            places.push(("a header name".into(), name.as_str().as_bytes().to_vec()));
        }
        for (place, bytes) in places {
            let text = String::from_utf8_lossy(&bytes);
            for secret in NEVER {
                assert!(
                    !text.contains(secret),
                    "'{secret}' reached the agent in {place}: {text}"
                );
            }
        }
    }
}

/// Sends `body` as the agent and collects the whole reply (bounded), which
/// must carry no secret.
async fn exchange(c: &McpClient, method: Method, body: &str, extra: &[(&str, &str)]) -> AgentGot {
    let resp = within(
        "the agent's response",
        c.send_streaming(method, Bytes::from(body.to_owned()), extra),
    )
    .await
    .unwrap();
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| r.as_bytes().to_vec());
    let (parts, body) = resp.into_parts();
    let body = within("the agent's response body", body.collect())
        .await
        .unwrap()
        .to_bytes();
    let got = AgentGot {
        status: parts.status,
        reason,
        headers: parts.headers,
        body,
    };
    got.assert_clean();
    got
}

async fn post(c: &McpClient, body: &str) -> AgentGot {
    exchange(c, Method::POST, body, &[]).await
}

/// A `tools/call` of `name` with id 1.
fn call(name: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {}}})
        .to_string()
}

/// True for an id only the gateway could have made (URL-safe base64 of a
/// sealed box: long, and of that alphabet only).
fn looks_minted(id: &str) -> bool {
    portcullis::session::owner::stamped(id).is_some()
        && id.split_once('.').is_some_and(|(_, sealed)| {
            sealed.len() >= 40
                && sealed
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

const GATEWAY_JSON_HEADERS: &[&str] = &["content-length", "content-type", "date"];
