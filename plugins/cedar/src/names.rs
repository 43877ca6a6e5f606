//! Method globs (for `open_methods`) and the folding of look-alike names
//! (for `forbid` policies). Both are the same as in `authz`, so the two
//! plugins refuse the same look-alikes and open the same methods.

use std::borrow::Cow;

// ---------------------------------------------------------------------------
// Call methods
// ---------------------------------------------------------------------------

/// The three methods that name something to use, and are decided by Cedar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMethod {
    /// `tools/call`, target `params.name`, resource `Portcullis::Tool`.
    Tool,
    /// `prompts/get`, target `params.name`, resource `Portcullis::Prompt`.
    Prompt,
    /// `resources/read`, target `params.uri`, resource `Portcullis::Resource`.
    Resource,
}

impl CallMethod {
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

    /// The JSON-RPC method name, which is also the Cedar action id.
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
}

// ---------------------------------------------------------------------------
// Globs
// ---------------------------------------------------------------------------

/// A precompiled glob: `*` matches any run of characters (including none and
/// including `/`), everything else matches itself exactly (case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Glob {
    /// `*`.
    Any,
    /// No `*` at all.
    Exact(String),
    /// At least one `*`: the text before the first, the pieces between, and
    /// the text after the last.
    Wild {
        first: String,
        middle: Vec<String>,
        last: String,
    },
}

impl Glob {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Glob {
        if !pattern.contains('*') {
            return Glob::Exact(pattern.to_owned());
        }
        let mut pieces: Vec<String> = pattern.split('*').map(str::to_owned).collect();
        let last = pieces.pop().unwrap_or_default();
        let first = if pieces.is_empty() {
            String::new()
        } else {
            pieces.remove(0)
        };
        pieces.retain(|p| !p.is_empty());
        if first.is_empty() && last.is_empty() && pieces.is_empty() {
            return Glob::Any;
        }
        Glob::Wild {
            first,
            middle: pieces,
            last,
        }
    }

    /// True when `text` matches (leftmost placement of each middle piece).
    pub fn matches(&self, text: &str) -> bool {
        match self {
            Glob::Any => true,
            Glob::Exact(s) => s == text,
            Glob::Wild {
                first,
                middle,
                last,
            } => {
                let Some(mut rest) = text.strip_prefix(first.as_str()) else {
                    return false;
                };
                for piece in middle {
                    match rest.find(piece.as_str()) {
                        Some(i) => rest = &rest[i + piece.len()..],
                        None => return false,
                    }
                }
                rest.ends_with(last.as_str())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Folding look-alikes (forbid policies only)
// ---------------------------------------------------------------------------

/// Invisible characters removed before comparing with forbid policies: the
/// zero-width space, non-joiner and joiner, LRM/RLM (U+200B..U+200F), the
/// word joiner and invisible operators (U+2060..U+2064), the BOM (U+FEFF),
/// the soft hyphen, U+034F, U+180E, bidi embeddings and isolates, and
/// variation selectors.
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

/// The canonical form of a name for forbid policies: invisible characters
/// removed, fullwidth ASCII (U+FF01..U+FF5E) mapped to ASCII, lowercased.
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
