//! Policy files (TOML): the plugins, their configuration, and the chain per
//! server.
//!
//! ```toml
//! [plugins.hide-admin]
//! source = "builtin:deny-tools"        # or a path to a .wasm component
//! config = { deny = ["delete_*"] }     # passed to the plugin's init as JSON
//! deadline_ms = 10                     # optional, per message (plugin CPU time)
//! deadline_per_mib_ms = 50             # optional, added per MiB of message
//! memory_mib = 64                      # optional, per instance
//!
//! [[servers."*"]]                      # runs for every server, first
//! plugin = "hide-admin"
//! phase = "both"                       # request | response | both
//! mode = "enforce"                     # enforce | audit
//! on_error = "deny"                    # deny (default) | allow
//! tools = ["delete_*"]                 # optional: only calls naming these tools
//!
//! [audit]
//! record_payloads = ["crm"]            # servers whose messages the audit
//!                                      # records keep, as they left the chain
//! record_received = ["crm"]            # … and as the chain received them
//!                                      # (unredacted), for `policy replay`
//!
//! [messages]
//! allow_case_colliding_keys = ["crm"]  # servers whose messages may hold keys
//!                                      # that differ only in case
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::catalog::Catalog;
use super::chain::{Phase, Policy, Step};
use crate::mcp::Mode;
use crate::plugin::{LoadedPlugin, PluginEngine, PluginError, PluginLimits};

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("policy {path}: {message}")]
    Invalid { path: String, message: String },
    /// The plugin error is part of the message (not a separate cause), so
    /// it is printed once.
    #[error("policy {path}: {error}")]
    Plugin { path: String, error: PluginError },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    plugins: BTreeMap<String, RawPlugin>,
    #[serde(default)]
    servers: BTreeMap<String, Vec<RawStep>>,
    #[serde(default)]
    audit: RawPolicyAudit,
    #[serde(default)]
    messages: RawPolicyMessages,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicyMessages {
    /// Servers (or `"*"`) whose messages may hold object keys that are one
    /// key under case folding (`amount` and `Amount`), for upstreams known
    /// to match keys exactly. Default: none; such messages are refused.
    #[serde(default)]
    allow_case_colliding_keys: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicyAudit {
    /// Servers (or `"*"`) whose messages are kept in the audit records, in
    /// the form that passed the chain (after redaction). Default: none.
    #[serde(default)]
    record_payloads: Vec<String>,
    /// Servers (or `"*"`) whose records also keep each message as the chain
    /// received it, before any rewrite or denial: unredacted values, so
    /// that `policy replay` can replay rewritten and denied messages.
    /// Default: none.
    #[serde(default)]
    record_received: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    source: String,
    #[serde(default)]
    config: Option<toml::Value>,
    deadline_ms: Option<u64>,
    deadline_per_mib_ms: Option<u64>,
    memory_mib: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    plugin: String,
    #[serde(default)]
    phase: Phase,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    on_error: OnError,
    #[serde(default)]
    tools: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum OnError {
    #[default]
    Deny,
    Allow,
}

/// Where a plugin's bytes come from.
fn plugin_bytes(policy: &Path, source: &str) -> Result<Vec<u8>, String> {
    if let Some(name) = source.strip_prefix("builtin:") {
        return crate::plugin::builtin(name)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                format!(
                    "unknown builtin plugin '{name}' (builtins: {})",
                    crate::plugin::BUILTINS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
    }
    let path: PathBuf = relative_to(policy, Path::new(source));
    std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

impl Policy {
    /// The Wasm plugin called `name`, if a chain uses it.
    pub fn plugin(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        let step: Arc<dyn std::any::Any + Send + Sync> = self.evaluator(name)?;
        step.downcast().ok()
    }
}

/// Loads a policy file: parses it, loads every plugin and calls its `init`.
pub async fn load(
    path: &Path,
    engine: &PluginEngine,
    catalog: Arc<Catalog>,
) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    load_text(&text, path, engine, catalog).await
}

/// Loads a policy from its text; `path` names it in errors and anchors
/// relative plugin paths.
pub async fn load_text(
    text: &str,
    path: &Path,
    engine: &PluginEngine,
    catalog: Arc<Catalog>,
) -> Result<Policy, PolicyError> {
    let invalid = |message: String| PolicyError::Invalid {
        path: path.display().to_string(),
        message,
    };
    let raw: RawPolicy = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mut plugins = BTreeMap::new();
    for (name, p) in &raw.plugins {
        let bytes =
            plugin_bytes(path, &p.source).map_err(|m| invalid(format!("plugins.{name}: {m}")))?;
        let config = match &p.config {
            Some(v) => serde_json::to_string(v)
                .map_err(|e| invalid(format!("plugins.{name}.config: {e}")))?,
            None => "{}".to_owned(),
        };
        let mut limits = PluginLimits::default();
        if let Some(ms) = p.deadline_ms {
            limits.deadline = Duration::from_millis(ms.max(1));
        }
        if let Some(ms) = p.deadline_per_mib_ms {
            limits.deadline_per_mib = Duration::from_millis(ms);
        }
        if let Some(mib) = p.memory_mib {
            limits.memory_bytes = mib.max(1) * 1024 * 1024;
        }
        let loaded = LoadedPlugin::load(engine, name, &bytes, config, limits, catalog.clone())
            .await
            .map_err(|error| PolicyError::Plugin {
                path: path.display().to_string(),
                error,
            })?;
        plugins.insert(name.clone(), Arc::new(loaded));
    }
    let mut chains = BTreeMap::new();
    for (server, steps) in &raw.servers {
        let mut chain = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            let plugin = plugins.get(&s.plugin).cloned().ok_or_else(|| {
                invalid(format!(
                    "servers.{server}[{i}]: no plugin named '{}'",
                    s.plugin
                ))
            })?;
            chain.push(Step {
                plugin,
                phase: s.phase,
                mode: s.mode,
                fail_open: s.on_error == OnError::Allow,
                tools: s.tools.clone(),
            });
        }
        chains.insert(server.clone(), chain);
    }
    let mut policy = Policy::new(hex::encode(Sha256::digest(text.as_bytes())), chains);
    policy.record_payloads = raw.audit.record_payloads.iter().cloned().collect();
    policy.record_received = raw.audit.record_received.iter().cloned().collect();
    policy.allow_case_colliding_keys = raw
        .messages
        .allow_case_colliding_keys
        .iter()
        .cloned()
        .collect();
    Ok(policy)
}

/// Resolves `p` against the directory of the file that names it (`file`): a
/// relative path in a policy or config file means the same wherever the
/// process was started.
pub fn relative_to(file: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_owned();
    }
    file.parent().map_or_else(|| p.to_owned(), |d| d.join(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn load(text: &str) -> Result<Policy, PolicyError> {
        let engine = PluginEngine::new(None).unwrap();
        load_text(text, Path::new("p.toml"), &engine, Arc::default()).await
    }

    #[tokio::test]
    async fn case_colliding_keys_are_allowed_only_for_the_servers_named() {
        let strict = load("").await.unwrap();
        assert!(!strict.parse_options("crm", 64).allow_case_colliding_keys);
        let p = load("[messages]\nallow_case_colliding_keys = [\"crm\"]\n")
            .await
            .unwrap();
        assert!(p.parse_options("crm", 64).allow_case_colliding_keys);
        assert!(!p.parse_options("billing", 64).allow_case_colliding_keys);
        assert_eq!(p.parse_options("crm", 7).max_depth, 7);
        let all = load("[messages]\nallow_case_colliding_keys = [\"*\"]\n")
            .await
            .unwrap();
        assert!(all.parse_options("billing", 64).allow_case_colliding_keys);
        // A misspelt setting is an error, not a silent default.
        for bad in [
            "[messages]\ncase_insensitive_keys = \"allow\"\n",
            "[messages]\nallow_case_colliding_keys = \"crm\"\n",
        ] {
            assert!(
                matches!(load(bad).await, Err(PolicyError::Invalid { .. })),
                "{bad}"
            );
        }
    }
}
