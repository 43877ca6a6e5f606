//! The gateway's catalog of each upstream's tools, learned from the
//! `tools/list` results it carries, for plugins to read.

use std::collections::HashMap;
use std::sync::RwLock;

/// Tools per server, as JSON text of each `tools/list` entry.
#[derive(Debug, Default)]
pub struct Catalog {
    tools: RwLock<HashMap<String, HashMap<String, String>>>,
}

impl Catalog {
    /// Records the tools of a `tools/list` result (the whole response
    /// message). A first page replaces what was known; later pages (with a
    /// cursor in the request) would add, which callers signal with `append`.
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
        if !append {
            entry.clear();
        }
        entry.extend(learned);
    }

    /// A tool's definition, when known.
    pub fn tool(&self, server: &str, tool: &str) -> Option<String> {
        self.tools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(server)?
            .get(tool)
            .cloned()
    }
}
