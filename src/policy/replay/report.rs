//! What a replay reports: the reasons a record cannot be replayed, the
//! caveats on one that was, each difference, and the counts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::diff::Change;
use crate::audit::StepEntry;
use crate::audit::verify::Finding;
use crate::mcp::{Direction, Kind, Outcome};

/// Why a decision record cannot be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NotReplayable {
    /// Refused before any policy: nothing was decided by a chain.
    Refused,
    /// Decided by a gate before the chain (a response to no request in
    /// flight, output of a task the principal did not create).
    Gate,
    /// Passed unchanged, and the record keeps no message.
    NoMessage,
    /// Rewritten, and the record keeps only the rewritten form.
    OnlyRewritten,
    /// Denied or dropped, and the record keeps no message.
    DeniedNoMessage,
    /// A decision line this version cannot read as a record.
    Unreadable,
}

impl NotReplayable {
    /// Every reason, in report order.
    pub const ALL: [NotReplayable; 6] = [
        NotReplayable::NoMessage,
        NotReplayable::OnlyRewritten,
        NotReplayable::DeniedNoMessage,
        NotReplayable::Refused,
        NotReplayable::Gate,
        NotReplayable::Unreadable,
    ];

    /// Its key in the JSON report.
    pub const fn key(self) -> &'static str {
        match self {
            NotReplayable::Refused => "refused_before_policy",
            NotReplayable::Gate => "decided_before_chain",
            NotReplayable::NoMessage => "no_message_recorded",
            NotReplayable::OnlyRewritten => "only_rewritten_form_recorded",
            NotReplayable::DeniedNoMessage => "denied_no_message_recorded",
            NotReplayable::Unreadable => "unreadable",
        }
    }

    /// What it means, for the text report.
    pub const fn explain(self) -> &'static str {
        match self {
            NotReplayable::Refused => {
                "refused before any policy (malformed, unauthenticated, …): no chain decided them"
            }
            NotReplayable::Gate => {
                "decided by the gateway before the chain (a response to nothing in flight, another principal's task)"
            }
            NotReplayable::NoMessage => {
                "passed, but the record keeps no message (the policy did not set record_payloads or record_received for the server)"
            }
            NotReplayable::OnlyRewritten => {
                "rewritten, and the record keeps only the rewritten form, not the message the chain received (record_received not set)"
            }
            NotReplayable::DeniedNoMessage => {
                "denied or dropped, and the record keeps no message (record_received not set)"
            }
            NotReplayable::Unreadable => "decision lines this version cannot read",
        }
    }
}

/// What a replayed message's result may not reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Caveat {
    /// A `tools/call` replayed while the catalog held no definition of the
    /// tool: none was recorded in a `tools/list` answer before it.
    NoToolDefinition,
    /// An OAuth principal whose claims the record does not keep (written
    /// before records kept them): plugins saw no claims.
    ClaimsUnknown,
    /// A reply to a request the candidate denies: it would not have been
    /// sent at all.
    AnswersDeniedRequest,
}

impl Caveat {
    /// Every caveat, in report order.
    pub const ALL: [Caveat; 3] = [
        Caveat::NoToolDefinition,
        Caveat::ClaimsUnknown,
        Caveat::AnswersDeniedRequest,
    ];

    /// Its key in the JSON report.
    pub const fn key(self) -> &'static str {
        match self {
            Caveat::NoToolDefinition => "no_tool_definition",
            Caveat::ClaimsUnknown => "claims_unknown",
            Caveat::AnswersDeniedRequest => "answers_a_newly_denied_request",
        }
    }

    /// What it means, for the text report.
    pub const fn explain(self) -> &'static str {
        match self {
            Caveat::NoToolDefinition => {
                "tools/call replayed without the tool's definition (no tools/list answer recorded before it): plugins reading the catalog (schema-guard) saw none"
            }
            Caveat::ClaimsUnknown => {
                "OAuth principal whose claims the record does not keep: plugins saw no claims"
            }
            Caveat::AnswersDeniedRequest => {
                "reply to a request the candidate denies: it would not have been sent"
            }
        }
    }
}

/// One message the candidate decides differently.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub time_unix_ms: u64,
    pub tunnel: String,
    pub server: String,
    pub subject: String,
    pub direction: Direction,
    pub kind: Kind,
    pub method: Option<String>,
    pub target: Option<String>,
    pub change: Change,
    /// What the record says became of it, and the steps that ran
    /// (private reasons only with `show_values`).
    pub was: Outcome,
    pub was_steps: Vec<StepEntry>,
    /// What the candidate would do, and its steps (likewise).
    pub now: Outcome,
    pub now_steps: Vec<StepEntry>,
    /// The candidate's JSON-RPC code, when it denies.
    pub now_code: Option<i64>,
    pub caveats: Vec<Caveat>,
    /// Only with `show_values`.
    pub values: Option<Values>,
}

/// The contents behind an entry, shown only when asked for.
#[derive(Debug, Clone)]
pub struct Values {
    /// The message the chain received.
    pub received: Value,
    /// What left the chain, as recorded (when it was).
    pub recorded_output: Option<Value>,
    /// What the candidate passes on (when it does).
    pub candidate_output: Option<Value>,
    /// The candidate's public message, or why it refuses to read the message.
    pub public_message: Option<String>,
}

/// The result of a replay.
#[derive(Debug, Default)]
pub struct Report {
    pub spool: PathBuf,
    pub policy_digest: String,
    /// Lines the chain holds.
    pub chain_records: u64,
    /// The chain's problems, when a broken chain was replayed anyway.
    pub chain_problems: Vec<Finding>,
    /// Decision records read.
    pub decisions: u64,
    /// Left out by `--server` / `--tunnel`.
    pub filtered: u64,
    /// Replayed with the same result.
    pub unchanged: u64,
    pub not_replayable: BTreeMap<NotReplayable, u64>,
    /// Replayed messages (changed or not) with each caveat.
    pub caveats: BTreeMap<Caveat, u64>,
    /// The differences, in spool order.
    pub entries: Vec<Entry>,
    pub show_values: bool,
}

impl Report {
    /// True when the candidate decides some message differently.
    pub fn differs(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Messages replayed.
    pub fn replayed(&self) -> u64 {
        self.unchanged + self.entries.len() as u64
    }

    /// Messages with this change.
    pub fn count(&self, change: Change) -> usize {
        self.entries.iter().filter(|e| e.change == change).count()
    }

    /// Records that could not be replayed.
    pub fn not_replayable_total(&self) -> u64 {
        self.not_replayable.values().sum()
    }
}
