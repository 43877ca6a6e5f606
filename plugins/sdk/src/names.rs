//! Names for plugins that decide calls: the three call methods, globs (for
//! rule selectors and `open_methods`) and the folding of look-alike names.
//!
//! `authz` (deny rules) and `cedar` (forbid policies) both use them, so the
//! two plugins refuse the same look-alikes and open the same methods.
//!
//! ```
//! use portcullis_plugin_sdk::names::{CallMethod, Glob, fold};
//!
//! assert_eq!(CallMethod::parse("tools/call"), Some(CallMethod::Tool));
//! assert_eq!(CallMethod::listed_by("resources/list"), Some(CallMethod::Resource));
//! assert!(Glob::new("delete_*").matches(&fold("DELETE\u{200B}_user")));
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
/// [`CaselessGlob`] ignores ASCII case (`deny-tools`).
pub use portcullis_canon::glob::{CaselessGlob, Glob, glob_match};

// ---------------------------------------------------------------------------
// Folding look-alikes
// ---------------------------------------------------------------------------

/// The invisible characters [`fold`] removes (listed there).
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

/// The form of a name compared with refusing rules (`authz`'s deny rules,
/// `cedar`'s forbid policies), so look-alikes cannot dodge them:
///
/// * invisible characters removed: the zero-width space, non-joiner and
///   joiner (U+200B..U+200D), the word joiner (U+2060) and the BOM /
///   zero-width no-break space (U+FEFF), plus other invisible format
///   characters with the same effect: the soft hyphen (U+00AD), U+034F,
///   U+180E, LRM/RLM (U+200E, U+200F), bidi embeddings and isolates
///   (U+202A..U+202E, U+2066..U+2069), invisible operators
///   (U+2061..U+2064) and variation selectors (U+FE00..U+FE0F);
/// * fullwidth ASCII (U+FF01..U+FF5E) mapped to ASCII;
/// * lowercased.
///
/// Borrows when the name is already lowercase ASCII (the common case).
pub fn fold(name: &str) -> Cow<'_, str> {
    if name
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if is_invisible(c) {
            continue;
        }
        let c = if ('\u{FF01}'..='\u{FF5E}').contains(&c) {
            char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
        } else {
            c
        };
        out.extend(c.to_lowercase());
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding() {
        assert!(matches!(fold("delete_user"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(fold("DELETE_User"), "delete_user");
        assert_eq!(
            fold("delete\u{200B}_\u{200C}us\u{200D}er\u{2060}\u{FEFF}"),
            "delete_user"
        );
        assert_eq!(fold("ｄｅｌｅｔｅ＿ＵＳＥＲ"), "delete_user");
        assert_eq!(fold("de\u{00AD}lete_user"), "delete_user");
    }
}
