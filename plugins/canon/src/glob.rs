//! Globs over names: `*` matches any run of characters (including none and
//! including `/`); everything else matches itself. There is no escape for a
//! literal `*`.
//!
//! Matching is case-sensitive: MCP method and tool names are, so the host's
//! plugin interests, `open_methods` and the rule selectors of `authz`
//! compare exactly. Refusing rules (`authz`, `cedar`, `deny-tools`) match
//! look-alikes by comparing canonical forms of pattern and name (the
//! plugin SDK's `names::canonical`) with these same globs.
//!
//! Matching is linear in the text for each piece between two `*`s: placing
//! each piece at its leftmost occurrence is always a valid choice, so there
//! is no backtracking blow-up on patterns like `*a*a*a*b`.

/// True when `text` matches `pattern`, case-sensitively (see the module
/// documentation). For a pattern matched many times, compile a [`Glob`].
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let Some((first, tail)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let (middle, last) = tail.rsplit_once('*').unwrap_or(("", tail));
    wild_match(first, middle.split('*'), last, text)
}

/// `first*middle[0]*…*last` against `text`; empty middle pieces are `**`.
fn wild_match<'p>(
    first: &str,
    middle: impl IntoIterator<Item = &'p str>,
    last: &str,
    text: &str,
) -> bool {
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for piece in middle {
        let Some(after) = rest.find(piece).and_then(|i| rest.get(i + piece.len()..)) else {
            return false;
        };
        rest = after;
    }
    rest.ends_with(last)
}

/// A precompiled case-sensitive glob (the semantics of [`glob_match`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Glob {
    /// `*`.
    Any,
    /// No `*` at all.
    Exact(String),
    /// At least one `*`: the text before the first, the pieces between, and
    /// the text after the last.
    Wild {
        /// The text before the first `*`.
        first: String,
        /// The non-empty pieces between two `*`s, in order.
        middle: Vec<String>,
        /// The text after the last `*`.
        last: String,
    },
}

impl Glob {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Glob {
        let Some((first, tail)) = pattern.split_once('*') else {
            return Glob::Exact(pattern.to_owned());
        };
        let (middle, last) = tail.rsplit_once('*').unwrap_or(("", tail));
        let middle: Vec<String> = middle
            .split('*')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        if first.is_empty() && last.is_empty() && middle.is_empty() {
            return Glob::Any;
        }
        Glob::Wild {
            first: first.to_owned(),
            middle,
            last: last.to_owned(),
        }
    }

    /// True when `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        match self {
            Glob::Any => true,
            Glob::Exact(s) => s == text,
            Glob::Wild {
                first,
                middle,
                last,
            } => wild_match(first, middle.iter().map(String::as_str), last, text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Case-sensitive cases: `glob_match` and `Glob` must agree on each.
    const CASES: &[(&str, &str, bool)] = &[
        ("tools/*", "tools/call", true),
        ("tools/*", "prompts/get", false),
        ("tools/call", "tools/call", true),
        ("tools/call", "Tools/call", false),
        ("tools/call", "tools/call2", false),
        ("delete_*", "delete_customer", true),
        ("delete_*", "delete_", true),
        ("delete_*", "undelete_repo", false),
        ("*_customer", "delete_customer", true),
        ("*", "", true),
        ("**", "x", true),
        ("", "", true),
        ("", "x", false),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
        ("a**c", "ac", true),
        ("ab*ba", "aba", false),
        ("ab*ba", "abba", true),
        ("a*a", "a", false),
        ("*é*", "café", true),
        ("file:///public/*", "file:///public/a/b.txt", true),
        ("file:///public/*", "file:///private/a", false),
    ];

    #[test]
    fn globs() {
        for &(p, t, want) in CASES {
            assert_eq!(glob_match(p, t), want, "glob_match({p:?}, {t:?})");
            assert_eq!(Glob::new(p).matches(t), want, "Glob::new({p:?}) on {t:?}");
        }
        assert_eq!(Glob::new("**"), Glob::Any);
        assert_eq!(Glob::new("x"), Glob::Exact("x".into()));
    }

    #[test]
    fn no_backtracking_blow_up() {
        let hit = format!("{}b", "a".repeat(5000));
        let miss = "a".repeat(5000);
        assert!(glob_match("*a*a*a*b", &hit));
        assert!(!glob_match("*a*a*a*b", &miss));
        assert!(Glob::new("*a*a*a*b").matches(&hit));
    }
}
