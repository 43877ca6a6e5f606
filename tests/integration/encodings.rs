//! Personal data hidden in encodings (base64, percent, HTML entities, JSON
//! inside strings, combinations), in `blob`s and split across parts, sent
//! by a hostile upstream through the real host and the built `redact`
//! component: through `portcullis up` with the default policy, and through
//! a tunnel with redact's own policies.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use portcullis::client::McpClient;
use portcullis::config::upstream::UpstreamSpec;
use portcullis::plugin::PluginEngine;
use portcullis::tunnel::dial::ProxyConfig;
use portcullis::up::{self, UpOptions};
use serde_json::{Value, json};

use crate::plugins::write_policy;
use crate::support::*;

/// The values smuggled, and what of each must not be readable afterwards.
const VALUES: &[(&str, &str)] = &[
    ("ada.lovelace@example.com", "ada.lovelace"),
    ("4111 1111 1111 1111", "4111 1111 1111 1111"),
    ("123-45-6789", "123-45-6789"),
    ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
];

fn b64(s: &str) -> String {
    STANDARD.encode(s)
}
fn b64url(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}
fn pct(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}
fn ent_dec(s: &str) -> String {
    s.chars().map(|c| format!("&#{};", c as u32)).collect()
}
fn ent_hex(s: &str) -> String {
    s.chars().map(|c| format!("&#x{:x};", c as u32)).collect()
}
fn ent_named(s: &str) -> String {
    s.replace('@', "&commat;")
        .replace('.', "&period;")
        .replace('-', "&hyphen;")
        .replace(' ', "&nbsp;")
}
fn json_in(s: &str) -> String {
    json!({"note": s}).to_string()
}

type Enc = fn(&str) -> String;

/// Layers, innermost first.
const LAYERS: &[(&str, &[Enc])] = &[
    ("base64", &[b64]),
    ("base64url", &[b64url]),
    ("percent", &[pct]),
    ("entities decimal", &[ent_dec]),
    ("entities hex", &[ent_hex]),
    ("entities named", &[ent_named]),
    ("json in json", &[json_in, json_in]),
    ("base64 of percent", &[pct, b64]),
    ("entities in json", &[ent_hex, json_in]),
    ("json in base64url", &[json_in, b64url]),
];

fn hide(value: &str, encs: &[Enc]) -> String {
    encs.iter().fold(value.to_owned(), |v, e| e(&v))
}

/// Everything readable out of `s`, decoded independently of the plugin.
fn views(s: &str, depth: usize, out: &mut Vec<String>) {
    // NBSP and the HTML hyphen read as a space and a dash.
    out.push(s.replace('\u{a0}', " ").replace('\u{2010}', "-"));
    if depth == 0 {
        return;
    }
    if s.contains('%') {
        let b = s.as_bytes();
        let mut bytes = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match (
                b[i],
                b.get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok()),
            ) {
                (b'%', Some(h)) if u8::from_str_radix(h, 16).is_ok() => {
                    bytes.push(u8::from_str_radix(h, 16).unwrap());
                    i += 3;
                }
                (c, _) => {
                    bytes.push(c);
                    i += 1;
                }
            }
        }
        views(&String::from_utf8_lossy(&bytes), depth - 1, out);
    }
    if s.contains('&') {
        let mut t = s.to_owned();
        for (name, c) in [
            ("commat", "@"),
            ("period", "."),
            ("hyphen", "-"),
            ("nbsp", " "),
            ("amp", "&"),
        ] {
            t = t.replace(&format!("&{name};"), c);
        }
        let mut d = String::new();
        let mut rest = t.as_str();
        while let Some(p) = rest.find("&#") {
            d.push_str(&rest[..p]);
            let r = &rest[p + 2..];
            let (hex, r) = match r.strip_prefix(['x', 'X']) {
                Some(r) => (true, r),
                None => (false, r),
            };
            let n = r.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(r.len());
            match u32::from_str_radix(&r[..n], if hex { 16 } else { 10 })
                .ok()
                .and_then(char::from_u32)
            {
                Some(c) => {
                    d.push(c);
                    rest = r[n..].strip_prefix(';').unwrap_or(&r[n..]);
                }
                None => {
                    d.push_str("&#");
                    rest = &rest[p + 2..];
                }
            }
        }
        d.push_str(rest);
        views(&d, depth - 1, out);
    }
    for word in s.split(|c: char| !(c.is_ascii_alphanumeric() || "+/-_=".contains(c))) {
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            if word.len() >= 8
                && let Ok(bytes) = engine.decode(word)
            {
                views(&String::from_utf8_lossy(&bytes), depth - 1, out);
            }
        }
    }
    if let Ok(v) = serde_json::from_str::<Value>(s) {
        fn strings(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) => out.push(s.clone()),
                Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
                Value::Object(o) => o.values().for_each(|v| strings(v, out)),
                _ => {}
            }
        }
        let mut inner = Vec::new();
        strings(&v, &mut inner);
        for t in inner {
            views(&t, depth - 1, out);
        }
    }
}

fn readable(s: &str, secret: &str) -> bool {
    let mut all = Vec::new();
    views(s, 8, &mut all);
    all.iter().any(|v| v.contains(secret))
}

/// Every (value, layer) pair, numbered: the hostile upstream answers case
/// `n` with the value hidden in the layer, inside a sentence.
fn cases() -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    for (value, secret) in VALUES {
        for (layer, encs) in LAYERS {
            out.push((
                format!("{secret} in {layer}"),
                *secret,
                format!("customer record: {} (end)", hide(value, encs)),
            ));
        }
    }
    out
}

/// A hostile MCP server: `tools/call` with `{"case": n}` answers case `n`;
/// `{"parts": [..]}` answers one text block per part; `resources/read`
/// answers its `uri` (base64) as a blob.
async fn hostile_upstream() -> std::net::SocketAddr {
    let cases = cases();
    json_upstream(move |req| {
        let id = req.get("id")?.clone();
        let result = match req["method"].as_str() {
            Some("initialize") => json!({"protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}, "resources": {}},
                "serverInfo": {"name": "hostile", "version": "1"}}),
            Some("tools/call") => {
                let args = &req["params"]["arguments"];
                if let Some(parts) = args["parts"].as_array() {
                    let content: Vec<Value> = parts
                        .iter()
                        .map(|p| json!({"type": "text", "text": p}))
                        .collect();
                    json!({"content": content})
                } else if let Some(text) = args["text"].as_str() {
                    json!({"content": [{"type": "text", "text": text}]})
                } else {
                    let n = args["case"].as_u64().unwrap_or(0) as usize;
                    json!({"content": [{"type": "text", "text": cases[n].2}]})
                }
            }
            Some("resources/read") => {
                let blob = req["params"]["uri"].as_str().unwrap_or("").to_owned();
                json!({"contents": [{"uri": "file:///r", "mimeType": "application/octet-stream", "blob": blob}]})
            }
            _ => json!({}),
        };
        Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
    })
    .await
}

fn text_of(reply: &Value) -> String {
    reply["result"]["content"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|p| p["text"].as_str().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
                .join("|")
        })
        .unwrap_or_default()
}

/// Through `portcullis up` and its built-in default policy: the hostile
/// upstream stands in for the demo server, and nothing it hides in an
/// encoding reaches the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_personal_data_does_not_leave_through_up() {
    let addr = hostile_upstream().await;
    let running = up::start(UpOptions {
        servers: vec![(
            "demo".to_owned(),
            UpstreamSpec::parse(&format!("http://{addr}/mcp")).unwrap(),
        )],
        demo: false,
        ..UpOptions::default()
    })
    .await
    .unwrap();
    let mut c = McpClient::new(&running.servers["demo"], running.token.as_deref());
    c.initialize().await.unwrap();
    for (n, (name, secret, sent)) in cases().iter().enumerate() {
        assert!(readable(sent, secret), "{name}: the case hides nothing");
        let r = c
            .call_tool("lookup_customer", json!({"case": n}))
            .await
            .unwrap();
        assert!(r.get("error").is_none(), "{name}: {r}");
        let got = text_of(&r);
        assert!(!readable(&got, secret), "{name} left: {sent:?} -> {got:?}");
        assert!(got.starts_with("customer record: "), "{name}: {got}");
    }
    // A card split over two text blocks is masked in both.
    let r = c
        .call_tool(
            "lookup_customer",
            json!({"parts": ["card 4111 1111", "1111 1111"]}),
        )
        .await
        .unwrap();
    assert_eq!(text_of(&r), "card [card:****1111]|[card:****1111]", "{r}");
    // Benign look-alikes pass as they are.
    for text in [
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8, id 550e8400e29b41d4a716446655440000",
        "digest 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU= of aGVsbG8gd29ybGQ=",
        "https://example.org/search?q=hello%20world&amp;page=2 &lt;b&gt;",
    ] {
        let r = c
            .call_tool("lookup_customer", json!({"text": text}))
            .await
            .unwrap();
        assert_eq!(text_of(&r), text, "{r}");
    }
    running.stop().await;
}

/// A tunnel to the hostile upstream with its gateway (kept alive).
struct Stack {
    t: OneTunnel,
    _gw: Arc<portcullis::gateway::Gateway>,
    _stop: tokio_util::sync::CancellationToken,
}

/// A tunnel to the hostile upstream with redact alone, configured by
/// `config` (TOML of `[plugins.redact.config]`).
async fn redacting(config: &str) -> Stack {
    let addr = hostile_upstream().await;
    let t = OneTunnel::start().await;
    let ups = HashMap::from([(
        "h".to_owned(),
        http_upstream("h", &format!("http://{addr}/mcp")),
    )]);
    let (gw, stop, _task) = t.gateway(ups, 1, ProxyConfig::default()).await;
    let policy = format!(
        "[plugins.redact]\nsource = \"builtin:redact\"\n[plugins.redact.config]\n{config}\n\
         [[servers.h]]\nplugin = \"redact\"\nphase = \"response\"\n"
    );
    let engine = PluginEngine::new(None).unwrap();
    let policy = portcullis::policy::load(&write_policy(&policy), &engine, gw.catalog())
        .await
        .unwrap();
    gw.set_policy(Some(Arc::new(policy)));
    Stack {
        t,
        _gw: gw,
        _stop: stop,
    }
}

fn blocked(reply: &Value) -> String {
    assert_eq!(reply["error"]["code"], -32001, "{reply}");
    reply["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_limits_and_layer_policies_through_the_component() {
    let s = redacting("").await;
    let mut c = s.t.client("h");
    c.initialize().await.unwrap();
    // Text in a resource blob: redacted and re-encoded.
    let r = c
        .request(
            "resources/read",
            json!({"uri": b64("mail ada.lovelace@example.com")}),
        )
        .await
        .unwrap();
    let r = r.last().unwrap();
    let blob = r["result"]["contents"][0]["blob"].as_str().unwrap();
    assert_eq!(STANDARD.decode(blob).unwrap(), b"mail [REDACTED:email]");
    // Binary with an address inside: cannot be re-encoded, blocked.
    let mut bin = vec![0x89, b'P', b'N', b'G', 0, 0xff];
    bin.extend_from_slice(b" ada.lovelace@example.com ");
    bin.push(0x80);
    let r = c
        .request("resources/read", json!({"uri": STANDARD.encode(&bin)}))
        .await
        .unwrap();
    assert!(blocked(r.last().unwrap()).contains("(email)"));
    // JSON in strings: four levels are opened, the fifth blocks.
    let deep = |n: usize| (0..n).fold("ada.lovelace@example.com".to_owned(), |v, _| json_in(&v));
    let r = c.call_tool("x", json!({"text": deep(4)})).await.unwrap();
    assert!(!readable(&text_of(&r), "ada.lovelace"), "{r}");
    let r = c.call_tool("x", json!({"text": deep(5)})).await.unwrap();
    assert!(blocked(&r).contains("deeper"), "{r}");

    // A layer whose policy is block refuses what it hides; others redact.
    let s = redacting(r#"decode = { base64 = "block" }"#).await;
    let mut c = s.t.client("h");
    c.initialize().await.unwrap();
    let r = c
        .call_tool("x", json!({"text": b64("ada.lovelace@example.com")}))
        .await
        .unwrap();
    assert!(blocked(&r).contains("(email)"));
    let r = c
        .call_tool("x", json!({"text": pct("ada.lovelace@example.com")}))
        .await
        .unwrap();
    assert!(!readable(&text_of(&r), "ada.lovelace"), "{r}");
}
