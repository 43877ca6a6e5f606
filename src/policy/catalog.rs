//! The gateway's catalog of each upstream's tools, learned from the
//! `tools/list` results it carries, for plugins to read.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The next revision handed out, shared by every catalog in the process so
/// that a revision names one definition text process-wide.
static NEXT_REVISION: AtomicU64 = AtomicU64::new(1);

/// One tool's definition: the JSON text of its `tools/list` entry and the
/// revision it was stored under.
#[derive(Debug)]
struct Definition {
    revision: u64,
    text: String,
}

/// Tools per server, as JSON text of each `tools/list` entry.
#[derive(Debug, Default)]
pub struct Catalog {
    tools: RwLock<HashMap<String, HashMap<String, Definition>>>,
}

impl Catalog {
    /// Records the tools of a `tools/list` result (the whole response
    /// message). A first page replaces what was known; later pages (with a
    /// cursor in the request) would add, which callers signal with `append`.
    /// A tool listed again with the same text keeps its revision; a changed
    /// or new one gets a fresh revision.
    pub fn learn(&self, server: &str, response: &[u8], append: bool) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(response) else {
            return;
        };
        let Some(tools) = v.pointer("/result/tools").and_then(|t| t.as_array()) else {
            return;
        };
        let mut learned = HashMap::new();
        for t in tools {
            if let Some(name) = t.get("name").and_then(|n| n.as_str()) {
                learned.insert(name.to_owned(), t.to_string());
            }
        }
        let mut map = self.tools.write().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(server.to_owned()).or_default();
        let mut previous = if append {
            HashMap::new()
        } else {
            std::mem::take(entry)
        };
        for (name, text) in learned {
            let known = entry.remove(&name).or_else(|| previous.remove(&name));
            let revision = match known {
                Some(d) if d.text == text => d.revision,
                _ => NEXT_REVISION.fetch_add(1, Ordering::Relaxed),
            };
            entry.insert(name, Definition { revision, text });
        }
    }

    /// A tool's definition, when known.
    pub fn tool(&self, server: &str, tool: &str) -> Option<String> {
        self.tools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(server)?
            .get(tool)
            .map(|d| d.text.clone())
    }

    /// The revision of a tool's definition, when known: it changes exactly
    /// when the definition's text does.
    pub fn revision(&self, server: &str, tool: &str) -> Option<u64> {
        self.tools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(server)?
            .get(tool)
            .map(|d| d.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(tools: serde_json::Value) -> Vec<u8> {
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn revisions_change_exactly_when_definitions_do() {
        let catalog = Catalog::default();
        let a = serde_json::json!({"name": "a", "inputSchema": {"type": "object"}});
        let b = serde_json::json!({"name": "b", "inputSchema": {"type": "object"}});
        catalog.learn("s", &listing(serde_json::json!([a, b])), false);
        let (ra, rb) = (catalog.revision("s", "a"), catalog.revision("s", "b"));
        assert!(ra.is_some() && rb.is_some() && ra != rb);
        // Listed again unchanged: same revisions.
        catalog.learn("s", &listing(serde_json::json!([a, b])), false);
        assert_eq!(catalog.revision("s", "a"), ra);
        assert_eq!(catalog.revision("s", "b"), rb);
        // `a` changes: a new revision for it only; `b` is no longer listed.
        let a2 = serde_json::json!({"name": "a", "description": "new", "inputSchema": {"type": "object"}});
        catalog.learn("s", &listing(serde_json::json!([a2])), false);
        let ra2 = catalog.revision("s", "a");
        assert!(ra2.is_some() && ra2 != ra && ra2 != rb);
        assert_eq!(catalog.tool("s", "a"), Some(a2.to_string()));
        assert_eq!(catalog.revision("s", "b"), None);
        // Back to the first text: still a new revision (never reused).
        catalog.learn("s", &listing(serde_json::json!([a])), false);
        let ra3 = catalog.revision("s", "a");
        assert!(ra3 != ra && ra3 != ra2);
        // A later page adds without touching what is known.
        catalog.learn("s", &listing(serde_json::json!([b])), true);
        assert_eq!(catalog.revision("s", "a"), ra3);
        assert!(catalog.revision("s", "b").is_some());
        // Other servers are separate.
        assert_eq!(catalog.revision("t", "a"), None);
    }

    /// The largest listings a message can carry: 100,000 tools, and a tool
    /// whose name is a mebibyte. Learning is one parse and one map insert
    /// per tool, so every tool is kept, once, and relisting changes nothing.
    #[test]
    fn a_huge_listing_is_learned_whole() {
        let catalog = Catalog::default();
        let long = "n".repeat(1 << 20);
        let mut tools: Vec<serde_json::Value> = (0..100_000)
            .map(
                |i| serde_json::json!({"name": format!("t{i}"), "inputSchema": {"type": "object"}}),
            )
            .collect();
        tools.push(serde_json::json!({"name": long}));
        let listing = listing(serde_json::Value::Array(tools));
        catalog.learn("s", &listing, false);
        let known = catalog.tools.read().unwrap().get("s").map(HashMap::len);
        assert_eq!(known, Some(100_001));
        let (first, last, huge) = (
            catalog.revision("s", "t0"),
            catalog.revision("s", "t99999"),
            catalog.revision("s", &long),
        );
        assert!(first.is_some() && last.is_some() && huge.is_some());
        catalog.learn("s", &listing, false);
        assert_eq!(catalog.revision("s", "t0"), first);
        assert_eq!(catalog.revision("s", "t99999"), last);
        assert_eq!(catalog.revision("s", &long), huge);
    }
}
