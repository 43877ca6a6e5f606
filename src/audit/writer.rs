//! The spool's writer: one thread that owns the segment files. It recovers
//! the chain's tail on open (cutting a torn last line), writes batches with
//! one fsync each (all or nothing), rotates segments, keeps the quota
//! (pruning exported segments when allowed), and records losses as `gap`
//! lines, keeping their count on disk until then.
//!
//! Why one file of just over 400 lines: these are the steps of one thread
//! that share its state (the open segment, the chain's tail hash and
//! sequence, the bytes on disk, the losses not yet written); split apart,
//! each piece would take all of that state as arguments.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::line::{self, GENESIS, Mark};
use super::segment::{self, segments};
use super::spool::{ANCHOR_FILE, BATCH_MAX, LOST_FILE, PRUNED_FILE, SpoolConfig, SpoolError};

/// How long the writer waits after a batch it could not write (a full or
/// failing disk) before taking the next: a failing disk is not retried in a
/// busy loop, and records queued meanwhile still go into the next batch.
const WRITE_FAILURE_PAUSE: Duration = Duration::from_millis(10);
/// How long the writer gathers best-effort records before it writes and
/// fsyncs them, when no caller waits on the batch: one fsync per window
/// instead of one per few records (at 10,000 calls/s it was about one
/// per 1.4 calls), and the request threads do not wake the writer for
/// each record. A batch that someone waits on (a strict spool's append, a
/// flush) is written at once; a flush sent during a window waits for its
/// end.
pub(super) const COMMIT_WINDOW: Duration = Duration::from_millis(5);

/// One record for the writer; an empty `kind` only asks for the ack once
/// everything before it is durable (a flush).
pub(super) struct Append {
    pub kind: &'static str,
    pub body: String,
    pub ack: Option<oneshot::Sender<Result<u64, SpoolError>>>,
}

pub(super) struct Writer {
    dir: PathBuf,
    key: Option<Vec<u8>>,
    quota: u64,
    prune_exported: bool,
    segment_bytes: u64,
    file: File,
    /// The segment's durable length: everything before it is whole lines.
    file_len: u64,
    /// A write failed part-way: bytes past `file_len` are cut before
    /// anything else is written, so no line ever follows a fragment.
    torn: bool,
    /// Bytes of all segments, as last counted on disk plus what was
    /// written since.
    total: u64,
    seq: u64,
    prev: String,
    /// Losses (of the shared counter) already recorded by a `gap` line.
    lost_seen: u64,
    /// Losses counted before this process started, not yet recorded.
    lost_before: u64,
    /// What the lost file says now.
    lost_saved: u64,
    /// Why the last write failed, for the `gap` line that records it.
    last_failure: Option<String>,
    /// The anchor file, rewritten in place (fixed width) after each batch.
    anchor: File,
    /// The lost file, rewritten in place (fixed width).
    lost_file: File,
}

/// The bytes of every segment in `dir`.
fn on_disk(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for s in segments(dir)? {
        total += std::fs::metadata(s)?.len();
    }
    Ok(total)
}

/// The lost file's text for `n` (fixed width).
fn lost_text(n: u64) -> String {
    format!(r#"{{"unrecorded":"{n:020}"}}"#)
}

#[derive(Deserialize)]
struct LostFile {
    unrecorded: String,
}

/// Reads the lost file (absent or unreadable: nothing unrecorded).
fn read_lost(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join(LOST_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<LostFile>(&t).ok())
        .and_then(|l| l.unrecorded.parse().ok())
        .unwrap_or(0)
}

impl Writer {
    /// Writes the `start` record that marks a (re)start in the chain,
    /// followed by a `gap` for losses counted before it and not yet
    /// recorded. Returns the last seq written.
    pub fn start(&mut self) -> Result<u64, SpoolError> {
        let start = format!(
            r#"{{"pid":{},"version":"{}"}}"#,
            std::process::id(),
            env!("CARGO_PKG_VERSION")
        );
        let mut lines = vec![("start", start)];
        if self.lost_before > 0 {
            let reason = "lost before the restart: the spool could not write them";
            lines.push(("gap", gap_body(self.lost_before, reason)));
        }
        let lines: Vec<(&str, &str)> = lines.iter().map(|(k, b)| (*k, b.as_str())).collect();
        let first = self.write_batch(&lines)?;
        if self.lost_before > 0 {
            self.lost_before = 0;
            self.save_lost(0);
        }
        Ok(first)
    }

    /// Opens the spool, recovering the chain's tail from the last segment.
    pub fn open(cfg: &SpoolConfig) -> std::io::Result<Writer> {
        std::fs::create_dir_all(&cfg.dir)?;
        let segs = segments(&cfg.dir)?;
        let total = on_disk(&cfg.dir)?;
        let (mut seq, mut prev) = (0, GENESIS.to_owned());
        let path = match segs.last() {
            Some(last) => {
                // Find the last complete line; cut a partial one (a crash
                // mid-write) so the chain continues from durable data.
                let mut f = OpenOptions::new().read(true).write(true).open(last)?;
                let mut good_len = 0u64;
                let mut offset = 0u64;
                let mut reader = BufReader::new(&mut f);
                let mut line = String::new();
                loop {
                    line.clear();
                    let n = reader.read_line(&mut line)?;
                    if n == 0 {
                        break;
                    }
                    offset += n as u64;
                    if !line.ends_with('\n') {
                        break;
                    }
                    if let Ok(l) = line::parse(&line) {
                        seq = l.seq;
                        prev = l.hash;
                        good_len = offset;
                    }
                }
                drop(reader);
                if good_len < f.metadata()?.len() {
                    f.set_len(good_len)?;
                }
                last.clone()
            }
            None => segment::path(&cfg.dir, 1),
        };
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut file = file;
        let file_len = file.seek(SeekFrom::End(0))?;
        let anchor = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(cfg.dir.join(ANCHOR_FILE))?;
        let lost_before = read_lost(&cfg.dir);
        let lost_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(cfg.dir.join(LOST_FILE))?;
        // Written whole now, while there is space: later rewrites replace
        // these bytes in place.
        std::os::unix::fs::FileExt::write_all_at(&lost_file, lost_text(lost_before).as_bytes(), 0)?;
        lost_file.sync_data()?;
        Ok(Writer {
            dir: cfg.dir.clone(),
            key: cfg.key.clone(),
            quota: cfg.quota_bytes,
            prune_exported: cfg.prune_exported,
            segment_bytes: cfg.segment_bytes.max(1),
            file,
            file_len,
            torn: false,
            total,
            seq,
            prev,
            lost_seen: 0,
            lost_before,
            lost_saved: lost_before,
            last_failure: None,
            anchor,
            lost_file,
        })
    }

    /// Rewrites the lost file in place with `n` unrecorded losses.
    fn save_lost(&mut self, n: u64) {
        let saved =
            std::os::unix::fs::FileExt::write_all_at(&self.lost_file, lost_text(n).as_bytes(), 0)
                .and_then(|()| self.lost_file.sync_data());
        match saved {
            Ok(()) => self.lost_saved = n,
            Err(e) => {
                tracing::error!(error = %e, "audit loss count not saved; a restart would not record it")
            }
        }
    }

    fn line(&mut self, kind: &str, body: &str) -> String {
        self.seq += 1;
        let written = line::write(self.key.as_deref(), self.seq, kind, &self.prev, body);
        self.prev = written.hash;
        written.text
    }

    fn rotate_if_needed(&mut self) -> std::io::Result<()> {
        if self.file_len < self.segment_bytes {
            return Ok(());
        }
        self.file.sync_data()?;
        let path = segment::path(&self.dir, self.seq + 1);
        self.file = OpenOptions::new().create(true).append(true).open(path)?;
        self.file_len = 0;
        Ok(())
    }

    /// Cuts what a failed write left past the durable length.
    fn mend(&mut self) -> std::io::Result<()> {
        if self.torn {
            self.file.set_len(self.file_len)?;
            self.file.sync_data()?;
            self.torn = false;
        }
        Ok(())
    }

    /// Whether `more` bytes fit the quota. The total is counted again on
    /// disk first (segments may have been moved away or pruned by hand),
    /// then, if the policy allows, exported segments are pruned.
    fn fits(&mut self, more: u64) -> std::io::Result<bool> {
        if self.total + more <= self.quota {
            return Ok(true);
        }
        self.total = on_disk(&self.dir)?;
        if self.total + more > self.quota && self.prune_exported {
            self.prune(more)?;
        }
        Ok(self.total + more <= self.quota)
    }

    /// Deletes the oldest whole segments the collector has acknowledged,
    /// until `more` bytes fit; never the segment being written.
    fn prune(&mut self, more: u64) -> std::io::Result<()> {
        let acked = super::export::load_cursor(&self.dir).seq;
        let segs = segments(&self.dir)?;
        for pair in segs.windows(2) {
            let [old, next] = pair else { break };
            // A segment's name is the seq of its first line, so the one
            // after it tells where it ends.
            let last = segment::first_seq(next).map(|n| n.saturating_sub(1));
            if self.total + more <= self.quota || last.is_none_or(|l| l > acked) {
                break;
            }
            let Some(mark) = segment::last_line(old)? else {
                break;
            };
            // The marker goes first: a crash between the two leaves a
            // segment verify can still read past.
            let marker = mark.encode();
            let tmp = self.dir.join(format!("{PRUNED_FILE}.tmp"));
            std::fs::write(&tmp, marker)?;
            File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, self.dir.join(PRUNED_FILE))?;
            let len = std::fs::metadata(old)?.len();
            std::fs::remove_file(old)?;
            self.total = self.total.saturating_sub(len);
            tracing::info!(
                segment = %old.display(),
                up_to = mark.seq,
                "audit segment pruned: exported and acknowledged"
            );
        }
        Ok(())
    }

    /// Writes a batch, fsyncs, updates the anchor. Returns the last seq.
    /// A batch is all or nothing: a write that fails part-way is cut off
    /// again, and the chain goes on from the last durable line.
    fn write_batch(&mut self, batch: &[(&str, &str)]) -> Result<u64, SpoolError> {
        let io = |e: std::io::Error| SpoolError::Io(e.to_string());
        self.mend().map_err(io)?;
        let mut buf = String::new();
        let start = (self.seq, self.prev.clone());
        for (kind, body) in batch {
            buf.push_str(&self.line(kind, body));
        }
        match self.fits(buf.len() as u64) {
            Ok(true) => {}
            Ok(false) => {
                (self.seq, self.prev) = start;
                return Err(SpoolError::Full(self.quota));
            }
            Err(e) => {
                (self.seq, self.prev) = start;
                return Err(io(e));
            }
        }
        let written = self.rotate_if_needed().and_then(|()| {
            // From here a failure may leave part of the batch behind.
            self.torn = true;
            self.file.write_all(buf.as_bytes())?;
            self.file.sync_data()
        });
        if let Err(e) = written {
            (self.seq, self.prev) = start;
            if let Err(cut) = self.mend() {
                tracing::error!(error = %cut, "audit segment cannot be cut back yet; retried before the next write");
            }
            return Err(io(e));
        }
        self.torn = false;
        self.file_len += buf.len() as u64;
        self.total += buf.len() as u64;
        // Fixed width, so one positioned write replaces it in place.
        let anchor = Mark {
            seq: self.seq,
            hash: self.prev.clone(),
        }
        .encode();
        let _ = std::os::unix::fs::FileExt::write_all_at(&self.anchor, anchor.as_bytes(), 0);
        Ok(self.seq)
    }
}

/// The body of a `gap` line: how many records were lost and why.
fn gap_body(lost: u64, reason: &str) -> String {
    serde_json::json!({ "lost": lost, "reason": reason }).to_string()
}

/// Moves what is queued into `batch`, up to [`BATCH_MAX`] records.
fn gather(rx: &mut mpsc::Receiver<Append>, batch: &mut Vec<Append>) {
    while batch.len() < BATCH_MAX {
        match rx.try_recv() {
            Ok(a) => batch.push(a),
            Err(_) => break,
        }
    }
}

pub(super) fn write_loop(
    mut w: Writer,
    mut rx: mpsc::Receiver<Append>,
    lost: Arc<AtomicU64>,
    durable: tokio::sync::watch::Sender<u64>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        gather(&mut rx, &mut batch);
        if batch.len() < BATCH_MAX && batch.iter().all(|a| a.ack.is_none()) {
            // Nobody waits on these: let the window fill.
            std::thread::sleep(COMMIT_WINDOW);
            gather(&mut rx, &mut batch);
        }
        let mut lines: Vec<(&str, &str)> = Vec::with_capacity(batch.len() + 1);
        let lost_now = lost.load(Ordering::Relaxed);
        let gap;
        if lost_now > w.lost_seen {
            let reason = w
                .last_failure
                .as_deref()
                .unwrap_or("the spool queue was full");
            gap = gap_body(lost_now - w.lost_seen, reason);
            lines.push(("gap", &gap));
        }
        lines.extend(
            batch
                .iter()
                .filter(|a| !a.kind.is_empty())
                .map(|a| (a.kind, a.body.as_str())),
        );
        let result = if lines.is_empty() {
            Ok(w.seq)
        } else {
            w.write_batch(&lines)
        };
        match &result {
            Ok(seq) => {
                if w.lost_seen < lost_now {
                    tracing::warn!(
                        lost = lost_now - w.lost_seen,
                        "audit spool writing again; the loss is recorded as a gap"
                    );
                }
                w.lost_seen = lost_now;
                w.last_failure = None;
                durable.send_replace(*seq);
            }
            Err(e) => {
                let unacked = batch
                    .iter()
                    .filter(|a| a.ack.is_none() && !a.kind.is_empty())
                    .count() as u64;
                let n = lost.fetch_add(unacked, Ordering::Relaxed) + unacked;
                crate::telemetry::metrics::get()
                    .audit_lost
                    .add(unacked, &[]);
                // Logged once per failure that starts a loss, then counted.
                if w.last_failure.is_none() {
                    tracing::error!(error = %e, lost = n, "audit records could not be written");
                }
                w.last_failure = Some(e.to_string());
                std::thread::sleep(WRITE_FAILURE_PAUSE);
            }
        }
        let unrecorded = lost.load(Ordering::Relaxed) - w.lost_seen;
        if unrecorded != w.lost_saved {
            w.save_lost(unrecorded);
        }
        for a in batch {
            if let Some(ack) = a.ack {
                let _ = ack.send(result.clone());
            }
        }
    }
    // Losses counted after the last batch are recorded after a restart.
    let unrecorded = lost.load(Ordering::Relaxed) - w.lost_seen;
    if unrecorded != w.lost_saved {
        w.save_lost(unrecorded);
    }
}
