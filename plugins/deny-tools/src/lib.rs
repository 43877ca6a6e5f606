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
//!   (including none); everything else matches itself and its look-alikes:
//!   pattern and name are compared in canonical form (the SDK's
//!   `names::canonical`, shared with `authz` and `cedar`: NFKC, whitespace
//!   and invisible characters removed, UTS #39 confusable skeleton, case
//!   folded), so `Delete_*` blocks `DELETE_REPO`, `ｄｅｌｅｔｅ_repo`,
//!   `dеlete_repo` (Cyrillic `е`), `de\u{200B}lete_repo` and ` delete_repo`.
//! * `message` (optional): public message for refused calls instead of
//!   `Unknown tool: NAME`.
//!
//! Unknown keys, a missing `deny`, or a `deny` that is not a list of non-empty
//! strings fail `init`, and so the policy load, with a readable error.

use portcullis_plugin_sdk::names::{Glob, canonical, canonical_pattern};
use portcullis_plugin_sdk::{
    ConfiguredPlugin, Context, Interests, Message, Value, Verdict, allow, codes, deny, log_info,
};
use serde::Deserialize;

/// The plugin's configuration, as written in the policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Glob patterns of tool names to block.
    deny: Vec<String>,
    /// Public message for refused calls (default `Unknown tool: NAME`).
    #[serde(default)]
    message: Option<String>,
}

/// The configuration, validated, with the patterns compiled.
#[derive(Debug)]
pub struct Config {
    /// The patterns of tool names to block, as written and compiled from
    /// their canonical form.
    deny: Vec<(String, Glob)>,
    /// Public message for refused calls (default `Unknown tool: NAME`).
    message: Option<String>,
}

impl Config {
    fn parse(text: &str) -> Result<Config, String> {
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|e| format!("deny-tools: invalid config: {e}"))?;
        if let Some(i) = raw.deny.iter().position(|p| p.is_empty()) {
            return Err(format!(
                "deny-tools: invalid config: deny[{i}] is an empty pattern"
            ));
        }
        Ok(Config {
            deny: raw
                .deny
                .into_iter()
                .map(|p| {
                    let glob = Glob::new(&canonical_pattern(&p));
                    (p, glob)
                })
                .collect(),
            message: raw.message,
        })
    }

    /// The first pattern matching `tool`'s canonical form, if any.
    fn denying_pattern(&self, tool: &str) -> Option<&str> {
        let tool = canonical(tool);
        self.deny
            .iter()
            .find(|(_, glob)| glob.matches(&tool))
            .map(|(pattern, _)| pattern.as_str())
    }
}

/// The plugin: [`ConfiguredPlugin`] is all a plugin implements;
/// `export_plugin!` below turns it into the component's `init` and `handle`
/// (keeping the parsed [`Config`] for the instance) and into `native()`.
pub struct DenyTools;

impl ConfiguredPlugin for DenyTools {
    const NAME: &'static str = "deny-tools";
    type Config = Config;

    fn parse(config: &str) -> Result<Config, String> {
        Config::parse(config)
    }

    fn announce(config: &Config) {
        let patterns: Vec<&String> = config.deny.iter().map(|(p, _)| p).collect();
        log_info(&format!("blocking tools matching {patterns:?}"));
    }

    fn interests(_: &Config) -> Interests {
        Interests::methods(["tools/call", "tools/list"])
    }

    fn decide(config: &Config, ctx: &Context, message: &str) -> Verdict {
        if ctx.is_tool_call() {
            check_call(config, ctx, message)
        } else if ctx.is_response_to("tools/list") {
            filter_list(config, message)
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn lookalikes_are_denied() {
        use portcullis_plugin_sdk::testing::conformance::{DENIED_LOOKALIKES, RESOURCES};
        let config = Config::parse(r#"{"deny": ["*Delete_*", "purge"]}"#).unwrap();
        for name in DENIED_LOOKALIKES
            .iter()
            .chain(&["PURGE", "\u{0440}urge", " purge"])
        {
            assert!(config.denying_pattern(name).is_some(), "{name:?}");
        }
        for name in [RESOURCES, "read_repo", "deleterepo", "purged"] {
            assert_eq!(config.denying_pattern(name), None, "{name:?}");
        }
    }

    #[test]
    fn list_filtering() {
        let config = Config::parse(r#"{"deny": ["delete_*", "admin_*"]}"#).unwrap();
        let msg = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[
            {"name":"read"},{"name":"Delete_Repo"},{"name":"admin_x"},{"title":"nameless"},
            {"name":"d\u0435lete_x"}]}}"#;
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
            portcullis_plugin_sdk::AnnotationValue::Count(3)
        );
    }
}
