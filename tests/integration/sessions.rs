//! Sessions belong to their principal: another agent presenting a session
//! id gets exactly what an unknown id gets, at the relay and, on its own, at
//! the gateway; nothing of its request reaches the upstream, the owner's
//! session carries on, and both audit chains name the attempt.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::audit::{AuditMode, Spool, SpoolConfig};
use portcullis::client::{McpClient, Reply};
use portcullis::config::gateway::default_limits;
use portcullis::config::upstream::UpstreamSpec;
use portcullis::gateway::{Gateway, Upstream};
use portcullis::secret;
use portcullis::tls::GeneratedCa;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// The body of every request that presents a session id: a canary that
/// must never reach an upstream.
const CANARY: &str = "CANARY-stranger-request";

fn spool(dir: &Path) -> Arc<Spool> {
    Arc::new(Spool::open(SpoolConfig::new(dir.to_owned(), AuditMode::BestEffort)).unwrap())
}

/// The subject `start_relay` gives a key.
fn subject(key: &str) -> String {
    format!("agent-{}", &key[..8])
}

/// Relays (each with its own audit chain) for one tunnel that agents A and
/// B may both use, and one gateway connected to every relay.
struct Stack {
    ca: Arc<GeneratedCa>,
    cred: TunnelCred,
    key_a: String,
    key_b: String,
    relays: Vec<TestRelay>,
    relay_audit: Vec<PathBuf>,
    gateway: Arc<Gateway>,
    gateway_audit: PathBuf,
    stop: CancellationToken,
}

impl Stack {
    async fn start(relays: usize, upstreams: HashMap<String, Upstream>) -> Stack {
        let ca = Arc::new(GeneratedCa::new("sessions CA").unwrap());
        let cred = TunnelCred::new();
        let key_a = secret::generate(secret::AGENT_KEY_PREFIX);
        let key_b = secret::generate(secret::AGENT_KEY_PREFIX);
        assert_ne!(subject(&key_a), subject(&key_b));
        let agents = [
            (key_a.as_str(), vec![cred.id.clone()]),
            (key_b.as_str(), vec![cred.id.clone()]),
        ];
        let mut started = Vec::new();
        let mut relay_audit = Vec::new();
        for _ in 0..relays {
            let r = start_relay(ca.clone(), &[&cred], &agents, None, None).await;
            let dir = scratch();
            r.relay.set_audit(spool(&dir));
            started.push(r);
            relay_audit.push(dir);
        }
        let gateway_audit = scratch();
        let (gateway, stop) =
            audited_gateway(&ca, &cred, &started, upstreams, &gateway_audit).await;
        Stack {
            ca,
            cred,
            key_a,
            key_b,
            relays: started,
            relay_audit,
            gateway,
            gateway_audit,
            stop,
        }
    }

    /// An agent client through relay `relay`, presenting `session`.
    fn client(&self, relay: usize, key: &str, server: &str, session: Option<&str>) -> McpClient {
        let mut c = McpClient::new(&self.relays[relay].url(&self.cred.id, server), Some(key));
        c.session = session.map(str::to_owned);
        c
    }

    /// Every decision record of relay `relay` (`None`: of the gateway).
    async fn decisions(&self, relay: Option<usize>) -> Vec<Value> {
        let dir = match relay {
            Some(i) => {
                self.relays[i].relay.audit().unwrap().flush().await.unwrap();
                &self.relay_audit[i]
            }
            None => {
                self.gateway.audit().unwrap().flush().await.unwrap();
                &self.gateway_audit
            }
        };
        spool_text(dir)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l.rsplit_once('\t')?.0).ok())
            .filter(|v| v["type"] == "decision")
            .map(|v| v["body"].clone())
            .collect()
    }
}

/// A gateway serving `upstreams` into the spool at `audit`, with one
/// tunnel connection to each relay.
async fn audited_gateway(
    ca: &GeneratedCa,
    cred: &TunnelCred,
    relays: &[TestRelay],
    upstreams: HashMap<String, Upstream>,
    audit: &Path,
) -> (Arc<Gateway>, CancellationToken) {
    let gateway = Gateway::new(upstreams, default_limits());
    gateway.set_audit(spool(audit));
    let stop = connect_gateway(ca, cred, relays, &gateway).await;
    (gateway, stop)
}

/// Extra request headers.
type Extra = &'static [(&'static str, &'static str)];

/// The three ways to present a session id: a request, a resumed GET
/// stream, and a DELETE.
fn presentations() -> [(Method, Bytes, Extra); 3] {
    let ping = json!({"jsonrpc": "2.0", "id": CANARY, "method": "ping"});
    [
        (Method::POST, Bytes::from(ping.to_string()), &[]),
        (Method::GET, Bytes::new(), &[("last-event-id", "7")]),
        (Method::DELETE, Bytes::new(), &[]),
    ]
}

fn header_names(h: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = h.keys().map(|k| k.as_str().to_owned()).collect();
    names.sort();
    names
}

/// Agent B presents `owned` (A's session) through relay `relay` each way
/// and must get, byte for byte, what an id nobody holds gets; so must A
/// presenting an id nobody holds (fail closed for everyone).
async fn assert_refused_as_unknown(s: &Stack, relay: usize, server: &str, owned: &str) {
    for (method, body, extra) in presentations() {
        let send = |key: &str, session: &str| {
            let c = s.client(relay, key, server, Some(session));
            let (method, body) = (method.clone(), body.clone());
            async move { c.send(method, body, extra).await.unwrap() }
        };
        let unknown = send(&s.key_b, &secret::random_id()).await;
        let stranger = send(&s.key_b, owned).await;
        let unknown_to_a = send(&s.key_a, &secret::random_id()).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{method}");
        let error: Value = serde_json::from_slice(&unknown.body).unwrap();
        assert_eq!(error["error"]["code"], -32001, "{method}: {error}");
        assert_eq!(error["error"]["message"], "Session not found");
        for (who, r) in [
            ("B with A's session", &stranger),
            ("A, unknown", &unknown_to_a),
        ] {
            assert_eq!(r.status, unknown.status, "{method}, {who}");
            assert_eq!(r.body, unknown.body, "{method}, {who}");
            assert_eq!(header_names(&r.headers), header_names(&unknown.headers));
            assert_eq!(r.headers["content-type"], unknown.headers["content-type"]);
        }
        let text = String::from_utf8_lossy(&stranger.body);
        assert!(
            !text.contains(&subject(&s.key_a)),
            "the owner leaked: {text}"
        );
    }
}

/// `records` holds a refused record of B presenting `session` for each
/// presentation, naming B and never A.
fn assert_attempts_recorded(records: &[Value], s: &Stack, session: &str) {
    let refused: Vec<&Value> = records
        .iter()
        .filter(|d| d["outcome"] == "refused" && d["session_id"] == session)
        .collect();
    assert_eq!(refused.len(), 3, "one per presentation: {refused:?}");
    for d in refused {
        assert_eq!(d["subject"], subject(&s.key_b), "{d}");
        assert_eq!(d["reason"], "Session not found", "{d}");
        assert_eq!(d["direction"], "to-server", "{d}");
    }
}

/// What the counting upstream received.
#[derive(Clone, Default)]
struct Received {
    requests: Arc<Mutex<Vec<(Method, HeaderMap, Bytes)>>>,
    sessions: Arc<Mutex<HashSet<String>>>,
}

impl Received {
    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn any_canary(&self) -> bool {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .any(|(_, _, body)| String::from_utf8_lossy(body).contains(CANARY))
    }
}

fn reply(status: u16, ctype: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// A Streamable HTTP upstream that mints sessions on `initialize`, answers
/// requests, a GET stream (one event with an id) and DELETE within its
/// sessions, 404 outside them, and records every request it receives.
async fn counting_upstream() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let received = Received::default();
    let r = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let r = r.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = r.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.unwrap().to_bytes();
                    r.requests.lock().unwrap().push((
                        parts.method.clone(),
                        parts.headers.clone(),
                        body.clone(),
                    ));
                    let session = parts
                        .headers
                        .get("mcp-session-id")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let live = session
                        .as_ref()
                        .is_some_and(|s| r.sessions.lock().unwrap().contains(s));
                    let msg: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let resp = match (&parts.method, session) {
                        (&Method::POST, None) if msg["method"] == "initialize" => {
                            let sid = secret::random_id();
                            r.sessions.lock().unwrap().insert(sid.clone());
                            let result = json!({"jsonrpc": "2.0", "id": msg["id"], "result": {
                                "protocolVersion": "2025-11-25", "capabilities": {},
                                "serverInfo": {"name": "counting", "version": "0"}}});
                            let mut resp = reply(200, "application/json", result.to_string());
                            resp.headers_mut()
                                .insert("mcp-session-id", sid.parse().unwrap());
                            resp
                        }
                        (_, Some(_)) if !live => reply(404, "text/plain", "no such session".into()),
                        (&Method::POST, Some(_)) if msg.get("id").is_some() => {
                            let result = json!({"jsonrpc": "2.0", "id": msg["id"], "result": {}});
                            reply(200, "application/json", result.to_string())
                        }
                        (&Method::POST, Some(_)) => reply(202, "text/plain", String::new()),
                        (&Method::GET, Some(_)) => {
                            let note = json!({"jsonrpc": "2.0", "method": "notifications/message",
                                              "params": {"level": "info", "data": "resumed"}});
                            reply(200, "text/event-stream", format!("id: 8\ndata: {note}\n\n"))
                        }
                        (&Method::DELETE, Some(s)) => {
                            r.sessions.lock().unwrap().remove(&s);
                            reply(200, "text/plain", String::new())
                        }
                        _ => reply(400, "text/plain", "unexpected".into()),
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (url, received)
}

fn upstreams(name: &str, spec: &str) -> HashMap<String, Upstream> {
    let upstream = UpstreamSpec::parse(spec)
        .unwrap()
        .build(name, default_limits())
        .unwrap();
    HashMap::from([(name.to_owned(), upstream)])
}

/// An executable shell script in a fresh directory.
fn script(text: &str) -> PathBuf {
    let path = scratch().join("server.sh");
    std::fs::write(&path, text).unwrap();
    let made = std::process::Command::new("chmod")
        .arg("+x")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    path
}

async fn initialize(s: &Stack, relay: usize, server: &str) -> (McpClient, String) {
    let mut a = s.client(relay, &s.key_a, server, None);
    a.initialize().await.unwrap();
    let session = a.session.clone().expect("the upstream minted a session");
    (a, session)
}

/// `a`'s session is now answered exactly as an id never minted is.
async fn assert_answered_as_never_minted(a: &mut McpClient) {
    let gone = ping(a).await;
    a.session = Some(secret::random_id());
    let unknown = ping(a).await;
    assert_eq!(unknown.status, 404);
    assert_eq!((gone.status, &gone.body), (unknown.status, &unknown.body));
}

async fn ping(c: &mut McpClient) -> Reply {
    c.request("ping", json!({})).await.unwrap()
}

#[tokio::test]
async fn another_agents_http_session_is_answered_as_if_it_did_not_exist() {
    let (url, received) = counting_upstream().await;
    let s = Stack::start(1, upstreams("crm", &url)).await;
    let (mut a, session) = initialize(&s, 0, "crm").await;
    let before = received.count();

    assert_refused_as_unknown(&s, 0, "crm", &session).await;
    assert_eq!(
        received.count(),
        before,
        "a refused request reached the upstream"
    );

    // A's session carries on: B's DELETE did not end it.
    let r = ping(&mut a).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.last().unwrap()["result"], json!({}));
    let r = a.send(Method::GET, Bytes::new(), &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.last().unwrap()["params"]["data"], "resumed");
    // A resumes from the id the gateway minted for the upstream's "8".
    let mut events = Vec::new();
    portcullis::mcp::sse::Decoder::new(usize::MAX)
        .push(&r.body, &mut events)
        .unwrap();
    let minted = events[0].id.clone().unwrap();
    assert_ne!(minted, "8");
    let r = a
        .send(Method::GET, Bytes::new(), &[("last-event-id", &minted)])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(!received.any_canary());
    {
        let requests = received.requests.lock().unwrap();
        let (_, headers, _) = requests.last().unwrap();
        assert_eq!(headers["last-event-id"], "8", "A's resumption went on");
    }

    // The relay refused B itself: its chain names the attempts, and the
    // gateway never saw them.
    assert_attempts_recorded(&s.decisions(Some(0)).await, &s, &session);
    let gateway = s.decisions(None).await;
    assert!(
        !gateway
            .iter()
            .any(|d| d["session_id"] == session && d["subject"] == subject(&s.key_b)),
        "{gateway:?}"
    );
    // The ids nobody held were refused at the gateway, for A and B alike.
    let unknown: Vec<&Value> = gateway
        .iter()
        .filter(|d| d["outcome"] == "refused" && d["reason"] == "Session not found")
        .collect();
    assert_eq!(unknown.len(), 6, "{unknown:?}");

    // The owner's DELETE ends the session and its binding.
    let deleted = a.send(Method::DELETE, Bytes::new(), &[]).await.unwrap();
    assert_eq!(deleted.status, 200);
    let after = received.count();
    let gone = ping(&mut a).await;
    a.session = Some(secret::random_id());
    let unknown = ping(&mut a).await;
    assert_eq!((gone.status, &gone.body), (unknown.status, &unknown.body));
    assert_eq!(
        received.count(),
        after,
        "an ended session reached the upstream"
    );
}

#[tokio::test]
async fn another_agents_stdio_session_is_answered_as_if_it_did_not_exist() {
    let python = require(peers_dir().join("venv/bin/python"));
    // The real server, with everything it reads copied to a file.
    let log = scratch().join("stdin.log");
    let server = script(&format!(
        "#!/bin/sh\ntee -a '{}' | exec '{}' -m mcp_server_time --local-timezone UTC\n",
        log.display(),
        python.display()
    ));
    let s = Stack::start(1, upstreams("time", &format!("stdio:{}", server.display()))).await;
    let (mut a, session) = initialize(&s, 0, "time").await;

    assert_refused_as_unknown(&s, 0, "time", &session).await;

    // A's session carries on (B's DELETE did not end the process), and
    // once the server has answered A, everything before reached its stdin:
    // none of B's requests did.
    let r = a
        .request(
            "tools/call",
            json!({"name": "get_current_time", "arguments": {"timezone": "UTC"}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let text = r.last().unwrap()["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("UTC"), "{text}");
    let stdin = std::fs::read_to_string(&log).unwrap();
    assert!(stdin.contains("get_current_time"), "{stdin}");
    assert!(
        !stdin.contains(CANARY),
        "a refused request reached the server: {stdin}"
    );
    let stream = a
        .send_streaming(Method::GET, Bytes::new(), &[])
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    drop(stream);

    assert_attempts_recorded(&s.decisions(Some(0)).await, &s, &session);

    // The owner's DELETE ends the process and the binding.
    let deleted = a.send(Method::DELETE, Bytes::new(), &[]).await.unwrap();
    assert_eq!(deleted.status, 200);
    assert_answered_as_never_minted(&mut a).await;
}

#[tokio::test]
async fn a_stdio_session_that_ends_takes_its_binding_with_it() {
    // Answers initialize, reads the notification, then exits on the next
    // request without answering it.
    let server = script(concat!(
        "#!/bin/sh\nread line\n",
        r#"echo '{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"brief","version":"0"}}}'"#,
        "\nread line\nread line\nexit 0\n"
    ));
    let s = Stack::start(
        1,
        upstreams("brief", &format!("stdio:{}", server.display())),
    )
    .await;
    let (mut a, _) = initialize(&s, 0, "brief").await;
    let ended = within("the exit", ping(&mut a)).await;
    let error = ended.last().unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("the server process ended"), "{error}");
    // The session's id is now unknown, with the very answer of an id never
    // minted (the stdio upstream's own "not found" would carry the request id).
    assert_answered_as_never_minted(&mut a).await;
}

#[tokio::test]
async fn the_gateway_refuses_another_agents_session_on_its_own() {
    // Two relays share nothing: a session opened through the first is new
    // to the second, which lets it pass to the gateway.
    let (url, received) = counting_upstream().await;
    let s = Stack::start(2, upstreams("crm", &url)).await;
    let (_, session) = initialize(&s, 0, "crm").await;
    // The owner may use it through either relay.
    let mut a_elsewhere = s.client(1, &s.key_a, "crm", Some(&session));
    assert_eq!(ping(&mut a_elsewhere).await.status, 200);
    let before = received.count();

    assert_refused_as_unknown(&s, 1, "crm", &session).await;
    assert_eq!(
        received.count(),
        before,
        "a refused request reached the upstream"
    );
    assert!(!received.any_canary());
    assert_eq!(ping(&mut a_elsewhere).await.status, 200);

    // The second relay forwarded B (it could not know); the gateway
    // refused and recorded each attempt.
    let relay = s.decisions(Some(1)).await;
    let forwarded = relay
        .iter()
        .filter(|d| d["session_id"] == session && d["subject"] == subject(&s.key_b))
        .filter(|d| d["outcome"] == "forwarded")
        .count();
    assert_eq!(forwarded, 3, "{relay:?}");
    assert_attempts_recorded(&s.decisions(None).await, &s, &session);
}

#[tokio::test]
async fn after_a_gateway_restart_no_session_is_usable_until_initialized_again() {
    let (url, received) = counting_upstream().await;
    let mut s = Stack::start(1, upstreams("crm", &url)).await;
    let (mut a, session) = initialize(&s, 0, "crm").await;
    s.stop.cancel();
    within(
        "the old gateway's disconnect",
        s.relays[0]
            .relay
            .registry()
            .wait_until(&s.cred.id, |n| n == 0),
    )
    .await;
    let audit = scratch();
    let (gateway, stop) =
        audited_gateway(&s.ca, &s.cred, &s.relays, upstreams("crm", &url), &audit).await;
    (s.gateway, s.stop, s.gateway_audit) = (gateway, stop, audit);

    // The upstream still holds the session, but the new gateway never
    // bound it: refused, for its owner too, without reaching the upstream.
    let before = received.count();
    let refused = ping(&mut a).await;
    let mut unknown = s.client(0, &s.key_a, "crm", Some(&secret::random_id()));
    let unknown = ping(&mut unknown).await;
    assert_eq!(refused.status, 404);
    assert_eq!(
        (refused.status, &refused.body),
        (unknown.status, &unknown.body)
    );
    assert_eq!(received.count(), before);
    // (It knows the session by its own id, never the one the agent holds.)
    let upstream_sessions = received.sessions.lock().unwrap().clone();
    assert_eq!(upstream_sessions.len(), 1);
    assert!(!upstream_sessions.contains(&session));

    // What a client does on 404: initialize again, and carry on.
    a.session = None;
    a.initialize().await.unwrap();
    assert_ne!(a.session.as_deref(), Some(session.as_str()));
    assert_eq!(ping(&mut a).await.status, 200);
}

#[tokio::test]
async fn a_task_belongs_to_the_principal_that_created_it() {
    // The upstream hands out task T-7 and returns its output to anyone who
    // asks, for any task id: the gateway must not.
    let url = json_upstream(|req| {
        let id = req.get("id")?.clone();
        let result = match req["method"].as_str() {
            Some("tools/call") => json!({"resultType": "task", "taskId": "T-7", "status": "working",
                                         "createdAt": "2026-12-01T00:00:00Z", "lastUpdatedAt": "2026-12-01T00:00:00Z", "ttlMs": 60000}),
            Some("tasks/get") => json!({"taskId": req["params"]["taskId"], "status": "completed",
                                        "result": {"content": [{"type": "text", "text": "TASK-OUTPUT-CANARY"}]}}),
            _ => json!({}),
        };
        Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
    })
    .await;
    let s = Stack::start(1, upstreams("jobs", &format!("http://{url}/mcp"))).await;
    let post = |key: &str, method: &str, params: Value| {
        let c = s.client(0, key, "jobs", None);
        let mut params = params;
        params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                 "io.modelcontextprotocol/clientCapabilities": {}});
        let body = json!({"jsonrpc": "2.0", "id": 3, "method": method, "params": params});
        let mut headers = vec![
            ("mcp-protocol-version", "2026-07-28".to_owned()),
            ("mcp-method", method.to_owned()),
        ];
        if let Some(name) = params["name"].as_str() {
            headers.push(("mcp-name", name.to_owned()));
        }
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = c
                .send(Method::POST, Bytes::from(body.to_string()), &headers)
                .await
                .unwrap();
            (
                String::from_utf8_lossy(&r.body).into_owned(),
                r.last().cloned().unwrap(),
            )
        }
    };
    let (_, created) = post(
        &s.key_a,
        "tools/call",
        json!({"name": "export", "arguments": {}}),
    )
    .await;
    assert_eq!(created["result"]["taskId"], "T-7", "{created}");
    // The creator reads its task's output.
    let (_, mine) = post(&s.key_a, "tasks/get", json!({"taskId": "T-7"})).await;
    assert_eq!(
        mine["result"]["result"]["content"][0]["text"],
        "TASK-OUTPUT-CANARY"
    );
    // Another agent, and an id never created here, get no output at all.
    for (key, task) in [(&s.key_b, "T-7"), (&s.key_a, "T-8")] {
        let (body, reply) = post(key, "tasks/get", json!({"taskId": task})).await;
        assert_eq!(reply["error"]["code"], -32602, "{reply}");
        assert_eq!(reply["error"]["message"], "Unknown task");
        assert!(!body.contains("CANARY"), "{body}");
    }
}
