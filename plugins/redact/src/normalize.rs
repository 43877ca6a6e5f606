//! The normalized copy of a string that detection runs on when the string is
//! not plain ASCII: invisible characters removed, NFKC (full-width and other
//! compatibility forms become ASCII: `１２３`, `＠`, `𝟏`, `①`), dashes and
//! ideographic full stops folded, and decimal digits of other scripts
//! (Arabic-Indic, Devanagari, ...) mapped to ASCII digits.

use std::borrow::Cow;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

use crate::detect::tail;

/// Characters removed before detection: zero-width and format characters
/// that render as nothing (and the soft hyphen, which usually does too).
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}'                 // soft hyphen
        | '\u{034F}'               // combining grapheme joiner
        | '\u{061C}'               // Arabic letter mark
        | '\u{115F}' | '\u{1160}'  // Hangul fillers
        | '\u{17B4}' | '\u{17B5}'  // Khmer inherent vowels
        | '\u{180B}'..='\u{180F}'  // Mongolian selectors and vowel separator
        | '\u{200B}'..='\u{200F}'  // zero-width space/non-joiner/joiner, LRM, RLM
        | '\u{202A}'..='\u{202E}'  // bidi embeddings and overrides
        | '\u{2060}'..='\u{2064}'  // word joiner, invisible operators
        | '\u{2066}'..='\u{206F}'  // bidi isolates, deprecated format characters
        | '\u{3164}'               // Hangul filler
        | '\u{FE00}'..='\u{FE0F}'  // variation selectors
        | '\u{FEFF}'               // zero-width no-break space (BOM)
        | '\u{FFA0}'               // half-width Hangul filler
        | '\u{E0000}'..='\u{E007F}' // tags
        | '\u{E0100}'..='\u{E01EF}' // variation selectors supplement
    )
}

/// Folds after NFKC: dashes and minus signs to `-`, ideographic full stop to
/// `.`, other scripts' decimal digits to ASCII.
fn fold(c: char) -> char {
    match c {
        '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{2043}' => '-',
        '\u{3002}' => '.',
        _ => match digit_value(c) {
            Some(d) => char::from(b'0' + d),
            None => c,
        },
    }
}

/// Zero points of decimal digit blocks (Unicode `Nd`) that NFKC leaves
/// alone.
const DIGIT_ZEROS: &[u32] = &[
    0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66,
    0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0,
    0x104A0, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650, 0x116C0,
    0x11730, 0x118E0, 0x16A60, 0x16B50, 0x1E950,
];

fn digit_value(c: char) -> Option<u8> {
    let cp = c as u32;
    if !(0x0660..0x1E95A).contains(&cp) {
        return None;
    }
    // The last block starting at or before `cp`.
    let i = DIGIT_ZEROS.partition_point(|&z| z <= cp).checked_sub(1)?;
    let d = cp - DIGIT_ZEROS.get(i)?;
    (d < 10).then_some(d as u8)
}

/// True when `s` (not plain ASCII) could change under [`normalize`]. ASCII
/// is left out of the NFKC quick check: it is always normalized and has
/// combining class 0, so leaving it out can only make the check more
/// cautious.
fn needs_work(s: &str) -> bool {
    let non_ascii = || s.chars().filter(|c| !c.is_ascii());
    non_ascii().any(|c| is_invisible(c) || fold(c) != c)
        || is_nfkc_quick(non_ascii()) != IsNormalized::Yes
}

/// The string detection runs on: `s` itself when it is ASCII or already in
/// normal form, else the normalized copy.
///
/// Only the non-ASCII stretches go through NFKC, each with the ASCII
/// character before it (a base that a combining mark may attach to). That
/// is the same as normalizing the whole string: an ASCII character is a
/// starter that never composes with what precedes it, so normalization
/// never reaches across one.
pub fn normalize(s: &str) -> Cow<'_, str> {
    if s.is_ascii() || !needs_work(s) {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let start = i;
        i += tail(b, i).iter().take_while(|c| c.is_ascii()).count();
        if i == b.len() {
            out.push_str(&s[start..]);
            break;
        }
        let island = if i > start { i - 1 } else { i };
        out.push_str(&s[start..island]);
        i += tail(b, i).iter().take_while(|c| !c.is_ascii()).count();
        out.extend(
            s[island..i]
                .chars()
                .filter(|&c| !is_invisible(c))
                .nfkc()
                .filter(|&c| !is_invisible(c))
                .map(fold),
        );
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds() {
        let cases = [
            ("abc", "abc"),
            ("café", "café"),
            ("１２３-４５-６７８９", "123-45-6789"),
            ("123\u{200B}-45\u{2060}-67\u{FEFF}89", "123-45-6789"),
            ("jo\u{00AD}hn＠example．com", "john@example.com"),
            ("a\u{200D}b", "ab"),
            ("𝟏𝟐𝟑", "123"),
            ("١٢٣–٤٥−٦٧٨٩", "123-45-6789"),
            ("mail。example。com", "mail.example.com"),
            ("\u{202E}moc.elpmaxe@nhoj", "moc.elpmaxe@nhoj"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), want, "{input:?}");
        }
        assert!(matches!(normalize("naïve"), Cow::Borrowed(_)));
        // Piecewise NFKC is whole-string NFKC.
        for s in [
            "e\u{301}x ａ\u{301} ﬁ ① ¼ Å\u{30A} 가\u{11A8}x ᄀ\u{1161} \u{301}start end\u{301}",
            "x\u{327}\u{301}y — “quoted” ½",
        ] {
            let whole: String = s.chars().nfkc().map(fold).collect();
            assert_eq!(normalize(s), whole, "{s:?}");
        }
    }
}
