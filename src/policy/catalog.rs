//! The gateway's catalog of each upstream's tools, learned from the
//! `tools/list` results it carries (every page of a paginated listing),
//! for plugins to read.

use std::collections::{HashMap, HashSet};
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

/// Which page of a listing a `tools/list` result is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The answer to a request without a cursor: a listing starts.
    First,
    /// The answer to a request with a cursor: a listing goes on.
    Later,
}

/// What is known of one server's tools.
#[derive(Debug, Default)]
struct ServerTools {
    tools: HashMap<String, Definition>,
    /// The names listed so far by the listing under way (from a first page
    /// on); when it ends (a page with no `nextCursor`), tools it did not
    /// list are forgotten. `None`: no listing seen from its start.
    walk: Option<HashSet<String>>,
    /// Whether a whole listing was learned, and the server has not said
    /// since that its tools changed (`notifications/tools/list_changed`).
    complete: bool,
}

/// Tools per server, as JSON text of each `tools/list` entry.
#[derive(Debug, Default)]
pub struct Catalog {
    tools: RwLock<HashMap<String, ServerTools>>,
}

impl Catalog {
    /// Records the tools of a `tools/list` result (the whole response
    /// message), `page` of a listing.
    ///
    /// Every tool listed is stored at once: a tool listed again with the
    /// same text keeps its revision, a changed or new one gets a fresh
    /// revision. Tools are forgotten only when a whole listing, walked from
    /// its first page to one without `nextCursor`, did not list them: a
    /// later page adds to the earlier ones and never replaces them, and a
    /// first page that has more to come removes nothing (an agent that
    /// reads only the first page does not hide the rest from the policy).
    pub fn learn(&self, server: &str, response: &[u8], page: Page) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(response) else {
            return;
        };
        let Some(result) = v.get("result") else {
            return;
        };
        let Some(listed) = result.get("tools").and_then(|t| t.as_array()) else {
            return;
        };
        let more = result.get("nextCursor").is_some_and(|c| !c.is_null());
        let mut learned = HashMap::new();
        for t in listed {
            if let Some(name) = t.get("name").and_then(|n| n.as_str()) {
                learned.insert(name.to_owned(), t.to_string());
            }
        }
        let mut map = self.tools.write().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(server.to_owned()).or_default();
        match (page, &mut entry.walk) {
            (Page::First, walk) => *walk = Some(learned.keys().cloned().collect()),
            (Page::Later, Some(walk)) => walk.extend(learned.keys().cloned()),
            // A later page of a listing whose start this gateway did not
            // see: what it lists is stored, nothing is forgotten.
            (Page::Later, None) => {}
        }
        for (name, text) in learned {
            let revision = match entry.tools.get(&name) {
                Some(d) if d.text == text => d.revision,
                _ => NEXT_REVISION.fetch_add(1, Ordering::Relaxed),
            };
            entry.tools.insert(name, Definition { revision, text });
        }
        if !more && let Some(walk) = entry.walk.take() {
            entry.tools.retain(|name, _| walk.contains(name));
            entry.complete = true;
        }
    }

    /// Learns a whole listing, each page's response message in order (the
    /// gateway's own walk, [`crate::gateway`]'s catalog on demand).
    pub fn learn_listing(&self, server: &str, pages: &[bytes::Bytes]) {
        for (n, page) in pages.iter().enumerate() {
            let page_of = if n == 0 { Page::First } else { Page::Later };
            self.learn(server, page, page_of);
        }
    }

    /// True when a whole listing of `server`'s tools was learned and the
    /// server has not announced a change since.
    pub fn is_complete(&self, server: &str) -> bool {
        self.tools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(server)
            .is_some_and(|s| s.complete)
    }

    /// The server announced that its tools changed: what is known stays
    /// (a changed tool keeps being checked against its last definition,
    /// never passed unchecked) until a new whole listing replaces it.
    pub fn changed(&self, server: &str) {
        if let Some(s) = self
            .tools
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(server)
        {
            s.complete = false;
        }
    }

    /// A tool's definition, when known.
    pub fn tool(&self, server: &str, tool: &str) -> Option<String> {
        self.tools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(server)?
            .tools
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
            .tools
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
        catalog.learn("s", &listing(serde_json::json!([a, b])), Page::First);
        let (ra, rb) = (catalog.revision("s", "a"), catalog.revision("s", "b"));
        assert!(ra.is_some() && rb.is_some() && ra != rb);
        // Listed again unchanged: same revisions.
        catalog.learn("s", &listing(serde_json::json!([a, b])), Page::First);
        assert_eq!(catalog.revision("s", "a"), ra);
        assert_eq!(catalog.revision("s", "b"), rb);
        // `a` changes: a new revision for it only; `b` is no longer listed.
        let a2 = serde_json::json!({"name": "a", "description": "new", "inputSchema": {"type": "object"}});
        catalog.learn("s", &listing(serde_json::json!([a2])), Page::First);
        let ra2 = catalog.revision("s", "a");
        assert!(ra2.is_some() && ra2 != ra && ra2 != rb);
        assert_eq!(catalog.tool("s", "a"), Some(a2.to_string()));
        assert_eq!(catalog.revision("s", "b"), None);
        // Back to the first text: still a new revision (never reused).
        catalog.learn("s", &listing(serde_json::json!([a])), Page::First);
        let ra3 = catalog.revision("s", "a");
        assert!(ra3 != ra && ra3 != ra2);
        // A later page adds without touching what is known.
        catalog.learn("s", &listing(serde_json::json!([b])), Page::Later);
        assert_eq!(catalog.revision("s", "a"), ra3);
        assert!(catalog.revision("s", "b").is_some());
        // Other servers are separate.
        assert_eq!(catalog.revision("t", "a"), None);
    }

    fn page(tools: serde_json::Value, next: Option<&str>) -> Vec<u8> {
        let mut result = serde_json::json!({"tools": tools});
        if let Some(n) = next {
            result["nextCursor"] = n.into();
        }
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": result})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_paginated_listing_is_learned_whole_and_forgets_only_when_complete() {
        let catalog = Catalog::default();
        let tool = |n: &str| serde_json::json!({"name": n, "inputSchema": {"type": "object"}});
        let known = |c: &Catalog| {
            let mut names: Vec<String> = ["a", "b", "c", "d"]
                .into_iter()
                .filter(|n| c.tool("s", n).is_some())
                .map(str::to_owned)
                .collect();
            names.sort();
            names
        };
        // Two pages: the second adds to the first.
        catalog.learn(
            "s",
            &page(serde_json::json!([tool("a"), tool("b")]), Some("p2")),
            Page::First,
        );
        catalog.learn(
            "s",
            &page(serde_json::json!([tool("c")]), None),
            Page::Later,
        );
        assert_eq!(known(&catalog), ["a", "b", "c"]);
        // An agent that reads only a first page with more to come forgets
        // nothing (`c` is on the page it did not read).
        catalog.learn(
            "s",
            &page(serde_json::json!([tool("a")]), Some("p2")),
            Page::First,
        );
        assert_eq!(known(&catalog), ["a", "b", "c"]);
        // A complete walk that no longer lists `b` forgets it, once done.
        catalog.learn(
            "s",
            &page(serde_json::json!([tool("a")]), Some("p2")),
            Page::First,
        );
        catalog.learn(
            "s",
            &page(serde_json::json!([tool("d")]), Some("p3")),
            Page::Later,
        );
        assert_eq!(known(&catalog), ["a", "b", "c", "d"]);
        catalog.learn(
            "s",
            &page(serde_json::json!([tool("c")]), None),
            Page::Later,
        );
        assert_eq!(known(&catalog), ["a", "c", "d"]);
        // A later page with no start seen (e.g. after a restart) adds only.
        let fresh = Catalog::default();
        fresh.learn(
            "s",
            &page(serde_json::json!([tool("d")]), None),
            Page::Later,
        );
        assert_eq!(known(&fresh), ["d"]);
        // A single-page listing is a complete walk.
        catalog.learn(
            "s",
            &page(serde_json::json!([tool("b")]), None),
            Page::First,
        );
        assert_eq!(known(&catalog), ["b"]);
    }

    #[test]
    fn a_listing_is_complete_only_when_walked_whole_until_the_server_changes_it() {
        let catalog = Catalog::default();
        let tool = |n: &str| serde_json::json!({"name": n});
        assert!(!catalog.is_complete("s"));
        // A first page with more to come is not a whole listing.
        catalog.learn(
            "s",
            &page(serde_json::json!([tool("a")]), Some("p2")),
            Page::First,
        );
        assert!(!catalog.is_complete("s"));
        // A later page whose start this gateway did not see is not either.
        let fresh = Catalog::default();
        fresh.learn(
            "s",
            &page(serde_json::json!([tool("b")]), None),
            Page::Later,
        );
        assert!(!fresh.is_complete("s"));
        // The gateway's own walk, both pages in order.
        let pages = [
            bytes::Bytes::from(page(serde_json::json!([tool("a")]), Some("p2"))),
            bytes::Bytes::from(page(serde_json::json!([tool("b")]), None)),
        ];
        catalog.learn_listing("s", &pages);
        assert!(catalog.is_complete("s"));
        assert!(catalog.tool("s", "a").is_some() && catalog.tool("s", "b").is_some());
        // `list_changed`: incomplete again, and nothing is forgotten.
        catalog.changed("s");
        assert!(!catalog.is_complete("s"));
        assert!(catalog.tool("s", "a").is_some() && catalog.tool("s", "b").is_some());
        assert!(!catalog.is_complete("t"));
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
        catalog.learn("s", &listing, Page::First);
        let known = catalog
            .tools
            .read()
            .unwrap()
            .get("s")
            .map(|s| s.tools.len());
        assert_eq!(known, Some(100_001));
        let (first, last, huge) = (
            catalog.revision("s", "t0"),
            catalog.revision("s", "t99999"),
            catalog.revision("s", &long),
        );
        assert!(first.is_some() && last.is_some() && huge.is_some());
        catalog.learn("s", &listing, Page::First);
        assert_eq!(catalog.revision("s", "t0"), first);
        assert_eq!(catalog.revision("s", "t99999"), last);
        assert_eq!(catalog.revision("s", &long), huge);
    }
}
