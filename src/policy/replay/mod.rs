//! `portcullis policy replay`: the messages an audit spool recorded, run
//! again through a candidate policy with the context each had, and what
//! the candidate would have decided differently.
//!
//! - [`diff`]: comparing a recorded ruling with the candidate's.
//! - `candidate`: the candidate policy on one message.
//! - `report`: what a replay reports; `render`: the report as text or JSON.
//!
//! A record can be replayed only when it holds the message the chain
//! received: `received` (the policy's `record_received`), or `payload`
//! when the message passed unchanged (then it is that message). Every
//! other record is counted under the reason it cannot be replayed, never
//! skipped silently. The chain is verified first; a spool that does not
//! verify is refused unless the caller accepts it.

mod candidate;
pub mod diff;
mod render;
mod report;

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

use super::Policy;
use super::catalog::{Catalog, Page};
use crate::audit::{DecisionRecord, StepEntry};
use crate::mcp::{Direction, Kind, MessageContext, Outcome};
use diff::{Change, Ruled};
pub use report::{Caveat, Entry, NotReplayable, Report, Values};

/// Why a replay could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read audit spool {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} holds no audit spool (no segment files)")]
    NoSpool { path: String },
    /// The spool does not verify: what it says cannot be trusted.
    #[error(
        "audit spool {path} does not verify ({count} problems; first, {at}: {problem}); `portcullis audit verify` lists them. Refused: pass --allow-broken-chain to replay it anyway{hint}"
    )]
    BrokenChain {
        path: String,
        count: usize,
        at: String,
        problem: String,
        hint: &'static str,
    },
}

/// What to replay, and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The spool's HMAC key, when it is keyed.
    pub key: Option<Vec<u8>>,
    /// Replay a spool whose chain does not verify (problems reported).
    pub allow_broken_chain: bool,
    /// Only records of this server.
    pub server: Option<String>,
    /// Only records of this tunnel.
    pub tunnel: Option<String>,
    /// Nesting limit when the messages are read again.
    pub max_depth: usize,
    /// Put message contents, public messages and private reasons in the
    /// report. Without it the report holds none.
    pub show_values: bool,
}

/// The message a record says the chain received, and how the chain ruled,
/// or why the record cannot tell.
fn recorded(record: &DecisionRecord) -> Result<(&Value, Ruled), NotReplayable> {
    let received = record.received.as_ref();
    match record.outcome {
        Outcome::Refused => Err(NotReplayable::Refused),
        // A chain's denial always has the step that denied.
        Outcome::Denied | Outcome::Dropped if record.steps.is_empty() => Err(NotReplayable::Gate),
        Outcome::Denied | Outcome::Dropped => received
            .map(|r| (r, Ruled::Denied))
            .ok_or(NotReplayable::DeniedNoMessage),
        Outcome::Forwarded => received
            .or(record.payload.as_ref())
            .map(|r| (r, Ruled::Unchanged))
            .ok_or(NotReplayable::NoMessage),
        Outcome::Rewritten => match (received, &record.payload) {
            (Some(r), out) => Ok((r, Ruled::Rewritten(out.clone()).normalised(r))),
            (None, Some(_)) => Err(NotReplayable::OnlyRewritten),
            (None, None) => Err(NotReplayable::NoMessage),
        },
    }
}

/// The context the chain saw, from the record.
fn context(record: &DecisionRecord) -> MessageContext {
    MessageContext {
        direction: record.direction,
        tunnel: record.tunnel.clone(),
        server: record.server.clone(),
        kind: record.kind,
        method: record.method.clone(),
        target: record.target.clone(),
        related_tool: record.related_tool.clone(),
        request_id: record.request_id.clone(),
        session_id: record.session_id.clone(),
        protocol_version: record.protocol_version.clone(),
        principal: record.principal(),
    }
}

/// Which request a message is or answers: tunnel, server, session,
/// subject and JSON-RPC id.
type Exchange = (String, String, Option<String>, String, String);

fn exchange_of(r: &DecisionRecord) -> Option<Exchange> {
    Some((
        r.tunnel.clone(),
        r.server.clone(),
        r.session_id.clone(),
        r.subject.clone(),
        r.request_id.clone()?,
    ))
}

/// A step as the report may show it: the private reason only when values
/// are shown.
fn shown(mut steps: Vec<StepEntry>, show_values: bool) -> Vec<StepEntry> {
    if !show_values {
        for s in &mut steps {
            s.reason = None;
        }
    }
    steps
}

/// Replays the decision records in `dir` through `policy`, whose plugins
/// read `catalog`: it learns each `tools/list` answer the spool recorded,
/// in spool order, as the gateway learnt it.
pub async fn replay(
    dir: &Path,
    policy: &Policy,
    catalog: &Catalog,
    opts: &Options,
) -> Result<Report, ReplayError> {
    let read = |e: std::io::Error| ReplayError::Read {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let segments = crate::audit::segment::segments(dir).map_err(read)?;
    if segments.is_empty() {
        return Err(ReplayError::NoSpool {
            path: dir.display().to_string(),
        });
    }
    let verified = crate::audit::verify::verify(dir, opts.key.as_deref()).map_err(read)?;
    if let Some(first) = verified.findings.first()
        && !opts.allow_broken_chain
    {
        return Err(ReplayError::BrokenChain {
            path: dir.display().to_string(),
            count: verified.findings.len(),
            at: first.at.clone(),
            problem: first.problem.clone(),
            hint: if opts.key.is_none() {
                " (a keyed spool needs --key-env)"
            } else {
                ""
            },
        });
    }
    let mut report = Report {
        spool: dir.to_owned(),
        policy_digest: policy.digest.clone(),
        chain_records: verified.records,
        chain_problems: verified.findings,
        show_values: opts.show_values,
        ..Report::default()
    };
    let mut denied_requests: HashSet<Exchange> = HashSet::new();
    for segment in segments {
        let text = std::fs::read_to_string(&segment).map_err(read)?;
        for raw in text.split_inclusive('\n') {
            let Ok(line) = crate::audit::line::parse(raw) else {
                // Reported by the verification, which the caller accepted.
                continue;
            };
            if line.kind != "decision" {
                continue;
            }
            report.decisions += 1;
            let Ok(record) = serde_json::from_value::<DecisionRecord>(line.body) else {
                *report
                    .not_replayable
                    .entry(NotReplayable::Unreadable)
                    .or_default() += 1;
                continue;
            };
            replay_one(
                policy,
                catalog,
                opts,
                line.seq,
                &record,
                &mut report,
                &mut denied_requests,
            )
            .await;
        }
    }
    Ok(report)
}

/// Replays one record into `report`.
async fn replay_one(
    policy: &Policy,
    catalog: &Catalog,
    opts: &Options,
    seq: u64,
    record: &DecisionRecord,
    report: &mut Report,
    denied_requests: &mut HashSet<Exchange>,
) {
    let found = recorded(record);
    // The gateway learns a listing before the chain sees it, whatever the
    // chain then does; replay learns what the record says was received.
    if record.direction == Direction::ToClient
        && record.kind == Kind::Response
        && record.method.as_deref() == Some("tools/list")
        && let Ok((received, _)) = &found
    {
        catalog.learn(&record.server, received.to_string().as_bytes(), Page::Later);
    }
    let wanted =
        |filter: &Option<String>, value: &str| filter.as_deref().is_none_or(|f| f == value);
    if !wanted(&opts.server, &record.server) || !wanted(&opts.tunnel, &record.tunnel) {
        report.filtered += 1;
        return;
    }
    let (received, was) = match found {
        Ok(found) => found,
        Err(why) => {
            *report.not_replayable.entry(why).or_default() += 1;
            return;
        }
    };
    let ctx = context(record);
    let now = candidate::run(policy, &ctx, received, opts.max_depth).await;
    let mut caveats = Vec::new();
    if ctx.method.as_deref() == Some("tools/call")
        && let Some(tool) = &ctx.target
        && catalog.tool(&ctx.server, tool).is_none()
    {
        caveats.push(Caveat::NoToolDefinition);
    }
    if record.issuer.is_some() && record.claims.is_none() {
        caveats.push(Caveat::ClaimsUnknown);
    }
    let is_reply = matches!(record.kind, Kind::Response | Kind::Error);
    if is_reply
        && record.direction == Direction::ToClient
        && exchange_of(record).is_some_and(|x| denied_requests.contains(&x))
    {
        caveats.push(Caveat::AnswersDeniedRequest);
    }
    for c in &caveats {
        *report.caveats.entry(*c).or_default() += 1;
    }
    let Some(change) = diff::compare(&was, &record.steps, &now.ruled, &now.steps) else {
        report.unchanged += 1;
        return;
    };
    if change == Change::NewlyDenied
        && record.direction == Direction::ToServer
        && record.kind == Kind::Request
        && let Some(x) = exchange_of(record)
    {
        denied_requests.insert(x);
    }
    let values = opts.show_values.then(|| Values {
        received: received.clone(),
        recorded_output: record.payload.clone(),
        candidate_output: match &now.ruled {
            Ruled::Unchanged => Some(received.clone()),
            Ruled::Rewritten(out) => out.clone(),
            Ruled::Denied => None,
        },
        public_message: now.public_message.clone(),
    });
    report.entries.push(Entry {
        seq,
        time_unix_ms: record.time_unix_ms,
        tunnel: record.tunnel.clone(),
        server: record.server.clone(),
        subject: record.subject.clone(),
        direction: record.direction,
        kind: record.kind,
        method: record.method.clone(),
        target: record.target.clone(),
        change,
        was: record.outcome,
        was_steps: shown(record.steps.clone(), opts.show_values),
        now: now.outcome,
        now_steps: shown(now.steps, opts.show_values),
        now_code: now.code,
        caveats,
        values,
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::mcp::{Mode, StepDecision};

    fn record(outcome: Outcome, steps: usize) -> DecisionRecord {
        let ctx = MessageContext {
            direction: Direction::ToServer,
            tunnel: "t".into(),
            server: "crm".into(),
            kind: Kind::Request,
            method: Some("tools/call".into()),
            target: Some("lookup".into()),
            related_tool: None,
            request_id: Some("1".into()),
            session_id: None,
            protocol_version: None,
            principal: crate::principal::Principal::named("alice", vec![]),
        };
        let step = StepEntry {
            plugin: "authz".into(),
            digest: "d".into(),
            mode: Mode::Enforce,
            decision: StepDecision::Deny,
            reason: None,
            annotations: Default::default(),
            elapsed_us: 1,
        };
        DecisionRecord::new(&ctx, vec![step; steps], outcome, None, None)
    }

    #[test]
    fn a_record_replays_only_the_message_the_chain_received() {
        let msg = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call"});
        let out = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}});
        let with = |mut r: DecisionRecord, received: Option<&Value>, payload: Option<&Value>| {
            r.received = received.cloned();
            r.payload = payload.cloned();
            r
        };
        let why = |r: &DecisionRecord| recorded(r).err();
        use NotReplayable::*;
        // Passed unchanged: the payload is the message received.
        let r = with(record(Outcome::Forwarded, 1), None, Some(&msg));
        assert_eq!(recorded(&r).unwrap(), (&msg, Ruled::Unchanged));
        assert_eq!(why(&record(Outcome::Forwarded, 1)), Some(NoMessage));
        // Rewritten: the payload is the output, never replayed as input.
        let r = with(record(Outcome::Rewritten, 1), None, Some(&out));
        assert_eq!(why(&r), Some(OnlyRewritten));
        let r = with(record(Outcome::Rewritten, 1), Some(&msg), Some(&out));
        assert_eq!(
            recorded(&r).unwrap(),
            (&msg, Ruled::Rewritten(Some(out.clone())))
        );
        let r = with(record(Outcome::Rewritten, 1), Some(&msg), None);
        assert_eq!(recorded(&r).unwrap(), (&msg, Ruled::Rewritten(None)));
        // Denied: only with the message received.
        assert_eq!(why(&record(Outcome::Denied, 1)), Some(DeniedNoMessage));
        let r = with(record(Outcome::Dropped, 1), Some(&msg), None);
        assert_eq!(recorded(&r).unwrap(), (&msg, Ruled::Denied));
        // No chain decided these, whatever they hold.
        let r = with(record(Outcome::Denied, 0), Some(&msg), None);
        assert_eq!(why(&r), Some(Gate));
        let r = with(record(Outcome::Refused, 0), Some(&msg), Some(&msg));
        assert_eq!(why(&r), Some(Refused));
    }

    #[test]
    fn the_replayed_context_is_the_recorded_one() {
        let mut r = record(Outcome::Forwarded, 0);
        r.groups = vec!["support".into()];
        r.issuer = Some("https://idp".into());
        r.claims = Some(json!({"dept": "x"}).as_object().cloned().unwrap());
        r.related_tool = Some("lookup".into());
        r.protocol_version = Some("2025-11-25".into());
        r.session_id = Some("s".into());
        let ctx = context(&r);
        assert_eq!(ctx.principal.groups, ["support"]);
        assert_eq!(ctx.principal.issuer.as_deref(), Some("https://idp"));
        assert_eq!(ctx.principal.claims_json(), r#"{"dept":"x"}"#);
        assert_eq!(ctx.related_tool.as_deref(), Some("lookup"));
        assert_eq!(ctx.protocol_version.as_deref(), Some("2025-11-25"));
        assert_eq!(ctx.session_id.as_deref(), Some("s"));
        assert_eq!(
            (ctx.direction, ctx.kind, ctx.target.as_deref()),
            (Direction::ToServer, Kind::Request, Some("lookup"))
        );
    }
}
