//! The decision record.

use serde::{Deserialize, Serialize};

use crate::policy::StepRecord;
use crate::policy::verdict::{AnnotationValue, Direction, MessageContext, MessageKind};

/// One plugin's part in a decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepEntry {
    pub plugin: String,
    pub digest: String,
    pub mode: String,
    pub decision: String,
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
    pub direction: String,
    pub kind: String,
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
    /// `forwarded`, `rewritten`, `denied`, `dropped`, or `refused` (before
    /// any policy: malformed, unauthenticated, offline tunnel…).
    pub outcome: String,
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
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl DecisionRecord {
    /// Adds the message that left the chain, when `policy` opted in for
    /// the record's server.
    pub fn with_payload(
        mut self,
        policy: Option<&crate::policy::Policy>,
        message: &[u8],
    ) -> DecisionRecord {
        if policy.is_some_and(|p| p.records_payload(&self.server)) {
            self.payload = serde_json::from_slice(message).ok();
        }
        self
    }

    /// A record of `ctx` with the steps that ran and the outcome.
    pub fn new(
        ctx: &MessageContext,
        steps: &[StepRecord],
        outcome: &str,
        policy_digest: Option<&str>,
    ) -> DecisionRecord {
        let (trace_id, span_id) = crate::telemetry::span::ids(&tracing::Span::current()).unzip();
        DecisionRecord {
            trace_id,
            span_id,
            payload: None,
            reason: None,
            time_unix_ms: now_ms(),
            tunnel: ctx.tunnel.clone(),
            server: ctx.server.clone(),
            subject: ctx.principal.subject.clone(),
            groups: ctx.principal.groups.clone(),
            direction: match ctx.direction {
                Direction::ToServer => "to-server",
                Direction::ToClient => "to-client",
            }
            .into(),
            kind: match ctx.kind {
                MessageKind::Request => "request",
                MessageKind::Notification => "notification",
                MessageKind::Response => "response",
                MessageKind::Error => "error",
            }
            .into(),
            method: ctx.method.clone(),
            target: ctx.target.clone(),
            request_id: ctx.request_id.clone(),
            session_id: ctx.session_id.clone(),
            protocol_version: ctx.protocol_version.clone(),
            outcome: outcome.into(),
            policy_digest: policy_digest.map(str::to_owned),
            steps: steps
                .iter()
                .map(|s| StepEntry {
                    plugin: s.plugin.clone(),
                    digest: s.digest.clone(),
                    mode: format!("{:?}", s.mode).to_lowercase(),
                    decision: s.decision.into(),
                    reason: s.reason.clone(),
                    annotations: s
                        .annotations
                        .iter()
                        .map(|a| {
                            let v = match &a.value {
                                AnnotationValue::Count(n) => serde_json::Value::from(*n),
                                AnnotationValue::Label(l) => serde_json::Value::from(l.clone()),
                            };
                            (a.key.clone(), v)
                        })
                        .collect(),
                    elapsed_us: s.elapsed.as_micros() as u64,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
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
        let mut outcomes = BTreeSet::new();
        for segment in crate::audit::spool::segments(dir).unwrap() {
            for line in std::fs::read_to_string(segment).unwrap().lines() {
                let (json, _hash) = line.rsplit_once('\t').unwrap();
                if !json.contains(r#","type":"decision","#) {
                    continue;
                }
                let body = body_of(json);
                let record: DecisionRecord = serde_json::from_str(body).unwrap();
                assert_eq!(serde_json::to_string(&record).unwrap(), body);
                outcomes.insert(record.outcome.to_string());
            }
        }
        let all = ["denied", "dropped", "forwarded", "refused", "rewritten"];
        assert_eq!(outcomes, all.map(String::from).into());
    }
}
