//! redact's detectors through the real host and the built component
//! (`builtin:redact`): separators, Unicode forms and labels, exactly, and
//! the labelled corpus (`plugins/redact/corpus/`) against its targets.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use portcullis::mcp::{Direction, Kind, MessageContext};
use portcullis::plugin::PluginEngine;
use portcullis::policy::verdict::AnnotationValue;
use portcullis::policy::{Policy, Ruling};
use portcullis::principal::Principal;
use serde_json::{Value, json};

const BENIGN: &str = include_str!("../../plugins/redact/corpus/benign.txt");
const ATTACKS: &str = include_str!("../../plugins/redact/corpus/attacks.tsv");

/// Nesting depth the gateway parses messages with.
const MAX_DEPTH: usize = 64;

/// redact with the numeric detectors on `partial`, so kept digits show.
async fn redact_policy() -> Policy {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(portcullis::secret::random_id());
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy.toml");
    std::fs::write(
        &path,
        r#"
[plugins.redact]
source = "builtin:redact"
config = { detectors = { card = "partial", iban = "partial", ssn = "partial", phone = "partial" } }

[[servers."*"]]
plugin = "redact"
phase = "response"
"#,
    )
    .unwrap();
    let catalog = Arc::new(portcullis::policy::catalog::Catalog::default());
    portcullis::policy::load(&path, &PluginEngine::new(None).unwrap(), catalog)
        .await
        .unwrap()
}

/// `text` as a tools/call result through the policy: the text that leaves
/// and the detectors the audit counts.
async fn through(policy: &Policy, text: &str) -> (String, Vec<String>) {
    let ctx = MessageContext {
        direction: Direction::ToClient,
        tunnel: "t".into(),
        server: "crm".into(),
        kind: Kind::Response,
        method: Some("tools/call".into()),
        target: Some("lookup_customer".into()),
        related_tool: None,
        request_id: Some("1".into()),
        session_id: None,
        protocol_version: None,
        principal: Principal::anonymous(),
    };
    let msg =
        json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": text}]}});
    let (ruling, records) = policy
        .apply(&ctx, Bytes::from(msg.to_string()), MAX_DEPTH)
        .await;
    let Ruling::Pass(out) = ruling else {
        panic!("{text:?} was refused: {ruling:?}");
    };
    let out: Value = serde_json::from_slice(&out).unwrap();
    let counted = records
        .iter()
        .flat_map(|r| &r.annotations)
        .filter(|a| matches!(a.value, AnnotationValue::Count(n) if n > 0))
        .map(|a| a.key.clone())
        .collect();
    let text = out["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    (text, counted)
}

#[tokio::test]
async fn separators_unicode_forms_and_labels_through_the_component() {
    let policy = redact_policy().await;
    let cases = [
        // cards: any mix of separators, Unicode spaces and dashes, Luhn kept
        ("4111.1111.1111.1111", "[card:****1111]"),
        ("4111/1111/1111/1111", "[card:****1111]"),
        ("4111 1111-1111.1111", "[card:****1111]"),
        (
            "4111\u{00A0}1111\u{202F}1111\u{2009}1111",
            "[card:****1111]",
        ),
        (
            "4111\u{2011}1111\u{2013}1111\u{2014}1111",
            "[card:****1111]",
        ),
        (
            "4111\u{00B7}1111\u{00B7}1111\u{00B7}1111",
            "[card:****1111]",
        ),
        ("4111 - 1111 - 1111 - 1111", "[card:****1111]"),
        ("3782\u{2212}822463\u{2212}10005", "[card:****0005]"),
        ("4111.1111.1111.1112", "4111.1111.1111.1112"),
        // IBANs: separators between groups, mod-97 kept
        ("DE89-3704-0044-0532-0130-00", "[iban:DE****3000]"),
        ("DE89.3704.0044.0532.0130.00", "[iban:DE****3000]"),
        (
            "DE89\u{2007}3704\u{2007}0044\u{2007}0532\u{2007}0130\u{2007}00",
            "[iban:DE****3000]",
        ),
        ("DE89-3704-0044-0532-0130-02", "DE89-3704-0044-0532-0130-02"),
        // SSNs: dotted, slashed, Unicode dashes; bare only after a label
        ("123.45.6789", "[ssn:***-**-6789]"),
        ("123/45/6789", "[ssn:***-**-6789]"),
        ("123\u{2013}45\u{2013}6789", "[ssn:***-**-6789]"),
        ("SSN: 123456789", "SSN: [ssn:***-**-6789]"),
        (
            "social security no. 123456789",
            "social security no. [ssn:***-**-6789]",
        ),
        ("Soc. Sec. 123456789", "Soc. Sec. [ssn:***-**-6789]"),
        ("Order 123456789 shipped", "Order 123456789 shipped"),
        ("666.12.3456", "666.12.3456"),
        // phones: NANP and + numbers with any separators
        ("555/123/4567", "[phone:****4567]"),
        ("555\u{2011}123\u{2011}4567", "[phone:****4567]"),
        ("(555) 123 / 4567", "[phone:****4567]"),
        ("+44\u{00A0}20\u{00A0}7946\u{00A0}0958", "[phone:****0958]"),
        ("+1/555/123/4567", "[phone:****4567]"),
        // IPv4: a version is not an address, a server is
        ("firmware 2.1.0.4", "firmware 2.1.0.4"),
        ("build server 10.1.2.3", "build server [REDACTED:ipv4]"),
    ];
    for (input, want) in cases {
        let (got, _) = through(&policy, input).await;
        assert_eq!(got, want, "{input:?}");
    }
}

/// The data lines of a corpus file.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
}

#[tokio::test]
async fn the_corpus_meets_its_targets_through_the_component() {
    let policy = redact_policy().await;
    let mut missed = Vec::new();
    let mut attacks = 0;
    for line in lines(ATTACKS) {
        let (det, text) = line.split_once('\t').unwrap();
        attacks += 1;
        let (_, counted) = through(&policy, text).await;
        if !counted.iter().any(|c| c == det) {
            missed.push(format!("{det}\t{text:?}"));
        }
    }
    let mut touched = Vec::new();
    let mut benign = 0;
    for text in lines(BENIGN) {
        benign += 1;
        let (got, _) = through(&policy, text).await;
        if got != text {
            touched.push(format!("{text:?} -> {got:?}"));
        }
    }
    println!(
        "component: recall {}/{attacks}, benign untouched {}/{benign}",
        attacks - missed.len(),
        benign - touched.len()
    );
    assert!(attacks >= 100 && benign >= 300, "the corpus shrank");
    assert!(missed.is_empty(), "missed:\n{}", missed.join("\n"));
    assert!(
        touched.len() * 100 <= benign,
        "over 1 % of benign strings redacted:\n{}",
        touched.join("\n")
    );
}
