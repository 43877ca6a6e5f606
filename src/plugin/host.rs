//! Per-instance host state: the `host` imports, an empty WASI context, the
//! resource limiter (which notes a refused memory growth), and plugin output
//! routed to the log.

use std::sync::Arc;

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::portcullis::policy::host::Host;
use super::bindings::portcullis::policy::types::{self as w, LogLevel};
use crate::policy::catalog::Catalog;

/// Longest plugin log line kept; the rest is cut.
const MAX_LOG_LINE: usize = 2048;

/// What one plugin instance's store holds.
pub struct HostState {
    pub(crate) plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    catalog: Arc<Catalog>,
    /// Definitions `tool-definition` returned and the deadline has not yet
    /// been credited for.
    definitions_fetched: u32,
}

/// The store's resource limiter: wasmtime's [`StoreLimits`], which also
/// notes when it refused to grow a memory. A trap is then known to be the
/// memory cap by that note, not by the wording of wasmtime's error (which
/// a plugin's own trap message could imitate and a wasmtime upgrade could
/// change).
pub struct Limiter {
    limits: StoreLimits,
    memory_refused: bool,
}

impl Limiter {
    /// A limiter enforcing `limits` (built with `trap_on_grow_failure`, so
    /// a refused growth traps at once and ends the call).
    pub fn new(limits: StoreLimits) -> Limiter {
        Limiter {
            limits,
            memory_refused: false,
        }
    }

    /// True once a memory growth was refused: by the per-instance cap, by
    /// the engine's [`MAX_MEMORY_BYTES`](super::engine::MAX_MEMORY_BYTES),
    /// or by the memory's own declared maximum.
    pub fn memory_refused(&self) -> bool {
        self.memory_refused
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.memory_refused = true;
        }
        allowed
    }

    /// Growth the limiter allowed but the engine could not provide.
    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_refused = true;
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl HostState {
    /// State with no filesystem, network, environment, arguments or stdin;
    /// stdout and stderr go to the log.
    pub fn new(plugin: Arc<str>, limits: StoreLimits, catalog: Arc<Catalog>) -> HostState {
        let wasi = WasiCtx::builder()
            .stdout(LogOutput {
                plugin: plugin.clone(),
                stream: "stdout",
            })
            .stderr(LogOutput {
                plugin: plugin.clone(),
                stream: "stderr",
            })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        HostState {
            plugin,
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(limits),
            catalog,
            definitions_fetched: 0,
        }
    }

    /// Tool definitions handed to the plugin since the last time this was
    /// asked, which each earn the call more time (see
    /// `instance::MAX_DEFINITION_GRANTS`).
    pub fn take_definitions_fetched(&mut self) -> u32 {
        std::mem::take(&mut self.definitions_fetched)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl w::Host for HostState {}

impl Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        let message: String = message.chars().take(MAX_LOG_LINE).collect();
        let plugin = &*self.plugin;
        match level {
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn tool_definition(&mut self, server: String, tool: String) -> Option<String> {
        let definition = self.catalog.tool(&server, &tool);
        if definition.is_some() {
            self.definitions_fetched = self.definitions_fetched.saturating_add(1);
        }
        definition
    }

    fn tool_revision(&mut self, server: String, tool: String) -> Option<u64> {
        self.catalog.revision(&server, &tool)
    }

    fn now_unix_millis(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A plugin's stdout or stderr: each write goes to the log, tagged.
#[derive(Clone)]
struct LogOutput {
    plugin: Arc<str>,
    stream: &'static str,
}

impl IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

#[async_trait::async_trait]
impl Pollable for LogOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for LogOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let line: String = line.chars().take(MAX_LOG_LINE).collect();
            tracing::info!(plugin = &*self.plugin, stream = self.stream, "{line}");
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::StoreLimitsBuilder;

    use super::*;

    const MIB: usize = 1024 * 1024;

    fn limiter() -> Limiter {
        Limiter::new(
            StoreLimitsBuilder::new()
                .memory_size(4 * MIB)
                .trap_on_grow_failure(true)
                .build(),
        )
    }

    /// Whether `err` is wasmtime's refusal to grow `what` to `desired`.
    fn refused_growth(err: &wasmtime::Error, what: &str, desired: usize) -> bool {
        let text = err.to_string();
        text.contains(&format!("growing {what}")) && text.contains(&desired.to_string())
    }

    #[test]
    fn a_refused_memory_growth_is_noted() {
        let mut l = limiter();
        assert!(l.memory_growing(0, 4 * MIB, None).unwrap());
        assert!(!l.memory_refused());
        let err = l.memory_growing(4 * MIB, 4 * MIB + 1, None).unwrap_err();
        assert!(refused_growth(&err, "memory", 4 * MIB + 1), "{err}");
        assert!(l.memory_refused());
        // Past the memory's own maximum, under the cap.
        let mut l = limiter();
        let err = l.memory_growing(0, 2 * MIB, Some(MIB)).unwrap_err();
        assert!(refused_growth(&err, "memory", 2 * MIB), "{err}");
        assert!(l.memory_refused());
        // The engine could not provide what the limiter allowed.
        let mut l = limiter();
        let err = l
            .memory_grow_failed(wasmtime::format_err!("pool exhausted"))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("memory growth failure to be a trap"),
            "{err}"
        );
        assert!(l.memory_refused());
    }

    #[test]
    fn table_limits_are_not_memory() {
        let mut l = Limiter::new(
            StoreLimitsBuilder::new()
                .table_elements(10)
                .trap_on_grow_failure(true)
                .build(),
        );
        let err = l.table_growing(0, 11, None).unwrap_err();
        assert!(refused_growth(&err, "table", 11), "{err}");
        assert!(!l.memory_refused());
    }
}
