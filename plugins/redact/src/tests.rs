//! Unit tests, run natively with `cargo test` (no host imports are called).
//! The benchmark: `cargo test --release -p redact -- --ignored --nocapture`.

use portcullis_plugin_sdk::{MessageKind, Value, json, testing};

use super::*;

mod encodings;

fn cfg(text: &str) -> Config {
    config::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

fn ctx(direction: Direction, kind: MessageKind, method: Option<&str>) -> Context {
    testing::context(direction, kind, method, "alice", &[])
}

fn response_ctx() -> Context {
    ctx(
        Direction::ToClient,
        MessageKind::Response,
        Some("tools/call"),
    )
}

/// A tools/call result with one text block.
fn tool_result(text: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": text}]}})
        .to_string()
}

/// Runs `message` (a response to tools/call) through `c`.
fn run(c: &Config, message: &str) -> Verdict {
    Redact::decide(c, &response_ctx(), message)
}

/// The message after the verdict (the original when allowed).
fn after(v: &Verdict, message: &str) -> Value {
    assert!(v.denial().is_none(), "unexpected deny: {v:?}");
    serde_json::from_str(v.rewritten().unwrap_or(message)).expect("output is JSON")
}

/// The first text block after redaction with `c`.
fn redact_with(c: &Config, text: &str) -> String {
    let msg = tool_result(text);
    let v = run(c, &msg);
    let out = after(&v, &msg);
    let got = out["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(v.is_allow(), got == text, "rewrite iff changed: {v:?}");
    got
}

fn redact(text: &str) -> String {
    redact_with(&cfg("{}"), text)
}

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
const GHP: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
const SLACK: &str = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx";
const GOOGLE: &str = "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

// ---------------------------------------------------------------------------
// Detectors
// ---------------------------------------------------------------------------

#[test]
fn detects() {
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1b2c3\nabcd==\n-----END RSA PRIVATE KEY-----";
    let cases: Vec<(String, &str)> = vec![
        // email
        (
            "mail bob.smith+tag@example.co.uk now".into(),
            "mail [REDACTED:email] now",
        ),
        ("<Bob@Example.COM>".into(), "<[REDACTED:email]>"),
        (
            "mailto:x_y%z@sub-domain.example.org.".into(),
            "mailto:[REDACTED:email].",
        ),
        // phone
        (
            "call +1 (555) 123-4567 today".into(),
            "call [REDACTED:phone] today",
        ),
        ("+44 20 7946 0958".into(), "[REDACTED:phone]"),
        ("tel:+15551234567".into(), "tel:[REDACTED:phone]"),
        ("555-123-4567".into(), "[REDACTED:phone]"),
        ("(555) 123-4567".into(), "[REDACTED:phone]"),
        ("(555)123-4567,".into(), "[REDACTED:phone],"),
        ("1-555-123-4567".into(), "[REDACTED:phone]"),
        ("555.123.4567".into(), "[REDACTED:phone]"),
        ("555 123 4567".into(), "[REDACTED:phone]"),
        ("id 15551234567".into(), "id [REDACTED:phone]"),
        // ssn
        ("ssn 123-45-6789.".into(), "ssn [REDACTED:ssn]."),
        ("123 45 6789".into(), "[REDACTED:ssn]"),
        // card
        (
            "card 4111 1111 1111 1111 exp".into(),
            "card [REDACTED:card] exp",
        ),
        ("4111-1111-1111-1111".into(), "[REDACTED:card]"),
        ("4111111111111111".into(), "[REDACTED:card]"),
        ("amex 3782 822463 10005".into(), "amex [REDACTED:card]"),
        ("5555555555554444,".into(), "[REDACTED:card],"),
        (
            "order 12 4111 1111 1111 1111".into(),
            "order 12 [REDACTED:card]",
        ),
        // iban
        ("DE89 3704 0044 0532 0130 00".into(), "[REDACTED:iban]"),
        (
            "iban:GB82WEST12345698765432;".into(),
            "iban:[REDACTED:iban];",
        ),
        ("de89370400440532013000".into(), "[REDACTED:iban]"),
        ("NO9386011117947".into(), "[REDACTED:iban]"),
        // ip
        ("from 10.0.0.1:8080".into(), "from [REDACTED:ipv4]:8080"),
        ("192.168.001.254".into(), "[REDACTED:ipv4]"),
        (
            "addr 2001:db8:85a3::8a2e:370:7334.".into(),
            "addr [REDACTED:ipv6].",
        ),
        ("[2001:db8::1]:443".into(), "[[REDACTED:ipv6]]:443"),
        (
            "fe80::1 and ::1".into(),
            "[REDACTED:ipv6] and [REDACTED:ipv6]",
        ),
        ("::ffff:192.168.1.1".into(), "[REDACTED:ipv6]"),
        // tokens
        (format!("auth {JWT} ok"), "auth [REDACTED:jwt] ok"),
        (
            format!("key:\n{pem}\nend"),
            "key:\n[REDACTED:private_key]\nend",
        ),
        (
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg (cut".into(),
            "[REDACTED:private_key]",
        ),
        (
            "id=AKIAIOSFODNN7EXAMPLE".into(),
            "id=[REDACTED:aws_access_key]",
        ),
        ("ASIAY34FZKBOKMUTVV7A".into(), "[REDACTED:aws_access_key]"),
        (
            format!("aws_secret_access_key = {AWS_SECRET}"),
            "aws_secret_access_key = [REDACTED:aws_secret_key]",
        ),
        (
            format!("AWS_SECRET_ACCESS_KEY=\"{AWS_SECRET}\""),
            "AWS_SECRET_ACCESS_KEY=\"[REDACTED:aws_secret_key]\"",
        ),
        (format!("token {GHP}"), "token [REDACTED:github_token]"),
        (
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz".into(),
            "[REDACTED:github_token]",
        ),
        (format!("slack {SLACK}"), "slack [REDACTED:slack_token]"),
        (format!("key={GOOGLE}"), "key=[REDACTED:google_api_key]"),
        // generic secrets
        (
            "DB_PASSWORD=hunter2!".into(),
            "DB_PASSWORD=[REDACTED:secret]",
        ),
        ("password: Hunter22".into(), "password: [REDACTED:secret]"),
        (
            "client_secret => 'abc123xyz'".into(),
            "client_secret => '[REDACTED:secret]'",
        ),
        (
            "export GITHUB_TOKEN:=abcdef123".into(),
            "export GITHUB_TOKEN:=[REDACTED:secret]",
        ),
        (
            "GET /x?api_key=abc123&page=2".into(),
            "GET /x?api_key=[REDACTED:secret]&page=2",
        ),
        (
            "log: {\"password\": \"hunter2\", \"user\": \"x\"".into(),
            "log: {\"password\": \"[REDACTED:secret]\", \"user\": \"x\"",
        ),
        (
            "Authorization: Bearer abcDEF123456789xyz".into(),
            "Authorization: Bearer [REDACTED:secret]",
        ),
        (
            "curl -H 'authorization: bearer abcdef0123456789abcdef'".into(),
            "curl -H 'authorization: bearer [REDACTED:secret]'",
        ),
        (
            "postgres://admin:s3cr3t@db.internal/app".into(),
            "postgres://admin:[REDACTED:secret]@db.internal/app",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(redact(&input), want, "input: {input:?}");
    }
}

#[test]
fn near_misses() {
    let cases = [
        // cards: bad Luhn, wrong first digit, too short/long, odd grouping
        "4111 1111 1111 1112",
        "1234567890123456",
        "0000000000000000",
        "411111111111",
        "41111111111111111111",
        "41 11 11 11 11 11 11 11",
        "4111111111111111abc",
        // IBAN: checksum, unknown country, wrong length
        "GB82 WEST 1234 5698 7654 33",
        "XX89370400440532013000",
        "DE8937040044053201300",
        // IPv4
        "256.1.1.1",
        "1.2.3.4.5",
        "10.0.0",
        "v1.2.3.4",
        "1.2.3.4a",
        // SSN
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "123-00-4567",
        "123-45-0000",
        "123456789",
        "2024-123-45-6789",
        "123-45-6789-1",
        // phone
        "5551234567",
        "123-456-7890",
        "055-123-4567",
        "05551234567",
        "2024-01-15 12:30:45",
        "call 12345678",
        "+100 points",
        "3+5551234567",
        // email
        "user@localhost",
        "@handle",
        "a@b.c",
        "x@1.2",
        // IPv6 lookalikes
        "std::vec::Vec and a::b and dead::beef",
        "12:30:45",
        "00:1a:2b:3c:4d:5e",
        // tokens
        "eyJhbGciOiJIUzI1NiJ9 alone",
        "AKIAIOSFODNN7EXAMPL",
        "AKIAIOSFODNN7EXAMPLEX",
        "ghp_short",
        "xoxb-short",
        "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
        // generic secrets
        "password: required",
        "Your token: expired",
        "max_tokens=4096 and progressToken=abc123",
        "password=****",
        "api_key=${API_KEY}",
        "token = <your-token>",
        "password=abc",
        "Bearer tokens are great",
        "if (token == other)",
        "https://example.com/path?q=1",
        "user@ is not an email",
        // timestamps, versions, amounts
        "1712345678901 2024-06-01T12:00:00Z v2.3.1 $1,234.56",
        "[REDACTED:email] [card:****1111] [email:***@example.com] [ipv4:10.0.0.*]",
    ];
    for input in cases {
        assert_eq!(redact(input), input, "false positive");
    }
}

#[test]
fn checksums() {
    assert!(detect::luhn(b"4111111111111111".iter().copied()));
    assert!(!detect::luhn(b"4111111111111112".iter().copied()));
    assert!(detect::iban_checksum(b"GB82WEST12345698765432"));
    assert!(!detect::iban_checksum(b"GB82WEST12345698765433"));
    assert_eq!(detect::key_hint("DB_PASSWORD"), detect::Hint::Secret);
    assert_eq!(detect::key_hint("githubToken"), detect::Hint::Secret);
    assert_eq!(detect::key_hint("progressToken"), detect::Hint::None);
    assert_eq!(detect::key_hint("maxTokens"), detect::Hint::None);
    assert_eq!(
        detect::key_hint("aws_secret_access_key"),
        detect::Hint::AwsSecret
    );
    assert_eq!(detect::key_hint("mobilePhone"), detect::Hint::Phone);
    assert_eq!(detect::key_hint("ssn"), detect::Hint::Ssn);
}

// ---------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------

#[test]
fn partial() {
    let c = cfg(r#"{"default_action": "partial", "custom": [
        {"name": "employee_id", "regex": "EMP-[0-9]{6}", "action": "partial"},
        {"name": "short", "regex": "Q-[0-9]{2}", "action": "partial"}]}"#);
    let cases: Vec<(String, &str)> = vec![
        ("bob@Example.com".into(), "[email:***@example.com]"),
        ("4111 1111 1111 1111".into(), "[card:****1111]"),
        ("+1 555 123 4567".into(), "[phone:****4567]"),
        ("123-45-6789".into(), "[ssn:***-**-6789]"),
        ("DE89 3704 0044 0532 0130 00".into(), "[iban:DE****3000]"),
        ("192.168.001.254".into(), "[ipv4:192.168.1.*]"),
        (
            "2001:db8:85a3::8a2e:370:7334".into(),
            "[ipv6:2001:db8:85a3:*]",
        ),
        ("AKIAIOSFODNN7EXAMPLE".into(), "[aws_access_key:AKIA****]"),
        (GHP.into(), "[github_token:ghp_****]"),
        (SLACK.into(), "[slack_token:xoxb-****]"),
        (GOOGLE.into(), "[google_api_key:AIza****]"),
        (JWT.into(), "[REDACTED:jwt]"),
        ("password=hunter22".into(), "password=[REDACTED:secret]"),
        ("EMP-123456".into(), "[employee_id:****3456]"),
        ("Q-12".into(), "[REDACTED:short]"),
    ];
    for (input, want) in cases {
        assert_eq!(redact_with(&c, &input), want, "input: {input:?}");
    }
}

#[test]
fn hash() {
    let key = r#""hmac_key": "0123456789abcdef-test-key""#;
    let c = cfg(&format!(r#"{{"default_action": "hash", {key}}}"#));
    let other = cfg(r#"{"default_action": "hash", "hmac_key": "another-key-of-16+bytes"}"#);
    let a = redact_with(&c, "bob@example.com");
    assert!(
        a.len() == "[email:]".len() + 12
            && a.starts_with("[email:")
            && a[7..19].bytes().all(|b| b.is_ascii_hexdigit()),
        "{a}"
    );
    // Same value, same token: case, position, full-width and invisible
    // variants normalize alike.
    assert_eq!(redact_with(&c, "BOB@example.COM"), a);
    assert_eq!(redact_with(&c, "ｂｏｂ＠example.com"), a);
    assert_eq!(
        redact_with(&c, "to bob@example.com, cc bob@example.com"),
        format!("to {a}, cc {a}")
    );
    assert_ne!(redact_with(&c, "alice@example.com"), a);
    // Another key, another token.
    assert_ne!(redact_with(&other, "bob@example.com"), a);
    // Canonical forms: separators and country codes.
    assert_eq!(
        redact_with(&c, "4111 1111 1111 1111"),
        redact_with(&c, "4111-1111-1111-1111")
    );
    assert_eq!(
        redact_with(&c, "+1 555 123 4567"),
        redact_with(&c, "(555) 123-4567")
    );
    assert_eq!(
        redact_with(&c, "１２３-４５-６７８９"),
        redact_with(&c, "123\u{200B}-45-6789")
    );
    // The kind is part of the MAC: `[ssn:x]` and `[card:x]` differ even if
    // the digits were equal.
    let token = |kind: &str, v: &str| render::token(c.hmac.as_ref().unwrap(), kind, v);
    assert_ne!(token("ssn", "1"), token("card", "1"));
    assert_eq!(token("ssn", "1"), token("ssn", "1"));
}

#[test]
fn block() {
    let c = cfg(r#"{"detectors": {"ssn": "block"}}"#);
    let msg = tool_result("email bob@example.com, ssn 123-45-6789");
    let v = run(&c, &msg);
    let d = v.denial().expect("blocked");
    assert_eq!(d.code, -32001);
    assert_eq!(
        d.public_message,
        "Blocked by policy: the message contains sensitive data (ssn)"
    );
    assert!(!d.public_message.contains("6789") && !d.private_reason.contains("6789"));
    assert_eq!(v.label("blocked"), Some("ssn"));
    // Without an SSN the other detectors still mask.
    assert_eq!(
        redact_with(&c, "email bob@example.com"),
        "email [REDACTED:email]"
    );
    // Blocking works from inside JSON in a string and from a number.
    let v = run(&c, &tool_result(r#"{"rows": [{"ssn": "123-45-6789"}]}"#));
    assert!(v.denial().is_some());
    let c = cfg(r#"{"detectors": {"card": "block"}}"#);
    let msg = json!({"jsonrpc": "2.0", "id": 1, "result": {"structuredContent": {"n": 4111111111111111u64}}});
    assert!(run(&c, &msg.to_string()).denial().is_some());
}

#[test]
fn detectors_off_and_custom() {
    let c = cfg(r#"{"default_action": "off", "detectors": {"email": "mask"},
        "custom": [{"name": "ticket", "regex": "TCK-[0-9]{4,}"}]}"#);
    assert_eq!(
        redact_with(&c, "bob@example.com 123-45-6789 TCK-00012 10.0.0.1"),
        "[REDACTED:email] 123-45-6789 [REDACTED:ticket] 10.0.0.1"
    );
    let c = cfg(r#"{"detectors": {"ipv4": "off"}}"#);
    assert_eq!(redact_with(&c, "10.0.0.1"), "10.0.0.1");
    // Custom patterns see numbers too.
    let c =
        cfg(r#"{"default_action": "off", "custom": [{"name": "acct", "regex": "^9[0-9]{5}$"}]}"#);
    let msg = json!({"jsonrpc": "2.0", "id": 1, "result": {"structuredContent": {"account": 912345, "n": 12}}});
    let out = after(&run(&c, &msg.to_string()), &msg.to_string());
    assert_eq!(
        out["result"]["structuredContent"],
        json!({"account": "[REDACTED:acct]", "n": 12})
    );
}

#[test]
fn allow_values() {
    let c = cfg(r#"{"allow_values": ["127.0.0.1", "Support@Example.com", "555-123-4567"]}"#);
    assert_eq!(
        redact_with(
            &c,
            "127.0.0.1 10.0.0.1 support@example.com bob@example.com (555) 123-4567"
        ),
        "127.0.0.1 [REDACTED:ipv4] support@example.com [REDACTED:email] (555) 123-4567"
    );
}

#[test]
fn annotations() {
    let msg = tool_result("a@example.com b@example.com 4111111111111111");
    let v = run(&cfg("{}"), &msg);
    assert_eq!(v.count("email"), Some(2));
    assert_eq!(v.count("card"), Some(1));
    assert_eq!(v.count("ssn"), None);
    assert_eq!(v.annotations.len(), 2);
    // Clean: allowed, nothing annotated.
    let v = run(&cfg("{}"), &tool_result("nothing to see, café 42"));
    assert!(v.is_allow() && v.annotations.is_empty());
}

// ---------------------------------------------------------------------------
// Evasions
// ---------------------------------------------------------------------------

#[test]
fn evasions() {
    let cases: Vec<(&str, &str)> = vec![
        // invisible characters inside the value
        ("ssn 123\u{200B}-45-67\u{200D}89", "ssn [REDACTED:ssn]"),
        (
            "4111\u{00AD}1111\u{2060}1111\u{FEFF}1111",
            "[REDACTED:card]",
        ),
        ("bob\u{200C}@example.com", "[REDACTED:email]"),
        // compatibility forms
        ("１２３-４５-６７８９", "[REDACTED:ssn]"),
        ("ｂｏｂ＠ｅｘａｍｐｌｅ．ｃｏｍ", "[REDACTED:email]"),
        ("𝟒𝟏𝟏𝟏 𝟏𝟏𝟏𝟏 𝟏𝟏𝟏𝟏 𝟏𝟏𝟏𝟏", "[REDACTED:card]"),
        ("٤١١١١١١١١١١١١١١١", "[REDACTED:card]"),
        ("555–123–4567", "[REDACTED:phone]"),
        // the untouched rest of a changed string is normalized too
        ("ｃａｌｌ 555-123-4567", "call [REDACTED:phone]"),
    ];
    for (input, want) in cases {
        assert_eq!(redact(input), want, "input: {input:?}");
    }
    // Non-ASCII without findings stays exactly as it was.
    for s in [
        "ｆｕｌｌ ｗｉｄｔｈ",
        "zero\u{200B}width",
        "naïve café — 東京",
    ] {
        assert_eq!(redact(s), s);
    }
}

#[test]
fn unicode_escapes_in_raw_json() {
    let msg = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"mail bob\u0040example\u002ecom \u0031\u0032\u0033-45-6789"}]}}"#;
    let v = run(&cfg("{}"), msg);
    let out = after(&v, msg);
    assert_eq!(
        out["result"]["content"][0]["text"],
        "mail [REDACTED:email] [REDACTED:ssn]"
    );
    // Escapes elsewhere are kept as written.
    let msg =
        r#"{"jsonrpc":"2.0","id":"a\u0062c","result":{"x":"caf\u00e9","y":"bob@example.com"}}"#;
    let v = run(&cfg("{}"), msg);
    assert_eq!(
        v.rewritten(),
        Some(
            r#"{"jsonrpc":"2.0","id":"a\u0062c","result":{"x":"caf\u00e9","y":"[REDACTED:email]"}}"#
        )
    );
}

#[test]
fn numbers() {
    let msg = r#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{
        "card": 4111111111111111, "exp": 4.111111111111111e15, "neg": -5555555555554444,
        "phone": 5551234567, "tel": 15551234567, "ssn": 123456789,
        "password": 123456, "count": 1712345678901, "price": 12.5, "zip": 12345}}}"#;
    let v = run(&cfg("{}"), msg);
    let out = after(&v, msg);
    assert_eq!(
        out["result"]["structuredContent"],
        json!({
            "card": "[REDACTED:card]", "exp": "[REDACTED:card]", "neg": "[REDACTED:card]",
            "phone": "[REDACTED:phone]", "tel": "[REDACTED:phone]", "ssn": "[REDACTED:ssn]",
            "password": "[REDACTED:secret]", "count": 1712345678901u64, "price": 12.5, "zip": 12345
        })
    );
    assert_eq!(v.count("card"), Some(3));
}

#[test]
fn keys() {
    let msg = r#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{
        "AKIAIOSFODNN7EXAMPLE": {"region": "us-east-1"},
        "a@example.com": 1, "b@example.com": 2, "[REDACTED:email]#2": 3, "[REDACTED:email]": 4}}}"#;
    let v = run(&cfg("{}"), msg);
    let text = v.rewritten().expect("rewritten");
    let out: Value = serde_json::from_str(text).unwrap();
    let sc = out["result"]["structuredContent"].as_object().unwrap();
    assert_eq!(sc.len(), 5, "no key lost or merged: {text}");
    assert_eq!(
        sc["[REDACTED:aws_access_key]"],
        json!({"region": "us-east-1"})
    );
    assert_eq!(sc["[REDACTED:email]#3"], 1);
    assert_eq!(sc["[REDACTED:email]#4"], 2);
    assert_eq!(sc["[REDACTED:email]#2"], 3);
    assert_eq!(sc["[REDACTED:email]"], 4);
    // Secret-named keys: the value goes, the key stays.
    let msg = r#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{
        "config": {"db_password": "correct horse battery staple", "apiKey": "abcd1234",
                   "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                   "token": null, "password": "", "progressToken": "abc123", "user": "root",
                   "phones": ["555 1234567", "+49 30 1234567"]}}}}"#;
    let out = after(&run(&cfg("{}"), msg), msg);
    assert_eq!(
        out["result"]["structuredContent"]["config"],
        json!({"db_password": "[REDACTED:secret]", "apiKey": "[REDACTED:secret]",
               "aws_secret_access_key": "[REDACTED:aws_secret_key]",
               "token": null, "password": "", "progressToken": "abc123", "user": "root",
               "phones": ["555 1234567", "[REDACTED:phone]"]})
    );
}

#[test]
fn json_in_strings() {
    // One level: layout kept, inner value replaced.
    assert_eq!(
        redact(r#"{"ssn":"123-45-6789"}"#),
        r#"{"ssn":"[REDACTED:ssn]"}"#
    );
    // Keys, numbers and escapes inside.
    assert_eq!(
        redact(r#"[{"bob\u0040example.com": 4111111111111111, "n": 1}]"#),
        r#"[{"[REDACTED:email]": "[REDACTED:card]", "n": 1}]"#
    );
    // Nested three times.
    let inner = json!({"note": json!({"d": json!({"x": "555-123-4567"}).to_string()}).to_string()})
        .to_string();
    let out = redact(&inner);
    assert!(
        !out.contains("4567") && out.contains("[REDACTED:phone]"),
        "{out}"
    );
    // Not valid JSON: scanned as text.
    assert_eq!(
        redact(r#"{"ssn": "123-45-6789", broken"#),
        r#"{"ssn": "[REDACTED:ssn]", broken"#
    );
    assert_eq!(redact("[1] bob@example.com"), "[1] [REDACTED:email]");
}

// ---------------------------------------------------------------------------
// Message shapes
// ---------------------------------------------------------------------------

/// Runs `msg` with `c` in `ctx` and returns the output.
fn through(c: &Config, ctx: &Context, msg: &Value) -> (Verdict, Value) {
    let text = msg.to_string();
    let v = Redact::decide(c, ctx, &text);
    let out = after(&v, &text);
    (v, out)
}

#[test]
fn message_kinds() {
    let c = cfg("{}");
    // error message and error.data
    let msg = json!({"jsonrpc": "2.0", "id": 9, "error": {"code": -32000,
        "message": "lookup failed for bob@example.com",
        "data": {"row": {"card": "4111 1111 1111 1111"}, "trace": ["at 10.0.0.7"]}}});
    let (_, out) = through(
        &c,
        &ctx(Direction::ToClient, MessageKind::Error, Some("tools/call")),
        &msg,
    );
    assert_eq!(
        out,
        json!({"jsonrpc": "2.0", "id": 9, "error": {"code": -32000,
            "message": "lookup failed for [REDACTED:email]",
            "data": {"row": {"card": "[REDACTED:card]"}, "trace": ["at [REDACTED:ipv4]"]}}})
    );
    // logging notification
    let msg = json!({"jsonrpc": "2.0", "method": "notifications/message",
        "params": {"level": "info", "logger": "db", "data": {"user": "bob@example.com", "q": "ssn=123-45-6789"}}});
    let (_, out) = through(
        &c,
        &ctx(
            Direction::ToClient,
            MessageKind::Notification,
            Some("notifications/message"),
        ),
        &msg,
    );
    assert_eq!(
        out["params"]["data"],
        json!({"user": "[REDACTED:email]", "q": "ssn=[REDACTED:ssn]"})
    );
    assert_eq!(out["method"], "notifications/message");
    // progress notification: the token stays, the message does not
    let msg = json!({"jsonrpc": "2.0", "method": "notifications/progress",
        "params": {"progressToken": "p-77", "progress": 1, "message": "calling 555-123-4567"}});
    let (_, out) = through(
        &c,
        &ctx(
            Direction::ToClient,
            MessageKind::Notification,
            Some("notifications/progress"),
        ),
        &msg,
    );
    assert_eq!(out["params"]["progressToken"], "p-77");
    assert_eq!(out["params"]["message"], "calling [REDACTED:phone]");
    // cancellation: requestId stays
    let msg = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 41, "reason": "bob@example.com"}});
    let (_, out) = through(
        &c,
        &ctx(
            Direction::ToClient,
            MessageKind::Notification,
            Some("notifications/cancelled"),
        ),
        &msg,
    );
    assert_eq!(out["params"]["requestId"], 41);
    assert_eq!(out["params"]["reason"], "[REDACTED:email]");
    // sampling request from the server
    let msg = json!({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage",
        "params": {"messages": [{"role": "user", "content": {"type": "text", "text": "Summarise SSN 123-45-6789"}}],
                   "maxTokens": 100, "_meta": {"progressToken": "tok-9"}}});
    let (_, out) = through(
        &c,
        &ctx(
            Direction::ToClient,
            MessageKind::Request,
            Some("sampling/createMessage"),
        ),
        &msg,
    );
    assert_eq!(
        out["params"]["messages"][0]["content"]["text"],
        "Summarise SSN [REDACTED:ssn]"
    );
    assert_eq!(out["params"]["_meta"]["progressToken"], "tok-9");
    assert_eq!(out["params"]["maxTokens"], 100);
    // elicitation request
    let msg = json!({"jsonrpc": "2.0", "id": 3, "method": "elicitation/create",
        "params": {"message": "Confirm card 4111111111111111?", "requestedSchema": {"type": "object",
            "properties": {"password": {"type": "string"}}}}});
    let (_, out) = through(
        &c,
        &ctx(
            Direction::ToClient,
            MessageKind::Request,
            Some("elicitation/create"),
        ),
        &msg,
    );
    assert_eq!(out["params"]["message"], "Confirm card [REDACTED:card]?");
    assert_eq!(
        out["params"]["requestedSchema"]["properties"]["password"],
        json!({"type": "string"})
    );
    // resource contents and prompt messages
    let msg = json!({"jsonrpc": "2.0", "id": 4, "result": {"contents": [{"uri": "file:///a", "mimeType": "text/plain",
        "text": "AKIAIOSFODNN7EXAMPLE"}]}});
    let (_, out) = through(
        &c,
        &ctx(
            Direction::ToClient,
            MessageKind::Response,
            Some("resources/read"),
        ),
        &msg,
    );
    assert_eq!(
        out["result"]["contents"][0]["text"],
        "[REDACTED:aws_access_key]"
    );
    let msg = json!({"jsonrpc": "2.0", "id": 5, "result": {"messages": [{"role": "user",
        "content": {"type": "text", "text": "my IBAN is GB82 WEST 1234 5698 7654 32"}}]}});
    let (_, out) = through(
        &c,
        &ctx(
            Direction::ToClient,
            MessageKind::Response,
            Some("prompts/get"),
        ),
        &msg,
    );
    assert_eq!(
        out["result"]["messages"][0]["content"]["text"],
        "my IBAN is [REDACTED:iban]"
    );
}

#[test]
fn skeleton_untouched() {
    let c = cfg("{}");
    // (An id carrying data blocks the message instead: see
    // a_hit_in_a_value_the_protocol_needs_unchanged_blocks_the_message.)
    let cases = [
        r#"{"jsonrpc":"2.0","id":"req-7","result":{"x":"bob@example.com"}}"#,
        r#"{"jsonrpc":"2.0","id":41,"result":{"x":"bob@example.com"}}"#,
        r#"{"result":{"x":"bob@example.com"},"id":12345,"jsonrpc":"2.0"}"#,
        r#"{ "jsonrpc" : "2.0" , "id" : 1.50 , "result" : { "x" : "bob@example.com" } }"#,
    ];
    for msg in cases {
        let v = run(&c, msg);
        let out = v.rewritten().expect("rewritten");
        assert_eq!(
            out,
            msg.replace("\"x\":\"bob@example.com\"", "\"x\":\"[REDACTED:email]\"")
                .replace(
                    "\"x\" : \"bob@example.com\"",
                    "\"x\" : \"[REDACTED:email]\""
                ),
            "only the value changes, byte for byte"
        );
    }
    let msg = r#"{"jsonrpc":"2.0","id":7,"method":"sampling/createMessage","params":{"x":"555-123-4567"}}"#;
    let v = Redact::decide(
        &c,
        &ctx(
            Direction::ToClient,
            MessageKind::Request,
            Some("sampling/createMessage"),
        ),
        msg,
    );
    let out: Value = serde_json::from_str(v.rewritten().unwrap()).unwrap();
    assert_eq!(out["method"], "sampling/createMessage");
    assert_eq!(out["id"], 7);
    assert_eq!(out["jsonrpc"], "2.0");
}

#[test]
fn structured_content_consistency() {
    let sc = json!({"user": {"email": "bob@example.com", "card": 4111111111111111u64, "name": "Bob"}, "n": 1});
    for text in [sc.to_string(), serde_json::to_string_pretty(&sc).unwrap()] {
        let msg = json!({"jsonrpc": "2.0", "id": 1, "result": {
            "content": [{"type": "text", "text": text}, {"type": "text", "text": "Bob's card ends 1111"}],
            "structuredContent": sc}});
        let (v, out) = through(&cfg("{}"), &response_ctx(), &msg);
        let redacted = &out["result"]["structuredContent"];
        assert_eq!(
            *redacted,
            json!({"user": {"email": "[REDACTED:email]", "card": "[REDACTED:card]", "name": "Bob"}, "n": 1})
        );
        let t = out["result"]["content"][0]["text"].as_str().unwrap();
        let raw = v.rewritten().unwrap();
        // The text is the redacted structuredContent as serialized in the
        // message.
        let sc_raw = &raw[raw.find("\"structuredContent\":").unwrap() + 20..raw.len() - 2];
        assert_eq!(t, sc_raw);
        assert_eq!(serde_json::from_str::<Value>(t).unwrap(), *redacted);
        assert_eq!(out["result"]["content"][1]["text"], "Bob's card ends 1111");
    }
}

#[test]
fn requests() {
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "send", "arguments": {"to": "bob@example.com", "body": "key AKIAIOSFODNN7EXAMPLE"}}});
    let to_server = ctx(
        Direction::ToServer,
        MessageKind::Request,
        Some("tools/call"),
    );
    // Off by default.
    let c = cfg("{}");
    assert!(Redact::decide(&c, &to_server, &call.to_string()).is_allow());
    assert_eq!(Redact::interests(&c).directions, vec![Direction::ToClient]);
    // On with scan_requests.
    let c = cfg(r#"{"scan_requests": true}"#);
    assert!(Redact::interests(&c).directions.is_empty());
    let (v, out) = through(&c, &to_server, &call);
    assert_eq!(
        out["params"]["arguments"],
        json!({"to": "[REDACTED:email]", "body": "key [REDACTED:aws_access_key]"})
    );
    assert_eq!(out["params"]["name"], "send");
    assert_eq!(v.count("email"), Some(1));
}

#[test]
fn idempotent() {
    let c = cfg(r#"{"default_action": "partial"}"#);
    let text = format!(
        "bob@example.com 4111111111111111 +1 555 123 4567 123-45-6789 DE89370400440532013000 \
         10.1.2.3 2001:db8::1 {JWT} AKIAIOSFODNN7EXAMPLE {GHP} password=hunter22"
    );
    let once = redact_with(&c, &text);
    assert_eq!(redact_with(&c, &once), once);
    let masked = redact(&text);
    assert_eq!(redact(&masked), masked);
}

/// Random strings from an alphabet of pattern fragments never panic (a
/// panic would trap the instance), and whatever comes out is valid JSON.
#[test]
fn random_inputs() {
    const PIECES: &[&str] = &[
        "0",
        "1",
        "4",
        "5",
        "9",
        "12",
        "555",
        "4111",
        " ",
        "-",
        ".",
        ":",
        "::",
        "=",
        "+",
        "(",
        ")",
        "@",
        "_",
        "/",
        "\"",
        "'",
        "[",
        "]",
        "{",
        "}",
        ",",
        "a",
        "A",
        "e",
        "x",
        "J",
        "B",
        "ey",
        "eyJ",
        "AKIA",
        "AIza",
        "ghp_",
        "xoxb-",
        "DE89",
        "de",
        "GB82",
        "bearer ",
        "token=",
        "password: ",
        "://u:p@",
        "-----BEGIN ",
        "PRIVATE KEY-----",
        "-----END ",
        "example.com",
        "\n",
        "\\",
        "\\u00e9",
        "é",
        "１",
        "＠",
        "\u{200B}",
        "\u{00AD}",
        "–",
        "٣",
        "東",
        "\u{301}",
        "😀",
        "fe80",
        "2001:db8",
        "10.0.0.1",
        "[REDACTED:",
        "#2",
    ];
    let c = cfg(
        r#"{"detectors": {"email": "partial", "card": "hash", "phone": "partial"},
        "hmac_key": "0123456789abcdef", "custom": [{"name": "t", "regex": "T[0-9]+"}]}"#,
    );
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let len = (next() % 40) as usize;
        let text: String = (0..len)
            .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
            .collect::<String>();
        for msg in [
            tool_result(&text),
            json!({"jsonrpc": "2.0", "id": 1, "result": {"structuredContent": {text.clone(): [text.clone(), 15551234567u64]},
                "content": [{"type": "text", "text": json!({text.clone(): [text.clone(), 15551234567u64]}).to_string()}]}})
            .to_string(),
        ] {
            let v = run(&c, &msg);
            if let Some(out) = v.rewritten() {
                serde_json::from_str::<Value>(out).unwrap_or_else(|e| panic!("{e}: {out}"));
                // Garbage may be redacted a little further on a second pass
                // (an earlier replacement changes what surrounds the next
                // one), but the output is still a readable message.
                let again = run(&c, out);
                serde_json::from_str::<Value>(again.rewritten().unwrap_or(out)).unwrap();
            }
        }
    }
    // Raw JSON-ish text straight into the walker.
    for _ in 0..3000 {
        let len = (next() % 30) as usize;
        let text: String = (0..len)
            .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
            .collect();
        let _ = walk::Redactor::new(&c).message(&text, None);
    }
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[test]
fn bad_configs() {
    let cases = [
        ("", "invalid config"),
        ("[]", "invalid config"),
        (r#"{"detector": {}}"#, "unknown field `detector`"),
        (
            r#"{"detectors": {"mail": "mask"}}"#,
            "unknown detector \"mail\"",
        ),
        (
            r#"{"detectors": {"email": "erase"}}"#,
            "unknown variant `erase`",
        ),
        (r#"{"default_action": "hash"}"#, "needs `hmac_key`"),
        (
            r#"{"detectors": {"card": "hash"}, "hmac_key": "short"}"#,
            "at least 16 bytes",
        ),
        (r#"{"scan_requests": "yes"}"#, "invalid type"),
        (r#"{"default_action": "off"}"#, "every detector is off"),
        (
            r#"{"custom": [{"name": "x", "regex": "("}]}"#,
            "invalid regex",
        ),
        (
            r#"{"custom": [{"name": "x", "regex": "a*"}]}"#,
            "matches the empty string",
        ),
        (
            r#"{"custom": [{"name": "Bad Name", "regex": "a"}]}"#,
            "name must be",
        ),
        (
            r#"{"custom": [{"name": "email", "regex": "a"}]}"#,
            "built-in",
        ),
        (
            r#"{"custom": [{"name": "x", "regex": "a"}, {"name": "x", "regex": "b"}]}"#,
            "duplicate name",
        ),
        (
            r#"{"custom": [{"name": "x", "regex": "a", "flags": "i"}]}"#,
            "unknown field `flags`",
        ),
        (
            r#"{"custom": [{"name": "x", "regex": "a", "action": "hash"}]}"#,
            "used by x",
        ),
        (r#"{"allow_values": [" "]}"#, "allow_values[0] is empty"),
    ];
    for (text, want) in cases {
        let err = config::parse(text).expect_err(text);
        assert!(err.starts_with("redact: invalid config: "), "{err}");
        assert!(err.contains(want), "{text}: {err}");
    }
    // Good ones, the documented example first.
    for text in [
        r#"{"default_action": "mask",
            "detectors": {"card": "partial", "ssn": "block", "email": "hash", "ipv4": "off"},
            "hmac_key": "a long random string", "scan_requests": false,
            "allow_values": ["127.0.0.1", "support@example.com"],
            "custom": [{"name": "employee_id", "regex": "EMP-[0-9]{6}", "action": "mask"},
                       {"name": "openai_key", "regex": "sk-[A-Za-z0-9_-]{32,}"}]}"#,
        "{}",
        r#"{"default_action": "off", "custom": [{"name": "x", "regex": "a+"}]}"#,
        r#"{"detectors": {"email": "hash", "card": "partial", "ssn": "block", "ipv6": "off"},
            "hmac_key": "0123456789abcdef", "scan_requests": true, "allow_values": ["a"]}"#,
    ] {
        cfg(text);
    }
    assert!(cfg("{}").summary().contains("mask: private_key jwt"));
    assert!(!cfg("{}").summary().contains("decode"));
    let s = cfg(r#"{"decode": {"base64": "block", "json": "off"}}"#).summary();
    assert!(s.contains("; decode: base64 block, json off;"), "{s}");
}

// ---------------------------------------------------------------------------
// Benchmark
// ---------------------------------------------------------------------------

/// About 4 KiB of ordinary tool output: prose, numbers, dates, times,
/// versions, paths, a URL, code.
fn clean_text() -> String {
    let para = "The quarterly report for account group 7 shows 1,234 orders (up 12.5%) \
        between 2024-01-01 and 2024-03-31. Build v2.3.1 deployed at 12:30:45 UTC on host \
        web-03; see https://example.com/reports/q1?page=2 for details. In Rust, call \
        std::fs::read_to_string(path)? and handle the error: token counts were 4096 \
        and max_tokens=8192. Customer satisfaction stayed at 4.6 of 5 across 37 regions, \
        with 18 tickets escalated and 3 refunds issued. ";
    let mut s = String::new();
    while s.len() < 4096 {
        s.push_str(para);
    }
    s.truncate(4096);
    s
}

fn dirty_text() -> String {
    let mut s = clean_text();
    s.truncate(3500);
    s.push_str(&format!(
        " Contact bob@example.com or +1 (555) 123-4567; SSN 123-45-6789, card \
         4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, from 10.0.0.1, key \
         AKIAIOSFODNN7EXAMPLE, password=hunter22, {GHP}."
    ));
    s
}

/// Best of 15 batches of 200 (the machine is shared: the minimum is the
/// least disturbed).
fn bench_one(name: &str, c: &Config, msg: &str) {
    let ctx = response_ctx();
    let batch = 200;
    let best = (0..15)
        .map(|_| {
            let start = std::time::Instant::now();
            for _ in 0..batch {
                std::hint::black_box(Redact::decide(c, &ctx, std::hint::black_box(msg)));
            }
            start.elapsed().as_nanos() / batch
        })
        .min()
        .unwrap();
    println!("{name:<40} {:>6} bytes {best:>8} ns/message", msg.len());
}

#[test]
#[ignore]
fn bench() {
    let c = cfg("{}");
    let clean = tool_result(&clean_text());
    let dirty = tool_result(&dirty_text());
    assert!(run(&c, &clean).is_allow());
    assert!(run(&c, &dirty).rewritten().is_some());
    bench_one("clean 4 KiB tool result", &c, &clean);
    bench_one("dirty 4 KiB tool result (10 findings)", &c, &dirty);
    let sc = json!({"rows": (0..40).map(|i| json!({"id": i, "name": format!("customer {i}"),
        "note": "ordered 3 items on 2024-05-01", "total": 12.5})).collect::<Vec<_>>()});
    let both = json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": sc.to_string()}],
        "structuredContent": sc}})
    .to_string();
    bench_one("clean structured + JSON text", &c, &both);
    let non_ascii = tool_result(
        &clean_text()
            .replace("The ", "Thé ")
            .replace("report", "rapport — 東京"),
    );
    bench_one("clean 4 KiB non-ASCII text", &c, &non_ascii);
    let custom = cfg(r#"{"custom": [{"name": "ticket", "regex": "TCK-[0-9]{4,}"}]}"#);
    bench_one("clean 4 KiB + one custom regex", &custom, &clean);
}

#[test]
fn a_hit_in_a_value_the_protocol_needs_unchanged_blocks_the_message() {
    // Ids, method names, progress tokens, cursors, request state and task
    // ids go back to the peer as they are; rewriting one breaks the
    // exchange, so data found in one blocks the message instead.
    let c = cfg("{}");
    let card = "4111 1111 1111 1111";
    let cases = [
        (
            Some("tools/call"),
            json!({"jsonrpc": "2.0", "id": card, "result": {"content": []}}),
        ),
        (
            Some("tools/call"),
            json!({"jsonrpc": "2.0", "id": 4111111111111111u64, "result": {"content": []}}),
        ),
        (
            None,
            json!({"jsonrpc": "2.0", "method": format!("notifications/{card}"), "params": {}}),
        ),
        (
            Some("notifications/progress"),
            json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": card, "progress": 1}}),
        ),
        (
            Some("tools/list"),
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [], "nextCursor": card}}),
        ),
        (
            Some("tools/call"),
            json!({"jsonrpc": "2.0", "id": 1, "result": {"resultType": "input_required",
            "inputRequests": {}, "requestState": format!("ada.lovelace@example.com")}}),
        ),
        (
            Some("tools/call"),
            json!({"jsonrpc": "2.0", "id": 1, "result": {"resultType": "task", "taskId": card}}),
        ),
    ];
    for (method, msg) in cases {
        let kind = if msg.get("id").is_some() {
            MessageKind::Response
        } else {
            MessageKind::Notification
        };
        let method = method.or(msg["method"].as_str());
        let v = Redact::decide(
            &c,
            &ctx(Direction::ToClient, kind, method),
            &msg.to_string(),
        );
        let d = v.denial().unwrap_or_else(|| panic!("not blocked: {msg}"));
        assert!(d.public_message.contains("sensitive data"), "{d:?}");
    }
    // Clean protocol values pass untouched.
    let clean = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [], "nextCursor": "c2"}});
    assert!(
        Redact::decide(
            &c,
            &ctx(
                Direction::ToClient,
                MessageKind::Response,
                Some("tools/list")
            ),
            &clean.to_string()
        )
        .is_allow()
    );
}
