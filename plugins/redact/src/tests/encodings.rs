//! Adversarial tables for the decoding layers: every value hidden in every
//! encoding and combination is found, benign look-alikes are left alone,
//! nesting beyond the limits blocks, values split across parts are masked.
//! Over 400 lines: the tables and the independent decoding oracle they
//! share.

use super::*;
use crate::decode::{self, Style};
use crate::walk::{MAX_EMBED, layers::MAX_LAYERS};

/// Values an attacker would smuggle, as a detector finds them.
const SECRETS: &[(&str, &str)] = &[
    ("email", "bob@example.com"),
    ("card", "4111 1111 1111 1111"),
    ("ssn", "123-45-6789"),
    ("jwt", JWT),
    ("aws_access_key", "AKIAIOSFODNN7EXAMPLE"),
];

type Enc = fn(&str) -> String;

fn b64(s: &str) -> String {
    decode::base64_encode(
        s.as_bytes(),
        Style {
            url_safe: false,
            padded: true,
        },
    )
}
fn b64url(s: &str) -> String {
    decode::base64_encode(
        s.as_bytes(),
        Style {
            url_safe: true,
            padded: false,
        },
    )
}
/// Every byte percent-encoded.
fn pct_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}
/// Only the characters a detector keys on.
fn pct_some(s: &str) -> String {
    s.replace('@', "%40")
        .replace('-', "%2D")
        .replace(' ', "%20")
        .replace('.', "%2e")
}
fn ent_named(s: &str) -> String {
    s.replace('@', "&commat;")
        .replace('.', "&period;")
        .replace('-', "&hyphen;")
        .replace(' ', "&nbsp;")
}
fn ent_dec(s: &str) -> String {
    s.chars().map(|c| format!("&#{};", c as u32)).collect()
}
fn ent_hex(s: &str) -> String {
    s.chars().map(|c| format!("&#x{:X};", c as u32)).collect()
}
/// Named, decimal without `;`, hex, and plain characters mixed.
fn ent_mixed(s: &str) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| match (i % 4, c) {
            (_, '@') => "&commat;".to_string(),
            (0, c) => format!("&#{}", c as u32),
            (1, c) => format!("&#x{:x};", c as u32),
            (_, c) => c.to_string(),
        })
        .collect()
}
fn json1(s: &str) -> String {
    json!({"note": s}).to_string()
}

/// Every layer, and combinations of them (outermost last).
const LAYERS: &[(&str, &[Enc])] = &[
    ("base64", &[b64]),
    ("base64url", &[b64url]),
    ("percent all", &[pct_all]),
    ("percent some", &[pct_some]),
    ("percent twice", &[pct_some, pct_all]),
    ("entities named", &[ent_named]),
    ("entities decimal", &[ent_dec]),
    ("entities hex", &[ent_hex]),
    ("entities mixed", &[ent_mixed]),
    ("json", &[json1]),
    ("json 4 deep", &[json1, json1, json1, json1]),
    ("base64 of percent", &[pct_all, b64]),
    ("percent of base64", &[b64, pct_all]),
    ("entities in json", &[ent_dec, json1]),
    ("json in base64", &[json1, b64]),
    ("base64 in json in entities", &[b64, json1, ent_hex]),
    ("percent in json in base64url", &[pct_some, json1, b64url]),
];

/// Everything an attacker could read out of `s`: `s`, and recursively
/// every decoding of it (entities, percent, base64 runs and wholes, the
/// strings of JSON).
fn views(s: &str, depth: usize, out: &mut Vec<String>) {
    out.push(s.to_string());
    if depth == 0 {
        return;
    }
    if let Some((t, _, _)) = decode::entities_decode(s) {
        views(&t, depth - 1, out);
    }
    if let Some((b, _, _)) = decode::percent_decode(s) {
        views(&String::from_utf8_lossy(&b), depth - 1, out);
    }
    let mut runs = decode::base64_runs(s);
    runs.push((0, s.len()));
    for (a, b) in runs {
        if let Some((bytes, _)) = decode::base64_decode(&s[a..b]) {
            views(&String::from_utf8_lossy(&bytes), depth - 1, out);
        }
    }
    if let Ok(v) = serde_json::from_str::<Value>(s) {
        fn strings(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) => out.push(s.clone()),
                Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
                Value::Object(o) => o.iter().for_each(|(k, v)| {
                    out.push(k.clone());
                    strings(v, out);
                }),
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

fn leaks(s: &str, value: &str) -> bool {
    let mut all = Vec::new();
    views(s, 12, &mut all);
    all.iter()
        .any(|v| crate::normalize::normalize(v).contains(value))
}

fn wrap(value: &str, encs: &[Enc]) -> String {
    encs.iter().fold(value.to_string(), |v, e| e(&v))
}

#[test]
fn every_value_in_every_layer_is_redacted() {
    let c = cfg("{}");
    for (name, value) in SECRETS {
        for (layer, encs) in LAYERS {
            let hidden = wrap(value, encs);
            for text in [hidden.clone(), format!("see {hidden} please")] {
                assert!(leaks(&text, value), "{layer}: the case itself hides {name}");
                let msg = tool_result(&text);
                let v = run(&c, &msg);
                assert!(v.denial().is_none(), "{name} in {layer}: {v:?}");
                let out = after(&v, &msg);
                let got = out["result"]["content"][0]["text"].as_str().unwrap();
                assert!(
                    !leaks(got, value),
                    "{name} in {layer} leaked: {text:?} -> {got:?}"
                );
                assert!(v.count(name).unwrap_or(0) >= 1, "{name} in {layer}: {v:?}");
                assert_eq!(got.starts_with("see "), text.starts_with("see "), "{got}");
            }
        }
    }
}

/// The redacted text is written back in the layer's own encoding.
#[test]
fn redactions_are_re_encoded_alike() {
    let cases = [
        // Only `%` and what the original escaped are escaped again.
        ("bob%40example.com", "[REDACTED:email]"),
        ("q=bob%40example.com&x=1%20y", "q=[REDACTED:email]&x=1%20y"),
        ("a%3Ab%20bob%40example.com", "a%3Ab%20[REDACTED%3Aemail]"),
        // Around the change the original is kept as written.
        (
            "%61%62 bob%40example.com %61",
            "%61%62 [REDACTED:em%61il] %61",
        ),
        (
            "&#97;&#98; bob&#64;example.com &#97;",
            "&#97;&#98; [REDACTED:em&#97;il] &#97;",
        ),
        ("<b>bob&#64;example.com</b>", "<b>[REDACTED:email]</b>"),
        ("&lt;bob&#64;example.com&gt;", "&lt;[REDACTED:email]&gt;"),
        ("Ym9iQGV4YW1wbGUuY29t", "W1JFREFDVEVEOmVtYWlsXQ"),
    ];
    for (input, want) in cases {
        assert_eq!(redact(input), want, "{input}");
    }
    for enc in [b64, b64url] {
        assert_eq!(
            redact(&enc("to: bob@example.com")),
            enc("to: [REDACTED:email]")
        );
    }
}

#[test]
fn benign_look_alikes_stay_untouched() {
    let benign = [
        "550e8400e29b41d4a716446655440000",
        "da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==",
        "eyJpZCI6MTIzNH0",
        "eyJhbGciOiJIUzI1NiJ9",
        "aGVsbG8gd29ybGQsIG5vdGhpbmcgaGVyZQ==",
        "Internationalization and Authorization are long words",
        "https://example.org/search?q=hello%20world&page=2",
        "https://cdn.example.org/assets/app.4f3c2a1b9d8e7f6a.js",
        "/var/lib/docker/overlay2/3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c/merged",
        "Fish &amp; Chips &lt;b&gt; 100% sure, AT&T, 50%OFF",
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 (HEAD -> main)",
        "k8s-deployment-frontend-7d4b9c8f6d-x2x9z",
        "dGhlIHF1aWNrIGJyb3duIGZveA",
        "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA",
        "ORDER-2024-000123456 shipped; ticket JIRA-12345",
        "[{\"a\": [{\"b\": \"{\\\"c\\\": 1}\"}]}]",
    ];
    let c = cfg("{}");
    for text in benign {
        let v = run(&c, &tool_result(text));
        assert!(v.is_allow(), "{text:?} was changed: {v:?}");
    }
    // A binary blob without findings passes.
    let png: Vec<u8> = [0x89, b'P', b'N', b'G', 13, 10, 26, 10, 0, 0, 0, 13]
        .into_iter()
        .chain((0..=255u8).cycle().take(3000))
        .collect();
    let blob = decode::base64_encode(
        &png,
        Style {
            url_safe: false,
            padded: true,
        },
    );
    assert!(run(&c, &resource_blob(&blob)).is_allow());
}

fn resource_blob(blob: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "result": {"contents": [
        {"uri": "file:///a", "mimeType": "application/octet-stream", "blob": blob}]}})
    .to_string()
}

#[test]
fn blobs() {
    let c = cfg("{}");
    // Text in a blob: redacted, re-encoded.
    let msg = resource_blob(&b64("name: Bob\nmail: bob@example.com\n"));
    let v = run(&c, &msg);
    let out = after(&v, &msg);
    let blob = out["result"]["contents"][0]["blob"].as_str().unwrap();
    let (text, _) = decode::base64_decode(blob).unwrap();
    assert_eq!(text, b"name: Bob\nmail: [REDACTED:email]\n");
    // Wrapped at 76 columns, like MIME.
    let long = format!("{} bob@example.com", "lorem ipsum ".repeat(10));
    let wrapped: Vec<String> = b64(&long)
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let msg = tool_result(&wrapped.join("\r\n"));
    let out = after(&run(&c, &msg), &msg);
    assert!(!leaks(
        out["result"]["content"][0]["text"].as_str().unwrap(),
        "bob@example.com"
    ));
    // Binary with a finding inside: cannot be re-encoded, blocked.
    let mut bin = vec![0x89, b'P', b'N', b'G', 0, 0, 0xff, 0xfe];
    bin.extend_from_slice(b" author bob@example.com ");
    bin.extend_from_slice(&[0, 0xff, 0x80, 0]);
    let blob = decode::base64_encode(
        &bin,
        Style {
            url_safe: false,
            padded: true,
        },
    );
    let v = run(&c, &resource_blob(&blob));
    assert_eq!(v.label("blocked"), Some("email"), "{v:?}");
    // Percent-encoding of bytes that are not UTF-8, with a finding: blocked.
    let v = run(&c, &tool_result("%FF%FEbob%40example.com"));
    assert_eq!(v.label("blocked"), Some("email"), "{v:?}");
}

#[test]
fn nesting_beyond_the_limits_blocks() {
    let c = cfg("{}");
    let value = "bob@example.com";
    // JSON in strings: redacted up to the limit, blocked beyond.
    for depth in 1..=usize::from(MAX_EMBED) + 1 {
        let text = (0..depth).fold(value.to_string(), |v, _| json1(&v));
        let v = run(&c, &tool_result(&text));
        if depth <= usize::from(MAX_EMBED) {
            assert_eq!(v.count("email"), Some(1), "depth {depth}: {v:?}");
        } else {
            assert_eq!(v.label("blocked"), Some("too_deep"), "depth {depth}: {v:?}");
            assert!(v.denial().unwrap().public_message.contains("deeper"));
        }
    }
    // Even without anything to find, JSON beyond the limit is not passed.
    let clean = (0..=MAX_EMBED).fold("nothing".to_string(), |v, _| json1(&v));
    assert_eq!(
        run(&c, &tool_result(&clean)).label("blocked"),
        Some("too_deep")
    );
    // Layers of any kind: up to MAX_LAYERS, then blocked.
    for n in [usize::from(MAX_LAYERS), usize::from(MAX_LAYERS) + 1] {
        let text = (0..n).fold(value.to_string(), |v, i| {
            if i % 2 == 0 { pct_all(&v) } else { b64(&v) }
        });
        let v = run(&c, &tool_result(&text));
        if n <= usize::from(MAX_LAYERS) {
            assert_eq!(v.count("email"), Some(1), "{n} layers: {v:?}");
        } else {
            assert_eq!(v.label("blocked"), Some("too_deep"), "{n} layers: {v:?}");
        }
    }
}

#[test]
fn layer_policies() {
    let hidden = [
        ("base64", b64("mail bob@example.com")),
        ("percent", "mail bob%40example.com".to_string()),
        ("entities", "mail bob&#64;example.com".to_string()),
        ("json", json1("bob@example.com")),
    ];
    for (layer, _) in &hidden {
        for policy in ["block", "off"] {
            let c = cfg(&format!(r#"{{"decode": {{"{layer}": "{policy}"}}}}"#));
            for (other, text) in &hidden {
                let v = run(&c, &tool_result(text));
                let got = match (other == layer, policy) {
                    (true, "block") => v.label("blocked") == Some("email"),
                    // Off: the layer is not opened; base64 and percent hide
                    // the address, entities and JSON do not fully.
                    (true, _) => match *other {
                        "base64" | "percent" | "entities" => v.is_allow(),
                        _ => v.count("email") == Some(1),
                    },
                    (false, _) => v.count("email") == Some(1),
                };
                assert!(got, "decode.{layer} = {policy}, hidden in {other}: {v:?}");
            }
        }
    }
    for (bad, err) in [
        (
            r#"{"decode": {"base32": "redact"}}"#,
            "unknown field `base32`",
        ),
        (
            r#"{"decode": {"base64": "mask"}}"#,
            "unknown variant `mask`",
        ),
        (r#"{"decode": "off"}"#, "invalid type"),
    ] {
        let e = config::parse(bad).unwrap_err();
        assert!(e.contains(err), "{bad}: {e}");
    }
}

/// A tools/call result with one text block per part.
fn parts_result(parts: &[&str]) -> String {
    let content: Vec<Value> = parts
        .iter()
        .map(|p| json!({"type": "text", "text": p}))
        .collect();
    json!({"jsonrpc": "2.0", "id": 1, "result": {"content": content}}).to_string()
}

#[test]
fn values_split_across_parts() {
    let c = cfg("{}");
    let cases: &[(&[&str], &str, &[&str])] = &[
        (
            &["card 4111 1111", "1111 1111 thanks"],
            "card",
            &["card [REDACTED:card]", "[REDACTED:card] thanks"],
        ),
        (
            &["4111", "1111", "1111", "1111"],
            "card",
            &["[REDACTED:card]"; 4],
        ),
        (&["4111111111", "111111"], "card", &["[REDACTED:card]"; 2]),
        (
            &["write to bob@", "example.com today"],
            "email",
            &["write to [REDACTED:email]", "[REDACTED:email] today"],
        ),
        (
            &["ssn 123-", "45-", "6789 end"],
            "ssn",
            &["ssn [REDACTED:ssn]", "[REDACTED:ssn]", "[REDACTED:ssn] end"],
        ),
        (
            &["key AKIAIOSF", "ODNN7EXAMPLE"],
            "aws_access_key",
            &["key [REDACTED:aws_access_key]", "[REDACTED:aws_access_key]"],
        ),
    ];
    for (parts, name, want) in cases {
        let msg = parts_result(parts);
        let v = run(&c, &msg);
        let out = after(&v, &msg);
        let got: Vec<&str> = out["result"]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["text"].as_str().unwrap())
            .collect();
        assert_eq!(&got, want, "{parts:?}");
        assert_eq!(v.count(name), Some(1), "{parts:?}: {v:?}");
    }
    // A prompt's messages and a sampling request's messages.
    let prompt = json!({"jsonrpc": "2.0", "id": 1, "result": {"messages": [
        {"role": "user", "content": {"type": "text", "text": "mail bob@"}},
        {"role": "user", "content": {"type": "text", "text": "example.com"}}]}});
    let (_, out) = through(
        &c,
        &ctx(
            Direction::ToClient,
            MessageKind::Response,
            Some("prompts/get"),
        ),
        &prompt,
    );
    assert_eq!(
        out["result"]["messages"][1]["content"]["text"],
        "[REDACTED:email]"
    );
    let sampling = json!({"jsonrpc": "2.0", "id": 2, "method": "sampling/createMessage",
        "params": {"maxTokens": 9, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "card 4111 1111 1111"}]},
        {"role": "user", "content": [{"type": "text", "text": "1111"}]}]}});
    let (_, out) = through(
        &c,
        &ctx(
            Direction::ToClient,
            MessageKind::Request,
            Some("sampling/createMessage"),
        ),
        &sampling,
    );
    assert_eq!(
        out["params"]["messages"][1]["content"][0]["text"],
        "[REDACTED:card]"
    );
    // A split value whose action is block refuses the message.
    let b = cfg(r#"{"detectors": {"card": "block"}}"#);
    let v = run(&b, &parts_result(&["4111 1111", "1111 1111"]));
    assert_eq!(v.label("blocked"), Some("card"));
    // Unrelated parts stay as they are.
    for parts in [
        &["Order 12", "34 shipped"][..],
        &["total: 4111", " units"],
        &["see https://example.com", "/docs"],
        &["v1.2", ".3.4 released"],
        &["a", "b", "c"],
    ] {
        assert!(run(&c, &parts_result(parts)).is_allow(), "{parts:?}");
    }
}
