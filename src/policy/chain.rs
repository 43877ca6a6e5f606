//! Running a chain on one message and combining the verdicts.
//!
//! Order: the `"*"` chain, then the server's own. A rewrite feeds the next
//! plugin; the first enforced deny stops the chain. Audit-mode steps run and
//! are recorded but never block or rewrite. A plugin error (trap, deadline,
//! memory, bad output) denies unless that step is `on_error = "allow"`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;

use super::verdict::{
    Annotation, Decision, Denial, Direction, MessageContext, MessageKind, glob_match,
};
use crate::mcp::{Message, ParseOptions};
use crate::plugin::{CallError, LoadedPlugin};

/// Chain key that applies to every server.
pub const ALL_SERVERS: &str = "*";
/// JSON-RPC code when a plugin failed and the step fails closed.
pub const POLICY_FAILURE_CODE: i32 = -32603;
/// Public message when a plugin failed and the step fails closed.
pub const POLICY_FAILURE_MESSAGE: &str = "Blocked by policy: the policy could not decide";

/// Which messages a step sees.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Agent → server.
    Request,
    /// Server → agent.
    Response,
    #[default]
    Both,
}

/// Whether a step's verdict counts.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    /// Run and record; never block or rewrite.
    Audit,
}

/// One plugin in a chain.
pub struct Step {
    pub plugin: Arc<LoadedPlugin>,
    pub phase: Phase,
    pub mode: Mode,
    pub fail_open: bool,
    /// Only messages naming one of these tools (globs); empty = all.
    pub tools: Vec<String>,
}

impl Step {
    fn applies(&self, ctx: &MessageContext) -> bool {
        let phase_ok = match self.phase {
            Phase::Both => true,
            Phase::Request => ctx.direction == Direction::ToServer,
            Phase::Response => ctx.direction == Direction::ToClient,
        };
        let names = |t: &Option<String>| {
            t.as_deref()
                .is_some_and(|t| self.tools.iter().any(|g| glob_match(g, t)))
        };
        let tools_ok = self.tools.is_empty() || names(&ctx.target) || names(&ctx.related_tool);
        phase_ok
            && tools_ok
            && self
                .plugin
                .interests
                .wants(ctx.direction, ctx.method.as_deref())
    }
}

/// What one step did, for the audit.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub plugin: String,
    pub digest: String,
    pub mode: Mode,
    /// `allow`, `rewrite`, `deny` or `error`.
    pub decision: &'static str,
    /// Private reason of a deny, or the error.
    pub reason: Option<String>,
    pub annotations: Vec<Annotation>,
    pub elapsed: Duration,
}

/// The chain's result for one message.
#[derive(Debug)]
pub enum Outcome {
    /// Send this (the original bytes, or the last rewrite).
    Pass(Bytes),
    /// Do not send; answer with this.
    Deny(Denial),
}

/// A loaded policy.
pub struct Policy {
    /// SHA-256 of the policy file, hex.
    pub digest: String,
    chains: BTreeMap<String, Vec<Step>>,
    /// Servers (or `"*"`) whose audit records keep the message as it left
    /// the chain. Empty by default: records hold no payload.
    pub record_payloads: std::collections::BTreeSet<String>,
    /// Servers (or `"*"`) whose messages may hold object keys that are one
    /// key under case folding. Empty by default: such messages are refused.
    pub allow_case_colliding_keys: std::collections::BTreeSet<String>,
}

/// How messages to and from `server` are read under `policy` (with no
/// policy, the strict default).
pub fn parse_options(policy: Option<&Policy>, server: &str, max_depth: usize) -> ParseOptions {
    match policy {
        Some(p) => p.parse_options(server, max_depth),
        None => ParseOptions::new(max_depth),
    }
}

impl Policy {
    pub fn new(digest: String, chains: BTreeMap<String, Vec<Step>>) -> Policy {
        Policy {
            digest,
            chains,
            record_payloads: Default::default(),
            allow_case_colliding_keys: Default::default(),
        }
    }

    /// How messages to and from `server` are read: `max_depth`, and
    /// case-colliding keys only where this policy allows them.
    pub fn parse_options(&self, server: &str, max_depth: usize) -> ParseOptions {
        let keys = &self.allow_case_colliding_keys;
        ParseOptions {
            max_depth,
            allow_case_colliding_keys: keys.contains(server) || keys.contains(ALL_SERVERS),
        }
    }

    /// True when the policy opted in to payloads in `server`'s records.
    pub fn records_payload(&self, server: &str) -> bool {
        self.record_payloads.contains(server) || self.record_payloads.contains(ALL_SERVERS)
    }

    /// The loaded plugin called `name`, if a chain uses it.
    pub fn plugin(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.chains
            .values()
            .flatten()
            .find(|s| s.plugin.name == name)
            .map(|s| s.plugin.clone())
    }

    /// Plugins and their digests, in chain order, without repeats.
    pub fn plugins(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for step in self.chains.values().flatten() {
            if !out.iter().any(|(n, _)| *n == step.plugin.name) {
                out.push((step.plugin.name.clone(), step.plugin.digest.clone()));
            }
        }
        out
    }

    fn steps<'a>(&'a self, server: &str) -> impl Iterator<Item = &'a Step> {
        let all = self.chains.get(ALL_SERVERS).into_iter().flatten();
        let own = self
            .chains
            .get(server)
            .filter(|_| server != ALL_SERVERS)
            .into_iter()
            .flatten();
        all.chain(own)
    }

    /// True when some step would look at this message.
    pub fn wants(&self, ctx: &MessageContext) -> bool {
        self.steps(&ctx.server).any(|s| s.applies(ctx))
    }

    /// Runs the chain on one message.
    pub async fn apply(
        &self,
        ctx: &MessageContext,
        raw: Bytes,
        max_depth: usize,
    ) -> (Outcome, Vec<StepRecord>) {
        let mut current = raw;
        let mut records = Vec::new();
        let opts = self.parse_options(&ctx.server, max_depth);
        for step in self.steps(&ctx.server) {
            if !step.applies(ctx) {
                continue;
            }
            let text = String::from_utf8_lossy(&current);
            let span = tracing::trace_span!(
                target: "portcullis::plugin",
                "plugin",
                otel.name = tracing::field::Empty,
                otel.kind = "internal",
                otel.status_code = tracing::field::Empty,
            );
            crate::telemetry::span::plugin_start(
                &span,
                &step.plugin.name,
                &step.plugin.digest,
                step.mode,
            );
            let started = Instant::now();
            let result = if text.len() >= crate::limits::OFFLOAD_PARSE_BYTES {
                call_off_workers(&step.plugin, ctx, text.into_owned(), span.clone()).await
            } else {
                tracing::Instrument::instrument(step.plugin.call(ctx, &text), span.clone()).await
            };
            let elapsed = started.elapsed();
            let result = result.and_then(|v| match v.decision {
                Decision::Rewrite(new) => validate_rewrite(ctx, new, opts)
                    .map(|bytes| (Decision::Rewrite(String::new()), Some(bytes), v.annotations)),
                d => Ok((d, None, v.annotations)),
            });
            let mut record = StepRecord {
                plugin: step.plugin.name.clone(),
                digest: step.plugin.digest.clone(),
                mode: step.mode,
                decision: "allow",
                reason: None,
                annotations: Vec::new(),
                elapsed,
            };
            let enforce = step.mode == Mode::Enforce;
            match result {
                Ok((Decision::Allow, _, ann)) => record.annotations = ann,
                Ok((Decision::Rewrite(_), Some(bytes), ann)) => {
                    record.decision = "rewrite";
                    record.annotations = ann;
                    if enforce {
                        current = bytes;
                    }
                }
                Ok((Decision::Rewrite(_), None, _)) => {}
                Ok((Decision::Deny(d), _, ann)) => {
                    record.decision = "deny";
                    record.reason = Some(d.private_reason.clone());
                    record.annotations = ann;
                    if enforce {
                        crate::telemetry::span::plugin_end(&span, &record);
                        records.push(record);
                        return (Outcome::Deny(d), records);
                    }
                }
                Err(e) => {
                    record.decision = "error";
                    record.reason = Some(e.to_string());
                    tracing::warn!(plugin = step.plugin.name, error = %e, "plugin failed");
                    if enforce && !step.fail_open {
                        crate::telemetry::span::plugin_end(&span, &record);
                        records.push(record);
                        let denial = Denial {
                            code: POLICY_FAILURE_CODE,
                            public_message: POLICY_FAILURE_MESSAGE.into(),
                            private_reason: e.to_string(),
                        };
                        return (Outcome::Deny(denial), records);
                    }
                }
            }
            crate::telemetry::span::plugin_end(&span, &record);
            records.push(record);
        }
        (Outcome::Pass(current), records)
    }
}

/// A rewrite must be one well-formed JSON-RPC message of the same kind
/// answering the same id: a plugin may change content, not redirect it.
/// `ctx` describes the message the plugin was given. Public so the fuzz
/// targets (`fuzz/`) drive it directly.
pub fn validate_rewrite(
    ctx: &MessageContext,
    new: String,
    opts: ParseOptions,
) -> Result<Bytes, CallError> {
    let new = Bytes::from(new);
    let parsed =
        Message::parse(new.clone(), opts).map_err(|e| CallError::BadOutput(e.to_string()))?;
    // The context describes the message as it arrived (its id and kind), so
    // the original needs no second parse.
    if parsed.id != ctx.request_id {
        return Err(CallError::BadOutput(
            "a rewrite changed the message id".into(),
        ));
    }
    // Exactly the same kind: a result turned into an error (or back) would
    // answer the request differently from what every later step checked.
    if MessageKind::from(parsed.kind) != ctx.kind {
        return Err(CallError::BadOutput(
            "a rewrite changed the kind of message".into(),
        ));
    }
    // A request or notification keeps its method: the method chose which
    // steps ran and what they checked, and a new one would reach the
    // upstream (or the agent) unchecked. For replies `ctx.method` is the
    // method answered, and the reply itself has none.
    if parsed.has_method() && parsed.method != ctx.method {
        return Err(CallError::BadOutput("a rewrite changed the method".into()));
    }
    Ok(new)
}

/// Runs `plugin` on a large `message` on the bulk threads
/// ([`crate::bulk`]); the call is cancelled if the caller goes away.
async fn call_off_workers(
    plugin: &Arc<crate::plugin::LoadedPlugin>,
    ctx: &MessageContext,
    message: String,
    span: tracing::Span,
) -> Result<crate::policy::verdict::Verdict, crate::plugin::CallError> {
    let (plugin, ctx) = (plugin.clone(), ctx.clone());
    let call = async move { plugin.call(&ctx, &message).await };
    match crate::bulk::run(tracing::Instrument::instrument(call, span)).await {
        Some(result) => result,
        None => Err(crate::plugin::CallError::Trap(
            "the plugin call did not finish".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_JSON_DEPTH;
    use crate::principal::Principal;

    fn ctx_of(message: &str) -> MessageContext {
        let m = Message::parse(
            Bytes::from(message.to_owned()),
            ParseOptions::new(MAX_JSON_DEPTH),
        )
        .unwrap();
        MessageContext {
            direction: super::super::verdict::Direction::ToServer,
            tunnel: "t".into(),
            server: "s".into(),
            kind: m.kind.into(),
            method: m.method.clone(),
            target: m.name.clone(),
            related_tool: None,
            request_id: m.id.clone(),
            session_id: None,
            protocol_version: None,
            principal: Principal::anonymous(),
        }
    }

    /// Found by the `rewrite` fuzz target: a result could be rewritten into
    /// an error for the same id, and a request or notification into one
    /// with another method.
    #[test]
    fn a_rewrite_keeps_the_kind_the_id_and_the_method() {
        let result = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[]}}"#;
        let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"a"}}"#;
        let note = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#;
        let cases = [
            (
                result,
                r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"x"}]}}"#,
                true,
            ),
            (result, result, true),
            (
                result,
                r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32000,"message":"no"}}"#,
                false,
            ),
            (result, r#"{"jsonrpc":"2.0","id":8,"result":{}}"#, false),
            (result, r#"[{"jsonrpc":"2.0","id":7,"result":{}}]"#, false),
            (
                call,
                r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"a","arguments":{}}}"#,
                true,
            ),
            (
                call,
                r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#,
                false,
            ),
            (
                call,
                r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"a"}}"#,
                false,
            ),
            (
                note,
                r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#,
                true,
            ),
            (
                note,
                r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}"#,
                false,
            ),
        ];
        for (original, rewrite, accepted) in cases {
            let got = validate_rewrite(
                &ctx_of(original),
                rewrite.to_owned(),
                ParseOptions::new(MAX_JSON_DEPTH),
            );
            assert_eq!(got.is_ok(), accepted, "{original} -> {rewrite}: {got:?}");
        }
    }
}
