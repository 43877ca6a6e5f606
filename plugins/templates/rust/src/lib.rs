//! __NAME__: a Portcullis policy plugin in Rust.
//!
//! Refuses the tools named in its configuration (`deny`, `*` globs) as if
//! they did not exist, and lets everything else through. Edit `decide` to
//! make it yours; `portcullis plugin build .` rebuilds it and
//! `portcullis policy test policy.toml` runs the cases in policy.cases.toml.

use portcullis_plugin_sdk::names::Glob;
use portcullis_plugin_sdk::{
    ConfiguredPlugin, Context, Direction, Interests, Message, Verdict, allow, codes, deny,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    deny: Vec<String>,
}

pub struct Plugin;

impl ConfiguredPlugin for Plugin {
    const NAME: &'static str = "__NAME__";
    type Config = Vec<Glob>;

    fn parse(config: &str) -> Result<Vec<Glob>, String> {
        let c: Config =
            serde_json::from_str(config).map_err(|e| format!("__NAME__: invalid config: {e}"))?;
        Ok(c.deny.iter().map(|p| Glob::new(p)).collect())
    }

    fn interests(_: &Vec<Glob>) -> Interests {
        Interests::methods(["tools/call"]).directions([Direction::ToServer])
    }

    fn decide(deny_list: &Vec<Glob>, ctx: &Context, message: &str) -> Verdict {
        if !ctx.is_tool_call() {
            return allow();
        }
        let Ok(msg) = Message::parse(message) else {
            return allow();
        };
        match msg.tool_call_name() {
            Some(tool) if deny_list.iter().any(|g| g.matches(tool)) => deny(
                codes::INVALID_PARAMS,
                format!("Unknown tool: {tool}"),
                format!("{tool} is refused by __NAME__"),
            )
            .with_label("rule", "deny"),
            _ => allow(),
        }
    }
}

portcullis_plugin_sdk::export_plugin!(Plugin);
