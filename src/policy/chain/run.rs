//! Running a chain on one message and combining the verdicts.
//!
//! Order: the `"*"` chain, then the server's own. A rewrite feeds the next
//! plugin; the first enforced deny stops the chain. Audit-mode steps run and
//! are recorded but never block or rewrite. A plugin error (trap, deadline,
//! memory, bad output) denies unless that step is `on_error = "allow"`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{POLICY_FAILURE_CODE, POLICY_FAILURE_MESSAGE, Policy, Ruling, StepRecord, observe};
use crate::mcp::{Message, MessageContext, Mode, ParseOptions, StepDecision};
use crate::policy::verdict::{CallError, Decision, Denial, Evaluate, Verdict};

impl Policy {
    /// Runs the chain on one message.
    pub async fn apply(
        &self,
        ctx: &MessageContext,
        raw: Bytes,
        max_depth: usize,
    ) -> (Ruling, Vec<StepRecord>) {
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
            observe::plugin_start(&span, step.plugin.name(), step.plugin.digest(), step.mode);
            let started = Instant::now();
            let result = if text.len() >= crate::limits::OFFLOAD_PARSE_BYTES {
                call_off_workers(&step.plugin, ctx, text.into_owned(), span.clone()).await
            } else {
                tracing::Instrument::instrument(step.plugin.evaluate(ctx, &text), span.clone())
                    .await
            };
            let elapsed = started.elapsed();
            let result = result.and_then(|v| match v.decision {
                Decision::Rewrite(new) => validate_rewrite(ctx, new, opts)
                    .map(|bytes| (Decision::Rewrite(String::new()), Some(bytes), v.annotations)),
                d => Ok((d, None, v.annotations)),
            });
            let mut record = StepRecord {
                plugin: step.plugin.name().to_owned(),
                digest: step.plugin.digest().to_owned(),
                mode: step.mode,
                decision: StepDecision::Allow,
                reason: None,
                annotations: Vec::new(),
                elapsed,
            };
            let enforce = step.mode == Mode::Enforce;
            match result {
                Ok((Decision::Allow, _, ann)) => record.annotations = ann,
                Ok((Decision::Rewrite(_), Some(bytes), ann)) => {
                    record.decision = StepDecision::Rewrite;
                    record.annotations = ann;
                    if enforce {
                        current = bytes;
                    }
                }
                Ok((Decision::Rewrite(_), None, _)) => {}
                Ok((Decision::Deny(d), _, ann)) => {
                    record.decision = StepDecision::Deny;
                    record.reason = Some(d.private_reason.clone());
                    record.annotations = ann;
                    if enforce {
                        observe::plugin_end(&span, &record);
                        records.push(record);
                        return (Ruling::Deny(d), records);
                    }
                }
                Err(e) => {
                    record.decision = StepDecision::Error;
                    record.reason = Some(e.to_string());
                    tracing::warn!(plugin = step.plugin.name(), error = %e, "plugin failed");
                    if enforce && !step.fail_open {
                        observe::plugin_end(&span, &record);
                        records.push(record);
                        let denial = Denial {
                            code: POLICY_FAILURE_CODE,
                            public_message: POLICY_FAILURE_MESSAGE.into(),
                            private_reason: e.to_string(),
                        };
                        return (Ruling::Deny(denial), records);
                    }
                }
            }
            observe::plugin_end(&span, &record);
            records.push(record);
        }
        (Ruling::Pass(current), records)
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
    if parsed.kind != ctx.kind {
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
    plugin: &Arc<dyn Evaluate>,
    ctx: &MessageContext,
    message: String,
    span: tracing::Span,
) -> Result<Verdict, CallError> {
    let (plugin, ctx) = (plugin.clone(), ctx.clone());
    let call = async move { plugin.evaluate(&ctx, &message).await };
    match crate::bulk::run(tracing::Instrument::instrument(call, span)).await {
        Some(result) => result,
        None => Err(CallError::Trap("the plugin call did not finish".into())),
    }
}
