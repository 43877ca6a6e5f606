//! What crosses the tunnel and what does not: credentials, bad messages,
//! protocol headers, Host/Origin checks, SSE.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use portcullis::client::McpClient;
use portcullis::tunnel::dial::ProxyConfig;
use portcullis::up::{self, UpOptions};
use serde_json::json;

use crate::support::*;

/// A relay + gateway in front of the recording upstream.
async fn recorded() -> (OneTunnel, String, String, Seen) {
    let t = OneTunnel::start().await;
    let (addr, seen) = recording_upstream().await;
    let ups = HashMap::from([(
        "rec".to_owned(),
        http_upstream("rec", &format!("http://{addr}/mcp")),
    )]);
    let _gw = t.gateway(ups, 1, ProxyConfig::default()).await;
    let url = t.relay.url(&t.cred.id, "rec");
    let key = t.key.clone();
    (t, url, key, seen)
}

#[tokio::test]
async fn agent_credentials_never_reach_the_upstream() {
    let (_relay, url, key, seen) = recorded().await;
    let c = McpClient::new(&url, Some(&key));
    let body = Bytes::from(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
    let extra = [
        ("cookie", "session=agent-cookie"),
        ("x-forwarded-for", "203.0.113.9"),
        ("portcullis-principal", "forged"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ];
    let reply = c.send(Method::POST, body, &extra).await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(
        reply.headers.get("x-internal-secret").is_none(),
        "upstream-only header leaked"
    );
    let all = seen.all();
    assert_eq!(all.len(), 1);
    let (headers, _) = &all[0];
    for h in headers.keys() {
        let v = headers[h].to_str().unwrap_or("");
        assert!(!v.contains(&key), "agent key reached the upstream in {h}");
    }
    for banned in [
        "authorization",
        "cookie",
        "x-forwarded-for",
        "portcullis-principal",
    ] {
        assert!(
            headers.get(banned).is_none(),
            "{banned} reached the upstream"
        );
    }
    assert!(
        headers.get("traceparent").is_some(),
        "trace context must pass"
    );
}

#[tokio::test]
async fn bad_messages_are_rejected_and_never_forwarded() {
    let (_relay, url, key, seen) = recorded().await;
    let c = McpClient::new(&url, Some(&key));
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"a":{}1{}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"a":"{}"}}}}"#,
        "x".repeat(portcullis::limits::MAX_MESSAGE_BYTES + 1)
    );
    let cases: Vec<(&str, String, u16, i64)> = vec![
        (
            "truncated",
            r#"{"jsonrpc":"2.0","id":1,"#.into(),
            400,
            -32700,
        ),
        ("not json", "hello".into(), 400, -32700),
        (
            "batch",
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#.into(),
            400,
            -32600,
        ),
        (
            "no version",
            r#"{"id":1,"method":"ping"}"#.into(),
            400,
            -32600,
        ),
        (
            "object id",
            r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#.into(),
            400,
            -32600,
        ),
        (
            "duplicate key",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#.into(),
            400,
            -32600,
        ),
        (
            "duplicate argument",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"refund","arguments":{"amount":1,"amount":900}}}"#.into(),
            400,
            -32600,
        ),
        ("too deep", deep, 400, -32600),
        ("too large", huge, 413, -32600),
    ];
    for (what, body, status, code) in cases {
        let reply = c.send(Method::POST, Bytes::from(body), &[]).await.unwrap();
        assert_eq!(reply.status.as_u16(), status, "{what}");
        assert_eq!(reply.last().unwrap()["error"]["code"], code, "{what}");
    }
    // A huge body without Content-Length is cut while streaming.
    assert!(
        seen.all().is_empty(),
        "a rejected message reached the upstream"
    );
    let ok = c
        .send(
            Method::POST,
            Bytes::from(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(seen.all().len(), 1);
}

/// A policy with no plugins that lets `servers` send keys differing only
/// in case.
async fn allowing_case_colliding_keys(servers: &str) -> Arc<portcullis::policy::Policy> {
    let dir = scratch();
    let path = dir.join("policy.toml");
    std::fs::write(
        &path,
        format!("[messages]\nallow_case_colliding_keys = {servers}\n"),
    )
    .unwrap();
    let engine = portcullis::plugin::PluginEngine::new(None).unwrap();
    let catalog = Arc::new(portcullis::policy::catalog::Catalog::default());
    Arc::new(
        portcullis::policy::load(&path, &engine, catalog)
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn keys_that_differ_only_in_case_are_refused_both_ways_unless_the_policy_allows() {
    let t = OneTunnel::start().await;
    let (addr, seen) = answering_upstream(r#"{"status":"ok","Status":"refunded"}"#).await;
    let ups = HashMap::from([(
        "rec".to_owned(),
        http_upstream("rec", &format!("http://{addr}/mcp")),
    )]);
    let (gw, _stop, _task) = t.gateway(ups, 1, ProxyConfig::default()).await;
    let c = t.client("rec");
    let call = Bytes::from(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"refund","arguments":{"amount":1,"Amount":900}}}"#,
    );
    let ping = Bytes::from(r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#);
    for policy in [
        None,
        Some(allowing_case_colliding_keys(r#"["other"]"#).await),
    ] {
        gw.set_policy(policy);
        let reply = c.send(Method::POST, call.clone(), &[]).await.unwrap();
        assert_eq!(reply.status, 400);
        let error = &reply.last().unwrap()["error"];
        assert_eq!(error["code"], -32600);
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(r#""/params/arguments""#) && message.contains(r#""Amount""#),
            "{message}"
        );
        assert!(!message.contains("900"), "a value was quoted: {message}");
        assert!(seen.all().is_empty(), "a refused request was forwarded");
        // The upstream's reply holds `status` and `Status`: it never leaves.
        let reply = c.send(Method::POST, ping.clone(), &[]).await.unwrap();
        let body = String::from_utf8_lossy(&reply.body);
        assert_eq!(reply.last().unwrap()["error"]["code"], -32603, "{body}");
        assert!(!body.contains("refunded"), "{body}");
        seen.requests.lock().unwrap().clear();
    }
    // Allowed for this server (or every server): both pass unchanged.
    for servers in [r#"["rec"]"#, r#"["*"]"#] {
        gw.set_policy(Some(allowing_case_colliding_keys(servers).await));
        let reply = c.send(Method::POST, call.clone(), &[]).await.unwrap();
        assert_eq!(reply.status, 200, "{servers}");
        assert_eq!(reply.last().unwrap()["result"]["Status"], "refunded");
        assert_eq!(seen.all().last().unwrap().1, call);
    }
}

#[tokio::test]
async fn stateless_era_headers_must_match_the_body() {
    let (_relay, url, key, seen) = recorded().await;
    let c = McpClient::new(&url, Some(&key));
    let body = |name: &str| {
        Bytes::from(
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name,"arguments":{},
                   "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}})
            .to_string(),
        )
    };
    let v = ("mcp-protocol-version", "2026-07-28");
    let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
        (
            vec![v, ("mcp-method", "tools/call"), ("mcp-name", "refund")],
            200,
        ),
        (
            vec![v, ("mcp-method", "tools/call"), ("mcp-name", " refund ")],
            200,
        ),
        (
            vec![v, ("mcp-method", "tools/list"), ("mcp-name", "refund")],
            400,
        ),
        (
            vec![v, ("mcp-method", "tools/call"), ("mcp-name", "delete_all")],
            400,
        ),
        (vec![v, ("mcp-method", "tools/call")], 400),
        (vec![v, ("mcp-name", "refund")], 400),
    ];
    for (headers, status) in cases {
        let reply = c
            .send(Method::POST, body("refund"), &headers)
            .await
            .unwrap();
        assert_eq!(reply.status.as_u16(), status, "{headers:?}");
        if status == 400 {
            assert_eq!(
                reply.last().unwrap()["error"]["code"],
                -32020,
                "{headers:?}"
            );
        }
    }
    assert_eq!(seen.all().len(), 2, "only matching requests are forwarded");
}

#[tokio::test]
async fn host_and_origin_are_checked() {
    let (t, url, key, seen) = recorded().await;
    let relay = &t.relay;
    let c = McpClient::new(&url, Some(&key));
    let ping = || Bytes::from(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
    let own_host = relay.agent_addr.to_string();
    let same_origin = format!("http://{own_host}");
    let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
        (
            vec![
                ("host", "evil.example.com"),
                ("origin", "http://evil.example.com"),
            ],
            403,
        ),
        (vec![("host", "evil.example.com")], 403),
        (vec![("origin", "http://evil.example.com")], 403),
        (vec![("origin", "https://agent.example.com")], 200),
        (vec![("host", own_host.as_str())], 200),
        (
            vec![
                ("host", own_host.as_str()),
                ("origin", same_origin.as_str()),
            ],
            200,
        ),
        (
            vec![("host", "localhost"), ("origin", same_origin.as_str())],
            403,
        ),
        (vec![("host", "localhost")], 200),
    ];
    for (headers, status) in cases {
        let reply = c.send(Method::POST, ping(), &headers).await.unwrap();
        assert_eq!(reply.status.as_u16(), status, "{headers:?}");
    }
    assert_eq!(seen.all().len(), 4);
}

#[tokio::test]
async fn sse_progress_streams_event_by_event() {
    let running = up::start(UpOptions::default()).await.unwrap();
    let mut c = McpClient::new(&running.servers["demo"], running.token.as_deref());
    c.initialize().await.unwrap();
    let reply = c
        .request(
            "tools/call",
            json!({"name": "generate_report", "arguments": {"steps": 5},
                                      "_meta": {"progressToken": 42}}),
        )
        .await
        .unwrap();
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    let progress: Vec<_> = reply
        .messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .map(|m| m["params"]["progress"].as_u64().unwrap())
        .collect();
    assert_eq!(progress, [1, 2, 3, 4, 5]);
    assert!(
        reply.last().unwrap()["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Revenue")
    );
    running.stop().await;
}

#[tokio::test]
async fn unknown_server_and_paths_are_clear_errors() {
    let running = up::start(UpOptions::default()).await.unwrap();
    let url = running.servers["demo"].replace("/demo/", "/nope/");
    let mut c = McpClient::new(&url, running.token.as_deref());
    let reply = c.request("ping", json!({})).await.unwrap();
    assert_eq!(reply.status, 404);
    assert!(
        reply.last().unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no server named 'nope'")
    );
    let mut c = McpClient::new(
        &format!("http://{}/elsewhere", running.agent_addr),
        running.token.as_deref(),
    );
    assert_eq!(c.request("ping", json!({})).await.unwrap().status, 404);
    running.stop().await;
}
