//! The durable spool: JSON lines in segment files, each line hash-chained
//! to the one before, written by one task with group fsync.
//!
//! A line ([`super::line`]) is `JSON<TAB>HASH`. The JSON holds `seq`, `type` (`start`,
//! `decision`, `gap`), `prev` (the previous line's hash) and `body`; `HASH`
//! is SHA-256 — or HMAC-SHA-256 when a key is configured — over `prev` and
//! the exact JSON bytes. Editing, deleting, reordering or truncating lines
//! breaks the chain, and `audit verify` says where.
//!
//! Modes: `strict` makes a call fail when its record cannot be made durable
//! (the caller waits for the fsync); `best_effort` queues the record and
//! counts what it could not write, then records the loss as a `gap` line.
//! The writer thread is `audit/writer.rs`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::writer::{Append, Writer, write_loop};

/// A segment is closed and a new one started past this size.
pub const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Default disk quota for the spool directory.
pub const DEFAULT_QUOTA_BYTES: u64 = 1024 * 1024 * 1024;
/// Records queued for the writer before best-effort appends count as lost.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Records written per fsync at most.
pub const BATCH_MAX: usize = 4096;
/// File holding the last durable sequence number and hash, for truncation
/// checks.
pub const ANCHOR_FILE: &str = "anchor.json";
/// File naming this spool's stream (random, made once): exported records
/// carry it with their sequence number, so a collector can tell spools
/// apart and drop re-sent duplicates.
pub const STREAM_ID_FILE: &str = "stream-id";
/// File holding the count of records lost and not yet recorded by a `gap`
/// line (fixed width, rewritten in place, so it needs no new space on a
/// full disk): losses counted before a restart are recorded after it.
pub const LOST_FILE: &str = "lost.json";
/// File naming the last record pruned after export (its seq and hash), so
/// that `audit verify` starts the chain there.
pub const PRUNED_FILE: &str = "pruned.json";

/// What happens when a record cannot be persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuditMode {
    /// The call fails (closed) unless its record is durable.
    Strict,
    /// The call goes on; the loss is counted and recorded as a gap.
    #[default]
    BestEffort,
}

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub mode: AuditMode,
    /// HMAC key; plain SHA-256 chaining without one.
    pub key: Option<Vec<u8>>,
    pub quota_bytes: u64,
    /// At the quota, delete the oldest segments the exporter's collector
    /// has acknowledged, rather than lose new records.
    pub prune_exported: bool,
    /// A segment is closed and a new one started past this size
    /// ([`SEGMENT_BYTES`]).
    pub segment_bytes: u64,
}

impl SpoolConfig {
    /// A spool in `dir` with the default quota and segment size, no key,
    /// no pruning.
    pub fn new(dir: PathBuf, mode: AuditMode) -> SpoolConfig {
        SpoolConfig {
            dir,
            mode,
            key: None,
            quota_bytes: DEFAULT_QUOTA_BYTES,
            prune_exported: false,
            segment_bytes: SEGMENT_BYTES,
        }
    }
}

/// Why a record was not persisted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SpoolError {
    #[error("audit spool unavailable: {0}")]
    Io(String),
    #[error("audit spool is full (quota {0} bytes)")]
    Full(u64),
    #[error("audit spool writer has stopped")]
    Stopped,
}

/// A running spool.
pub struct Spool {
    tx: mpsc::Sender<Append>,
    mode: AuditMode,
    lost: Arc<AtomicU64>,
    dir: PathBuf,
    key: Option<Vec<u8>>,
    stream_id: String,
    /// The last durable sequence number, updated after every fsync.
    durable: tokio::sync::watch::Receiver<u64>,
}

/// The spool's stream id, created on first use.
fn stream_id(dir: &Path) -> std::io::Result<String> {
    let path = dir.join(STREAM_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        _ => {
            let id = crate::secret::random_id();
            let tmp = dir.join(format!("{STREAM_ID_FILE}.tmp"));
            let mut f = File::create(&tmp)?;
            f.write_all(id.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            Ok(id)
        }
    }
}

impl Spool {
    /// Opens (or creates) the spool and starts its writer; a `start` record
    /// marks the (re)start in the chain, followed by a `gap` for losses
    /// counted before it and not yet recorded.
    pub fn open(cfg: SpoolConfig) -> Result<Spool, SpoolError> {
        let mut writer = Writer::open(&cfg).map_err(|e| SpoolError::Io(e.to_string()))?;
        let stream_id = stream_id(&cfg.dir).map_err(|e| SpoolError::Io(e.to_string()))?;
        let first = writer.start()?;
        let (durable_tx, durable) = tokio::sync::watch::channel(first);
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let lost = Arc::new(AtomicU64::new(0));
        let lost_w = lost.clone();
        std::thread::Builder::new()
            .name("portcullis-audit".into())
            .spawn(move || write_loop(writer, rx, lost_w, durable_tx))
            .map_err(|e| SpoolError::Io(e.to_string()))?;
        Ok(Spool {
            tx,
            mode: cfg.mode,
            lost,
            dir: cfg.dir,
            key: cfg.key,
            stream_id,
            durable,
        })
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The chain's HMAC key, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// This spool's stream id.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Watches the last durable sequence number.
    pub fn durable(&self) -> tokio::sync::watch::Receiver<u64> {
        self.durable.clone()
    }

    /// The mode.
    pub fn mode(&self) -> AuditMode {
        self.mode
    }

    /// Records lost in best-effort mode so far.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Appends a decision record. Strict: returns once it is durable (or
    /// the error). Best effort: queues it and returns at once.
    pub async fn append<T: serde::Serialize>(&self, record: &T) -> Result<(), SpoolError> {
        let body = serde_json::to_string(record).map_err(|e| SpoolError::Io(e.to_string()))?;
        match self.mode {
            AuditMode::Strict => {
                let (ack, done) = oneshot::channel();
                self.tx
                    .send(Append {
                        kind: "decision",
                        body,
                        ack: Some(ack),
                    })
                    .await
                    .map_err(|_| SpoolError::Stopped)?;
                done.await.map_err(|_| SpoolError::Stopped)?.map(|_| ())
            }
            AuditMode::BestEffort => {
                let sent = self.tx.try_send(Append {
                    kind: "decision",
                    body,
                    ack: None,
                });
                if sent.is_err() {
                    let n = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
                    crate::telemetry::metrics::get().audit_lost.add(1, &[]);
                    tracing::error!(
                        lost = n,
                        "audit record lost: the spool queue is full or stopped"
                    );
                }
                Ok(())
            }
        }
    }

    /// At shutdown: waits (bounded by [`crate::limits::AUDIT_FLUSH_AT_EXIT`])
    /// for what is queued to be written, and says so if it could not be.
    /// Losses are counted either way, and recorded after the next start.
    pub async fn flush_at_exit(&self) {
        match tokio::time::timeout(crate::limits::AUDIT_FLUSH_AT_EXIT, self.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, dir = %self.dir.display(), "audit records queued at shutdown were not all written")
            }
            Err(_) => {
                tracing::warn!(dir = %self.dir.display(), "audit spool still writing at shutdown; stopping anyway")
            }
        }
    }

    /// Waits until everything queued so far is durable.
    pub async fn flush(&self) -> Result<(), SpoolError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Append {
                kind: "",
                body: String::new(),
                ack: Some(ack),
            })
            .await
            .map_err(|_| SpoolError::Stopped)?;
        done.await.map_err(|_| SpoolError::Stopped)?.map(|_| ())
    }
}
