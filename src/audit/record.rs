//! The decision record.

use serde::{Deserialize, Serialize};

use crate::mcp::{Direction, Kind, MessageContext, Mode, Outcome, StepDecision};

/// One plugin's part in a decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepEntry {
    pub plugin: String,
    pub digest: String,
    pub mode: Mode,
    pub decision: StepDecision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Annotations: counts and labels only.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty", default)]
    pub annotations: serde_json::Map<String, serde_json::Value>,
    pub elapsed_us: u64,
}

/// What happened to one message. Raw arguments and results are never part
/// of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DecisionRecord {
    pub time_unix_ms: u64,
    pub tunnel: String,
    pub server: String,
    pub subject: String,
    pub groups: Vec<String>,
    /// The issuer of the agent's OAuth access token (none for an API key).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub issuer: Option<String>,
    /// The token's `jti`, when it had one: which token, never the token.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub token_id: Option<String>,
    pub direction: Direction,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    pub outcome: Outcome,
    /// Why a message was refused outside the policy chain: the public
    /// error, never message content.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_digest: Option<String>,
    pub steps: Vec<StepEntry>,
    /// The trace this decision belongs to (W3C ids, hex), when traced.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub span_id: Option<String>,
    /// The message as it left the chain (after any redaction), only when
    /// the policy opted in for this server.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payload: Option<serde_json::Value>,
    /// For a notification or server request inside a tool call's stream:
    /// the tool called (the chain's `related_tool`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub related_tool: Option<String>,
    /// The message as the chain received it, before any rewrite or denial:
    /// unredacted, only when the policy opted in for this server
    /// (`record_received`), and left out when `payload` already is that
    /// message (forwarded unchanged). What `policy replay` replays.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub received: Option<serde_json::Value>,
    /// The principal's allow-listed claims, in records that keep a message
    /// (so that a replay gives plugins the same principal); absent in
    /// every other record and in records written before it was added.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub claims: Option<serde_json::Map<String, serde_json::Value>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl DecisionRecord {
    /// Adds the message as it left the chain (for servers whose policy
    /// opted in).
    pub fn with_payload(mut self, message: &[u8]) -> DecisionRecord {
        self.payload = serde_json::from_slice(message).ok();
        self
    }

    /// Adds the message as the chain received it (for servers whose policy
    /// opted in to `record_received`).
    pub fn with_received(mut self, message: &[u8]) -> DecisionRecord {
        self.received = serde_json::from_slice(message).ok();
        self
    }

    /// The principal this record names, as the chain was given it: the
    /// claims are empty when the record did not keep them.
    pub fn principal(&self) -> crate::principal::Principal {
        crate::principal::Principal {
            subject: self.subject.clone(),
            groups: self.groups.clone(),
            issuer: self.issuer.clone(),
            token_id: self.token_id.clone(),
            claims: self.claims.clone().unwrap_or_default(),
        }
    }

    /// A record of `ctx` with the steps that ran and the outcome; `trace`
    /// is the trace and span id of the decision's span
    /// ([`crate::telemetry::span::ids`]), when traced.
    pub fn new(
        ctx: &MessageContext,
        steps: Vec<StepEntry>,
        outcome: Outcome,
        policy_digest: Option<&str>,
        trace: Option<(String, String)>,
    ) -> DecisionRecord {
        let (trace_id, span_id) = trace.unzip();
        DecisionRecord {
            trace_id,
            span_id,
            payload: None,
            related_tool: ctx.related_tool.clone(),
            received: None,
            claims: None,
            reason: None,
            time_unix_ms: now_ms(),
            tunnel: ctx.tunnel.clone(),
            server: ctx.server.clone(),
            subject: ctx.principal.subject.clone(),
            groups: ctx.principal.groups.clone(),
            issuer: ctx.principal.issuer.clone(),
            token_id: ctx.principal.token_id.clone(),
            direction: ctx.direction,
            kind: ctx.kind,
            method: ctx.method.clone(),
            target: ctx.target.clone(),
            request_id: ctx.request_id.clone(),
            session_id: ctx.session_id.clone(),
            protocol_version: ctx.protocol_version.clone(),
            outcome,
            policy_digest: policy_digest.map(str::to_owned),
            steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::Path;

    use super::*;

    /// A spool written by version 0.1.0 (before the record's vocabulary was
    /// typed): one record of each outcome, direction, kind, mode and step
    /// decision, with annotations, reasons, trace ids and a payload.
    const OLD_SPOOL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/spool-0.1.0");

    /// The body of a spool line's JSON (`{"seq":…,"type":…,"prev":…,"body":BODY}`).
    fn body_of(json: &str) -> &str {
        let at = json.find(r#","body":"#).unwrap() + r#","body":"#.len();
        &json[at..json.len() - 1]
    }

    #[test]
    fn an_old_spool_verifies_and_its_records_serialise_byte_identically() {
        let dir = Path::new(OLD_SPOOL);
        let v = crate::audit::verify::verify(dir, None).unwrap();
        assert!(v.findings.is_empty(), "{:?}", v.findings);
        assert_eq!(v.records, 8);
        let mut outcomes = HashSet::new();
        let (mut directions, mut kinds) = (HashSet::new(), HashSet::new());
        let (mut modes, mut decisions) = (HashSet::new(), HashSet::new());
        for segment in crate::audit::segment::segments(dir).unwrap() {
            for line in std::fs::read_to_string(segment).unwrap().lines() {
                let (json, _hash) = line.rsplit_once('\t').unwrap();
                if !json.contains(r#","type":"decision","#) {
                    continue;
                }
                let body = body_of(json);
                let record: DecisionRecord = serde_json::from_str(body).unwrap();
                assert_eq!(serde_json::to_string(&record).unwrap(), body);
                outcomes.insert(record.outcome);
                directions.insert(record.direction);
                kinds.insert(record.kind);
                modes.extend(record.steps.iter().map(|s| s.mode));
                decisions.extend(record.steps.iter().map(|s| s.decision));
            }
        }
        // Every word of the vocabulary was read from the old spool.
        use Outcome::*;
        let all = [Forwarded, Rewritten, Denied, Dropped, Refused];
        assert_eq!(outcomes, all.into());
        assert_eq!(
            directions,
            [Direction::ToServer, Direction::ToClient].into()
        );
        let all = [
            Kind::Request,
            Kind::Notification,
            Kind::Response,
            Kind::Error,
        ];
        assert_eq!(kinds, all.into());
        assert_eq!(modes, [Mode::Enforce, Mode::Audit].into());
        use StepDecision::{Allow, Deny, Error, Rewrite};
        assert_eq!(decisions, [Allow, Rewrite, Deny, Error].into());
    }
}
