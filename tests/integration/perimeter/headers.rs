//! Response headers: an allow-list, each value validated.

use super::*;

#[tokio::test]
async fn upstream_response_headers_leave_only_by_allow_list() {
    let s = Stack::start(REDACT, |got| {
        let secret = format!("{CANARY} {CARD}");
        let hostile = [
            ("content-type", format!("application/json; secret={CANARY}")),
            ("x-secret", secret.clone()),
            ("set-cookie", format!("sid={CARD}; Path=/")),
            (
                "link",
                format!("<https://evil.example/{EMAIL}>; rel=\"preload\""),
            ),
            ("mcp-protocol-version", CANARY.to_owned()),
            ("cache-control", format!("no-cache, x-leak={AWS_KEY}")),
            ("retry-after", CARD.to_owned()),
            ("allow", format!("GET, {CANARY}")),
            ("www-authenticate", format!("Bearer realm=\"{CANARY}\"")),
            ("access-control-allow-origin", "*".to_owned()),
            ("x-amz-key", AWS_KEY.to_owned()),
        ];
        let good = [
            ("content-type", "application/json".to_owned()),
            ("mcp-protocol-version", "2025-11-25".to_owned()),
            ("cache-control", "no-store, max-age=0".to_owned()),
            ("retry-after", "120".to_owned()),
            ("x-secret", secret),
        ];
        let headers: Vec<(&str, &str)> = if got.name() == "good" {
            good.iter().map(|(k, v)| (*k, v.as_str())).collect()
        } else {
            hostile.iter().map(|(k, v)| (*k, v.as_str())).collect()
        };
        respond(
            "200 OK",
            &headers,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
        )
    })
    .await;
    let got = post(&s.agent(0), &call("hostile")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
    assert_eq!(got.header_names(), GATEWAY_JSON_HEADERS);
    assert_eq!(got.header("content-type"), Some("application/json"));

    // Valid values of allow-listed headers do pass.
    let got = post(&s.agent(0), &call("good")).await;
    assert_eq!(
        got.header_names(),
        [
            "cache-control",
            "content-length",
            "content-type",
            "date",
            "mcp-protocol-version",
            "retry-after"
        ]
    );
    assert_eq!(got.header("cache-control"), Some("no-store, max-age=0"));
    assert_eq!(got.header("retry-after"), Some("120"));
    assert_eq!(got.header("mcp-protocol-version"), Some("2025-11-25"));
}

#[tokio::test]
async fn an_upstream_sse_content_type_is_the_gateways() {
    let s = Stack::start(REDACT, |_| {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset={CANARY}\r\nx-secret: {CARD}\r\nconnection: close\r\n\r\n{}",
            data(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)
        )
        .into_bytes()
    })
    .await;
    let got = post(&s.agent(0), &call("lookup")).await;
    assert_eq!(got.header("content-type"), Some("text/event-stream"));
    assert_eq!(got.header("cache-control"), Some("no-cache"));
    assert!(!got.headers.contains_key("x-secret"));
    assert_eq!(got.messages().len(), 1);
}

#[tokio::test]
async fn only_a_valid_upstream_session_id_opens_a_session() {
    let s = Stack::start(REDACT, |got| {
        let id = match got.json()["params"]["clientInfo"]["name"].as_str() {
            Some("good") => "sess-0123456789abcdef".to_owned(),
            Some("spaces") => format!("sess {CARD}"),
            Some("tab") => format!("sess\t{CANARY}"),
            Some("long") => format!("{CANARY}{}", "a".repeat(200)),
            Some("control") => format!("sess\u{1}{CANARY}"),
            _ => String::new(),
        };
        let mut headers = vec![
            ("content-type", "application/json"),
            ("mcp-session-id", id.as_str()),
        ];
        if got.json()["params"]["clientInfo"]["name"] == "twice" {
            headers = vec![
                ("content-type", "application/json"),
                ("mcp-session-id", "sess-one"),
                ("mcp-session-id", "sess-two"),
            ];
        }
        respond(
            "200 OK",
            &headers,
            r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"evil","version":"0"}}}"#,
        )
    })
    .await;
    let init = |name: &str| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": name, "version": "0"}}})
        .to_string()
    };
    let c = s.agent(0);
    let good = post(&c, &init("good")).await;
    assert_eq!(good.status, 200);
    let ours = good.header("mcp-session-id").unwrap();
    assert!(looks_gateway_session(ours), "{ours}");
    for bad in ["spaces", "tab", "long", "twice"] {
        let got = post(&c, &init(bad)).await;
        assert_eq!(got.status, 200, "{bad}");
        assert_eq!(got.header("mcp-session-id"), None, "{bad}");
        assert_eq!(got.messages()[0]["result"]["serverInfo"]["name"], "evil");
    }
    // A control character is not HTTP at all: the upstream is unusable.
    let got = post(&c, &init("control")).await;
    assert_eq!(got.status, 502);
    assert_eq!(
        got.text(),
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"Upstream unavailable: server 'evil' is not reachable"}}"#
    );
}

#[tokio::test]
async fn an_upstream_session_id_never_carries_upstream_data() {
    // A well-formed session id is still the upstream's text: one that is a
    // card number or a canary must not reach the agent as it is. The agent
    // holds an id of the gateway's; the upstream gets its own back.
    let s = Stack::start(REDACT, |got| {
        let id = match got.json()["params"]["clientInfo"]["name"].as_str() {
            Some("canary") => CANARY.to_owned(),
            _ => "4111-1111-1111-1111".to_owned(),
        };
        let body = match got.rpc().as_str() {
            "initialize" => {
                r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"evil","version":"0"}}}"#
            }
            "DELETE" => "",
            _ => r#"{"jsonrpc":"2.0","id":2,"result":{}}"#,
        };
        // The upstream echoes its id on every answer.
        respond(
            "200 OK",
            &[("content-type", "application/json"), ("mcp-session-id", &id)],
            body,
        )
    })
    .await;
    let init = |name: &str| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": name, "version": "0"}}})
        .to_string()
    };
    let ping = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    let mut ids = Vec::new();
    for (case, theirs) in [("card", "4111-1111-1111-1111"), ("canary", CANARY)] {
        let mut c = s.agent(0);
        let opened = post(&c, &init(case)).await;
        assert_eq!(opened.status, 200);
        let ours = opened.header("mcp-session-id").unwrap().to_owned();
        assert!(looks_gateway_session(&ours), "{ours}");
        c.session = Some(ours.clone());
        let answered = post(&c, ping).await;
        assert_eq!(answered.text(), r#"{"jsonrpc":"2.0","id":2,"result":{}}"#);
        assert_eq!(answered.header("mcp-session-id"), Some(ours.as_str()));
        // What the upstream got: its own id, never the gateway's.
        let got = s.upstream_got();
        let last = got.last().unwrap();
        assert_eq!(last.rpc(), "ping");
        assert_eq!(last.header("mcp-session-id"), Some(theirs));
        // Another agent holding the gateway's id reaches nothing.
        let mut other = s.agent(1);
        other.session = Some(ours.clone());
        let refused = post(&other, ping).await;
        assert_eq!(refused.status, 404);
        assert_eq!(s.upstream_got().len(), got.len());
        // Nor does the upstream's own id open the session for its owner.
        let mut raw = s.agent(0);
        raw.session = Some(theirs.to_owned());
        assert_eq!(post(&raw, ping).await.status, 404);
        assert_eq!(s.upstream_got().len(), got.len());
        // DELETE is translated too, and ends the gateway's id.
        let deleted = exchange(&c, Method::DELETE, "", &[]).await;
        assert_eq!(deleted.status, 200);
        let last = s.upstream_got().last().unwrap().clone();
        assert_eq!(
            (last.method.as_str(), last.header("mcp-session-id")),
            ("DELETE", Some(theirs))
        );
        assert_eq!(post(&c, ping).await.status, 404);
        ids.push(ours);
    }
    assert_ne!(ids[0], ids[1]);
}

/// A session id of the gateway's making: the gateway instance's stamp, then
/// 128 random bits, hex.
fn looks_gateway_session(id: &str) -> bool {
    portcullis::session::owner::stamped(id).is_some()
        && id
            .split_once('.')
            .is_some_and(|(_, own)| own.len() == 32 && own.bytes().all(|b| b.is_ascii_hexdigit()))
}
