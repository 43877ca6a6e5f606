//! Per-instance host state: the `host` imports, an empty WASI context, the
//! memory limiter, and plugin output routed to the log.

use std::sync::Arc;

use bytes::Bytes;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
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
    pub(crate) limits: StoreLimits,
    catalog: Arc<Catalog>,
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
            limits,
            catalog,
        }
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
        self.catalog.tool(&server, &tool)
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
