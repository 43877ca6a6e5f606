//! Precision and recall on the labelled corpus in `../corpus/`:
//! `benign.txt` (ordinary tool output, none of which may be redacted) and
//! `attacks.tsv` (`detector<TAB>text`, each of which the named detector
//! must find). Every string is one tool-result text run through the plugin
//! with every detector on (`{}`). Prints the figures:
//! `cargo test -p redact corpus -- --nocapture`.

use std::collections::BTreeMap;

use portcullis_plugin_sdk::{Direction, MessageKind, json, testing};

use super::*;

/// Recall required on the attack corpus.
const RECALL_TARGET: f64 = 1.0;
/// Share of benign strings that must pass untouched.
const PRECISION_TARGET: f64 = 0.99;

const BENIGN: &str = include_str!("../corpus/benign.txt");
const ATTACKS: &str = include_str!("../corpus/attacks.tsv");

/// The data lines of a corpus file (not blank, not `#` comments).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
}

/// `text` as a tools/call result through the plugin: the verdict and the
/// message it was given.
fn decide(cfg: &Config, text: &str) -> (Verdict, String) {
    let ctx = testing::context(
        Direction::ToClient,
        MessageKind::Response,
        Some("tools/call"),
        "alice",
        &[],
    );
    let msg =
        json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": text}]}})
            .to_string();
    (Redact::decide(cfg, &ctx, &msg), msg)
}

/// The detectors that fired on `text`, as the verdict's counts name them;
/// a refusal names its detector.
fn fired(cfg: &Config, text: &str) -> Vec<&'static str> {
    let (v, _) = decide(cfg, text);
    detect::Kind::ALL
        .into_iter()
        .map(detect::Kind::name)
        .filter(|&name| v.count(name).is_some_and(|n| n > 0) || v.label("blocked") == Some(name))
        .collect()
}

#[derive(Default)]
struct Tally {
    attacks: usize,
    found: usize,
    false_positives: usize,
}

#[test]
fn corpus_precision_and_recall() {
    let cfg = config::parse("{}").unwrap();
    let mut per: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut missed = Vec::new();
    for line in lines(ATTACKS) {
        let (det, text) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("attacks.tsv: no tab in {line:?}"));
        assert!(
            detect::Kind::from_name(det).is_some(),
            "attacks.tsv: unknown detector {det:?}"
        );
        let t = per.entry(det).or_default();
        t.attacks += 1;
        if fired(&cfg, text).contains(&det) {
            t.found += 1;
        } else {
            missed.push(format!("{det}\t{text:?}"));
        }
    }
    let mut benign = 0;
    let mut touched = Vec::new();
    for text in lines(BENIGN) {
        benign += 1;
        let hits = fired(&cfg, text);
        for &det in &hits {
            per.entry(det).or_default().false_positives += 1;
        }
        if !hits.is_empty() {
            touched.push(format!("{}\t{text:?}", hits.join(",")));
        }
    }
    println!("detector        attacks  found  recall  false+  precision");
    let (mut attacks, mut found) = (0, 0);
    for (det, t) in &per {
        attacks += t.attacks;
        found += t.found;
        let flagged = t.found + t.false_positives;
        println!(
            "{det:<15} {:>7}  {:>5}  {:>5.1}%  {:>6}  {:>8.1}%",
            t.attacks,
            t.found,
            pct(t.found, t.attacks),
            t.false_positives,
            pct(t.found, flagged),
        );
    }
    let clean = benign - touched.len();
    println!(
        "recall {found}/{attacks} = {:.1}%; benign untouched {clean}/{benign} = {:.1}%",
        pct(found, attacks),
        pct(clean, benign)
    );
    for m in &missed {
        println!("missed  {m}");
    }
    for t in &touched {
        println!("touched {t}");
    }
    assert!(attacks >= 100 && benign >= 300, "the corpus shrank");
    assert!(
        found as f64 >= RECALL_TARGET * attacks as f64,
        "recall under target; missed:\n{}",
        missed.join("\n")
    );
    assert!(
        clean as f64 >= PRECISION_TARGET * benign as f64,
        "precision under target; touched:\n{}",
        touched.join("\n")
    );
}

/// `part` of `whole` in percent (100 when `whole` is 0: nothing to miss).
fn pct(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        100.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

// ---------------------------------------------------------------------------
// Separators and labels, exactly
// ---------------------------------------------------------------------------

/// One separator of every class and form the detectors accept between
/// groups (see `detect::sep_char`), with what it is.
const SEPARATORS: &[(&str, &str)] = &[
    (" ", "space"),
    ("-", "dash"),
    (".", "dot"),
    ("/", "slash"),
    ("\u{00A0}", "no-break space"),
    ("\u{202F}", "narrow no-break space"),
    ("\u{2009}", "thin space"),
    ("\u{2007}", "figure space"),
    ("\u{3000}", "ideographic space"),
    ("\u{2010}", "hyphen"),
    ("\u{2011}", "non-breaking hyphen"),
    ("\u{2012}", "figure dash"),
    ("\u{2013}", "en dash"),
    ("\u{2014}", "em dash"),
    ("\u{2212}", "minus"),
    ("\u{FF0D}", "full-width hyphen-minus"),
    ("\u{00B7}", "middle dot"),
    ("\u{2022}", "bullet"),
    ("\u{2027}", "hyphenation point"),
    ("\u{22C5}", "dot operator"),
    ("\u{30FB}", "katakana middle dot"),
    ("\u{FF0E}", "full-width full stop"),
    ("\u{2044}", "fraction slash"),
    ("\u{2215}", "division slash"),
    ("\u{FF0F}", "full-width solidus"),
    (" - ", "spaced dash"),
    (" / ", "spaced slash"),
];

/// The first text after redaction with every detector on (`partial` for
/// the numeric ones, so the kept digits are checked too).
fn partial(text: &str) -> String {
    let cfg = config::parse(
        r#"{"detectors": {"card": "partial", "iban": "partial", "ssn": "partial", "phone": "partial"}}"#,
    )
    .unwrap();
    let (v, msg) = decide(&cfg, text);
    let out: portcullis_plugin_sdk::Value =
        serde_json::from_str(v.rewritten().unwrap_or(&msg)).unwrap();
    out["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn every_separator_between_groups() {
    for &(sep, what) in SEPARATORS {
        let cases = [
            (vec!["4111", "1111", "1111", "1111"], "[card:****1111]"),
            (vec!["3782", "822463", "10005"], "[card:****0005]"),
            (
                vec!["DE89", "3704", "0044", "0532", "0130", "00"],
                "[iban:DE****3000]",
            ),
            (vec!["123", "45", "6789"], "[ssn:***-**-6789]"),
            (vec!["555", "123", "4567"], "[phone:****4567]"),
            (vec!["1", "555", "123", "4567"], "[phone:****4567]"),
        ];
        for (groups, want) in cases {
            let text = format!("paid {} today", groups.join(sep));
            assert_eq!(
                partial(&text),
                format!("paid {want} today"),
                "{what} in {text:?}"
            );
        }
        // Mixed with a plain dash, and at both edges of the string.
        let mixed = format!("4111{sep}1111-1111{sep}1111");
        assert_eq!(partial(&mixed), "[card:****1111]", "{what} mixed");
        let plus = format!("+44{sep}20{sep}7946{sep}0958");
        assert_eq!(partial(&plus), "[phone:****0958]", "{what} after +");
    }
}

#[test]
fn separators_keep_the_checksums() {
    // Each is one digit off a valid value, with a separator that is now
    // accepted: the checksum or the SSA rules still refuse it.
    for text in [
        "4111.1111.1111.1112",
        "4111\u{2013}1111\u{2013}1111\u{2013}1112",
        "4111 / 1111 / 1111 / 1112",
        "DE89-3704-0044-0532-0130-02",
        "DE89\u{00B7}3704\u{00B7}0044\u{00B7}0532\u{00B7}0130\u{00B7}02",
        "000.12.3456",
        "666/12/3456",
        "900\u{2011}12\u{2011}3456",
        "123.00.4567",
        "123.45.0000",
        "055.123.4567",
        "(055) 123 / 4567",
        // Groups that are not a card's, an SSN's or a phone number's.
        "41.11.11.11.11.11.11.11",
        "1234/5678/9012/3456",
        "12.345.6789",
        "2024/123/45/6789",
        "123.45.6789.1",
        // Four separators are a gap, not a separator.
        "4111 -  - 1111 1111 1111",
    ] {
        assert_eq!(partial(text), text, "false positive");
    }
}

#[test]
fn nine_bare_digits_are_an_ssn_only_after_a_label() {
    let found = [
        ("SSN: 123456789", "SSN: [ssn:***-**-6789]"),
        ("ssn#123456789", "ssn#[ssn:***-**-6789]"),
        ("SS# 123456789", "SS# [ssn:***-**-6789]"),
        ("SSNs: 123456789", "SSNs: [ssn:***-**-6789]"),
        (
            "Social Security Number (on file): 123456789.",
            "Social Security Number (on file): [ssn:***-**-6789].",
        ),
        (
            "social_security_no=123456789",
            "social_security_no=[ssn:***-**-6789]",
        ),
        ("Soc. Sec. 123456789", "Soc. Sec. [ssn:***-**-6789]"),
        ("soc sec 123456789", "soc sec [ssn:***-**-6789]"),
        ("tax-id 123456789", "tax-id [ssn:***-**-6789]"),
        ("Taxpayer ID: 123456789", "Taxpayer ID: [ssn:***-**-6789]"),
        ("TIN 123456789", "TIN [ssn:***-**-6789]"),
        ("customerSSN=123456789", "customerSSN=[ssn:***-**-6789]"),
        (
            "\"ssn\": \"123456789\", broken",
            "\"ssn\": \"[ssn:***-**-6789]\", broken",
        ),
        ("ＳＳＮ：１２３４５６７８９", "SSN:[ssn:***-**-6789]"),
    ];
    for (text, want) in found {
        assert_eq!(partial(text), want, "{text:?}");
    }
    for text in [
        // No label, or a label too far, in another clause, or a word that
        // only contains one.
        "Order 123456789 shipped",
        "ticket #123456789",
        "call 123456789 now",
        "Martin ordered 123456789 widgets",
        "lessn 123456789",
        "tint 123456789",
        "SSN field left empty, order 123456789",
        "SSN\norder 123456789",
        "the SSN is on the form we have filed for order number 123456789",
        "SSN 1 of 2: 123456789",
        // A label, but not an SSN.
        "SSN: 987654321",
        "SSN: 000123456",
        "SSN: 1234567890",
        "SSN: 123456789abc",
    ] {
        assert_eq!(partial(text), text, "false positive");
    }
}

#[test]
fn dotted_quads_labelled_as_versions_are_not_addresses() {
    for text in [
        "firmware 2.1.0.4",
        "Version: 10.2.0.1",
        "AssemblyVersion(\"1.0.0.0\")",
        "release 4.3.2.1",
        "build=5.0.2.195",
    ] {
        assert_eq!(partial(text), text, "false positive");
    }
    for (text, want) in [
        ("server 10.1.2.3", "server [REDACTED:ipv4]"),
        ("build server 10.1.2.3", "build server [REDACTED:ipv4]"),
        (
            "version check from 10.1.2.3",
            "version check from [REDACTED:ipv4]",
        ),
        ("server (10.1.2.3)", "server ([REDACTED:ipv4])"),
    ] {
        assert_eq!(partial(text), want, "{text:?}");
    }
}
