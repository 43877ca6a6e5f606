//! The plugin host alone: one no-op plugin call and a chain of three on a
//! 1 KiB message; and the three-plugin chain policy the path table's
//! chained stack runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portcullis::mcp::{Direction, Kind, MessageContext};
use portcullis::plugin::PluginEngine;
use serde_json::json;

use super::paths::ARG_BYTES;
use super::plugins::{load_noop, noop_bytes};
use super::stats::{WARMUP, percentile};

/// A policy with three no-op plugins in one chain, loaded from
/// `noop.wasm` beside it.
const NOOP_CHAIN: &str = r#"
[plugins.noop1]
source = "noop.wasm"
[plugins.noop2]
source = "noop.wasm"
[plugins.noop3]
source = "noop.wasm"
[[servers."*"]]
plugin = "noop1"
[[servers."*"]]
plugin = "noop2"
[[servers."*"]]
plugin = "noop3"
"#;

/// Writes [`NOOP_CHAIN`] and the no-op plugin into `dir`; returns the
/// policy's path.
pub fn write_noop_chain(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("noop.wasm"), noop_bytes()?)?;
    let path = dir.join("noop3.toml");
    std::fs::write(&path, NOOP_CHAIN)?;
    Ok(path)
}

/// p50 host-side wall time of plugin calls on a 1 KiB message.
#[derive(Debug, Clone, Copy)]
pub struct HostCosts {
    /// One no-op plugin call.
    pub one: Duration,
    /// The three-plugin no-op chain.
    pub three: Duration,
}

/// Measures [`HostCosts`] over `calls` calls each (after warm-up).
pub async fn measure(calls: usize) -> anyhow::Result<HostCosts> {
    let engine = PluginEngine::new(None)?;
    let noop = load_noop(&engine).await?;
    let message = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "search_tickets", "arguments": {"query": "x".repeat(ARG_BYTES - 90)}}})
    .to_string();
    let ctx = MessageContext {
        direction: Direction::ToServer,
        tunnel: "bench".into(),
        server: "demo".into(),
        kind: Kind::Request,
        method: Some("tools/call".into()),
        target: Some("search_tickets".into()),
        related_tool: None,
        request_id: Some("1".into()),
        session_id: None,
        protocol_version: None,
        principal: portcullis::principal::Principal::anonymous(),
    };
    let mut one = Vec::with_capacity(calls);
    for i in 0..calls + WARMUP {
        let t = Instant::now();
        noop.call(&ctx, &message).await?;
        if i >= WARMUP {
            one.push(t.elapsed());
        }
    }
    one.sort();
    let dir = std::env::temp_dir().join(format!(
        "portcullis-bench-{}",
        portcullis::secret::random_id()
    ));
    let path = write_noop_chain(&dir)?;
    let policy = portcullis::policy::load(&path, &engine, Default::default()).await?;
    let _ = std::fs::remove_dir_all(&dir);
    let raw = bytes::Bytes::from(message);
    let mut three = Vec::with_capacity(calls);
    for i in 0..calls + WARMUP {
        let t = Instant::now();
        let _ = policy
            .apply(&ctx, raw.clone(), portcullis::limits::MAX_JSON_DEPTH)
            .await;
        if i >= WARMUP {
            three.push(t.elapsed());
        }
    }
    three.sort();
    Ok(HostCosts {
        one: percentile(&one, 0.5),
        three: percentile(&three, 0.5),
    })
}
