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

/// The detectors that fired on `text`, as the verdict's counts name them;
/// a refusal names its detector.
fn fired(cfg: &Config, text: &str) -> Vec<&'static str> {
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
    let v = Redact::decide(cfg, &ctx, &msg);
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
