//! `deny-tools`: hide and block MCP tools by name.
//!
//! This is the example to copy when writing a policy plugin. It does two
//! things for every tool whose name matches one of the configured patterns:
//!
//! * a `tools/call` request for it is refused with JSON-RPC error `-32602`
//!   and the public message `Unknown tool: NAME`, exactly what a server says
//!   about a tool it does not have, so the agent learns nothing about its
//!   existence. The audit trail gets the real reason (which pattern matched);
//! * a `tools/list` response is rewritten without it, and the number of
//!   tools removed is recorded as the count annotation `hidden`.
//!
//! # Configuration
//!
//! The policy file names the component (`source = "path/to/deny_tools.wasm"`
//! in its `[plugins.NAME]` table) and gives its `config`, which `init`
//! receives as JSON text:
//!
//! ```json
//! {"deny": ["delete_*", "admin_*"], "message": "optional public message"}
//! ```
//!
//! * `deny` (required): list of patterns. `*` matches any run of characters
//!   (including none); everything else matches itself, ASCII
//!   case-insensitively (`Delete_*` blocks `DELETE_REPO`).
//! * `message` (optional): public message for refused calls instead of
//!   `Unknown tool: NAME`.
//!
//! Unknown keys, a missing `deny`, or a `deny` that is not a list of non-empty
//! strings fail `init`, and so the policy load, with a readable error.

// Tests may panic: a failing assertion is how they report.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::sync::OnceLock;

use portcullis_plugin_sdk::{
    Context, Interests, Message, Plugin, Value, Verdict, allow, codes, deny, log_info,
};
use serde::Deserialize;

/// The plugin's configuration, as written in the policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Glob patterns of tool names to block.
    deny: Vec<String>,
    /// Public message for refused calls (default `Unknown tool: NAME`).
    #[serde(default)]
    message: Option<String>,
}

impl Config {
    fn parse(text: &str) -> Result<Config, String> {
        let config: Config =
            serde_json::from_str(text).map_err(|e| format!("deny-tools: invalid config: {e}"))?;
        if let Some(i) = config.deny.iter().position(|p| p.is_empty()) {
            return Err(format!(
                "deny-tools: invalid config: deny[{i}] is an empty pattern"
            ));
        }
        Ok(config)
    }

    /// The first pattern matching `tool`, if any.
    fn denying_pattern(&self, tool: &str) -> Option<&str> {
        self.deny
            .iter()
            .map(String::as_str)
            .find(|pattern| glob_match(pattern, tool))
    }
}

/// Set once by `init`; each plugin instance has its own copy.
static CONFIG: OnceLock<Config> = OnceLock::new();

struct DenyTools;

impl Plugin for DenyTools {
    fn init(config: String) -> Result<Interests, String> {
        let parsed = Config::parse(&config)?;
        log_info(&format!("blocking tools matching {:?}", parsed.deny));
        CONFIG
            .set(parsed)
            .map_err(|_| "deny-tools: init called twice".to_string())?;
        Ok(Interests::methods(["tools/call", "tools/list"]))
    }

    fn handle(ctx: Context, message: String) -> Verdict {
        let Some(config) = CONFIG.get() else {
            // Unreachable with a conforming host: init runs first.
            return deny(
                codes::POLICY_DENIED,
                "Policy unavailable",
                "deny-tools: not initialised",
            );
        };
        if ctx.is_tool_call() {
            check_call(config, &ctx, &message)
        } else if ctx.is_response_to("tools/list") {
            filter_list(config, &message)
        } else {
            allow()
        }
    }
}

portcullis_plugin_sdk::export_plugin!(DenyTools);

/// A `tools/call` request: refuse it if the tool is denied.
fn check_call(config: &Config, ctx: &Context, message: &str) -> Verdict {
    // Check the name the upstream will actually see (`params.name` in the
    // message) and the host's view (`ctx.target`); either matching denies.
    let parsed = Message::parse(message).ok();
    let names = [
        parsed.as_ref().and_then(Message::tool_call_name),
        ctx.target.as_deref(),
    ];
    for name in names.into_iter().flatten() {
        if let Some(pattern) = config.denying_pattern(name) {
            let public = config
                .message
                .clone()
                .unwrap_or_else(|| format!("Unknown tool: {name}"));
            return deny(
                codes::INVALID_PARAMS,
                public,
                format!("tool {name:?} matches deny pattern {pattern:?}"),
            )
            .with_label("pattern", pattern);
        }
    }
    allow()
}

/// A `tools/list` response: drop denied tools from `result.tools`.
fn filter_list(config: &Config, message: &str) -> Verdict {
    let Ok(mut msg) = Message::parse(message) else {
        return allow();
    };
    let Some(tools) = msg.listed_tools_mut() else {
        return allow();
    };
    let before = tools.len();
    tools.retain(|tool| {
        let name = tool.get("name").and_then(Value::as_str);
        name.is_none_or(|n| config.denying_pattern(n).is_none())
    });
    let hidden = (before - tools.len()) as u64;
    if hidden == 0 {
        return allow().with_count("hidden", 0);
    }
    msg.rewrite().with_count("hidden", hidden)
}

/// Glob match with `*` as the only wildcard, ASCII case-insensitive.
///
/// Linear-time two-pointer algorithm (no backtracking blow-up on patterns
/// like `*a*a*a*b`).
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Position of the last `*` seen, and the text position it is matched up to.
    let mut star: Option<(usize, usize)> = None;
    while let Some(tc) = t.get(ti) {
        let pc = p.get(pi);
        if pc == Some(&b'*') {
            star = Some((pi, ti));
            pi += 1;
        } else if pc.is_some_and(|pc| pc.eq_ignore_ascii_case(tc)) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` swallow one more character and retry.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    // `pi` <= `p.len()`: it only moves past a pattern byte.
    p.get(pi..).unwrap_or_default().iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("delete_*", "delete_repo"));
        assert!(glob_match("delete_*", "DELETE_Repo"));
        assert!(glob_match("delete_*", "delete_"));
        assert!(!glob_match("delete_*", "undelete_repo"));
        assert!(glob_match("*_admin", "repo_admin"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("exact", "EXACT"));
        assert!(!glob_match("exact", "exact2"));
        assert!(glob_match("*a*a*a*b", &format!("{}b", "a".repeat(5000))));
        assert!(!glob_match("*a*a*a*b", &"a".repeat(5000)));
    }

    #[test]
    fn config_errors_are_readable() {
        let err = Config::parse("{}").unwrap_err();
        assert!(err.contains("missing field `deny`"), "{err}");
        let err = Config::parse(r#"{"deny": "delete_*"}"#).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        let err = Config::parse(r#"{"deny": [1]}"#).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        let err = Config::parse(r#"{"deny": [""]}"#).unwrap_err();
        assert!(err.contains("empty pattern"), "{err}");
        let err = Config::parse(r#"{"deny": [], "mesage": "x"}"#).unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
        assert!(Config::parse(r#"{"deny": ["a*"], "message": "no"}"#).is_ok());
    }

    #[test]
    fn list_filtering() {
        let config = Config::parse(r#"{"deny": ["delete_*", "admin_*"]}"#).unwrap();
        let msg = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[
            {"name":"read"},{"name":"Delete_Repo"},{"name":"admin_x"},{"title":"nameless"}]}}"#;
        let v = filter_list(&config, msg);
        let out: Value = serde_json::from_str(v.rewritten().unwrap()).unwrap();
        let names: Vec<_> = out["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.get("name").cloned())
            .collect();
        assert_eq!(names, vec![Some("read".into()), None]);
        assert_eq!(v.annotations[0].key, "hidden");
        assert_eq!(
            v.annotations[0].value,
            portcullis_plugin_sdk::AnnotationValue::Count(2)
        );
    }
}
