//! The policy chain's contract: what a step decides ([`Verdict`]), what it
//! wants to see ([`Interests`]), why it could not decide ([`CallError`]),
//! and the [`Evaluate`] trait a step's plugin implements. The message
//! context a step is given is [`crate::mcp::MessageContext`].
//!
//! wasmtime's generated types stay inside `src/plugin/`, which implements
//! [`Evaluate`]; the chain's unit tests implement it with fakes.

use std::time::Duration;

use crate::mcp::{Direction, MessageContext};

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

/// Why a step produced no verdict. Each of these denies the message unless
/// the policy made the step fail-open.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    #[error("plugin overran its {0:?} deadline")]
    Deadline(Duration),
    #[error("plugin exceeded its memory cap")]
    Memory,
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin could not be instantiated: {0}")]
    Instantiate(String),
    #[error("plugin returned an invalid message: {0}")]
    BadOutput(String),
}

/// What a chain step runs: a plugin that decides on one message at a time.
/// `Any` lets the policy hand back the concrete plugin behind a step.
#[async_trait::async_trait]
pub trait Evaluate: std::any::Any + Send + Sync {
    /// Name in the policy file.
    fn name(&self) -> &str;
    /// SHA-256 of what runs, hex, for the audit.
    fn digest(&self) -> &str;
    /// The messages it asked to see.
    fn interests(&self) -> &Interests;
    /// Decides on one message (its text, as the previous step left it).
    async fn evaluate(&self, ctx: &MessageContext, message: &str) -> Result<Verdict, CallError>;
    /// Whether it may read the upstream's tool definitions (the catalog):
    /// the gateway then makes sure it holds the whole listing first.
    fn reads_definitions(&self) -> bool {
        false
    }
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

/// Matches `pattern` against `text`; `*` matches any run of characters
/// (case-sensitive). The plugins' SDK matches with the same function.
pub use portcullis_canon::glob_match;

#[cfg(test)]
mod tests {
    use super::*;

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
