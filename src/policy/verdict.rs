//! The policy chain's own types: what a plugin sees and what it decides.
//! wasmtime's generated types stay inside `src/plugin/`; these are the
//! gateway's.

use crate::principal::Principal;

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Agent → MCP server.
    ToServer,
    /// MCP server → agent.
    ToClient,
}

/// The JSON-RPC shape of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Request,
    Notification,
    Response,
    Error,
}

impl From<crate::mcp::Kind> for MessageKind {
    fn from(k: crate::mcp::Kind) -> Self {
        match k {
            crate::mcp::Kind::Request => MessageKind::Request,
            crate::mcp::Kind::Notification => MessageKind::Notification,
            crate::mcp::Kind::Response => MessageKind::Response,
            crate::mcp::Kind::Error => MessageKind::Error,
        }
    }
}

/// What a plugin knows about a message besides its body.
#[derive(Debug, Clone)]
pub struct MessageContext {
    pub direction: Direction,
    pub tunnel: String,
    pub server: String,
    pub kind: MessageKind,
    /// The method, or for responses the method of the request answered.
    pub method: Option<String>,
    /// Tool, prompt or resource name.
    pub target: Option<String>,
    /// For a notification or server request sent inside a tool call's
    /// stream (progress, logging, sampling…): the tool called. Steps scoped
    /// to tools run on these too.
    pub related_tool: Option<String>,
    pub request_id: Option<String>,
    pub session_id: Option<String>,
    pub protocol_version: Option<String>,
    pub principal: Principal,
}

/// An audit annotation: counts and labels, never payload values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnotationValue {
    Count(u64),
    Label(String),
}

/// A key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    pub key: String,
    pub value: AnnotationValue,
}

/// A plugin's refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub code: i32,
    pub public_message: String,
    pub private_reason: String,
}

/// What a plugin decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Rewrite(String),
    Deny(Denial),
}

/// A decision with its annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub annotations: Vec<Annotation>,
}

/// What a plugin wants to see; empty means everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interests {
    /// Exact methods, or prefixes ending in `*`.
    pub methods: Vec<String>,
    pub directions: Vec<Direction>,
    /// When not empty, the methods for to-client messages instead of
    /// `methods`.
    pub to_client_methods: Vec<String>,
}

impl Interests {
    /// True when a message with this direction and method can matter.
    pub fn wants(&self, direction: Direction, method: Option<&str>) -> bool {
        if !self.directions.is_empty() && !self.directions.contains(&direction) {
            return false;
        }
        let methods = match direction {
            Direction::ToClient if !self.to_client_methods.is_empty() => &self.to_client_methods,
            _ => &self.methods,
        };
        if methods.is_empty() {
            return true;
        }
        let Some(method) = method else {
            // Unknown method (a response on a GET stream): a plugin with
            // method filters still sees it, rather than missing data.
            return true;
        };
        methods.iter().any(|m| glob_match(m, method))
    }
}

/// Matches `pattern` against `text`; `*` matches any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = parts.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("tools/*", "tools/call", true),
            ("tools/*", "prompts/get", false),
            ("tools/call", "tools/call", true),
            ("delete_*", "delete_customer", true),
            ("*_customer", "delete_customer", true),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("ab*ba", "aba", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(glob_match(p, t), want, "{p} vs {t}");
        }
    }

    #[test]
    fn interests() {
        let i = Interests {
            methods: vec!["tools/*".into()],
            directions: vec![Direction::ToServer],
            to_client_methods: Vec::new(),
        };
        assert!(i.wants(Direction::ToServer, Some("tools/call")));
        assert!(!i.wants(Direction::ToClient, Some("tools/call")));
        assert!(!i.wants(Direction::ToServer, Some("prompts/get")));
        assert!(Interests::default().wants(Direction::ToClient, None));
        // Everything going in, only lists coming out.
        let lists = Interests {
            to_client_methods: vec!["tools/list".into(), "prompts/list".into()],
            ..Interests::default()
        };
        assert!(lists.wants(Direction::ToServer, Some("tools/call")));
        assert!(lists.wants(Direction::ToServer, Some("ping")));
        assert!(lists.wants(Direction::ToClient, Some("tools/list")));
        assert!(!lists.wants(Direction::ToClient, Some("tools/call")));
        assert!(
            lists.wants(Direction::ToClient, None),
            "a response whose request is unknown is still shown"
        );
    }
}
