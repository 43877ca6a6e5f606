//! What the chain tells telemetry: the attributes of each plugin call's
//! span, and the metrics of each decision. Telemetry itself knows no policy
//! types; the chain turns its records into telemetry's words here.

use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::StepRecord;
use crate::mcp::{Direction, Mode, Outcome, StepDecision};
use crate::policy::verdict::AnnotationValue;
use crate::telemetry::metrics;

/// Names a plugin call's span (`policy {plugin}`) and records which plugin.
pub fn plugin_start(span: &Span, plugin: &str, digest: &str, mode: Mode) {
    if span.is_disabled() {
        return;
    }
    span.record("otel.name", format!("policy {plugin}").as_str());
    span.set_attribute("portcullis.plugin.name", plugin.to_owned());
    span.set_attribute("portcullis.plugin.digest", digest.to_owned());
    span.set_attribute("portcullis.plugin.mode", mode.as_str());
}

/// Records a plugin call's decision and annotations (counts and labels;
/// never the private reason, which may quote the message).
pub fn plugin_end(span: &Span, record: &StepRecord) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("portcullis.decision", record.decision.as_str());
    for a in &record.annotations {
        let key = format!("portcullis.annotation.{}", a.key);
        match &a.value {
            AnnotationValue::Count(n) => span.set_attribute(key, *n as i64),
            AnnotationValue::Label(l) => span.set_attribute(key, l.clone()),
        }
    }
    if record.decision == StepDecision::Error {
        crate::telemetry::span::fail(span, None, "plugin_failure");
    }
}

/// Counts one message's decision and what its steps did: each plugin's
/// time, the plugins that denied (or failed) a message that did not pass,
/// and the values rewriting plugins reported changing.
pub fn count_decision(server: &str, direction: Direction, outcome: Outcome, steps: &[StepRecord]) {
    metrics::record_decision(server, direction, outcome);
    let stopped = matches!(outcome, Outcome::Denied | Outcome::Dropped);
    for s in steps {
        metrics::record_plugin_call(&s.plugin, s.decision, s.elapsed);
        match s.decision {
            StepDecision::Deny | StepDecision::Error if stopped => {
                metrics::record_denial(server, &s.plugin);
            }
            StepDecision::Rewrite => {
                for a in &s.annotations {
                    if let AnnotationValue::Count(n) = a.value
                        && n > 0
                    {
                        metrics::record_redactions(&s.plugin, &a.key, n);
                    }
                }
            }
            _ => {}
        }
    }
}
