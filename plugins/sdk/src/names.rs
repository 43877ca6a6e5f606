//! Names for plugins that decide calls: the three call methods, globs (for
//! rule selectors and `open_methods`) and the canonical form of names.
//!
//! `authz` (deny rules), `cedar` (forbid policies) and `deny-tools` all use
//! them, so the three plugins refuse the same look-alikes and open the same
//! methods; [`crate::authorize`] refuses to allow a name that is not
//! [`is_canonical`].
//!
//! ```
//! use portcullis_plugin_sdk::names::{CallMethod, Glob, canonical, canonical_pattern, is_canonical};
//!
//! assert_eq!(CallMethod::parse("tools/call"), Some(CallMethod::Tool));
//! assert_eq!(CallMethod::listed_by("resources/list"), Some(CallMethod::Resource));
//! let deny = Glob::new(&canonical_pattern("delete_*"));
//! assert!(deny.matches(&canonical("DELETE\u{200B}_user")));
//! assert!(deny.matches(&canonical("d\u{0435}lete_user"))); // Cyrillic е
//! assert!(!is_canonical("d\u{0435}lete_user"));
//! ```

use std::borrow::Cow;

// ---------------------------------------------------------------------------
// Call methods
// ---------------------------------------------------------------------------

/// The three methods that name something to use, and are decided by the
/// authorization plugins' rules or policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMethod {
    /// `tools/call`, target `params.name`.
    Tool,
    /// `prompts/get`, target `params.name`.
    Prompt,
    /// `resources/read`, target `params.uri`.
    Resource,
}

impl CallMethod {
    /// All three, in the order of their bits.
    pub const ALL: [CallMethod; 3] = [CallMethod::Tool, CallMethod::Prompt, CallMethod::Resource];

    /// The call method named `method`, if it is one.
    pub fn parse(method: &str) -> Option<CallMethod> {
        match method {
            "tools/call" => Some(CallMethod::Tool),
            "prompts/get" => Some(CallMethod::Prompt),
            "resources/read" => Some(CallMethod::Resource),
            _ => None,
        }
    }

    /// The call method whose targets a `*/list` response lists.
    pub fn listed_by(method: &str) -> Option<CallMethod> {
        match method {
            "tools/list" => Some(CallMethod::Tool),
            "prompts/list" => Some(CallMethod::Prompt),
            "resources/list" => Some(CallMethod::Resource),
            _ => None,
        }
    }

    /// The `*/list` method whose results list this method's targets.
    pub fn list_name(self) -> &'static str {
        match self {
            CallMethod::Tool => "tools/list",
            CallMethod::Prompt => "prompts/list",
            CallMethod::Resource => "resources/list",
        }
    }

    /// The JSON-RPC method name (also `cedar`'s action id).
    pub fn name(self) -> &'static str {
        match self {
            CallMethod::Tool => "tools/call",
            CallMethod::Prompt => "prompts/get",
            CallMethod::Resource => "resources/read",
        }
    }

    /// What the agent calls the target in an error (`Unknown tool: x`).
    pub fn noun(self) -> &'static str {
        match self {
            CallMethod::Tool => "tool",
            CallMethod::Prompt => "prompt",
            CallMethod::Resource => "resource",
        }
    }

    /// The `params` field naming the target, and in a list entry.
    pub fn target_field(self) -> &'static str {
        match self {
            CallMethod::Resource => "uri",
            _ => "name",
        }
    }

    /// The array of a `*/list` result holding the entries.
    pub fn list_field(self) -> &'static str {
        match self {
            CallMethod::Tool => "tools",
            CallMethod::Prompt => "prompts",
            CallMethod::Resource => "resources",
        }
    }

    /// This method's bit in a bit set of call methods (as `authz` keeps a
    /// rule's methods): its position in [`CallMethod::ALL`].
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

// ---------------------------------------------------------------------------
// Globs
// ---------------------------------------------------------------------------

/// Globs, from `portcullis-canon`: the gateway matches plugin interests with
/// the same code. [`Glob`] is case-sensitive (selectors, `open_methods`);
/// refusing rules match a [`canonical_pattern`] against [`canonical`] names.
pub use portcullis_canon::glob::{Glob, glob_match};

// ---------------------------------------------------------------------------
// Canonical names
// ---------------------------------------------------------------------------

/// The invisible format characters [`canonical`] removes besides
/// whitespace and controls: the soft hyphen, the combining grapheme joiner,
/// the Mongolian vowel separator, zero-width space, non-joiner and joiner,
/// LRM/RLM, bidi embeddings, overrides and isolates, the word joiner and
/// invisible operators, variation selectors and the BOM.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
    )
}

/// Characters that are not part of a name as it looks: whitespace (NBSP
/// and the other Unicode spaces included), controls and invisible format
/// characters.
fn is_removed(c: char) -> bool {
    c.is_whitespace() || c.is_control() || is_invisible(c)
}

/// The form of a name that look-alikes share, compared by refusing rules
/// (`authz`'s deny rules, `cedar`'s forbid policies, `deny-tools`'
/// patterns), so no variation of a name dodges them:
///
/// 1. NFKC: fullwidth forms, mathematical alphanumerics (`𝐝`), circled
///    letters (`ⓓ`), Roman numerals (`Ⅰ`), ligatures become plain letters;
/// 2. whitespace (NBSP, leading and trailing spaces included), controls and
///    invisible characters (zero-width, bidi controls, soft hyphen,
///    variation selectors, BOM) removed;
/// 3. uppercased, the UTS #39 confusable skeleton taken (Cyrillic `Е`,
///    Greek `Ο` → Latin `E`, `O`; Cyrillic `т` has no prototype, its
///    uppercase `Т` is `T`), lowercased (`ß` is now `ss`), and the skeleton
///    of that taken again (look-alikes only of a lowercase letter, `1` →
///    `l`), lowercased, recomposed (NFC).
///
/// The result is for comparing only: `i`, `I`, `l`, `1` and `|` all become
/// `l`, `0` and `o` become `o`. Borrows when the name is its own canonical
/// form.
pub fn canonical(name: &str) -> Cow<'_, str> {
    use unicode_normalization::UnicodeNormalization;
    use unicode_security::skeleton;

    let upper: String = name
        .nfkc()
        .filter(|&c| !is_removed(c))
        .flat_map(char::to_uppercase)
        .collect();
    let lower: String = skeleton(&upper).flat_map(char::to_lowercase).collect();
    let out: String = skeleton(&lower)
        .flat_map(char::to_lowercase)
        .nfc()
        .collect();
    if out == name {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(out)
    }
}

/// A glob pattern in canonical form: each piece between two `*`s
/// canonicalised by [`canonical`], so the compiled [`Glob`] matches the
/// canonical form of every name the pattern's look-alikes would match.
pub fn canonical_pattern(pattern: &str) -> String {
    let pieces: Vec<Cow<'_, str>> = pattern.split('*').map(canonical).collect();
    pieces.join("*")
}

/// True when `name` is written the one way its look-alikes are not, so an
/// allowing rule may match it: NFKC, without whitespace, controls or
/// invisible characters, and every non-ASCII character its own confusable
/// prototype up to case (`é`, `日` are; Cyrillic `е`, Greek `ο`, `ｄ`, `𝐝`
/// are not). ASCII is taken as written: case and ASCII look-alikes (`I`
/// and `l`, `0` and `O`) are distinct MCP names (`getUser`, `item_1`),
/// which allowing rules compare exactly while refusing rules compare
/// [`canonical`] forms.
pub fn is_canonical(name: &str) -> bool {
    if name.bytes().all(|b| b.is_ascii_graphic()) {
        return true;
    }
    unicode_normalization::is_nfkc(name)
        && name.chars().all(|c| {
            if c.is_ascii() {
                return c.is_ascii_graphic();
            }
            let mut one = [0; 4];
            let lower: String = c.to_lowercase().collect();
            !is_removed(c) && canonical(c.encode_utf8(&mut one)) == lower
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Look-alikes of `delete_repo`, as an attacker would vary it.
    const LOOKALIKES: &[&str] = &[
        "ｄｅｌｅｔｅ_repo",
        "d\u{0435}lete_repo",
        "𝐝𝐞𝐥𝐞𝐭𝐞_repo",
        "ⓓelete_repo",
        "delete\u{00A0}_repo",
        " delete_repo ",
        "de\u{200B}lete_repo",
        "de\u{00AD}lete_\u{202E}repo\u{FEFF}",
        "DELETE_REPO",
        "Delete_Rep\u{03BF}",
        "de1ete_rep0",
        "dele\u{0442}e_repo",
    ];

    #[test]
    fn lookalikes_share_the_canonical_form() {
        let want = canonical("delete_repo");
        for name in LOOKALIKES {
            assert_eq!(canonical(name), want, "{name:?}");
        }
        assert_eq!(canonical("\u{2160}"), canonical("I"), "Roman numeral one");
        assert_eq!(canonical("\u{03BF}"), canonical("o"), "Greek omicron");
        assert_eq!(canonical("caf\u{0065}\u{0301}"), canonical("café"));
        assert_ne!(canonical("delete_repo"), canonical("delete_rope"));
        assert_ne!(canonical("read"), canonical("reads"));
    }

    #[test]
    fn canonical_borrows_its_own_form() {
        assert!(matches!(canonical("delete_repo"), Cow::Borrowed(_)));
        let once = canonical("Lookup_Customer").into_owned();
        assert_eq!(canonical(&once), once, "idempotent");
    }

    #[test]
    fn patterns_are_canonical_piece_by_piece() {
        let glob = Glob::new(&canonical_pattern("Delete_*"));
        for name in LOOKALIKES {
            assert!(glob.matches(&canonical(name)), "{name:?}");
        }
        assert!(!glob.matches(&canonical("read_repo")));
        assert_eq!(canonical_pattern("*"), "*");
        assert_eq!(canonical_pattern("a*\u{200B}*B"), "a**b");
    }

    #[test]
    fn only_plain_names_are_canonical() {
        for name in [
            "delete_repo",
            "getUser",
            "item_1",
            "file:///a/B.txt",
            "café",
            "日本",
        ] {
            assert!(is_canonical(name), "{name:?}");
        }
        for name in LOOKALIKES
            .iter()
            .filter(|n| n.bytes().any(|b| !b.is_ascii_graphic()))
        {
            assert!(!is_canonical(name), "{name:?}");
        }
        for name in [
            "\u{2160}",
            "\u{03BF}",
            "cafe\u{0301}",
            "a\tb",
            "a\u{0001}",
            "",
        ] {
            assert_eq!(is_canonical(name), name.is_empty(), "{name:?}");
        }
    }
}
