//! SSE framing and resumption: what leaves is the gateway's event, made
//! from checked data; the upstream's ids stay behind the gateway's seal.

use super::*;

#[tokio::test]
async fn an_upstream_sse_comment_never_reaches_the_agent() {
    let s = Stack::start(REDACT, |_| {
        let events = format!(
            ": {CANARY}\n: {CARD}\n\n: {EMAIL}\n{}",
            data(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)
        );
        sse_reply(&[], &events)
    })
    .await;
    let got = post(&s.agent(0), &call("lookup")).await;
    assert_eq!(got.status, 200);
    // The comment-only block becomes the gateway's own empty keep-alive; the
    // comment beside the data is gone.
    assert_eq!(
        got.text(),
        ":\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"
    );
}

#[tokio::test]
async fn an_upstream_sse_event_name_never_reaches_the_agent() {
    let s = Stack::start(REDACT, |_| {
        let events = format!(
            "event: {CARD}\n\nevent: {CANARY}\n{}",
            data(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)
        );
        sse_reply(&[], &events)
    })
    .await;
    let got = post(&s.agent(0), &call("lookup")).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.text(),
        ":\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"
    );
    assert!(got.events().iter().all(|e| e.event.is_none()));
}

#[tokio::test]
async fn an_upstream_sse_id_reaches_the_agent_only_sealed() {
    let long = "x".repeat(portcullis::gateway::event_id::MAX_UPSTREAM_EVENT_ID + 1);
    let events = format!(
        "id: {CARD}\ndata:\n\nid: {CANARY}\n{}id: {long}\n{}",
        data(&log_note("working")),
        data(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)
    );
    let s = Stack::start(REDACT, move |_| sse_reply(&[], &events)).await;
    let got = post(&s.agent(0), &call("lookup")).await;
    assert_eq!(got.status, 200);
    let events = got.events();
    assert_eq!(events.len(), 3, "{}", got.text());
    for e in &events[..2] {
        let id = e.id.as_deref().unwrap();
        assert!(looks_minted(id), "not a gateway id: {id}");
    }
    assert_ne!(events[0].id, events[1].id);
    // An id too long to seal is not carried at all.
    assert_eq!(events[2].id, None);
    assert_eq!(events[0].data.as_deref(), Some(""));
    assert_eq!(got.messages().len(), 2);
}

#[tokio::test]
async fn an_upstream_sse_retry_carries_no_upstream_data() {
    let s = Stack::start(REDACT, |_| {
        sse_reply(
            &[],
            &format!(
                "retry: 4111111111111111\n\nretry: {CANARY}\n{}",
                data(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)
            ),
        )
    })
    .await;
    let got = post(&s.agent(0), &call("lookup")).await;
    assert_eq!(got.status, 200);
    // The number is lowered to the gateway's bound; the non-numeric one is
    // not SSE at all.
    assert_eq!(
        got.text(),
        format!(
            "retry: {}\n\ndata: {{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{{}}}}\n\n",
            portcullis::limits::MAX_SSE_RETRY_MS
        )
    );
    assert_eq!(
        got.messages(),
        vec![json!({"jsonrpc":"2.0","id":1,"result":{}})]
    );
}

// ---------------------------------------------------------------------------
// Resumption.

/// An upstream whose POST stream has one event with id `CARD` and closes;
/// a GET resuming from `CARD` carries a response to id 2 (another request)
/// and then the response to id 1, full of secrets.
fn resumable(got: &Got) -> Vec<u8> {
    match (got.method.as_str(), got.header("last-event-id")) {
        ("POST", _) => sse_reply(&[], &format!("id: {CARD}\n{}", data(&log_note("working")))),
        ("GET", Some(CARD)) => sse_reply(
            &[],
            &format!(
                "id: e2\n{}id: e3\n{}",
                data(&result_text("2", LOUD)),
                data(&result_text("1", LOUD))
            ),
        ),
        _ => respond("400 Bad Request", &[], ""),
    }
}

#[tokio::test]
async fn a_resumption_gives_the_upstream_its_own_event_id() {
    let s = Stack::start(REDACT, resumable).await;
    let c = s.agent(0);
    let first = post(&c, &call("lookup")).await;
    let minted = first.events()[0].id.clone().unwrap();
    assert!(looks_minted(&minted), "{minted}");
    assert_eq!(
        first.messages(),
        vec![serde_json::from_str::<Value>(&log_note("working")).unwrap()]
    );

    let resumed = exchange(&c, Method::GET, "", &[("last-event-id", &minted)]).await;
    assert_eq!(resumed.status, 200);
    // The response to id 2 answers nothing in flight on this stream: its
    // event stays (empty) so the cursor is intact; the response to id 1 is
    // the resumed call's, redacted.
    let events = resumed.events();
    assert_eq!(events.len(), 2, "{}", resumed.text());
    assert_eq!(events[0].data.as_deref(), Some(""));
    assert_eq!(
        resumed.messages(),
        vec![serde_json::from_str::<Value>(&result_text("1", REDACTED)).unwrap()]
    );

    let gets: Vec<Got> = s
        .upstream_got()
        .into_iter()
        .filter(|g| g.method == "GET")
        .collect();
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].header("last-event-id"), Some(CARD));
    assert!(
        s.upstream_got()
            .iter()
            .all(|g| !g.headers.iter().any(|(_, v)| v.contains(&minted))
                && !g.body.contains(&minted)),
        "the minted id reached the upstream"
    );
}

#[tokio::test]
async fn a_minted_event_id_does_not_resume_another_session_or_principal() {
    let s = Stack::start(REDACT, resumable).await;
    // No session here (every id is bound to the principal that opened it,
    // so a made-up one would be refused before this check); another
    // session's scope is the unit test `minted_ids_open_only_for_their_scope`.
    let alice = s.agent(0);
    let minted = post(&alice, &call("lookup")).await.events()[0]
        .id
        .clone()
        .unwrap();
    let refused = r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid request: Last-Event-ID names no event of this session"}}"#;

    let other_principal = s.agent(1);
    let got = exchange(
        &other_principal,
        Method::GET,
        "",
        &[("last-event-id", &minted)],
    )
    .await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(got.text(), refused);
    // A tampered id opens for nobody.
    let mut tampered = minted.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let got = exchange(&alice, Method::GET, "", &[("last-event-id", &tampered)]).await;
    assert_eq!(got.text(), refused);
    assert!(
        !s.upstream_got().iter().any(|g| g.method == "GET"),
        "a refused resumption reached the upstream"
    );

    // Its own session and principal resume.
    let got = exchange(&alice, Method::GET, "", &[("last-event-id", &minted)]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.messages().len(), 1);
}

#[tokio::test]
async fn a_resumed_stream_is_checked_as_the_call_it_resumes() {
    // Redaction only for `lookup`: the resumed stream of a `lookup` call is
    // still that call's, so its result is redacted.
    let s = Stack::start(REDACT_LOOKUP, resumable).await;
    let c = s.agent(0);
    let minted = post(&c, &call("lookup")).await.events()[0]
        .id
        .clone()
        .unwrap();
    let resumed = exchange(&c, Method::GET, "", &[("last-event-id", &minted)]).await;
    assert_eq!(
        resumed.messages(),
        vec![serde_json::from_str::<Value>(&result_text("1", REDACTED)).unwrap()]
    );
}

#[tokio::test]
async fn a_response_on_a_get_stream_without_resumption_is_dropped() {
    let s = Stack::start(REDACT, |got| match got.method.as_str() {
        "GET" => sse_reply(
            &[],
            &format!("{}{}", data(&result_text("1", LOUD)), data(&log_note(LOUD))),
        ),
        _ => respond("405 Method Not Allowed", &[], ""),
    })
    .await;
    let got = exchange(&s.agent(0), Method::GET, "", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.events()[0].data.as_deref(), Some(""));
    assert_eq!(
        got.messages(),
        vec![serde_json::from_str::<Value>(&log_note(REDACTED)).unwrap()]
    );
    assert!(
        s.decisions().iter().any(|d| d["outcome"] == "dropped"
            && d["kind"] == "response"
            && d["request_id"] == "1")
    );
}
