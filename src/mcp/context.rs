//! What the perimeter knows about a message besides its bytes, and the words
//! every layer uses for it: which way it travels, what shape it has, what a
//! step of the policy chain decided and what became of the message.
//!
//! The policy chain, the plugin host, the audit records and the metrics all
//! speak these types, so they live here, beside the wire model, at the bottom
//! of the crate. Each word's spelling (`as_str`, and its serde name) is the
//! one the audit spool has always used: records read the same whoever writes
//! them.

use serde::{Deserialize, Serialize};

use crate::principal::Principal;

/// An enum of fixed words: each variant with its spelling, which is both its
/// serde name and what `as_str` (and `Display`) give.
macro_rules! words {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// The word as the audit records and metrics spell it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

words! {
    /// Which way a message travels.
    pub enum Direction {
        /// Agent → MCP server.
        ToServer = "to-server",
        /// MCP server → agent.
        ToClient = "to-client",
    }
}

words! {
    /// What a JSON-RPC message is.
    pub enum Kind {
        /// Has `method` and `id`.
        Request = "request",
        /// Has `method`, no `id`.
        Notification = "notification",
        /// Has `id` and `result`.
        Response = "response",
        /// Has `id` (possibly null) and `error`.
        Error = "error",
    }
}

words! {
    /// Whether a policy step's verdict counts (`mode` in a policy file).
    #[derive(Default)]
    pub enum Mode {
        #[default]
        Enforce = "enforce",
        /// Run and record; never block or rewrite.
        Audit = "audit",
    }
}

words! {
    /// What one step of the policy chain decided.
    pub enum StepDecision {
        Allow = "allow",
        Rewrite = "rewrite",
        Deny = "deny",
        /// The plugin failed (trap, deadline, memory, bad output).
        Error = "error",
    }
}

words! {
    /// What became of a message.
    pub enum Outcome {
        /// Passed on as it came.
        Forwarded = "forwarded",
        /// Passed on as a plugin rewrote it.
        Rewritten = "rewritten",
        /// Not passed on; the sender was answered with an error.
        Denied = "denied",
        /// Not passed on, and nobody to answer (a notification or a
        /// server's request to the agent).
        Dropped = "dropped",
        /// Turned away before any policy: malformed, unauthenticated,
        /// offline tunnel, unknown session…
        Refused = "refused",
    }
}

/// What the policy chain (and a plugin) knows about a message besides its
/// body.
#[derive(Debug, Clone)]
pub struct MessageContext {
    pub direction: Direction,
    pub tunnel: String,
    pub server: String,
    pub kind: Kind,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The spellings are the spool's format: serde and `as_str` agree.
    #[test]
    fn words_serialise_as_they_are_spelt() {
        fn check<T: Serialize + for<'a> Deserialize<'a> + PartialEq + std::fmt::Debug>(
            word: T,
            text: &str,
        ) {
            let json = format!("\"{text}\"");
            assert_eq!(serde_json::to_string(&word).unwrap(), json);
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), word);
        }
        check(Direction::ToServer, Direction::ToServer.as_str());
        check(Direction::ToClient, "to-client");
        check(Kind::Notification, Kind::Notification.as_str());
        check(Kind::Error, "error");
        check(Mode::Audit, "audit");
        check(Mode::default(), "enforce");
        check(StepDecision::Rewrite, "rewrite");
        check(Outcome::Refused, "refused");
        assert_eq!(Outcome::Dropped.to_string(), "dropped");
    }
}
