//! The configuration as written in the policy file (`init` receives it as
//! JSON text), checked into a [`Config`].

use std::collections::HashMap;

use portcullis_plugin_sdk::Value;
use serde::Deserialize;

use crate::digest;

/// What to do with a tool that has no pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unpinned {
    /// Refuse calls to it and hide it from `tools/list`.
    Deny,
    /// Let it through (its schemas are still enforced).
    Allow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    pins: HashMap<String, String>,
    #[serde(default)]
    unpinned: Option<Unpinned>,
    #[serde(default = "yes")]
    require_structured: bool,
}

fn yes() -> bool {
    true
}

/// The checked configuration.
#[derive(Debug)]
pub struct Config {
    /// Tool name → pinned digest (`sha256:<hex>`).
    pub pins: HashMap<String, String>,
    /// Policy for tools without a pin: `Deny` by default when `pins` is not
    /// empty, `Allow` when it is.
    pub unpinned: Unpinned,
    /// Refuse a result without `structuredContent` from a tool that declares
    /// an `outputSchema`.
    pub require_structured: bool,
}

/// How a tool's current definition compares with its pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin<'a> {
    /// Pinning is off (no pins, unpinned tools allowed).
    Off,
    /// Pinned, and the definition still has the pinned digest.
    Match,
    /// Pinned, and the definition changed: the pinned digest.
    Changed(&'a str),
    /// Not pinned, and `unpinned = "allow"`.
    UnpinnedAllowed,
    /// Not pinned, and `unpinned = "deny"`.
    UnpinnedDenied,
}

impl Pin<'_> {
    /// True when the tool must be refused (and hidden).
    pub fn refuses(self) -> bool {
        matches!(self, Pin::Changed(_) | Pin::UnpinnedDenied)
    }

    /// The audit label (`pin = ...`), when pinning is on.
    pub fn label(self) -> Option<&'static str> {
        match self {
            Pin::Off => None,
            Pin::Match => Some("match"),
            Pin::Changed(_) => Some("changed"),
            Pin::UnpinnedAllowed | Pin::UnpinnedDenied => Some("unpinned"),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pins: HashMap::new(),
            unpinned: Unpinned::Allow,
            require_structured: true,
        }
    }
}

impl Config {
    /// Parses and checks the configuration text given to `init`.
    pub fn parse(text: &str) -> Result<Config, String> {
        let invalid = |e: serde_json::Error| format!("schema-guard: invalid config: {e}");
        // An object, not anything serde could read into the struct (it
        // would take an array's elements as fields by position).
        let value: Value = serde_json::from_str(text).map_err(invalid)?;
        if !value.is_object() {
            return Err(format!(
                "schema-guard: invalid config: expected a table (JSON object), got {value}"
            ));
        }
        let raw = RawConfig::deserialize(value).map_err(invalid)?;
        // Checked in name order, so the first error reported is stable.
        let mut pins: Vec<(&String, &String)> = raw.pins.iter().collect();
        pins.sort();
        for (name, pin) in pins {
            if name.is_empty() {
                return Err("schema-guard: invalid config: pins: empty tool name".into());
            }
            if !digest::is_well_formed(pin) {
                return Err(format!(
                    "schema-guard: invalid config: pins.{name:?} = {pin:?}: expected \"sha256:\" \
                     followed by 64 lowercase hex digits (see `portcullis policy pin`)"
                ));
            }
        }
        let unpinned = raw.unpinned.unwrap_or(if raw.pins.is_empty() {
            Unpinned::Allow
        } else {
            Unpinned::Deny
        });
        Ok(Config {
            pins: raw.pins,
            unpinned,
            require_structured: raw.require_structured,
        })
    }

    /// True when tools are checked against pins (some pins, or
    /// `unpinned = "deny"`).
    pub fn pinning(&self) -> bool {
        !self.pins.is_empty() || self.unpinned == Unpinned::Deny
    }

    /// Compares `tool`'s current digest with its pin.
    pub fn pin(&self, tool: &str, digest: &str) -> Pin<'_> {
        if !self.pinning() {
            return Pin::Off;
        }
        match self.pins.get(tool) {
            Some(pinned) if pinned == digest => Pin::Match,
            Some(pinned) => Pin::Changed(pinned),
            None if self.unpinned == Unpinned::Allow => Pin::UnpinnedAllowed,
            None => Pin::UnpinnedDenied,
        }
    }
}
