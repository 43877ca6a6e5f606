//! Audit: one record per decision, appended to a local hash-chained spool
//! before anything else happens with it.
//!
//! - [`record`]: what a decision record holds (never raw payload values).
//! - [`spool`]: segment files, the hash chain (SHA-256, or HMAC-SHA-256 with
//!   a key), group fsync, strict and best-effort modes, the disk quota.
//! - [`verify`]: `portcullis audit verify` and `audit tail`.
//! - [`export`]: ships the spool to an OTLP collector as log records, with
//!   an acknowledged cursor; the spool is the source of truth, so a
//!   collector outage loses nothing.

pub mod export;
pub mod line;
pub mod record;
pub mod segment;
pub mod spool;
pub mod verify;

pub use record::{DecisionRecord, StepEntry};
pub use spool::{AuditMode, Spool, SpoolConfig, SpoolError};
