//! Bodies and statuses: what is not one JSON-RPC message answering the
//! request in flight is replaced by the gateway's own.

use super::*;

/// A status line, its headers, its body.
type Canned<'a> = (&'a str, Vec<(&'a str, String)>, String);

#[tokio::test]
async fn an_upstream_error_status_body_never_reaches_the_agent() {
    let html = format!("<html><body>{LOUD}</body></html>");
    let cases: Vec<Canned<'_>> = vec![
        (
            "500 CANARY-7Q3ZK9XW",
            vec![("content-type", "text/html".into())],
            html.clone(),
        ),
        (
            "404 Not Found",
            vec![("content-type", "text/plain".into())],
            LOUD.into(),
        ),
        (
            "401 Unauthorized",
            vec![
                ("content-type", "text/plain".into()),
                ("www-authenticate", format!("Bearer error=\"{CANARY}\"")),
            ],
            LOUD.into(),
        ),
        (
            "302 Found",
            vec![("location", format!("https://evil.example/{CARD}"))],
            String::new(),
        ),
        (
            "503 Service Unavailable",
            vec![("content-type", "application/json".into())],
            format!(r#"{{"error":"{CANARY}"}}"#),
        ),
        (
            "429 Too Many Requests",
            vec![("content-type", "application/json".into())],
            LOUD.into(),
        ),
    ];
    let script_cases = cases.clone();
    let s = Stack::start(REDACT, move |got| {
        let i: usize = got.name().parse().unwrap();
        let (status, headers, body) = &script_cases[i];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        respond(status, &headers, body)
    })
    .await;
    for (i, (status, _, _)) in cases.iter().enumerate() {
        let code: u16 = status[..3].parse().unwrap();
        let got = post(&s.agent(0), &call(&i.to_string())).await;
        assert_eq!(got.status.as_u16(), code, "{status}");
        assert_eq!(got.reason, None, "{status}");
        assert_eq!(
            got.text(),
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":-32603,"message":"The upstream answered HTTP {code}"}}}}"#
            ),
            "{status}"
        );
        assert_eq!(got.header_names(), GATEWAY_JSON_HEADERS, "{status}");
    }
}

#[tokio::test]
async fn an_upstream_404_on_a_session_tells_the_agent_the_session_is_gone() {
    // The upstream opens a session, then forgets it.
    let s = Stack::start(REDACT, |got| {
        if got.body.contains(r#""initialize""#) {
            respond(
                "200 OK",
                &[
                    ("content-type", "application/json"),
                    ("mcp-session-id", "sess-0123456789abcdef"),
                ],
                r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"e","version":"1"}}}"#,
            )
        } else {
            respond("404 Not Found", &[("content-type", "text/html")], LOUD)
        }
    })
    .await;
    let mut c = s.agent(0);
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    let opened = post(&c, init).await;
    assert_eq!(opened.status, 200);
    c.session = opened.header("mcp-session-id").map(str::to_owned);
    assert!(c.session.is_some());
    let got = post(&c, &call("lookup")).await;
    assert_eq!(got.status, 404);
    assert_eq!(
        got.text(),
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"Session not found"}}"#
    );
}

#[tokio::test]
async fn an_upstream_jsonrpc_error_is_redacted_and_keeps_its_status() {
    let s = Stack::start(REDACT, |_| {
        let body = json!({"jsonrpc": "2.0", "id": 1, "error": {
            "code": -32000, "message": LOUD, "data": {"card": CARD}}})
        .to_string();
        respond(
            "500 Internal Server Error",
            &[("content-type", "application/json")],
            &body,
        )
    })
    .await;
    let got = post(&s.agent(0), &call("lookup")).await;
    assert_eq!(got.status, 500);
    assert_eq!(
        got.text(),
        json!({"jsonrpc": "2.0", "id": 1, "error": {
            "code": -32000, "message": REDACTED, "data": {"card": "[REDACTED:card]"}}})
        .to_string()
    );
}

#[tokio::test]
async fn a_non_mcp_success_body_never_reaches_the_agent() {
    let s = Stack::start(REDACT, |got| match got.name().as_str() {
        "html" => respond("200 OK", &[("content-type", "text/html")], LOUD),
        _ => respond("200 OK", &[], &result_text("1", LOUD)),
    })
    .await;
    for (case, kind) in [("html", "non-JSON"), ("untyped", "untyped")] {
        let got = post(&s.agent(0), &call(case)).await;
        assert_eq!(got.status, 502, "{case}");
        assert_eq!(
            got.text(),
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":-32603,"message":"Invalid response from the upstream: a {kind} body is not an MCP message"}}}}"#
            )
        );
        assert_eq!(got.header_names(), GATEWAY_JSON_HEADERS);
    }
}

#[tokio::test]
async fn an_upstream_202_never_carries_a_body() {
    let s = Stack::start(REDACT, |_| {
        respond(
            "202 Accepted",
            &[("content-type", "application/json"), ("x-secret", CANARY)],
            &log_note(LOUD),
        )
    })
    .await;
    let got = post(
        &s.agent(0),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .await;
    assert_eq!(got.status, 202);
    assert_eq!(got.text(), "");
    assert_eq!(got.header_names(), ["content-length", "date"]);
}

#[tokio::test]
async fn a_body_with_two_messages_never_reaches_the_agent() {
    let two = format!("{}{}", result_text("1", LOUD), log_note(LOUD));
    let batch = format!("[{},{}]", result_text("1", LOUD), log_note(LOUD));
    let script = (two.clone(), batch.clone());
    let s = Stack::start(REDACT, move |got| match got.name().as_str() {
        "two" => json_reply(&script.0),
        "batch" => json_reply(&script.1),
        "sse-two" => sse_reply(&[], &data(&script.0)),
        _ => sse_reply(
            &[],
            &format!(
                "data: {}\ndata: {}\n\n",
                result_text("1", LOUD),
                log_note(LOUD)
            ),
        ),
    })
    .await;
    for case in ["two", "batch"] {
        let got = post(&s.agent(0), &call(case)).await;
        assert_eq!(got.status, 502, "{case}");
        assert_eq!(
            got.text(),
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"Invalid response from the upstream: the body is not exactly one JSON-RPC message"}}"#,
            "{case}"
        );
    }
    // In a stream, such an event ends the stream; nothing of it leaves.
    for case in ["sse-two", "sse-lines"] {
        let got = post(&s.agent(0), &call(case)).await;
        assert_eq!(got.status, 200, "{case}");
        assert_eq!(got.text(), "", "{case}");
    }
}

#[tokio::test]
async fn a_response_to_no_request_in_flight_is_dropped_and_recorded() {
    let s = Stack::start(REDACT, |got| match got.name().as_str() {
        "json" => json_reply(&result_text("999", LOUD)),
        _ => sse_reply(
            &[],
            &format!(
                "{}{}{}",
                data(&result_text("999", LOUD)),
                data(&format!(
                    r#"{{"jsonrpc":"2.0","id":"1","error":{{"code":-32000,"message":"{LOUD}"}}}}"#
                )),
                data(&result_text("1", "done"))
            ),
        ),
    })
    .await;
    let got = post(&s.agent(0), &call("json")).await;
    assert_eq!(got.status, 502);
    assert_eq!(
        got.text(),
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"Invalid response from the upstream: the body answers no request in flight"}}"#
    );
    let got = post(&s.agent(0), &call("sse")).await;
    assert_eq!(got.status, 200);
    // Id 999 and id "1" (a string, not the agent's 1) answer nothing here.
    let events = got.events();
    assert_eq!(events.len(), 3, "{}", got.text());
    assert_eq!(events[0].data.as_deref(), Some(""));
    assert_eq!(events[1].data.as_deref(), Some(""));
    assert_eq!(
        got.messages(),
        vec![serde_json::from_str::<Value>(&result_text("1", "done")).unwrap()]
    );
    let dropped: Vec<Value> = s
        .decisions()
        .into_iter()
        .filter(|d| d["outcome"] == "dropped")
        .collect();
    assert_eq!(dropped.len(), 3, "{dropped:?}");
    assert_eq!(
        dropped.iter().filter(|d| d["request_id"] == "999").count(),
        2
    );
}

#[tokio::test]
async fn upstream_framing_carries_nothing_to_the_agent() {
    // An informational response before the real one, chunk extensions and
    // trailers: framing the agent never sees, whatever it carries.
    let s = Stack::start(REDACT, |got| {
        let msg = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        let (ctype, body) = if got.name() == "sse" {
            ("text/event-stream", data(msg))
        } else {
            ("application/json", msg.to_owned())
        };
        let (a, b) = body.split_at(10);
        format!(
            "HTTP/1.1 103 Early Hints\r\nlink: <https://evil.example/{CANARY}>; rel=preload\r\n\r\n\
             HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ntransfer-encoding: chunked\r\n\
             trailer: x-secret\r\nconnection: close\r\n\r\n\
             {:x};leak={CANARY}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nx-secret: {CARD}\r\n\r\n",
            a.len(),
            b.len()
        )
        .into_bytes()
    })
    .await;
    let got = post(&s.agent(0), &call("json")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
    assert_eq!(got.header_names(), GATEWAY_JSON_HEADERS);
    let got = post(&s.agent(0), &call("sse")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), data(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#));
}
