//! Reads every tool definition a live upstream serves, for `portcullis
//! policy pin`: one MCP session over Streamable HTTP or a stdio child,
//! `tools/list` followed through its pages.

use anyhow::{Context as _, Result, bail};
use portcullis::config::upstream::UpstreamSpec;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Most `tools/list` pages read before giving up (a server that never
/// stops paging).
pub const MAX_PAGES: usize = 1000;
/// Longest wait for a stdio server's answer.
pub const STDIO_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An MCP session with the server being pinned.
enum Session {
    Http(portcullis::client::McpClient),
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
                let mut c = portcullis::client::McpClient::new(&url.to_string(), None);
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
                    json!({"protocolVersion": portcullis::client::CLIENT_PROTOCOL_VERSION,
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
