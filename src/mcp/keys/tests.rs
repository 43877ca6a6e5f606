//! Unit tests of `mcp::keys`.

use std::cell::Cell;

use super::*;

thread_local! {
    /// Key equality comparisons made on this thread.
    pub(crate) static COMPARED: Cell<usize> = const { Cell::new(0) };
}

#[test]
fn folds_every_case_variant_to_one_key() {
    let same = [
        ("params", "Params"),
        ("amount", "AMOUNT"),
        ("s", "\u{17F}"),           // long s
        ("k", "\u{212A}"),          // Kelvin sign
        ("\u{E5}", "\u{212B}"),     // Ångström sign
        ("\u{3C3}", "\u{3C2}"),     // final sigma
        ("\u{3A3}", "\u{3C2}"),     // capital sigma
        ("id", "\u{131}d"),         // dotless i (Go, .NET)
        ("id", "\u{130}d"),         // dotted capital I (Go)
        ("i\u{307}d", "\u{130}d"),  // Java's lowercase of İ
        ("\u{1C6}", "\u{1C5}"),     // dž and its titlecase ǅ
        ("\u{3B2}", "\u{3D0}"),     // beta symbol
        ("\u{3B9}", "\u{345}"),     // combining ypogegrammeni
        ("\u{1E61}", "\u{1E9B}"),   // long s with dot
        ("\u{DF}", "\u{1E9E}"),     // ß and capital ẞ
        ("\u{1F80}", "\u{1F88}"),   // iota subscript and its titlecase
        ("\u{10428}", "\u{10400}"), // Deseret (outside the BMP)
    ];
    for (a, b) in same {
        assert_eq!(fold(a), fold(b), "{a:?} vs {b:?}");
    }
    let different = [
        ("ss", "\u{DF}"),       // no reader expands ß
        ("fi", "\u{FB01}"),     // nor the fi ligature
        ("e\u{301}", "\u{E9}"), // normalisation is not case
        ("amount", "amount_"),
        ("a", "\u{FF41}"), // fullwidth a
    ];
    for (a, b) in different {
        assert_ne!(fold(a), fold(b), "{a:?} vs {b:?}");
    }
    assert!(matches!(fold("already_folded"), Cow::Borrowed(_)));
}

/// The fold is one identity per class of characters linked by the
/// simple lowercase and uppercase mappings: every character folds like
/// its lowercase and its uppercase, so no two case variants of a key
/// can fold apart. Checked for every Unicode scalar value.
#[test]
fn the_fold_is_constant_on_every_case_class() {
    for c in (0..=0x10FFFF).filter_map(char::from_u32) {
        let f = fold_char(c);
        assert_eq!(fold_char(f), f, "{c:?} folds to {f:?}, which folds on");
        let mut low = c.to_lowercase();
        if let (Some(l), None) = (low.next(), low.next()) {
            assert_eq!(fold_char(l), f, "{c:?} and its lowercase {l:?}");
        }
        let mut up = c.to_uppercase();
        if let (Some(u), None) = (up.next(), up.next()) {
            assert_eq!(fold_char(u), f, "{c:?} and its uppercase {u:?}");
        }
    }
}

fn err(text: &str, fold: bool) -> String {
    check_keys(text.as_bytes(), fold)
        .expect_err(text)
        .to_string()
}

#[test]
fn names_the_object_and_both_keys_but_no_value() {
    let text = r#"{"params":{"arguments":[0,{"amount":1,"x":{},"Amount":900}]}}"#;
    let e = err(text, true);
    assert_eq!(
        e,
        r#"the object at "/params/arguments/1" has the keys "amount" and "Amount", which case-insensitive JSON readers take for one key"#
    );
    assert!(!e.contains("900"));
    assert_eq!(
        err(r#"{"a/b~":{"k":1,"k":2}}"#, false),
        r#"the object at "/a~1b~0" repeats the key "k""#
    );
    assert_eq!(
        err(r#"{"id":1,"\u0069d":2}"#, true),
        r#"the top-level object repeats the key "id""#
    );
    // Quoted names are escaped and cut, never echoed whole.
    let long = format!(r#"{{"\n{0}":1,"\n{0}":2}}"#, "k".repeat(10_000));
    let e = err(&long, false);
    assert!(e.len() < 2 * MAX_QUOTED_KEY_BYTES, "{}", e.len());
    assert!(!e.contains('\n') && e.contains('…'));
}

#[test]
fn case_collisions_are_refused_only_when_asked() {
    let text = br#"{"params":{"Params":1},"params ":2,"PARAMS":{"\u017F":1,"s":2}}"#;
    assert!(check_keys(text, false).is_ok());
    assert!(matches!(
        check_keys(text, true),
        Err(ParseError::CaseCollidingKeys { .. })
    ));
    assert!(check_keys(br#"{"a":1,"A":2}"#, false).is_ok());
    assert!(matches!(
        check_keys(br#"{"a":1,"a":2}"#, false),
        Err(ParseError::RepeatedKey { .. })
    ));
    // Separate objects may share keys, in any case.
    assert!(check_keys(br#"[{"a":1},{"A":1},{"a":{"a":{"A":1}}}]"#, true).is_ok());
    assert!(matches!(
        check_keys(b"{\"a\":1,", true),
        Err(ParseError::Json(_))
    ));
}

fn compares(text: &str) -> usize {
    COMPARED.with(|n| n.set(0));
    check_keys(text.as_bytes(), true).unwrap();
    COMPARED.with(Cell::get)
}

/// 20,000 distinct keys in one object: a hash lookup per key compares
/// a handful of keys in all; comparing each key with those before it
/// would be 200 million comparisons.
#[test]
fn a_key_flooded_object_costs_a_lookup_per_key() {
    let n = 20_000;
    let flat: Vec<String> = (0..n).map(|i| format!("\"K{i}\":{i}")).collect();
    let flat = format!("{{{}}}", flat.join(","));
    assert!(compares(&flat) < n / 10, "{}", compares(&flat));
    let nested: Vec<String> = (0..n / 10)
        .map(|i| {
            let inner: Vec<String> = (0..10).map(|j| format!("\"k{j}\":{i}")).collect();
            format!("\"o{i}\":{{{}}}", inner.join(","))
        })
        .collect();
    let nested = format!("{{{}}}", nested.join(","));
    assert!(compares(&nested) < n / 10, "{}", compares(&nested));
}
