//! Fields inside messages: redacted where redaction can rewrite them;
//! where it cannot (method names, ids, progress tokens), the upstream's text
//! must not leave at all.

use super::*;

#[tokio::test]
async fn an_upstream_notification_is_redacted_in_its_params() {
    let s = Stack::start(REDACT, |_| {
        let note = json!({"jsonrpc": "2.0", "method": "notifications/message",
            "params": {"level": "info", "logger": CANARY, "data": {"text": LOUD, EMAIL: 1}}})
        .to_string();
        sse_reply(
            &[],
            &format!("{}{}", data(&note), data(&result_text("1", LOUD))),
        )
    })
    .await;
    let got = post(&s.agent(0), &call("lookup")).await;
    assert_eq!(
        got.messages(),
        vec![
            json!({"jsonrpc": "2.0", "method": "notifications/message",
                "params": {"level": "info", "logger": "[REDACTED:canary]",
                    "data": {"text": REDACTED, "[REDACTED:email]": 1}}}),
            serde_json::from_str::<Value>(&result_text("1", REDACTED)).unwrap()
        ]
    );
}

#[tokio::test]
async fn an_upstream_notification_method_never_carries_data() {
    let s = Stack::start(REDACT, |_| {
        sse_reply(
            &[],
            &format!(
                "{}{}{}",
                data(&format!(
                    r#"{{"jsonrpc":"2.0","method":"notifications/{CANARY}"}}"#
                )),
                data(&format!(
                    r#"{{"jsonrpc":"2.0","method":"{CARD}","params":{{}}}}"#
                )),
                data(&result_text("1", "done"))
            ),
        )
    })
    .await;
    let got = post(&s.agent(0), &call("lookup")).await;
    assert_eq!(
        got.messages(),
        vec![serde_json::from_str::<Value>(&result_text("1", "done")).unwrap()]
    );
}

#[tokio::test]
async fn an_upstream_progress_token_is_only_the_agents() {
    let s = Stack::start(REDACT, |_| {
        let progress = |token: &str| {
            json!({"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": token, "progress": 1, "total": 2}})
            .to_string()
        };
        let meta = json!({"jsonrpc": "2.0", "method": "notifications/message",
            "params": {"level": "info", "data": "x", "_meta": {"progressToken": CARD}}})
        .to_string();
        sse_reply(
            &[],
            &format!(
                "{}{}{}{}",
                data(&progress("agent-token-1")),
                data(&progress(CARD)),
                data(&meta),
                data(&result_text("1", "done"))
            ),
        )
    })
    .await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "lookup", "arguments": {}, "_meta": {"progressToken": "agent-token-1"}}})
    .to_string();
    let got = post(&s.agent(0), &body).await;
    // The agent's own token passes; a token (or `_meta.progressToken`)
    // carrying data cannot be rewritten, so that notification is dropped.
    let messages = got.messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0]["params"]["progressToken"], "agent-token-1");
    assert_eq!(messages[1]["id"], 1);
}

#[tokio::test]
async fn an_upstream_cursor_never_carries_data() {
    let s = Stack::start(REDACT, |got| {
        let cursor = if got.rpc() == "tools/list" {
            CARD
        } else {
            CANARY
        };
        json_reply(
            &json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [], "resources": [],
                "nextCursor": cursor}})
            .to_string(),
        )
    })
    .await;
    // A cursor goes back to the upstream unchanged, so it cannot be
    // redacted: data found in it blocks the list instead.
    for method in ["tools/list", "resources/list"] {
        let got = post(
            &s.agent(0),
            &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}).to_string(),
        )
        .await;
        assert_eq!(got.status, 200);
        let reply = &got.messages()[0];
        assert_eq!(reply["error"]["code"], -32001, "{method}: {reply}");
        assert!(reply.get("result").is_none(), "{method}: {reply}");
    }
}

#[tokio::test]
async fn an_upstream_request_id_never_carries_data() {
    let s = Stack::start(REDACT, |_| {
        let ask = |id: Value| {
            json!({"jsonrpc": "2.0", "id": id, "method": "elicitation/create", "params": {
                "message": LOUD, "requestedSchema": {"type": "object", "properties": {}}}})
            .to_string()
        };
        sse_reply(
            &[],
            &format!(
                "{}{}{}",
                data(&ask(json!(CARD))),
                data(&ask(json!(4111111111111111u64))),
                data(&result_text("1", "done"))
            ),
        )
    })
    .await;
    let got = post(&s.agent(0), &call("lookup")).await;
    // Whether the gateway drops such requests or gives them ids of its own,
    // the result of the call still arrives.
    assert_eq!(
        got.messages().last(),
        Some(&serde_json::from_str::<Value>(&result_text("1", "done")).unwrap())
    );
}

#[tokio::test]
async fn an_upstream_cancellation_never_carries_data() {
    let s = Stack::start(REDACT, |_| {
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": CARD, "reason": LOUD}})
        .to_string();
        sse_reply(
            &[],
            &format!("{}{}", data(&cancel), data(&result_text("1", "done"))),
        )
    })
    .await;
    let got = post(&s.agent(0), &call("lookup")).await;
    assert_eq!(
        got.messages().last(),
        Some(&serde_json::from_str::<Value>(&result_text("1", "done")).unwrap())
    );
}

#[tokio::test]
async fn a_tool_scoped_step_checks_the_notifications_of_its_call() {
    // Redaction for `lookup` only. Its call's notifications and server
    // requests are redacted; another tool's are not (an address this test
    // does not count as secret shows it).
    let s = Stack::start(REDACT_LOOKUP, |got| {
        let text = if got.name() == "lookup" {
            LOUD
        } else {
            "contact someone@example.net"
        };
        let ask = json!({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage",
            "params": {"messages": [{"role": "user", "content": {"type": "text", "text": text}}],
                "maxTokens": 1}})
        .to_string();
        sse_reply(
            &[],
            &format!(
                "{}{}{}",
                data(&log_note(text)),
                data(&ask),
                data(&result_text("1", text))
            ),
        )
    })
    .await;
    let got = post(&s.agent(0), &call("lookup")).await;
    let messages = got.messages();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[0]["params"]["data"], REDACTED);
    assert_eq!(
        messages[1]["params"]["messages"][0]["content"]["text"],
        REDACTED
    );
    assert_eq!(messages[2]["result"]["content"][0]["text"], REDACTED);

    let got = post(&s.agent(0), &call("other")).await;
    let messages = got.messages();
    assert_eq!(messages[0]["params"]["data"], "contact someone@example.net");
    assert_eq!(
        messages[2]["result"]["content"][0]["text"],
        "contact someone@example.net"
    );
}

/// schema-guard on calls, for the listing tests.
const GUARD: &str = r#"
[plugins.schema-guard]
source = "builtin:schema-guard"

[[servers."*"]]
plugin = "schema-guard"
phase = "request"
"#;

#[tokio::test]
async fn a_two_page_tool_list_is_learned_whole() {
    let s = Stack::start(GUARD, |got| {
        let tool = |name: &str| {
            json!({"name": name, "inputSchema": {"type": "object",
                "properties": {"n": {"type": "integer"}}, "required": ["n"]}})
        };
        let id = got.json()["id"].clone();
        let result = match (got.rpc().as_str(), got.json()["params"]["cursor"].as_str()) {
            ("tools/list", None) => json!({"tools": [tool("first")], "nextCursor": "page-2"}),
            ("tools/list", Some("page-2")) => json!({"tools": [tool("second")]}),
            _ => json!({"content": [{"type": "text", "text": "ok"}]}),
        };
        json_reply(&json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string())
    })
    .await;
    let list = |cursor: Option<&str>| {
        let params = cursor.map_or(json!({}), |c| json!({"cursor": c}));
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params}).to_string()
    };
    let tool_call = |name: &str, n: Value| {
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": name, "arguments": {"n": n}}})
        .to_string()
    };
    let agent = s.agent(0);
    let reply = |body: String| {
        let agent = &agent;
        async move { post(agent, &body).await.messages()[0].clone() }
    };
    assert_eq!(
        reply(list(None)).await["result"]["nextCursor"],
        "page-2",
        "the first page"
    );
    assert_eq!(
        reply(list(Some("page-2"))).await["result"]["tools"][0]["name"],
        "second"
    );
    // Both pages' tools are known to schema-guard: each is checked against
    // its own schema, the first page's too (a second page used to replace it).
    for name in ["first", "second"] {
        let ok = reply(tool_call(name, json!(1))).await;
        assert_eq!(ok["result"]["content"][0]["text"], "ok", "{name}: {ok}");
        let bad = reply(tool_call(name, json!("one"))).await;
        assert_eq!(bad["error"]["code"], -32602, "{name}: {bad}");
    }
    // Reading the first page again, without walking on, hides nothing.
    reply(list(None)).await;
    let ok = reply(tool_call("second", json!(2))).await;
    assert_eq!(ok["result"]["content"][0]["text"], "ok", "{ok}");
}

/// A gateway that never carried a `tools/list` (a fresh replica, a
/// restart) walks the listing itself, every page, before it decides the
/// first call; a `list_changed` from the server makes it walk again.
#[tokio::test]
async fn a_gateway_that_never_saw_the_listing_fetches_it_whole_before_deciding() {
    let lists = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let seen = lists.clone();
    let s = Stack::start(GUARD, move |got| {
        let tool = |name: &str| {
            json!({"name": name, "inputSchema": {"type": "object",
                "properties": {"n": {"type": "integer"}}, "required": ["n"]}})
        };
        let id = got.json()["id"].clone();
        let cursor = got.json()["params"]["cursor"].as_str().map(str::to_owned);
        let result = match (got.rpc().as_str(), cursor.as_deref()) {
            ("tools/list", cursor) => {
                seen.lock().unwrap().push(cursor.map(str::to_owned));
                match cursor {
                    None => json!({"tools": [tool("first")], "nextCursor": "page-2"}),
                    _ => json!({"tools": [tool("second")]}),
                }
            }
            ("initialize", _) => json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {"listChanged": true}},
                "serverInfo": {"name": "scripted", "version": "1"}}),
            _ if got.json()["params"]["arguments"]["n"] == 7 => {
                // The server announces a change in the answer's stream.
                let note = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
                let done = json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": "ok"}]}});
                return sse_reply(&[], &format!("{}{}", data(&note.to_string()), data(&done.to_string())));
            }
            _ => json!({"content": [{"type": "text", "text": "ok"}]}),
        };
        json_reply(&json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string())
    })
    .await;
    let tool_call = |name: &str, n: Value| {
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": name, "arguments": {"n": n}}})
        .to_string()
    };
    let agent = s.agent(0);
    let reply = |body: String| {
        let agent = &agent;
        async move { post(agent, &body).await.messages()[0].clone() }
    };
    // No agent listed the tools: both pages' tools are checked against
    // their own schemas all the same (they used to be unknown tools).
    for name in ["first", "second"] {
        let ok = reply(tool_call(name, json!(1))).await;
        assert_eq!(ok["result"]["content"][0]["text"], "ok", "{name}: {ok}");
        let bad = reply(tool_call(name, json!("one"))).await;
        assert_eq!(bad["error"]["code"], -32602, "{name}: {bad}");
        assert!(
            bad["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Invalid arguments")),
            "{name}: {bad}"
        );
    }
    let unknown = reply(tool_call("unlisted", json!(1))).await;
    assert_eq!(
        unknown["error"]["message"], "Unknown tool: unlisted",
        "{unknown}"
    );
    // One walk, both pages, in order, for all five calls.
    assert_eq!(
        *lists.lock().unwrap(),
        [None, Some("page-2".to_owned())],
        "the gateway's own walk"
    );
    // The server says its tools changed: the next call walks again.
    let got = post(&agent, &tool_call("first", json!(7))).await.messages();
    assert_eq!(
        got[0]["method"], "notifications/tools/list_changed",
        "{got:?}"
    );
    assert_eq!(got[1]["result"]["content"][0]["text"], "ok", "{got:?}");
    reply(tool_call("first", json!(1))).await;
    assert_eq!(
        lists.lock().unwrap().len(),
        4,
        "walked again after list_changed"
    );
}
