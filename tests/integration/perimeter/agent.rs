//! The agent's side of the checkpoint: its headers decide the era, and its
//! credentials stay at the relay.

use super::*;

#[tokio::test]
async fn a_body_protocol_version_cannot_talk_a_request_out_of_its_header_era() {
    let s = Stack::start(REDACT, |_| {
        json_reply(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)
    })
    .await;
    let with_meta = |v: &str| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "lookup", "arguments": {},
            "_meta": {"io.modelcontextprotocol/protocolVersion": v}}})
        .to_string()
    };
    let c = s.agent(0);
    let down = exchange(
        &c,
        Method::POST,
        &with_meta("2025-06-18"),
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "lookup"),
        ],
    )
    .await;
    assert_eq!(down.status, 400);
    assert_eq!(
        down.text(),
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32020,"message":"Header mismatch: MCP-Protocol-Version header '2026-07-28' does not match the body's protocol version '2025-06-18'"}}"#
    );
    // Nor up: a 2025 header with a 2026 body version.
    let up = exchange(
        &c,
        Method::POST,
        &with_meta("2026-07-28"),
        &[("mcp-protocol-version", "2025-11-25")],
    )
    .await;
    assert_eq!(up.status, 400);
    assert_eq!(
        up.text(),
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32020,"message":"Header mismatch: MCP-Protocol-Version header '2025-11-25' does not match the body's protocol version '2026-07-28'"}}"#
    );
    assert!(
        s.upstream_got().is_empty(),
        "a refused request reached the upstream"
    );
    assert_eq!(
        s.decisions()
            .iter()
            .filter(|d| d["outcome"] == "refused")
            .count(),
        2
    );
}

#[tokio::test]
async fn the_agents_credentials_never_reach_the_upstream() {
    let s = Stack::start(REDACT, |got| match got.method.as_str() {
        "POST" if got.json().get("id").is_some() => {
            json_reply(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)
        }
        "POST" => respond("202 Accepted", &[], ""),
        _ => sse_reply(&[], ""),
    })
    .await;
    // No session id: a made-up one would be refused (unbound) before the
    // upstream, which is not what this test is about.
    let c = s.agent(0);
    let extra = [
        ("cookie", "sid=agent-cookie"),
        ("proxy-authorization", "Basic YWdlbnQ6c2VjcmV0"),
        ("x-api-key", "agent-api-key"),
        ("forwarded", "for=203.0.113.9"),
    ];
    exchange(&c, Method::POST, &call("lookup"), &extra).await;
    exchange(
        &c,
        Method::POST,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        &extra,
    )
    .await;
    exchange(&c, Method::GET, "", &extra).await;
    let got = s.upstream_got();
    assert_eq!(got.len(), 3);
    let allowed = [
        "accept",
        "content-length",
        "content-type",
        "host",
        "mcp-protocol-version",
        "mcp-session-id",
        "traceparent",
        "tracestate",
    ];
    for g in &got {
        for (name, value) in &g.headers {
            assert!(
                allowed.contains(&name.as_str()),
                "{name} reached the upstream"
            );
            for secret in [
                s.keys[0].as_str(),
                "agent-cookie",
                "agent-api-key",
                "YWdlbnQ6",
            ] {
                assert!(
                    !value.contains(secret),
                    "{secret} reached the upstream in {name}"
                );
            }
        }
        assert!(!g.body.contains(&s.keys[0]));
    }
}
