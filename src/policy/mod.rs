//! The policy chain: which plugins run on which messages, in what order,
//! with what mode and failure mode, and how their verdicts combine.
//!
//! - [`verdict`]: the chain's contract: decisions, annotations, interests,
//!   and the [`Evaluate`](verdict::Evaluate) trait a step's plugin
//!   implements (the message context is [`crate::mcp::MessageContext`]).
//! - [`chain`]: steps, phases, modes, running a chain on a message, and what
//!   it tells telemetry.
//! - [`file`](mod@file): policy files (TOML) and loading their plugins.
//! - [`catalog`]: upstream tool definitions learned from `tools/list`.
//! - [`cases`]: `portcullis policy test`: cases beside a policy, run for real.
//! - [`reload`]: hot reload on file change or SIGHUP, swapped atomically.
//! - [`replay`]: `portcullis policy replay`: recorded messages run through
//!   a candidate policy, and what it would have decided differently.

pub mod cases;
pub mod catalog;
pub mod chain;
pub mod file;
pub mod pin;
pub mod reload;
pub mod replay;
pub mod verdict;

pub use chain::{Policy, Ruling, StepRecord, parse_options};
pub use file::{PolicyError, load};
