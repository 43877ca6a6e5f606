//! `portcullis policy pin`: reads the tool definitions a live upstream
//! serves and writes their digests into a policy's `schema-guard` pins, so
//! a later change to any tool (a "rug pull") is blocked until re-approved.
//!
//! The digest is `portcullis_canon::digest` (`plugins/canon`), the code
//! `schema-guard` checks pins with: SHA-256 over the canonical JSON (keys
//! sorted by UTF-8 bytes at every depth, no whitespace, serde_json's
//! escaping and number forms) of the definition's `name`, `description`,
//! `inputSchema` and `outputSchema`, written `sha256:<hex>`.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::config::gateway::UpstreamSpec;

pub use portcullis_canon::digest::tool_digest;

/// Most `tools/list` pages read before giving up (a server that never
/// stops paging).
pub const MAX_PAGES: usize = 1000;
/// Longest wait for a stdio server's answer.
pub const STDIO_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An MCP session with the server being pinned.
enum Session {
    Http(crate::client::McpClient),
    Stdio {
        // Held so the server lives as long as the session (killed on drop).
        _child: tokio::process::Child,
        stdin: tokio::process::ChildStdin,
        lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
        next_id: u64,
    },
}

impl Session {
    /// Connects and initializes.
    async fn open(spec: &UpstreamSpec) -> Result<Session> {
        match spec {
            UpstreamSpec::Http { url, .. } => {
                if url.scheme_str() != Some("http") {
                    bail!("policy pin reaches plain http:// or stdio: upstreams; got {url}");
                }
                let mut c = crate::client::McpClient::new(&url.to_string(), None);
                c.initialize()
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot initialize a session with {url}: {e}"))?;
                Ok(Session::Http(c))
            }
            UpstreamSpec::Stdio(cmd) => {
                let mut child = tokio::process::Command::new(&cmd.program)
                    .args(&cmd.args)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::inherit())
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| format!("cannot start {}", cmd.program))?;
                let stdin = child.stdin.take().context("stdin")?;
                let lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
                let mut s = Session::Stdio {
                    _child: child,
                    stdin,
                    lines,
                    next_id: 0,
                };
                s.request(
                    "initialize",
                    json!({"protocolVersion": crate::client::CLIENT_PROTOCOL_VERSION,
                           "capabilities": {}, "clientInfo": {"name": "portcullis-pin", "version": "0"}}),
                )
                .await?;
                s.notify("notifications/initialized").await?;
                Ok(s)
            }
        }
    }

    /// Sends a request and returns the response message.
    async fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        match self {
            Session::Http(c) => {
                let reply = c
                    .request(method, params)
                    .await
                    .map_err(|e| anyhow::anyhow!("{method}: {e}"))?;
                reply
                    .last()
                    .cloned()
                    .with_context(|| format!("{method}: empty reply"))
            }
            Session::Stdio {
                stdin,
                lines,
                next_id,
                ..
            } => {
                let id = *next_id;
                *next_id += 1;
                let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
                stdin.write_all(format!("{msg}\n").as_bytes()).await?;
                stdin.flush().await?;
                let read = async {
                    while let Some(line) = lines.next_line().await? {
                        // Skip notifications and log lines the server sends.
                        let Ok(v) = serde_json::from_str::<Value>(&line) else {
                            continue;
                        };
                        if v.get("id") == Some(&json!(id)) {
                            return Ok(v);
                        }
                    }
                    bail!("the server exited before answering {method}")
                };
                tokio::time::timeout(STDIO_ANSWER_TIMEOUT, read)
                    .await
                    .with_context(|| {
                        format!(
                            "the server did not answer {method} within {STDIO_ANSWER_TIMEOUT:?}"
                        )
                    })?
            }
        }
    }

    /// Sends a notification (stdio; over HTTP `initialize` sent it).
    async fn notify(&mut self, method: &str) -> Result<()> {
        if let Session::Stdio { stdin, .. } = self {
            let msg = json!({"jsonrpc": "2.0", "method": method});
            stdin.write_all(format!("{msg}\n").as_bytes()).await?;
            stdin.flush().await?;
        }
        Ok(())
    }
}

/// Every tool the upstream lists (following `nextCursor`).
pub async fn list_tools(spec: &UpstreamSpec) -> Result<Vec<Value>> {
    let mut session = Session::open(spec).await?;
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let params = match &cursor {
            Some(c) => json!({ "cursor": c }),
            None => json!({}),
        };
        let msg = session.request("tools/list", params).await?;
        cursor = page(&msg, &mut tools)?;
        if cursor.is_none() {
            return Ok(tools);
        }
    }
    bail!("tools/list: more than {MAX_PAGES} pages")
}

fn page(msg: &Value, tools: &mut Vec<Value>) -> Result<Option<String>> {
    if let Some(e) = msg.get("error") {
        bail!("tools/list failed: {e}");
    }
    let result = msg.get("result").context("tools/list: no result")?;
    let list = result
        .get("tools")
        .and_then(Value::as_array)
        .context("tools/list: no tools array")?;
    tools.extend(list.iter().cloned());
    Ok(result
        .get("nextCursor")
        .and_then(Value::as_str)
        .map(str::to_owned))
}

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
        let def: Value = serde_json::from_str(vector::DEFINITION).unwrap();
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
