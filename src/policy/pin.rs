//! `portcullis policy pin`'s policy side: the digest of a tool definition
//! and writing digests into a policy's `schema-guard` pins, so a later
//! change to any tool (a "rug pull") is blocked until re-approved. Reading
//! the definitions from a live upstream is the command's own
//! (`src/cli/pin.rs`).
//!
//! The digest is `portcullis_canon::digest` (`plugins/canon`), the code
//! `schema-guard` checks pins with: SHA-256 over the canonical JSON (keys
//! sorted by UTF-8 bytes at every depth, no whitespace, serde_json's
//! escaping and number forms) of the definition's `name`, `description`,
//! `inputSchema` and `outputSchema`, written `sha256:<hex>`.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};

pub use portcullis_canon::digest::tool_digest;

/// Writes `pins` into the policy text: `[plugins.NAME.config.pins]` of the
/// plugin `plugin`, or of the one plugin whose source is
/// `builtin:schema-guard`. Comments and layout elsewhere are kept.
pub fn write_pins(
    policy: &str,
    plugin: Option<&str>,
    pins: &BTreeMap<String, String>,
) -> Result<String> {
    let mut doc: toml_edit::DocumentMut = policy.parse().context("the policy is not valid TOML")?;
    let plugins = doc
        .get("plugins")
        .and_then(|p| p.as_table_like())
        .context("the policy has no [plugins]")?;
    let name = match plugin {
        Some(n) => {
            if plugins.get(n).is_none() {
                bail!("the policy has no plugin named '{n}'");
            }
            n.to_owned()
        }
        None => {
            let guards: Vec<String> = plugins
                .iter()
                .filter(|(_, p)| {
                    p.get("source").and_then(|s| s.as_str()) == Some("builtin:schema-guard")
                })
                .map(|(k, _)| k.to_owned())
                .collect();
            match guards.as_slice() {
                [one] => one.clone(),
                [] => bail!(
                    "no plugin with source = \"builtin:schema-guard\" in the policy; add one or name it with --plugin"
                ),
                _ => bail!(
                    "several schema-guard plugins ({}); choose one with --plugin",
                    guards.join(", ")
                ),
            }
        }
    };
    let entry = doc
        .get_mut("plugins")
        .and_then(|p| p.as_table_like_mut())
        .and_then(|p| p.get_mut(&name))
        .and_then(|e| e.as_table_like_mut())
        .context("plugin entry is not a table")?;
    if entry.get("config").is_none() {
        entry.insert("config", toml_edit::Item::Table(toml_edit::Table::new()));
    }
    let config = entry
        .get_mut("config")
        .and_then(|c| c.as_table_like_mut())
        .context("config is not a table")?;
    let mut table = toml_edit::Table::new();
    for (tool, digest) in pins {
        table.insert(tool, toml_edit::value(digest.as_str()));
    }
    config.insert("pins", toml_edit::Item::Table(table));
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate's reference vector, with the serde_json features this
    /// crate enables (`float_roundtrip`, `raw_value`): the digest
    /// `policy pin` writes is the one `schema-guard` computes.
    #[test]
    fn digest_matches_the_schema_guard_vector() {
        use portcullis_canon::digest::{canonical_pinned, vector};
        let def: serde_json::Value = serde_json::from_str(vector::DEFINITION).unwrap();
        assert_eq!(canonical_pinned(&def), vector::CANONICAL);
        assert_eq!(tool_digest(&def), vector::DIGEST);
    }

    #[test]
    fn pins_are_written_into_the_schema_guard_entry() {
        let policy = "# keep me\n[plugins.guard]\nsource = \"builtin:schema-guard\"\n\n[[servers.crm]]\nplugin = \"guard\"\n";
        let pins = BTreeMap::from([("a".to_owned(), "sha256:00".to_owned())]);
        let out = write_pins(policy, None, &pins).unwrap();
        assert!(out.contains("# keep me"));
        let v: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(
            v["plugins"]["guard"]["config"]["pins"]["a"].as_str(),
            Some("sha256:00")
        );
        let err = write_pins(policy, Some("nope"), &pins).unwrap_err();
        assert_eq!(err.to_string(), "the policy has no plugin named 'nope'");
    }
}
