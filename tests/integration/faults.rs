//! Faults: slow clients, dead and hanging upstreams, crashing stdio servers.

use std::collections::HashMap;
use std::time::Duration;

use portcullis::client::McpClient;
use portcullis::config::gateway::default_limits;
use portcullis::config::upstream::UpstreamSpec;
use portcullis::relay::auth::AgentAuth;
use portcullis::relay::{Relay, RelaySettings};
use portcullis::secret;
use portcullis::tunnel::dial::ProxyConfig;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test]
async fn slow_header_senders_are_cut_off() {
    let mut settings = RelaySettings::new(AgentAuth::default(), Default::default());
    settings.header_read_timeout = Duration::from_millis(300);
    let relay = Relay::new(settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(relay.serve_agents(listener, None, Default::default()));
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /t/a/b/mcp HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    // The relay closes the connection instead of waiting for the rest.
    let mut buf = Vec::new();
    // Ok (EOF) or a reset: either way the read ends, which is the point.
    let _ = within("relay to drop the slow client", tcp.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

/// One tunnel to `upstreams`; returns a client for `server`.
async fn through(
    server: &str,
    upstreams: HashMap<String, portcullis::gateway::Upstream>,
) -> (McpClient, OneTunnel) {
    let t = OneTunnel::start().await;
    let _gw = t.gateway(upstreams, 1, ProxyConfig::default()).await;
    (t.client(server), t)
}

#[tokio::test]
async fn a_dead_http_upstream_is_a_clear_502() {
    // Bind and drop: nothing listens there any more.
    let port = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ups = HashMap::from([(
        "crm".to_owned(),
        http_upstream("crm", &format!("http://127.0.0.1:{port}/mcp")),
    )]);
    let (mut c, _relay) = through("crm", ups).await;
    let reply = c.request("ping", json!({})).await.unwrap();
    assert_eq!(reply.status, 502);
    let msg = reply.last().unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(msg.contains("server 'crm' is not reachable"), "{msg}");
    assert!(
        !msg.contains(&port.to_string()),
        "internal address leaked: {msg}"
    );
    assert_eq!(reply.last().unwrap()["id"], 1);
}

#[tokio::test]
async fn a_hanging_upstream_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Accepts and holds connections without ever answering.
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let mut limits = default_limits();
    limits.call_timeout = Duration::from_millis(300);
    let up = UpstreamSpec::parse(&format!("http://{addr}/mcp"))
        .unwrap()
        .build("slow", limits)
        .unwrap();
    let (mut c, _relay) = through("slow", HashMap::from([("slow".to_owned(), up)])).await;
    let reply = within("timeout answer", c.request("ping", json!({})))
        .await
        .unwrap();
    assert_eq!(reply.status, 504);
    assert!(
        reply.last().unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out after 300 ms")
    );
}

#[tokio::test]
async fn stdio_servers_that_fail_are_clear_errors() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(secret::random_id());
    std::fs::create_dir_all(&dir).unwrap();
    // Reads one message, then dies without answering.
    let crash = dir.join("crash.sh");
    std::fs::write(&crash, "#!/bin/sh\nread line\nexit 3\n").unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&crash)
        .status()
        .unwrap();
    let ups = HashMap::from([
        (
            "missing".to_owned(),
            UpstreamSpec::parse("stdio:/nonexistent/mcp-server --flag")
                .unwrap()
                .build("missing", default_limits())
                .unwrap(),
        ),
        (
            "crash".to_owned(),
            UpstreamSpec::parse(&format!("stdio:{}", crash.display()))
                .unwrap()
                .build("crash", default_limits())
                .unwrap(),
        ),
    ]);
    let (mut c, stack) = through("missing", ups).await;
    let err = c.initialize().await.unwrap_err().to_string();
    assert!(
        err.contains("502") && err.contains("could not be started"),
        "{err}"
    );
    assert!(!err.contains("nonexistent"), "command line leaked: {err}");

    let mut c = stack.client("crash");
    let reply = within("crash answer", c.request("initialize", json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}))).await.unwrap();
    let last = reply.last().unwrap();
    assert_eq!(last["id"], 1, "{last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the server process ended"),
        "{last}"
    );
}

/// An HTTP upstream that answers every request with `response` (raw
/// HTTP/1.1 bytes) and then holds the connection open.
async fn canned_upstream(response: &'static str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp.write_all(response.as_bytes()).await;
            held.push(tcp);
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_that_breaks_the_protocol_is_named_as_such() {
    let two = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 72\r\n\r\n\
               {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}";
    let html = "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 20\r\n\r\n<h1>Intranet</h1>   ";
    let held = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"jsonrpc\":";
    let mut limits = default_limits();
    limits.call_timeout = Duration::from_millis(500);
    let mut ups = HashMap::new();
    for (name, response) in [("two", two), ("html", html), ("held", held)] {
        let addr = canned_upstream(response).await;
        let up = UpstreamSpec::parse(&format!("http://{addr}/mcp"))
            .unwrap()
            .build(name, limits)
            .unwrap();
        ups.insert(name.to_owned(), up);
    }
    let (_c, stack) = through("two", ups).await;
    let cases = [
        (
            "two",
            502,
            "Invalid response from the upstream: the body is not exactly one JSON-RPC message",
        ),
        (
            "html",
            502,
            "Invalid response from the upstream: a non-JSON body is not an MCP message",
        ),
        ("held", 504, "Upstream timed out after 500 ms"),
    ];
    for (server, status, message) in cases {
        let mut c = stack.client(server);
        let reply = within(server, c.request("ping", json!({}))).await.unwrap();
        assert_eq!(reply.status, status, "{server}");
        let last = reply.last().unwrap();
        assert_eq!(last["error"]["message"], message, "{server}: {last}");
        assert_eq!(last["error"]["code"], -32603);
        assert_eq!(last["id"], 1);
        // Nothing the upstream wrote reaches the agent.
        assert!(!String::from_utf8_lossy(&reply.body).contains("Intranet"));
    }
}

#[tokio::test]
async fn a_stdio_reply_with_keys_differing_only_in_case_never_leaves() {
    let dir = scratch();
    // Answers initialize with `status` and `Status` in one object.
    let server = dir.join("colliding.sh");
    std::fs::write(
        &server,
        "#!/bin/sh\nread line\necho '{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{},\"serverInfo\":{\"name\":\"x\",\"version\":\"0\"},\"status\":\"ok\",\"Status\":\"refunded\"}}'\nread line\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&server)
        .status()
        .unwrap();
    let ups = HashMap::from([(
        "collide".to_owned(),
        UpstreamSpec::parse(&format!("stdio:{}", server.display()))
            .unwrap()
            .build("collide", default_limits())
            .unwrap(),
    )]);
    let (mut c, _stack) = through("collide", ups).await;
    let reply = within(
        "the refused reply",
        c.request("initialize", json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}})),
    )
    .await
    .unwrap();
    let body = String::from_utf8_lossy(&reply.body);
    assert!(!body.contains("refunded"), "{body}");
    assert!(
        reply.messages.iter().all(|m| m.get("result").is_none()),
        "{body}"
    );
}
