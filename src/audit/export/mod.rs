//! Ships the spool to an OpenTelemetry collector as log records, from the
//! spool files, so nothing is lost while the collector is away.
//!
//! The exporter reads durable records (never past the last fsync) in
//! order, sends them in batches over OTLP (gRPC or HTTP/protobuf), and only
//! when the collector acknowledges a batch advances its cursor, kept in
//! `exported.json` beside the segments (written to a temporary file,
//! fsynced, renamed). A failed batch is retried with jittered exponential
//! backoff until it goes through; a restart resumes after the cursor.
//! Delivery is at least once: a batch acknowledged by the collector but not
//! yet recorded in the cursor when the process dies is sent again, with the
//! same `portcullis.audit.stream` and `portcullis.audit.seq`, so receivers
//! can drop the duplicate.
//!
//! One log record per spool line:
//! - `event_name`: `portcullis.decision`, `portcullis.audit.start` or
//!   `portcullis.audit.gap`;
//! - body: the spool line's JSON, exactly as hashed, so the chain can be
//!   re-verified from the collector's copy with `portcullis.audit.hash`;
//! - attributes: `portcullis.audit.stream`, `.seq`, `.hash`, `.prev`, and
//!   for decisions the MCP ones (`mcp.method.name`, `gen_ai.tool.name`,
//!   `jsonrpc.request.id`, `mcp.session.id`, `mcp.protocol.version`) and
//!   `portcullis.*` (tunnel, server, direction, outcome, subject, policy);
//! - `trace_id`/`span_id` of the span that made the decision, when traced.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

mod record;
mod transport;

pub use record::{log_record, proto_resource};

use super::line::{GENESIS, SpoolLine};
use super::segment::SpoolReader;
use super::spool::Spool;
use crate::telemetry::Target;
use transport::Transport;

/// The exporter's cursor file.
pub const CURSOR_FILE: &str = "exported.json";
/// Records per OTLP request at most.
pub const BATCH_RECORDS: usize = 512;
/// First retry delay; doubles up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest wait between retries.
pub const RETRY_MAX: Duration = Duration::from_secs(10);

/// The last record the collector acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub seq: u64,
    pub hash: String,
}

impl Default for Cursor {
    fn default() -> Cursor {
        Cursor {
            seq: 0,
            hash: GENESIS.into(),
        }
    }
}

/// Reads the cursor of `dir` (none yet: before the first record).
pub fn load_cursor(dir: &Path) -> Cursor {
    std::fs::read_to_string(dir.join(CURSOR_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn save_cursor(dir: &Path, c: &Cursor) -> std::io::Result<()> {
    let tmp = dir.join(format!("{CURSOR_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(serde_json::to_string(c).unwrap_or_default().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(CURSOR_FILE))
}

/// A running exporter.
pub struct Exporter {
    pub task: tokio::task::JoinHandle<()>,
    /// The last sequence number the collector acknowledged (and the cursor
    /// file records).
    pub acked: tokio::sync::watch::Receiver<u64>,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The exporter's state: where it is in the spool and what it is sending.
struct Shipper {
    transport: Transport,
    dir: PathBuf,
    stream: String,
    resource: Resource,
    timeout: Duration,
    endpoint: String,
    cursor: Cursor,
    reader: SpoolReader,
    /// Read from the spool, not yet acknowledged.
    pending: Vec<SpoolLine>,
    /// The last acknowledged sequence number, published.
    acked: tokio::sync::watch::Sender<u64>,
}

impl Shipper {
    /// Reads the next batch, up to the durable record `upto`, when nothing
    /// is pending.
    fn refill(&mut self, upto: u64) {
        if !self.pending.is_empty() {
            return;
        }
        match self.reader.read(BATCH_RECORDS, upto) {
            Ok(lines) => self.pending = lines,
            Err(e) => tracing::error!(error = %e, "audit exporter cannot read the spool"),
        }
    }

    fn request(&self) -> ExportLogsServiceRequest {
        let now = now_ns();
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(self.resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "portcullis.audit".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    log_records: self
                        .pending
                        .iter()
                        .map(|l| log_record(&self.stream, l, now))
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// Sends what is pending until the collector acknowledges it, retrying
    /// with jittered exponential backoff; then advances the cursor.
    async fn ship(&mut self) {
        let m = crate::telemetry::metrics::get();
        let mut delay = RETRY_MIN;
        let mut failures = 0u64;
        loop {
            match self.transport.send(self.request(), self.timeout).await {
                Ok(rejected) => {
                    if rejected > 0 {
                        tracing::error!(
                            rejected,
                            "the OTLP collector rejected audit records; they stay in the spool"
                        );
                    }
                    m.audit_exported.add(self.pending.len() as u64, &[]);
                    if let Some(last) = self.pending.last() {
                        self.cursor = Cursor {
                            seq: last.seq,
                            hash: last.hash.clone(),
                        };
                        if let Err(e) = save_cursor(&self.dir, &self.cursor) {
                            tracing::error!(error = %e, "audit exporter cannot save its cursor; records may be sent again after a restart");
                        }
                        self.acked.send_replace(last.seq);
                    }
                    self.pending.clear();
                    if failures > 0 {
                        tracing::info!(
                            after_failures = failures,
                            seq = self.cursor.seq,
                            "audit export resumed"
                        );
                    }
                    return;
                }
                Err(e) => {
                    failures += 1;
                    m.audit_export_failures.add(1, &[]);
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(endpoint = self.endpoint, error = %e, failures, pending_from = self.pending.first().map(|l| l.seq), "audit export failed; retrying (records are safe in the spool)");
                    }
                    let jitter = rand::random_range(0..=delay.as_millis() as u64 / 2);
                    tokio::time::sleep(delay + Duration::from_millis(jitter)).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Ships every durable record as it comes, forever.
    async fn run(&mut self, durable: &mut tokio::sync::watch::Receiver<u64>) {
        loop {
            self.refill(*durable.borrow_and_update());
            if self.pending.is_empty() {
                tokio::select! {
                    _ = durable.changed() => {}
                    _ = tokio::time::sleep(crate::limits::AUDIT_EXPORT_IDLE_CHECK) => {}
                }
            } else {
                self.ship().await;
            }
        }
    }

    /// Ships what is durable now, then returns.
    async fn drain(&mut self, durable: &tokio::sync::watch::Receiver<u64>) {
        loop {
            self.refill(*durable.borrow());
            if self.pending.is_empty() {
                return;
            }
            self.ship().await;
        }
    }
}

impl Exporter {
    /// Starts shipping `spool` to `target` until `shutdown`, then makes one
    /// last attempt, for [`crate::limits::AUDIT_EXPORT_FINAL_FLUSH`] at most,
    /// to send what is durable. Stopping mid-send loses nothing: the cursor
    /// only moves on an acknowledgement.
    pub fn start(
        spool: &Arc<Spool>,
        target: &Target,
        resource: &opentelemetry_sdk::Resource,
        shutdown: CancellationToken,
    ) -> Result<Exporter> {
        let dir = spool.dir().to_owned();
        let cursor = load_cursor(&dir);
        let (acked_tx, acked) = tokio::sync::watch::channel(cursor.seq);
        let mut shipper = Shipper {
            acked: acked_tx,
            transport: Transport::new(target)?,
            reader: SpoolReader::new(&dir, cursor.seq),
            dir,
            stream: spool.stream_id().to_owned(),
            resource: proto_resource(resource),
            timeout: target.timeout,
            endpoint: target.endpoint.clone(),
            cursor,
            pending: Vec::new(),
        };
        let mut durable = spool.durable();
        let task = tokio::spawn(async move {
            tokio::select! {
                () = shipper.run(&mut durable) => {}
                () = shutdown.cancelled() => {}
            }
            let final_flush = shipper.drain(&durable);
            let _ =
                tokio::time::timeout(crate::limits::AUDIT_EXPORT_FINAL_FLUSH, final_flush).await;
        });
        Ok(Exporter { task, acked })
    }
}
