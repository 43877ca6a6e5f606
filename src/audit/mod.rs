//! Audit: one record per decision, appended to a local hash-chained spool
//! before anything else happens with it.
//!
//! - [`record`]: what a decision record holds (never raw payload values).
//! - [`line`](mod@line): one spool line — writing, parsing and hashing it (SHA-256,
//!   or HMAC-SHA-256 with a key) — and the fixed-width anchor/pruned mark.
//! - [`segment`]: segment file names, listing, and reading lines in order.
//! - [`spool`]: the running spool — strict and best-effort modes, the
//!   queue, flushing; its writer thread (group fsync, rotation, the disk
//!   quota, gap lines) is `writer`.
//! - [`verify`]: `portcullis audit verify` and `audit tail`.
//! - [`export`]: ships the spool to an OTLP collector as log records, with
//!   an acknowledged cursor; the spool is the source of truth, so a
//!   collector outage loses nothing (`export/record.rs` maps a line to a log
//!   record, `export/transport.rs` sends over gRPC or HTTP).

pub mod export;
pub mod line;
pub mod record;
pub mod segment;
pub mod spool;
pub mod verify;
mod writer;

pub use record::{DecisionRecord, StepEntry};
pub use spool::{AuditMode, Spool, SpoolConfig, SpoolError};
