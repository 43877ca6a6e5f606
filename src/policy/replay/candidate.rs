//! Running the candidate policy on one recorded message, as the gateway's
//! checkpoint would: read under the candidate's parse options, then the
//! chain when a step wants the message.

use bytes::Bytes;
use serde_json::Value;

use super::diff::Ruled;
use crate::audit::StepEntry;
use crate::mcp::{Direction, Kind, Message, MessageContext, Outcome};
use crate::policy::{Policy, Ruling};

/// What the candidate decides on one message.
pub(super) struct Candidate {
    pub ruled: Ruled,
    pub outcome: Outcome,
    pub steps: Vec<StepEntry>,
    /// The JSON-RPC code of a denial (or of a refusal to read it).
    pub code: Option<i64>,
    pub public_message: Option<String>,
}

/// What `policy` decides on `received`, travelling with `ctx`.
pub(super) async fn run(
    policy: &Policy,
    ctx: &MessageContext,
    received: &Value,
    max_depth: usize,
) -> Candidate {
    let raw = Bytes::from(received.to_string());
    let denied = |code: i64, public_message: String, steps: Vec<StepEntry>| {
        let answered = matches!(ctx.kind, Kind::Response | Kind::Error | Kind::Request)
            || ctx.direction == Direction::ToServer;
        Candidate {
            ruled: Ruled::Denied,
            outcome: if answered {
                Outcome::Denied
            } else {
                Outcome::Dropped
            },
            steps,
            code: Some(code),
            public_message: Some(public_message),
        }
    };
    if let Err(e) = Message::parse(raw.clone(), policy.parse_options(&ctx.server, max_depth)) {
        let mut c = denied(e.code(), e.to_string(), Vec::new());
        c.outcome = Outcome::Refused;
        return c;
    }
    if !policy.wants(ctx) {
        return Candidate {
            ruled: Ruled::Unchanged,
            outcome: Outcome::Forwarded,
            steps: Vec::new(),
            code: None,
            public_message: None,
        };
    }
    let (ruling, records) = policy.apply(ctx, raw.clone(), max_depth).await;
    let steps = records.iter().map(StepEntry::from).collect();
    match ruling {
        Ruling::Deny(d) => denied(i64::from(d.code), d.public_message, steps),
        Ruling::Pass(out) => {
            let ruled = if out == raw {
                Ruled::Unchanged
            } else {
                Ruled::Rewritten(serde_json::from_slice(&out).ok()).normalised(received)
            };
            let outcome = match ruled {
                Ruled::Unchanged => Outcome::Forwarded,
                _ => Outcome::Rewritten,
            };
            Candidate {
                ruled,
                outcome,
                steps,
                code: None,
                public_message: None,
            }
        }
    }
}
